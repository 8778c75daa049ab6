import json
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bankllm.errors import BankLLMError
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


SYSTEM = {"role": "system", "content": "You are the bank's agent."}


def test_the_opening_goes_before_a_prompt_that_starts_with_the_customer(tmp_path):
    ask = [{"role": "customer", "content": "what is my balance?"}]
    plain = Tokenizer.train(["you are the bank's agent . what is my balance ?"])
    tok = Tokenizer.train(["you are the bank's agent . what is my balance ?"], opening=[SYSTEM])
    assert tok.encode_prompt(ask) == tok.encode_prompt([SYSTEM, *ask])
    assert tok.encode_prompt(ask, opening=False) == plain.encode_prompt(ask)
    own = [{"role": "system", "content": "be brief"}, *ask]  # a prompt with its own opening
    assert tok.encode_prompt(own) == plain.encode_prompt(own)
    tok.save(tmp_path / "tok.json")
    assert Tokenizer.load(tmp_path / "tok.json").encode_prompt(ask) == tok.encode_prompt(ask)
    plain.save(tmp_path / "plain.json")  # no opening: the file is as before
    assert "opening" not in json.loads((tmp_path / "plain.json").read_text())


@pytest.mark.parametrize("opening", ['"be brief"', '[{"role": "customer", "content": "hi"}]',
                                     '[{"role": "system"}]'])
def test_a_bad_opening_in_a_tokenizer_file_is_one_error_naming_it(tmp_path, opening):
    path = tmp_path / "tok.json"
    path.write_text(f'{{"vocab": {json.dumps(list(SPECIAL_TOKENS))}, "opening": {opening}}}')
    with pytest.raises(BankLLMError, match="opening") as exc:
        Tokenizer.load(path)
    assert str(path) in str(exc.value)
