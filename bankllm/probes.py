"""Load the consistency probe sets (design §7) written by ``bankllm data synth``.

A probes directory holds three JSONL files, one record per line, each validated against its
kind in ``schemas/probes.schema.json``:

* ``inv.jsonl``: paraphrase groups ``{"id", "intent", "entity", "prompts": [...]}``;
* ``dir.jsonl``: entity swaps ``{"id", "intent", "variants": [{"entity", "prompt",
  "mentions"?}, ...]}``: the same request about two or more entities, each named in answers by
  its ``mentions`` (default: the entity itself; :func:`dir_mentions`);
* ``mft.jsonl``: novel prompts ``{"id", "intent", "entity", "prompt"}``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bankllm.entities import named_entities
from bankllm.errors import EXIT_USAGE, BankLLMError
from bankllm.fileio import load_schema, parse_records, record_problems

PROBE_KINDS: tuple[str, ...] = ("inv", "dir", "mft")
"""The probe kinds, each stored in ``<kind>.jsonl``."""


@dataclass
class Probes:
    """The three probe sets, each a list of validated records in file order."""

    inv: list[dict[str, Any]] = field(default_factory=list)
    dir: list[dict[str, Any]] = field(default_factory=list)
    mft: list[dict[str, Any]] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        """Number of records per kind, e.g. ``{"inv": 30, "dir": 36, "mft": 50}``."""
        return {kind: len(getattr(self, kind)) for kind in PROBE_KINDS}


def _kind_schema(schema: dict[str, Any], kind: str) -> dict[str, Any]:
    return {"$schema": schema.get("$schema"), "$defs": schema["$defs"], "$ref": f"#/$defs/{kind}"}


def _read_probe_file(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BankLLMError(
            f"{path}: probe file not found; a probe folder holds inv.jsonl, dir.jsonl and "
            "mft.jsonl (an empty file for a kind you do not use; `bankllm data synth` writes "
            "the bundled ones)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BankLLMError(f"{path}: cannot read probe file ({exc})") from None


def load_probes(directory: str | Path) -> Probes:
    """Read and validate ``inv.jsonl``, ``dir.jsonl`` and ``mft.jsonl`` from ``directory``.

    Raises :class:`~bankllm.errors.BankLLMError` naming ``file:line`` and the field of the
    first bad record (``bankllm data probes --check DIR`` lists them all), or naming the
    missing directory or file.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise BankLLMError(
            f"{directory}: probe directory not found; it should hold "
            f"{', '.join(f'{k}.jsonl' for k in PROBE_KINDS)} (docs/probes.md; `bankllm data "
            f"synth --probes-dir {directory}` writes the bundled ones)"
        )
    schema = load_schema("bankllm", "probes.schema.json")
    loaded = {}
    for kind in PROBE_KINDS:
        path = directory / f"{kind}.jsonl"
        loaded[kind] = parse_records(_read_probe_file(path), str(path),
                                     _kind_schema(schema, kind), _probe_check())
    return Probes(**loaded)


def dir_mentions(record: dict[str, Any]) -> dict[str, tuple[str, ...]]:
    """``{entity: its mentions}`` of a DIR record, in variant order: how an answer names each
    entity (a variant's ``mentions``, or the entity itself)."""
    return {v["entity"]: tuple(v.get("mentions") or (v["entity"],)) for v in record["variants"]}


def entities_named_in(probes: Probes, texts: Sequence[str]) -> set[str]:
    """The DIR entities of ``probes`` that any of ``texts`` names (by any of their mentions)."""
    mentions: dict[str, set[str]] = {}
    for rec in probes.dir:
        for entity, phrases in dir_mentions(rec).items():
            mentions.setdefault(entity, set()).update(phrases)
    named: set[str] = set()
    for text in texts:
        named.update(named_entities(text, mentions))
        if len(named) == len(mentions):
            break
    return named


def fit_probes(probes: Probes, train_intents: set[str],
               train_entities: set[str] | None = None) -> tuple[Probes, dict[str, int]]:
    """The probes that fit the run, and per kind how many were left out: a probe whose intent
    the training split does not contain, and (with ``train_entities``) a DIR variant whose
    entity it never names, since a model cannot answer about what it never saw; a DIR probe
    left with fewer than two variants is no swap and is left out whole."""
    kept = {kind: [r for r in getattr(probes, kind) if r["intent"] in train_intents]
            for kind in PROBE_KINDS}
    if train_entities is not None:
        dirs = []
        for rec in kept["dir"]:
            variants = [v for v in rec["variants"] if v["entity"] in train_entities]
            if len(variants) >= 2:
                dirs.append({**rec, "variants": variants})
        kept["dir"] = dirs
    left_out = {kind: len(getattr(probes, kind)) - len(kept[kind]) for kind in PROBE_KINDS}
    return Probes(**kept), left_out


def _entity_twice(record: dict[str, Any]) -> str | None:
    """What is wrong with a DIR record naming one entity in two variants, else None."""
    entities = [v["entity"] for v in record.get("variants", [])]
    twice = next((e for e in entities if entities.count(e) > 1), None)
    if twice is None:
        return None
    return (f"field 'variants': entity {twice!r} appears in more than one variant; a DIR "
            "record asks about each entity once")


def _asked(record: dict[str, Any]) -> tuple[str, Any]:
    """``(field, what the record asks)``: two records asking the same are copies."""
    if "variants" in record:
        return "variants", tuple((v["entity"], v["prompt"]) for v in record["variants"])
    if "prompts" in record:
        return "prompts", tuple(sorted(record["prompts"]))
    return "prompt", record["prompt"]


def _probe_check() -> Callable[[dict[str, Any]], str | None]:
    """The record check of one probe file (:func:`bankllm.fileio.record_problems`): an entity
    twice in a DIR record, or a record asking exactly what an earlier one asks; a copy adds
    no evidence, only false confidence to the intervals, which count it as another probe."""
    asked: dict[Any, str] = {}

    def check(record: dict[str, Any]) -> str | None:
        problem = _entity_twice(record)
        if problem is not None:
            return problem
        field, key = _asked(record)
        if key in asked:
            return (f"field '{field}': asks exactly what {asked[key]} asks; a copy adds no "
                    "evidence, only false confidence to the intervals")
        asked[key] = record["id"]
        return None

    return check


def check_probes(directory: str | Path) -> tuple[list[str], dict[str, int]]:
    """Every problem of a probe folder, one ``file:line: field: what`` line per bad record
    (``file: what`` for a missing or unreadable file), and the valid records per kind.
    A missing folder is a :class:`~bankllm.errors.BankLLMError`."""
    directory = Path(directory)
    if not directory.is_dir():
        raise BankLLMError(f"{directory}: probe directory not found; it should hold "
                           f"{', '.join(f'{k}.jsonl' for k in PROBE_KINDS)} (docs/probes.md)")
    schema = load_schema("bankllm", "probes.schema.json")
    problems: list[str] = []
    counts: dict[str, int] = {}
    for kind in PROBE_KINDS:
        path = directory / f"{kind}.jsonl"
        try:
            text = _read_probe_file(path)
        except BankLLMError as exc:
            problems.append(str(exc))
            counts[kind] = 0
            continue
        found, records = record_problems(text, str(path), _kind_schema(schema, kind),
                                         _probe_check())
        problems += found
        counts[kind] = len(records)
    return problems, counts


def cli_check_probes(args: Any) -> int:
    """``bankllm data probes --check DIR``: print one ``error:`` line per bad record and exit
    2, or a one-line summary of the counts and exit 0."""
    problems, counts = check_probes(args.check)
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    if problems:
        return EXIT_USAGE
    print(f"{args.check}: {counts['inv']} INV groups, {counts['dir']} DIR swaps, "
          f"{counts['mft']} MFT prompts: all valid")
    return 0
