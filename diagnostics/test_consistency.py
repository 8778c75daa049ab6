"""Prompt consistency: INV paraphrase groups and MFT novel prompts of ``--probes``, judged by
an intent classifier trained on the run's train split (docs/diagnostics.md); with the paired
change against the baseline's outcomes on the same probes (diagnostics.paired)."""

from __future__ import annotations

from diagnostics.analyses._probes import probe_prompts
from diagnostics.analyses.consistency import NAME, analyse_consistency, train_judge
from diagnostics.paired import compare_with_baseline
from diagnostics.plugin import probes_that_fit


def test_consistency(pytestconfig, bankllm_run, probes, fitted_probes, probe_answers, thresholds,
                     baseline_outcomes, diagnose):
    """Paraphrases answered with one intent; unseen phrasings answered with the right one."""
    run = bankllm_run
    used = thresholds.for_check(NAME)
    kept, skip, note = probes_that_fit(pytestconfig, NAME, probes, fitted_probes, ("inv", "mft"),
                                       used)
    if skip is not None:
        diagnose(skip)
    judge = train_judge(run.split.train, run.split.val, seed=run.config.seed)
    usable = judge.accuracy is not None and judge.accuracy >= used["judge_min_accuracy"]
    answers = probe_answers(probe_prompts(kept, ("inv", "mft"))) if usable else {}
    result = analyse_consistency(kept, answers, judge, used)
    if note:
        result.details.setdefault("notes", []).append(note)
    diagnose(compare_with_baseline(result, baseline_outcomes))
