"""Diagnostic power of the leakage check: copied and near-copied val conversations FAIL."""

from __future__ import annotations

import random

import numpy as np
import pytest

from diagnostics.analyses import leakage
from diagnostics.analyses.leakage import analyse_leakage, best_matches, normalise
from diagnostics.thresholds import Thresholds

TH = Thresholds().for_check("leakage")
WORDS = ("balance", "transfer", "card", "account", "savings", "checking", "fee", "loan", "pay",
         "bill", "statement", "branch", "open", "close", "limit", "credit", "debit", "refund",
         "dispute", "charge", "mortgage", "rate", "deposit", "cheque", "online", "app", "pin",
         "lost", "stolen", "travel", "notice", "payee", "wire", "overdraft", "interest")


def conversation(rng: random.Random, i: int) -> str:
    """A distinct conversation of about 200 characters (random banking words)."""
    said = " ".join(rng.choice(WORDS) for _ in range(12))
    answer = " ".join(rng.choice(WORDS) for _ in range(14))
    return f"customer: {said} please\nagent: sure, {answer} (ref {i:05d})"


@pytest.fixture(scope="module")
def corpus():
    rng = random.Random(0)
    texts = [conversation(rng, i) for i in range(400)]
    return texts[:300], texts[300:]  # 100 val conversations: enough to settle a clean split


def test_clean_split_passes(corpus):
    train, val = corpus
    result = analyse_leakage(train, val, TH)
    assert result.status == "PASS", result.reason
    assert result.values["exact"] == 0 and result.values["near_share"] <= 0.05


def test_val_copied_into_train_fails(corpus):
    train, val = corpus
    result = analyse_leakage(train + val[:15], val, TH)
    assert result.status == "FAIL"
    assert result.values["exact"] == 15 and result.values["exact_share"] == pytest.approx(0.15)
    assert result.values["exact_share_ci95_low"] > TH["max_exact"]
    assert "exact copies of train: 15/100" in result.reason and "deduplicate" in result.reason


def test_a_few_copies_in_a_small_val_set_warn_but_do_not_fail(corpus):
    train, val = corpus
    small = val[:20]
    result = analyse_leakage(train + small[:2], small, TH)  # 10% of 20: near the 5% line
    assert result.status == "WARN" and "inconclusive" in result.reason


def test_copies_differing_in_case_and_whitespace_are_exact(corpus):
    train, val = corpus
    noisy = ["  " + v.upper().replace(" ", "   ") for v in val[:3]]
    assert analyse_leakage(train + noisy, val, TH).values["exact"] == 3


def test_one_word_changed_is_near_duplicate(corpus):
    train, val = corpus
    edited = [v.replace("sure", "cheers", 1) for v in val[:15]]
    result = analyse_leakage(train + edited, val, TH)
    assert result.status == "FAIL"
    assert result.values["exact"] == 0 and result.values["near"] == 15
    pairs = result.details["tables"][0]["rows"]
    assert len(pairs) == 10 and all(row[1] >= 95 for row in pairs)
    assert "cheers" in pairs[0][4]  # the snippet shows where the texts differ


def test_customer_turn_share_is_information_only(corpus):
    train, val = corpus
    result = analyse_leakage(train, val, TH, train_customer_turns=["Hi there", "balance?"],
                             val_customer_turns=["hi  there", "something new"])
    assert result.status == "PASS"
    assert result.values["customer_turn_verbatim_share"] == 0.5


def test_empty_split_is_skip():
    assert analyse_leakage([], ["x"], TH).status == "SKIP"


def test_best_matches_is_chunked_and_exact(monkeypatch):
    rng = random.Random(3)
    choices = [conversation(rng, i) for i in range(30)]
    queries = [choices[7], choices[3].replace("agent", "agnt"), "nothing like it"]
    scores, index = best_matches(queries, choices, 95)
    monkeypatch.setattr(leakage, "_CELLS_PER_CHUNK", 31)  # one query per cdist call
    chunked = best_matches(queries, choices, 95)
    assert np.array_equal(scores, chunked[0]) and np.array_equal(index[:2], chunked[1][:2])
    assert scores[0] == 100 and index[0] == 7
    assert scores[1] >= 95 and index[1] == 3
    assert scores[2] == 0


def test_normalise():
    assert normalise("  Hello\n\tWORLD  ") == "hello world"
