"""User-facing errors: the CLI prints them as one line and exits with code 2."""


class BankLLMError(Exception):
    """An error caused by the user's input or environment, with a message saying what to do.

    The message names the file, line or field at fault. The CLI prints ``error: <message>``
    on one line and exits with :data:`EXIT_USAGE`; it never shows a traceback for these.
    """


EXIT_USAGE = 2
