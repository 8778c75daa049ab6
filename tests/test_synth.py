"""Tests of the synthetic corpus and probe generator (bankllm.synth) and the probe loader."""

from __future__ import annotations

import json
import re
import string
from collections import Counter
from pathlib import Path

import pytest

from bankllm import synth
from bankllm.cli import main
from bankllm.entities import mentioned_account_types
from bankllm.errors import BankLLMError
from bankllm.fileio import load_schema, validate_json
from bankllm.probes import Probes, load_probes
from bankllm.synth import (
    ACCOUNT_TYPES,
    HELDOUT_PHRASINGS,
    INTENTS,
    PAYEES,
    PHRASINGS,
    RANDOM_ANSWER_INTENTS,
    synthesize_corpus,
    synthesize_probes,
)

REPO = Path(__file__).resolve().parents[1]
TOKEN = re.compile(r"[a-z]+(?:'[a-z]+)*|[0-9]|[^\sa-z0-9]")  # the project's word tokenizer
MONEY = re.compile(r"\$[0-9][0-9,]*(?:\.[0-9]{2})?")


def norm(text: str) -> str:
    return " ".join(text.lower().split())


def exchanges(record: dict) -> list[tuple[dict, dict]]:
    msgs = record["messages"]
    return list(zip(msgs[0::2], msgs[1::2], strict=True))


def template_regex(template: str) -> re.Pattern[str]:
    parts = []
    for literal, field, _, _ in string.Formatter().parse(template):
        parts.append(re.escape(literal))
        if field:
            parts.append(r".+?")
    return re.compile("^" + "".join(parts) + "$")


@pytest.fixture(scope="module")
def corpus() -> list[dict]:
    return synthesize_corpus(seed=0, n=900)


@pytest.fixture(scope="module")
def probes() -> dict[str, list[dict]]:
    return synthesize_probes(seed=0)


def probe_prompts(probes: dict[str, list[dict]]) -> list[str]:
    prompts = [p for r in probes["inv"] for p in r["prompts"]]
    prompts += [v["prompt"] for r in probes["dir"] for v in r["variants"]]
    prompts += [r["prompt"] for r in probes["mft"]]
    return prompts


# --- determinism ------------------------------------------------------------------------------


def test_generation_is_deterministic(corpus, probes):
    assert synthesize_corpus(seed=0, n=900) == corpus
    assert synthesize_probes(seed=0) == probes
    assert synthesize_corpus(seed=1, n=50) != corpus[:50]


def test_cli_rerun_is_byte_identical(tmp_path, capsys):
    outputs = []
    for name in ("a", "b"):
        out = tmp_path / name / "corpus.jsonl"
        probes_dir = tmp_path / name / "probes"
        args = ["data", "synth", "--seed", "0", "--n", "900", "-o", str(out),
                "--probes-dir", str(probes_dir)]
        assert main(args) == 0
        files = [out] + [probes_dir / f for f in ("inv.jsonl", "dir.jsonl", "mft.jsonl")]
        outputs.append([f.read_bytes() for f in files])
    assert outputs[0] == outputs[1]
    summary = capsys.readouterr().out.strip().splitlines()
    assert len(summary) == 2 and "900 conversations" in summary[0] and "inv" in summary[0]
    # the bundled fixtures are exactly what the generator writes
    bundled = REPO / "fixtures" / "banking_conversations.jsonl"
    if bundled.exists():
        assert bundled.read_bytes() == outputs[0][0]
        for data, kind in zip(outputs[0][1:], ("inv", "dir", "mft"), strict=True):
            assert (REPO / "fixtures" / "probes" / f"{kind}.jsonl").read_bytes() == data


def test_cli_skips_probes_with_empty_dir(tmp_path, capsys):
    out = tmp_path / "c.jsonl"
    assert main(["data", "synth", "--n", "5", "-o", str(out), "--probes-dir", ""]) == 0
    assert len(out.read_text().splitlines()) == 5
    assert "; probes" not in capsys.readouterr().out
    assert main(["data", "synth", "--n", "0", "-o", str(out), "--probes-dir", ""]) == 2


# --- record format ----------------------------------------------------------------------------


def test_records_follow_the_schema_and_format(corpus):
    schema = load_schema("bankllm", "conversation.schema.json")
    for i, record in enumerate(corpus, start=1):
        validate_json(record, schema, record["id"])
        assert list(record) == ["id", "intent", "slots", "messages"]
        assert record["id"] == f"conv-{i:04d}"
        msgs = record["messages"]
        assert 1 <= len(msgs) // 2 <= 3 and len(msgs) % 2 == 0
        assert [m["role"] for m in msgs] == ["customer", "agent"] * (len(msgs) // 2)
        assert all(m["intent"] in INTENTS for m in msgs)
        for customer, agent in exchanges(record):
            assert customer["intent"] == agent["intent"]
        assert record["intent"] == msgs[0]["intent"]
        assert all(isinstance(v, str) for v in record["slots"].values())
        assert set(record["slots"]) == set(synth.intent_slots(record["intent"]))
    lengths = Counter(len(r["messages"]) // 2 for r in corpus)
    assert set(lengths) == {1, 2, 3}


def test_exact_duplicates_are_rare(corpus):
    texts = Counter(norm(json.dumps(r["messages"])) for r in corpus)
    duplicated = sum(c for c in texts.values() if c > 1)
    assert duplicated / len(corpus) < 0.10


# --- intents and phrasings --------------------------------------------------------------------


def test_intents_and_phrasing_tables():
    assert len(INTENTS) >= 20
    assert set(PHRASINGS) == set(HELDOUT_PHRASINGS) == set(synth.ANSWERS) == set(INTENTS)
    for intent in INTENTS:
        assert re.fullmatch(r"[a-z]+(_[a-z]+)*", intent)
        corpus_t = {norm(t) for t in PHRASINGS[intent]}
        heldout_t = {norm(t) for t in HELDOUT_PHRASINGS[intent]}
        assert len(corpus_t) >= 8, intent
        assert len(heldout_t) >= 4, intent
        # every corpus phrasing carries all of the intent's slots
        assert {synth.template_slots(t) for t in PHRASINGS[intent]} == {
            synth.intent_slots(intent)
        }
    every_corpus = {norm(t) for ts in PHRASINGS.values() for t in ts}
    every_heldout = {norm(t) for ts in HELDOUT_PHRASINGS.values() for t in ts}
    assert not every_corpus & every_heldout


def test_each_intent_uses_at_least_8_phrasings_in_the_corpus(corpus):
    used: dict[str, set[str]] = {i: set() for i in INTENTS}
    for record in corpus:
        for customer, _ in exchanges(record):
            matches = [t for t in PHRASINGS[customer["intent"]]
                       if template_regex(t).match(customer["content"])]
            assert matches, customer["content"]
            used[customer["intent"]].update(matches)
    for intent in INTENTS:
        assert len(used[intent]) >= 8, intent


def test_no_probe_prompt_occurs_in_the_corpus(corpus, probes):
    customer_turns = {norm(m["content"]) for r in corpus for m in r["messages"]
                      if m["role"] == "customer"}
    for prompt in probe_prompts(probes):
        assert norm(prompt) not in customer_turns, prompt
    for prompt in (*synth.CHAPTER_BALANCE_PROMPTS, "What is my checking balance?",
                   synth.CHAPTER_NOVEL_PROMPT):
        assert norm(prompt) not in customer_turns


def test_vocabulary_size_is_in_the_low_hundreds(corpus, probes):
    texts = [m["content"] for r in corpus for m in r["messages"]] + probe_prompts(probes)
    vocab = {tok for text in texts for tok in TOKEN.findall(text.lower())}
    assert 150 <= len(vocab) <= 350, len(vocab)
    assert TOKEN.findall("$2,450.32") == ["$", "2", ",", "4", "5", "0", ".", "3", "2"]


# --- slots and answers ------------------------------------------------------------------------


def test_balance_answers_name_the_asked_account_type_only(corpus):
    n = 0
    for record in corpus:
        for i, (customer, agent) in enumerate(exchanges(record)):
            if customer["intent"] != "check_balance":
                continue
            asked = mentioned_account_types(customer["content"])
            assert len(asked) == 1, customer["content"]
            assert mentioned_account_types(agent["content"]) == asked, agent["content"]
            assert MONEY.search(agent["content"])
            if i == 0:
                assert asked == [record["slots"]["account_type"]]
            n += 1
    assert n >= 100


def test_transfer_confirmations_repeat_amount_payee_and_account(corpus):
    n = 0
    for record in corpus:
        for i, (customer, agent) in enumerate(exchanges(record)):
            if customer["intent"] != "transfer_money":
                continue
            amounts = MONEY.findall(customer["content"])
            payees = [p for p in PAYEES if re.search(rf"\b{p}\b", customer["content"])]
            assert len(amounts) == 1 and len(payees) == 1
            assert amounts[0] in agent["content"] and payees[0] in agent["content"]
            assert mentioned_account_types(agent["content"]) == mentioned_account_types(
                customer["content"])
            if i == 0:
                slots = record["slots"]
                assert f"${slots['amount']}" in agent["content"]
                assert slots["payee"] in agent["content"]
                assert mentioned_account_types(agent["content"]) == [slots["account_type"]]
            n += 1
    assert n >= 100


def test_fixed_answers_are_learnable_and_random_ones_vary(corpus):
    answers: dict[str, Counter] = {i: Counter() for i in INTENTS}
    for record in corpus:
        for customer, agent in exchanges(record):
            answers[customer["intent"]][agent["content"]] += 1
    overdraft = answers["overdraft_fee"]
    assert len(overdraft) == 1 and "$35" in next(iter(overdraft))
    assert len(answers["monthly_fee"]) <= len(ACCOUNT_TYPES)
    for intent in RANDOM_ANSWER_INTENTS:  # no answer text is frequent enough to learn
        total = sum(answers[intent].values())
        assert answers[intent].most_common(1)[0][1] < 0.1 * total, intent
    agent_turns = sum(sum(c.values()) for c in answers.values())
    random_turns = sum(sum(answers[i].values()) for i in RANDOM_ANSWER_INTENTS)
    assert 0.1 < random_turns / agent_turns < 0.4


def test_mentioned_account_types():
    assert mentioned_account_types("What is my credit balance?") == ["credit card"]
    assert mentioned_account_types("your Credit Card balance") == ["credit card"]
    assert mentioned_account_types("Your savings account balance is $2,450.32.") == ["savings"]
    assert mentioned_account_types("from checking to savings") == ["checking", "savings"]
    assert mentioned_account_types("Our overdraft fee is $35.") == []


# --- probes -----------------------------------------------------------------------------------


def test_probe_counts_and_chapter_prompts(probes):
    inv, dir_, mft = probes["inv"], probes["dir"], probes["mft"]
    assert len(inv) >= 20 and all(len(g["prompts"]) >= 4 for g in inv)
    assert len(dir_) >= 30 and len(mft) >= 40
    assert {"check_balance", "transfer_money"} <= {t["intent"] for t in dir_}
    assert any("What is my account balance?" in g["prompts"] for g in inv)
    assert any(
        [v["prompt"] for v in t["variants"]]
        == ["What is my checking balance?", "What is my savings balance?",
            "What is my credit balance?"]
        for t in dir_
    )
    assert any(r["prompt"] == "What is your overdraft fee?" and r["intent"] == "overdraft_fee"
               for r in mft)
    assert all(r["intent"] in INTENTS for r in inv + dir_ + mft)


def test_dir_triples_change_only_the_account_type(probes):
    surface = re.compile(r"\b(checking account|savings account|credit card|checking|savings|"
                         r"credit)\b")
    for triple in probes["dir"]:
        variants = triple["variants"]
        assert [v["entity"] for v in variants] == list(ACCOUNT_TYPES)
        for v in variants:
            assert mentioned_account_types(v["prompt"]) == [v["entity"]]
        assert len({surface.sub("ACCT", v["prompt"]) for v in variants}) == 1, variants


def test_probe_files_load_and_validate(tmp_path):
    assert main(["data", "synth", "--n", "3", "-o", str(tmp_path / "c.jsonl"),
                 "--probes-dir", str(tmp_path / "probes")]) == 0
    loaded = load_probes(tmp_path / "probes")
    assert isinstance(loaded, Probes)
    expected = synthesize_probes(seed=0)
    assert (loaded.inv, loaded.dir, loaded.mft) == (expected["inv"], expected["dir"],
                                                   expected["mft"])
    schema = load_schema("bankllm", "probes.schema.json")
    for record in loaded.inv + loaded.dir + loaded.mft:
        validate_json(record, schema, record["id"])


def test_load_probes_names_file_and_line_of_a_bad_record(tmp_path):
    directory = tmp_path / "probes"
    assert main(["data", "synth", "--n", "3", "-o", str(tmp_path / "c.jsonl"),
                 "--probes-dir", str(directory)]) == 0
    inv = directory / "inv.jsonl"
    lines = inv.read_text().splitlines()
    inv.write_text("\n".join([lines[0], "{not json", *lines[2:]]) + "\n")
    with pytest.raises(BankLLMError, match=r"inv\.jsonl:2: not valid JSON"):
        load_probes(directory)

    bad = json.loads(lines[1])
    bad["prompts"] = bad["prompts"][:2]
    inv.write_text("\n".join([lines[0], lines[1], json.dumps(bad), *lines[3:]]) + "\n")
    with pytest.raises(BankLLMError, match=r"inv\.jsonl:3: field 'prompts'"):
        load_probes(directory)

    dir_file = directory / "dir.jsonl"
    inv.write_text("\n".join(lines) + "\n")
    first = json.loads(dir_file.read_text().splitlines()[0])
    first["variants"][1]["entity"] = "checking"
    dir_file.write_text(json.dumps(first) + "\n")
    with pytest.raises(BankLLMError, match=r"dir\.jsonl:1: field 'variants': entity 'checking'"):
        load_probes(directory)


def test_load_probes_missing_directory_says_how_to_make_it(tmp_path):
    with pytest.raises(BankLLMError, match="bankllm data synth"):
        load_probes(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BankLLMError, match=r"inv\.jsonl.*bankllm data synth"):
        load_probes(tmp_path / "empty")


def test_bundled_probes_hold_no_copies_and_short_paraphrase_groups(probes):
    """A copy would count as more evidence than there is; a long group would outweigh the
    rest (consistency counts agreeing pairs)."""
    dirs = [tuple(v["prompt"] for v in r["variants"]) for r in probes["dir"]]
    groups = [tuple(sorted(g["prompts"])) for g in probes["inv"]]
    assert len(set(dirs)) == len(dirs) and len(set(groups)) == len(groups)
    assert all(4 <= len(g["prompts"]) <= 5 for g in probes["inv"])
    assert len({r["prompt"] for r in probes["mft"]}) == len(probes["mft"])
