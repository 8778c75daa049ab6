"""Synthetic run metrics (metrics.json contract) with planted faults, for tests and demos.

``healthy_metrics()`` is a run that every training-curve check passes: initial loss near
ln V, a smooth exponential decay that plateaus, val a few percent above train_eval.
The ``plant_*`` functions return a copy with exactly one fault; ``with_update_ratios`` adds
the update-to-weight ratios the trainer logs every ``update_ratio_every`` steps, and
``with_conversation_losses`` the per-conversation eval losses it records at every epoch.
"""

from __future__ import annotations

import copy
import math
import random
from typing import Any


def healthy_metrics(
    epochs: int = 8, steps_per_epoch: int = 30, vocab_size: int = 120, seed: int = 0
) -> dict[str, Any]:
    """A converged, well-fitted run: loss 4.7 -> 0.08, plateau around epoch 5."""
    rng = random.Random(seed)
    floor, start, tau = 0.08, math.log(vocab_size) * 0.98, 15.0

    def curve(t: float) -> float:
        return floor + (start - floor) * math.exp(-t / tau)

    steps, rows = [], []
    for e in range(1, epochs + 1):
        losses = []
        for i in range(steps_per_epoch):
            t = (e - 1) * steps_per_epoch + i + 1
            loss = curve(t) * math.exp(rng.gauss(0.0, 0.05))
            losses.append(loss)
            steps.append({"step": t, "epoch": e, "loss": loss, "lr": 3e-4, "grad_norm": 1.0,
                          "tokens": 2000})
        end = curve(e * steps_per_epoch) * 0.97
        rows.append({"epoch": e, "train_loss": 1.1 * sum(losses) / len(losses),
                     "train_eval_loss": end, "val_loss": end * 1.04, "lr": 3e-4,
                     "seconds": 10.0, "tokens": 2000 * steps_per_epoch})
    best = min(rows, key=lambda r: r["val_loss"])
    return {
        "schema_version": 1, "run_name": "synthetic", "status": "completed",
        "n_params": 1_234_567, "vocab_size": vocab_size, "n_train": 810, "n_val": 90,
        "n_train_eval": 90, "initial_loss": math.log(vocab_size) * 0.98, "precision": "fp32",
        "device": "cpu", "torch_version": "2.x", "warmup_steps": 0,
        "steps_per_epoch": steps_per_epoch, "train_seconds": 10.0 * epochs,
        "tokens_per_second": 6000.0, "truncated_conversations": 0,
        "best_epoch": best["epoch"], "best_val_loss": best["val_loss"],
        "steps": steps, "epochs": rows, "events": [],
    }


def with_conversation_losses(metrics: dict[str, Any], n_val: int | None = None,
                             n_train_eval: int | None = None, spread: float = 0.15,
                             jitter: float = 0.02, seed: int = 0) -> dict[str, Any]:
    """A copy whose epochs carry per-conversation summed losses (``val_loss_sums``,
    ``train_eval_loss_sums``; ``val_tokens`` / ``train_eval_tokens``) of ``n_val`` and
    ``n_train_eval`` conversations (default: the metrics' ``n_val`` / ``n_train_eval``).
    Each conversation has 40-120 target tokens and a fixed difficulty (log-normal, sd
    ``spread``: 0.12-0.16 on the bundled corpus) times per-epoch noise (sd ``jitter``); the
    sums are scaled so that each epoch's mean is exactly its ``val_loss`` / ``train_eval_loss``."""
    rng = random.Random(seed)
    out = copy.deepcopy(metrics)
    for part, loss_key, n in (("val", "val_loss", n_val or out["n_val"]),
                              ("train_eval", "train_eval_loss",
                               n_train_eval or out["n_train_eval"])):
        tokens = [rng.randint(40, 120) for _ in range(n)]
        difficulty = [math.exp(rng.gauss(0.0, spread)) for _ in range(n)]
        out[f"{part}_tokens"], out[f"n_{part}"] = tokens, n
        for row in out["epochs"]:
            raw = [t * d * math.exp(rng.gauss(0.0, jitter))
                   for t, d in zip(tokens, difficulty, strict=True)]
            scale = row[loss_key] * sum(tokens) / sum(raw)
            row[f"{part}_loss_sums"] = [r * scale for r in raw]
    return out


def plant_spike(metrics: dict[str, Any], step: int = 100, factor: float = 10.0) -> dict[str, Any]:
    """One step loss ``factor`` times its neighbours (a learning-rate blow-up that recovered)."""
    out = copy.deepcopy(metrics)
    out["steps"][step - 1]["loss"] *= factor
    return out


def plant_nonfinite(metrics: dict[str, Any], step: int = 120) -> dict[str, Any]:
    """A NaN step loss, recorded the way the trainer does: ``null`` plus a nonfinite event."""
    out = copy.deepcopy(metrics)
    rec = out["steps"][step - 1]
    rec["loss"], rec["grad_norm"] = None, None
    out["events"].append({"step": step, "epoch": rec["epoch"], "kind": "nonfinite",
                          "message": "loss is nan; step skipped"})
    return out


def plant_val_rising(metrics: dict[str, Any], best_epoch: int = 5, rise: float = 0.03) -> dict:
    """Val loss climbs by ``rise`` per epoch after ``best_epoch`` while train_eval keeps falling."""
    out = copy.deepcopy(metrics)
    rows = out["epochs"]
    base = rows[best_epoch - 1]["val_loss"]
    for r in rows[best_epoch:]:
        r["val_loss"] = base + rise * (r["epoch"] - best_epoch)
        r["train_eval_loss"] *= 0.8
    out["best_epoch"], out["best_val_loss"] = best_epoch, base
    return out


def plant_bad_init(metrics: dict[str, Any], initial_loss: float = 9.0) -> dict[str, Any]:
    """An initial loss far above ln V (weights initialised too large)."""
    out = copy.deepcopy(metrics)
    out["initial_loss"] = initial_loss
    return out


def chapter_epochs() -> list[dict[str, Any]]:
    """The chapter's reported epochs (running train vs val) with plausible eval-mode train
    losses: "epoch 1: train 1.98, val 0.15", ..., "epoch 10: train 0.09, val 0.09"."""
    running = [1.98, 0.14, 0.11, 0.10, 0.09, 0.09, 0.09, 0.09, 0.09, 0.09]
    val = [0.15, 0.10, 0.095, 0.092, 0.09, 0.089, 0.089, 0.088, 0.088, 0.088]
    tev = [0.12, 0.06, 0.045, 0.035, 0.03, 0.028, 0.027, 0.026, 0.026, 0.026]
    return [{"epoch": i + 1, "train_loss": running[i], "train_eval_loss": tev[i],
             "val_loss": val[i], "lr": 3e-4, "seconds": 360.0, "tokens": 100_000}
            for i in range(10)]


UPDATE_GROUPS = ("embeddings", "attention", "mlp", "norms", "biases")


def with_update_ratios(metrics: dict[str, Any], ratio: float = 1e-3, every: int = 10,
                       spread: float = 0.2, seed: int = 0) -> dict[str, Any]:
    """A copy whose every ``every``-th step logs ``update_ratio`` for each group of
    :data:`UPDATE_GROUPS`: ``ratio`` times log-normal noise of sd ``spread`` (biases 30x,
    norms 0.1x: zero-initialised biases move a lot relative to their norm, unit LayerNorm
    gains little)."""
    rng = random.Random(seed)
    out = copy.deepcopy(metrics)
    scale = {"biases": 30.0, "norms": 0.1}
    for s in out["steps"]:
        if s["step"] % every == 0:
            s["update_ratio"] = {g: ratio * scale.get(g, 1.0) * math.exp(rng.gauss(0.0, spread))
                                 for g in UPDATE_GROUPS}
    return out


def plant_update_ratio(metrics: dict[str, Any], group: str = "attention", ratio: float = 0.3,
                       seed: int = 1) -> dict[str, Any]:
    """``group``'s logged update ratios set near ``ratio`` per step (0.3: every step rewrites
    the weights, a learning rate far too high for that group)."""
    rng = random.Random(seed)
    out = copy.deepcopy(metrics)
    for s in out["steps"]:
        if group in (s.get("update_ratio") or {}):
            s["update_ratio"][group] = ratio * math.exp(rng.gauss(0.0, 0.1))
    return out
