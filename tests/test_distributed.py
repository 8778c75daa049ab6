"""DDP with torchrun: two gloo processes on this machine train like one process."""

import json
import os
import subprocess
import sys

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


def _train(cmd, corpus_file, runs, name):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [*cmd, "train", "--data", str(corpus_file), "--runs-dir", str(runs), "--name", name, *TINY],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads((runs / name / "metrics.json").read_text())


def test_two_gloo_processes_match_one_process(corpus_file, tmp_path):
    single = _train([sys.executable, "-m", "bankllm"], corpus_file, tmp_path, "single")
    torchrun = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "bankllm",
    ]
    double = _train(torchrun, corpus_file, tmp_path, "ddp")
    assert double["world_size"] == 2 and single["world_size"] == 1
    assert len(double["steps"]) == len(single["steps"])
    for a, b in zip(single["epochs"], double["epochs"], strict=True):
        assert abs(a["val_loss"] - b["val_loss"]) <= 1e-4 * a["val_loss"]
        assert abs(a["train_loss"] - b["train_loss"]) <= 1e-4 * a["train_loss"]
    # logged token counts are global, not per process
    assert [s["tokens"] for s in double["steps"]] == [s["tokens"] for s in single["steps"]]
    # only rank 0 wrote the run directory: no stray temporary files
    assert not [p for p in (tmp_path / "ddp").iterdir() if p.name.startswith(".")]
