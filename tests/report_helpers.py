"""A realistic diagnostics report built from synthetic results (no model, no training)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bankllm.fileio import atomic_write_json
from diagnostics import report as rep
from diagnostics.analyses.ablation import analyse_ablation
from diagnostics.analyses.initial_loss import analyse_initial_loss
from diagnostics.analyses.loss_phases import analyse_loss_phases
from diagnostics.analyses.overfitting import analyse_overfitting
from diagnostics.analyses.regression import analyse_regression
from diagnostics.decision import decide, rate
from diagnostics.results import CheckResult, table
from diagnostics.testing import healthy_metrics, plant_val_rising, with_conversation_losses
from diagnostics.thresholds import Thresholds


def _summary(name: str, loss: float, epoch: int) -> dict[str, Any]:
    return {"run_name": name, "status": "completed", "best_val_loss": loss, "best_epoch": epoch,
            "epochs_run": 8, "data_sha256": "d" * 64, "eval_hash": "e" * 16,
            "model_hash": "m" * 16, "recipe_hash": "r" * 16,
            "config": {"lr": 3e-4, "epochs": 8, "n_layer": 4},
            "environment": {"precision": "fp32", "device": "cpu", "torch_version": "2.5.1"},
            "trained": "2025-01-01T00:00:00Z"}


def consistency_result() -> CheckResult:
    """A consistency-like result whose value carries a 95% interval, MDE and failures."""
    est = rate([1] * 22 + [0] * 8, [1] * 30, "probe groups")
    verdict = decide(est, pass_line=0.85, fail_line=0.75, higher_is_better=True)
    failures = [{"id": "inv-004", "prompt": "What's the balance on my credit card now?",
                 "expected": "check_balance", "got": "credit_limit"},
                {"id": "inv-009", "prompt": "The $708.00 charge on August 3 isn't mine.",
                 "expected": "dispute_charge", "got": "transfer_money"}]
    return CheckResult(
        "consistency", verdict.status, f"paraphrase consistency {verdict.reason}",
        {**est.values("consistency"), "n_inv_groups": 30},
        {"consistency_pass": 0.85, "consistency_fail": 0.75},
        {"failures": failures,
         "tables": [table("INV failures (first 2)", ["id", "prompt", "expected", "got"],
                          [[f[k] for k in ("id", "prompt", "expected", "got")]
                           for f in failures], ["FAIL", "FAIL"])],
         "notes": ["probe intents come from the bundled templates: accuracy measures "
                   "generalisation across template phrasings"]})


def demo_report(run_dir: Path) -> dict[str, Any]:
    """Write a synthetic run's metrics.json into ``run_dir`` and return a schema-valid report
    of seven checks: initial_loss, loss_phases, overfitting (FAIL), consistency (interval),
    memorization (SKIP), ablation (scaling fit) and regression (vs a baseline)."""
    metrics = with_conversation_losses(plant_val_rising(healthy_metrics()))
    atomic_write_json(Path(run_dir) / "metrics.json", metrics)
    th = Thresholds()
    l100 = metrics["best_val_loss"]
    points = [{"fraction": 0.25, "n_train": 202, "best_val_loss": l100 * 1.9},
              {"fraction": 0.5, "n_train": 405, "best_val_loss": l100 * 1.35}]
    results = [
        analyse_initial_loss(metrics, th.for_check("initial_loss")),
        analyse_loss_phases(metrics, th.for_check("loss_phases")),
        analyse_overfitting(metrics, th.for_check("overfitting")),
        consistency_result(),
        CheckResult("memorization", "SKIP", "no model.safetensors in the run: nothing to "
                    "generate from"),
        analyse_ablation(l100, 810, points, th.for_check("ablation")),
        analyse_regression(_summary("synthetic", l100, metrics["best_epoch"]),
                           _summary("baseline", l100 * 0.99, 5)),
    ]
    return rep.build_report(results, rep.run_summary(run_dir), th.to_dict())
