"""Peak resident memory of each training pipeline, each in a process of its own.

One process's peak RSS (``ru_maxrss``) only grows, so pipelines sharing a process cannot be told
apart: here each pipeline runs alone in a child (``python -m bench.memory PIPELINE ...``) on
the same batches the speed measurement uses (its warm-up batches, then the timed ones, one
pass), and the child reports its own peak (:func:`own_peak_rss_mb`) on its last stdout line.
The figure includes what every such process holds (the interpreter, torch, the workload),
reported as ``baseline_rss_mb``: the peak of a child that builds the workload and steps nothing.

Each child runs with the allocator ``bankllm train`` would use (mimalloc where installed:
:func:`bankllm.memory.allocator_environment`), the peer's and the naive pipeline's alike.

The parent cannot read the child's peak from ``os.wait4``: Linux carries the parent's
high-water mark over fork and exec into the child's ``ru_maxrss``, so every child of a large
benchmark process would read the benchmark's own peak.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack

from bankllm.memory import allocator_environment

PIPELINES = ("naive", "bankllm", "bankllm_fp32", "peer_bf16", "peer_fp32")
BASELINE = "none"  # a child that builds the workload and steps no pipeline


def peak_rss_mb(pipeline: str, size: str, data: str | None, warmup: int, steps: int,
                threads: int = 0) -> float | None:
    """Peak RSS (MB) of a child process running ``pipeline``'s warm-up and timed batches
    once; None when the child fails (its stderr passes through)."""
    cmd = [sys.executable, "-m", "bench.memory", pipeline, "--size", size, "--warmup",
           str(warmup), "--steps", str(steps), "--threads", str(threads)]
    if data is not None:
        cmd += ["--data", data]
    done = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=False,
                          env=child_environment())
    words = done.stdout.split()  # the child's last word is its peak
    if done.returncode != 0 or not words:
        return None
    return round(float(words[-1]), 1)


def child_environment() -> dict[str, str]:
    """The environment of a measured child: this one, with the training commands' allocator."""
    return allocator_environment(os.environ) or dict(os.environ)


def allocator_name() -> str:
    """What the measured children allocate with: the preloaded library's file name, or
    "system" (the C library's malloc)."""
    preload = child_environment().get("LD_PRELOAD")
    return os.path.basename(preload.split(":")[0].split()[0]) if preload else "system"


def own_peak_rss_mb() -> float:
    """This process's peak resident set size in MB since it started: ``VmHWM`` of
    ``/proc/self/status``, else ``ru_maxrss`` (which on Linux also holds the high-water mark
    of the process it was forked from, so it is only the fallback)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes there, KiB here


def measure_memory(pipelines: list[str], size: str, data: str | None, warmup: int,
                   steps: dict[str, int], threads: int = 0) -> dict[str, float | None]:
    """``{pipeline: peak RSS in MB}`` for each of ``pipelines`` (``steps``: timed steps per
    pipeline), plus ``BASELINE``, the peak of a process that steps nothing. One child per CPU
    runs at once: a process's peak RSS is its own, whatever runs beside it, and this phase
    times nothing."""
    runs = {BASELINE: (0, 1), **{name: (warmup, steps[name]) for name in pipelines}}
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        futures = {name: pool.submit(peak_rss_mb, name, size, data, w, n, threads)
                   for name, (w, n) in runs.items()}
        return {name: future.result() for name, future in futures.items()}


def _run_child(argv: list[str] | None = None) -> int:
    status = _step_pipeline(argv)
    if status == 0:
        print(f"{own_peak_rss_mb():.1f}")  # the parent reads this last line
    return status


def _step_pipeline(argv: list[str] | None) -> int:
    import torch

    from bench import train_speed
    from bench.workload import bench_config, load_workload

    parser = argparse.ArgumentParser(prog="python -m bench.memory")
    parser.add_argument("pipeline", choices=[*PIPELINES, BASELINE])
    parser.add_argument("--size", default="default")
    parser.add_argument("--data", default=None)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    work = load_workload(bench_config(args.size, args.data))
    if args.pipeline == BASELINE:
        return 0
    with ExitStack() as stack:
        if args.pipeline == "naive":
            pipeline = train_speed.naive_pipeline(work)
        elif args.pipeline.startswith("bankllm"):
            precision = "fp32" if args.pipeline.endswith("fp32") else "auto"
            pipeline = train_speed.bankllm_pipeline(work, precision, args.pipeline, stack)
        else:
            built = train_speed.peer_pipeline(work, args.pipeline.removeprefix("peer_"))
            if isinstance(built, dict):
                print(built["status"], file=sys.stderr)
                return 1
            pipeline = built
        batches = train_speed.pick(work.batches, 0, args.warmup) + train_speed.representative(
            work.batches, work.train.lengths, args.steps)
        for batch in batches:
            pipeline.step(batch)
    return 0


if __name__ == "__main__":
    raise SystemExit(_run_child())
