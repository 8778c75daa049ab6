"""User-facing errors, and the exit codes of every ``bankllm`` command."""


class BankLLMError(Exception):
    """An error caused by the user's input or environment, with a message saying what to do.

    The message names the file, line or field at fault. The CLI prints ``error: <message>``
    on one line and exits with :data:`EXIT_USAGE`; it never shows a traceback for these.
    """


EXIT_OK = 0
"""Success (``bankllm gate``: no regression)."""
EXIT_REGRESSION = 1
"""``bankllm gate``: best val loss regressed against the baseline."""
EXIT_USAGE = 2
"""A :class:`BankLLMError`: bad input or environment (``bankllm gate``: nothing to compare)."""
EXIT_DIVERGED = 3
"""Training stopped after more than ``max_nonfinite_steps`` non-finite steps."""
EXIT_SIGINT = 130
"""Training interrupted by SIGINT; the state is saved."""
EXIT_SIGTERM = 143
"""Training interrupted by SIGTERM; the state is saved."""
