"""Faithfulness to the requested entity (docs/diagnostics.md, "faithfulness"): DIR probes
ask the same request about different entities (the bundled ones: checking / savings / credit
card; a probe file names its own, with the words that mention each), and an answer is faithful
when, of the probe's entities, it names exactly the requested one.

No judge is needed, so an unreliable intent judge never hides the chapter's "What is my credit
balance?" -> "your checking account balance is ..." failure. The verdict is the worst of the
pooled share and the share of each intent, so a fault confined to one intent is not diluted by
the others (a conclusive per-intent FAIL is a FAIL); intervals resample whole DIR probes (the
variants of one probe share a template).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bankllm.entities import mention_spans, named_entities
from bankllm.probes import dir_mentions
from diagnostics.analyses._probes import MAX_ROWS, clip_answer
from diagnostics.decision import decide, family_level, rate, rate_in_family
from diagnostics.paired import identity
from diagnostics.results import CheckResult, combine, table, worst

NAME = "faithfulness"
ORDER = 70  # place in the report
UNCHECKED_WHEN_SKIPPED = (
    "whether answers carry the customer's own entities (account, amount) rather than memorized "
    "ones; add DIR (entity swap) probes (`bankllm data synth --probes-dir DIR`, then --probes "
    "DIR)")
# share of entity-swapped requests answered about exactly the requested entity: PASS at
# faithfulness_pass, FAIL below it minus warn_margin
DEFAULTS = {"faithfulness_pass": 0.90, "warn_margin": 0.15}


def _pct(x: float) -> str:
    return f"{x:.1%}"


def entity_decision_points(probes: Any, responses: Mapping[str, str]
                           ) -> list[tuple[str, list[str], dict[str, str], str]]:
    """For each DIR variant whose answer names one of its probe's entities: ``(prompt, the
    answer's words before that first mention, {entity: its first mention} over the probe's
    entities, the requested entity)``. ``responses`` are the model's words joined by spaces.
    Scoring each entity's mention after that prefix shows how sure the model was of the entity
    it named."""
    points = []
    for rec in probes.dir:
        mentions = dir_mentions(rec)
        first = {entity: phrases[0] for entity, phrases in mentions.items()}
        for var in rec["variants"]:
            said = responses[var["prompt"]].split()
            spans = mention_spans(said, mentions)
            if spans:
                points.append((var["prompt"], said[:spans[0][0]], first, var["entity"]))
    return points


def analyse_faithfulness(probes: Any, responses: Mapping[str, str],
                         thresholds: Mapping[str, float],
                         entity_probs: Mapping[str, float] | None = None) -> CheckResult:
    """DIR verdict. ``faithfulness`` = share of faithful answers over all variants, with its
    interval over probes; the same per intent (``per_intent``) and per requested entity. The
    pooled estimate decides PASS / WARN / FAIL by the shared rule; an intent whose own interval
    lies wholly below ``faithfulness_pass - warn_margin`` makes it FAIL (an inconclusive small
    intent does not make it WARN). Each intent is judged on its interval at
    :func:`~diagnostics.decision.family_level` of the number of per-intent tests, so that many
    intents do not multiply the chance of a false FAIL. ``entity_probs``: per variant prompt,
    the model's probability of the requested entity among the probe's entities where its
    answer names one (:func:`entity_decision_points`); its mean is judged on the same lines,
    pooled and per intent, so a model split between two answers is seen even where greedy
    decoding picks the right one."""
    th = {k: float(thresholds[k]) for k in ("faithfulness_pass", "warn_margin")}
    lines = {"pass_line": th["faithfulness_pass"],
             "fail_line": th["faithfulness_pass"] - th["warn_margin"]}
    if not probes.dir:
        return CheckResult(NAME, "SKIP", "no DIR (entity swap) probes to ask", {}, th)
    hits: list[int] = []
    counts: list[int] = []
    by_intent: dict[str, tuple[list[int], list[int]]] = {}
    per_entity: dict[str, list[int]] = {}
    failures: list[dict[str, Any]] = []
    outcomes: dict[str, int] = {}  # "<probe id>/<entity>" -> 1 if faithful
    swapped = 0  # names another entity instead of the requested one
    for rec in probes.dir:
        good = 0
        for var in rec["variants"]:
            answer = responses[var["prompt"]]
            named = named_entities(answer, dir_mentions(rec))
            ok = named == [var["entity"]]
            good += ok
            outcomes[f"{rec['id']}/{var['entity']}"] = int(ok)
            per_entity.setdefault(var["entity"], [0, 0])
            per_entity[var["entity"]][0] += ok
            per_entity[var["entity"]][1] += 1
            if not ok:
                swapped += bool(named) and var["entity"] not in named
                failures.append({"id": rec["id"], "intent": rec["intent"],
                                 "requested": var["entity"], "prompt": var["prompt"],
                                 "response": answer, "named": named})
        hits.append(good)
        counts.append(len(rec["variants"]))
        group = by_intent.setdefault(rec["intent"], ([], []))
        group[0].append(good)
        group[1].append(len(rec["variants"]))
    pooled = rate(hits, counts, "DIR probes")
    pooled_verdict = decide(pooled, higher_is_better=True, fmt=_pct, **lines)
    prob_pooled, prob_sums = _probability_sums(probes, entity_probs or {})
    tests = len(by_intent) + len(prob_sums)  # per-intent decisions, each able to FAIL the check
    judged = {name: rate_in_family(h, c, "DIR probes", tests, higher_is_better=True, fmt=_pct,
                                   **lines) for name, (h, c) in sorted(by_intent.items())}
    intents = {name: est for name, (est, _) in judged.items()}
    intent_verdicts = {name: verdict for name, (_, verdict) in judged.items()}
    prob_intents = {name: rate_in_family(h, c, "DIR probes", tests, higher_is_better=True,
                                         fmt=_pct, **lines) for name, (h, c) in prob_sums.items()}
    prob_verdict = None  # (pooled estimate, its verdict) where probabilities were scored
    if prob_pooled is not None:
        prob_est = rate(*prob_pooled, "DIR probes")
        prob_verdict = (prob_est, decide(prob_est, higher_is_better=True, fmt=_pct, **lines))
    n, faithful = sum(counts), sum(hits)
    values: dict[str, Any] = {
        **pooled.values("faithfulness"), "n_variants": n, "n_unfaithful": n - faithful,
        "n_swapped": swapped,
        "per_entity": {e: h / t for e, (h, t) in per_entity.items()},
        "per_intent": {name: {**est.values("faithfulness"),
                              "status": intent_verdicts[name].status}
                       for name, est in intents.items()},
    }
    failing = [k for k, v in intent_verdicts.items() if v.status == "FAIL"]
    failing += [k for k, (_, v) in prob_intents.items() if v.status == "FAIL"]
    status = "FAIL" if failing else pooled_verdict.status
    if prob_verdict is not None:
        status = worst([status, prob_verdict[1].status])
    parts = [(pooled_verdict.status, f"{faithful}/{n} entity-swapped requests answered about "
                                     f"the requested entity: {pooled_verdict.reason}")]
    worst_intent = min(intents, key=lambda k: intents[k].value)
    if failing or status != "PASS":
        parts.append((intent_verdicts[worst_intent].status,
                      f"worst intent {worst_intent}: {intent_verdicts[worst_intent].reason}"))
    if prob_verdict is not None:
        weakest = min(prob_intents, key=lambda k: prob_intents[k][0].value)
        text = ("probability of the requested entity where the answer names one "
                f"{prob_verdict[1].reason}")
        if prob_intents[weakest][1].status == "FAIL":
            text += f"; for {weakest}: {prob_intents[weakest][1].reason}"
        parts.append((worst([prob_verdict[1].status, prob_intents[weakest][1].status]), text))
    _, reason = combine(parts)
    if status == "FAIL":
        reason += (f"; {swapped} answers name another of the probe's entities instead — the model "
                   "ignores the entity the customer asked about")
    decisions = {"faithfulness": pooled_verdict.rule}
    if prob_verdict is not None:
        values.update(prob_verdict[0].values("entity_probability"))
        values["entity_probability_per_intent"] = {
            k: {**est.values("entity_probability"), "status": v.status}
            for k, (est, v) in prob_intents.items()}
        decisions["entity_probability"] = prob_verdict[1].rule
    details: dict[str, Any] = {"failures": failures, "tables": [], "notes": [],
                               "decisions": decisions,
                               "outcomes": {"identity": identity({"dir": probes.dir}),
                                            "dir": outcomes}}
    details["tables"].append(table(
        "faithfulness per intent", ["intent", "share", "95% interval", "probes", "verdict"],
        [(k, _pct(e.value), f"{_pct(e.low)} - {_pct(e.high)}", e.n, intent_verdicts[k].status)
         for k, e in intents.items()],
        [v.status for v in intent_verdicts.values()]))
    if prob_intents:
        details["tables"].append(table(
            "probability of the requested entity, per intent",
            ["intent", "mean probability", "95% interval", "probes", "verdict"],
            [(k, _pct(e.value), f"{_pct(e.low)} - {_pct(e.high)}", e.n, v.status)
             for k, (e, v) in prob_intents.items()], [v.status for _, v in prob_intents.values()]))
    details["tables"].append(table(
        "faithfulness per requested entity", ["entity", "faithful", "of", "share"],
        [(e, h, t, f"{h / t:.1%}") for e, (h, t) in per_entity.items()]))
    if failures:
        details["tables"].append(table(
            "unfaithful answers", ["probe", "asked about", "prompt", "model's answer", "names"],
            [(f["id"], f["requested"], f["prompt"], clip_answer(f["response"]),
              ", ".join(f["named"]) or "none") for f in failures[:MAX_ROWS]],
            ["FAIL"] * min(MAX_ROWS, len(failures))))
        if len(failures) > MAX_ROWS:
            details["notes"].append(f"table shows the first {MAX_ROWS} of {len(failures)}; all "
                                    "are in details.failures of diagnostics.json")
    details["notes"].append(f"smallest effect the pooled sample decides: ±{pooled.mde:.1%} "
                            f"({pooled.n} DIR probes)")
    if len(intents) > 1:
        details["notes"].append(
            f"an intent's verdict is decided on its {family_level(tests):.1%} interval (the "
            f"tables show 95%): with {tests} per-intent tests, each able to FAIL the check, the "
            "chance of a false FAIL stays under 5% (Bonferroni)")
    return CheckResult(NAME, status, reason, values, th, details)


def _probability_sums(probes: Any, entity_probs: Mapping[str, float]
                      ) -> tuple[tuple[list[float], list[int]] | None,
                                 dict[str, tuple[list[float], list[int]]]]:
    """Per DIR probe, the summed probability of the requested entity and the number of its
    variants scored (``entity_probs``): ``(pooled or None, {intent: sums})``."""
    pooled: tuple[list[float], list[int]] = ([], [])
    by_intent: dict[str, tuple[list[float], list[int]]] = {}
    for rec in probes.dir:
        got = [entity_probs[v["prompt"]] for v in rec["variants"] if v["prompt"] in entity_probs]
        if not got:
            continue
        for sums in (pooled, by_intent.setdefault(rec["intent"], ([], []))):
            sums[0].append(sum(got))
            sums[1].append(len(got))
    return (pooled if pooled[1] else None), dict(sorted(by_intent.items()))
