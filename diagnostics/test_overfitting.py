"""``overfitting`` on the run's metrics.json (docs/diagnostics.md)."""

from __future__ import annotations

from diagnostics.analyses.overfitting import NAME, analyse_overfitting


def test_overfitting(metrics, split_ids, thresholds, diagnose):
    """Val loss against the eval-mode train loss, per epoch."""
    diagnose(analyse_overfitting(metrics, thresholds.for_check(NAME), split_ids))
