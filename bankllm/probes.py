"""Load the consistency probe sets (design §7) written by ``bankllm data synth``.

A probes directory holds three JSONL files, one record per line, each validated against its
kind in ``schemas/probes.schema.json``:

* ``inv.jsonl``: paraphrase groups ``{"id", "intent", "entity", "prompts": [...]}``;
* ``dir.jsonl``: entity swaps ``{"id", "intent", "variants": [{"entity", "prompt"} x 3]}``
  (checking, savings, credit card, in that order);
* ``mft.jsonl``: novel prompts ``{"id", "intent", "entity", "prompt"}``.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bankllm.errors import EXIT_USAGE, BankLLMError
from bankllm.fileio import load_schema, parse_records

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


def _load_file(path: Path, schema: dict[str, Any]) -> list[dict[str, Any]]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BankLLMError(
            f"{path}: probe file not found; run `bankllm data synth` to create the probe sets"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BankLLMError(f"{path}: cannot read probe file ({exc})") from None
    return parse_records(text, str(path), schema)


def load_probes(directory: str | Path) -> Probes:
    """Read and validate ``inv.jsonl``, ``dir.jsonl`` and ``mft.jsonl`` from ``directory``.

    Raises :class:`~bankllm.errors.BankLLMError` naming ``file:line`` and the field for a bad
    record, and saying to run ``bankllm data synth`` when the directory or a file is missing.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise BankLLMError(
            f"{directory}: probe directory not found; run `bankllm data synth` "
            f"(--probes-dir {directory}) to create it"
        )
    schema = load_schema("bankllm", "probes.schema.json")
    loaded = {
        kind: _load_file(directory / f"{kind}.jsonl", _kind_schema(schema, kind))
        for kind in PROBE_KINDS
    }
    return Probes(**loaded)


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


def _record_problems(path: Path, text: str, schema: dict[str, Any]) -> tuple[list[str], int]:
    import jsonschema

    validator = jsonschema.Draft202012Validator(schema)
    problems: list[str] = []
    seen: dict[str, int] = {}
    valid = 0
    for lineno, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append(f"{path}:{lineno}: (record): not valid JSON ({exc.msg} at column "
                            f"{exc.colno})")
            continue
        except (ValueError, RecursionError) as exc:
            reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
            problems.append(f"{path}:{lineno}: (record): not valid JSON ({reason})")
            continue
        error = jsonschema.exceptions.best_match(validator.iter_errors(record))
        if error is not None:
            where = "/".join(str(p) for p in error.absolute_path) or "(top level)"
            problems.append(f"{path}:{lineno}: {where}: {error.message}")
            continue
        if record["id"] in seen:
            problems.append(f"{path}:{lineno}: id: duplicate id {record['id']!r} (first on line "
                            f"{seen[record['id']]})")
            continue
        seen[record["id"]] = lineno
        valid += 1
    return problems, valid


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
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            problems.append(f"{path}: file not found; a probe folder holds inv.jsonl, dir.jsonl "
                            "and mft.jsonl (an empty file for a kind you do not use)")
            counts[kind] = 0
            continue
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(f"{path}: cannot read probe file ({exc})")
            counts[kind] = 0
            continue
        found, counts[kind] = _record_problems(path, text, _kind_schema(schema, kind))
        problems += found
    return problems, counts


def cli_check_probes(args: Any) -> int:
    """``bankllm data probes --check DIR``: print one ``error:`` line per bad record and exit
    2, or a one-line summary of the counts and exit 0."""
    problems, counts = check_probes(args.check)
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    if problems:
        return EXIT_USAGE
    print(f"{args.check}: {counts['inv']} INV groups, {counts['dir']} DIR triples, "
          f"{counts['mft']} MFT prompts: all valid")
    return 0
