"""Binomial confidence intervals shared by the corpus audit and the diagnostics' decision rule
(``diagnostics/decision.py``), so both quote the same interval for the same count."""

from __future__ import annotations

from scipy.stats import binomtest

LEVEL = 0.95


def wilson(hits: float, n: int, level: float = LEVEL) -> tuple[float, float]:
    """Wilson score interval of ``hits`` successes in ``n`` trials (``(0, 1)`` when n is 0)."""
    if n <= 0:
        return 0.0, 1.0
    ci = binomtest(int(round(hits)), int(n)).proportion_ci(confidence_level=level, method="wilson")
    return float(ci.low), float(ci.high)
