"""Load the consistency probe sets (design §7) written by ``bankllm data synth``.

A probes directory holds three JSONL files, one record per line, each validated against its
kind in ``schemas/probes.schema.json``:

* ``inv.jsonl``: paraphrase groups ``{"id", "intent", "entity", "prompts": [...]}``;
* ``dir.jsonl``: entity swaps ``{"id", "intent", "variants": [{"entity", "prompt"} x 3]}``
  (checking, savings, credit card, in that order);
* ``mft.jsonl``: novel prompts ``{"id", "intent", "entity", "prompt"}``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bankllm.errors import BankLLMError
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
