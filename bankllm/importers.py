"""Import conversations from chat JSONL, CSV or SGD dialogues into the bankllm corpus format.

Each ``import_*`` function reads its inputs, normalises every conversation so that it satisfies
``conversation.schema.json`` (:mod:`bankllm.normalisation`) and returns an
:class:`~bankllm.normalisation.ImportResult`: the records, plus a count of what was dropped
and why.

Malformed input raises :class:`~bankllm.errors.BankLLMError` with a one-line message naming the
file and the record (``file:line`` for JSONL and CSV, ``file: dialogue[i] (id)`` for SGD).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from bankllm.errors import BankLLMError
from bankllm.fileio import atomic_write_jsonl, parse_jsonl
from bankllm.normalisation import (
    SKIP_NON_BANKS,
    SKIP_TOOL,
    ImportResult,
    Message,
    RecordCollector,
)

CHAT_ROLES = {
    "user": "customer", "customer": "customer",
    "assistant": "agent", "agent": "agent",
    "system": "system", "developer": "system",
}
DROPPED_CHAT_ROLES = frozenset({"tool", "function", "ipython"})
SGD_NONE_INTENT = "NONE"

# --------------------------------------------------------------------------- reading


def _as_paths(paths: Iterable[str | Path] | str | Path) -> list[Path]:
    if isinstance(paths, (str, Path)):
        paths = [paths]
    out = [Path(p) for p in paths]
    if not out:
        raise BankLLMError("import: no input paths given")
    return out


def _input_file(path: Path, what: str) -> Path:
    if not path.exists():
        raise BankLLMError(f"{path}: {what} not found")
    if path.is_dir():
        raise BankLLMError(f"{path}: is a folder, not a {what}")
    return path


def _read_text(path: Path, what: str) -> str:
    """The file's text (UTF-8, a BOM removed); an unreadable or blank file is an error."""
    _input_file(path, what)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise BankLLMError(f"{path}: cannot read {what} ({exc.strerror or exc})") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BankLLMError(
            f"{path}: {what} is not UTF-8 text (bad byte at offset {exc.start})"
        ) from None
    if not text.strip():
        raise BankLLMError(f"{path}: {what} is empty")
    return text


def _type_name(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", type(None): "null",
            bool: "a boolean", int: "a number", float: "a number"}.get(type(value), "a value")


def _check_slots(slots: Any, where: str) -> dict[str, Any]:
    if slots is None:
        return {}
    ok = isinstance(slots, dict) and all(
        v is None or (isinstance(v, (str, int, float)) and not isinstance(v, bool))
        for v in slots.values()
    )
    if not ok:
        raise BankLLMError(f"{where}: 'slots' must be an object of string, number or null values")
    return dict(slots)


def _optional_label(value: Any, name: str, where: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise BankLLMError(f"{where}: '{name}' must be a string or null, got {_type_name(value)}")
    return value.strip() or None


# --------------------------------------------------------------------------- chat JSONL


def _chat_content(value: Any, where: str) -> str:
    """A message's text: a string, null (empty), or a list of ``{"type": "text"}`` parts."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        texts = []
        for part in value:
            if isinstance(part, str):
                texts.append(part)
            elif isinstance(part, dict) and isinstance(part.get("text"), str):
                texts.append(part["text"])
            else:
                raise BankLLMError(f"{where}: 'content' list holds a part without text")
        return "\n".join(texts)
    raise BankLLMError(f"{where}: 'content' must be a string, got {_type_name(value)}")


def _chat_record(obj: Any, path: Path, lineno: int, out: RecordCollector) -> None:
    where = f"{path}:{lineno}"
    if not isinstance(obj, dict):
        raise BankLLMError(
            f"{where}: expected an object with a 'messages' list, got {_type_name(obj)}"
        )
    if "messages" not in obj:
        keys = ", ".join(map(repr, obj)) or "none"
        raise BankLLMError(f"{where}: no 'messages' field (keys: {keys})")
    raw = obj["messages"]
    if not isinstance(raw, list):
        raise BankLLMError(f"{where}: 'messages' must be a list, got {_type_name(raw)}")
    messages: list[Message] = []
    for i, msg in enumerate(raw):
        at = f"{where}: messages[{i}]"
        if not isinstance(msg, dict):
            raise BankLLMError(f"{at}: expected an object with 'role' and 'content'")
        role = msg.get("role")
        if isinstance(role, str) and role in DROPPED_CHAT_ROLES:
            out.result.skipped[SKIP_TOOL] += 1
            continue
        if not isinstance(role, str) or role not in CHAT_ROLES:
            known = ", ".join(sorted(CHAT_ROLES))
            raise BankLLMError(f"{at}: unknown role {role!r} (expected one of: {known})")
        new: Message = {"role": CHAT_ROLES[role], "content": _chat_content(msg.get("content"), at)}
        if "intent" in msg:
            new["intent"] = _optional_label(msg["intent"], "intent", at)
        messages.append(new)

    rid = obj.get("id")
    if rid is None:
        rid = f"{path.stem}-{lineno}"
    elif isinstance(rid, int) and not isinstance(rid, bool):
        rid = str(rid)
    elif not isinstance(rid, str) or not rid.strip():
        raise BankLLMError(f"{where}: 'id' must be a non-empty string or an integer")
    meta: dict[str, Any] = {"source": "chat-jsonl", "file": path.name, "line": lineno}
    if isinstance(obj.get("meta"), dict):
        meta["original_meta"] = obj["meta"]
    out.add(
        rid=rid.strip(), intent=_optional_label(obj.get("intent"), "intent", where),
        slots=_check_slots(obj.get("slots"), where), messages=messages, meta=meta, origin=where,
    )


def import_chat_jsonl(paths: Iterable[str | Path] | str | Path) -> ImportResult:
    """Import chat-format JSONL: one ``{"messages": [{"role", "content"}], ...}`` per line.

    Roles user/assistant/system become customer/agent/system; tool messages are dropped and
    counted; a top-level ``id``, ``intent`` or ``slots`` is kept, else id is ``<stem>-<line>``.
    Blank lines are ignored. Raises BankLLMError naming ``file:line`` on malformed input.
    """
    out = RecordCollector()
    for path in _as_paths(paths):
        text = _read_text(path, "chat JSONL file")
        for lineno, obj in parse_jsonl(text, str(path)):
            _chat_record(obj, path, lineno, out)
    return out.result


# --------------------------------------------------------------------------- CSV


def _csv_column(header: list[str], name: str, option: str, path: Path) -> int:
    try:
        return header.index(name)
    except ValueError:
        columns = ", ".join(repr(h) for h in header) or "none"
        raise BankLLMError(
            f"{path}: no column {name!r} (choose one with {option}); its columns are: {columns}"
        ) from None


def import_csv(
    paths: Iterable[str | Path] | str | Path,
    prompt_column: str = "prompt",
    response_column: str = "response",
    intent_column: str | None = None,
) -> ImportResult:
    """Import CSV (TSV for ``.tsv`` files): one customer→agent exchange per data row.

    The first row is the header (names compared after stripping spaces). Quoted newlines and a
    UTF-8 BOM are handled. An empty intent cell gives intent null. Each row's id is
    ``<stem>-<line>`` (the line the row starts on). Raises BankLLMError naming the file (and
    line) for a missing column, a row with the wrong number of fields or broken quoting.
    """
    out = RecordCollector()
    for path in _as_paths(paths):
        text = _read_text(path, "CSV file")
        delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
        reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
        header: list[str] | None = None
        columns: tuple[int, int, int | None] = (0, 0, None)
        n_rows = 0
        while True:
            start = reader.line_num + 1
            try:
                row = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:
                raise BankLLMError(f"{path}:{reader.line_num}: malformed CSV ({exc})") from None
            if not any(cell.strip() for cell in row):
                continue
            if header is None:
                header = [cell.strip() for cell in row]
                columns = (
                    _csv_column(header, prompt_column, "--prompt-column", path),
                    _csv_column(header, response_column, "--response-column", path),
                    None if intent_column is None
                    else _csv_column(header, intent_column, "--intent-column", path),
                )
                continue
            where = f"{path}:{start}"
            if len(row) != len(header):
                raise BankLLMError(
                    f"{where}: row has {len(row)} fields but the header has {len(header)} "
                    "(an unquoted comma or newline?)"
                )
            n_rows += 1
            p_idx, r_idx, i_idx = columns
            out.add(
                rid=f"{path.stem}-{start}",
                intent=None if i_idx is None else (row[i_idx].strip() or None),
                slots={},
                messages=[{"role": "customer", "content": row[p_idx]},
                          {"role": "agent", "content": row[r_idx]}],
                meta={"source": "csv", "file": path.name, "line": start},
                origin=where,
            )
        if header is None:
            raise BankLLMError(f"{path}: CSV file is empty")
        if n_rows == 0:
            raise BankLLMError(f"{path}: CSV file has a header but no data rows")
    return out.result


# --------------------------------------------------------------------------- SGD


def _read_json_file(path: Path, what: str) -> Any:
    """Parse a JSON file; unreadable, blank or invalid JSON is a BankLLMError naming it."""
    text = _read_text(path, what)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise BankLLMError(
            f"{path}:{exc.lineno}: {what} is not valid JSON ({exc.msg} at column {exc.colno})"
        ) from None
    except RecursionError:
        raise BankLLMError(f"{path}: {what} is nested too deeply") from None


def _sgd_sources(paths: list[Path]) -> list[tuple[Path, Path]]:
    """(dialogues file, schema file) pairs for files and folders given; schema.json is skipped."""
    sources: list[tuple[Path, Path]] = []
    for path in paths:
        if not path.exists():
            raise BankLLMError(f"{path}: SGD file or folder not found")
        if path.is_dir():
            files = sorted(p for p in path.glob("dialogues*.json") if p.is_file())
            if not files:
                raise BankLLMError(f"{path}: no dialogues*.json files in this folder")
            schema = path / "schema.json"
        elif path.name == "schema.json":
            continue
        else:
            files, schema = [path], path.parent / "schema.json"
        if not schema.is_file():
            raise BankLLMError(
                f"{schema}: SGD schema not found (it must sit beside the dialogues files; "
                "the importer checks intent names against it)"
            )
        sources += [(f, schema) for f in files if (f, schema) not in sources]
    if not sources:
        raise BankLLMError("import: no SGD dialogues files given (only schema.json?)")
    return sources


def _sgd_schema(path: Path) -> dict[str, set[str]]:
    """Service name → its intent names, from an SGD ``schema.json``."""
    data = _read_json_file(path, "SGD schema")
    if not isinstance(data, list):
        raise BankLLMError(f"{path}: SGD schema must be a list of services")
    services: dict[str, set[str]] = {}
    for i, svc in enumerate(data):
        at = f"{path}: service[{i}]"
        if not isinstance(svc, dict) or not isinstance(svc.get("service_name"), str):
            raise BankLLMError(f"{at}: expected an object with a 'service_name' string")
        intents = svc.get("intents")
        if not isinstance(intents, list) or not all(
            isinstance(it, dict) and isinstance(it.get("name"), str) for it in intents
        ):
            raise BankLLMError(f"{at}: 'intents' must be a list of objects with a 'name'")
        services[svc["service_name"]] = {it["name"] for it in intents}
    return services


def _sgd_slots(values: Any, where: str) -> dict[str, Any]:
    """``{"slot": ["v1", "v2"]}`` → ``{"slot": "v1"}``; empty lists are left out."""
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise BankLLMError(f"{where}: 'slot_values' must be an object")
    slots: dict[str, Any] = {}
    for name, value in values.items():
        if isinstance(value, list):
            if not value:
                continue
            value = value[0]
        if not isinstance(value, str):
            raise BankLLMError(f"{where}: slot {name!r} must hold strings")
        slots[name] = value
    return slots


def _sgd_dialogue(
    dlg: Any, idx: int, path: Path, schema_path: Path, schema: dict[str, set[str]],
    out: RecordCollector,
) -> None:
    where = f"{path}: dialogue[{idx}]"
    if not isinstance(dlg, dict):
        raise BankLLMError(f"{where}: expected an object, got {_type_name(dlg)}")
    did = dlg.get("dialogue_id")
    if not isinstance(did, str) or not did.strip():
        raise BankLLMError(f"{where}: missing 'dialogue_id' string")
    where = f"{path}: dialogue[{idx}] ({did})"
    services = dlg.get("services")
    if not isinstance(services, list) or not services or not all(
        isinstance(s, str) for s in services
    ):
        raise BankLLMError(f"{where}: 'services' must be a non-empty list of names")
    turns = dlg.get("turns")
    if turns is None:
        raise BankLLMError(f"{where}: missing 'turns'")
    if not isinstance(turns, list):
        raise BankLLMError(f"{where}: 'turns' must be a list, got {_type_name(turns)}")
    if not all(s.startswith("Banks") for s in services):
        out.result.skipped[SKIP_NON_BANKS] += 1
        return
    allowed: set[str] = set()
    for s in services:
        if s not in schema:
            raise BankLLMError(f"{where}: service {s!r} is not described in {schema_path}")
        allowed |= schema[s]

    messages: list[Message] = []
    intent: str | None = None
    first_intent: str | None = None
    final_slots: dict[str, Any] = {}
    for t, turn in enumerate(turns):
        at = f"{where}: turn[{t}]"
        if not isinstance(turn, dict):
            raise BankLLMError(f"{at}: expected an object, got {_type_name(turn)}")
        speaker, utterance, frames = turn.get("speaker"), turn.get("utterance"), turn.get("frames")
        if speaker not in ("USER", "SYSTEM"):
            raise BankLLMError(f"{at}: 'speaker' must be USER or SYSTEM, got {speaker!r}")
        if not isinstance(utterance, str):
            raise BankLLMError(f"{at}: missing 'utterance' string")
        if speaker == "SYSTEM":
            messages.append({"role": "agent", "content": utterance, "intent": intent})
            continue
        if not isinstance(frames, list):
            raise BankLLMError(f"{at}: USER turn needs a 'frames' list")
        ours = [f for f in frames if isinstance(f, dict) and f.get("service") in services]
        if not ours:
            raise BankLLMError(f"{at}: USER turn has no frame for {', '.join(services)}")
        states = [f.get("state") for f in ours]
        if not all(isinstance(s, dict) and isinstance(s.get("active_intent"), str)
                   for s in states):
            raise BankLLMError(f"{at}: USER frame needs a 'state' with an 'active_intent'")
        # Prefer the frame whose intent is active (several only with several Banks services).
        state = next((s for s in states if s["active_intent"] != SGD_NONE_INTENT), states[0])
        active = state["active_intent"]
        if active != SGD_NONE_INTENT:
            if active not in allowed:
                known = ", ".join(sorted(allowed)) or "none"
                raise BankLLMError(
                    f"{at}: intent {active!r} is not in {schema_path} (known: {known})"
                )
            intent = active
            first_intent = first_intent or active
        final_slots = _sgd_slots(state.get("slot_values"), at)
        messages.append({"role": "customer", "content": utterance, "intent": intent})

    out.add(
        rid=f"sgd-{did}", intent=first_intent, slots=final_slots, messages=messages,
        meta={"source": "sgd", "dialogue_id": did}, origin=where,
    )


def import_sgd(paths: Iterable[str | Path] | str | Path) -> ImportResult:
    """Import Schema-Guided Dialogue files of the Banks services, checked against schema.json.

    A path is a ``dialogues*.json`` file (``schema.json`` beside it) or a folder holding both.
    Dialogues that involve any non-Banks service are skipped and counted. Each message carries
    the active intent (``NONE`` keeps the previous one; an agent turn gets its customer turn's);
    the conversation's intent is the first active intent and its slots the final state's (first
    value of each). Raises BankLLMError naming the file and ``dialogue[i] (id)`` when malformed.
    """
    out = RecordCollector()
    schemas: dict[Path, dict[str, set[str]]] = {}
    for path, schema_path in _sgd_sources(_as_paths(paths)):
        if schema_path not in schemas:
            schemas[schema_path] = _sgd_schema(schema_path)
        data = _read_json_file(path, "SGD dialogues file")
        if not isinstance(data, list):
            raise BankLLMError(
                f"{path}: expected a list of SGD dialogues, got {_type_name(data)}"
            )
        if not data:
            raise BankLLMError(f"{path}: SGD dialogues file holds no dialogues")
        for idx, dlg in enumerate(data):
            _sgd_dialogue(dlg, idx, path, schema_path, schemas[schema_path], out)
    return out.result


# --------------------------------------------------------------------------- CLI


def cli_import(args: argparse.Namespace) -> int:
    """``bankllm data import``: convert ``args.paths`` to a corpus JSONL at ``args.output``.

    Prints a summary (imported, skipped by reason, intents). Raises BankLLMError when nothing
    is left to import or the output would overwrite an input; writes atomically otherwise.
    """
    importers: dict[str, Callable[[list[Path]], ImportResult]] = {
        "chat-jsonl": import_chat_jsonl,
        "csv": lambda ps: import_csv(
            ps, prompt_column=args.prompt_column, response_column=args.response_column,
            intent_column=args.intent_column,
        ),
        "sgd": import_sgd,
    }
    if args.format not in importers:
        raise BankLLMError(f"import: unknown format {args.format!r}")
    paths = [Path(p) for p in args.paths]
    output = Path(args.output)
    if output.exists() and any(p.exists() and p.resolve() == output.resolve() for p in paths):
        raise BankLLMError(f"{output}: the output file is also an input; choose another -o")
    result = importers[args.format](paths)
    if not result.conversations:
        reasons = "; ".join(f"{r} → {n}" for r, n in sorted(result.skipped.items())) or "none"
        raise BankLLMError(
            f"import: no conversation left to write from {', '.join(map(str, paths))} "
            f"(skipped: {reasons})"
        )
    atomic_write_jsonl(output, result.conversations)
    print(result.summary())
    print(f"wrote {output}")
    return 0
