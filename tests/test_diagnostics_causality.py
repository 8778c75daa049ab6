"""Diagnostic power of ``causality``: a model that reads later tokens, or that learned to echo
the token it reads, FAILs; a causal next-token predictor PASSes; a few borderline
conversations never FAIL."""

from __future__ import annotations

import pytest
import torch

from bankllm import evaluation
from bankllm.data import IGNORE_INDEX, encode_corpus
from bankllm.model import GPT, GPTConfig
from bankllm.tokenizer import Tokenizer
from diagnostics.analyses.causality import (
    DEFAULTS,
    NAME,
    Measurement,
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


def _measure(model, tok, enc, untrained=None):
    return measure_causality(model, enc, tok.pad_id, len(tok), untrained=untrained)


def _synthetic(next_nll, current_nll, tokens, change=0.0):
    """A deterministic measurement whose batched scoring agrees with scoring alone."""
    n = len(next_nll)
    return Measurement([change] * n, [0.0] * n, list(next_nll), list(current_nll),
                       list(tokens), list(next_nll))


def test_a_causal_gpt_changes_no_earlier_prediction_and_one_without_its_mask_fails(corpus):
    tok, enc = corpus
    causal = _measure(_gpt(tok), tok, enc)
    assert len(causal.future_change) == len(enc.ids) and max(causal.future_change) <= 1e-6
    assert analyse_causality(causal, TH).values["conversations_changed_by_padding"] == 0
    leaky = _measure(_gpt(tok, causal=False), tok, enc)
    assert min(leaky.future_change) > DEFAULTS["max_future_change"]
    result = analyse_causality(leaky, TH)
    assert result.status == "FAIL" and "reads the future" in result.reason
    assert result.values["conversations_reading_future"] == len(enc.ids)


def test_a_next_token_predictor_passes_and_an_echoing_model_fails(corpus):
    tok, enc = corpus
    bigram = analyse_causality(_measure(TableModel(enc.ids, len(tok)), tok, enc), TH)
    assert bigram.status == "PASS", bigram.reason
    assert bigram.values["next_over_current_ci95_high"] < DEFAULTS["max_next_over_current"]
    assert bigram.values["next_loss"] < bigram.values["current_loss"]
    echo_model = TableModel(enc.ids, len(tok), echo=True)
    echo = analyse_causality(_measure(echo_model, tok, enc, untrained=_gpt(tok)), TH)
    assert echo.status == "FAIL", echo.reason
    assert "not shifted by one" in echo.reason and "reads the future" not in echo.reason
    # what failed comes first, the passing "causal: ..." finding after it
    assert echo.reason.startswith("next-token loss"), echo.reason
    assert "; causal: replacing later tokens changed no earlier" in echo.reason
    assert echo.values["next_over_current_ci95_low"] > DEFAULTS["max_next_over_current"]
    assert echo.values["current_loss_vs_untrained_ci95_high"] < 0
    # without the untrained model's losses the same echo is only a WARN
    assert analyse_causality(_measure(echo_model, tok, enc), TH).status == "WARN"


def test_an_untrained_gpt_echoes_by_its_tied_embeddings_and_only_warns(corpus):
    tok, enc = corpus
    untrained = _gpt(tok)
    result = analyse_causality(_measure(untrained, tok, enc, untrained=_gpt(tok)), TH)
    assert result.values["next_over_current"] > 1  # it does favour the token it reads
    assert result.status == "WARN", result.reason
    assert "has not learned yet" in result.reason and "not shifted" not in result.reason


def test_a_few_conversations_near_the_line_never_fail():
    # 3 conversations whose next-token loss is 1.2x their current-token loss
    result = analyse_causality(_synthetic([12.0, 13.0, 11.0], [10.0, 10.5, 9.5], [10] * 3), TH)
    assert result.status == "WARN", result.reason
    assert "fewer than the 5 needed to FAIL" in result.reason
    # many conversations straddling the fail line: inconclusive, not FAIL
    nexts = [10.0 * (1.05 if i % 2 else 0.95) for i in range(40)]
    straddling = analyse_causality(_synthetic(nexts, [10.0] * 40, [10] * 40), TH)
    assert straddling.status == "WARN" and "inconclusive" in straddling.reason


def test_a_nan_is_its_own_fail_and_nothing_to_measure_skips():
    m = _synthetic([1.0, 1.0], [9.0, 9.0], [5, 5])
    m.future_change[1] = float("nan")
    result = analyse_causality(m, TH)
    assert result.status == "FAIL" and "non-finite log-probabilities on 1 of 2" in result.reason
    assert "reads the future" not in result.reason


def test_a_model_certain_of_the_token_it_reads_fails_without_an_interval():
    result = analyse_causality(_synthetic([5.0] * 6, [0.0] * 6, [10] * 6), TH)
    assert result.status == "FAIL" and "certain of the token it reads" in result.reason
    skipped = analyse_causality(Measurement(), TH)
    assert skipped.status == "SKIP" and "no val conversation" in skipped.reason


def test_padding_counted_in_the_trainers_val_scoring_fails(corpus, monkeypatch):
    """The planted fault: right-padding positions keep a target (the pad token), so the
    batched val loss counts them; scored alone, a conversation has no padding."""
    tok, enc = corpus
    real = evaluation.collate

    def collate_counting_padding(corpus, indices, pad_id, length=None):
        x, y = real(corpus, indices, pad_id, length)
        return x, torch.where(y == IGNORE_INDEX, torch.full_like(y, pad_id), y)

    model = TableModel(enc.ids, len(tok))
    assert analyse_causality(_measure(model, tok, enc), TH).status == "PASS"
    monkeypatch.setattr(evaluation, "collate", collate_counting_padding)
    result = analyse_causality(_measure(model, tok, enc), TH)
    assert result.status == "FAIL", result.reason
    assert "padding, its mask or the batch's targets enter the loss" in result.reason
    assert 0 < result.values["conversations_changed_by_padding"] < len(enc.ids)
    assert "reads the future" not in result.reason


def test_a_model_still_dropping_out_in_eval_mode_fails_as_random_not_as_reading_the_future(
        corpus, monkeypatch):
    """The planted fault: dropout ignores eval mode. Scored twice, the same tokens differ; the
    future part cannot be told apart from that randomness, so it is not claimed."""
    import bankllm.model as model_module

    tok, enc = corpus
    real = model_module.add_dropout
    monkeypatch.setattr(model_module, "add_dropout",
                        lambda x, y, p, training: real(x, y, p, True))
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=len(tok), block_size=64, n_layer=2, n_head=2, n_embd=32,
                          dropout=0.2))
    result = analyse_causality(_measure(model, tok, enc), TH)
    assert result.status == "FAIL", result.reason
    assert "random in eval mode" in result.reason and "reads the future" not in result.reason
    assert result.values["conversations_random_in_eval"] == len(enc.ids)


def test_an_echo_training_barely_moved_is_not_called_unshifted_targets():
    """lr=1e-7 moves the weights by a hair: the current-token loss falls by a conclusive but
    tiny share against the untrained model; only a large cut counts as a taught echo."""
    m = _synthetic([12.0 + i % 3 for i in range(20)], [10.0] * 20, [10] * 20)
    m.untrained_current_nll = [10.01] * 20  # training cut it by 0.1%
    hair = analyse_causality(m, TH)
    assert hair.status == "WARN" and "has not learned yet" in hair.reason
    m.untrained_current_nll = [40.0 + i % 2 for i in range(20)]  # cut by 75%
    assert analyse_causality(m, TH).status == "FAIL"


def test_at_most_max_conversations_are_measured_evenly_spread(corpus):
    tok, enc = corpus
    model = TableModel(enc.ids, len(tok))
    some = measure_causality(model, enc, tok.pad_id, len(tok), max_conversations=5)
    assert len(some.next_nll) == 5
    every = _measure(model, tok, enc)
    assert some.next_nll[0] == every.next_nll[0] and some.next_nll[-1] == every.next_nll[-1]
