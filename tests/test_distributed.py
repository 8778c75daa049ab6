"""DDP with torchrun: two gloo processes on this machine train like one process."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.training_hooks import hooked_env, wait_for_state

pytestmark = pytest.mark.slow  # torchrun starts three processes per run

TINY = [
    "--set",
    "n_layer=1",
    "--set",
    "n_head=2",
    "--set",
    "n_embd=16",
    "--set",
    "block_size=64",
    "--set",
    "dropout=0",
    "--set",
    "epochs=2",
    "--set",
    "batch_size=8",
    "--set",
    "micro_batch_size=2",
    "--set",
    "precision=fp32",
    "--set",
    "threads=1",
    "--quiet",
]


# `torchrun --standalone --nproc_per_node 2 -m bankllm`: two processes, rendezvous on localhost
TORCHRUN = [
    *(sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"),
    *("-m", "bankllm"),
]


def _failure(proc: subprocess.CompletedProcess) -> str:
    """The worker's own message comes first in the output, torchrun's summary last."""
    out = proc.stdout + proc.stderr
    return out if len(out) <= 4000 else out[:2000] + "\n...\n" + out[-2000:]


def _train(cmd, corpus_file, runs, name):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [*cmd, "train", "--data", str(corpus_file), "--runs-dir", str(runs), "--name", name, *TINY],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
    )
    assert proc.returncode == 0, _failure(proc)
    return json.loads((runs / name / "metrics.json").read_text())


def test_two_gloo_processes_match_one_process(corpus_file, tmp_path):
    single = _train([sys.executable, "-m", "bankllm"], corpus_file, tmp_path, "single")
    double = _train(TORCHRUN, corpus_file, tmp_path, "ddp")
    assert double["world_size"] == 2 and single["world_size"] == 1
    assert len(double["steps"]) == len(single["steps"])
    for a, b in zip(single["epochs"], double["epochs"], strict=True):
        assert abs(a["val_loss"] - b["val_loss"]) <= 1e-4 * a["val_loss"]
        assert abs(a["train_loss"] - b["train_loss"]) <= 1e-4 * a["train_loss"]
        # each process scores its share; the per-conversation sums are gathered whole
        for key in ("val_loss_sums", "train_eval_loss_sums"):
            assert len(b[key]) == len(a[key]) and all(
                abs(x - y) <= 1e-4 * abs(x) for x, y in zip(a[key], b[key], strict=True))
    assert double["val_tokens"] == single["val_tokens"]
    assert double["train_eval_tokens"] == single["train_eval_tokens"]
    # logged token counts are global, not per process
    assert [s["tokens"] for s in double["steps"]] == [s["tokens"] for s in single["steps"]]
    # rank 0 logs the update-to-weight ratios of the same update (every 10 steps by default)
    logged = [(s["step"], s.get("update_ratio")) for s in single["steps"] if "update_ratio" in s]
    assert [step for step, _ in logged] == [
        s["step"] for s in double["steps"] if "update_ratio" in s] == [10]
    for (step, ratios), other in zip(
        logged, (s["update_ratio"] for s in double["steps"] if "update_ratio" in s), strict=True
    ):
        assert set(other) == set(ratios), step
        for group, r in ratios.items():
            assert r is None or abs(other[group] - r) <= 1e-3 * r, (step, group)
    # only rank 0 wrote the run directory: no stray temporary files
    assert not [p for p in (tmp_path / "ddp").iterdir() if p.name.startswith(".")]


def test_a_sigterm_stopped_ddp_run_resumes_at_the_same_world_size(corpus_file, tmp_path):
    # 3 epochs: the run is cut in epoch 1 and resumes across two epoch ends
    longer = [*TINY, "--set", "epochs=3", "--set", "save_every_steps=1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def args(name):
        return [
            "train",
            "--data",
            str(corpus_file),
            "--runs-dir",
            str(tmp_path),
            "--name",
            name,
            *longer,
        ]

    whole = subprocess.run(
        [*TORCHRUN, *args("whole")], capture_output=True, text=True, timeout=240, env=env
    )
    assert whole.returncode == 0, _failure(whole)
    # park both processes inside step 5 (gradients done), signal torchrun, then let them go
    hang_step = 5
    marker, release = tmp_path / "parked", tmp_path / "go"
    hooks = {
        **hooked_env(tmp_path),
        "BANKLLM_TEST_HANG_STEP": str(hang_step),
        "BANKLLM_TEST_MARKER": str(marker),
        "BANKLLM_TEST_RELEASE": str(release),
    }
    proc = subprocess.Popen(
        [*TORCHRUN, *args("cut")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=hooks,
    )
    wait_for_state(proc, tmp_path / "cut", lambda p: p["step"] == hang_step - 1, marker)
    proc.send_signal(signal.SIGTERM)  # torchrun forwards it to both workers
    # the workers stay parked until released: give torchrun time to forward the signal on a
    # loaded machine (0.1 s once let a worker run past the step, under the whole suite at -n 2)
    time.sleep(1.0)
    release.touch()
    out, err = proc.communicate(timeout=120)
    cut = json.loads((tmp_path / "cut" / "metrics.json").read_text())
    assert cut["status"] == "interrupted", _failure(
        subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    )
    assert len(cut["steps"]) == hang_step  # the step in flight was finished, then saved
    resumed = subprocess.run(
        [*TORCHRUN, "train", "--resume", str(tmp_path / "cut"), "--quiet"],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
    )
    assert resumed.returncode == 0, _failure(resumed)
    a = json.loads((tmp_path / "whole" / "metrics.json").read_text())
    b = json.loads((tmp_path / "cut" / "metrics.json").read_text())
    assert b["status"] == "completed" and b["world_size"] == 2
    assert [s["loss"] for s in b["steps"]] == [s["loss"] for s in a["steps"]], (
        b["events"],
        _failure(resumed),
    )
    assert [e["val_loss"] for e in b["epochs"]] == [e["val_loss"] for e in a["epochs"]]
