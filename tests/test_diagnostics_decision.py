"""The shared decision rule: intervals and the verdict that follows them."""

from __future__ import annotations

import pytest

from diagnostics.decision import (
    Estimate,
    decide,
    difference,
    rate,
    rate_interval,
    ratio_change,
    ratio_of_rates,
    two_samples,
    wilson,
)


def _share(hits: int, n: int) -> Estimate:
    return rate([1] * hits + [0] * (n - hits), [1] * n, "probes")


def test_a_value_far_past_the_fail_line_fails():
    verdict = decide(_share(20, 100), pass_line=0.9, fail_line=0.75, higher_is_better=True)
    assert verdict.status == "FAIL"
    assert "below the fail line 75.0%" in verdict.reason


def test_a_value_at_the_line_on_a_small_sample_warns_and_says_how_many_more_settle_it():
    est = _share(7, 10)  # 70% against a 75% fail line, 10 items
    verdict = decide(est, pass_line=0.9, fail_line=0.75, higher_is_better=True)
    assert verdict.status == "WARN"
    assert "inconclusive" in verdict.reason and "more probes would settle it" in verdict.reason
    assert verdict.more_items is not None and verdict.more_items > 0


def test_one_more_item_is_named_in_the_singular():
    # 0.6 +- 0.052 over 10 items against a 0.65 line: 10 x (0.052 / 0.05)^2 - 10 = 0.8 -> 1 more
    few = Estimate(value=0.6, low=0.548, high=0.652, n=10, unit="val conversations",
                   method="test")
    verdict = decide(few, pass_line=0.65, fail_line=0.65, higher_is_better=False)
    assert verdict.more_items == 1
    assert "about 1 more val conversation would settle it" in verdict.reason, verdict.reason


def test_a_value_almost_on_the_line_says_how_many_times_the_sample_not_millions_more():
    # +3.14% against a +3.13% line over 90 conversations (a gate seen in practice): the
    # items to add run into millions, which is no advice
    est = Estimate(value=0.0314, low=0.0227, high=0.0403, n=90, unit="val conversations",
                   method="paired bootstrap")
    verdict = decide(est, pass_line=0.0313, fail_line=0.0313, higher_is_better=False,
                     fmt="{:+.2%}".format)
    assert verdict.status == "WARN" and verdict.more_items > 100_000
    assert "too close to the line for this sample: about" in verdict.reason
    assert "x as many val conversations would settle it" in verdict.reason
    assert str(verdict.more_items) not in verdict.reason


def test_a_large_sample_settles_the_same_share():
    small = decide(_share(14, 20), pass_line=0.9, fail_line=0.75, higher_is_better=True)
    large = decide(_share(1400, 2000), pass_line=0.9, fail_line=0.75, higher_is_better=True)
    assert small.status == "WARN"
    assert large.status == "FAIL"


def test_pass_needs_the_whole_interval_on_the_passing_side():
    assert decide(_share(990, 1000), pass_line=0.9, fail_line=0.75,
                  higher_is_better=True).status == "PASS"
    near = decide(_share(46, 50), pass_line=0.9, fail_line=0.75, higher_is_better=True)
    assert near.status == "WARN" and "spans the line 90.0%" in near.reason


def test_between_the_lines_conclusively_is_a_warn_that_says_so():
    verdict = decide(_share(1650, 2000), pass_line=0.9, fail_line=0.75, higher_is_better=True)
    assert verdict.status == "WARN" and "conclusively between" in verdict.reason


def test_lower_is_better_mirrors_the_rule():
    assert decide(_share(50, 1000), pass_line=0.10, fail_line=0.20,
                  higher_is_better=False).status == "PASS"
    assert decide(_share(500, 1000), pass_line=0.10, fail_line=0.20,
                  higher_is_better=False).status == "FAIL"


def test_too_few_items_never_fail_on_their_own():
    est = _share(1, 11)  # one training value among 11 amounts
    verdict = decide(est, pass_line=0.02, fail_line=0.05, higher_is_better=False, min_n=30)
    assert verdict.status == "WARN"
    few = decide(_share(11, 11), pass_line=0.02, fail_line=0.05, higher_is_better=False,
                 min_n=30)
    assert few.status == "WARN" and "fewer than the 30 needed to FAIL" in few.reason
    many = decide(_share(30, 30), pass_line=0.02, fail_line=0.05, higher_is_better=False,
                  min_n=30)
    assert many.status == "FAIL"


def test_all_or_nothing_clusters_never_give_a_zero_width_interval():
    est = rate([6, 6, 6], [6, 6, 6], "groups")
    assert est.value == 1.0 and est.low < 1.0  # Wilson keeps it honest
    assert est.mde > 0


def test_rate_is_at_least_as_wide_as_the_bootstrap_and_as_wilson():
    hits, counts = [6, 3, 0, 6, 5, 6], [6] * 6
    est = rate(hits, counts, "groups")
    boot = rate_interval(hits, counts)
    w = wilson(sum(hits), sum(counts))
    assert est.low <= min(boot[0], w[0]) + 1e-12
    assert est.high >= max(boot[1], w[1]) - 1e-12


def test_difference_brackets_the_gap_and_separates_clearly_different_samples():
    a = ([1, 2, 0, 3, 1, 2, 2, 1] * 4, [3] * 32)
    b = ([0, 1, 0, 1, 0, 0, 1, 0] * 4, [3] * 32)
    est = difference(a, b, "conversations")
    assert est.low < est.value < est.high
    assert est.low > 0
    same = difference(a, a, "conversations")
    assert same.low < 0 < same.high


def test_paired_ratio_change_detects_a_uniform_regression():
    base = [float(x) for x in range(10, 110)]
    worse = [x * 1.05 for x in base]
    est = ratio_change(worse, base, "conversations")
    assert est.value == pytest.approx(0.05)
    assert est.low == pytest.approx(0.05) and est.high == pytest.approx(0.05)
    noisy = [x * (1.05 if i % 2 else 0.95) for i, x in enumerate(base)]
    est2 = ratio_change(noisy, base, "conversations")
    assert est2.low < 0 < est2.high


def test_a_paired_change_over_a_few_items_keeps_its_coverage():
    """No true change, 4 conversations: the percentile bootstrap's 95% interval alone missed 0
    in about a fifth of the samples; widened to the Student t interval, about one in twelve."""
    import numpy as np

    rng = np.random.default_rng(1)
    misses = 0
    for _ in range(120):
        base = rng.uniform(50, 150, 4) * rng.lognormal(0, 0.3, 4)
        new = base * rng.lognormal(0, 0.05, 4) / np.exp(0.05**2 / 2)
        est = ratio_change(new, base, "conversations")
        misses += not est.low <= 0 <= est.high
    assert misses / 120 < 0.12


def test_the_estimate_exports_its_interval_and_mde():
    values = _share(8, 10).values("faithfulness")
    assert set(values) == {"faithfulness", "faithfulness_ci95_low", "faithfulness_ci95_high",
                           "faithfulness_n", "faithfulness_mde"}


def test_a_few_clusters_alike_are_no_conclusive_evidence_and_many_are():
    """Three paraphrase groups that each split half and half (12 of 28 pairs agree) look
    alike, so neither the bootstrap nor Wilson sees how far groups can differ: few clusters
    are widened to count each as one item. Thirty such groups, or four far below the line,
    are conclusive."""
    lines = {"pass_line": 0.90, "fail_line": 0.75, "higher_is_better": True}
    few = rate([12, 12, 12], [28, 28, 28], "probe groups")
    assert few.high > 0.75 and decide(few, **lines).status == "WARN"
    assert "Clopper-Pearson" in few.method
    many = rate([12] * 30, [28] * 30, "probe groups")
    assert decide(many, **lines).status == "FAIL" and "Clopper-Pearson" not in many.method
    far = rate([1, 0, 1, 0], [6, 6, 6, 6], "probe groups")
    assert decide(far, **lines).status == "FAIL"


def test_a_ratio_of_two_rates_is_at_least_as_wide_as_welch_t_on_a_few_items():
    """val's loss per token over train_eval's, 4 conversations a side: the stratified bootstrap
    alone is narrower than the t interval; the estimate keeps the wider, brackets the value
    and narrows with more conversations."""
    import numpy as np

    rng = np.random.default_rng(3)

    def sample(n: int, level: float) -> tuple[np.ndarray, np.ndarray]:
        tokens = rng.integers(40, 121, n).astype(float)
        return level * tokens * rng.lognormal(-0.08, 0.4, n), tokens

    (vs, vt), (ts, tt) = sample(4, 0.6), sample(4, 0.5)
    est = ratio_of_rates((vs, vt), (ts, tt), "conversations")
    assert est.value == pytest.approx((vs.sum() / vt.sum()) / (ts.sum() / tt.sum()) - 1)
    assert est.low < est.value < est.high and est.n == 8 and "Welch t" in est.method

    def statistic(i, j):
        i, j = i.astype(int), j.astype(int)
        return (vs[i].sum() / vt[i].sum()) / (ts[j].sum() / tt[j].sum()) - 1

    boot = two_samples(statistic, np.arange(4), np.arange(4), "conversations")
    assert est.high - est.low > boot.high - boot.low
    many = ratio_of_rates(sample(400, 0.6), sample(400, 0.5), "conversations")
    assert many.high - many.low < (est.high - est.low) / 4
    assert many.low < 0.2 < many.high
