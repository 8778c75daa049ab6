"""Tests of bankllm.importers: chat JSONL, CSV and SGD into schema-valid corpus records."""

from __future__ import annotations

import json
import shutil
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bankllm.cli import main
from bankllm.errors import BankLLMError
from bankllm.fileio import load_schema, validate_json
from bankllm.importers import import_chat_jsonl, import_csv, import_sgd
from bankllm.normalisation import (
    SKIP_EMPTY,
    SKIP_NO_EXCHANGE,
    SKIP_NON_BANKS,
    SKIP_TOOL,
    SKIP_TRAILING_CUSTOMER,
    ImportResult,
)

REPO = Path(__file__).resolve().parents[1]
SHARED_SGD = REPO.parent / "shared" / "data" / "sgd-banks"
FIXTURE_SGD = REPO / "fixtures" / "sgd-banks-sample"
SGD_DIR = SHARED_SGD if (SHARED_SGD / "dialogues.json").is_file() else FIXTURE_SGD
SCHEMA = load_schema("bankllm", "conversation.schema.json")


def _assert_valid(result: ImportResult) -> None:
    ids = [c["id"] for c in result.conversations]
    assert len(ids) == len(set(ids)), "ids must be unique"
    for record in result.conversations:
        validate_json(record, SCHEMA, record["id"])
        roles = [m["role"] for m in record["messages"] if m["role"] != "system"]
        assert roles[0] == "customer" and roles[-1] == "agent"
        assert all(a != b for a, b in pairwise(roles)), "roles must alternate"
        assert all(m["role"] != "system" for m in record["messages"][1:])


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def _jsonl(path: Path, objs: list[Any]) -> Path:
    return _write(path, "".join(json.dumps(o) + "\n" for o in objs))


def _sgd_folder(tmp_path: Path, dialogues: list[Any], name: str = "dialogues_001.json") -> Path:
    folder = tmp_path / "sgd"
    folder.mkdir(exist_ok=True)
    shutil.copyfile(SGD_DIR / "schema.json", folder / "schema.json")
    (folder / name).write_text(json.dumps(dialogues), encoding="utf-8")
    return folder


def _sgd_dialogues() -> list[dict[str, Any]]:
    return json.loads((SGD_DIR / "dialogues.json").read_text(encoding="utf-8"))


def _sgd_intents() -> set[str]:
    schema = json.loads((SGD_DIR / "schema.json").read_text(encoding="utf-8"))
    return {i["name"] for svc in schema if svc["service_name"].startswith("Banks")
            for i in svc["intents"]}


# --------------------------------------------------------------------------- chat JSONL


def test_chat_jsonl_roles_ids_and_intents(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "chats.jsonl", [
        {"id": "c1", "intent": "check_balance", "messages": [
            {"role": "system", "content": "You are a bank agent."},
            {"role": "user", "content": "What's my balance?"},
            {"role": "assistant", "content": "Which account?"},
            {"role": "user", "content": "Checking."},
            {"role": "assistant", "content": "You have $12.00."},
        ]},
        {"messages": [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello, how can I help?"},
        ]},
    ])
    result = import_chat_jsonl([path])
    _assert_valid(result)
    first, second = result.conversations
    assert first["id"] == "c1" and first["intent"] == "check_balance"
    assert [m["role"] for m in first["messages"]] == [
        "system", "customer", "agent", "customer", "agent"]
    assert first["messages"][0]["content"] == "You are a bank agent."
    assert second["id"] == "chats-2" and second["intent"] is None
    assert second["meta"] == {"source": "chat-jsonl", "file": "chats.jsonl", "line": 2}
    assert not result.skipped


def test_chat_jsonl_normalisation_is_counted(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "c.jsonl", [
        {"messages": [
            {"role": "user", "content": "Move $5 to savings"},
            {"role": "assistant", "content": "   "},
            {"role": "tool", "content": "{\"ok\": true}"},
            {"role": "assistant", "content": "Done."},
            {"role": "user", "content": "thanks"},
        ]},
        {"messages": [{"role": "user", "content": "hello?"}]},
    ])
    result = import_chat_jsonl(path)
    _assert_valid(result)
    assert len(result.conversations) == 1
    assert [m["content"] for m in result.conversations[0]["messages"]] == [
        "Move $5 to savings", "Done."]
    assert result.skipped == {
        SKIP_EMPTY: 1, SKIP_TOOL: 1, SKIP_TRAILING_CUSTOMER: 2, SKIP_NO_EXCHANGE: 1}


def test_chat_jsonl_bad_line_names_file_and_line(tmp_path: Path) -> None:
    good = {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}
    path = _write(tmp_path / "bad.jsonl", json.dumps(good) + "\n{not json\n")
    with pytest.raises(BankLLMError, match=r"bad\.jsonl:2: not valid JSON"):
        import_chat_jsonl([path])


def test_chat_jsonl_unknown_role_is_an_error(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "r.jsonl", [{"messages": [{"role": "robot", "content": "x"}]}])
    with pytest.raises(BankLLMError, match=r"r\.jsonl:1: messages\[0\]: unknown role 'robot'"):
        import_chat_jsonl([path])


# --------------------------------------------------------------------------- CSV


def test_csv_custom_columns_bom_and_quoted_newlines(tmp_path: Path) -> None:
    text = (
        "\ufeffquestion,answer,label\r\n"
        '"What is my balance?","Which account,\r\nchecking or savings?",check_balance\r\n'
        "Send $20 to Ann,Sent.,\r\n"
    )
    path = _write(tmp_path / "faq.csv", text)
    result = import_csv([path], prompt_column="question", response_column="answer",
                        intent_column="label")
    _assert_valid(result)
    first, second = result.conversations
    assert [m["role"] for m in first["messages"]] == ["customer", "agent"]
    assert first["messages"][1]["content"] == "Which account,\r\nchecking or savings?"
    assert first["intent"] == "check_balance" and second["intent"] is None
    assert (first["id"], second["id"]) == ("faq-2", "faq-4")


def test_csv_missing_column_lists_the_columns(tmp_path: Path) -> None:
    path = _write(tmp_path / "qa.csv", "question,answer\nhi,hello\n")
    with pytest.raises(BankLLMError, match=r"qa\.csv: no column 'prompt'.*'question', 'answer'"):
        import_csv([path])


def test_csv_ragged_row_names_the_line(tmp_path: Path) -> None:
    path = _write(tmp_path / "qa.csv", "prompt,response\nhi,hello\nsend 1,000,done\n")
    with pytest.raises(BankLLMError, match=r"qa\.csv:3: row has 3 fields"):
        import_csv([path])


# --------------------------------------------------------------------------- SGD


def test_sgd_sample_imports_with_schema_intents() -> None:
    raw = _sgd_dialogues()
    result = import_sgd([SGD_DIR])
    _assert_valid(result)
    assert len(result.conversations) == len(raw)
    if SGD_DIR == SHARED_SGD:
        assert len(result.conversations) == 42
        assert sum(len(c["messages"]) for c in result.conversations) == 646
    assert not result.skipped
    intents = _sgd_intents()
    for record, dialogue in zip(result.conversations, raw, strict=True):
        assert record["meta"] == {"source": "sgd", "dialogue_id": dialogue["dialogue_id"]}
        assert record["intent"] in intents
        assert record["slots"] and all(isinstance(v, str) for v in record["slots"].values())
        msgs = record["messages"]
        assert all(m["intent"] in intents for m in msgs)
        for user, agent in zip(msgs[::2], msgs[1::2], strict=True):
            assert agent["intent"] == user["intent"]
    # Per-turn intents change within a dialogue; NONE ("that's all") keeps the previous one.
    assert any(len({m["intent"] for m in c["messages"]}) > 1 for c in result.conversations)


def test_sgd_none_intent_and_non_banks_dialogues(tmp_path: Path) -> None:
    dialogues = _sgd_dialogues()[:2]
    mixed = json.loads(json.dumps(dialogues[0]))
    mixed["dialogue_id"], mixed["services"] = "9_99999", ["Banks_2", "Restaurants_1"]
    dialogues.append(mixed)
    opener = json.loads(json.dumps(dialogues[1]))
    opener["dialogue_id"] = "9_00001"
    opener["turns"][0]["frames"][0]["state"]["active_intent"] = "NONE"
    dialogues.append(opener)
    result = import_sgd(_sgd_folder(tmp_path, dialogues))
    _assert_valid(result)
    assert len(result.conversations) == 3
    assert result.skipped == {SKIP_NON_BANKS: 1}
    last = result.conversations[-1]
    assert last["messages"][0]["intent"] is None and last["messages"][1]["intent"] is None
    assert last["intent"] == last["messages"][2]["intent"] == "CheckBalance"


def test_sgd_unknown_intent_is_an_error(tmp_path: Path) -> None:
    dialogue = _sgd_dialogues()[0]
    dialogue["turns"][0]["frames"][0]["state"]["active_intent"] = "OrderPizza"
    with pytest.raises(BankLLMError, match=r"dialogue\[0\] \(4_00108\): turn\[0\]: intent"):
        import_sgd(_sgd_folder(tmp_path, [dialogue]))


def test_sgd_missing_turns_names_file_and_dialogue(tmp_path: Path) -> None:
    dialogues = _sgd_dialogues()[:2]
    del dialogues[1]["turns"]
    folder = _sgd_folder(tmp_path, dialogues)
    with pytest.raises(BankLLMError, match=r"dialogues_001\.json: dialogue\[1\] \(.+\): missing"):
        import_sgd([folder / "dialogues_001.json"])


def test_sgd_needs_its_schema(tmp_path: Path) -> None:
    path = _write(tmp_path / "dialogues.json", json.dumps(_sgd_dialogues()[:1]))
    with pytest.raises(BankLLMError, match=r"schema\.json: SGD schema not found"):
        import_sgd([path])


# --------------------------------------------------------------------------- empty inputs


@pytest.mark.parametrize("importer, name", [
    (import_chat_jsonl, "empty.jsonl"), (import_csv, "empty.csv"), (import_sgd, "dialogues.json"),
])
def test_empty_input_is_a_clear_error(tmp_path: Path, importer: Any, name: str) -> None:
    path = _write(tmp_path / name, "\n")
    shutil.copyfile(SGD_DIR / "schema.json", tmp_path / "schema.json")
    with pytest.raises(BankLLMError, match=rf"{name.replace('.', '[.]')}: .*empty"):
        importer([path])


def test_csv_header_only_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(BankLLMError, match="no data rows"):
        import_csv([_write(tmp_path / "h.csv", "prompt,response\n")])


# --------------------------------------------------------------------------- CLI


def test_cli_import_writes_valid_corpus(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out" / "sgd.jsonl"
    assert main(["data", "import", "--format", "sgd", str(SGD_DIR), "-o", str(out)]) == 0
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert len(records) == len(_sgd_dialogues())
    for record in records:
        validate_json(record, SCHEMA, record["id"])
    assert f"imported {len(records)} conversations" in capsys.readouterr().out


def test_cli_csv_columns(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = _write(tmp_path / "qa.csv", "q,a\nhi,hello\n")
    out = tmp_path / "qa.jsonl"
    argv = ["data", "import", "--format", "csv", str(path), "-o", str(out),
            "--prompt-column", "q", "--response-column", "a"]
    assert main(argv) == 0
    assert json.loads(out.read_text(encoding="utf-8"))["messages"][1]["content"] == "hello"


def _bad_inputs(tmp_path: Path) -> list[tuple[str, Path, str]]:
    folder = tmp_path / "sgd"
    bad_sgd = _sgd_dialogues()[:1]
    del bad_sgd[0]["turns"]
    _sgd_folder(tmp_path, bad_sgd, name="dialogues.json")
    return [
        ("chat-jsonl", _write(tmp_path / "bad.jsonl", '{"messages": [\n'), "bad.jsonl:1"),
        ("csv", _write(tmp_path / "bad.csv", "text,reply\nhi,hello\n"), "bad.csv"),
        ("sgd", folder / "dialogues.json", "dialogues.json: dialogue[0]"),
        ("chat-jsonl", _write(tmp_path / "empty.jsonl", ""), "empty.jsonl"),
        ("chat-jsonl", _jsonl(tmp_path / "unanswered.jsonl", [
            {"messages": [{"role": "user", "content": "hello?"}]}]), "unanswered.jsonl"),
    ]


def test_cli_malformed_input_exits_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    for fmt, path, named in _bad_inputs(tmp_path):
        out = tmp_path / f"{fmt}.out.jsonl"
        assert main(["data", "import", "--format", fmt, str(path), "-o", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1, err
        assert named in err and "Traceback" not in err
        assert not out.exists()


def test_cli_refuses_to_overwrite_its_input(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = _write(tmp_path / "qa.csv", "prompt,response\nhi,hello\n")
    assert main(["data", "import", "--format", "csv", str(path), "-o", str(path)]) == 2
    assert "also an input" in capsys.readouterr().err


# --------------------------------------------------------------------------- fuzz

_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=4),
    max_leaves=12,
)
_chat_like = st.fixed_dictionaries({"messages": st.lists(st.fixed_dictionaries({
    "role": st.sampled_from(["user", "assistant", "system", "tool", "robot", 3]),
    "content": st.one_of(st.text(max_size=10), st.none(), st.integers()),
}), max_size=5)})


def _sample_bytes(fmt: str) -> bytes:
    if fmt == "sgd":
        return (FIXTURE_SGD / "dialogues.json").read_bytes()
    if fmt == "csv":
        return b'\xef\xbb\xbfprompt,response\r\n"a\r\nb",c\r\nd,"e,f"\r\n'
    line = {"messages": [{"role": "user", "content": "hi"},
                         {"role": "assistant", "content": "hello"}]}
    return (json.dumps(line) + "\n").encode() * 3


def _mutate(draw: st.DrawFn, node: Any) -> Any:
    """``node`` with one randomly chosen descendant replaced by a random value, or deleted."""
    if isinstance(node, list) and node and draw(st.integers(0, 5)):
        i = draw(st.integers(0, len(node) - 1))
        node[i] = _mutate(draw, node[i])
        return node
    if isinstance(node, dict) and node and draw(st.integers(0, 5)):
        key = draw(st.sampled_from(sorted(node)))
        if draw(st.integers(0, 4)) == 0:
            del node[key]
        else:
            node[key] = _mutate(draw, node[key])
        return node
    return draw(_json_values)


@st.composite
def _fuzz_input(draw: st.DrawFn, fmt: str) -> bytes:
    kind = draw(st.sampled_from(["bytes", "truncated", "json", "mutated"]))
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    if kind == "mutated" and fmt == "csv":
        body = draw(st.text(alphabet=',"\n\r\t ab\x00\ufeff', max_size=60))
        return ("prompt,response\n" + body).encode()
    if kind == "truncated":
        sample = _sample_bytes(fmt)
        return sample[: draw(st.integers(0, len(sample)))]
    if kind == "mutated" and fmt == "sgd":
        dialogues = json.loads(_sample_bytes(fmt))[:2]
        for _ in range(draw(st.integers(1, 3))):
            dialogues = _mutate(draw, dialogues)
        return json.dumps(dialogues).encode()
    if kind == "mutated":
        lines = [json.loads(line) for line in _sample_bytes(fmt).splitlines()]
        lines = _mutate(draw, lines)
        if not isinstance(lines, list):
            lines = [lines]
        return "\n".join(json.dumps(line) for line in lines).encode()
    value = draw(st.one_of(_json_values, _chat_like, st.lists(_chat_like, max_size=2)))
    if fmt == "chat-jsonl" and isinstance(value, list):
        return "\n".join(json.dumps(v) for v in value).encode()
    return json.dumps(value).encode()


@pytest.mark.parametrize("fmt", ["chat-jsonl", "csv", "sgd"])
def test_fuzz_ends_in_result_or_bankllm_error(
    fmt: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    folder = tmp_path_factory.mktemp(f"fuzz-{fmt}")
    shutil.copyfile(FIXTURE_SGD / "schema.json", folder / "schema.json")
    target = folder / {"chat-jsonl": "in.jsonl", "csv": "in.csv", "sgd": "dialogues.json"}[fmt]
    importer = {"chat-jsonl": import_chat_jsonl, "csv": import_csv, "sgd": import_sgd}[fmt]

    @settings(max_examples=100, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow])
    @given(data=_fuzz_input(fmt))
    def run(data: bytes) -> None:
        target.write_bytes(data)
        try:
            result = importer([target])
        except BankLLMError as exc:
            message = str(exc)
            assert "\n" not in message
            assert target.name in message or message.startswith("import:")
            return
        assert isinstance(result, ImportResult)
        _assert_valid(result)

    run()
