"""Faithfulness to the requested entity (docs/diagnostics.md, "faithfulness"): DIR probes
ask the same request about different entities (checking / savings / credit card), and an
answer is faithful when the entities it names are exactly the requested one.

No judge is needed, so an unreliable intent judge never hides the chapter's "What is my credit
balance?" -> "your checking account balance is ..." failure. The verdict is the worst of the
pooled share and the share of each intent, so a fault confined to one intent is not diluted by
the others (a conclusive per-intent FAIL is a FAIL); intervals resample whole DIR probes (the
variants of one probe share a template).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bankllm.synth import mentioned_account_types
from diagnostics.analyses._probes import MAX_ROWS, clip_answer
from diagnostics.decision import decide, rate
from diagnostics.paired import identity
from diagnostics.results import CheckResult, table

NAME = "faithfulness"
ORDER = 70  # place in the report
# share of entity-swapped requests answered about exactly the requested entity: PASS at
# faithfulness_pass, FAIL below it minus warn_margin
DEFAULTS = {"faithfulness_pass": 0.90, "warn_margin": 0.15}


def _pct(x: float) -> str:
    return f"{x:.1%}"


def analyse_faithfulness(probes: Any, responses: Mapping[str, str],
                         thresholds: Mapping[str, float]) -> CheckResult:
    """DIR verdict. ``faithfulness`` = share of faithful answers over all variants, with its
    interval over probes; the same per intent (``per_intent``) and per requested entity. The
    pooled estimate decides PASS / WARN / FAIL by the shared rule; an intent whose own interval
    lies wholly below ``faithfulness_pass - warn_margin`` makes it FAIL (an inconclusive small
    intent does not make it WARN)."""
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
            named = mentioned_account_types(answer)
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
    intents = {name: rate(h, c, "DIR probes") for name, (h, c) in sorted(by_intent.items())}
    intent_verdicts = {name: decide(est, higher_is_better=True, fmt=_pct, **lines)
                       for name, est in intents.items()}
    n, faithful = sum(counts), sum(hits)
    values: dict[str, Any] = {
        **pooled.values("faithfulness"), "n_variants": n, "n_unfaithful": n - faithful,
        "n_swapped": swapped,
        **{f"faithfulness_{e.replace(' ', '_')}": h / t for e, (h, t) in per_entity.items()},
        "per_intent": {name: {**est.values("faithfulness"),
                              "status": intent_verdicts[name].status}
                       for name, est in intents.items()},
    }
    failing = [k for k, v in intent_verdicts.items() if v.status == "FAIL"]
    status = "FAIL" if failing else pooled_verdict.status
    reason = f"{faithful}/{n} entity-swapped requests answered about the requested account: " \
             f"{pooled_verdict.reason}"
    worst_intent = min(intents, key=lambda k: intents[k].value)
    if failing or status != "PASS":
        reason += f"; worst intent {worst_intent}: {intent_verdicts[worst_intent].reason}"
    if status == "FAIL":
        reason += (f"; {swapped} answers name another account instead — the model ignores the "
                   "entity the customer asked about")
    details: dict[str, Any] = {"failures": failures, "tables": [], "notes": [],
                               "decisions": {"faithfulness": pooled_verdict.rule},
                               "outcomes": {"identity": identity({"dir": probes.dir}),
                                            "dir": outcomes}}
    details["tables"].append(table(
        "faithfulness per intent", ["intent", "share", "95% interval", "probes", "verdict"],
        [(k, _pct(e.value), f"{_pct(e.low)} - {_pct(e.high)}", e.n, intent_verdicts[k].status)
         for k, e in intents.items()],
        [v.status for v in intent_verdicts.values()]))
    details["tables"].append(table(
        "faithfulness per requested account", ["account", "faithful", "of", "share"],
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
    return CheckResult(NAME, status, reason, values, th, details)
