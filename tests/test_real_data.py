"""Real data end to end: import the SGD banking sample, train a tiny model, diagnose it."""

import json
from pathlib import Path

import pytest

from bankllm.cli import main
from tests.test_diagnostics_plugin import run_diagnostics

REPO = Path(__file__).resolve().parents[1]
SHARED_SGD = REPO.parent / "shared" / "data" / "sgd-banks"
SGD = SHARED_SGD if SHARED_SGD.is_dir() else REPO / "fixtures" / "sgd-banks-sample"


@pytest.mark.slow
def test_sgd_sample_imports_trains_and_is_diagnosed(tmp_path, capsys):
    corpus = tmp_path / "sgd.jsonl"
    assert main(["data", "import", "--format", "sgd", str(SGD), "-o", str(corpus)]) == 0
    n = len(corpus.read_text().splitlines())
    assert n >= 8
    assert main(["data", "stats", str(corpus)]) == 0
    assert "unk_rate" in capsys.readouterr().out
    code = main(
        [
            "train",
            "--data",
            str(corpus),
            "--runs-dir",
            str(tmp_path / "runs"),
            "--name",
            "sgd",
            "--quiet",
            "--set",
            "n_layer=1",
            "--set",
            "n_head=2",
            "--set",
            "n_embd=32",
            "--set",
            "epochs=2",
            "--set",
            "batch_size=8",
            "--set",
            "precision=fp32",
            "--set",
            "min_freq=2",
        ]
    )
    assert code == 0
    metrics = json.loads((tmp_path / "runs" / "sgd" / "metrics.json").read_text())
    assert metrics["n_train"] + metrics["n_val"] == n and 0 <= metrics["unk_rate_val"] < 1
    reports = tmp_path / "reports"
    proc = run_diagnostics("-q", "--run", str(tmp_path / "runs" / "sgd"), "--report-dir",
                           str(reports), "--no-ablation", timeout=240)
    assert proc.returncode in (0, 1), proc.stdout[-3000:] + proc.stderr[-2000:]  # FAILs allowed
    assert "Traceback" not in proc.stdout
    report = json.loads((reports / "diagnostics.json").read_text())
    checks = {c["name"]: c for c in report["checks"]}
    assert {
        "initial_loss",
        "loss_phases",
        "overfitting",
        "leakage",
        "memorization",
        "consistency",
        "faithfulness",
        "ablation",
        "regression",
    } <= set(checks)
    for check in checks.values():  # each computed, or skipped with a reason
        assert check["status"] in ("PASS", "WARN", "FAIL", "SKIP") and check["reason"]
    assert checks["ablation"]["status"] == "SKIP"
    for name in ("diagnostics.svg", "diagnostics.html", "loss_curves.png"):
        assert (reports / name).exists()
