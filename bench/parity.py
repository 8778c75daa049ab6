"""Quality parity: the best val loss of bf16 training against fp32, same seed, same data.

Both runs are bankllm's trainer on a shortened recipe (``epochs`` epochs, the cosine schedule
compressed to them), in temporary run directories.
"""

from __future__ import annotations

import tempfile
from dataclasses import replace
from typing import Any

from bankllm.model import GPT
from bankllm.precision import cpu_has_fast_bf16
from bankllm.training import Trainer
from bench.workload import Workload

TOLERANCE = 0.02  # relative


def train_run(work: Workload, precision: str, epochs: int) -> tuple[dict[str, Any], GPT]:
    """Train a shortened recipe; return its metrics summary and the trained model."""
    cfg = replace(work.cfg, precision=precision, epochs=epochs)
    with tempfile.TemporaryDirectory(prefix="bench-parity-") as tmp:
        trainer = Trainer(cfg, f"{tmp}/{precision}", show_progress=False, log=lambda _: None)
        code = trainer.train()
    m = trainer.metrics
    summary = {
        "exit_code": code,
        "precision": trainer.precision,
        "best_val_loss": m["best_val_loss"],
        "best_epoch": m["best_epoch"],
        "val_losses": [round(e["val_loss"], 5) for e in m["epochs"]],
        "train_seconds": round(m["train_seconds"], 2),
        "tokens_per_second": round(m["tokens_per_second"], 1),
        "padding_share": round(m["padding_share"], 4),
    }
    return summary, trainer.model


def bench_parity(work: Workload, epochs: int) -> tuple[dict[str, Any], GPT | None]:
    """bf16 against fp32 best val loss; returns the figures and the bf16 model (or None)."""
    if not cpu_has_fast_bf16():
        return {"status": "skipped: this CPU has no fast bf16 (AMX / AVX512-BF16)"}, None
    bf16, model = train_run(work, "bf16", epochs)
    fp32, _ = train_run(work, "fp32", epochs)
    a, b = bf16["best_val_loss"], fp32["best_val_loss"]
    relative = abs(a - b) / b if a is not None and b else None
    result = {
        "status": "ok",
        "epochs": epochs,
        "model": f"{work.cfg.n_layer} layers, {work.cfg.n_head} heads, {work.cfg.n_embd} wide",
        "seed": work.cfg.seed,
        "bf16": bf16,
        "fp32": fp32,
        "relative_difference": None if relative is None else round(relative, 5),
        "tolerance": TOLERANCE,
        "within_tolerance": relative is not None and relative <= TOLERANCE,
    }
    return result, model
