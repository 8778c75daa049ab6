"""Label noise in the training corpus: answers that name another entity than the customer asked
about, and near-identical customer turns labelled with conflicting intents.

The scanning is :mod:`bankllm.audit` (also behind ``bankllm data audit FILE``); this module
decides. Lines and their origin: docs/diagnostics.md, ``data_consistency``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from bankllm.audit import (
    ECHO_MIN_SHARE,
    MAX_ENTITY_MISMATCH,
    MAX_INTENT_CONFLICT,
    NEAR_RATIO,
    audit_corpus,
)
from diagnostics.decision import decide, rate, rate_in_family
from diagnostics.results import CheckResult, combine, table

NAME = "data_consistency"
ORDER = 35  # place in the report: beside leakage, the other check of the data itself
# one source: the CLI (bankllm data audit) uses the same constants
DEFAULTS = {"max_entity_mismatch": MAX_ENTITY_MISMATCH, "max_intent_conflict": MAX_INTENT_CONFLICT,
            "near_ratio": NEAR_RATIO, "echo_min_share": ECHO_MIN_SHARE}


def analyse_data_consistency(conversations: Sequence[dict[str, Any]],
                             thresholds: Mapping[str, float]) -> CheckResult:
    """Entity mismatches and intent conflicts of ``conversations`` (a corpus or the train split).

    ``thresholds``: ``max_entity_mismatch``, ``max_intent_conflict``, ``near_ratio``,
    ``echo_min_share``. The entity-mismatch share over all eligible exchanges and the
    intent-conflict share over near-identical customer-turn clusters carry Wilson intervals and
    are decided against their one line each; the mismatch share of each intent label is decided
    too, and only its FAIL counts (noise concentrated in one intent is diluted in the pooled
    share, while a small clean intent's wide interval must not make a clean corpus WARN).
    """
    used = {k: float(thresholds[k]) for k in DEFAULTS}
    max_entity, max_conflict = used["max_entity_mismatch"], used["max_intent_conflict"]
    audit = audit_corpus(conversations, near_ratio=used["near_ratio"],
                         echo_min_share=used["echo_min_share"])
    ent, its = audit.entities, audit.intents
    values: dict[str, Any] = {
        "conversations": audit.conversations, "exchanges": audit.exchanges,
        "eligible_exchanges": ent.eligible, "entity_mismatches": ent.mismatched,
        "labelled_turns": its.labelled_turns, "clusters": its.clusters,
        "conflicting_clusters": its.conflicting,
        **{f"{kind}_eligible": c["eligible"] for kind, c in ent.per_kind.items()},
        **{f"{kind}_mismatched": c["mismatched"] for kind, c in ent.per_kind.items()},
    }
    if not ent.eligible and not its.clusters:
        return CheckResult(NAME, "SKIP", f"nothing to compare in {audit.conversations} "
                           "conversations: no exchange names one account type, amount or payee "
                           "that its answer names too, and no near-identical labelled customer "
                           "turns", values, used)
    details: dict[str, Any] = {"tables": [], "notes": [], "decisions": {}}
    statuses, parts = [], []
    if ent.eligible:
        est = rate(ent.hits, [1] * len(ent.hits), "eligible exchanges")
        values.update(est.values("entity_mismatch"))
        verdict = decide(est, pass_line=max_entity, fail_line=max_entity,
                         higher_is_better=False)
        details["decisions"]["entity_mismatch"] = verdict.rule
        statuses.append(verdict.status)
        parts.append(f"entity mismatch {ent.mismatched}/{ent.eligible} eligible exchanges, "
                     f"{verdict.reason}")
        rows, row_status = [], []
        for label, hits in sorted(ent.by_intent.items(), key=lambda kv: -sum(kv[1]) / len(kv[1])):
            e, v = rate_in_family(hits, [1] * len(hits), "eligible exchanges",
                                  len(ent.by_intent), pass_line=max_entity,
                                  fail_line=max_entity, higher_is_better=False)
            if v.status == "FAIL":
                details["decisions"][f"entity_mismatch[{label}]"] = v.rule
                statuses.append("FAIL")
                parts.append(f"intent {label}: {sum(hits)}/{len(hits)} mismatched, {v.reason}")
            rows.append([label, sum(hits), len(hits), e.value, e.low, e.high])
            row_status.append("FAIL" if v.status == "FAIL" else None)
        details["tables"].append(table(
            "Entity mismatch per intent label (share of eligible exchanges, Wilson 95% CI)",
            ["intent", "mismatched", "eligible", "share", "ci95 low", "ci95 high"], rows,
            row_status))
        if ent.examples:
            details["tables"].append(table(
                "Entity mismatches (worst first)",
                ["conversation", "intent", "kind", "asked", "answered", "customer", "agent"],
                [[f"{x['conversation']}#{x['exchange']}", x["intent"], ", ".join(x["kinds"]),
                  x["asked"], x["answered"], x["customer"], x["agent"]] for x in ent.examples]))
        skipped = {k: v for k, v in ent.not_echoing.items() if v}
        if skipped:
            details["notes"].append("not compared (answers do not echo the customer's entity): "
                                    + "; ".join(f"{k}: {', '.join(v)}"
                                                for k, v in skipped.items()))
    else:
        details["notes"].append("no exchange eligible for the entity comparison")
    if its.clusters:
        est = rate(its.hits, [1] * len(its.hits), "near-identical clusters")
        values.update(est.values("intent_conflict"))
        verdict = decide(est, pass_line=max_conflict, fail_line=max_conflict,
                         higher_is_better=False)
        details["decisions"]["intent_conflict"] = verdict.rule
        statuses.append(verdict.status)
        parts.append(f"intent conflict {its.conflicting}/{its.clusters} near-identical "
                     f"customer-turn clusters, {verdict.reason}")
        if its.examples:
            details["tables"].append(table(
                "Conflicting intents on near-identical customer turns (worst first)",
                ["turns", "intents", "customer turns", "conversations"],
                [[x["turns"], x["intents"], x["texts"], x["conversations"]]
                 for x in its.examples]))
    else:
        details["notes"].append("intent conflicts not measured: no intent labels or no "
                                "near-identical labelled customer turns")
    status, reason = combine(zip(statuses, parts, strict=True))
    if status == "FAIL":
        reason += (": the model would learn the noise — fix the generator or relabel "
                   "(`bankllm data audit FILE` lists the examples)")
    return CheckResult(NAME, status, reason, values, used, details)
