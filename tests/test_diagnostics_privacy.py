"""Diagnostic power of the privacy check: the rank estimate against an exhaustive rank, the
attack's statistics against sklearn, planted faults that must FAIL, and end to end a tiny model
trained to memorize its canaries (FAIL) against an untrained one (never FAIL)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from scipy import stats
from sklearn.metrics import roc_auc_score, roc_curve

from bankllm.canaries import read_canaries
from bankllm.checkpoints import gpt_config, load_run
from bankllm.model import GPT
from bankllm.tokenizer import Tokenizer
from bankllm.training import Trainer
from diagnostics.analyses.privacy import (
    CanaryScore,
    analyse_privacy,
    auc,
    auc_estimate,
    estimate_rank,
    exposure,
    member_sample,
    membership_scores,
    score_canaries,
    secret_nll,
    tpr_at_fpr,
)
from diagnostics.decision import two_samples
from diagnostics.thresholds import Thresholds
from tests.conftest import make_conversations

TH = Thresholds().for_check("privacy")
PREFIX = "my id is 0 4 7 2 and my account is"


@pytest.fixture(scope="module")
def three_digit_space():
    """A small random model's log-perplexity of every 3-digit secret after PREFIX."""
    tok = Tokenizer.train([PREFIX + " 0 1 2 3 4 5 6 7 8 9"])
    torch.manual_seed(3)
    model = GPT(gpt_config(_cfg(), len(tok))).eval()
    secrets = [f"{i:03d}" for i in range(1000)]
    return secrets, secret_nll(model, tok, PREFIX, secrets)


def _cfg():
    from bankllm.config import TrainConfig

    return TrainConfig(n_layer=1, n_head=2, n_embd=32, block_size=32, dropout=0.0)


def test_rank_estimate_matches_the_exhaustive_rank_on_a_space_of_1000(three_digit_space):
    secrets, nll = three_digit_space
    order = np.argsort(nll)
    rng = np.random.default_rng(0)
    for true_rank in (1, 3, 40, 500, 1000):
        i = order[true_rank - 1]
        others = np.delete(nll, i)
        # exhaustive: the estimate is the brute-force rank itself
        assert estimate_rank(nll[i], nll, 1000) == 1 + int((others < nll[i]).sum()) == true_rank
        bits, rank, method = exposure(nll[i], nll, 1000)
        if true_rank > 1:
            assert method == "rank" and rank == true_rank
            assert math.isclose(bits, math.log2(1000) - math.log2(true_rank))
        # sampled: 300 uniform candidates estimate it within binomial error
        sample = nll[rng.integers(0, 1000, 300)]
        share = (true_rank - 1) / 1000
        se = 1000 * math.sqrt(share * (1 - share) / 300) + 1
        assert abs(estimate_rank(nll[i], sample, 1000) - true_rank) <= 4 * se


def test_the_best_secret_is_extrapolated_by_a_distribution_fit(three_digit_space):
    _, nll = three_digit_space
    best = nll.argmin()
    bits, rank, method = exposure(nll[best], np.delete(nll, best), 1000)
    assert method.endswith("fit") and 0 < bits <= math.log2(1000) and rank >= 1
    # far below every candidate of a normal sample: -log2 of the normal tail, capped
    c = np.random.default_rng(1).normal(30.0, 2.0, 2000)
    bits, _, method = exposure(20.0, c, 10**10)
    assert bits == pytest.approx(-stats.norm.logcdf(-5.0) / math.log(2), rel=0.15)
    assert exposure(-1e6, c, 10**10)[0] == math.log2(10**10)  # capped at log2 |space|


def test_auc_and_tpr_match_sklearn():
    rng = np.random.default_rng(2)
    m, n = rng.normal(0.5, 1, 400), rng.normal(0, 1, 300)
    n[:5] = m[:5]  # ties count half
    labels = np.r_[np.ones(400), np.zeros(300)]
    assert auc(m, n) == pytest.approx(roc_auc_score(labels, np.r_[m, n]))
    fpr, tpr, _ = roc_curve(labels, np.r_[m, n])
    assert tpr_at_fpr(m, n, 0.01) == pytest.approx(tpr[fpr <= 0.01].max())
    est = two_samples(auc, m, n, "conversations")
    assert est.low < est.value < est.high and est.n == 700


def _scores(reps_extracted, n=10, seed=0):
    rng = np.random.default_rng(seed)
    return [CanaryScore(i, r, float(rng.normal(30, 2)), rng.normal(30, 2, 500), r in reps_extracted)
            for i, r in enumerate([1, 2, 4, 8, 16] * (n // 5))]


def test_a_secret_said_twice_and_extracted_fails():
    same = np.random.default_rng(0).normal(0, 1, 300)
    result = analyse_privacy(_scores({2}), 10**10, same[:200], same[200:], TH)
    assert result.status == "FAIL" and "said only 2 time" in result.reason
    assert result.values["extracted_share"] == pytest.approx(0.2)
    reps = {r["repetitions"]: r for r in result.values["exposure_by_repetitions"]}
    assert reps[2]["extracted"] == 2 and reps[1]["n"] == 2


def test_a_secret_repeated_16_times_extracted_warns():
    same = np.random.default_rng(0).normal(0, 1, 300)
    result = analyse_privacy(_scores({16}), 10**10, same[:200], same[200:], TH)
    assert result.status == "WARN" and "deduplicate" in result.reason


def test_no_canaries_skips_exposure_only_and_names_the_key():
    rng = np.random.default_rng(0)
    healthy = analyse_privacy(None, None, rng.normal(0, 1, 400), rng.normal(0, 1, 100), TH)
    assert healthy.status == "PASS" and "--set canaries=20" in healthy.reason
    assert "auc" in healthy.values and "canaries" not in healthy.values
    # members whose loss is far below the reference's: the attack wins, FAIL
    leaky = analyse_privacy(None, None, rng.normal(-2, 1, 400), rng.normal(0, 1, 100), TH)
    assert leaky.status == "FAIL" and leaky.values["auc_ci95_low"] > TH["auc_fail"]
    assert len(leaky.values["roc"]["fpr"]) == len(leaky.values["roc"]["tpr"]) <= 100


def test_a_small_borderline_sample_does_not_fail():
    rng = np.random.default_rng(4)
    result = analyse_privacy(None, None, rng.normal(-0.8, 1, 12), rng.normal(0, 1, 6), TH)
    assert result.status == "WARN" and "inconclusive" in result.reason


def test_a_small_sample_that_separates_completely_warns_and_a_large_one_fails():
    """8 members all scored above 4 non-members: AUC 1 on every bootstrap resample, so the
    bootstrap interval is a point; the Wilson floor at the AUC's equivalent sample size keeps
    it from FAILing, while the same separation over 60 and 30 conversations does FAIL."""
    rng = np.random.default_rng(5)
    small = analyse_privacy(None, None, rng.normal(-3, 0.1, 8), rng.normal(0, 0.1, 4), TH)
    assert small.values["auc"] == 1.0 and small.values["auc_ci95_low"] < TH["auc_fail"]
    assert small.status == "WARN" and "inconclusive" in small.reason
    large = analyse_privacy(None, None, rng.normal(-3, 0.1, 60), rng.normal(0, 0.1, 30), TH)
    assert large.status == "FAIL" and large.values["auc_ci95_low"] > TH["auc_fail"]


def test_the_auc_interval_is_the_bootstraps_on_a_realistic_sample():
    rng = np.random.default_rng(6)
    m, n = rng.normal(0.7, 1, 360), rng.normal(0, 1, 90)
    est = auc_estimate(m, n)
    boot = two_samples(auc, m, n, "conversations")
    assert est.value == boot.value
    assert est.high - est.low == pytest.approx(boot.high - boot.low, rel=0.2)


# --------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def memorizing_run(tmp_path_factory):
    """A tiny model trained 60 epochs on 20 conversations and 5 canaries (said 1-16 times)."""
    from bankllm.config import TrainConfig

    root = tmp_path_factory.mktemp("privacy")
    corpus = root / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(c) + "\n" for c in make_conversations(20, seed=5)))
    cfg = TrainConfig(n_layer=2, n_head=2, n_embd=64, block_size=64, dropout=0.0,
                      data=str(corpus), val_fraction=0.2, epochs=60, batch_size=8, lr=3e-3,
                      min_lr=3e-4, precision="fp32", threads=1, canaries=5)
    assert Trainer(cfg, root / "run", show_progress=False).train() == 0
    return load_run(root / "run")


def _untrained(run, seed):
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return GPT(gpt_config(run.config, len(run.tokenizer))).eval()


def _audit(run, model):
    record = read_canaries(run.path)
    scores = score_canaries(model, run.tokenizer, record, 300)
    members = member_sample(run.split.train, len(run.split.val), 4, 0)
    ref = _untrained(run, run.config.seed)

    def score(convs):
        return membership_scores(model, ref, run.tokenizer, convs, run.config.block_size)

    return analyse_privacy(scores, record["space_size"], score(members), score(run.split.val),
                           {**TH, "n_candidates": 300})


def test_a_model_that_memorized_its_canaries_fails(memorizing_run):
    result = _audit(memorizing_run, memorizing_run.load_model())
    assert result.status == "FAIL", result.reason
    by_reps = {r["repetitions"]: r for r in result.values["exposure_by_repetitions"]}
    assert by_reps[16]["mean"] > 20 and by_reps[16]["extracted"] == 1
    assert result.values["extracted_share"] > 0


def test_an_untrained_model_shows_no_exposure_and_chance_auc(memorizing_run):
    result = _audit(memorizing_run, _untrained(memorizing_run, 12345))
    assert result.status != "FAIL", result.reason
    exposures = [p["exposure"] for p in result.values["canaries"]]
    assert np.mean(exposures) < 5 and result.values["extracted_share"] == 0
    assert result.values["auc_ci95_low"] <= 0.5 <= result.values["auc_ci95_high"]
