"""Training health: the update-to-weight ratio ||dw|| / ||w|| of the optimizer steps per
parameter group, against the usual band for Adam-trained transformers.

The trainer logs the ratio of each group every ``update_ratio_every`` steps
(``steps[i]["update_ratio"]`` in metrics.json). Karpathy ("A Recipe for Training Neural
Networks"; the cs231n notes: "ratio of updates to values ~1e-3") puts a healthy step near 1e-3:
far below, the weights barely move (learning rate too low, or frozen); far above, each step
rewrites a large share of them (learning rate too high: the run thrashes or diverges).

Per judged group the statistic is the median ratio over the logged steps, in log10, with a
percentile-bootstrap interval over the logged steps; :func:`diagnostics.decision.decide` judges
it against both edges of the band (``ratio_low``, ``ratio_high``: PASS inside) and the fail
lines a factor ``fail_factor`` beyond them. Only the weight matrices are judged (embeddings,
attention, MLP): LayerNorm gains start at 1, so their ratio is about the learning rate itself,
and biases start at 0, so theirs is unbounded early on; both are reported, not judged.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from scipy.stats import bootstrap

from diagnostics.analyses._common import finite
from diagnostics.decision import LEVEL, N_RESAMPLES, Estimate, Verdict, decide
from diagnostics.results import CheckResult, table, worst

NAME = "training_health"
ORDER = 22  # after loss_phases: both read the training curves of metrics.json
DEFAULTS = {
    # the band of a healthy median step, a decade either side of Karpathy's ~1e-3 per step:
    # tiny fp32 runs of the bundled corpus at lr 3e-4 (the recipe) have medians of 5e-3 to 7e-3
    # for the weight matrices (Adam's first steps move every weight by about lr, i.e.
    # lr / 0.02 = 1.5e-2 of a GPT-2-initialised matrix, and the ratio falls as the cosine
    # schedule does), at lr 3e-3 about 2e-2 (aggressive: WARN)
    "ratio_low": 1e-4,
    "ratio_high": 1e-2,
    # FAIL a further factor 10 outside: above 0.1 per step a tenth of the weights' norm is
    # rewritten by every step; below 1e-5 training has practically stopped. A whole decade
    # because the interval is over autocorrelated steps of one run (it understates the doubt)
    "fail_factor": 10.0,
    # fewer logged steps than this never FAIL on their own (a run of a few dozen steps logs a
    # handful at the default update_ratio_every 10)
    "min_logged_steps": 5,
}
ORDERED = (("ratio_low", "ratio_high"),)
JUDGED = ("embeddings", "attention", "mlp")
MAX_POINTS = 200  # longer series are thinned to about this many logged steps for the chart
METHOD = ("median over logged steps of ||dw|| / ||w|| per group, log10, percentile bootstrap "
          "over the logged steps")


# a step that did not move a group at all (ratio 0) counts as this on the log scale: below
# every fail line, so weights the optimizer never updates are judged, not dropped
ZERO_RATIO = 1e-12


def ratio_series(metrics: Mapping[str, Any]) -> dict[str, list[tuple[int, float]]]:
    """Per group, ``(step, ratio)`` of every logged step with a finite ratio (0 included: the
    group did not move), in step order; empty when the run logged none."""
    out: dict[str, list[tuple[int, float]]] = {}
    for s in sorted(metrics.get("steps") or [], key=lambda s: s["step"]):
        for group, ratio in (s.get("update_ratio") or {}).items():
            if finite(ratio) and ratio >= 0:
                out.setdefault(group, []).append((int(s["step"]), float(ratio)))
    return out


def log_median(ratios: list[float]) -> Estimate:
    """log10 of the median ratio (0 taken as ``ZERO_RATIO``) with a 95% percentile-bootstrap
    interval over the steps (seeded); an unbounded interval with fewer than 2 steps."""
    x = np.log10(np.maximum(np.asarray(ratios, dtype=float), ZERO_RATIO))
    value = float(np.median(x))
    if len(x) < 2 or np.ptp(x) == 0:
        bound = (-math.inf, math.inf) if len(x) < 2 else (value, value)
        return Estimate(value, *bound, len(x), "logged steps", "too few steps to resample")
    res = bootstrap((x,), np.median, confidence_level=LEVEL, method="percentile",
                    n_resamples=N_RESAMPLES, rng=np.random.default_rng(0))
    ci = res.confidence_interval
    return Estimate(value, min(float(ci.low), value), max(float(ci.high), value), len(x),
                    "logged steps", METHOD)


def _fmt(log10: float) -> str:
    return f"{10 ** log10:.2g}" if math.isfinite(log10) else str(log10)


def decision_format(key: str) -> Callable[[float], str]:
    """How a decision's value reads (every one here is a log10 ratio): pooled over training
    seeds it shows as the ratio, not as a percentage of its logarithm."""
    return _fmt


def _judge(est: Estimate, th: Mapping[str, float]) -> tuple[Verdict, Verdict]:
    """(high side, low side) verdicts of a log10 median against the band."""
    low, high = math.log10(th["ratio_low"]), math.log10(th["ratio_high"])
    factor, min_n = math.log10(th["fail_factor"]), int(th["min_logged_steps"])
    above = decide(est, pass_line=high, fail_line=high + factor, higher_is_better=False,
                   fmt=_fmt, min_n=min_n)
    below = decide(est, pass_line=low, fail_line=low - factor, higher_is_better=True,
                   fmt=_fmt, min_n=min_n)
    return above, below


def _third(points: list[tuple[int, float]], which: int) -> float | None:
    part = np.array_split(np.array([r for _, r in points]), 3)[which] if len(points) >= 3 else []
    return float(np.median(part)) if len(part) else None


def analyse_training_health(metrics: Mapping[str, Any],
                            thresholds: Mapping[str, float]) -> CheckResult:
    """Judge each weight-matrix group's median update-to-weight ratio against the band (module
    docstring). ``metrics``: a run's metrics.json. SKIP when it logged no update ratios."""
    th = {k: thresholds[k] for k in DEFAULTS}
    series = ratio_series(metrics)
    if not series:
        return CheckResult(NAME, "SKIP", "the run logged no update-to-weight ratios (trained "
                           "before they existed, or with update_ratio_every=0): retrain with "
                           "--set update_ratio_every=10", {}, th)
    values: dict[str, Any] = {"groups": list(series)}
    details: dict[str, Any] = {"method": METHOD, "tables": [], "notes": [], "decisions": {}}
    rows, marks, statuses, problems = [], [], [], []
    for group, points in series.items():
        ratios = [r for _, r in points]
        est = log_median(ratios)
        first, last = _third(points, 0), _third(points, 2)
        values.update({f"{group}_median": 10 ** est.value,
                       f"{group}_median_ci95_low": 10 ** est.low,
                       f"{group}_median_ci95_high": 10 ** est.high,
                       f"{group}_n": est.n, f"{group}_first_third": first,
                       f"{group}_last_third": last})
        status = None
        if group in JUDGED:
            above, below = _judge(est, th)
            details["decisions"][f"{group}_log10_median_high"] = above.rule
            details["decisions"][f"{group}_log10_median_low"] = below.rule
            status = worst([above.status, below.status])
            statuses.append(status)
            if status != "PASS" and not any(ratios):
                problems.append((status, "still", f"{group} did not move in any of its "
                                 f"{len(ratios)} logged steps (ratio 0: {below.reason})"))
            elif status != "PASS":
                side, verdict = ("above", above) if above.status == status else ("below", below)
                problems.append((status, side, f"{group} {verdict.reason}"))
        rows.append((group, est.n, 10 ** est.value, f"{_fmt(est.low)} to {_fmt(est.high)}",
                     first, last, status or "not judged"))
        marks.append(status)
    details["tables"].append(table(
        f"Update-to-weight ratio per optimizer step (band {th['ratio_low']:g} to "
        f"{th['ratio_high']:g})",
        ["group", "logged steps", "median", "95% CI", "median, first third",
         "median, last third", "verdict"], rows, marks))
    details["notes"].append("norms (LayerNorm gains start at 1: ratio about lr) and biases "
                            "(start at 0) are shown, not judged")
    stride = max(1, math.ceil(max(len(p) for p in series.values()) / MAX_POINTS))
    details["series"] = {g: [list(q) for q in pts[::stride]] for g, pts in series.items()}
    if not statuses:
        return CheckResult(NAME, "SKIP", "no weight-matrix group (embeddings, attention, mlp) "
                           "among the logged update ratios", values, th, details)
    status = worst(statuses)
    if status == "PASS":
        shown = ", ".join(f"{g} {values[f'{g}_median']:.2g}" for g in series if g in JUDGED)
        reason = (f"median update-to-weight ratio per step inside {th['ratio_low']:g} to "
                  f"{th['ratio_high']:g} for every weight group ({shown})")
        return CheckResult(NAME, status, reason, values, th, details)
    problems.sort(key=lambda p: p[0] != "FAIL")
    hints = {"above": "lower lr (large steps rewrite the weights)",
             "below": "raise lr (the weights barely move)",
             "still": "check that the optimizer updates every weight (its parameter groups, a "
                      "learning rate of 0 for a group)"}
    hint = " or ".join(dict.fromkeys(hints[p[1]] for p in problems))
    reason = "update-to-weight ratio: " + "; ".join(p[2] for p in problems) + f"; {hint}"
    return CheckResult(NAME, status, reason, values, th, details)
