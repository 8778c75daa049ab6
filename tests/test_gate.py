"""``bankllm gate`` (diagnostics.gate) and the regression analysis.

One tiny real run is trained per module; each test copies it and doctors the copy's files
(metrics.json, config.json, split.json) so that they still pass ``read_metrics``.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from bankllm.cli import main
from bankllm.config import TrainConfig, load_config
from bankllm.training import Trainer
from bankllm.val_losses import VAL_LOSSES_FILE, run_val_losses
from diagnostics.analyses.regression import analyse_regression
from diagnostics.gate import SCHEMA_PATH, gate_result, summarize_run
from tests.conftest import make_conversations


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A completed one-epoch run of a 1-layer, 16-wide model (about a second)."""
    root = tmp_path_factory.mktemp("gate")
    corpus = root / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(c) + "\n" for c in make_conversations()))
    cfg = TrainConfig(n_layer=1, n_head=2, n_embd=16, block_size=64, dropout=0.0,
                      data=str(corpus), epochs=1, batch_size=8, micro_batch_size=4, lr=3e-3,
                      min_lr=3e-4, precision="fp32", threads=1)
    assert Trainer(cfg, root / "run", show_progress=False, log=lambda _: None).train() == 0
    return root / "run"


@pytest.fixture
def run(trained: Path, tmp_path: Path) -> Path:
    """A private copy of the trained run."""
    return Path(shutil.copytree(trained, tmp_path / "run"))


@pytest.fixture
def baseline(trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> Path:
    """A baseline written from the trained run with ``bankllm gate --update``."""
    path = tmp_path / "reports" / "baseline.json"
    assert main(["gate", "--run", str(trained), "--baseline", str(path), "--update"]) == 0
    capsys.readouterr()
    return path


def _edit(path: Path, change: Any) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def _worse(factor: float):
    def change(m: dict) -> None:
        for e in m["epochs"]:
            e["val_loss"] *= factor
        m["best_val_loss"] *= factor
    return change


def _plant(run: Path, factor: float) -> None:
    """Make ``run`` ``factor`` times worse on every val conversation: its best val loss and
    the per-conversation summed losses (val_losses.json) that the paired gate compares."""
    _edit(run / "metrics.json", _worse(factor))
    run_val_losses(run)  # computed and cached if not yet

    def change(data: dict) -> None:
        sums = data["per_conversation"]["loss_sum"]
        for key in sums:
            sums[key] *= factor

    _edit(run / VAL_LOSSES_FILE, change)


def _gate(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    code = main(["gate", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def _one_error_line(err: str) -> str:
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err


def test_update_writes_a_schema_valid_baseline(trained, baseline):
    data = json.loads(baseline.read_text())
    jsonschema.Draft202012Validator(json.loads(SCHEMA_PATH.read_text())).validate(data)
    metrics = json.loads((trained / "metrics.json").read_text())
    assert data["best_val_loss"] == metrics["best_val_loss"]
    assert data["best_epoch"] == metrics["best_epoch"] == 1
    assert data["data_sha256"] == metrics["data_sha256"]
    assert data["model_hash"] == TrainConfig(**data["config"]).model_hash()
    assert data["environment"]["precision"] == "fp32"
    assert {"cpu_isa", "cpu_bf16", "torch_version", "platform"} <= set(data["environment"])
    assert [p.name for p in baseline.parent.iterdir()] == ["baseline.json"]  # no temp files


def test_update_is_atomic(run, baseline, capsys, monkeypatch):
    before = baseline.read_bytes()
    _edit(run / "metrics.json", _worse(0.5))

    def crash(src: Any, dst: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr("bankllm.fileio.os.replace", crash)
    code, _, err = _gate(capsys, "--run", str(run), "--baseline", str(baseline), "--update")
    assert code == 2 and "disk full" in _one_error_line(err) and "unchanged" in err
    assert baseline.read_bytes() == before
    assert [p.name for p in baseline.parent.iterdir()] == ["baseline.json"]


def test_update_refuses_an_unfinished_run_unless_forced(run, tmp_path, capsys):
    _edit(run / "metrics.json", lambda m: m.update(status="interrupted"))
    path = tmp_path / "b.json"
    code, _, err = _gate(capsys, "--run", str(run), "--baseline", str(path), "--update")
    assert code == 2 and "interrupted" in _one_error_line(err) and not path.exists()
    code, out, _ = _gate(capsys, "--run", str(run), "--baseline", str(path), "--update", "--force")
    assert code == 0 and "baseline written" in out and path.exists()


def test_equal_run_passes(run, baseline, capsys):
    code, out, err = _gate(capsys, "--run", str(run), "--baseline", str(baseline))
    assert code == 0 and err == ""
    assert "verdict: PASS" in out and "+0.00%" in out and "tolerance" in out


@pytest.mark.parametrize(("factor", "tolerance", "expected"),
                         [(1.05, None, 1), (1.01, None, 0), (1.05, "0.1", 0), (0.9, None, 0)])
def test_worse_run_fails_beyond_tolerance(run, baseline, capsys, factor, tolerance, expected):
    _plant(run, factor)
    extra = ["--tolerance", tolerance] if tolerance else []
    code, out, _ = _gate(capsys, "--run", str(run), "--baseline", str(baseline), *extra)
    assert code == expected
    assert f"{factor - 1:+.2%}" in out
    assert ("verdict: FAIL" in out) == (expected == 1)


def test_mismatched_data_hash_is_refused_and_named(run, baseline, capsys):
    other = "0" * 64
    _edit(run / "metrics.json", lambda m: m.update(data_sha256=other))
    _edit(run / "split.json", lambda s: s.update(data_sha256=other))
    code, out, err = _gate(capsys, "--run", str(run), "--baseline", str(baseline))
    assert code == 2 and "REFUSED" in out
    assert "data hash differs" in _one_error_line(err) and "model config" not in err


def test_mismatched_model_config_is_refused_and_named(run, baseline, capsys):
    _edit(run / "config.json", lambda c: c.update(n_layer=2))
    code, _, err = _gate(capsys, "--run", str(run), "--baseline", str(baseline))
    assert code == 2
    assert "model config differs (n_layer 1 → 2)" in _one_error_line(err)
    assert "data hash" not in err


def test_force_compares_anyway(run, baseline, capsys):
    _plant(run, 1.10)
    _edit(run / "config.json", lambda c: c.update(n_layer=2))
    code, out, _ = _gate(capsys, "--run", str(run), "--baseline", str(baseline), "--force")
    assert code == 1 and "forced: compared although the model config differs" in out


def test_recipe_change_is_compared_not_refused(run, baseline, capsys):
    _edit(run / "config.json", lambda c: c.update(lr=3e-2))
    code, out, _ = _gate(capsys, "--run", str(run), "--baseline", str(baseline))
    assert code == 0 and "recipe differs from the baseline's: lr 0.003 → 0.03" in out


@pytest.mark.parametrize(("content", "expected"), [
    ('{"best_val_loss": ', "not valid JSON"),
    ('{"schema_version": 1}', "is a required property"),
    ("[]", "is not of type 'object'"),
])
def test_malformed_baseline_is_one_error_line(run, tmp_path, capsys, content, expected):
    path = tmp_path / "baseline.json"
    path.write_text(content)
    code, out, err = _gate(capsys, "--run", str(run), "--baseline", str(path))
    assert code == 2 and out == ""
    line = _one_error_line(err)
    assert str(path) in line and expected in line and "--update" in line


def test_baseline_with_a_wrong_value_is_rejected(run, baseline, capsys):
    _edit(baseline, lambda b: b.update(best_val_loss=-1.0))
    code, _, err = _gate(capsys, "--run", str(run), "--baseline", str(baseline))
    assert code == 2 and "best_val_loss" in _one_error_line(err)


def test_missing_baseline_or_run_is_exit_2(run, baseline, tmp_path, capsys):
    code, _, err = _gate(capsys, "--run", str(run), "--baseline", str(tmp_path / "none.json"))
    assert code == 2 and "baseline not found" in _one_error_line(err) and "--update" in err
    code, _, err = _gate(capsys, "--run", str(tmp_path / "nope"), "--baseline", str(baseline))
    assert code == 2 and "no such run" in _one_error_line(err)
    code, _, err = _gate(capsys, "--run", str(run), "--baseline", str(baseline),
                         "--tolerance", "-1")
    assert code == 2 and "--tolerance" in _one_error_line(err)


def test_pytest_check_skips_without_baseline(run, baseline, tmp_path):
    skipped = gate_result(run, tmp_path / "none.json")
    assert skipped.status == "SKIP" and "bankllm gate --run" in skipped.reason
    assert "--update" in skipped.reason
    assert gate_result(run, baseline).status == "PASS"


# --------------------------------------------------------------------------- pure analysis


def test_analysis_notes_environment_and_flags_divergence(trained):
    base = summarize_run(trained)
    run = json.loads(json.dumps(base))
    run["environment"].update(precision="bf16", cpu_bf16="none")
    result = analyse_regression(run, base, 0.02)
    assert result.status == "PASS" and result.values["rel_change"] == 0.0
    assert any("precision fp32 → bf16" in n and "noise" in n for n in result.details["notes"])

    run.update(status="diverged", best_val_loss=None)
    diverged = analyse_regression(run, base, 0.02)
    assert diverged.status == "FAIL" and "diverged" in diverged.reason
    assert json.loads(diverged.to_json())["values"]["new"] is None

    run.update(status="completed", best_val_loss=math.nan)
    assert analyse_regression(run, base, 0.02).status == "FAIL"


def test_forced_run_without_any_val_loss_is_not_called_diverged(trained):
    base = summarize_run(trained)
    run = json.loads(json.dumps(base))
    run.update(status="interrupted", best_val_loss=None, best_epoch=None)
    result = analyse_regression(run, base, 0.02, force=True)
    assert result.status == "FAIL"
    assert "diverged" not in result.reason
    assert "interrupted" in result.reason and "--resume" in result.reason


# --------------------------------------------------------------------------- paired comparison


def _scale_baseline(baseline: Path, factors: Any) -> None:
    """Scale the baseline's per-conversation summed losses: ``factors(i)`` for the i-th id."""
    def change(b: dict) -> None:
        sums = b["per_conversation"]["loss_sum"]
        for i, key in enumerate(sorted(sums)):
            sums[key] *= factors(i)
    _edit(baseline, change)


def test_baseline_records_per_conversation_losses_of_the_best_checkpoint(trained, baseline):
    data = json.loads(baseline.read_text())
    pc = data["per_conversation"]
    split = json.loads((trained / "split.json").read_text())
    assert sorted(pc["loss_sum"]) == sorted(pc["tokens"]) == sorted(split["val"])
    assert pc["precision"] == "fp32" and pc["best_epoch"] == data["best_epoch"]
    # scored as the trainer scores val loss: an fp32 run's total is its best val loss
    total = sum(pc["loss_sum"].values()) / sum(pc["tokens"].values())
    assert total == pytest.approx(data["best_val_loss"], rel=1e-6)
    assert data["split_seed"] == data["config"]["seed"] == 0  # unset: the seed


def test_planted_regression_of_5_percent_on_every_conversation_fails(run, baseline, capsys):
    _scale_baseline(baseline, lambda i: 1 / 1.05)  # the run is 5% worse on every conversation
    code, out, _ = _gate(capsys, "--run", str(run), "--baseline", str(baseline))
    assert code == 1 and "verdict: FAIL" in out and "+5.00%" in out and "paired" in out
    result = gate_result(run, baseline)
    assert result.status == "FAIL" and result.values["comparison"] == "paired"
    assert result.values["rel_change_ci95_low"] > 0.02


def _scaled_summary(trained, factor: float) -> tuple[dict, dict]:
    """(a run summary whose per-conversation val losses are ``factor`` times the baseline's,
    the baseline's summary)."""
    base = summarize_run(trained)
    run = json.loads(json.dumps(base))
    sums = run["per_conversation"]["loss_sum"]
    for key in sums:
        sums[key] *= factor
    return run, base


def test_planted_regression_in_the_run_summary_fails(trained):
    result = analyse_regression(*_scaled_summary(trained, 1.05), 0.02)
    assert result.status == "FAIL" and result.values["rel_change"] == pytest.approx(0.05)
    assert "all of it above the fail line +2.00%" in result.reason


def test_a_much_lower_loss_passes_but_waits_for_the_checks_that_catch_a_broken_eval(trained):
    """A val loss far below the baseline is also what unshifted targets give: the advice to
    re-baseline names the checks that would catch that first."""
    result = analyse_regression(*_scaled_summary(trained, 0.01), 0.02)
    assert result.status == "PASS", result.reason
    assert "improved: once causality, leakage and checkpoint pass, lock the gain in" \
        in result.reason


def test_inconclusive_change_warns_and_exits_0(run, baseline, capsys):
    # half the conversations 25% worse, half 15% better: +2-3% overall, an interval that
    # spans the +2% line over 6 conversations
    _scale_baseline(baseline, lambda i: 1 / 1.25 if i % 2 else 1 / 0.85)
    code, out, err = _gate(capsys, "--run", str(run), "--baseline", str(baseline))
    assert code == 0 and err == ""
    flat = " ".join(out.split())
    assert "verdict: WARN" in flat and "inconclusive" in flat
    assert "as many val conversations would settle it" in flat  # 6 items: about 480x as many
    assert gate_result(run, baseline).status == "WARN"


def test_seed_spread_widens_the_tolerance(trained):
    base = summarize_run(trained)
    run = json.loads(json.dumps(base))
    for key in run["per_conversation"]["loss_sum"]:
        run["per_conversation"]["loss_sum"][key] *= 1.05
    assert analyse_regression(run, base, 0.02).status == "FAIL"
    losses = [1.0, 1.04, 0.96]  # spread (max - min) / mean = 0.08
    base["seed_group"] = {"name": "g", "seeds": [0, 1, 2], "members": ["seed-0", "seed-1",
                          "seed-2"], "best_val_losses": losses, "spread": 0.08,
                          "reference": "seed-0"}
    result = analyse_regression(run, base, 0.02)
    assert result.status == "PASS" and result.values["effective_tolerance"] == 0.08
    assert "seed spread +8.00%" in result.reason
    assert analyse_regression(run, base, 0.1).values["effective_tolerance"] == 0.1


def test_old_baseline_without_per_conversation_losses_compares_unpaired(run, baseline, capsys):
    def old_format(b: dict) -> None:
        for key in ("per_conversation", "split_seed", "seed_group"):
            b.pop(key, None)
        b["config"].pop("split_seed", None)
    _edit(baseline, old_format)
    code, out, _ = _gate(capsys, "--run", str(run), "--baseline", str(baseline))
    assert code == 0 and "verdict: PASS" in out and "unpaired" in out
    assert "no per-conversation val losses" in out
    _plant(run, 1.05)
    code, out, _ = _gate(capsys, "--run", str(run), "--baseline", str(baseline))
    assert code == 1 and "+5.00% (unpaired" in out


def test_committed_baseline_is_still_valid():
    from diagnostics.gate import read_baseline

    reports = Path(__file__).resolve().parents[1] / "reports"
    for name in ("baseline.json", "baseline-ci.json"):
        data = read_baseline(reports / name)
        # per-conversation val losses: the gate compares paired, not by the unpaired fallback
        per = data["per_conversation"]
        assert set(per["loss_sum"]) == set(per["tokens"]) and len(per["tokens"]) > 1
        pooled = sum(per["loss_sum"].values()) / sum(per["tokens"].values())
        assert pooled == pytest.approx(data["best_val_loss"], rel=0.02)  # rescored in fp32


@pytest.mark.parametrize(("name", "recipe"), [("baseline.json", None),
                                              ("baseline-ci.json", "configs/ci.toml")])
def test_committed_baseline_is_of_the_recipe_it_stands_for(name, recipe):
    """A changed default (or configs/ci.toml) without a regenerated baseline would gate every
    run against another recipe's loss."""
    from diagnostics.analyses.regression import NON_RECIPE_KEYS, SEED_KEYS
    from diagnostics.gate import read_baseline

    root = Path(__file__).resolve().parents[1]
    stored = read_baseline(root / "reports" / name)["config"]
    expected = load_config(root / recipe if recipe else None).to_dict()
    differ = {k: (stored.get(k), v) for k, v in expected.items()
              if k not in (*NON_RECIPE_KEYS, *SEED_KEYS) and stored.get(k) != v}
    assert differ == {}, f"reports/{name} (stored, expected): {differ}"


def test_other_training_seed_on_the_same_split_is_compared_not_refused(trained, baseline,
                                                                       capsys):
    cfg = TrainConfig(**{**json.loads((trained / "config.json").read_text()),
                         "seed": 1, "split_seed": 0})
    other = trained.parent / "seed-1"
    if not other.exists():
        assert Trainer(cfg, other, show_progress=False, log=lambda _: None).train() == 0
    assert summarize_run(other)["eval_hash"] == json.loads(baseline.read_text())["eval_hash"]
    code, out, err = _gate(capsys, "--run", str(other), "--baseline", str(baseline))
    assert code == 0 and err == "" and "REFUSED" not in out
    assert "verdict: PASS" in out or "verdict: WARN" in out
    assert "recipe differs" not in out  # the training seed is not a recipe change


# --------------------------------------------------------------------------- check outcomes

OUTCOMES = {
    "faithfulness": {"identity": "0123456789abcdef",
                     "dir": {"dir-000/checking": 1, "dir-000/savings": 0}},
    "memorization": {"identity": "fedcba9876543210",
                     "val": {"c1": [1, 2]}, "train": {"c2": [2, 2]}},
}


def _report(path: Path, run_path: Path | str, created: str = "2999-01-01T00:00:00+00:00",
            group: dict | None = None, member: str | None = None) -> Path:
    """A minimal diagnostics report of ``run_path`` holding OUTCOMES (under ``member`` of a
    seed group's pooled results when given)."""
    checks = []
    for name, outcomes in OUTCOMES.items():
        details: dict[str, Any] = {"outcomes": outcomes}
        if member is not None:
            details = {"members": {member: {"name": name, "details": details}}}
        checks.append({"name": name, "status": "PASS", "reason": "", "details": details})
    run: dict[str, Any] = {"path": str(run_path)}
    if group is not None:
        run["group"] = group
    path.write_text(json.dumps({"created": created, "run": run, "checks": checks}))
    return path


def test_update_copies_the_check_outcomes_of_a_report_of_the_same_run(run, tmp_path, capsys):
    from diagnostics.gate import read_baseline, read_check_outcomes

    report = _report(tmp_path / "diagnostics.json", run.resolve())
    path = tmp_path / "b.json"
    code, out, _ = _gate(capsys, "--run", str(run), "--baseline", str(path), "--update",
                         "--report", str(report))
    assert code == 0 and "probe outcomes of faithfulness, memorization copied" in out
    data = read_baseline(path)  # schema-checked
    assert data["check_outcomes"] == OUTCOMES
    assert data["check_outcomes_report"]["path"] == str(report)
    assert read_check_outcomes(path) == OUTCOMES


@pytest.mark.parametrize("why", ["another run", "no report", "stale"])
def test_update_without_a_report_of_the_run_says_so_in_one_line(run, tmp_path, capsys, why):
    from diagnostics.gate import read_baseline

    report = tmp_path / "diagnostics.json"
    if why == "another run":
        _report(report, tmp_path / "other-run")
        expected = "report of another run"
    elif why == "stale":
        _report(report, run.resolve(), created="2000-01-01T00:00:00+00:00")
        expected = "older than the run"
    else:
        expected = "no diagnostics report at"
    path = tmp_path / "b.json"
    code, out, _ = _gate(capsys, "--run", str(run), "--baseline", str(path), "--update",
                         "--report", str(report))
    assert code == 0 and "check_outcomes" not in read_baseline(path)
    lines = [ln for ln in out.splitlines() if "probe comparison" in ln]
    assert len(lines) == 1 and expected in lines[0]
    assert f"pytest diagnostics --run {run}" in lines[0] and "unavailable" in lines[0]


def test_a_group_report_gives_the_reference_members_outcomes(tmp_path):
    from diagnostics.gate import report_outcomes

    group = tmp_path / "g"
    report = _report(tmp_path / "r.json", group / "seed-0",
                     group={"path": str(group.resolve()), "members": ["seed-0", "seed-1"]},
                     member="seed-1")
    got, why = report_outcomes(report, group, "2020-01-01T00:00:00Z", reference="seed-1")
    assert got == OUTCOMES and why == ""
    got, why = report_outcomes(report, group, "2020-01-01T00:00:00Z", reference="seed-2")
    assert got is None and "no outcomes" in why
    got, why = report_outcomes(report, tmp_path / "h", "2020-01-01T00:00:00Z",
                               reference="seed-1")
    assert got is None and "another run" in why


def test_old_missing_or_malformed_baselines_have_no_check_outcomes(baseline, tmp_path):
    from diagnostics.gate import read_check_outcomes

    # the committed baseline as it was before check outcomes existed: the field left out
    committed = json.loads(
        (Path(__file__).resolve().parents[1] / "reports" / "baseline.json").read_text())
    committed.pop("check_outcomes", None)
    committed.pop("check_outcomes_report", None)
    old = tmp_path / "old.json"
    old.write_text(json.dumps(committed))
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    for path in (old, baseline, tmp_path / "missing.json", bad):
        assert read_check_outcomes(path) is None
