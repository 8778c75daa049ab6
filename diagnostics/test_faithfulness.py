"""Faithfulness: DIR entity swaps of ``--probes`` answered about exactly the requested entity
(docs/diagnostics.md)."""

from __future__ import annotations

from diagnostics.analyses._probes import probe_prompts
from diagnostics.analyses.faithfulness import NAME, analyse_faithfulness
from diagnostics.plugin import no_probes_result


def test_faithfulness(pytestconfig, probes, probe_answers, thresholds, diagnose):
    """An entity-swapped request is answered about exactly the requested entity."""
    used = thresholds.for_check(NAME)
    if probes is None:
        diagnose(no_probes_result(pytestconfig, NAME, used))
    diagnose(analyse_faithfulness(probes, probe_answers(probe_prompts(probes, ("dir",))), used))
