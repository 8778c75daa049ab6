"""The one decision rule of the diagnostics (docs/diagnostics.md, "How a verdict is decided").

A value estimated from a sample (a share of probes, a gap between two rates, a relative change)
comes as an :class:`Estimate` with its 95% interval, and :func:`decide` turns it into a verdict
against the check's two lines: PASS when the whole interval is on the passing side of the pass
line, FAIL when the whole interval is past the fail line, otherwise WARN with a reason saying
whether the value is conclusively between the lines or the evidence is inconclusive, and how
many more items would settle it. A sample of fewer than ``min_n`` items never FAILs on its own.

Intervals are computed from each value's natural unit of resampling: whole clusters (probe
groups, conversations) by the percentile bootstrap, widened to the Wilson score interval of the
pooled count so that a small or all-or-nothing sample never gets a zero-width interval.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.stats import bootstrap

from bankllm.intervals import LEVEL, wilson

_Z = 1.959963984540054  # two-sided 95% normal quantile
N_RESAMPLES = 2000


@dataclass(frozen=True)
class Estimate:
    """A value with its interval over ``n`` items of ``unit`` (e.g. 40 "probe groups"), at
    confidence ``level`` (95% unless the estimate is one of a family, :func:`family_level`).
    ``bounds``: the range the quantity can take (a share: 0 to 1), which a pooled interval
    over training seeds is clipped to."""

    value: float
    low: float
    high: float
    n: int
    unit: str
    method: str
    level: float = LEVEL
    bounds: tuple[float, float] = (-math.inf, math.inf)

    @property
    def mde(self) -> float:
        """Minimum detectable effect at this sample size: the larger half-width of the
        interval, i.e. how far from a line the value must be for this sample to decide."""
        return max(self.value - self.low, self.high - self.value)

    def values(self, key: str) -> dict[str, Any]:
        """``{key, key_ci95_low, key_ci95_high, key_n, key_mde}`` for a result's values."""
        return {key: self.value, f"{key}_ci95_low": self.low, f"{key}_ci95_high": self.high,
                f"{key}_n": self.n, f"{key}_mde": self.mde}

    def interval_text(self, fmt: Callable[[float], str]) -> str:
        level = f"{self.level * 100:.1f}".rstrip("0").rstrip(".")
        return f"{level}% CI {fmt(self.low)} to {fmt(self.high)} over {self.n} {self.unit}"


@dataclass(frozen=True)
class Verdict:
    """A status, the one-line reason fragment that justifies it, and ``rule``: the estimate
    and lines it was decided on (what a result records under ``details["decisions"]`` so that
    the verdicts of several training seeds can be pooled)."""

    status: str
    reason: str
    more_items: int | None = None
    rule: dict[str, Any] = field(default_factory=dict)


def _cluster_bootstrap(samples: list[tuple[np.ndarray, np.ndarray]], sign: Sequence[float],
                       level: float) -> tuple[float, float] | None:
    if any(len(h) < 2 or c.sum() == 0 for h, c in samples):
        return None

    def statistic(*indices: np.ndarray, axis: int = -1) -> np.ndarray:
        rates = [h[i].sum(axis=axis) / np.maximum(c[i].sum(axis=axis), 1)
                 for (h, c), i in zip(samples, indices, strict=True)]
        return sum(s * r for s, r in zip(sign, rates, strict=True))

    data = tuple(np.arange(len(h)) for h, _ in samples)
    result = bootstrap(data, statistic, vectorized=True, paired=False, confidence_level=level,
                       method="percentile", n_resamples=N_RESAMPLES, rng=np.random.default_rng(0))
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def rate_interval(
    hits: Sequence[float],
    counts: Sequence[int],
    minus: tuple[Sequence[float], Sequence[int]] | None = None,
    level: float = LEVEL,
) -> tuple[float, float] | None:
    """Percentile-bootstrap interval of the pooled rate ``sum(hits) / sum(counts)`` over
    clusters, or of that rate minus the pooled rate of an independent sample ``minus``. Whole
    clusters are resampled; seeded. None with fewer than 2 clusters in a sample."""
    samples = [(np.asarray(hits, dtype=float), np.asarray(counts, dtype=float))]
    if minus is not None:
        samples.append((np.asarray(minus[0], dtype=float), np.asarray(minus[1], dtype=float)))
    return _cluster_bootstrap(samples, (1.0, -1.0)[: len(samples)], level)


def family_level(tests: int, level: float = LEVEL) -> float:
    """Confidence level of each of ``tests`` intervals that may each FAIL a check on its own
    (one per intent, say), so that the chance of any false FAIL stays at most ``1 - level``
    (Bonferroni): twelve per-intent tests at 95% each would falsely FAIL a model that sits on
    the line in every intent about one time in four."""
    return 1 - (1 - level) / max(1, tests)


# below this many clusters their spread is too poorly seen for the bootstrap (see ``rate``)
FEW_CLUSTERS = 8


def _clusters_as_items(value: float, clusters: int, level: float) -> tuple[float, float]:
    """Clopper-Pearson interval of a mean ``value`` of ``clusters`` values in [0, 1], each
    taken as one all-or-nothing item: the widest spread such a mean can have, so it holds
    whatever the clusters' values are."""
    from scipy.stats import beta

    k, alpha = value * clusters, 1 - level
    low = float(beta.ppf(alpha / 2, k, clusters - k + 1)) if k > 0 else 0.0
    high = float(beta.ppf(1 - alpha / 2, k + 1, clusters - k)) if k < clusters else 1.0
    return low, high


def rate(hits: Sequence[float], counts: Sequence[int], unit: str,
         level: float = LEVEL) -> Estimate:
    """The pooled rate of clustered hits with the wider of its cluster-bootstrap interval and
    the Wilson interval of the pooled count, at ``level``. ``unit`` names the clusters.

    Over fewer than ``FEW_CLUSTERS`` clusters it is widened to at least the interval of the
    clusters taken as all-or-nothing items: a few clusters can all come from one side of a
    population split between clusters that all agree and clusters that do not, and then
    neither the bootstrap nor Wilson sees the spread (three paraphrase groups at a true rate on
    the fail line FAILed up to one time in five in simulation)."""
    k, n = float(np.sum(hits)), int(np.sum(counts))
    value = k / n if n else float("nan")
    low, high = wilson(k, n, level)
    method = "Wilson"
    if not all(c == 1 for c in counts):
        boot = rate_interval(hits, counts, level=level)
        if boot is not None:
            low, high = min(low, boot[0]), max(high, boot[1])
            method = f"bootstrap over {unit} (at least Wilson)"
        if n and len(counts) < FEW_CLUSTERS:
            few = _clusters_as_items(value, len(counts), level)
            low, high = min(low, few[0]), max(high, few[1])
            method += f", at least Clopper-Pearson over the {len(counts)} {unit}"
    return Estimate(value, low, high, len(counts), unit, method, level, bounds=(0.0, 1.0))


def rate_in_family(hits: Sequence[float], counts: Sequence[int], unit: str, tests: int,
                   **rule: Any) -> tuple[Estimate, Verdict]:
    """``(the rate's 95% estimate, its verdict)`` for one of ``tests`` decisions that may each
    FAIL a check on its own: the verdict is :func:`decide` (``rule``: its keyword arguments)
    on the interval at :func:`family_level` ``(tests)``; the estimate is what a report shows."""
    shown = rate(hits, counts, unit)
    level = family_level(tests)
    judged_on = shown if level == shown.level else rate(hits, counts, unit, level)
    return shown, decide(judged_on, **rule)


def difference(a: tuple[Sequence[float], Sequence[int]], b: tuple[Sequence[float], Sequence[int]],
               unit: str) -> Estimate:
    """Pooled rate of ``a`` minus pooled rate of ``b`` (independent samples of clusters), with
    the wider of the cluster-bootstrap interval and Newcombe's hybrid Wilson interval."""
    k1, n1, k2, n2 = float(np.sum(a[0])), int(np.sum(a[1])), float(np.sum(b[0])), int(np.sum(b[1]))
    p1 = k1 / n1 if n1 else 0.0
    p2 = k2 / n2 if n2 else 0.0
    l1, u1 = wilson(k1, n1)
    l2, u2 = wilson(k2, n2)
    d = p1 - p2
    low = d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    high = d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    boot = rate_interval(a[0], a[1], minus=b)
    if boot is not None:
        low, high = min(low, boot[0]), max(high, boot[1])
    return Estimate(d, low, high, len(a[1]) + len(b[1]), unit,
                    f"bootstrap over {unit} (at least Newcombe-Wilson)", bounds=(-1.0, 1.0))


def _degrees_of_freedom(weights: np.ndarray) -> float:
    """Degrees of freedom of a ratio of totals weighted by ``weights`` (each item's base total
    or token count): Kish's effective number of items, ``sum(w)^2 / sum(w^2)``, less one (at
    least one). Items of unequal size carry less information than as many equal ones: over 3
    conversations of 20-80 tokens, ``n - 1`` let the t interval miss on one side 4.5% of the
    time instead of 2.5%."""
    return max(float(weights.sum() ** 2 / (weights**2).sum()) - 1.0, 1.0)


def _ratio_estimator_se(sums: np.ndarray, tokens: np.ndarray) -> tuple[float, float]:
    """(``sum(sums) / sum(tokens)``, its delta-method standard error over the clusters)."""
    r = float(sums.sum() / tokens.sum())
    return r, float(np.std(sums - r * tokens, ddof=1)) / math.sqrt(len(sums)) / float(
        tokens.mean())


def ratio_change(new: Sequence[float], base: Sequence[float], unit: str,
                 level: float = LEVEL) -> Estimate:
    """Paired relative change ``sum(new) / sum(base) - 1`` of per-item totals (e.g. summed
    token losses per conversation of one val set), with the wider of a paired percentile
    bootstrap over the items and the delta-method Student t interval (degrees of freedom from
    the base totals' effective number, :func:`_degrees_of_freedom`), no lower than -100% for
    non-negative totals. The bootstrap alone covers too little on a few items: over 4
    conversations with no true change, its 95% interval missed 0 about one time in five. A base
    total of 0 gives an infinite change (nan without a new total), no interval."""
    from scipy.stats import t as student_t

    x, y = np.asarray(new, dtype=float), np.asarray(base, dtype=float)
    if not y.sum() > 0:  # no base total: an infinite change if there is a new one, else none
        value = math.inf if x.sum() > 0 else math.nan
        return Estimate(value, value, value, len(x), unit, f"base total {y.sum():g}")
    value = float(x.sum() / y.sum() - 1.0)
    if len(x) < 2:
        return Estimate(value, -math.inf, math.inf, len(x), unit, "too few items")

    def statistic(i: np.ndarray, axis: int = -1) -> np.ndarray:
        return x[i].sum(axis=axis) / y[i].sum(axis=axis) - 1.0

    res = bootstrap((np.arange(len(x)),), statistic, vectorized=True, confidence_level=level,
                    method="percentile", n_resamples=N_RESAMPLES, rng=np.random.default_rng(0))
    ci = res.confidence_interval
    _, se = _ratio_estimator_se(x, y)  # of sum(new) / sum(base), so of the change too
    half = float(student_t.ppf(0.5 + level / 2, _degrees_of_freedom(y))) * se
    low, high = min(float(ci.low), value - half), max(float(ci.high), value + half)
    if (x >= 0).all() and (y >= 0).all():  # a ratio of non-negative totals: at least -100%
        low = max(low, -1.0)
    return Estimate(value, low, high, len(x), unit,
                    f"paired bootstrap over {unit} (at least Student t)", level)


def two_samples(statistic: Callable[[np.ndarray, np.ndarray], float], a: Sequence[float],
                b: Sequence[float], unit: str, level: float = LEVEL) -> Estimate:
    """``statistic(a, b)`` of two independent samples (e.g. the ROC AUC of members against
    non-members) with a stratified percentile bootstrap: each sample is resampled within
    itself, keeping its size; seeded. ``n`` is the two sizes together."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    value = float(statistic(x, y))
    if len(x) < 2 or len(y) < 2:
        return Estimate(value, -math.inf, math.inf, len(x) + len(y), unit, "too few items")
    res = bootstrap((x, y), lambda u, v: statistic(u, v), vectorized=False, paired=False,
                    confidence_level=level, method="percentile", n_resamples=N_RESAMPLES,
                    rng=np.random.default_rng(0))
    ci = res.confidence_interval
    low, high = min(float(ci.low), value), max(float(ci.high), value)
    return Estimate(value, low, high, len(x) + len(y), unit,
                    f"stratified bootstrap over {unit}")


def ratio_of_rates(a: tuple[Sequence[float], Sequence[float]],
                   b: tuple[Sequence[float], Sequence[float]], unit: str,
                   level: float = LEVEL) -> Estimate:
    """``(sum(a_sums) / sum(a_tokens)) / (sum(b_sums) / sum(b_tokens)) - 1`` of two independent
    samples of clusters (e.g. the summed token losses and token counts of val and of
    train_eval conversations), with the wider of a stratified percentile bootstrap and the
    delta-method Welch t interval. The bootstrap alone covers too little on a few clusters
    (as for :func:`ratio_change`); the t interval keeps a small sample from a FAIL that its
    spread does not support. ``n`` is the two sizes together."""
    from scipy.stats import t as student_t

    (s1, t1), (s2, t2) = ((np.asarray(s, dtype=float), np.asarray(t, dtype=float))
                          for s, t in (a, b))
    keep1, keep2 = t1 > 0, t2 > 0
    s1, t1, s2, t2 = s1[keep1], t1[keep1], s2[keep2], t2[keep2]
    n = len(s1) + len(s2)
    if len(s1) < 2 or len(s2) < 2 or not s2.sum() > 0:
        value = float(s1.sum() / t1.sum()) / float(s2.sum() / t2.sum()) - 1.0 \
            if t1.sum() > 0 and s2.sum() > 0 else math.nan
        return Estimate(value, -math.inf, math.inf, n, unit, "too few items")
    r1, se1 = _ratio_estimator_se(s1, t1)
    r2, se2 = _ratio_estimator_se(s2, t2)
    value = r1 / r2 - 1.0

    def statistic(i: np.ndarray, j: np.ndarray, axis: int = -1) -> np.ndarray:
        return (s1[i].sum(axis=axis) / t1[i].sum(axis=axis)) / (
            s2[j].sum(axis=axis) / t2[j].sum(axis=axis)) - 1.0

    boot = bootstrap((np.arange(len(s1)), np.arange(len(s2))), statistic, vectorized=True,
                     paired=False, confidence_level=level, method="percentile",
                     n_resamples=N_RESAMPLES, rng=np.random.default_rng(0)).confidence_interval
    # relative variances of the two rates; Welch-Satterthwaite degrees of freedom
    v1, v2 = (se1 / r1) ** 2 if r1 > 0 else 0.0, (se2 / r2) ** 2
    df = (v1 + v2) ** 2 / (v1**2 / _degrees_of_freedom(t1) + v2**2 / _degrees_of_freedom(t2)) \
        if v1 + v2 > 0 else math.inf
    half = float(student_t.ppf(0.5 + level / 2, df)) * (value + 1.0) * math.sqrt(v1 + v2)
    low, high = min(float(boot.low), value - half), max(float(boot.high), value + half)
    if (s1 >= 0).all():  # a ratio of non-negative rates: at least -100%
        low = max(low, -1.0)
    return Estimate(value, low, high, n, unit,
                    f"stratified bootstrap over {unit} (at least Welch t)", level)


# beyond this many times the sample, "N more items" is no practical advice: say how close
FEASIBLE_GROWTH = 100


def _more_items(est: Estimate, line: float) -> int | None:
    """Items to add so that the interval, shrinking as 1/sqrt(n), no longer reaches ``line``."""
    distance = abs(est.value - line)
    half = est.value - est.low if line < est.value else est.high - est.value
    if distance == 0 or not math.isfinite(half) or est.n <= 0:
        return None
    return max(1, math.ceil(est.n * (half / distance) ** 2) - est.n)


def decide(est: Estimate, *, pass_line: float, fail_line: float, higher_is_better: bool,
           fmt: Callable[[float], str] = "{:.1%}".format, min_n: int = 0) -> Verdict:
    """The verdict of ``est`` against its lines (``pass_line`` at or before ``fail_line`` on
    the passing side). Higher-is-better: PASS if low >= pass_line, FAIL if high < fail_line;
    lower-is-better: PASS if high <= pass_line, FAIL if low > fail_line; otherwise WARN. With
    ``n < min_n`` a FAIL becomes WARN. The reason states value, interval and what settles it."""
    verdict = _decide(est, pass_line, fail_line, higher_is_better, fmt, min_n)
    rule = {"value": est.value, "low": est.low, "high": est.high, "n": est.n, "unit": est.unit,
            "pass_line": pass_line, "fail_line": fail_line,
            "higher_is_better": higher_is_better, "min_n": min_n, "status": verdict.status}
    if all(math.isfinite(b) for b in est.bounds):
        rule["bounds"] = list(est.bounds)
    return Verdict(verdict.status, verdict.reason, verdict.more_items, rule)


def _decide(est: Estimate, pass_line: float, fail_line: float, higher_is_better: bool,
            fmt: Callable[[float], str], min_n: int) -> Verdict:
    if not math.isfinite(est.value):
        return Verdict("WARN", f"no value to judge over {est.n} {est.unit}")
    shown = f"{fmt(est.value)} ({est.interval_text(fmt)})"
    if higher_is_better:
        passing = est.low >= pass_line
        failing = est.high < fail_line
        past = est.low >= fail_line and est.high < pass_line
    else:
        passing = est.high <= pass_line
        failing = est.low > fail_line
        past = est.low > pass_line and est.high <= fail_line
    worse = "below" if higher_is_better else "above"
    better = "above" if higher_is_better else "below"
    if passing:
        return Verdict("PASS", f"{shown}, all of it on the passing side of {fmt(pass_line)}")
    if failing:
        if est.n < min_n:
            return Verdict("WARN", f"{shown} is {worse} the fail line {fmt(fail_line)}, but "
                           f"{est.n} {est.unit} are fewer than the {min_n} needed to FAIL on "
                           "their own: add items")
        return Verdict("FAIL", f"{shown}, all of it {worse} the fail line {fmt(fail_line)}")
    if past:
        return Verdict("WARN", f"{shown}: conclusively between the pass line {fmt(pass_line)} "
                       f"and the fail line {fmt(fail_line)}")
    spanned = [line for line in (pass_line, fail_line) if est.low <= line <= est.high]
    line = min(spanned, key=lambda v: abs(v - est.value)) if spanned else pass_line
    more = _more_items(est, line)
    if more is None:
        settle = "the value sits on the line: no sample size settles it"
    elif more > FEASIBLE_GROWTH * est.n:
        settle = (f"the value lies too close to the line for this sample: about "
                  f"{math.ceil((more + est.n) / est.n)}x as many {est.unit} would settle it")
    else:
        unit = est.unit[:-1] if more == 1 and est.unit.endswith("s") else est.unit
        settle = f"about {more} more {unit} would settle it"
    side = better if (est.value >= line) == higher_is_better else worse
    return Verdict("WARN", f"{shown} spans the line {fmt(line)} (value {side} it): "
                   f"inconclusive; {settle}", more)


def pool_seeds(rules: Sequence[dict[str, Any]], fmt: Callable[[float], str] = "{:.1%}".format
               ) -> tuple[Estimate, Verdict]:
    """Pool one decision over training seeds: the mean of the seeds' values, with an interval
    that holds the seed-to-seed variance (Student t over seeds, with the seeds' own sampling
    variance added), clipped to the quantity's range where the rules record one (a share
    stays within 0 to 1), decided against the same lines. ``rules``: each seed's
    ``Verdict.rule``."""
    from scipy.stats import t as student_t

    values = np.array([r["value"] for r in rules], dtype=float)
    k = len(values)
    half_widths = np.array([(r["high"] - r["low"]) / 2 for r in rules], dtype=float)
    within = np.mean((half_widths / _Z) ** 2) / k if np.all(np.isfinite(half_widths)) else 0.0
    between = float(np.var(values, ddof=1)) / k if k > 1 else 0.0
    q = float(student_t.ppf(0.5 + LEVEL / 2, k - 1)) if k > 1 else _Z
    half = q * math.sqrt(between + within)
    mean = float(values.mean())
    first = rules[0]
    lo, hi = first.get("bounds", (-math.inf, math.inf))
    est = Estimate(mean, max(lo, mean - half), min(hi, mean + half), k, "training seeds",
                   f"mean over {k} training seeds, Student t with each seed's sampling variance",
                   bounds=(lo, hi))
    return est, decide(est, pass_line=first["pass_line"], fail_line=first["fail_line"],
                       higher_is_better=first["higher_is_better"], fmt=fmt)
