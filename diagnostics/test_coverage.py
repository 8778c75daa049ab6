"""``coverage`` on the run's split and tokenizer: how many val targets are ``<unk>``, how many
conversations the context cuts (docs/diagnostics.md)."""

from __future__ import annotations

from diagnostics.analyses.coverage import NAME, analyse_coverage


def test_coverage(bankllm_run, thresholds, diagnose):
    """FAIL if many val targets are <unk> or many conversations are cut at the context."""
    from bankllm.data import encode_corpus

    run, tok, cfg = bankllm_run, bankllm_run.tokenizer, bankllm_run.config
    val = encode_corpus(run.split.val, tok, cfg.block_size, cfg.loss_on)
    train = encode_corpus(run.split.train, tok, cfg.block_size, cfg.loss_on)
    unk = [int((ids[1:][mask] == tok.unk_id).sum()) for ids, mask in zip(val.ids, val.loss_mask,
                                                                          strict=True)]
    targets = [int(mask.sum()) for mask in val.loss_mask]
    diagnose(analyse_coverage(unk, targets, train.truncated + val.truncated,
                              len(train) + len(val), thresholds.for_check(NAME),
                              min_freq=cfg.min_freq, block_size=cfg.block_size))
