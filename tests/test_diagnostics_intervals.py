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
