"""Helpers shared by the analyses."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.stats import bootstrap


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


def rate_interval(
    hits: Sequence[float],
    counts: Sequence[int],
    minus: tuple[Sequence[float], Sequence[int]] | None = None,
    level: float = 0.95,
) -> tuple[float, float] | None:
    """Percentile-bootstrap interval of the pooled rate ``sum(hits) / sum(counts)`` over
    clusters (probe groups, conversations), or of that rate minus the pooled rate of an
    independent second sample ``minus``. Whole clusters are resampled: the items within one
    (pairs of one group's prompts, turns of one conversation) are not independent. Seeded:
    the same input gives the same interval. None with fewer than 2 clusters in a sample.
    """
    samples = [(np.asarray(hits, dtype=float), np.asarray(counts, dtype=float))]
    if minus is not None:
        samples.append((np.asarray(minus[0], dtype=float), np.asarray(minus[1], dtype=float)))
    if any(len(h) < 2 or c.sum() == 0 for h, c in samples):
        return None

    def statistic(*indices: np.ndarray, axis: int = -1) -> np.ndarray:
        rates = [h[i].sum(axis=axis) / np.maximum(c[i].sum(axis=axis), 1)
                 for (h, c), i in zip(samples, indices, strict=True)]
        return rates[0] - rates[1] if len(rates) == 2 else rates[0]

    data = tuple(np.arange(len(h)) for h, _ in samples)
    result = bootstrap(data, statistic, vectorized=True, paired=False, confidence_level=level,
                       method="percentile", n_resamples=2000, rng=np.random.default_rng(0))
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def spans_a_line(interval: tuple[float, float] | None, lines: Sequence[float]) -> bool:
    """True when ``interval`` (low, high] contains one of the verdict ``lines``."""
    return interval is not None and any(interval[0] < line <= interval[1] for line in lines)
