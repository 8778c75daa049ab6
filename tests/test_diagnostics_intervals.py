"""The bootstrap intervals the consistency and memorization checks report."""

from __future__ import annotations

import pytest

from diagnostics.decision import rate_interval


def test_rate_interval_brackets_the_pooled_rate_and_narrows_with_more_clusters():
    hits, counts = [6, 3, 0, 6, 5, 6], [6, 6, 6, 6, 6, 6]
    low, high = rate_interval(hits, counts)
    assert low < sum(hits) / sum(counts) < high
    low4, high4 = rate_interval(hits * 4, counts * 4)
    assert high4 - low4 < high - low
    assert rate_interval(hits, counts) == (low, high)  # seeded: the same input, the same CI


def test_rate_interval_of_identical_clusters_is_a_point_and_needs_two_clusters():
    assert rate_interval([6, 6, 6], [6, 6, 6]) == (1.0, 1.0)
    assert rate_interval([3], [6]) is None
    assert rate_interval([0, 0], [0, 0]) is None


def test_rate_interval_of_a_difference_brackets_it():
    a = ([1, 2, 0, 3, 1, 2, 2, 1], [3, 3, 3, 3, 3, 3, 3, 3])  # 12 / 24
    b = ([0, 1, 0, 1, 0, 0, 1, 0], [3, 3, 3, 3, 3, 3, 3, 3])  # 3 / 24
    low, high = rate_interval(*a, minus=b)
    assert low < 0.5 - 0.125 < high
    assert low > 0.0  # clearly different samples
    low0, high0 = rate_interval(*a, minus=a)
    assert low0 < 0.0 < high0
    assert rate_interval(*a, minus=([1], [3])) is None


@pytest.mark.parametrize("level", [0.5, 0.99])
def test_rate_interval_widens_with_the_level(level):
    hits, counts = [6, 3, 0, 6, 5, 6, 2, 4], [6] * 8
    low, high = rate_interval(hits, counts, level=level)
    low95, high95 = rate_interval(hits, counts)
    assert (high - low < high95 - low95) == (level < 0.95)


@pytest.mark.parametrize("groups", [3, 5])
def test_a_few_groups_at_the_fail_line_rarely_fail(groups):
    """Paraphrase groups of 8 whose answers split the same way within a group and differently
    between groups (each group's share of one answer drawn from Beta(0.5, 0.5): true pair
    agreement 75%), with the fail line at the truth: an exact 95% interval FAILs 2.5% of
    such samples. Without the few-cluster widening (``decision.FEW_CLUSTERS``) these FAILed
    19 and 16 of the 200."""
    import itertools

    import numpy as np

    from diagnostics.decision import decide, rate

    rng = np.random.default_rng(0)

    def group() -> tuple[int, int]:
        answers = rng.random(8) < rng.beta(0.5, 0.5)
        pairs = list(itertools.combinations(answers, 2))
        return sum(a == b for a, b in pairs), len(pairs)

    truth = 0.75  # E[p^2 + (1-p)^2] for p ~ Beta(0.5, 0.5)
    fails = 0
    for _ in range(200):
        hits, counts = zip(*(group() for _ in range(groups)), strict=True)
        est = rate(list(hits), list(counts), "probe groups")
        fails += decide(est, pass_line=0.9, fail_line=truth,
                        higher_is_better=True).status == "FAIL"
    assert fails / 200 <= 0.05, fails
