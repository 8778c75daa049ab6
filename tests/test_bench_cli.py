"""``python -m bench`` on bad input: one ``error:`` line, exit code 2, before any timing."""

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

import bench.__main__ as bench_main
from bench import report, train_speed, workload
from tests.conftest import make_conversations

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def no_timing(monkeypatch):
    """Make any timing work fail the test: errors must come before it."""

    def forbidden(*args, **kwargs):
        raise AssertionError("the benchmark started timing")

    monkeypatch.setattr(bench_main, "matmul_peak_flops", forbidden)
    monkeypatch.setattr(train_speed, "measure", forbidden)


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(json.dumps(c) + "\n" for c in make_conversations(20)))
    return path


def _one_error(capsys, code: int, *words: str) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for word in words:
        assert word in lines[0], err
    return lines[0]


def _main(tmp_path, *argv: str) -> int:
    out = ["--out", str(tmp_path / "bench.json")]
    return bench_main.main(["--size", "tiny", "--quick", *out, *argv])


def test_missing_corpus_is_one_error_line(tmp_path, capsys, no_timing):
    code = _main(tmp_path, "--data", str(tmp_path / "nonexistent.jsonl"))
    _one_error(capsys, code, "nonexistent.jsonl", "corpus file not found")


def test_malformed_corpus_is_one_error_line(tmp_path, capsys, no_timing, corpus):
    lines = corpus.read_text().splitlines()
    lines[3] = "{not json"
    corpus.write_text("\n".join(lines) + "\n")
    code = _main(tmp_path, "--data", str(corpus))
    _one_error(capsys, code, f"{corpus}:4:", "not valid JSON")


def test_out_as_a_folder_fails_before_benchmarking(tmp_path, capsys, no_timing, corpus):
    folder = tmp_path / "reports"
    folder.mkdir()
    code = bench_main.main(["--size", "tiny", "--data", str(corpus), "--out", str(folder)])
    _one_error(capsys, code, "--out", str(folder), "folder")


def test_out_below_a_file_fails_before_benchmarking(tmp_path, capsys, no_timing, corpus):
    code = bench_main.main(["--data", str(corpus), "--out", str(corpus / "bench.json")])
    _one_error(capsys, code, "--out", "not a folder")


@pytest.mark.parametrize(
    "option, value",
    [
        ("--steps", "0"),
        ("--warmup", "-1"),
        ("--naive-steps", "0"),
        ("--parity-epochs", "0"),
        ("--gen-prompts", "0"),
        ("--gen-naive-prompts", "0"),
        ("--threads", "-2"),
        ("--steps", "two"),
    ],
)
def test_integer_options_are_checked_at_parse_time(capsys, no_timing, option, value):
    with pytest.raises(SystemExit) as exit_info:
        bench_main.main([option, value])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1 and option in errors[0], err


def test_integer_options_accept_their_smallest_values():
    args = bench_main.parse_args(["--warmup", "0", "--steps", "1", "--threads", "0"])
    assert (args.warmup, args.steps, args.naive_steps, args.threads) == (0, 1, 1, 0)


@pytest.mark.parametrize("make", ["absent", "empty folder", "file", "bad metrics"])
def test_explicit_measured_run_must_be_a_run(tmp_path, capsys, no_timing, corpus, make):
    run_dir = tmp_path / "runs" / "nope"
    if make == "empty folder":
        run_dir.mkdir(parents=True)
    elif make == "file":
        run_dir.parent.mkdir()
        run_dir.write_text("x")
    elif make == "bad metrics":
        run_dir.mkdir(parents=True)
        (run_dir / "metrics.json").write_text("{")
        (run_dir / "config.json").write_text("{}")
    code = _main(tmp_path, "--data", str(corpus), "--measured-run", str(run_dir))
    _one_error(capsys, code, "--measured-run", str(run_dir))


def test_default_measured_run_may_be_absent(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert bench_main.read_measured_run(None) is None


def test_explicit_measured_run_is_quoted(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    metrics = {"status": "completed", "epochs": [{}, {}], "train_seconds": 12.5}
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    (run_dir / "config.json").write_text(json.dumps({"micro_batch_size": 8}))
    measured = bench_main.read_measured_run(str(run_dir))
    assert measured["status"] == "completed" and measured["epochs_done"] == 2
    assert measured["train_seconds"] == 12.5


def test_report_keeps_square_brackets_of_statuses():
    unavailable = (
        "unavailable: transformers is not installed "
        "(pip install 'bankllm[bench]' or pip install transformers)"
    )
    result = {
        "workload": {"description": "tiny model, corpus[1].jsonl train split"},
        "training": {"naive": {"status": "skipped (--skip)"}, "peer_fp32": {"status": unavailable}},
        "recipe": {"epochs": 2, "measured": None},
        "generation": {"status": "skipped [x]"},
        "parity": {"status": "skipped [y]"},
        "targets": report.evaluate_targets({}),
        "warnings": ["load [high]"],
    }
    buffer = io.StringIO()
    report.print_report(result, Console(file=buffer, width=400))
    text = buffer.getvalue()
    for fragment in ("'bankllm[bench]'", "corpus[1].jsonl", "[x]", "[y]", "load [high]"):
        assert fragment in text, fragment


def test_subprocess_error_has_no_traceback(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "bench", "--data", str(tmp_path / "missing.jsonl")]
    cmd += ["--out", str(tmp_path / "bench.json")]
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [done.stderr.strip()]
    assert done.stderr.startswith("error: ") and "missing.jsonl" in done.stderr


def _render_targets(targets: dict) -> str:
    """The printed report of a run that measured nothing but ``targets``."""
    result = {
        "workload": {"description": "d"},
        "training": {},
        "recipe": {"epochs": 10, "measured": None},
        "generation": {"status": "skipped"},
        "parity": {"status": "skipped"},
        "targets": targets,
    }
    buffer = io.StringIO()
    report.print_report(result, Console(file=buffer, width=400))
    return buffer.getvalue()


def test_a_target_above_the_machines_ceiling_is_a_miss_no_code_can_close():
    values = {"bankllm_tokens_per_second": 3420.0, "bankllm_share_of_peak": 0.48}
    low = report.evaluate_targets(values, ceilings={"bankllm_tokens_per_second": 7063})
    row = low["bankllm_tokens_per_second"]
    assert row["met"] is False and row["reachable"] is False and row["ceiling"] == 7063
    # the same figure on a machine whose ceiling is above the target: a miss code can close
    high = report.evaluate_targets(values, ceilings={"bankllm_tokens_per_second": 23090})
    assert high["bankllm_tokens_per_second"]["reachable"] is True
    # the target's own measure (a third of the matmul peak) is judged on any machine
    assert low["bankllm_share_of_peak"]["met"] is True
    assert report.evaluate_targets({"bankllm_share_of_peak": 0.24})["bankllm_share_of_peak"][
        "met"
    ] is False
    # without a ceiling nothing is claimed about reachability
    assert "reachable" not in report.evaluate_targets(values)["bankllm_tokens_per_second"]
    assert "above this machine's ceiling (7,063)" in _render_targets(low)


def test_a_ratio_just_under_a_target_is_not_rounded_onto_it():
    # measured on this machine: bankllm 3,281.6 tok/s against the peer's 2,191.2 in bf16
    bankllm = {"status": "ok", "tokens_per_second": 3281.6}
    peer = {"status": "ok", "tokens_per_second": 2191.2}
    value = report.ratio(bankllm, peer)
    assert 1.49 < value < 1.5
    assert report.evaluate_targets({"vs_peer_bf16": value})["vs_peer_bf16"]["met"] is False
    assert report.ratio(bankllm, {"status": "unavailable"}) is None


def test_the_targets_table_prints_values_as_they_are_judged():
    values = {"vs_peer_bf16": 1.4996, "bankllm_tokens_per_second": 3265.2,
              "bankllm_share_of_peak": 0.549}
    text = _render_targets(report.evaluate_targets(values))
    rows = {line.split("│")[1].strip(): line for line in text.splitlines()
            if line.count("│") >= 4}
    bf16 = rows["tok/s vs transformers peer, bf16"]
    assert "1.4996" in bf16 and "1.500" not in bf16 and "no" in bf16
    assert "3,265 " in rows["bankllm default training tok/s"]
    assert "0.3333" in rows["bankllm default training, share of matmul peak"]
    assert "8,000" in rows["bankllm default training tok/s"]


def _planted_stat(path, user, system, steal):
    # cpu  user nice system idle iowait irq softirq steal guest guest_nice (clock ticks)
    path.write_text(f"cpu  {user} 0 {system} 5000 7 0 0 {steal} 0 0\ncpu0 0 0 0 0 0 0 0 0 0 0\n")
    return path


def test_contention_is_other_processes_cpu_time_and_steal_per_second(tmp_path, monkeypatch):
    hz = os.sysconf("SC_CLK_TCK")
    sample = workload.cpu_sample(_planted_stat(tmp_path / "stat", 3 * hz, hz, hz // 2))
    assert sample.busy == pytest.approx(4.0) and sample.steal == pytest.approx(0.5)
    # 100 s in which all CPUs were busy 250 s, 150 of them this process's own: 1 CPU of others
    start = workload.CpuSample(wall=10.0, own=20.0, busy=1000.0, steal=5.0)
    end = workload.CpuSample(wall=110.0, own=170.0, busy=1250.0, steal=25.0)
    assert workload.contention(start, end) == {
        "seconds": 100.0, "other_processes": 1.0, "steal": 0.2
    }
    # the benchmark alone: nothing competed
    alone = workload.CpuSample(wall=110.0, own=170.0, busy=1150.0, steal=5.0)
    assert workload.contention(start, alone)["other_processes"] == 0.0
    # without /proc/stat nothing is claimed
    missing = workload.cpu_sample(tmp_path / "absent")
    assert missing.busy is None and workload.contention(missing, missing) is None


def test_busy_warning_trusts_measured_contention_over_a_lagging_load_average():
    machine = {"logical_cpus": 2, "torch_threads": 2, "env": {"OMP_WAIT_POLICY": "PASSIVE"}}
    # right after another job: the 1-minute load average still reads 1.9, the CPUs were free
    lagging = {"start": 1.92, "end": 1.93}
    quiet = {"seconds": 480.0, "other_processes": 0.05, "steal": 0.0}
    assert report.warnings(lagging, machine, quiet) == []
    busy = {"seconds": 480.0, "other_processes": 0.9, "steal": 0.3}
    (text,) = report.warnings({"start": 0.0, "end": 2.0}, machine, busy)
    assert "other processes used 0.9 and the hypervisor 0.3 of 2 CPUs" in text
    # no /proc/stat: the load average stands in
    (fallback,) = report.warnings(lagging, machine, None)
    assert "load about 1.9" in fallback


def test_cpu_sample_reads_this_machines_counters():
    before = workload.cpu_sample()
    sum(i * i for i in range(300_000))
    after = workload.cpu_sample()
    assert after.own >= before.own and after.wall > before.wall
    if os.path.exists("/proc/stat"):
        assert before.busy is not None and after.busy >= before.busy


def test_cpu_sample_counts_the_benchmarks_finished_children_as_its_own():
    # the memory phase's children are the benchmark's work, not competition
    before = workload.cpu_sample()
    burn = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.5: pass"
    subprocess.run([sys.executable, "-c", burn], check=True)
    after = workload.cpu_sample()
    assert after.own - before.own >= 0.45


def test_round_ratios_show_how_far_one_runs_ratio_can_be_trusted():
    # the same 4 batches, moments apart: bankllm steady, the peer slowed in round 3 only
    bankllm = {"status": "ok", "step_seconds": [0.6, 0.5, 0.6, 0.4]}
    peer = {"status": "ok", "step_seconds": [0.9, 0.75, 1.5, 0.6]}
    spread = report.round_ratios(bankllm, peer)
    assert spread == {"rounds": 4, "median": 1.5, "min": 1.5, "max": 2.5}
    # the ratio of totals is pulled up by the one slow round; the median is not
    totals = sum(peer["step_seconds"]) / sum(bankllm["step_seconds"])
    assert totals > 1.7 and spread["median"] == 1.5
    assert report.round_ratios(bankllm, {"status": "unavailable"}) is None
    assert report.round_ratios({"status": "ok", "step_seconds": []}, peer) is None
    targets = report.evaluate_targets({"vs_peer_bf16": round(totals, 4)})
    targets["vs_peer_bf16"]["rounds"] = spread
    assert "median 1.5000, 1.5000-2.5000 over 4" in _render_targets(targets)
