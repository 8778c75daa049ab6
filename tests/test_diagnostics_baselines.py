"""The n-gram baselines check: the models are proper distributions, scored on the model's own
targets; a model no better than a bigram FAILs, a good one PASSes, a small sample never FAILs."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch

from bankllm.data import encode_corpus
from bankllm.evaluation import per_conversation_losses
from bankllm.model import GPT, GPTConfig
from bankllm.tokenizer import Tokenizer
from bankllm.training import evaluate
from diagnostics.analyses.baselines import (
    NAME,
    UNCHECKED_WHEN_SKIPPED,
    analyse_baselines,
    fit_ngram,
    ngram_baselines,
    ngram_events,
    score_ngram,
)
from diagnostics.thresholds import Thresholds
from tests.conftest import make_conversations

TH = Thresholds().for_check(NAME)
V = 7
# toy corpus over ids 0..6 (0 = <bos>); token 6 never occurs: it must still get mass
TOY = [[0, 1, 2, 3, 1, 2, 4], [0, 1, 3, 3, 2, 5], [0, 2, 1, 2, 3, 4, 4, 1]]
TOY_MASKS = [[True] * (len(s) - 1) for s in TOY]


@pytest.mark.parametrize("order", [1, 2, 3])
def test_each_conditional_distribution_sums_to_one_over_the_vocabulary(order):
    lm = fit_ngram(TOY, TOY_MASKS, order, V)
    ctx, _, _ = ngram_events(TOY, TOY_MASKS, order)
    unseen = np.full((1, order - 1), 7)  # a context never seen (shifted id of token 6)
    for c in [*ctx, *unseen]:
        p = np.exp(lm.logprob(np.repeat(c[None, :], V, axis=0), np.arange(V)))
        assert p.sum() == pytest.approx(1.0, abs=1e-9)
        assert (p > 0).all()  # backoff to uniform: no zero probability


def test_kneser_ney_unigram_uses_continuation_counts_and_counts_drive_the_top_order():
    # "b" (2) follows only "a" (1) but often; "c" (3) follows many words once each
    seqs = [[0, 1, 2, 1, 2, 1, 2, 1, 2], [0, 3, 4, 3, 5, 3, 6, 3]]
    masks = [[True] * (len(s) - 1) for s in seqs]
    lm = fit_ngram(seqs, masks, 2, 8)
    # after an unseen context, the lower order ranks "c" (many left neighbours) above "b"
    p = np.exp(lm.logprob(np.array([[8], [8]]), np.array([2, 3])))
    assert p[1] > p[0]
    # after "a", the raw bigram counts make "b" nearly certain
    assert math.exp(lm.logprob(np.array([[2]]), np.array([2]))[0]) > 0.7


def test_events_restart_at_bos_and_follow_the_mask():
    ctx, tgt, owner = ngram_events([[0, 1, 2], [0, 3, 4, 5]], [[1, 0], [0, 1, 1]], 3)
    assert tgt.tolist() == [1, 4, 5] and owner.tolist() == [0, 1, 1]
    # shifted ids (token + 1), 0 = before <bos>: the first target of a sequence sees (pad, bos)
    assert ctx.tolist() == [[0, 1], [1, 4], [4, 5]]


def test_higher_orders_fit_train_better_and_scores_are_per_sequence():
    convs = make_conversations(80, seed=1)
    tok = Tokenizer.train(m["content"] for c in convs for m in c["messages"])
    enc = encode_corpus(convs, tok, block_size=64)
    seqs, masks = [x.tolist() for x in enc.ids], [m.tolist() for m in enc.loss_mask]
    ces = []
    for order in (1, 2, 3):
        rows = score_ngram(fit_ngram(seqs, masks, order, len(tok)), seqs, masks)
        assert [n for _, n in rows] == [int(m.sum()) for m in enc.loss_mask]
        ces.append(sum(s for s, _ in rows) / sum(n for _, n in rows))
    assert math.log(len(tok)) > ces[0] > ces[1] > ces[2] > 0


def test_agent_only_targets_are_the_model_targets():
    convs = make_conversations(20, seed=2)
    tok = Tokenizer.train(m["content"] for c in convs for m in c["messages"])
    enc = encode_corpus(convs, tok, block_size=16, loss_on="agent")  # truncates, masks
    assert enc.truncated > 0
    pair = ([x.tolist() for x in enc.ids], [m.tolist() for m in enc.loss_mask])
    base = ngram_baselines(pair, pair, len(tok))
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=len(tok), block_size=16, n_layer=1, n_head=2, n_embd=16,
                          dropout=0.0))
    ours = per_conversation_losses(model, enc, tok.pad_id)
    for rows in base.values():
        assert [n for _, n in rows] == [n for _, n in ours]


# --------------------------------------------------------------------------- per conversation


def test_per_conversation_losses_add_up_to_the_trainers_val_loss():
    convs = make_conversations(24, seed=3)
    tok = Tokenizer.train(m["content"] for c in convs for m in c["messages"])
    enc = encode_corpus(convs, tok, block_size=64)
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=len(tok), block_size=64, n_layer=1, n_head=2, n_embd=16,
                          dropout=0.3)).train()
    rows = per_conversation_losses(model, enc, tok.pad_id, batch_size=5)
    assert model.training  # mode restored
    assert [n for _, n in rows] == [int(m.sum()) for m in enc.loss_mask]
    mean = sum(s for s, _ in rows) / sum(n for _, n in rows)
    assert mean == pytest.approx(evaluate(model, enc, tok.pad_id, torch.device("cpu"), "fp32").loss,
                                 rel=1e-5)
    # one conversation alone scores the same as inside a padded batch (eval mode, causal)
    alone = per_conversation_losses(model, encode_corpus(convs[:1], tok, 64), tok.pad_id)
    assert alone[0][0] == pytest.approx(rows[0][0], rel=1e-5)


# --------------------------------------------------------------------------- the verdict


def _baselines(n: int, seed: int = 0, tokens: int = 40):
    """Per-conversation sums of n-gram baselines with CE about 3.0 / 1.5 / 1.2 nats/token."""
    rng = random.Random(seed)
    rows = {"unigram": [], "bigram": [], "trigram": []}
    counts = [rng.randint(tokens // 2, tokens * 2) for _ in range(n)]
    for name, ce in (("unigram", 3.0), ("bigram", 1.5), ("trigram", 1.2)):
        rows[name] = [(ce * k * math.exp(rng.gauss(0, 0.2)), k) for k in counts]
    return rows


def test_a_model_that_is_the_bigram_fails():
    base = _baselines(90)
    result = analyse_baselines(base["bigram"], base, TH)
    assert result.status == "FAIL"
    assert "no more than which word follows which" in result.reason
    assert result.values["margin_bigram"] == 0.0
    table = result.details["tables"][0]
    assert [r[0] for r in table["rows"]] == ["unigram", "bigram", "trigram", "model"]
    assert table["row_status"][1] == "FAIL"


def test_a_model_slightly_worse_than_the_bigram_fails():
    base = _baselines(90)
    model = [(s * 1.05, n) for s, n in base["bigram"]]
    result = analyse_baselines(model, base, TH)
    assert result.status == "FAIL" and result.values["margin_bigram_ci95_low"] > 0


def test_a_model_well_below_the_trigram_passes():
    base = _baselines(90)
    rng = random.Random(5)
    model = [(0.3 * n * math.exp(rng.gauss(0, 0.3)), n) for _, n in base["trigram"]]
    result = analyse_baselines(model, base, TH, recorded_val_loss=0.3)
    assert result.status == "PASS", result.reason
    assert result.values["margin_trigram_ci95_high"] < -TH["trigram_pass"]
    mean = sum(s for s, _ in model) / sum(n for _, n in model)
    assert result.values["model_val_ce"] == pytest.approx(mean)
    assert any("best_val_loss 0.3000" in n for n in result.details["notes"])


def test_between_bigram_and_trigram_warns():
    base = _baselines(90)
    model = [(s * 0.9, n) for s, n in base["bigram"]]  # 10 % below the bigram, above trigram
    result = analyse_baselines(model, base, TH)
    assert result.status == "WARN" and "trigram" in result.reason


@pytest.mark.parametrize("n", [3, 8, 20])
def test_few_conversations_on_the_bigram_line_rarely_fail_and_far_past_it_fail(n):
    """A model whose true margin over the bigram is exactly the fail line (-2%), each
    conversation's loss noisy (sd 0.1 around it): the paired interval, at least Student t,
    lies wholly past the line in at most about the 2.5% a one-sided 95% miss allows. The same
    few conversations FAIL a model 30% worse than the bigram."""
    fails = 0
    for seed in range(100):
        base = _baselines(n, seed=seed)
        rng = random.Random(seed)
        model = [(s * (1 - TH["bigram_fail"]) * math.exp(rng.gauss(-0.1**2 / 2, 0.1)), k)
                 for s, k in base["bigram"]]
        fails += analyse_baselines(model, base, TH).status == "FAIL"
    assert fails <= 5, fails
    base = _baselines(n, seed=n)
    rng = random.Random(n)
    worse = [(s * 1.3 * math.exp(rng.gauss(0, 0.05)), k) for s, k in base["bigram"]]
    result = analyse_baselines(worse, base, TH, optimizer_steps=20)
    assert result.status == "FAIL", result.reason
    assert "which word follows which after 20 optimizer steps" in result.reason


def test_no_target_tokens_skips_and_says_what_goes_unchecked():
    base = {k: [(0.0, 0)] * 3 for k in ("unigram", "bigram", "trigram")}
    result = analyse_baselines([(0.0, 0)] * 3, base, TH)
    assert result.status == "SKIP"
    assert "n-gram" in UNCHECKED_WHEN_SKIPPED


def test_a_model_scored_on_other_targets_than_the_mask_fails_and_says_why():
    """Padding entering the trainer's loss makes the model count more targets than the loss
    mask the n-grams are scored on: a fault of the run, not of the check."""
    base = _baselines(5)
    result = analyse_baselines([(1.0, n + 1) for _, n in base["bigram"]], base, TH)
    assert result.status == "FAIL"
    assert "counts other target tokens than the run's loss mask in 5 of 5" in result.reason
    assert "padding or masked positions enter the loss" in result.reason
    with pytest.raises(ValueError, match="conversations scored"):
        analyse_baselines(base["bigram"][:4], base, TH)
