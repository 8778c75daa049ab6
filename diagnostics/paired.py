"""Change against the baseline, paired on the same probes (docs/diagnostics.md, "Change
against the baseline").

The checks with a baseline value (consistency, faithfulness, memorization gap) record their
per-item outcomes in ``details["outcomes"]``: ``{"identity": str, <set>: {item id: outcome}}``
where an outcome is ``0``/``1`` (a binary item: an MFT prompt, a DIR variant) or ``[hits,
total]`` (a cluster: an INV group's agreeing pairs, a conversation's exact-match turns).
``bankllm gate --update`` copies them into the baseline (``check_outcomes``); the pytest check
then compares its own outcomes with the baseline's on the items both hold:

* binary items: the change in share (new − base), an exact McNemar test on the discordant
  pairs (``scipy.stats.binomtest``) and a paired percentile bootstrap interval;
* clustered items: the change in pooled rate with a paired bootstrap over the shared clusters
  (for the memorization gap, the change of a difference of two pooled rates, each set
  resampled on its own).

This is information beside the absolute verdict: :func:`compare_with_baseline` adds values,
one sentence of the reason, a table and notes, and never changes the status.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.stats import binomtest, bootstrap

from diagnostics.decision import LEVEL, N_RESAMPLES
from diagnostics.results import CheckResult, table

ALPHA = 1 - LEVEL


def identity(obj: Any) -> str:
    """First 16 hex digits of the SHA-256 of ``obj`` as canonical JSON: what a set of probes
    (their records, as read from the files) or of prompts is, so that outcomes measured on
    other probes are never paired."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True)
class Spec:
    """One compared value of a check: ``key`` (the value's name, e.g. ``"novel_accuracy"``),
    the outcome ``sets`` it is computed from (one set, or ``(minuend, subtrahend)`` for a
    difference of two rates), whether ``binary`` (McNemar), the resampling ``unit`` and the
    direction. ``cluster``: maps a binary item id to the cluster its bootstrap resamples."""

    key: str
    sets: tuple[str, ...]
    unit: str
    higher_is_better: bool
    binary: bool = False
    cluster: Callable[[str], str] | None = None


# the compared values of each check
SPECS: dict[str, tuple[Spec, ...]] = {
    "consistency": (
        Spec("consistency", ("inv",), "INV groups", True),
        Spec("novel_accuracy", ("mft",), "MFT prompts", True, binary=True),
    ),
    "faithfulness": (
        Spec("faithfulness", ("dir",), "DIR variants", True, binary=True,
             cluster=lambda item: item.split("/", 1)[0]),
    ),
    "memorization": (
        Spec("gap", ("train", "val"), "conversations", False),
    ),
}


@dataclass(frozen=True)
class Change:
    """``value`` = new − base on the ``n`` shared items, its paired 95% interval, the exact
    McNemar ``p`` (binary items; None otherwise) with the ``discordant`` counts (base right and
    new wrong, base wrong and new right), and the items held by one side only."""

    key: str
    value: float
    low: float
    high: float
    n: int
    unit: str
    p: float | None = None
    discordant: tuple[int, int] | None = None
    only_new: int = 0
    only_base: int = 0
    base: float | None = None
    new: float | None = None

    @property
    def conclusive(self) -> bool:
        """The interval excludes 0 (and, for binary items, McNemar's p < 0.05)."""
        if not (math.isfinite(self.low) and math.isfinite(self.high)):
            return False
        outside = self.low > 0 or self.high < 0
        return outside and (self.p is None or self.p < ALPHA)

    def values(self) -> dict[str, Any]:
        """``{key}_vs_baseline``, ``_ci95_low/high``, ``_n``, ``_p`` (binary), and the items
        left out: ``_only_run``, ``_only_baseline``."""
        k = f"{self.key}_vs_baseline"
        out: dict[str, Any] = {k: self.value, f"{k}_ci95_low": self.low,
                               f"{k}_ci95_high": self.high, f"{k}_n": self.n,
                               f"{k}_only_run": self.only_new,
                               f"{k}_only_baseline": self.only_base}
        if self.p is not None:
            out[f"{k}_p"] = self.p
        return out

    def conclusion(self, higher_is_better: bool) -> str:
        if not self.conclusive:
            return "no conclusive change"
        better = (self.value > 0) == higher_is_better
        return "conclusively better" if better else "conclusively worse"

    def sentence(self, higher_is_better: bool) -> str:
        """``vs baseline: -4.0 points (95% CI -9.1 to +1.2, McNemar p = 0.21, 36 shared
        probes): no conclusive change``."""
        inside = [_ci_text(self.low, self.high)]
        if self.p is not None:
            inside.append(f"McNemar p = {_p_text(self.p)}")
        inside.append(f"{self.n} shared {self.unit}")
        left = self.only_new + self.only_base
        if left:
            inside.append(f"{left} on one side only left out")
        return (f"vs baseline: {_points(self.value)} ({', '.join(inside)}): "
                f"{self.conclusion(higher_is_better)}")


def _points(x: float) -> str:
    return f"{100 * x:+.1f} points"


def _ci_text(low: float, high: float) -> str:
    if not (math.isfinite(low) and math.isfinite(high)):
        return "too few shared items for an interval"
    return f"95% CI {100 * low:+.1f} to {100 * high:+.1f}"


def _p_text(p: float) -> str:
    return f"{p:.2g}" if p < 0.01 else f"{p:.2f}"


def _paired_interval(statistic: Callable[..., np.ndarray], sizes: Sequence[int]
                     ) -> tuple[float, float]:
    """Percentile bootstrap of ``statistic(*indices)``, each index array resampling one set
    of shared clusters (``sizes``); seeded. (-inf, inf) with fewer than 2 clusters in a set."""
    if any(s < 2 for s in sizes):
        return -math.inf, math.inf
    data = tuple(np.arange(s) for s in sizes)
    res = bootstrap(data, statistic, vectorized=True, paired=False, confidence_level=LEVEL,
                    method="percentile", n_resamples=N_RESAMPLES, rng=np.random.default_rng(0))
    low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
    return low, high


def _split(new: Mapping[str, Any], base: Mapping[str, Any]) -> tuple[list[str], int, int]:
    shared = [k for k in new if k in base]
    return shared, len(new) - len(shared), len(base) - len(shared)


def _pair(outcome: Any) -> tuple[float, float]:
    if isinstance(outcome, (list, tuple)):
        return float(outcome[0]), float(outcome[1])
    return float(outcome), 1.0


def binary_change(new: Mapping[str, int], base: Mapping[str, int], key: str, unit: str,
                  cluster: Callable[[str], str] | None = None) -> Change | None:
    """Change in share of right items (``1``) on the items both sides hold: exact McNemar
    test on the discordant pairs (two-sided binomial test of one direction against half of
    them; p = 1 without any), and a paired bootstrap interval over items (over ``cluster``s of
    items when given, e.g. the variants of one DIR probe). None without a shared item."""
    shared, only_new, only_base = _split(new, base)
    if not shared:
        return None
    x = np.array([float(new[k]) for k in shared])
    y = np.array([float(base[k]) for k in shared])
    worse = int(np.sum((y == 1) & (x == 0)))
    better = int(np.sum((y == 0) & (x == 1)))
    p = float(binomtest(better, worse + better, 0.5).pvalue) if worse + better else 1.0
    groups: dict[str, list[int]] = {}
    for i, k in enumerate(shared):
        groups.setdefault(cluster(k) if cluster else k, []).append(i)
    d = np.array([float(np.sum(x[g] - y[g])) for g in groups.values()])
    c = np.array([float(len(g)) for g in groups.values()])

    def statistic(i: np.ndarray, axis: int = -1) -> np.ndarray:
        return d[i].sum(axis=axis) / c[i].sum(axis=axis)

    low, high = _paired_interval(statistic, [len(d)])
    return Change(key, float(x.mean() - y.mean()), low, high, len(shared), unit, p,
                  (worse, better), only_new, only_base, float(y.mean()), float(x.mean()))


def _rates(outcomes: Mapping[str, Any], shared: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    pairs = [_pair(outcomes[k]) for k in shared]
    return np.array([h for h, _ in pairs]), np.array([n for _, n in pairs])


def clustered_change(new: Sequence[Mapping[str, Any]], base: Sequence[Mapping[str, Any]],
                     key: str, unit: str) -> Change | None:
    """Change in pooled rate ``sum(hits) / sum(total)`` over the clusters both sides hold
    (one set), or in the difference of two pooled rates (two sets: ``rate(set 0) − rate(set
    1)``, e.g. EM train − EM val), with a paired bootstrap over the shared clusters (each set
    resampled on its own). ``new``/``base``: one ``{cluster id: [hits, total]}`` per set.
    None when a set has no shared cluster with a total."""
    arrays, only_new, only_base, n = [], 0, 0, 0
    for a, b in zip(new, base, strict=True):
        shared, on, ob = _split(a, b)
        hn, tn = _rates(a, shared)
        hb, tb = _rates(b, shared)
        if not shared or tn.sum() == 0 or tb.sum() == 0:
            return None
        arrays.append((hn, tn, hb, tb))
        only_new, only_base, n = only_new + on, only_base + ob, n + len(shared)
    sign = (1.0, -1.0)[: len(arrays)]

    def pooled(which: int, *indices: np.ndarray, axis: int = -1) -> np.ndarray:
        total = 0.0
        for s, arr, i in zip(sign, arrays, indices, strict=True):
            h, t = arr[2 * which], arr[2 * which + 1]
            total = total + s * h[i].sum(axis=axis) / np.maximum(t[i].sum(axis=axis), 1)
        return total

    def statistic(*indices: np.ndarray, axis: int = -1) -> np.ndarray:
        return pooled(0, *indices, axis=axis) - pooled(1, *indices, axis=axis)

    full = [np.arange(len(arr[0])) for arr in arrays]
    new_value, base_value = float(pooled(0, *full)), float(pooled(1, *full))
    low, high = _paired_interval(statistic, [len(arr[0]) for arr in arrays])
    return Change(key, new_value - base_value, low, high, n, unit, None, None, only_new,
                  only_base, base_value, new_value)


def change(spec: Spec, new: Mapping[str, Any], base: Mapping[str, Any]) -> Change | None:
    """The change of ``spec``'s value between two outcome records (None when either lacks
    its sets or they share no item)."""
    if not all(isinstance(o.get(s), Mapping) for o in (new, base) for s in spec.sets):
        return None
    if spec.binary:
        return binary_change(new[spec.sets[0]], base[spec.sets[0]], spec.key, spec.unit,
                             spec.cluster)
    return clustered_change([new[s] for s in spec.sets], [base[s] for s in spec.sets],
                            spec.key, spec.unit)


def compare_with_baseline(result: CheckResult,
                          baseline_outcomes: Mapping[str, Any] | None) -> CheckResult:
    """``result`` with its change against the baseline's outcomes of the same check
    (``baseline_outcomes``: ``{check: outcomes}`` of the baseline, or None): per compared
    value, ``<key>_vs_baseline*`` values, one sentence appended to the reason and a row of the
    table "change against the baseline". Nothing is compared (and a note says why) when the
    baseline holds no outcomes of this check or they were measured on other probes. The status
    is never changed."""
    mine = result.details.get("outcomes")
    specs = SPECS.get(result.name, ())
    if not specs or not isinstance(mine, Mapping) or result.status == "SKIP":
        return result
    notes = result.details.setdefault("notes", [])
    base = (baseline_outcomes or {}).get(result.name)
    if not isinstance(base, Mapping):
        notes.append("no change against the baseline: the baseline holds no outcomes of this "
                     "check (make it with `pytest diagnostics --run RUN`, then `bankllm gate "
                     "--run RUN --update`)")
        return result
    if base.get("identity") != mine.get("identity"):
        notes.append(f"no change against the baseline: its outcomes were measured on other "
                     f"probes (identity {base.get('identity')} against this run's "
                     f"{mine.get('identity')}); refused")
        return result
    rows, sentences = [], []
    for spec in specs:
        ch = change(spec, mine, base)
        if ch is None:
            notes.append(f"{spec.key}: no {spec.unit} shared with the baseline to compare")
            continue
        result.values.update(ch.values())
        sentences.append(f"{spec.key} {ch.sentence(spec.higher_is_better)}")
        rows.append((spec.key, _pct(ch.base), _pct(ch.new), _points(ch.value),
                     _ci_text(ch.low, ch.high).removeprefix("95% CI "),
                     None if ch.p is None else _p_text(ch.p), ch.n,
                     ch.only_new + ch.only_base, ch.conclusion(spec.higher_is_better)))
    if rows:
        result.reason = "; ".join([result.reason, *sentences])
        result.details.setdefault("tables", []).append(table(
            "change against the baseline (paired on the same items; information, not a verdict)",
            ["value", "baseline", "run", "change", "95% CI (points)", "McNemar p", "shared",
             "one side only", "conclusion"], rows))
    return result


def _pct(x: float | None) -> str | None:
    return None if x is None else f"{x:.1%}"
