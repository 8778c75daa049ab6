"""The pytest plugin, run for real: ``pytest diagnostics --run ...``.

Whole sessions run in a subprocess (marked ``slow``). The usage errors, which stop a session
before any check runs, go through ``pytest.main`` in this process (:func:`diagnostics_main`);
one of them, a missing run, also through a subprocess, to see the real command's stderr.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bankllm.fileio import atomic_write_json
from diagnostics.registry import CHECK_NAMES
from diagnostics.testing import healthy_metrics, plant_val_rising

REPO = Path(__file__).resolve().parents[1]


# hypothesis's pytest plugin (a dev dependency, for the unit tests) costs each session almost
# 2 s of imports that the diagnostics never use
SESSION_OPTIONS = ("-p", "no:cacheprovider", "-p", "no:hypothesispytest")


def run_diagnostics(*args: str, pythonpath: Path | None = None,
                    timeout: float = 120) -> subprocess.CompletedProcess:
    """``pytest diagnostics ARGS`` in a subprocess, one torch thread, 100 columns."""
    env = dict(os.environ, OMP_NUM_THREADS="1", COLUMNS="100")
    if pythonpath is not None:  # e.g. for a -p plugin of the test
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(pythonpath),
                                                          env.get("PYTHONPATH")]))
    env.pop("PYTEST_XDIST_WORKER", None)
    env.pop("PYTEST_XDIST_WORKER_COUNT", None)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "diagnostics", *SESSION_OPTIONS, *args],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout,
    )


def diagnostics_main(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                     *args: str) -> subprocess.CompletedProcess:
    """``pytest diagnostics ARGS`` as :func:`run_diagnostics` runs it, but through
    ``pytest.main`` in this process: no interpreter start and no imports to repeat (seconds
    per call). For sessions that stop at a usage error, before any check runs."""
    monkeypatch.chdir(REPO)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("COLUMNS", "100")
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    monkeypatch.delenv("PYTEST_XDIST_WORKER_COUNT", raising=False)
    capsys.readouterr()
    code = pytest.main(["diagnostics", "-p", "no:cacheprovider", *args])
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(["pytest", "diagnostics", *args], int(code), out, err)


def fake_run(tmp_path: Path, metrics: dict) -> Path:
    run = tmp_path / "run"
    atomic_write_json(run / "metrics.json", metrics)
    return run


def test_unit_tests_do_not_load_the_plugin(pytestconfig):
    assert not hasattr(pytestconfig.option, "bankllm_run")
    assert pytestconfig.pluginmanager.get_plugin("bankllm-diagnostics-report") is None


def test_missing_run_is_a_one_line_usage_error(tmp_path, monkeypatch, capsys):
    proc = run_diagnostics("--run", str(tmp_path / "missing"))
    assert proc.returncode == 4, proc.stdout + proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert "no training run at" in lines[0] and "tox -e train" in lines[0]
    assert "bankllm train" in lines[0] and "Traceback" not in proc.stdout + proc.stderr
    # the in-process session of the other usage-error tests ends exactly as the command does
    inproc = diagnostics_main(monkeypatch, capsys, "--run", str(tmp_path / "missing"))
    assert (inproc.returncode, inproc.stderr) == (proc.returncode, proc.stderr)


def test_unknown_threshold_is_a_usage_error(tmp_path, monkeypatch, capsys):
    th = tmp_path / "th.toml"
    th.write_text("leakage.near = 90\n")
    run = fake_run(tmp_path, healthy_metrics())
    proc = diagnostics_main(monkeypatch, capsys, "--run", str(run), "--thresholds", str(th))
    assert proc.returncode == 4
    assert "unknown threshold 'leakage.near'; valid keys:" in proc.stderr


@pytest.mark.slow
def test_planted_fault_fails_the_session_and_writes_the_report(tmp_path):
    """Under pytest-xdist: the controller merges the CheckResults of both workers."""
    run = fake_run(tmp_path, plant_val_rising(healthy_metrics()))
    reports = tmp_path / "reports"
    proc = run_diagnostics("--run", str(run), "--report-dir", str(reports), "-n", "2", "-k",
                           "overfitting or initial_loss")
    out = proc.stdout
    assert proc.returncode == 1, out + proc.stderr
    assert "FAIL overfitting" in out and "stop at epoch 5" in out and "1 PASS" in out
    assert sorted(p.name for p in reports.iterdir()) == [
        "diagnostics.html", "diagnostics.json", "diagnostics.svg", "loss_curves.png",
        "overfitting_gap.png"]
    report = json.loads((reports / "diagnostics.json").read_text())
    assert {c["name"]: c["status"] for c in report["checks"]} == {
        "initial_loss": "PASS", "overfitting": "FAIL"}


@pytest.mark.slow
@pytest.mark.slow
def test_a_train_eval_drawn_from_val_fails_overfitting_from_split_json(tmp_path):
    """The pytest check reads split.json's ids (no model needed): train_eval drawn from val
    FAILs whatever the gap; a split.json without its id lists is one clear error."""
    run = fake_run(tmp_path, healthy_metrics())
    ids = {"train": [f"c{i}" for i in range(8)], "val": ["c8", "c9"]}
    atomic_write_json(run / "split.json", {**ids, "train_eval": ["c8", "c9"]})
    proc = run_diagnostics("--run", str(run), "-k", "overfitting")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "train_eval holds 2 of its 2 conversations outside train" in proc.stdout
    atomic_write_json(run / "split.json", {**ids, "train_eval": "c8"})
    proc = run_diagnostics("--run", str(run), "-k", "overfitting")
    assert "split.json: field 'train_eval' must be a list of conversation ids" in proc.stdout


@pytest.mark.parametrize("strict, code", [(False, 0), ("--strict", 1)])
def test_warn_passes_unless_strict(tmp_path, strict, code):
    run = fake_run(tmp_path, healthy_metrics(epochs=3))  # still improving: loss_phases WARN
    args = ["--run", str(run), "--report-dir", str(tmp_path / "r"), "-k", "loss_phases"]
    proc = run_diagnostics(*args, *([strict] if strict else []))
    assert proc.returncode == code, proc.stdout + proc.stderr
    assert "WARN loss_phases" in proc.stdout


def _one_usage_error(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 4, proc.stdout + proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stdout + proc.stderr, proc.stderr
    return lines[0]


def test_every_check_is_one_module_and_one_pytest_check_of_the_same_name():
    """CHECK_NAMES comes from the analysis modules; each has diagnostics/test_<name>.py
    holding exactly ``test_<name>``, and no pytest check lacks a module."""
    files = {f.stem.removeprefix("test_"): f for f in (REPO / "diagnostics").glob("test_*.py")}
    assert set(files) == set(CHECK_NAMES)
    for name, f in files.items():
        assert re.findall(r"^def test_(\w+)\(", f.read_text(), re.M) == [name]
        assert (REPO / "diagnostics" / "analyses" / f"{name}.py").is_file()


@pytest.mark.parametrize("value", ["-1", "-0.5", "nan", "inf"])
def test_bad_tolerance_is_a_usage_error_as_in_the_gate(tmp_path, monkeypatch, capsys, value):
    run = fake_run(tmp_path, healthy_metrics())
    line = _one_usage_error(diagnostics_main(monkeypatch, capsys, "--run", str(run),
                                             f"--tolerance={value}"))
    assert "--tolerance must be a finite number >= 0" in line


WRITER = """
from pathlib import Path


def pytest_runtest_teardown(item):
    folder = Path(item.config.getoption("bankllm_report_dir"))
    (folder / "scaling_curve.png").write_bytes(b"png of this session")
"""


@pytest.mark.slow
def test_summary_line_lists_the_files_this_session_wrote(tmp_path):
    run = fake_run(tmp_path, healthy_metrics())
    reports = tmp_path / "reports"
    reports.mkdir()
    (reports / "scaling_curve.png").write_bytes(b"an old session's")
    (reports / "bench.json").write_text("{}")
    (tmp_path / "writer.py").write_text(WRITER)
    args = ["--run", str(run), "--report-dir", str(reports), "-k", "initial_loss"]
    four = "diagnostics.json, diagnostics.svg, diagnostics.html, loss_curves.png"
    proc = run_diagnostics(*args)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"report: {four} in {reports}\n" in proc.stdout
    proc = run_diagnostics(*args, "-p", "writer", pythonpath=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"report: {four}, scaling_curve.png in {reports}\n" in proc.stdout


def test_a_malformed_probe_file_stops_the_session_naming_file_and_line(tmp_path, monkeypatch,
                                                                       capsys):
    run = fake_run(tmp_path, healthy_metrics())
    probes = tmp_path / "probes"
    probes.mkdir()
    for kind in ("inv", "dir", "mft"):
        (probes / f"{kind}.jsonl").write_text((REPO / "fixtures" / "probes" /
                                               f"{kind}.jsonl").read_text())
    lines = (probes / "inv.jsonl").read_text().splitlines()
    bad = json.loads(lines[2])
    bad["prompts"] = "not a list"
    lines[2] = json.dumps(bad)
    (probes / "inv.jsonl").write_text("\n".join(lines) + "\n")
    line = _one_usage_error(diagnostics_main(monkeypatch, capsys, "--run", str(run),
                                             "--probes", str(probes), "-k", "initial_loss"))
    assert "inv.jsonl:3" in line and "prompts" in line and "--probes" in line


def test_a_missing_probe_folder_skips_the_probe_checks_naming_it(tmp_path):
    from diagnostics.plugin import no_probes_result

    class Config:  # what no_probes_result reads of pytest's config
        option = type("O", (), {"bankllm_probes": str(tmp_path / "nowhere")})()
        invocation_params = type("I", (), {"dir": tmp_path})()

    result = no_probes_result(Config(), "consistency", {})
    assert result.status == "SKIP" and str(tmp_path / "nowhere") in result.reason


def test_the_probe_folder_comes_from_probes_then_the_thresholds_file(tmp_path, monkeypatch,
                                                                     capsys):
    """A named probe folder that does not exist is a usage error (a missing default SKIPs the
    probe checks); ``--probes`` wins over a thresholds file's ``probes`` key."""
    run = fake_run(tmp_path, healthy_metrics())
    th = tmp_path / "th.toml"
    th.write_text('probes = "bank-probes"\n')
    line = _one_usage_error(diagnostics_main(monkeypatch, capsys, "--run", str(run),
                                             "--thresholds", str(th), "-k", "initial_loss"))
    assert f"{tmp_path / 'bank-probes'}: probe directory not found" in line
    proc = diagnostics_main(monkeypatch, capsys, "--run", str(run), "--thresholds", str(th),
                            "--probes", str(REPO / "docs" / "example-probes"),
                            "--report-dir", str(tmp_path / "reports"), "-k", "initial_loss")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"probes: {REPO / 'docs' / 'example-probes'};" in proc.stdout
