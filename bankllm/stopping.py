"""Stopping a training run cleanly on SIGINT / SIGTERM."""

from __future__ import annotations

import signal
from contextlib import suppress
from typing import Any


class StopRequest:
    """Within ``with``: record the first SIGINT / SIGTERM in :attr:`signum` (``None`` until
    one arrives) so the trainer stops after the current step; a second one raises
    :class:`KeyboardInterrupt`. The previous handlers come back on exit."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopRequest:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with suppress(ValueError):  # signals can only be set in the main thread
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None:  # second signal: stop now
            raise KeyboardInterrupt
        self.signum = signum

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
