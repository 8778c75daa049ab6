import string

from hypothesis import given, settings
from hypothesis import strategies as st

from bankllm.tokenizer import SPECIAL_TOKENS, Tokenizer, normalise_text, split_words


def test_splits_punctuation_and_digits_like_the_chapter_but_per_digit():
    assert split_words("Your balance is $2,450.32.") == [
        "your",
        "balance",
        "is",
        "$",
        "2",
        ",",
        "4",
        "5",
        "0",
        ".",
        "3",
        "2",
        ".",
    ]
    assert split_words("What's my PIN?") == ["what's", "my", "pin", "?"]


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=string.ascii_letters + string.digits + " .,$?!'-\n", max_size=80))
def test_round_trip_recovers_the_normalised_text(text):
    tok = Tokenizer.train([text])
    assert tok.decode(tok.encode_text(text)) == normalise_text(text)


def test_unknown_words_map_to_unk_and_are_counted():
    tok = Tokenizer.train(["my savings balance"])
    ids = tok.encode_text("my mortgage balance")
    assert ids[1] == tok.unk_id and ids[0] != tok.unk_id
    assert abs(tok.unk_rate(["my mortgage balance"]) - 1 / 3) < 1e-9


def test_min_freq_drops_rare_words():
    tok = Tokenizer.train(["a a b"], min_freq=2)
    assert "a" in tok.index and "b" not in tok.index


def test_conversation_encoding_marks_agent_tokens():
    tok = Tokenizer.train(["hi there", "hello"])
    msgs = [{"role": "customer", "content": "hi"}, {"role": "agent", "content": "hello there"}]
    ids, roles = tok.encode_conversation(msgs)
    words = [tok.vocab[i] for i in ids]
    assert words == ["<bos>", "<customer>", "hi", "<agent>", "hello", "there", "<eos>"]
    # agent words and the <eos> that ends the agent turn are agent targets; <agent> is not
    assert roles == [0, 0, 0, 0, 1, 1, 1]
    assert tok.encode_prompt(msgs[:1])[-1] == tok.role_ids["agent"]


def test_save_load_round_trip(tmp_path):
    tok = Tokenizer.train(["your savings balance is $ 5"])
    tok.save(tmp_path / "tok.json")
    again = Tokenizer.load(tmp_path / "tok.json")
    assert again.vocab == tok.vocab
    assert again.vocab[: len(SPECIAL_TOKENS)] == list(SPECIAL_TOKENS)
