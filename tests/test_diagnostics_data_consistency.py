"""data_consistency and ``bankllm data audit``: planted label noise FAILs (exit 1), the bundled
corpus passes, a borderline small sample does not FAIL, bad input exits 2."""

from __future__ import annotations

import copy
import json
import math
import random
from pathlib import Path

import pytest

from bankllm import audit
from bankllm.audit import audit_corpus, mentions, wilson
from bankllm.cli import main
from bankllm.data import load_conversations, split_conversations
from diagnostics.analyses import data_consistency
from diagnostics.analyses.data_consistency import analyse_data_consistency
from diagnostics.decision import wilson as decision_wilson
from diagnostics.thresholds import Thresholds

TH = Thresholds().for_check("data_consistency")
CORPUS = Path(__file__).resolve().parents[1] / "fixtures" / "banking_conversations.jsonl"
SWAP = {"checking account": "savings account", "savings account": "credit card",
        "credit card": "checking account"}


@pytest.fixture(scope="module")
def bundled():
    return load_conversations(CORPUS)


def write(path: Path, conversations) -> Path:
    path.write_text("".join(json.dumps(c) + "\n" for c in conversations))
    return path


def wrong_balances(conversations, share=0.3, seed=0):
    """A copy where ``share`` of check_balance conversations answer about another account."""
    out = copy.deepcopy(conversations)
    balance = [c for c in out if c["intent"] == "check_balance"]
    for conv in random.Random(seed).sample(balance, round(share * len(balance))):
        answer = conv["messages"][1]
        asked = next(a for a in SWAP if answer["content"].startswith(f"Your {a} "))
        answer["content"] = answer["content"].replace(asked, SWAP[asked], 1)
    return out


def transfer(i: int, payee: str, paid: str, amount: str = "$120.00") -> dict:
    return {"id": f"t{i}", "intent": "transfer_money", "slots": {"payee": payee},
            "messages": [
                {"role": "customer", "content": f"Please send {amount} to {payee} from my savings "
                                                "account.", "intent": "transfer_money"},
                {"role": "agent", "content": f"Done. I have paid {paid} {amount} from your "
                                             "savings account.", "intent": "transfer_money"}]}


def test_defaults_are_the_cli_constants():
    assert data_consistency.DEFAULTS["max_entity_mismatch"] == audit.MAX_ENTITY_MISMATCH == 0.05
    assert data_consistency.DEFAULTS["max_intent_conflict"] == audit.MAX_INTENT_CONFLICT == 0.05
    assert TH["near_ratio"] == audit.NEAR_RATIO


@pytest.mark.parametrize(("k", "n"), [(0, 12), (1, 12), (35, 217), (12, 12), (0, 0)])
def test_cli_wilson_is_the_decision_rules(k, n):
    assert decision_wilson is wilson  # the audit and the decision rule share one interval
    if n == 0:
        assert wilson(k, n) == (0.0, 1.0)
        return
    z = 1.959963984540054  # the Wilson score interval's closed form, at 95%
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    assert wilson(k, n) == pytest.approx((max(0.0, centre - half), min(1.0, centre + half)))


def test_mentions_per_kind():
    assert mentions("Your checking account balance is $2,450.32.", "account_type") == {"checking"}
    assert mentions("I paid $1,250 and $1,250.00, then $5.5", "amount") == {"$1,250.00",
                                                                            "$5.50"}
    assert mentions("Pay Maria $50 for March", "payee") == {"Maria"}  # a month is no payee
    assert mentions("John got it.", "payee", frozenset({"John"})) == {"John"}
    assert mentions("Send it to the bank", "payee") == set()


def test_bundled_corpus_passes(bundled):
    """The generator is consistent: no mismatch, no conflict, on the corpus and its train
    split (measured: 0/1125 eligible exchanges, 0/295 clusters; train 0/1000, 0/286)."""
    for conversations in (bundled, split_conversations(bundled).train):
        result = analyse_data_consistency(conversations, TH)
        assert result.status == "PASS", result.reason
        assert result.values["entity_mismatches"] == 0
        assert result.values["conflicting_clusters"] == 0
        assert result.values["eligible_exchanges"] > 900 and result.values["clusters"] > 250
        assert result.values["entity_mismatch_ci95_high"] < TH["max_entity_mismatch"]
        assert result.values["intent_conflict_ci95_high"] < TH["max_intent_conflict"]
        for kind in audit.ENTITY_KINDS:
            assert result.values[f"{kind}_eligible"] > 100


def test_wrong_account_in_balance_answers_fails(bundled):
    result = analyse_data_consistency(wrong_balances(bundled), TH)
    assert result.status == "FAIL", result.reason
    assert result.values["entity_mismatches"] == 35  # 30% of 116 balance conversations
    assert result.values["account_type_mismatched"] == 35
    assert "intent check_balance: 35/217 mismatched" in result.reason
    assert "entity_mismatch[check_balance]" in result.details["decisions"]
    tables = {t["title"]: t for t in result.details["tables"]}
    examples = tables["Entity mismatches (worst first)"]
    assert len(examples["rows"]) == audit.MAX_EXAMPLES
    assert all(row[1] == "check_balance" and row[2] == "account_type"
               for row in examples["rows"])


def test_planted_conflicting_intents_are_found(bundled):
    planted = copy.deepcopy(bundled)
    rng = random.Random(1)
    sources = [c for c in bundled if c["intent"] == "atm_fee"][:40]
    for i, conv in enumerate(sources):
        twin = copy.deepcopy(conv)
        twin["id"] = f"planted-{i}"
        question = twin["messages"][0]
        question["content"] = question["content"].rstrip("?.!") + "!!"  # near-identical
        for message in twin["messages"][:2]:
            message["intent"] = rng.choice(("overdraft_fee", "loan_rate"))
        planted.append(twin)
    found = audit_corpus(planted).intents
    assert found.conflicting >= 1
    assert any("atm_fee" in x["intents"] and "planted-" in x["conversations"]
               for x in found.examples)
    result = analyse_data_consistency(planted, TH)
    assert result.values["conflicting_clusters"] == found.conflicting
    clean = analyse_data_consistency(bundled, TH)
    assert result.values["clusters"] <= clean.values["clusters"] + len(sources)

    # one planted pair per distinct customer turn: every pair is a conflicting cluster
    distinct = {}
    for conv in bundled:
        distinct.setdefault(conv["messages"][0]["content"], conv)
    pairs = []
    for i, conv in enumerate(list(distinct.values())[:30]):
        a, b = copy.deepcopy(conv), copy.deepcopy(conv)
        a["id"], b["id"] = f"a{i}", f"b{i}"
        b["messages"][0]["content"] += " "
        b["messages"][0]["intent"] = b["messages"][1]["intent"] = "planted_label"
        pairs += [{**a, "messages": a["messages"][:2]}, {**b, "messages": b["messages"][:2]}]
    result = analyse_data_consistency(pairs, TH)
    assert result.values["conflicting_clusters"] == result.values["clusters"] >= 25
    assert result.status == "FAIL", result.reason


def test_borderline_small_sample_does_not_fail():
    conversations = [transfer(i, "John", "John") for i in range(11)] + [transfer(11, "John",
                                                                                 "Mary")]
    result = analyse_data_consistency(conversations, TH)
    assert result.values["entity_mismatches"] == 1 and result.values["eligible_exchanges"] == 12
    assert result.values["payee_mismatched"] == 1
    assert result.status == "WARN" and "inconclusive" in result.reason


def test_amounts_not_echoed_by_an_intent_are_not_compared():
    fee = [{"id": f"f{i}", "intent": "atm_fee", "messages": [
        {"role": "customer", "content": f"I took out ${20 * (i + 1)} at an ATM. Any fee?"},
        {"role": "agent", "content": "Other ATMs cost $2.50 per withdrawal."}]} for i in range(30)]
    found = audit_corpus(fee).entities
    assert found.eligible == 0 and found.not_echoing["amount"] == ["atm_fee"]


def test_unlabelled_corpus_skips_the_intent_comparison():
    convs = [transfer(i, "John", "John") for i in range(80)]
    for conv in convs:
        conv.pop("intent")
        for m in conv["messages"]:
            m.pop("intent")
    result = analyse_data_consistency(convs, TH)
    assert result.status == "PASS", result.reason
    assert "clusters" not in result.reason and "intent conflicts not measured" in " ".join(
        result.details["notes"])


def test_cli_audit_names_an_inconclusive_share_and_exits_0(tmp_path, capsys):
    # 2 wrong payees in 20 transfers: 10% with a Wilson interval reaching under the 5% line
    convs = [transfer(i, "John", "Mary" if i < 2 else "John") for i in range(20)]
    assert main(["data", "audit", str(write(tmp_path / "few.jsonl", convs))]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "nothing conclusively above a line; inconclusive: entity mismatch" in out
    assert "nothing above the lines" not in out


def test_cli_audit_exit_codes(bundled, tmp_path, capsys):
    assert main(["data", "audit", str(CORPUS)]) == 0
    assert "nothing above the lines" in capsys.readouterr().out
    bad = write(tmp_path / "wrong.jsonl", wrong_balances(bundled))
    assert main(["data", "audit", str(bad), "--examples", "3"]) == 1
    out = capsys.readouterr().out
    assert "ABOVE a line: exit 1" in out and "check_balance" in out and "Entity mismatches" in out


@pytest.mark.parametrize(("content", "expected"), [
    ('{"id": "a", "messages": [\n', ":1: not valid JSON"),
    (json.dumps({"id": "a", "messages": [{"role": "customer"}]}) + "\n", ":1: field 'messages'"),
    ("", "corpus is empty"),
])
def test_cli_audit_bad_input_is_one_line_and_exit_2(tmp_path, capsys, content, expected):
    data = tmp_path / "bad.jsonl"
    data.write_text(content)
    assert main(["data", "audit", str(data)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and expected in err
    assert str(data) in err


def test_mostly_wrong_answers_that_still_follow_the_question_are_audited(bundled):
    """Past half corrupted, balance answers no longer repeat the asked account most of the
    time, but still conclusively more often than chance: the intent stays in the audit."""
    planted = wrong_balances(bundled, share=0.6)
    found = audit_corpus(planted).entities
    assert "check_balance" not in found.not_echoing["account_type"]
    result = analyse_data_consistency(planted, TH)
    assert result.status == "FAIL" and "intent check_balance:" in result.reason


def test_answers_unrelated_to_the_question_do_not_echo():
    rng = random.Random(0)
    kinds = ("checking", "savings", "credit card")
    independent = [(rng.choice(kinds), {rng.choice(kinds)}) for _ in range(300)]
    assert not audit.echoes(independent)
    following = [(a, {a}) if rng.random() < 0.45 else (a, {rng.choice(kinds)})
                 for a, _ in independent]  # 45% + 55%/3 repeat the question
    assert audit.echoes(following)
    assert not audit.echoes([])
