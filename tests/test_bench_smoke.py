"""Smoke test of the speed benchmark: ``python -m bench --quick`` runs and writes its JSON.

No timing is asserted (the figures depend on the machine); a tiny model on a small corpus.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench import memory
from bench.train_speed import Pipeline, measure
from bench.workload import bench_config, load_workload
from tests.conftest import make_conversations

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_quick_bench_writes_valid_json_with_every_part(tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(c) + "\n" for c in make_conversations(80)))
    out = tmp_path / "reports" / "bench.json"
    cmd = [sys.executable, "-m", "bench", "--quick", "--size", "tiny", "--data", str(corpus)]
    cmd += ["--out", str(out), "--threads", "1"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # run in tmp_path: no runs/latest to quote
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["quick"] is True and result["size"] == "tiny"
    for key in ("machine", "workload", "training", "ratios", "recipe", "generation", "parity"):
        assert key in result, key
    training = result["training"]
    assert set(training) == {"naive", "bankllm", "bankllm_fp32", "peer_bf16", "peer_fp32"}
    for name in ("naive", "bankllm"):
        row = training[name]
        assert row["status"] == "ok", row
        assert row["tokens_per_second"] > 0 and row["ms_per_step"] > 0
        assert len(row["step_seconds"]) == row["steps"]
        assert sum(row["step_seconds"]) == pytest.approx(row["seconds"], rel=0.01, abs=1e-3)
        assert 0.0 <= row["padding_share"] < 1.0 and row["flops_per_second"] > 0
    # peak RSS: each measured pipeline alone in a child process, at least that of one that
    # steps nothing
    assert result["memory"]["status"] == "ok"
    floor = result["memory"]["baseline_rss_mb"]
    assert floor > 0
    assert result["memory"]["allocator"].startswith("libmimalloc.so")  # as `bankllm train`
    for row in training.values():
        if row["status"] == "ok":
            assert row["peak_rss_mb"] >= floor, row  # a tiny model adds little
    for row in training.values():  # measured, or a reason why not (transformers absent...)
        assert row["status"] == "ok" or row["status"].split(":")[0] in ("skipped", "unavailable")
    assert result["recipe"]["label"] == "projected" and result["recipe"]["naive_seconds"] > 0
    assert result["recipe"]["measured"] is None
    assert result["generation"]["status"].split(":")[0] in ("ok", "unavailable", "skipped")
    assert result["parity"]["status"].split(":")[0] in ("ok", "skipped")
    assert all(t["met"] in (True, False, None) for t in result["targets"].values())
    # the tok/s target is judged against this machine's ceiling (its measured matmul peak)
    speed = result["targets"]["bankllm_tokens_per_second"]
    limits = result["workload"]["compute_limit_tokens_per_second"]
    assert speed["ceiling"] == limits[training["bankllm"]["precision"]] > 0
    assert speed["reachable"] is (speed["target"] <= speed["ceiling"])
    peer = result["targets"]["vs_peer_bf16"]
    if training["peer_bf16"]["status"] == "ok":
        assert peer["rounds"]["rounds"] == training["bankllm"]["steps"]
        assert peer["rounds"]["min"] <= peer["rounds"]["median"] <= peer["rounds"]["max"]
    else:
        assert peer["rounds"] is None
    assert result["machine"]["cpu_bf16"] in ("AMX", "AVX512-BF16", "none")
    competing = result["contention"]  # measured from /proc/stat where there is one
    if Path("/proc/stat").exists():
        assert competing["seconds"] > 0
        assert competing["other_processes"] >= 0 and competing["steal"] >= 0
    assert "training throughput" in done.stdout


def test_a_childs_peak_rss_is_its_own_not_its_large_parents(tmp_path, monkeypatch):
    # Linux hands a parent's high-water mark to its children's ru_maxrss: a benchmark holding
    # 600 MB must not read 600 MB for a child that holds far less
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(c) + "\n" for c in make_conversations(40)))
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    held = bytearray(600 * 2**20)
    held[:: 4096] = b"\1" * len(held[:: 4096])  # touch every page
    parent = memory.own_peak_rss_mb()
    assert parent >= 600
    child = memory.peak_rss_mb(memory.BASELINE, "tiny", str(corpus), 0, 1, threads=1)
    assert child is not None and 0 < child < parent - 300, (child, parent)
    del held


def test_measure_separates_the_one_time_cost_of_a_new_shape_from_the_steady_rate(tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(c) + "\n" for c in make_conversations(80)))
    work = load_workload(bench_config("tiny", data=str(corpus)))
    built: set = set()

    def step(batch):  # a pipeline that "builds kernels" (sleeps 50 ms) for each new shape
        new = work.batch_shapes(batch) - built
        built.update(new)
        time.sleep(0.05 * len(new) + 0.002)
        return 10, 12

    row = measure([Pipeline("fake", step, 1000, shapes=work.batch_shapes)], work, 1, 3)["fake"]
    assert row["new_shapes"] >= 1
    # 50 ms per new shape, read through a step-time estimate that a busy machine blurs
    assert 20 <= row["ms_per_new_shape"] <= 400
    assert row["tokens_per_second"] > 2 * row["first_pass_tokens_per_second"]
    assert work.recipe_shapes() >= set().union(*(work.batch_shapes(b) for b in work.batches))
