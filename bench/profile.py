"""``python -m bench.profile``: the top operators of one training pipeline's optimizer steps.

``--pipeline before`` is bankllm's default before the speed work (the chapter's model, bf16
autocast, micro-batches of 4 with token-normalised accumulation, fused AdamW); ``after`` is the
trainer's default now (``Trainer._train_step``); ``naive`` is the chapter pipeline
(pad to 256, fp32). Same batches as ``python -m bench``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile

from bankllm.steps import accumulate_gradients, make_optimizer
from bankllm.training import Trainer
from bench import chapter
from bench.train_speed import pick, representative
from bench.workload import bench_config, contention, cpu_sample, load_workload


def top_ops(prof: Any, steps: int, rows: int) -> list[dict[str, Any]]:
    """The ``rows`` operators with the most self CPU time, per optimizer step."""
    events = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
    total = sum(e.self_cpu_time_total for e in events) or 1.0
    return [
        {
            "op": e.key,
            "share": round(e.self_cpu_time_total / total, 4),
            "ms_per_step": round(e.self_cpu_time_total / 1000 / steps, 2),
            "calls_per_step": round(e.count / steps, 1),
        }
        for e in events[:rows]
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    parser.add_argument("--pipeline", choices=["before", "after", "naive"], default="after")
    parser.add_argument("--size", default="default")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--rows", type=int, default=15)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument(
        "--precision", choices=["auto", "bf16", "fp32"], default="auto", help="--pipeline after"
    )
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    work = load_workload(bench_config(args.size))
    cfg, device = work.cfg, torch.device("cpu")
    with tempfile.TemporaryDirectory(prefix="bench-profile-") as tmp:
        if args.pipeline == "after":
            run_cfg = replace(cfg, precision=args.precision)
            trainer = Trainer(run_cfg, f"{tmp}/run", show_progress=False, log=lambda _: None)

            def step(batch: list[int]) -> int:
                return trainer._train_step(batch)["tokens"]
        else:
            torch.manual_seed(cfg.seed)
            model = chapter.ChapterGPT(work.model_config())
            model.train()
            optimizer = make_optimizer(model, cfg, device)
            naive = args.pipeline == "naive"

            def step(batch: list[int]) -> int:
                if naive:
                    tokens, _ = chapter.chapter_accumulate(model, work.train, batch, work.pad_id)
                else:
                    _, tokens, _ = accumulate_gradients(
                        model, work.train, batch, 4, work.pad_id, device, "bf16"
                    )
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                return tokens

        for batch in pick(work.batches, 0, args.warmup):
            step(batch)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            start, cpu_start = time.perf_counter(), cpu_sample()
            timed = representative(work.batches, work.train.lengths, args.steps)
            tokens = sum(step(b) for b in timed)
            seconds = time.perf_counter() - start
            competing = contention(cpu_start, cpu_sample())
    print(
        f"{args.pipeline}: {tokens / seconds:,.0f} target tok/s under the profiler, "
        f"{1000 * seconds / args.steps:,.0f} ms/step, {torch.get_num_threads()} threads, "
        "competing for the CPUs: "
        + (
            "unknown"
            if competing is None
            else f"other processes {competing['other_processes']}, steal {competing['steal']}"
        )
    )
    print(f"{'op':<48} {'share':>7} {'ms/step':>9} {'calls/step':>11}")
    for row in top_ops(prof, args.steps, args.rows):
        print(
            f"{row['op'][:48]:<48} {row['share']:>7.1%} {row['ms_per_step']:>9.1f} "
            f"{row['calls_per_step']:>11.1f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
