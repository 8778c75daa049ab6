"""Helpers shared by the analyses."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from bankllm.tokenizer import normalise_text

# Lightning EarlyStopping semantics (val loss), shared by loss_phases (plateau) and
# overfitting (val rising): a thresholds section of its own
EARLY_STOPPING_DEFAULTS: dict[str, int | float] = {"min_delta": 0.005, "patience": 2}


@dataclass
class EarlyStop:
    """Lightning ``EarlyStopping(mode="min", min_delta, patience)`` replayed over val losses.

    ``best_epoch``: last epoch that improved on the best by more than ``min_delta``;
    ``stop_epoch``: epoch at which EarlyStopping would have stopped (``None``: it never did);
    ``plateau_epoch``: ``best_epoch`` if it stopped, else ``None`` (still improving).
    """

    best_epoch: int
    best_value: float
    stop_epoch: int | None

    @property
    def plateau_epoch(self) -> int | None:
        return self.best_epoch if self.stop_epoch is not None else None


def early_stopping(
    epochs: Sequence[int], values: Sequence[float], min_delta: float, patience: int
) -> EarlyStop:
    """Replay EarlyStopping: improvement means ``value < best - min_delta``; stop when
    ``patience`` epochs in a row did not improve. ``epochs``/``values`` are non-empty."""
    best_epoch, best, wait = epochs[0], values[0], 0
    for epoch, value in zip(epochs[1:], values[1:], strict=True):
        if value < best - min_delta:
            best_epoch, best, wait = epoch, value, 0
        else:
            wait += 1
            if wait >= patience:
                return EarlyStop(best_epoch, best, epoch)
    return EarlyStop(best_epoch, best, None)


def finite(value: Any) -> bool:
    """True for a real, finite number (None, NaN and inf are not)."""
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
    )


def epoch_rows(metrics: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The per-epoch records, sorted by epoch."""
    return sorted(metrics.get("epochs") or [], key=lambda e: e["epoch"])


def agent_turns(conversations: Sequence[Mapping[str, Any]]) -> list[tuple[Mapping, int]]:
    """``(conversation, index)`` of every agent turn with words: the places a prompt is cut."""
    return [(c, i) for c in conversations for i, m in enumerate(c["messages"])
            if m["role"] == "agent" and normalise_text(m["content"])]


def evenly_spread(n: int, limit: int | None) -> list[int]:
    """Indices of at most ``limit`` of ``n`` items (all of them without a limit), evenly
    spread from the first to the last, in order."""
    if limit is None or n <= limit:
        return list(range(n))
    return sorted({int(i) for i in np.linspace(0, n - 1, limit).round()})
