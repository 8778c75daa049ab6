"""Faithfulness: DIR entity swaps of ``--probes`` answered about exactly the requested entity,
by greedy answer and by the model's probability of that entity (docs/diagnostics.md); with the
paired change against the baseline's outcomes on the same probes (diagnostics.paired)."""

from __future__ import annotations

from typing import Any

from diagnostics.analyses._probes import probe_prompts
from diagnostics.analyses.faithfulness import (
    ENTITY_WORDS,
    NAME,
    analyse_faithfulness,
    entity_decision_points,
)
from diagnostics.paired import compare_with_baseline
from diagnostics.plugin import probes_that_fit


def entity_probabilities(run: Any, model: Any, points: list) -> dict[str, float]:
    """Per DIR prompt, the model's probability of the requested entity's word among the
    probe's entities, right where its own greedy answer names one (fp32)."""
    from bankllm.evaluation import next_token_probs

    tok = run.tokenizer
    word_id = {e: tok.index[w] for e, w in ENTITY_WORDS.items() if w in tok.index}
    seqs = [tok.encode_prompt([{"role": "customer", "content": prompt}])
            + [tok.index.get(w, tok.unk_id) for w in before] for prompt, before, _, _ in points]
    out = {}
    for (prompt, _, entities, requested), dist in zip(
            points, next_token_probs(model, seqs, tok.pad_id), strict=True):
        ids = {e: word_id[e] for e in entities if e in word_id}
        total = sum(dist[i] for i in ids.values())
        if total > 0 and requested in ids:
            out[prompt] = dist[ids[requested]] / total
    return out


def test_faithfulness(pytestconfig, bankllm_run, model, probes, fitted_probes, probe_answers,
                      thresholds, baseline_outcomes, diagnose):
    """An entity-swapped request is answered about exactly the requested entity."""
    used = thresholds.for_check(NAME)
    kept, skip, note = probes_that_fit(pytestconfig, NAME, probes, fitted_probes, ("dir",), used)
    if skip is not None:
        diagnose(skip)
    answers = probe_answers(probe_prompts(kept, ("dir",)))
    probs = entity_probabilities(bankllm_run, model, entity_decision_points(kept, answers))
    result = analyse_faithfulness(kept, answers, used, entity_probs=probs)
    if note:
        result.details.setdefault("notes", []).append(note)
    diagnose(compare_with_baseline(result, baseline_outcomes))
