"""Diagnostic power of ``causality``: a model that reads later tokens, or that learned to echo
the token it reads, FAILs; a causal next-token predictor PASSes; a few borderline
conversations never FAIL."""

from __future__ import annotations

import pytest
import torch

from bankllm.data import encode_corpus
from bankllm.model import GPT, GPTConfig
from bankllm.tokenizer import Tokenizer
from diagnostics.analyses.causality import (
    DEFAULTS,
    NAME,
    analyse_causality,
    measure_causality,
)
from diagnostics.thresholds import Thresholds
from tests.conftest import make_conversations

TH = Thresholds().for_check(NAME)


@pytest.fixture(scope="module")
def corpus():
    convs = make_conversations(24, seed=3)
    tok = Tokenizer.train(m["content"] for c in convs for m in c["messages"])
    return tok, encode_corpus(convs, tok, block_size=64)


class TableModel(torch.nn.Module):
    """A causal model whose logits at a position depend only on the token there: a bigram
    table (``log P(next | current)``), or, ``echo=True``, a table that predicts the token it
    reads (what a model trained on unshifted targets learns)."""

    def __init__(self, sequences, vocab_size: int, echo: bool = False):
        super().__init__()
        counts = torch.ones(vocab_size, vocab_size)
        for ids in sequences:
            for a, b in zip(ids[:-1].tolist(), ids[1:].tolist(), strict=True):
                counts[a, b] += 1
        table = 10.0 * torch.eye(vocab_size) if echo else counts.log()
        self.table = torch.nn.Parameter(table.log_softmax(dim=-1))

    def forward(self, idx):
        return self.table[idx], None


def _gpt(tok, causal: bool = True) -> GPT:
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=len(tok), block_size=64, n_layer=2, n_head=2, n_embd=32,
                          dropout=0.0))
    if not causal:  # the planted fault: attention without its mask
        for block in model.blocks:
            block.attn.causal_bias.zero_()
    return model


def _measure(model, enc, vocab_size):
    return measure_causality(model, enc.ids, enc.loss_mask, vocab_size)


def test_a_causal_gpt_changes_no_earlier_prediction_and_one_without_its_mask_fails(corpus):
    tok, enc = corpus
    changes, *_ = _measure(_gpt(tok), enc, len(tok))
    assert len(changes) == len(enc.ids) and max(changes) <= 1e-6
    leaky = _measure(_gpt(tok, causal=False), enc, len(tok))
    assert min(leaky[0]) > DEFAULTS["max_future_change"]
    result = analyse_causality(*leaky, TH)
    assert result.status == "FAIL" and "reads the future" in result.reason
    assert result.values["conversations_reading_future"] == len(enc.ids)


def test_a_next_token_predictor_passes_and_an_echoing_model_fails(corpus):
    tok, enc = corpus
    bigram = analyse_causality(*_measure(TableModel(enc.ids, len(tok)), enc, len(tok)), TH)
    assert bigram.status == "PASS", bigram.reason
    assert bigram.values["next_over_current_ci95_high"] < DEFAULTS["max_next_over_current"]
    assert bigram.values["next_loss"] < bigram.values["current_loss"]
    echo = analyse_causality(*_measure(TableModel(enc.ids, len(tok), echo=True), enc,
                                       len(tok)), TH)
    assert echo.status == "FAIL", echo.reason
    assert "not shifted by one" in echo.reason and "reads the future" not in echo.reason
    assert echo.values["next_over_current_ci95_low"] > DEFAULTS["max_next_over_current"]


def test_a_few_conversations_near_the_line_never_fail():
    # 3 conversations whose next-token loss is 1.2x their current-token loss
    result = analyse_causality([0.0] * 3, [12.0, 13.0, 11.0], [10.0, 10.5, 9.5], [10] * 3, TH)
    assert result.status == "WARN", result.reason
    assert "fewer than the 5 needed to FAIL" in result.reason
    # many conversations straddling the fail line: inconclusive, not FAIL
    nexts = [10.0 * (1.05 if i % 2 else 0.95) for i in range(40)]
    straddling = analyse_causality([0.0] * 40, nexts, [10.0] * 40, [10] * 40, TH)
    assert straddling.status == "WARN" and "inconclusive" in straddling.reason


def test_a_nan_change_counts_as_reading_the_future_and_nothing_to_measure_skips():
    result = analyse_causality([0.0, float("nan")], [1.0, 1.0], [9.0, 9.0], [5, 5], TH)
    assert result.status == "FAIL" and "in 1 of 2" in result.reason
    skipped = analyse_causality([], [], [], [], TH)
    assert skipped.status == "SKIP" and "no val conversation" in skipped.reason
