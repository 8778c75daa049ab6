"""The checks of the suite, found from their modules.

Every public module of :mod:`diagnostics.analyses` that declares ``NAME`` is a check; it also
declares ``ORDER`` (its place in the report), ``DEFAULTS`` (its thresholds section) and,
optionally, ``ORDERED`` (pairs of threshold keys whose values must not decrease). Adding a
check module is all it takes for its name, thresholds and report place to exist
(CONTRIBUTING.md).
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType

from diagnostics import analyses
from diagnostics.analyses._common import EARLY_STOPPING_DEFAULTS

SHARED_SECTIONS: dict[str, dict[str, int | float]] = {"early_stopping": EARLY_STOPPING_DEFAULTS}


def _check_modules() -> tuple[ModuleType, ...]:
    found = []
    for info in pkgutil.iter_modules(analyses.__path__):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{analyses.__name__}.{info.name}")
        if hasattr(module, "NAME"):
            for attr in ("ORDER", "DEFAULTS"):
                if not hasattr(module, attr):
                    raise TypeError(f"check module {module.__name__} declares NAME but no {attr}")
            found.append(module)
    return tuple(sorted(found, key=lambda m: (m.ORDER, m.NAME)))


CHECKS: tuple[ModuleType, ...] = _check_modules()
#: every check's name, in report order (the pytest check is ``test_<name>``)
CHECK_NAMES: tuple[str, ...] = tuple(m.NAME for m in CHECKS)
#: built-in thresholds: the shared sections, then one section per check
DEFAULTS: dict[str, dict[str, int | float]] = {
    **SHARED_SECTIONS, **{m.NAME: dict(m.DEFAULTS) for m in CHECKS}}
#: (section, low key, high key): ``low`` must not exceed ``high``
ORDERED: tuple[tuple[str, str, str], ...] = tuple(
    (m.NAME, low, high) for m in CHECKS for low, high in getattr(m, "ORDERED", ()))
