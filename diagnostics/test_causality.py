"""``causality`` on the run's best model and val split: the model reads no later token and
predicts the next token, not the one it reads (docs/diagnostics.md)."""

from __future__ import annotations

from diagnostics.analyses.causality import NAME, analyse_causality, measure_causality


def test_causality(tokenizer, encoded_split, model, untrained_model, thresholds, diagnose):
    """FAIL if later tokens or padding change the loss, or echoing beats predicting."""
    _, val = encoded_split
    th = thresholds.for_check(NAME)
    measured = measure_causality(model, val, tokenizer.pad_id, len(tokenizer),
                                 untrained=untrained_model,
                                 max_conversations=int(th["max_conversations"]))
    diagnose(analyse_causality(measured, th))
