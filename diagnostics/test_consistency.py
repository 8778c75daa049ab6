"""Prompt consistency: INV paraphrase groups and MFT novel prompts of ``--probes``, judged by
an intent classifier trained on the run's train split (docs/diagnostics.md); with the paired
change against the baseline's outcomes on the same probes (diagnostics.paired)."""

from __future__ import annotations

from diagnostics.analyses._probes import probe_prompts
from diagnostics.analyses.consistency import NAME, analyse_consistency, train_judge
from diagnostics.paired import compare_with_baseline
from diagnostics.plugin import no_probes_result


def test_consistency(pytestconfig, bankllm_run, probes, probe_answers, thresholds,
                     baseline_outcomes, diagnose):
    """Paraphrases answered with one intent; unseen phrasings answered with the right one."""
    run = bankllm_run
    used = thresholds.for_check(NAME)
    if probes is None:
        diagnose(no_probes_result(pytestconfig, NAME, used))
    judge = train_judge(run.split.train, run.split.val, seed=run.config.seed)
    usable = judge.accuracy is not None and judge.accuracy >= used["judge_min_accuracy"]
    answers = probe_answers(probe_prompts(probes, ("inv", "mft"))) if usable else {}
    diagnose(compare_with_baseline(analyse_consistency(probes, answers, judge, used),
                                   baseline_outcomes))
