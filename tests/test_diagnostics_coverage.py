"""Diagnostic power of ``coverage``: many ``<unk>`` targets or conversations cut at the context
FAIL; a covered corpus PASSes; a few borderline conversations never FAIL."""

from __future__ import annotations

from diagnostics.analyses.coverage import NAME, analyse_coverage
from diagnostics.thresholds import Thresholds

TH = Thresholds().for_check(NAME)


def test_a_covered_corpus_passes():
    result = analyse_coverage([0] * 90, [70] * 90, 0, 900, TH, min_freq=1,
                              block_size=256)
    assert result.status == "PASS", result.reason
    assert result.values["unk_share_ci95_high"] <= 0.01
    assert "raise" not in result.reason and "lower min_freq" not in result.reason


def test_a_tokenizer_that_drops_a_quarter_of_the_words_fails_and_names_min_freq():
    unk = [15 + i % 7 for i in range(90)]  # about 24% of 75 targets each
    result = analyse_coverage(unk, [75] * 90, 0, 900, TH, min_freq=200, block_size=256)
    assert result.status == "FAIL", result.reason
    assert result.values["unk_share_ci95_low"] > 0.05
    assert "min_freq=200" in result.reason and "lower min_freq" in result.reason


def test_unknown_words_with_min_freq_1_ask_for_more_data_not_a_lower_min_freq():
    result = analyse_coverage([8] * 40, [80] * 40, 0, 400, TH, min_freq=1)
    assert result.status == "FAIL" and "more (or more varied) train data" in result.reason
    assert "lower min_freq" not in result.reason


def test_conversations_cut_at_the_context_fail_and_name_block_size():
    result = analyse_coverage([0] * 90, [70] * 90, 360, 900, TH, block_size=32)  # 40%
    assert result.status == "FAIL", result.reason
    assert result.values["truncated_share"] == 0.4 and "raise block_size=32" in result.reason
    few = analyse_coverage([0] * 90, [70] * 90, 45, 900, TH)
    assert few.status == "WARN" and "45 of the run's 900" in few.reason


def test_a_few_conversations_near_the_unk_line_do_not_fail():
    # 3 val conversations, 6% of their targets unknown: above the 5% line, not conclusively
    result = analyse_coverage([3, 2, 4], [50, 50, 50], 0, 30, TH, min_freq=2)
    assert result.status == "WARN", result.reason
    assert result.values["unk_share_ci95_low"] < 0.05 < result.values["unk_share"]
    assert "inconclusive" in result.reason


def test_no_val_targets_skips():
    assert analyse_coverage([], [], 0, 0, TH).status == "SKIP"
    assert analyse_coverage([0], [0], 0, 1, TH).status == "SKIP"


def test_a_handful_of_conversations_never_fails_and_an_inconclusive_share_gives_no_advice():
    tiny = analyse_coverage([6, 4], [50, 50], 1, 2, TH, min_freq=3, block_size=64)
    assert tiny.status == "WARN", tiny.reason
    assert "inconclusive" in tiny.reason  # two conversations cannot show a share
    assert "fewer than the 10 conversations needed to FAIL" in tiny.reason
    # nine conversations all well past the fail line: still fewer than the 10 needed
    few = analyse_coverage([15] * 9, [50] * 9, 0, 90, TH, min_freq=3)
    assert few.values["unk_share_ci95_low"] > TH["unk_fail"]
    assert few.status == "WARN" and "fewer than the 10 needed to FAIL" in few.reason, few.reason
    clean = analyse_coverage([0] * 4, [25] * 4, 0, 40, TH, min_freq=1)  # 0/100: inconclusive
    assert clean.status == "WARN" and "inconclusive" in clean.reason
    assert "more (or more varied)" not in clean.reason and "raise" not in clean.reason
