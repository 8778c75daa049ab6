"""Train/val leakage: val conversations that are (near) copies of train conversations."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from diagnostics.decision import decide, rate
from diagnostics.results import CheckResult, combine, table

NAME = "leakage"
ORDER = 40  # place in the report
# near duplicate = rapidfuzz ratio >= near_ratio
DEFAULTS = {"near_ratio": 95, "max_exact": 0.05, "max_near": 0.05}
_CELLS_PER_CHUNK = 4_000_000  # bound the float32 score matrix of one cdist call to ~16 MB


def normalise(text: str) -> str:
    """The normal form of docs/diagnostics.md (leakage): lower case, whitespace collapsed."""
    return " ".join(text.lower().split())


def diff_snippets(a: str, b: str, width: int = 56) -> tuple[str, str]:
    """The parts of ``a`` and ``b`` around their first difference (what a person must see)."""
    i = 0
    while i < min(len(a), len(b)) and a[i] == b[i]:
        i += 1
    start = max(0, i - width // 3)
    pre = "…" if start else ""
    return pre + a[start:start + width], pre + b[start:start + width]


def best_matches(queries: Sequence[str], choices: Sequence[str], cutoff: float) -> tuple:
    """For each query, its best ``rapidfuzz`` ratio against ``choices`` (0 when below
    ``cutoff``) and the index of that choice. Vectorised with ``process.cdist`` in row chunks
    (C++, one thread), never a Python double loop."""
    from rapidfuzz import fuzz, process

    scores = np.zeros(len(queries), dtype=float)
    index = np.zeros(len(queries), dtype=int)
    if not len(queries) or not len(choices):
        return scores, index
    rows = max(1, _CELLS_PER_CHUNK // len(choices))
    for start in range(0, len(queries), rows):
        block = process.cdist(queries[start:start + rows], choices, scorer=fuzz.ratio,
                              score_cutoff=cutoff, dtype=np.float32, workers=1)
        index[start:start + rows] = block.argmax(axis=1)
        scores[start:start + rows] = block.max(axis=1)
    return scores, index


def analyse_leakage(
    train_texts: Sequence[str],
    val_texts: Sequence[str],
    thresholds: Mapping[str, float],
    train_customer_turns: Sequence[str] = (),
    val_customer_turns: Sequence[str] = (),
    val_ids: Sequence[str] | None = None,
) -> CheckResult:
    """Exact and near (ratio >= ``near_ratio``) overlap of val conversations with train.

    ``*_texts``: one string per conversation (all turns); ``*_customer_turns``: every customer
    turn of the split, for the information-only verbatim-turn share. ``thresholds``: needs
    ``near_ratio``, ``max_exact``, ``max_near``. Each share carries its Wilson interval over
    val conversations and is decided by the shared rule against its bound (one line: PASS
    below it, FAIL above it, WARN when the interval reaches it).
    """
    cutoff, max_exact, max_near = (float(thresholds[k]) for k in ("near_ratio", "max_exact",
                                                                  "max_near"))
    used = {"near_ratio": cutoff, "max_exact": max_exact, "max_near": max_near}
    if not val_texts or not train_texts:
        return CheckResult(NAME, "SKIP", f"empty split (train {len(train_texts)}, val "
                           f"{len(val_texts)} conversations): nothing to compare", {}, used)
    train = sorted({normalise(t) for t in train_texts})
    val = [normalise(t) for t in val_texts]
    train_set = set(train)
    exact = np.array([v in train_set for v in val])
    scores, index = best_matches(val, train, cutoff)
    near = scores >= cutoff
    n = len(val)
    values: dict[str, Any] = {
        "n_train": len(train_texts), "n_val": n, "n_train_unique": len(train),
        "exact": int(exact.sum()), "near": int(near.sum()),
        "exact_share": float(exact.mean()), "near_share": float(near.mean()),
    }
    details: dict[str, Any] = {"tables": [], "notes": []}
    if len(val_customer_turns):
        train_turns = {normalise(t) for t in train_customer_turns}
        verbatim = float(np.mean([normalise(t) in train_turns for t in val_customer_turns]))
        values["customer_turn_verbatim_share"] = verbatim
        details["notes"].append(
            f"{verbatim:.0%} of val customer turns appear verbatim in train (information: high "
            "in templated data, and why val loss tracks train loss)")
    ids = list(val_ids) if val_ids is not None else [str(i) for i in range(n)]
    closest = [i for i in np.argsort(-scores, kind="stable") if near[i]][:10]
    if closest:
        details["tables"].append(table(
            "Closest val/train pairs (text from the first difference)",
            ["val id", "ratio", "exact", "val text", "train text"],
            [(ids[i], float(scores[i]), bool(exact[i]), *diff_snippets(val[i], train[index[i]]))
             for i in closest], ["FAIL" if exact[i] else "WARN" for i in closest]))
    exact_est = rate(exact.astype(int).tolist(), [1] * n, "val conversations")
    near_est = rate(near.astype(int).tolist(), [1] * n, "val conversations")
    values.update(exact_est.values("exact_share"))
    values.update(near_est.values("near_share"))
    exact_verdict = decide(exact_est, pass_line=max_exact, fail_line=max_exact,
                           higher_is_better=False)
    near_verdict = decide(near_est, pass_line=max_near, fail_line=max_near,
                          higher_is_better=False)
    details["decisions"] = {"exact_share": exact_verdict.rule, "near_share": near_verdict.rule}
    status, reason = combine([
        (exact_verdict.status, f"exact copies of train: {values['exact']}/{n} val "
                               f"conversations, {exact_verdict.reason}"),
        (near_verdict.status, f"near-duplicates (ratio ≥ {cutoff:g}): {values['near']}/{n}, "
                              f"{near_verdict.reason}")])
    if status == "FAIL":
        reason += (": val loss overstates generalisation — deduplicate the corpus (exact and "
                   "fuzzy) before splitting")
    return CheckResult(NAME, status, reason, values, used, details)
