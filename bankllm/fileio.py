"""Atomic file writes and strict JSON reads: the only way bankllm writes or reads its own files.

A write goes to a temporary file in the same directory, is flushed and fsynced, then renamed
over the target, so a reader (or a crash) sees either the old file or the new one, never half.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from bankllm.errors import BankLLMError


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` to fill a temporary file, fsync it, rename it to ``path``.

    A ``path`` that is an existing folder is a :class:`BankLLMError` (nothing is written).
    """
    path = Path(path)
    if path.is_dir():
        raise BankLLMError(f"{path}: is a folder; give the path of a file to write")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.chmod(tmp, _FILE_MODE)  # mkstemp creates 0600; give the file the usual mode
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def atomic_write_png(path: str | Path, figure: Any) -> Path:
    """Lay out a matplotlib ``figure``, write it atomically as PNG, and close it."""
    import matplotlib.pyplot as plt

    try:
        figure.tight_layout()
        return atomic_write(path, lambda tmp: figure.savefig(tmp, format="png"))
    finally:
        plt.close(figure)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Atomically replace ``path`` with ``data``."""
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Atomically replace ``path`` with ``text`` encoded as UTF-8."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    """Atomically write ``obj`` as indented JSON with a trailing newline."""
    return atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def atomic_write_jsonl(path: str | Path, records: Iterable[Any]) -> Path:
    """Atomically write one compact JSON object per line (stable key order as given)."""
    lines = [json.dumps(r, ensure_ascii=False, separators=(", ", ": ")) for r in records]
    return atomic_write_text(path, "".join(line + "\n" for line in lines))


def read_json(path: str | Path, what: str = "file") -> Any:
    """Read a JSON file; a missing or malformed file is a :class:`BankLLMError` naming it."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BankLLMError(f"{path}: {what} not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BankLLMError(f"{path}: cannot read {what} ({exc})") from None
    return parse_json(text, str(path), what)


def parse_json(text: str, origin: str, what: str = "file") -> Any:
    """``json.loads``; any failure (syntax, a 5,000-digit number, nesting too deep) is a
    :class:`BankLLMError` naming ``origin``, never another exception."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise BankLLMError(f"{origin}:{exc.lineno}: {what} is not valid JSON ({exc.msg})") from None
    except (ValueError, RecursionError) as exc:
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise BankLLMError(f"{origin}: {what} is not valid JSON ({reason})") from None


def _json_line(line: str) -> tuple[Any, str | None]:
    """``(value, None)``, or ``(None, why it is not JSON)`` for one line of JSON Lines."""
    try:
        return json.loads(line), None
    except json.JSONDecodeError as exc:
        return None, f"not valid JSON ({exc.msg} at column {exc.colno})"
    except (ValueError, RecursionError) as exc:  # a 5,000-digit number, deep nesting
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        return None, f"not valid JSON ({reason})"


def parse_jsonl(text: str, origin: str) -> Iterator[tuple[int, Any]]:
    """``(line number, value)`` for every non-blank line of JSON Lines ``text``; a line that is
    not JSON is a :class:`BankLLMError` naming ``origin:line`` (and the column).

    Splits on "\\n" only: ``str.splitlines`` would also split inside JSON strings holding
    U+2028, U+0085 or \\x1c, which ``json.dumps(ensure_ascii=False)`` writes raw.
    """
    for lineno, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        value, problem = _json_line(line)
        if problem is not None:
            raise BankLLMError(f"{origin}:{lineno}: {problem}")
        yield lineno, value


def record_problems(text: str, origin: str, schema: dict[str, Any],
                    check: Callable[[dict[str, Any]], str | None] | None = None
                    ) -> tuple[list[str], list[dict[str, Any]]]:
    """``(problems, valid records)`` of JSON Lines ``text``: one ``origin:line: ...`` line per
    bad record (not JSON, invalid against ``schema`` naming the field, an ``id`` seen before,
    or what ``check`` says of a schema-valid record), and the records with none."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(schema)
    problems: list[str] = []
    records: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    for lineno, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        where = f"{origin}:{lineno}"
        record, problem = _json_line(line)
        if problem is None:
            error = jsonschema.exceptions.best_match(validator.iter_errors(record))
            if error is not None:
                problem = f"field '{_field(error)}': {error.message}"
            elif record["id"] in seen:
                problem = (f"field 'id': duplicate id {record['id']!r} (first on line "
                           f"{seen[record['id']]})")
            elif check is not None:
                problem = check(record)
        if problem is not None:
            problems.append(f"{where}: {problem}")
            continue
        seen[record["id"]] = lineno
        records.append(record)
    return problems, records


def parse_records(text: str, origin: str, schema: dict[str, Any],
                  check: Callable[[dict[str, Any]], str | None] | None = None
                  ) -> list[dict[str, Any]]:
    """The records of JSON Lines ``text``, each valid against ``schema`` (and ``check``) with
    an ``id`` unique in the file; the first bad record is a :class:`BankLLMError` naming
    ``origin:line`` and the field at fault (:func:`record_problems` lists them all)."""
    problems, records = record_problems(text, origin, schema, check)
    if problems:
        more = f" (and {len(problems) - 1} more bad records)" if len(problems) > 1 else ""
        raise BankLLMError(problems[0] + more)
    return records


def _field(error: Any) -> str:
    return "/".join(str(p) for p in error.absolute_path) or "(top level)"


def load_schema(package: str, name: str) -> dict[str, Any]:
    """Load the JSON Schema ``name`` shipped in ``package``'s ``schemas/`` folder."""
    from importlib.resources import files

    return json.loads(files(package).joinpath("schemas", name).read_text(encoding="utf-8"))


def validate_json(obj: Any, schema: dict[str, Any], origin: str) -> None:
    """Validate ``obj`` against ``schema``; the error names ``origin`` and the failing field."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(obj))
    if error is not None:
        raise BankLLMError(f"{origin}: field '{_field(error)}': {error.message}")
