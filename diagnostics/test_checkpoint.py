"""``checkpoint`` on the run's best weights: they score the val loss the run recorded for them
(docs/diagnostics.md)."""

from __future__ import annotations

from diagnostics.analyses.checkpoint import NAME, analyse_checkpoint


def test_checkpoint(bankllm_run, encoded_split, model, thresholds, diagnose):
    """FAIL if the best weights, rescored in the run's precision, miss the recorded losses."""
    from bankllm.data import encode_corpus
    from bankllm.evaluation import per_conversation_losses

    cfg, tok, metrics = bankllm_run.config, bankllm_run.tokenizer, bankllm_run.metrics
    parts = {"val": encoded_split[1],
             "train_eval": encode_corpus(bankllm_run.split.train_eval, tok, cfg.block_size,
                                         cfg.loss_on)}
    rescored = {part: per_conversation_losses(model, enc, tok.pad_id,
                                              precision=metrics.get("precision", "fp32"))
                for part, enc in parts.items()}
    diagnose(analyse_checkpoint(rescored, metrics, thresholds.for_check(NAME)))
