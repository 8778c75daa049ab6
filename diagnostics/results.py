"""The result of one diagnostic check, and its JSON form.

``details`` carries what the report shows beyond the verdict line. Two keys have a meaning
every renderer understands, so a new check gets a report section without touching report.py:

* ``"tables"``: list of ``{"title": str, "columns": [str], "rows": [[scalar]],
  "row_status": [STATUS | None]}`` (``row_status`` optional; it colours the rows);
* ``"notes"``: list of one-line strings.

Any other key is check-specific data (e.g. ``loss_phases`` stores ``"boundaries"``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bankllm.errors import BankLLMError

STATUSES: tuple[str, ...] = ("PASS", "WARN", "FAIL", "SKIP")
_SEVERITY = {"SKIP": 0, "PASS": 1, "WARN": 2, "FAIL": 3}


def jsonable(value: Any) -> Any:
    """``value`` as plain JSON data: non-finite floats become None, numpy scalars Python ones."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy scalar
        return jsonable(value.item())
    if hasattr(value, "tolist"):  # numpy array
        return jsonable(value.tolist())
    return str(value)


@dataclass
class CheckResult:
    """One check's verdict. ``reason`` is a single line saying what was measured and what to do."""

    name: str
    status: str
    reason: str
    values: dict[str, Any] = field(default_factory=dict)
    thresholds: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {self.status!r}")
        if not self.name:
            raise ValueError("a check needs a name")
        self.reason = " ".join(str(self.reason).split())  # always one line

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data (non-finite numbers become null)."""
        return {
            "name": self.name,
            "status": self.status,
            "reason": self.reason,
            "values": jsonable(self.values),
            "thresholds": jsonable(self.thresholds),
            "details": jsonable(self.details),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, allow_nan=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CheckResult:
        """Inverse of :meth:`to_dict`; a malformed record is a :class:`BankLLMError`."""
        try:
            return cls(
                name=str(data["name"]),
                status=str(data["status"]),
                reason=str(data["reason"]),
                values=dict(data.get("values") or {}),
                thresholds=dict(data.get("thresholds") or {}),
                details=dict(data.get("details") or {}),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise BankLLMError(f"malformed check result ({exc})") from None

    @classmethod
    def from_json(cls, text: str) -> CheckResult:
        return cls.from_dict(json.loads(text))


def table(
    title: str,
    columns: Sequence[str],
    rows: Iterable[Sequence[Any]],
    row_status: Sequence[str | None] | None = None,
) -> dict[str, Any]:
    """A ``details["tables"]`` entry (see the module docstring)."""
    out: dict[str, Any] = {
        "title": title, "columns": list(columns), "rows": [list(r) for r in rows]
    }
    if row_status is not None:
        out["row_status"] = list(row_status)
    return out


def worst(statuses: Iterable[str]) -> str:
    """The overall status: FAIL > WARN > PASS > SKIP (SKIP only when nothing else ran)."""
    return max(statuses, key=lambda s: _SEVERITY[s], default="SKIP")


def combine(parts: Iterable[tuple[str, str]]) -> tuple[str, str]:
    """The status and reason of a check made of several findings ``(status, text)``: the
    worst status, and the texts joined with "; ", the worst findings first (in their order)
    so that a FAIL's reason opens with what failed."""
    parts = list(parts)
    ordered = sorted(parts, key=lambda part: -_SEVERITY[part[0]])
    return worst(s for s, _ in parts), "; ".join(text for _, text in ordered)


def tally(results: Iterable[CheckResult]) -> dict[str, int]:
    """Count of results per status, every status present."""
    counts = dict.fromkeys(STATUSES, 0)
    for r in results:
        counts[r.status] += 1
    return counts
