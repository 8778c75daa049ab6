"""Data checks (design doc §4), measured on the exact split the run trained on."""

from __future__ import annotations

from diagnostics.analyses.leakage import analyse_leakage


def _customer_turns(conversations):
    return [m["content"] for c in conversations for m in c["messages"] if m["role"] == "customer"]


def test_leakage(split, thresholds, diagnose):
    """§4: val conversations that are exact or near copies of train conversations."""
    from bankllm.data import conversation_text

    diagnose(analyse_leakage(
        [conversation_text(c) for c in split.train],
        [conversation_text(c) for c in split.val],
        thresholds.for_check("leakage"),
        train_customer_turns=_customer_turns(split.train),
        val_customer_turns=_customer_turns(split.val),
        val_ids=[c["id"] for c in split.val],
    ))
