"""``causality`` on the run's best model and val split: the model reads no later token and
predicts the next token, not the one it reads (docs/diagnostics.md)."""

from __future__ import annotations

from diagnostics.analyses.causality import NAME, analyse_causality, measure_causality


def test_causality(bankllm_run, model, untrained_model, thresholds, diagnose):
    """FAIL if later tokens or padding change the loss, or echoing beats predicting."""
    from bankllm.data import encode_corpus

    run, tok = bankllm_run, bankllm_run.tokenizer
    val = encode_corpus(run.split.val, tok, run.config.block_size, run.config.loss_on)
    th = thresholds.for_check(NAME)
    measured = measure_causality(model, val, tok.pad_id, len(tok), untrained=untrained_model,
                                 max_conversations=int(th["max_conversations"]))
    diagnose(analyse_causality(measured, th))
