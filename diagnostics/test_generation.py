"""``generation`` on the run's best model and val split: greedy tokens against the model's own
forward pass (docs/diagnostics.md)."""

from __future__ import annotations

from diagnostics.analyses.generation import (
    NAME,
    analyse_generation,
    decoder_prompts,
    measure_generation,
)


def test_generation(tokenizer, split, model, thresholds, diagnose):
    """FAIL if the decoder's greedy tokens are conclusively not the model's first choices."""
    th = thresholds.for_check(NAME)
    prompts = decoder_prompts(split.val, split.train, tokenizer, model.config.block_size,
                              int(th["max_prompts"]))
    measured = measure_generation(model, tokenizer, prompts, int(th["max_new_tokens"]),
                                  float(th["tolerance"]))
    diagnose(analyse_generation(measured, th))
