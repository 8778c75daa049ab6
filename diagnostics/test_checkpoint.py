"""``checkpoint`` on the run's best weights: they score the val and train_eval losses the run
recorded for them (docs/diagnostics.md)."""

from __future__ import annotations

from diagnostics.analyses.checkpoint import NAME, analyse_checkpoint


def test_checkpoint(bankllm_run, encoded_split, encoded_train_eval, model, thresholds, diagnose):
    """FAIL if the best weights, rescored in the run's precision, miss the recorded losses."""
    from bankllm.evaluation import per_conversation_losses

    metrics = bankllm_run.metrics
    parts = {"val": encoded_split[1], "train_eval": encoded_train_eval}
    rescored = {part: per_conversation_losses(model, enc, bankllm_run.tokenizer.pad_id,
                                              precision=metrics.get("precision", "fp32"))
                for part, enc in parts.items()}
    diagnose(analyse_checkpoint(rescored, metrics, thresholds.for_check(NAME)))
