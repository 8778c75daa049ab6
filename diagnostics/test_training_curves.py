"""Training-curve checks (design doc §1-3), measured on the run's metrics.json."""

from __future__ import annotations

from diagnostics.analyses.initial_loss import analyse_initial_loss
from diagnostics.analyses.loss_phases import analyse_loss_phases
from diagnostics.analyses.overfitting import analyse_overfitting


def test_initial_loss(metrics, thresholds, diagnose):
    """§1: the untrained model's loss is near ln V."""
    diagnose(analyse_initial_loss(metrics, thresholds.for_check("initial_loss")))


def test_loss_phases(metrics, thresholds, diagnose):
    """§2: phases of the loss curve, plateau / recommended stop epoch, divergence."""
    diagnose(analyse_loss_phases(metrics, thresholds.for_check("loss_phases")))


def test_overfitting(metrics, thresholds, diagnose):
    """§3: val against the eval-mode train loss, per epoch."""
    diagnose(analyse_overfitting(metrics, thresholds.for_check("overfitting")))
