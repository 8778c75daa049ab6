"""``python -m bench``: bankllm's speed benchmark (see ``bench/README.md``).

Measures, in one run on this machine and the bundled corpus's train split: training
throughput of the naive chapter pipeline, bankllm's trainer and the transformers peer; the
full recipe's projected time; KV-cache against recomputed generation; bf16 against fp32
quality. Prints tables and writes ``reports/bench.json`` atomically.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from bankllm.errors import EXIT_USAGE, BankLLMError
from bankllm.fileio import atomic_write_json
from bankllm.model import GPT
from bankllm.precision import resolve_precision
from bench import gen_speed, memory, parity, report, train_speed
from bench.workload import (
    SIZES,
    Workload,
    bench_config,
    contention,
    cpu_sample,
    load_average,
    load_workload,
    machine_info,
)

SCHEMA_VERSION = 1
DEFAULT_MEASURED_RUN = "runs/latest"


def _at_least(minimum: int) -> Callable[[str], int]:
    """An argparse ``type``: an integer no smaller than ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run (few steps)")
    parser.add_argument("--size", choices=sorted(SIZES), default="default", help="model shape")
    parser.add_argument("--data", default=None, help="corpus (default: the bundled one)")
    count, positive = _at_least(0), _at_least(1)
    parser.add_argument("--warmup", type=count, default=None, help="untimed steps (default 2)")
    parser.add_argument("--steps", type=positive, default=None, help="timed steps (default 8)")
    parser.add_argument(
        "--naive-steps", type=positive, default=None, help="timed naive steps (default: --steps)"
    )
    parser.add_argument("--parity-epochs", type=positive, default=None, help="parity recipe (2)")
    parser.add_argument("--gen-prompts", type=positive, default=None, help="prompts (default 256)")
    parser.add_argument(
        "--gen-naive-prompts", type=positive, default=None, help="of which decoded naively (64)"
    )
    parser.add_argument(
        "--skip",
        action="append",
        default=[],
        choices=["naive", "bankllm", "peer", "generation", "parity", "memory"],
        help="leave a part out (repeatable)",
    )
    parser.add_argument("--threads", type=count, default=0, help="torch threads (0: default)")
    parser.add_argument(
        "--measured-run",
        default=None,
        help=f"a real run to quote (default {DEFAULT_MEASURED_RUN}, skipped if absent)",
    )
    parser.add_argument("--out", default="reports/bench.json", help="where to write the JSON")
    args = parser.parse_args(argv)
    quick = args.quick
    defaults = {
        "warmup": 1 if quick else 2,
        "steps": 2 if quick else 8,
        "parity_epochs": 1 if quick else 2,
        "gen_prompts": 16 if quick else 256,
        "gen_naive_prompts": 4 if quick else 64,
    }
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.naive_steps is None:
        args.naive_steps = args.steps
    return args


def _skipped(reason: str = "skipped (--skip)") -> dict[str, Any]:
    return {"status": reason}


def measure_training(
    args: argparse.Namespace,
    work: Workload,
    default_precision: str,
    log: Callable[[str], None],
) -> dict[str, dict[str, Any]]:
    """Build the pipelines asked for and time them in interleaved rounds."""
    training: dict[str, dict[str, Any]] = {}
    pipelines: list[train_speed.Pipeline] = []
    with ExitStack() as stack:
        if "naive" in args.skip:
            training["naive"] = _skipped()
        else:
            pipelines.append(train_speed.naive_pipeline(work, args.naive_steps))
        if "bankllm" in args.skip:
            training["bankllm"] = training["bankllm_fp32"] = _skipped()
        else:
            pipelines.append(train_speed.bankllm_pipeline(work, "auto", "bankllm", stack))
            if default_precision == "fp32":
                training["bankllm_fp32"] = _skipped("skipped: the default is fp32 here")
            else:
                pipelines.append(train_speed.bankllm_pipeline(work, "fp32", "bankllm_fp32", stack))
        for precision in ("bf16", "fp32"):
            key = f"peer_{precision}"
            if "peer" in args.skip:
                training[key] = _skipped()
            elif precision == "bf16" and default_precision == "fp32":
                training[key] = _skipped("skipped: this CPU has no fast bf16")
            else:
                built = train_speed.peer_pipeline(work, precision)
                if isinstance(built, dict):
                    training[key] = built
                else:
                    pipelines.append(built)
        names = ", ".join(p.name for p in pipelines)
        log(f"training, {args.warmup} warm-up + {args.steps} timed steps, interleaved: {names}")
        training.update(train_speed.measure(pipelines, work, args.warmup, args.steps))
    order = ("naive", "bankllm", "bankllm_fp32", "peer_bf16", "peer_fp32")
    return {name: training[name] for name in order}


def check_out(path: str) -> None:
    """Fail early, before any timing, when ``--out`` cannot be written as a file."""
    out = Path(path)
    if out.is_dir():
        raise BankLLMError(
            f"--out {path}: is a folder; give a file path such as {out / 'bench.json'}"
        )
    parent = out.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise BankLLMError(f"--out {path}: {parent} is not a folder; give another path")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise BankLLMError(f"--out {path}: cannot write in {parent}; give another path")


def read_measured_run(path: str | None) -> dict[str, Any] | None:
    """The run ``--measured-run`` names; the default may be absent, an explicit one may not."""
    if path is None:
        return report.measured_run(Path(DEFAULT_MEASURED_RUN))
    return report.measured_run(Path(path), required=True)


def run(args: argparse.Namespace, measured: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run every part of the benchmark; return the result written to JSON."""
    load_start, cpu_start = load_average(), cpu_sample()
    cfg = bench_config(args.size, args.data)
    work = load_workload(cfg)
    default_precision = resolve_precision(cfg.precision, torch.device("cpu"))
    n_params = GPT(work.model_config()).num_params()
    per_token = train_speed.flops_per_token(n_params)
    t0 = time.perf_counter()

    def log(msg: str) -> None:
        print(f"bench: [{time.perf_counter() - t0:5.1f} s] {msg}", file=sys.stderr, flush=True)

    peak = matmul_peak_flops(quick=args.quick)
    training = measure_training(args, work, default_precision, log)
    for row in training.values():
        if row.get("status") == "ok":
            row["share_of_matmul_peak"] = round(row["flops_per_second"] / peak[row["precision"]], 4)

    measured_ok = [name for name, row in training.items() if row.get("status") == "ok"]
    if "memory" in args.skip or not measured_ok:
        memory_result = _skipped()
    else:
        log(f"memory: peak RSS of {', '.join(measured_ok)}, each in a process of its own")
        peaks = memory.measure_memory(
            measured_ok, args.size, args.data, args.warmup,
            {name: training[name]["steps"] for name in measured_ok}, args.threads)
        for name in measured_ok:
            training[name]["peak_rss_mb"] = peaks[name]
        memory_result = {"status": "ok", "baseline_rss_mb": peaks[memory.BASELINE],
                         "allocator": memory.allocator_name()}

    recipe = train_speed.recipe_projection(work, training["naive"], training["bankllm"])
    recipe["measured"] = measured

    if "parity" in args.skip:
        parity_result, trained = _skipped(), None
    else:
        log(f"parity: bf16 and fp32, {args.parity_epochs} epoch(s) each")
        parity_result, trained = parity.bench_parity(work, args.parity_epochs)
    if "generation" in args.skip:
        generation = _skipped()
    else:
        log("generation: KV cache, recompute, naive recompute")
        model = trained
        if model is None:
            torch.manual_seed(cfg.seed)
            model = GPT(work.model_config())
        generation = gen_speed.bench_generation(
            work,
            model,
            default_precision,
            max_prompts=args.gen_prompts,
            naive_prompts=args.gen_naive_prompts,
        )
        generation["weights"] = (
            f"trained {args.parity_epochs} epoch(s) in bf16 (the parity run)"
            if trained is not None
            else "untrained"
        )

    bankllm, fp32 = training["bankllm"], training["bankllm_fp32"]
    if default_precision == "fp32":
        fp32 = bankllm
    ratios = {
        "bankllm_vs_naive": report.ratio(bankllm, training["naive"]),
        "bankllm_vs_peer_bf16": report.ratio(bankllm, training["peer_bf16"]),
        "bankllm_fp32_vs_peer_fp32": report.ratio(fp32, training["peer_fp32"]),
        "bankllm_fp32_vs_naive": report.ratio(fp32, training["naive"]),
    }
    limits = {k: round(v / per_token) for k, v in peak.items()}
    targets = report.evaluate_targets(
        {
            "bankllm_tokens_per_second": bankllm.get("tokens_per_second"),
            "bankllm_share_of_peak": bankllm.get("share_of_matmul_peak"),
            "recipe_speedup": recipe.get("speedup"),
            "vs_peer_bf16": ratios["bankllm_vs_peer_bf16"],
            "vs_peer_fp32": ratios["bankllm_fp32_vs_peer_fp32"],
            "padding_share": bankllm.get("padding_share_recipe"),
            "generation_speedup": generation.get("speedup"),
            "parity_relative_difference": parity_result.get("relative_difference"),
        },
        ceilings={"bankllm_tokens_per_second": limits.get(bankllm.get("precision", ""))},
    )
    # the spread of the judged ratios over the rounds: what one run's ratio is worth
    targets["vs_peer_bf16"]["rounds"] = report.round_ratios(bankllm, training["peer_bf16"])
    targets["vs_peer_fp32"]["rounds"] = report.round_ratios(fp32, training["peer_fp32"])
    load = {"start": load_start, "end": load_average()}
    competing = contention(cpu_start, cpu_sample())
    machine = {**machine_info(), "matmul_peak_flops": peak}
    return {
        "schema_version": SCHEMA_VERSION,
        "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "quick": args.quick,
        "size": args.size,
        "warmup_steps": args.warmup,
        "timed_steps": args.steps,
        "naive_timed_steps": args.naive_steps,
        "machine": machine,
        "load_average": load,
        "contention": competing,
        "warnings": report.warnings(load, machine, competing),
        "workload": {
            "data": cfg.data,
            "description": f"{args.size} model, {Path(cfg.data).name} train split",
            "n_train": len(work.train),
            "n_val": len(work.val),
            "vocab_size": work.vocab_size,
            "n_params": n_params,
            "flops_per_token": per_token,
            "target_tokens_per_epoch": work.train.n_target_tokens(),
            "batches_per_epoch": len(work.batches),
            "batch_size": cfg.batch_size,
            "default_precision": default_precision,
            # tokens/s if every FLOP ran at this machine's best matmul rate
            "compute_limit_tokens_per_second": limits,
        },
        "training": training,
        "memory": memory_result,
        "ratios": ratios,
        "recipe": recipe,
        "generation": generation,
        "parity": parity_result,
        "targets": targets,
    }


def _best_matmul_flops(dtype: torch.dtype, n: int, reps: int) -> float:
    a = torch.randn(n, n).to(dtype)
    b = torch.randn(n, n).to(dtype)
    a @ b
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def matmul_peak_flops(quick: bool = False) -> dict[str, float]:
    """This machine's matmul FLOP/s ceiling per dtype: the best of many square matmuls with
    all threads, or one thread's best times the threads if that is higher (on a busy machine
    the multi-threaded figure is the one other processes disturb most)."""
    threads = torch.get_num_threads()
    out = {}
    for name, dtype, n in (("bf16", torch.bfloat16, 2048), ("fp32", torch.float32, 1024)):
        n, reps = (n // 2, 3) if quick else (n, 30)
        best = _best_matmul_flops(dtype, n, reps)
        torch.set_num_threads(1)
        try:
            best = max(best, threads * _best_matmul_flops(dtype, n, reps))
        finally:
            torch.set_num_threads(threads)
        out[name] = round(best)
    return out


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m bench``; returns the process exit code."""
    args = parse_args(argv)
    try:
        check_out(args.out)
        measured = read_measured_run(args.measured_run)
        if args.threads:
            torch.set_num_threads(args.threads)
        result = run(args, measured)
        try:
            atomic_write_json(args.out, result)
        except OSError as exc:
            raise BankLLMError(f"--out {args.out}: cannot write ({exc.strerror})") from None
    except BankLLMError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    report.print_report(result)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
