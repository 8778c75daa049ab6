"""Faithfulness: DIR entity swaps of ``--probes`` answered about exactly the requested entity
(docs/diagnostics.md); with the paired change against the baseline's outcomes on the same
probes (diagnostics.paired)."""

from __future__ import annotations

from diagnostics.analyses._probes import probe_prompts
from diagnostics.analyses.faithfulness import NAME, analyse_faithfulness
from diagnostics.paired import compare_with_baseline
from diagnostics.plugin import no_probes_result


def test_faithfulness(pytestconfig, probes, probe_answers, thresholds, baseline_outcomes,
                      diagnose):
    """An entity-swapped request is answered about exactly the requested entity."""
    used = thresholds.for_check(NAME)
    if probes is None:
        diagnose(no_probes_result(pytestconfig, NAME, used))
    result = analyse_faithfulness(probes, probe_answers(probe_prompts(probes, ("dir",))), used)
    diagnose(compare_with_baseline(result, baseline_outcomes))
