"""Faithfulness: DIR entity swaps of ``--probes`` answered about exactly the requested entity,
by greedy answer and by the model's probability of that entity (docs/diagnostics.md); with the
paired change against the baseline's outcomes on the same probes (diagnostics.paired)."""

from __future__ import annotations

from typing import Any

from diagnostics.analyses._probes import probe_prompts
from diagnostics.analyses.faithfulness import NAME, analyse_faithfulness, entity_decision_points
from diagnostics.paired import compare_with_baseline
from diagnostics.plugin import probes_that_fit


def entity_probabilities(run: Any, model: Any, points: list) -> dict[str, float]:
    """Per DIR prompt, the model's probability of the requested entity's mention among the
    probe's entities' mentions (each scored whole, teacher-forced), right where its own greedy
    answer names one (fp32). An entity whose mention holds a word the tokenizer does not know
    is left out; a prompt whose requested entity is left out gets no probability."""
    import math

    from bankllm.evaluation import continuation_logprobs

    tok = run.tokenizer
    contexts, continuations, owners = [], [], []
    for prompt, before, mentions, _ in points:
        context = tok.encode_prompt([{"role": "customer", "content": prompt}]) + [
            tok.index.get(w, tok.unk_id) for w in before]
        for entity, phrase in mentions.items():
            ids = tok.encode_text(phrase)
            if ids and tok.unk_id not in ids:
                contexts.append(context)
                continuations.append(ids)
                owners.append((prompt, entity))
    logp: dict[str, dict[str, float]] = {}
    for (prompt, entity), value in zip(owners, continuation_logprobs(
            model, contexts, continuations, tok.pad_id), strict=True):
        logp.setdefault(prompt, {})[entity] = value
    out = {}
    for prompt, _, _, requested in points:
        scores = logp.get(prompt, {})
        if requested in scores and len(scores) > 1:
            top = max(scores.values())
            total = sum(math.exp(v - top) for v in scores.values())
            out[prompt] = math.exp(scores[requested] - top) / total
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
