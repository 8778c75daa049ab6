"""§7 Prompt consistency on the probe sets in ``fixtures/probes`` (``bankllm data synth``):
INV paraphrase groups and MFT novel prompts (``consistency``, judged by an intent classifier
trained on the run's train split) and DIR entity swaps (``faithfulness``, no judge needed).

Answers are generated once per worker for the prompts each test needs (greedy, batched,
bf16 where the run trained in bf16) and shared between the two tests on the same worker.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from diagnostics.analyses.consistency import (
    FAITHFULNESS,
    NAME,
    analyse_consistency,
    analyse_faithfulness,
    collect_responses,
    probe_prompts,
    train_judge,
)
from diagnostics.results import CheckResult

PROBES_DIR = "fixtures/probes"
MAX_NEW_TOKENS = 64
BATCH_SIZE = 128
_ANSWERS: dict[str, str] = {}  # prompt -> answer, per worker (one run per session)


@pytest.fixture(scope="session")
def probes(pytestconfig) -> Any:
    """The probe sets, or None (the checks then SKIP) when the repo has none."""
    from bankllm.errors import BankLLMError
    from bankllm.probes import load_probes

    try:
        return load_probes(pytestconfig.rootpath / PROBES_DIR)
    except BankLLMError:
        return None


def _answers(run: Any, model: Any, prompts: Sequence[str]) -> dict[str, str]:
    """The model's answer to each prompt; prompts answered before on this worker are reused."""
    from bankllm.generation import answers
    from bankllm.precision import run_precision

    todo = [p for p in dict.fromkeys(prompts) if p not in _ANSWERS]
    if todo:
        precision = run_precision(run.metrics, next(model.parameters()).device)
        _ANSWERS.update(collect_responses(todo, lambda ps: answers(
            model, run.tokenizer, ps, max_new_tokens=MAX_NEW_TOKENS, precision=precision,
            batch_size=BATCH_SIZE)))
    return {p: _ANSWERS[p] for p in prompts}


def _no_probes(name: str, used: dict) -> CheckResult:
    where = Path(PROBES_DIR)
    return CheckResult(name, "SKIP", f"no probe sets in {where} (make them with `bankllm data "
                       f"synth --probes-dir {where}`)", {}, used)


def test_consistency(bankllm_run, model, probes, thresholds, diagnose):
    """§7 INV + MFT: paraphrases answered with one intent; unseen phrasings answered right."""
    run = bankllm_run
    used = thresholds.for_check(NAME)
    if probes is None:
        diagnose(_no_probes(NAME, used))
    judge = train_judge(run.split.train, run.split.val, seed=run.config.seed)
    usable = judge.accuracy is not None and judge.accuracy >= used["judge_min_accuracy"]
    answers = _answers(run, model, probe_prompts(probes, ("inv", "mft"))) if usable else {}
    diagnose(analyse_consistency(probes, answers, judge, used))


def test_faithfulness(bankllm_run, model, probes, thresholds, diagnose):
    """§7 DIR: an entity-swapped request is answered about exactly the requested account."""
    used = thresholds.for_check(FAITHFULNESS)
    if probes is None:
        diagnose(_no_probes(FAITHFULNESS, used))
    answers = _answers(bankllm_run, model, probe_prompts(probes, ("dir",)))
    diagnose(analyse_faithfulness(probes, answers, used))
