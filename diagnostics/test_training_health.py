"""``training_health`` on the run's metrics.json (docs/diagnostics.md)."""

from __future__ import annotations

from diagnostics.analyses.training_health import NAME, analyse_training_health


def test_training_health(metrics, thresholds, diagnose):
    """Update-to-weight ratios per parameter group against the usual band (~1e-3 per step)."""
    diagnose(analyse_training_health(metrics, thresholds.for_check(NAME)))
