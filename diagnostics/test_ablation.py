"""half-data ablation: retrain on a stratified half of train (same config, seed, val set,
tokenizer) and compare best val losses; with >= 3 data sizes cached, fit the scaling curve.

The 50% run and ``EM_val`` of both models come from ``diagnostics.ablation_run``, computed
once and cached under ``<run>/ablations/`` (a rerun reads them). Skipped with
``--no-ablation``. The report draws ``scaling_curve.png`` from the result.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from diagnostics.ablation_run import FRACTION, prepare_ablation
from diagnostics.analyses.ablation import NAME, analyse_ablation
from diagnostics.decision import Estimate, ratio_change
from diagnostics.plugin import cores
from diagnostics.results import CheckResult

pytestmark = pytest.mark.optional_section("ablation")


def _paired_change(parent: Path, half: Path) -> Estimate:
    """The half-data model's val loss relative to the parent's, paired over val conversations
    (both scored in fp32 on the same val set)."""
    from bankllm.val_losses import run_val_losses

    base, new = run_val_losses(parent), run_val_losses(half)
    ids = sorted(set(base["loss_sum"]) & set(new["loss_sum"]))
    return ratio_change([new["loss_sum"][i] for i in ids], [base["loss_sum"][i] for i in ids],
                        "val conversations")


def test_ablation(pytestconfig, bankllm_run, thresholds, diagnose):
    """rel_increase = (L50 - L100) / L100 of best val loss, EM_val of both, and the
    data-scaling fit when >= 3 data sizes are cached."""
    from bankllm.ablation import cached_ablations
    from bankllm.errors import BankLLMError

    run = bankllm_run
    used = thresholds.for_check(NAME)
    status = run.metrics.get("status")
    if status != "completed":
        diagnose(CheckResult(NAME, "SKIP", f"the run is {status!r}, not completed: its best val "
                             "loss is not final; finish it before ablating", {}, used))
    try:
        half, em = prepare_ablation(run, threads=cores())
        cached = cached_ablations(run)
    except BankLLMError as exc:
        diagnose(CheckResult(NAME, "FAIL", f"cannot train the {FRACTION:g} ablation: {exc}",
                             {}, used))
        return
    if half.status != "completed":
        diagnose(CheckResult(NAME, "FAIL", f"the {FRACTION:g} ablation did not complete (status "
                             f"{half.status!r}): see {half.path / 'metrics.json'}", {}, used))
    paired = _paired_change(run.path, half.path)
    points = {a.fraction: a for a in cached}
    points[half.fraction] = half
    result = analyse_ablation(
        run.metrics.get("best_val_loss"), len(run.split.train),
        [{"fraction": a.fraction, "n_train": a.n_train, "best_val_loss": a.best_val_loss}
         for a in points.values()],
        used, fraction=FRACTION, em_val=em,
        parent_still_improving=run.metrics.get("best_epoch") == len(run.metrics["epochs"]),
        paired=paired,
    )
    result.values["reused"] = half.reused
    result.values["ablation_train_seconds"] = half.seconds
    result.values["ablation_dir"] = str(half.path)
    if not em:
        result.details.setdefault("notes", []).append(
            "EM_val not compared: the memorization analysis is not available")
    diagnose(result)
