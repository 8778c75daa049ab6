"""Privacy audit: canary exposure and greedy extraction (runs trained with ``canaries > 0``;
that part SKIPs otherwise) and a loss-based membership-inference attack, train against val,
calibrated by the untrained model of the run. The report draws ``canary_exposure.png`` and
``membership_roc.png`` from the result."""

from __future__ import annotations

import time

from diagnostics.analyses.privacy import (
    NAME,
    analyse_privacy,
    member_sample,
    membership_scores,
    score_canaries,
)
from diagnostics.results import CheckResult


def test_privacy(bankllm_run, model, untrained_model, thresholds, diagnose):
    """Exposure of each canary by repetitions, the share extracted verbatim, and the AUC /
    TPR at 1% FPR of telling train conversations from val ones by their loss."""
    from bankllm.canaries import read_canaries
    from bankllm.errors import BankLLMError
    from bankllm.precision import run_precision

    run = bankllm_run
    used = thresholds.for_check(NAME)
    precision = run_precision(run.metrics, next(model.parameters()).device)
    start = time.perf_counter()
    try:
        record = read_canaries(run.path)
    except BankLLMError as exc:
        diagnose(CheckResult(NAME, "FAIL", f"cannot read the run's canaries: {exc}", {}, used))
        return
    scores = (score_canaries(model, run.tokenizer, record, int(used["n_candidates"]), precision)
              if record else None)
    members = member_sample(run.split.train, len(run.split.val), int(used["members_per_val"]),
                            run.config.seed)
    score = lambda convs: membership_scores(  # noqa: E731
        model, untrained_model, run.tokenizer, convs, run.config.block_size, run.config.loss_on,
        precision)
    result = analyse_privacy(scores, record["space_size"] if record else None, score(members),
                             score(run.split.val), used, n_train=len(run.split.train))
    result.values["precision"] = precision
    result.values["seconds"] = time.perf_counter() - start
    diagnose(result)
