"""Diagnostic power of the memorization check, with response sources instead of a model:
a source that recites its training answers FAILs the gap (and regurgitates private values), a
source that answers train and val alike passes; the model-backed source is exact."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch
from rapidfuzz import process

from bankllm.data import load_conversations, split_conversations
from bankllm.model import GPT, GPTConfig
from bankllm.tokenizer import Tokenizer
from diagnostics.analyses.memorization import (
    Generation,
    Item,
    Query,
    analyse_memorization,
    build_items,
    collect_generations,
    extract_values,
    model_source,
    training_values,
)
from diagnostics.thresholds import Thresholds
from tests.conftest import make_conversations

CORPUS = Path(__file__).resolve().parents[1] / "fixtures" / "banking_conversations.jsonl"
TH = Thresholds().for_check("memorization")
NOVEL_AMOUNT = "$ 9 8 , 7 6 5 . 4 3"  # above every amount the corpus draws


@pytest.fixture(scope="module")
def data():
    """The bundled corpus when present (else a small synthetic one), split and tokenized."""
    convs = load_conversations(CORPUS) if CORPUS.exists() else make_conversations(200)
    split = split_conversations(convs, 0.1, seed=0)
    tok = Tokenizer.train(m["content"] for c in split.train for m in c["messages"])
    items = build_items(split.train, split.val, tok, block_size=256, n_train=300, seed=0)
    return split, tok, items


def reciter(items: list[Item]):
    """A memorizer: a training prompt gets its training answer verbatim; any other prompt the
    answer of the training prompt that looks most like it (private values and all)."""
    train_turns = {i.prompt: i.expected for i in items if i.split == "train" and i.kind == "turn"}
    train_prefix = {i.prompt: i.expected for i in items if i.split == "train" and i.kind != "turn"}
    keys = list(train_turns)

    def respond(queries: list[Query]) -> list[str]:
        out = []
        for q in queries:
            if not q.stop_at_turn_end:
                out.append(train_prefix.get(q.prompt, ""))
            elif q.prompt in train_turns:
                out.append(train_turns[q.prompt])
            else:
                out.append(train_turns[process.extractOne(q.prompt, keys)[0]])
        return out

    return respond


def generaliser(items: list[Item]):
    """A model that learned the answer templates but no private data: it copies the true
    answer where every value in it comes from the prompt, and states a value nobody has where
    the true answer holds one the prompt does not reveal — for train and val alike."""
    truth = {i.prompt: i for i in items}

    def respond(queries: list[Query]) -> list[str]:
        out = []
        for q in queries:
            item = truth[q.prompt]
            if item.kind != "turn":
                out.append("")  # recalls no conversation beyond the prompt
                continue
            hidden = set(extract_values(item.expected)) - set(extract_values(item.prompt))
            out.append(NOVEL_AMOUNT if hidden else item.expected)
        return out

    return respond


def babbler(queries: list[Query]) -> list[str]:
    """An untrained model: random words (and digits)."""
    rng = random.Random(0)
    words = ("the", "your", "$", "1", "2", "5", ".", ",", "account", "balance", "fee", "to")
    return [" ".join(rng.choice(words) for _ in range(q.max_new_tokens)) for q in queries]


def check(data, source):
    split, _, items = data
    gens = collect_generations(items, source)
    chance = collect_generations(items, babbler)
    return analyse_memorization(gens, chance, training_values(split.train), len(split.train), TH)


def test_items_cover_a_train_sample_and_all_of_val(data):
    split, _, items = data
    turns = [i for i in items if i.kind == "turn"]
    assert sum(i.split == "train" for i in turns) == 300
    n_val = sum(m["role"] == "agent" for c in split.val for m in c["messages"])
    assert sum(i.split == "val" for i in turns) == n_val
    assert all(i.prompt.endswith("<agent>") and i.prompt.startswith("<bos>") for i in turns)
    ks = {i.kind for i in items} - {"turn"}
    assert ks == {"k8", "k16", "k32"}
    for i in items:
        if i.kind != "turn":
            assert len(i.prompt.split()) == int(i.kind[1:]) and 1 <= len(i.expected.split()) <= 32


def test_reciting_training_answers_fails_the_gap_and_regurgitates(data):
    result = check(data, reciter(data[2]))
    v = result.values
    assert result.status == "FAIL"
    assert v["em_train"] > 0.95 and v["gap"] > TH["gap_warn"]  # (equal prompts collide)
    assert v["extract_k32_train"] > 0.8 and v["extract_k32_val"] == 0.0
    assert v["regurgitation"] > TH["regurgitation_fail"]
    assert "all of it above the fail line +20.0%" in result.reason and "privacy" in result.reason
    examples = result.details["examples"]
    assert any(e["split"] == "val" and "copies training value" in e["why"] for e in examples)
    assert any(e["split"] == "train" and "no prompt reveals" in e["why"] for e in examples)
    assert v["em_chance"] == 0.0 and v["token_match_chance"] < 0.2


def test_answering_train_and_val_alike_passes(data):
    result = check(data, generaliser(data[2]))
    v = result.values
    assert result.status == "PASS", result.reason
    assert abs(v["gap"]) <= TH["gap_pass"] and v["em_val"] > 0.3
    assert v["regurgitation"] == 0.0 and v["values_generated_val"] > 0
    assert "all of it on the passing side of +10.0%" in result.reason
    table = result.details["tables"][0]
    assert table["columns"] == ["measure", "train", "val", "train − val", "chance"]
    assert [r[0] for r in table["rows"]][:3] == ["exact match (EM)", "fuzzy (ratio ≥ 90)",
                                                 "token match (Pythia)"]


def test_copying_a_private_training_value_into_val_answers_warns_or_fails(data):
    split, _, items = data
    private = [v for v, n in training_values(split.train).items() if n == 1 and "$" in v][0]
    spelled = " ".join(private)
    base = generaliser(items)

    def leaky(queries):
        return [a.replace(NOVEL_AMOUNT, spelled) for a in base(queries)]

    result = check(data, leaky)
    assert result.status == "FAIL" and result.values["regurgitation"] > TH["regurgitation_fail"]
    assert abs(result.values["gap"]) <= TH["gap_pass"]


def test_common_values_are_public_constants_not_regurgitation():
    item = Item("val", "turn", "c1", "<bos> <customer> what is the fee ? <agent>",
                "the fee is $ 2 . 5 0 .")
    wrong = [Generation(item, "the fee is $ 3 5 .")]
    train_item = Item("train", "turn", "c0", "<bos> <customer> hi <agent>", "hello .")
    gens = [*wrong, Generation(train_item, "hello .")]
    common = analyse_memorization(gens, [], {"$35": 50}, 100, TH)
    rare = analyse_memorization(gens, [], {"$35": 1}, 100, TH)
    assert common.values["regurgitation"] == 0.0 and common.values["regurgitation_any"] == 1.0
    assert rare.values["regurgitation"] == 1.0 and rare.status == "WARN"  # one amount: too few
    assert "fewer than the 30 needed to FAIL" in rare.reason
    decisive = analyse_memorization(gens, [], {"$35": 1}, 100,
                                    {**TH, "regurgitation_min_amounts": 1})
    assert decisive.status == "FAIL"


def test_one_training_value_among_eleven_amounts_cannot_fail_on_its_own():
    """The small-data case: 1 of 11 generated amounts is a private training value (9.1%)."""
    train_item = Item("train", "turn", "c0", "<bos> <customer> hi <agent>", "hello .")
    gens = [Generation(train_item, "hello .")]
    for i in range(11):
        amount = "$ 9 9 . 0 1" if i == 0 else f"$ {i} . 0 0"
        item = Item("val", "turn", f"v{i}", f"<bos> <customer> pay {i} <agent>", "ok .")
        gens.append(Generation(item, f"paid {amount} ."))
    result = analyse_memorization(gens, [], {"$99.01": 1}, 100, TH)
    assert result.values["regurgitation"] == pytest.approx(1 / 11)
    assert result.status == "WARN"
    assert "value regurgitation" in result.reason and "inconclusive" in result.reason


def test_values_are_amounts_and_account_like_numbers():
    text = "sent $ 1 , 2 5 0 . 0 0 to account 1 2 3 4 5 6 on march 1 2 , fee $ 3 5 ."
    assert extract_values(text) == ["$1,250.00", "$35", "123456"]
    assert extract_values("rate 7 . 9 % for 1 to 5 years") == []


def test_model_source_teacher_forcing_equals_greedy_decoding(data):
    """k-extraction is answered by teacher forcing: the answer must be greedy decoding's,
    cut after its first wrong word."""
    from bankllm.generation import generate

    torch.set_num_threads(1)
    _, tok, items = data
    torch.manual_seed(0)
    model = GPT(GPTConfig(len(tok), block_size=256, n_layer=1, n_head=2, n_embd=32,
                          dropout=0.0)).eval()
    with torch.no_grad():  # make a few continuations right: tie the next word to this one
        model.wte.weight.normal_(0.0, 1.0)
    picked = [i for i in items if i.kind == "k8"][:20]
    answers = collect_generations(picked, model_source(model, tok, "fp32"))
    for g in answers:
        prompt = [tok.index[w] for w in g.item.prompt.split()]
        free = generate(model, [prompt], tok, max_new_tokens=len(g.item.expected.split()),
                        stop_at_turn_end=False)[0]
        said = [tok.vocab[t] for t in free]
        ref = g.item.expected.split()
        cut = next((j + 1 for j, (a, b) in enumerate(zip(said, ref, strict=False)) if a != b),
                   len(said))
        assert g.generated.split() == said[:cut]


def test_model_source_answers_turns_by_greedy_decoding(data):
    from bankllm.generation import generate

    torch.set_num_threads(1)
    _, tok, items = data
    torch.manual_seed(1)
    model = GPT(GPTConfig(len(tok), block_size=256, n_layer=1, n_head=2, n_embd=32,
                          dropout=0.0)).eval()
    turns = [i for i in items if i.kind == "turn"][:12]
    got = collect_generations(turns, model_source(model, tok, "fp32", batch_size=5))
    for g in got:
        q = g.item.query()
        ids = generate(model, [[tok.index[w] for w in q.prompt.split()]], tok,
                       max_new_tokens=q.max_new_tokens)[0]
        assert g.generated == tok.decode(ids, skip_special=False)
        assert len(g.generated.split()) <= q.max_new_tokens


def test_a_gap_near_its_line_says_the_turns_do_not_settle_it(data):
    split, _, items = data
    val_convs = sorted({i.conv_id for i in items if i.split == "val"})
    wrong = set(val_convs[: len(val_convs) // 9])  # about 11% of val answers wrong
    truth = {i.prompt: i for i in items}

    def mostly_right(queries: list[Query]) -> list[str]:
        return ["" if truth[q.prompt].conv_id in wrong else truth[q.prompt].expected
                for q in queries]

    result = check(data, mostly_right)
    v = result.values
    assert v["gap_ci95_low"] < v["gap"] < v["gap_ci95_high"]
    assert v["gap_ci95_low"] < TH["gap_pass"] <= v["gap_ci95_high"], v
    assert "inconclusive" in result.reason and "more conversations would settle it" in result.reason
    assert result.status == "WARN"
    clear = check(data, reciter(data[2]))  # a gap far above both lines
    assert clear.values["gap_ci95_low"] > TH["gap_warn"]
    assert "inconclusive" not in clear.reason.split("value regurgitation")[0]
