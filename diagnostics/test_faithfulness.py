"""Faithfulness: DIR entity swaps of ``--probes`` answered about exactly the requested entity
(docs/diagnostics.md)."""

from __future__ import annotations

from diagnostics.analyses._probes import probe_prompts
from diagnostics.analyses.faithfulness import NAME, analyse_faithfulness
from diagnostics.plugin import probes_that_fit


def test_faithfulness(pytestconfig, probes, fitted_probes, probe_answers, thresholds, diagnose):
    """An entity-swapped request is answered about exactly the requested entity."""
    used = thresholds.for_check(NAME)
    kept, skip, note = probes_that_fit(pytestconfig, NAME, probes, fitted_probes, ("dir",), used)
    if skip is not None:
        diagnose(skip)
    result = analyse_faithfulness(kept, probe_answers(probe_prompts(kept, ("dir",))), used)
    if note:
        result.details.setdefault("notes", []).append(note)
    diagnose(result)
