"""``loss_phases`` on the run's metrics.json (docs/diagnostics.md)."""

from __future__ import annotations

from diagnostics.analyses.loss_phases import NAME, analyse_loss_phases


def test_loss_phases(metrics, run_path, thresholds, diagnose):
    """Phases of the loss curve, plateau and recommended stop epoch, divergence; the share of
    clipped steps is reported."""
    from bankllm.checkpoints import read_config
    from bankllm.errors import BankLLMError

    try:  # grad_clip is in the run's config.json, not in metrics.json
        grad_clip = read_config(run_path).grad_clip
    except BankLLMError:
        grad_clip = None
    diagnose(analyse_loss_phases(metrics, thresholds.for_check(NAME), grad_clip=grad_clip))
