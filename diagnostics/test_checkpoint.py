"""``checkpoint`` on the run's best weights: they score the val loss the run recorded for them
(docs/diagnostics.md)."""

from __future__ import annotations

from diagnostics.analyses.checkpoint import NAME, analyse_checkpoint


def test_checkpoint(bankllm_run, encoded_split, model, thresholds, diagnose):
    """FAIL if the best weights, rescored in the run's precision, miss the recorded loss."""
    from bankllm.evaluation import per_conversation_losses

    metrics = bankllm_run.metrics
    rescored = per_conversation_losses(model, encoded_split[1], bankllm_run.tokenizer.pad_id,
                                       precision=metrics.get("precision", "fp32"))
    diagnose(analyse_checkpoint(rescored, metrics, thresholds.for_check(NAME)))
