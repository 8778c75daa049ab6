import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from bankllm.data import (
    IGNORE_INDEX,
    collate,
    encode_corpus,
    epoch_batches,
    load_conversations,
    normalised_conversation,
    opening_messages,
    plan_micro_batches,
    split_conversations,
)
from bankllm.errors import BankLLMError
from bankllm.model import GPT, GPTConfig
from bankllm.tokenizer import Tokenizer
from tests.conftest import make_conversations


def test_split_is_seeded_90_10_and_never_straddles_duplicates():
    convs = make_conversations(200)
    dup = dict(convs[0], id="dup-of-c000")
    convs.append(dup)
    a = split_conversations(convs, 0.1, seed=3)
    b = split_conversations(convs, 0.1, seed=3)
    assert a.ids() == b.ids()
    assert abs(len(a.val) - 20) <= 1
    train_texts = {normalised_conversation(c) for c in a.train}
    assert not any(normalised_conversation(c) in train_texts for c in a.val)
    assert len(a.train_eval) == len(a.val)
    assert {c["id"] for c in a.train_eval} <= {c["id"] for c in a.train}


def test_batches_cover_each_conversation_once_per_epoch_and_depend_on_seed_and_epoch():
    lengths = [5 + (i * 7) % 40 for i in range(100)]
    batches = epoch_batches(lengths, 8, seed=0, epoch=1)
    flat = sorted(i for b in batches for i in b)
    assert flat == list(range(100))
    assert epoch_batches(lengths, 8, seed=0, epoch=1) == batches
    assert epoch_batches(lengths, 8, seed=0, epoch=2) != batches

    def pad_share(bs):
        padded = sum(len(b) * max(lengths[i] for i in b) for b in bs)
        return 1 - sum(lengths[i] for b in bs for i in b) / padded

    # length bucketing cuts padding well below a plain shuffle's
    assert pad_share(batches) < 0.5 * pad_share(epoch_batches(lengths, 8, 0, 1, bucket_batches=1))


def _corpus(loss_on="all"):
    convs = make_conversations(12)
    tok = Tokenizer.train(m["content"] for c in convs for m in c["messages"])
    return tok, encode_corpus(convs, tok, block_size=64, loss_on=loss_on)


def test_padding_is_never_a_target():
    tok, enc = _corpus()
    x, y = collate(enc, list(range(len(enc))), tok.pad_id)
    assert ((x == tok.pad_id) <= (y == IGNORE_INDEX)).all()
    assert int((y != IGNORE_INDEX).sum()) == enc.n_target_tokens()


def test_agent_only_targets_are_agent_tokens():
    tok, enc = _corpus("agent")
    _, y = collate(enc, [0], tok.pad_id)
    targets = [tok.vocab[i] for i in y[0].tolist() if i != IGNORE_INDEX]
    assert targets and "how" not in targets and "<agent>" not in targets
    assert "balance" in targets and targets[-1] in ("<eos>", "<customer>")


def test_a_sequence_has_the_same_loss_alone_and_padded_in_a_batch():
    torch.manual_seed(0)
    tok, enc = _corpus()
    model = GPT(
        GPTConfig(vocab_size=len(tok), block_size=64, n_layer=2, n_head=2, n_embd=32, dropout=0.0)
    ).eval()
    short = min(range(len(enc)), key=lambda i: enc.lengths[i])
    long = max(range(len(enc)), key=lambda i: enc.lengths[i])
    assert enc.lengths[short] < enc.lengths[long]
    with torch.no_grad():
        _, alone = model(*collate(enc, [short], tok.pad_id), reduction="sum")
        x, y = collate(enc, [short, long], tok.pad_id)
        logits, _ = model(x, y)
        row = torch.nn.functional.cross_entropy(
            logits[0], y[0], ignore_index=IGNORE_INDEX, reduction="sum"
        )
    assert torch.allclose(alone, row, atol=1e-5)


def test_long_conversations_are_truncated_and_counted():
    convs = make_conversations(3)
    tok = Tokenizer.train(m["content"] for c in convs for m in c["messages"])
    enc = encode_corpus(convs, tok, block_size=10)
    assert enc.truncated == 3 and max(enc.lengths) == 10


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("{not json\n", "corpus.jsonl:1: not valid JSON"),
        (
            json.dumps({"id": "a", "messages": [{"role": "customer"}]}) + "\n",
            "corpus.jsonl:1: field 'messages",
        ),
        ("", "corpus is empty"),
        (
            json.dumps(
                {
                    "id": "a",
                    "messages": [
                        {"role": "bot", "content": "x"},
                        {"role": "agent", "content": "y"},
                    ],
                }
            )
            + "\n",
            "field 'messages/0/role'",
        ),
    ],
)
def test_bad_corpus_lines_name_file_line_and_field(tmp_path, content, expected):
    path = tmp_path / "corpus.jsonl"
    path.write_text(content)
    with pytest.raises(BankLLMError, match=expected.replace("{", r"\{")):
        load_conversations(path)


@given(
    lengths=st.lists(st.integers(min_value=1, max_value=300), min_size=1, max_size=40),
    budget=st.integers(min_value=0, max_value=4000),
)
@settings(max_examples=200, deadline=None)
def test_auto_micro_batches_keep_order_and_respect_the_token_budget(lengths, budget):
    batch = list(range(len(lengths)))[::-1]  # any order of indices into lengths
    parts = plan_micro_batches(batch, lengths, 0, budget)
    assert [i for part in parts for i in part] == batch  # every item once, in order
    assert all(parts)
    for part in parts:
        padded = len(part) * max(lengths[i] for i in part)
        # within budget, unless a single sequence is longer than the whole budget
        assert budget <= 0 or padded <= budget or len(part) == 1
    if budget <= 0:
        assert len(parts) == 1
    # greedy: the next item would have broken the budget
    for part, following in zip(parts, parts[1:], strict=False):
        grown = (len(part) + 1) * max(lengths[i] for i in [*part, following[0]])
        assert grown > budget


def test_fixed_micro_batches_are_groups_of_that_size():
    assert plan_micro_batches([5, 3, 9, 1, 7], [10] * 10, 2) == [[5, 3], [9, 1], [7]]
    # the token budget only applies to auto (micro_batch_size 0)
    assert plan_micro_batches([5, 3, 9], [10] * 10, 2, micro_batch_tokens=5) == [[5, 3], [9]]


def test_a_missing_corpus_names_the_directory_a_relative_path_was_read_from(tmp_path,
                                                                            monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(BankLLMError, match=f"corpus file not found in {tmp_path} "):
        load_conversations("fixtures/banking_conversations.jsonl")
    with pytest.raises(BankLLMError) as absolute:
        load_conversations(tmp_path / "none.jsonl")
    assert "not found (pass --data FILE" in str(absolute.value)


def test_the_opening_is_the_system_prompt_that_most_conversations_share():
    system = {"role": "system", "content": "You are the bank's agent."}
    convs = make_conversations(10)
    for c in convs[:6]:
        c["messages"].insert(0, system)
    assert opening_messages(convs) == [system]
    assert opening_messages(convs[4:]) == []  # 2 of 6: not most of them
    varied = [{**c, "messages": [{"role": "system", "content": f"prompt {i}"}, *c["messages"]]}
              for i, c in enumerate(make_conversations(10))]
    assert opening_messages(varied) == []
    assert opening_messages(make_conversations(10)) == []
    assert opening_messages([]) == []


def test_stats_count_every_intent_a_conversation_carries_and_show_its_opening():
    from bankllm.data import corpus_stats

    system = {"role": "system", "content": "You are the bank's agent."}
    convs = make_conversations(4)
    convs[0]["messages"][-1]["intent"] = "transfer_money"  # a second intent, on a message
    for c in convs[:3]:
        c["messages"].insert(0, system)
    stats = corpus_stats(convs)
    assert stats["intents"] == {"check_balance": 4, "transfer_money": 1}
    assert stats["multi_intent"] == 1 and stats["opening"] == [system]
