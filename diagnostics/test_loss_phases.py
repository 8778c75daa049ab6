"""``loss_phases`` on the run's metrics.json (docs/diagnostics.md)."""

from __future__ import annotations

from diagnostics.analyses.loss_phases import NAME, analyse_loss_phases


def test_loss_phases(metrics, thresholds, diagnose):
    """Phases of the loss curve, plateau and recommended stop epoch, divergence."""
    diagnose(analyse_loss_phases(metrics, thresholds.for_check(NAME)))
