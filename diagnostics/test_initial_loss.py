"""``initial_loss`` on the run's metrics.json (docs/diagnostics.md)."""

from __future__ import annotations

from diagnostics.analyses.initial_loss import NAME, analyse_initial_loss


def test_initial_loss(metrics, thresholds, diagnose):
    """The untrained model's loss is near ln V."""
    diagnose(analyse_initial_loss(metrics, thresholds.for_check(NAME)))
