"""Thresholds of the diagnostics: built-in defaults, the repo's pyproject table, a TOML override.

Precedence: built-in defaults (each check module's ``DEFAULTS``) < ``[tool.bankllm.diagnostics]``
in the repo's ``pyproject.toml`` < ``pytest diagnostics --thresholds FILE``. Both TOML sources
use one section per check, written as dotted keys or tables::

    overfitting.rel_gap_pass = 0.10      # or  [overfitting]  rel_gap_pass = 0.10

An override file may also be a whole pyproject.toml (its ``[tool.bankllm.diagnostics]`` is used).
Besides the sections, a source may name the probe folder of the probe checks, ``probes =
"DIR"`` (relative to the file that sets it); ``pytest diagnostics --probes DIR`` overrides it.
Unknown sections or keys are errors that list the valid keys. The built-in defaults come from
the check modules (:mod:`diagnostics.registry`): a new check's section exists once its module
declares ``DEFAULTS``.
"""

from __future__ import annotations

import copy
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bankllm.errors import BankLLMError
from diagnostics.registry import DEFAULTS, ORDERED

Number = int | float
PROBES_KEY = "probes"

def valid_keys() -> list[str]:
    """Every ``section.key`` a thresholds source may set."""
    return [f"{s}.{k}" for s, keys in DEFAULTS.items() for k in keys]


@dataclass
class Thresholds:
    """Resolved thresholds, per check section, and where they came from."""

    values: dict[str, dict[str, Number]] = field(default_factory=lambda: copy.deepcopy(DEFAULTS))
    sources: list[str] = field(default_factory=lambda: ["built-in defaults"])
    probes: Path | None = None  # the probe folder a source names (``probes = "DIR"``), if any

    def for_check(self, name: str) -> dict[str, Number]:
        """Flat thresholds of check ``name``: the shared early-stopping keys plus its own."""
        if name not in self.values:
            raise KeyError(f"no thresholds section '{name}'")
        return {**self.values["early_stopping"], **self.values[name]}

    def to_dict(self) -> dict[str, Any]:
        return {"sources": list(self.sources), "values": copy.deepcopy(self.values)}

    def update(self, table: dict[str, Any], origin: str, base: Path | None = None) -> None:
        """Apply a ``{section: {key: number}}`` table (and its ``probes`` folder, relative to
        ``base``); unknown keys and bad values are errors."""
        if not isinstance(table, dict):
            raise BankLLMError(f"{origin}: expected a table of threshold sections")
        valid = ", ".join(valid_keys())
        sections = ", ".join(DEFAULTS)
        for section, keys in table.items():
            if section == PROBES_KEY:
                self.probes = _probe_folder(keys, origin, base)
                continue
            if not isinstance(keys, dict) and section in DEFAULTS:
                own = ", ".join(f"{section}.{k}" for k in DEFAULTS[section])
                raise BankLLMError(
                    f"{origin}: '{section}' is a threshold section, not a value: set its keys "
                    f"as {section}.KEY = number; valid keys: {own}"
                )
            if not isinstance(keys, dict):
                raise BankLLMError(
                    f"{origin}: unknown top-level key '{section}' (thresholds are written "
                    f"section.key = number; sections: {sections}; or probes = \"DIR\"); valid "
                    f"keys: {valid}"
                )
            if section not in DEFAULTS:
                raise BankLLMError(
                    f"{origin}: unknown threshold section '{section}' (sections: {sections}); "
                    f"valid keys: {valid}"
                )
            for key, value in keys.items():
                if key not in DEFAULTS[section]:
                    raise BankLLMError(
                        f"{origin}: unknown threshold '{section}.{key}'; valid keys: {valid}"
                    )
                self.values[section][key] = _check_value(section, key, value, origin)
        for section, low, high in ORDERED:
            if self.values[section][low] > self.values[section][high]:
                raise BankLLMError(f"{origin}: {section}.{low} must be <= {section}.{high}")
        self.sources.append(origin)


def _probe_folder(value: Any, origin: str, base: Path | None) -> Path:
    if not isinstance(value, str) or not value.strip():
        raise BankLLMError(f"{origin}: {PROBES_KEY} must be the path of a probe folder (a "
                           f"string, e.g. {PROBES_KEY} = \"my-probes\"), got {value!r}")
    path = Path(value)
    return path if path.is_absolute() or base is None else base / path


def _check_value(section: str, key: str, value: Any, origin: str) -> Number:
    default = DEFAULTS[section][key]
    name = f"{section}.{key}"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BankLLMError(f"{origin}: {name} must be a number, got {value!r}")
    if isinstance(default, int):
        if not isinstance(value, int) and not float(value).is_integer():
            raise BankLLMError(f"{origin}: {name} must be an integer, got {value!r}")
        value = int(value)
        if value < 1:
            raise BankLLMError(f"{origin}: {name} must be >= 1, got {value}")
        return value
    if not value >= 0 or value == float("inf"):
        raise BankLLMError(f"{origin}: {name} must be a finite number >= 0, got {value!r}")
    return float(value)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BankLLMError(f"{path}: thresholds file not found") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise BankLLMError(f"{path}: not valid TOML ({exc})") from None


def _pyproject_table(raw: dict[str, Any]) -> dict[str, Any] | None:
    table = raw.get("tool", {}).get("bankllm", {}).get("diagnostics")
    return table if isinstance(table, dict) else None


def load_thresholds(
    pyproject: str | Path | None = None, override: str | Path | None = None
) -> Thresholds:
    """Defaults, then ``pyproject``'s ``[tool.bankllm.diagnostics]`` (if the file and table
    exist), then the ``override`` TOML file (which must exist)."""
    th = Thresholds()
    if pyproject is not None and Path(pyproject).is_file():
        table = _pyproject_table(_read_toml(Path(pyproject)))
        if table:
            th.update(table, f"{pyproject} [tool.bankllm.diagnostics]", Path(pyproject).parent)
    if override is not None:
        raw = _read_toml(Path(override))
        table = _pyproject_table(raw)
        th.update(table if table is not None else raw, str(override), Path(override).parent)
    return th
