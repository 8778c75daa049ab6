"""``bankllm train``: start or resume a run from the command line, and print its summary."""

from __future__ import annotations

import math
import os
import platform
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bankllm import checkpoints as ckpt
from bankllm import distributed
from bankllm.ablation import (
    SideBySide,
    finish_side_by_side,
    fraction_name,
    start_side_by_side,
)
from bankllm.config import TrainConfig, load_config
from bankllm.errors import BankLLMError
from bankllm.precision import resolve_device
from bankllm.training import Trainer


def cli_train(args: Any) -> int:
    """``bankllm train``: train a new run, or continue one with ``--resume RUN``."""
    if args.resume:
        run_dir = _resume_dir(args)
        done = (run_dir / ckpt.METRICS_FILE).exists() and ckpt.read_metrics(run_dir)["status"]
        if done == "completed":
            print(f"{run_dir}: the run is already completed; nothing to resume")
            return 0
        cfg = ckpt.read_config(run_dir)
        resume = True
    else:
        _check_run_name(args.name)
        overrides = list(args.overrides)
        if args.data:
            overrides.append(f"data={args.data}")
        cfg = load_config(args.config, overrides)
        resume = False
    ctx = distributed.setup(resolve_device(cfg.device).type)
    try:
        return _train_in_context(args, cfg, resume, ctx)
    finally:
        distributed.teardown(ctx)


def _resume_dir(args: Any) -> Path:
    """The run ``--resume`` names, refusing options that would be silently ignored."""
    ignored = [
        flag
        for flag, value in (
            ("--config", args.config),
            ("--set", args.overrides),
            ("--data", args.data),
            ("--name", args.name),
        )
        if value
    ]
    if ignored:
        raise BankLLMError(
            f"{' and '.join(ignored)} cannot be combined with --resume: a resumed run keeps "
            "its saved config, data and name; start a new run to change them"
        )
    run_dir = Path(args.resume)
    if (run_dir / ckpt.CONFIG_FILE).exists():
        return run_dir
    hint = ""
    if (Path(args.runs_dir) / run_dir / ckpt.CONFIG_FILE).exists():
        hint = f"; did you mean --resume {Path(args.runs_dir) / run_dir}?"
    what = "not a run directory (no config.json)" if run_dir.is_dir() else "no such run"
    raise BankLLMError(f"{run_dir}: {what}{hint}")


def _check_run_name(name: str | None) -> None:
    """A run name is one folder name under ``--runs-dir``: no separators, not . or .."""
    if name is not None and (not name or name in (".", "..") or any(c in name for c in "/\\")):
        raise BankLLMError(
            f"--name {name!r}: a run name is one folder name (no '/' or '\\'); "
            "use --runs-dir to choose where runs go"
        )


def _train_in_context(args: Any, cfg: TrainConfig, resume: bool, ctx: distributed.Context) -> int:
    """Create (or reopen) the run directory, train, and print the summary on rank 0."""
    if getattr(args, "ablate", None):  # refused before the run directory exists
        for fraction in args.ablate:
            fraction_name(fraction)
        if ctx.world_size > 1:
            raise BankLLMError("--ablate cannot be combined with torchrun; run `bankllm ablate "
                               "--run RUN` once the run is done")
    if resume:
        run_dir = Path(args.resume)
    else:
        # under torchrun every process must use rank 0's name (clocks may straddle a second)
        name = ctx.broadcast_text(args.name or default_run_name())
        run_dir = Path(args.runs_dir) / name
        exists = (run_dir / ckpt.METRICS_FILE).exists()
        ctx.barrier()  # every process has looked before rank 0 writes anything
        if exists:
            raise BankLLMError(
                f"{run_dir}: a run of that name exists; pick another --name or "
                f"continue it with --resume {run_dir}"
            )
    created = not run_dir.exists()
    try:
        trainer = Trainer(cfg, run_dir, resume=resume, show_progress=not args.quiet, ctx=ctx)
    except BankLLMError:  # bad data or config: leave no empty run folder behind
        if created and ctx.is_main and run_dir.is_dir() and not any(run_dir.iterdir()):
            run_dir.rmdir()
        raise
    side = _start_ablations(args, run_dir, ctx)
    if ctx.is_main:
        print(
            f"bankllm: {trainer.metrics['n_params']:,} parameters, vocabulary "
            f"{len(trainer.tokenizer)}, {len(trainer.split.train)} train / "
            f"{len(trainer.split.val)} val conversations, {trainer.precision} on "
            f"{trainer.device} ({platform.machine()}), world size {ctx.world_size}, run {run_dir}",
            flush=True,
        )
    code = 1
    try:
        code = trainer.train()
    except OSError as exc:  # disk full, permissions changed mid-run, ...: every write is atomic
        raise BankLLMError(
            f"{exc.filename or run_dir}: cannot write ({exc.strerror or exc}); the files saved "
            f"before are intact, fix the cause and continue with: bankllm train --resume {run_dir}"
        ) from None
    finally:
        if side is not None:
            _finish_ablations(side, code)
    if ctx.is_main:
        print_summary(run_dir, trainer.metrics)
    return code


def _start_ablations(args: Any, run_dir: Path, ctx: distributed.Context) -> SideBySide | None:
    """With ``--ablate``: start the ablations beside the run, with half the cores (the run
    keeps its own thread count, so its losses are those of a run without ``--ablate``)."""
    fractions = getattr(args, "ablate", None)
    if not fractions:
        return None
    threads = max(1, (os.cpu_count() or 2) // 2)
    side = start_side_by_side(run_dir, fractions, threads)
    print(f"bankllm: ablations {' '.join(f'{f:g}' for f in fractions)} training beside the run "
          f"({threads} thread(s)), output in {side.log}", flush=True)
    return side


def _finish_ablations(side: SideBySide, code: int) -> None:
    """Wait for the side-by-side ablations and print what they said."""
    if code != 0:
        print("bankllm: the run stopped, so its ablations stop too; `bankllm ablate --run RUN` "
              "resumes them", flush=True)
    side_code = finish_side_by_side(side, code)
    text = side.log.read_text(encoding="utf-8", errors="replace") if side.log.is_file() else ""
    print(text.rstrip(), flush=True)
    if side_code != 0 and code == 0:
        print(f"bankllm: the ablations exited {side_code} (output above, also in {side.log}); "
              "the run itself completed", flush=True)


def default_run_name() -> str:
    """A new run's name when ``--name`` is not given: the UTC time, ``YYYYmmdd-HHMMSS``."""
    return datetime.now(UTC).strftime("%Y%m%d-%H%M%S")


def print_summary(run_dir: Path, metrics: dict[str, Any]) -> None:
    """The end-of-training summary table."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"run {run_dir}", show_header=False)
    best = metrics["best_val_loss"]
    rows = [
        ("status", metrics["status"]),
        ("best val loss", "-" if best is None else f"{best:.4f} (epoch {metrics['best_epoch']})"),
        ("parameters", f"{metrics['n_params']:,}"),
        ("vocabulary", str(metrics["vocab_size"])),
        ("train / val conversations", f"{metrics['n_train']} / {metrics['n_val']}"),
        (
            "initial loss (ln V)",
            f"{metrics['initial_loss']:.3f} ({math.log(metrics['vocab_size']):.3f})",
        ),
        ("precision / device", f"{metrics['precision']} / {metrics['device']}"),
        ("training time", f"{metrics['train_seconds']:.1f} s"),
        ("throughput", f"{metrics['tokens_per_second']:,.0f} target tokens/s"),
        ("padding share", f"{metrics['padding_share']:.1%}"),
    ]
    if metrics["epochs"]:
        last = metrics["epochs"][-1]
        rows.append(
            (
                "last epoch train_eval / val",
                f"{last['train_eval_loss']:.4f} / {last['val_loss']:.4f}",
            )
        )
    for key, value in rows:
        table.add_row(key, value)
    Console().print(table)
