"""``leakage`` on the exact split the run trained on (docs/diagnostics.md)."""

from __future__ import annotations

from diagnostics.analyses.leakage import NAME, analyse_leakage


def _customer_turns(conversations):
    return [m["content"] for c in conversations for m in c["messages"] if m["role"] == "customer"]


def test_leakage(split, thresholds, diagnose):
    """Val conversations that are exact or near copies of train conversations."""
    from bankllm.data import conversation_text

    diagnose(analyse_leakage(
        [conversation_text(c) for c in split.train],
        [conversation_text(c) for c in split.val],
        thresholds.for_check(NAME),
        train_customer_turns=_customer_turns(split.train),
        val_customer_turns=_customer_turns(split.val),
        val_ids=[c["id"] for c in split.val],
    ))
