"""``coverage`` on the run's split and tokenizer: how many val targets are ``<unk>``, how many
conversations the context cuts (docs/diagnostics.md)."""

from __future__ import annotations

from diagnostics.analyses.coverage import NAME, analyse_coverage


def test_coverage(run_config, tokenizer, encoded_split, thresholds, diagnose):
    """FAIL if many val targets are <unk> or many conversations are cut at the context."""
    train, val = encoded_split
    unk = [int((ids[1:][mask] == tokenizer.unk_id).sum())
           for ids, mask in zip(val.ids, val.loss_mask, strict=True)]
    targets = [int(mask.sum()) for mask in val.loss_mask]
    diagnose(analyse_coverage(unk, targets, train.truncated + val.truncated,
                              len(train) + len(val), thresholds.for_check(NAME),
                              min_freq=run_config.min_freq, block_size=run_config.block_size))
