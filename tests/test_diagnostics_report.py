"""The report: CheckResult JSON, schema-valid diagnostics.json, files, ``bankllm report``."""

from __future__ import annotations

import argparse
import json
import math

import pytest

from bankllm.errors import BankLLMError
from bankllm.fileio import atomic_write_json
from diagnostics import report as rep
from diagnostics.analyses.loss_phases import analyse_loss_phases
from diagnostics.analyses.overfitting import analyse_overfitting
from diagnostics.results import CheckResult, combine, table, tally, worst
from diagnostics.testing import (
    healthy_metrics,
    plant_nonfinite,
    plant_val_rising,
    with_conversation_losses,
)
from diagnostics.thresholds import Thresholds


@pytest.fixture(scope="module")
def report_and_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    metrics = with_conversation_losses(plant_nonfinite(plant_val_rising(healthy_metrics()),
                                                       step=50))
    atomic_write_json(run_dir / "metrics.json", metrics)
    th = Thresholds()
    results = [
        analyse_overfitting(metrics, th.for_check("overfitting")),
        analyse_loss_phases(metrics, th.for_check("loss_phases")),
        CheckResult("memorization", "SKIP", "no model yet"),
        CheckResult("custom_check", "WARN", "a later check with its own table",
                    details={"tables": [table("t", ["a", "b"], [[1, 2.5]], ["WARN"])],
                             "notes": ["a note"]}),
    ]
    return rep.build_report(results, rep.run_summary(run_dir), th.to_dict(), strict=False), run_dir


def test_check_result_round_trip_and_one_line_reason():
    r = CheckResult("x", "WARN", "two\nlines", values={"nan": math.nan, "n": 3},
                    details={"tables": [table("t", ["c"], [[1.5]])]})
    assert r.reason == "two lines"
    back = CheckResult.from_json(r.to_json())
    assert back.values == {"nan": None, "n": 3} and back.details == r.to_dict()["details"]
    with pytest.raises(ValueError):
        CheckResult("x", "MAYBE", "r")
    with pytest.raises(BankLLMError):
        CheckResult.from_dict({"status": "PASS"})
    assert worst(["PASS", "SKIP", "WARN"]) == "WARN" and worst([]) == "SKIP"
    assert tally([r]) == {"PASS": 0, "WARN": 1, "FAIL": 0, "SKIP": 0}


def test_a_reason_of_several_findings_opens_with_the_worst():
    parts = [("SKIP", "exposure not measured"), ("PASS", "a fine"), ("WARN", "b unsure"),
             ("FAIL", "c failed"), ("WARN", "d unsure")]
    assert combine(parts) == ("FAIL", "c failed; b unsure; d unsure; a fine; exposure not measured")
    assert combine([("SKIP", "nothing")]) == ("SKIP", "nothing")


def test_report_json_validates_and_is_ordered(report_and_run):
    report, _ = report_and_run
    rep.validate_report(json.loads(json.dumps(report)), "report")
    assert [c["name"] for c in report["checks"]] == ["loss_phases", "overfitting", "memorization",
                                                     "custom_check"]
    assert report["tally"] == {"PASS": 0, "WARN": 1, "FAIL": 2, "SKIP": 1}
    assert report["overall"] == "FAIL"
    assert report["run"]["curves"]["loss"][49] is None  # the planted NaN step
    assert report["run"]["n_params"] == 1_234_567


def test_schema_rejects_a_bad_status(report_and_run):
    report = json.loads(json.dumps(report_and_run[0]))
    report["checks"][0]["status"] = "MAYBE"
    with pytest.raises(BankLLMError, match="checks/0/status"):
        rep.validate_report(report, "report")


def test_rendered_text_has_every_section(report_and_run):
    text = rep.render_text(report_and_run[0], width=100, color=False)
    for needle in ("1,234,567 params", "step loss (log scale)", "✕", "Per-epoch losses",
                   "Loss phases", "FAIL loss_phases", "SKIP memorization", "a note",
                   "0 PASS  1 WARN  2 FAIL  1 SKIP  → FAIL", "stop at epoch 5"):
        assert needle in text, needle


def test_loss_chart_marks_phase_boundaries():
    steps = list(range(1, 101))
    chart = rep.loss_chart(steps, [5.0 * 0.97**s for s in steps], [40], None, width=60).plain
    assert "┴" in chart and "┊" in chart
    assert "not enough" in rep.loss_chart([1], [1.0]).plain


def test_write_report_writes_its_files_and_cli_rerenders(report_and_run, tmp_path, capsys):
    report, run_dir = report_and_run
    written = rep.write_report(report, tmp_path)
    assert sorted(p.name for p in written) == ["diagnostics.html", "diagnostics.json",
                                               "diagnostics.svg", "loss_curves.png",
                                               "overfitting_gap.png"]
    assert (tmp_path / "loss_curves.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "diagnostics.svg").read_text().lstrip().startswith("<svg")
    assert "Per-epoch losses" in (tmp_path / "diagnostics.html").read_text()
    code = rep.cli_report(argparse.Namespace(run=str(run_dir), report_dir=str(tmp_path)))
    out = capsys.readouterr().out
    assert code == 0 and "verdicts" in out and "overfitting" in out


def test_the_gap_chart_draws_the_intervals_the_overfitting_result_carries(report_and_run):
    report, _ = report_and_run
    check = next(c for c in report["checks"] if c["name"] == "overfitting")
    intervals = check["details"]["rel_gap_ci95"]
    assert len(intervals) == 8 and all(low < high for low, high in intervals)
    bare = json.loads(json.dumps(report))
    next(c for c in bare["checks"] if c["name"] == "overfitting")["details"].pop("rel_gap_ci95")
    with_bars, without = rep.overfitting_gap_png(report), rep.overfitting_gap_png(bare)
    assert with_bars[:4] == without[:4] == b"\x89PNG" and with_bars != without
    # an interval that JSON turned into nulls, or that misses its value, is left out
    odd = json.loads(json.dumps(report))
    gaps = next(c for c in odd["checks"] if c["name"] == "overfitting")["details"]
    gaps["rel_gap_ci95"][:3] = [None, [None, None], [5.0, 6.0]]
    assert rep.overfitting_gap_png(odd)[:4] == b"\x89PNG"


@pytest.mark.parametrize("content, message", [
    (None, "diagnostics report not found"),
    ('{"schema_version": 1', "not valid JSON"),
    ('{"schema_version": 1}', "field '(top level)'"),
])
def test_cli_report_on_missing_or_malformed_json_is_one_line(tmp_path, content, message):
    if content is not None:
        (tmp_path / "diagnostics.json").write_text(content)
    with pytest.raises(BankLLMError) as err:
        rep.cli_report(argparse.Namespace(run=None, report_dir=str(tmp_path)))
    msg = str(err.value)
    assert message in msg and "diagnostics.json" in msg and "pytest diagnostics" in msg
    assert "\n" not in msg


def test_bankllm_report_command_prints_one_error_line(tmp_path, capsys):
    from bankllm.cli import main

    assert main(["report", "--report-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "pytest diagnostics" in err and "\n" not in err


@pytest.fixture
def report_dir_of(report_and_run, tmp_path):
    """A report dir holding the report of ``report_and_run``'s run."""
    reports = tmp_path / "reports"
    atomic_write_json(reports / rep.REPORT_JSON, report_and_run[0])
    return reports


def test_bankllm_report_on_a_missing_run_is_an_error_not_another_runs_report(
        report_dir_of, tmp_path, capsys):
    from bankllm.cli import main

    missing = tmp_path / "runs" / "nope"
    assert main(["report", "--run", str(missing), "--report-dir", str(report_dir_of)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith(f"error: {missing}: no such run directory")
    assert err.count("\n") == 1


def test_bankllm_report_for_another_run_says_whose_report_it_is(report_and_run, report_dir_of,
                                                               tmp_path, capsys):
    from bankllm.cli import main

    other = tmp_path / "other"
    other.mkdir()
    assert main(["report", "--run", str(other), "--report-dir", str(report_dir_of)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1
    assert err == (f"error: {report_dir_of / rep.REPORT_JSON}: this report is for run "
                   f"{report_and_run[1].resolve()}, not {other}; run `pytest diagnostics "
                   f"--run {other}` to diagnose {other}\n")


def test_bankllm_report_without_run_shows_the_report_there(report_and_run, report_dir_of,
                                                           capsys):
    from bankllm.cli import main

    assert main(["report", "--report-dir", str(report_dir_of)]) == 0
    out, err = capsys.readouterr()
    assert err == "" and "note:" not in out and "runs/latest" not in out
    assert f"report for run {report_and_run[1].resolve()}" in " ".join(out.split())
    assert "verdicts" in out


def test_the_regression_headline_shows_the_tolerance_the_verdict_used():
    # the baseline's seed spread (3.13%) widens the 2% tolerance: the summary must show 3.13%
    check = {"name": "regression", "values": {"rel_change": 0.0314, "new": 0.778,
                                              "baseline": 0.754, "tolerance": 0.02,
                                              "effective_tolerance": 0.0313}}
    assert rep.headline_values(check).endswith("; tolerance +3.13%)")
    del check["values"]["effective_tolerance"]
    assert rep.headline_values(check).endswith("; tolerance +2.00%)")
