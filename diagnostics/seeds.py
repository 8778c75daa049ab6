"""Diagnosing a seed group (``bankllm train --seeds 0 1 2``): one verdict per check over the
members, pooled so that it holds the seed-to-seed variance (docs/diagnostics.md, "Seed
groups").

Each member's result records its decisions (``details["decisions"]``: the estimate and lines
of every :func:`diagnostics.decision.decide`); :func:`combine_seeds` pools each decision over
the members with :func:`diagnostics.decision.pool_seeds` and decides it again. A check without
pooled decisions (initial loss, loss phases, overfitting, whose verdict combines several
rules) takes the worst member's verdict. A check
whose members' verdicts differ is marked seed-sensitive.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from diagnostics.decision import pool_seeds
from diagnostics.results import CheckResult, table, worst


def combine_seeds(results: Sequence[CheckResult], members: Sequence[str]) -> CheckResult:
    """One result for a check from its per-member ``results`` (``members[i]`` names the
    member of ``results[i]``). Values: ``seeds`` (per member: status and decided values),
    ``seed_sensitive``, and per pooled decision ``<key>``, ``<key>_ci95_low/high``,
    ``<key>_seed_sd``."""
    name = results[0].name
    statuses = [r.status for r in results]
    ran = [r for r in results if r.status != "SKIP"]
    if not ran:
        return CheckResult(name, "SKIP", f"every member SKIPped: {results[0].reason}",
                           {"seeds": dict.fromkeys(members, "SKIP")}, results[0].thresholds)
    keys = [k for k in (ran[0].details.get("decisions") or {})
            if all(k in (r.details.get("decisions") or {}) for r in ran)]
    values: dict[str, Any] = {"members": list(members), "seed_sensitive": len(set(statuses)) > 1}
    pooled_status, parts, rows = [], [], []
    for key in keys:
        rules = [r.details["decisions"][key] for r in ran]
        est, verdict = pool_seeds(rules, _decision_format(name, key))
        sd = _sd([rule["value"] for rule in rules])
        values.update({key: est.value, f"{key}_ci95_low": est.low, f"{key}_ci95_high": est.high,
                       f"{key}_seed_sd": sd})
        pooled_status.append(verdict.status)
        parts.append(f"{key} over {len(rules)} seeds: {verdict.reason}")
        rows.append([key, *(rule["value"] for rule in rules), est.value, sd, verdict.status])
    status = worst(pooled_status) if keys else worst(r.status for r in ran)
    if not keys:
        parts.append(f"worst of {len(ran)} members (no estimate to pool)")
    per_member = ", ".join(f"{m} {s}" for m, s in zip(members, statuses, strict=True))
    parts.append(f"per seed: {per_member}"
                 + (" — seed-sensitive: the verdict depends on the training seed"
                    if values["seed_sensitive"] else ""))
    values["seeds"] = {m: {"status": r.status, "reason": r.reason,
                           **{k: r.details.get("decisions", {}).get(k, {}).get("value")
                              for k in keys}}
                       for m, r in zip(members, results, strict=True)}
    details: dict[str, Any] = {"tables": [], "notes": [], "members": {
        m: r.to_dict() for m, r in zip(members, results, strict=True)}}
    if rows:
        details["tables"].append(table(
            "pooled over training seeds",
            ["value", *[m for m, r in zip(members, results, strict=True) if r.status != "SKIP"],
             "mean", "seed sd", "pooled verdict"], rows, [row[-1] for row in rows]))
    details["tables"].append(table("verdict per seed", ["member", "status", "reason"],
                                   [(m, r.status, r.reason)
                                    for m, r in zip(members, results, strict=True)],
                                   statuses))
    return CheckResult(name, status, "; ".join(parts), values, results[0].thresholds, details)


def _decision_format(check: str, key: str) -> Callable[[float], str]:
    """How the check shows the value of its decision ``key``: its module's
    ``decision_format(key)`` where it declares one (a log10 ratio, say), else a percentage."""
    from diagnostics.registry import CHECKS

    module = {m.NAME: m for m in CHECKS}.get(check)
    declared = getattr(module, "decision_format", None)
    return declared(key) if declared is not None else "{:.1%}".format


def _sd(values: Sequence[float]) -> float | None:
    import numpy as np

    return float(np.std(values, ddof=1)) if len(values) > 1 else None
