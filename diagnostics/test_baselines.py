"""``baselines`` on the run's best model and split: val cross-entropy against unigram, bigram
and trigram Kneser-Ney models fitted on train, scored on the same targets
(docs/diagnostics.md)."""

from __future__ import annotations

from diagnostics.analyses.baselines import NAME, analyse_baselines, ngram_baselines


def test_baselines(bankllm_run, encoded_split, model, thresholds, diagnose):
    """FAIL if the model is conclusively no better than a bigram; WARN short of a trigram."""
    from bankllm.evaluation import per_conversation_losses

    tok = bankllm_run.tokenizer
    train, val = encoded_split

    def plain(enc):
        return [x.tolist() for x in enc.ids], [m.tolist() for m in enc.loss_mask]

    baselines = ngram_baselines(plain(train), plain(val), len(tok))
    losses = per_conversation_losses(model, val, tok.pad_id, precision="fp32")
    diagnose(analyse_baselines(losses, baselines, thresholds.for_check(NAME),
                               recorded_val_loss=bankllm_run.metrics.get("best_val_loss"),
                               optimizer_steps=len(bankllm_run.metrics.get("steps") or [])))
