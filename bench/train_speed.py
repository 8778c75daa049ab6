"""Training throughput of the naive chapter pipeline, bankllm's trainer and the peer.

Every pipeline runs ``warmup`` untimed optimizer steps, then ``steps`` timed ones on the same
batches of the workload, spread over the epoch's range of batch sizes, twice: the first pass
meets most batch shapes for the first time (oneDNN builds its kernels for a new shape once),
the second repeats them. The steady rate comes from the second pass; the first
pass's extra time, per new shape, is the one-time cost the recipe pays once per distinct
shape. The timed steps are interleaved (round ``i`` runs step ``i`` of every pipeline), so
load from other processes on a shared machine falls on all of them alike. Reported per
pipeline: target (non-pad) tokens per second, milliseconds per optimizer step, the padding
share (computed input positions that were padding) and the model FLOP/s (6 x parameters x
target tokens per second: padding and attention scores not counted).
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from bankllm.config import TrainConfig
from bankllm.data import IGNORE_INDEX, collate, plan_micro_batches
from bankllm.precision import autocast, resolve_precision
from bankllm.steps import make_optimizer
from bankllm.training import Trainer
from bench import chapter, peer
from bench.workload import Workload

# one optimizer step on a batch -> (target tokens, computed input positions)
StepFn = Callable[[list[int]], tuple[int, int]]


@dataclass
class Pipeline:
    """A training pipeline ready to step, and what to report about it."""

    name: str
    step: StepFn
    n_params: int
    info: dict[str, Any] = field(default_factory=dict)
    max_steps: int | None = None  # fewer timed steps (the slow naive pipeline)
    # the (sequences, padded length) of each forward pass of a batch: what a kernel is built for
    shapes: Callable[[list[int]], set[tuple[int, int]]] | None = None


def flops_per_token(n_params: int) -> int:
    """Training FLOPs per token of a dense transformer: forward 2N, backward 4N."""
    return 6 * n_params


def pick(batches: Sequence[list[int]], start: int, count: int) -> list[list[int]]:
    """``count`` batches from ``start``, cycling when the epoch has fewer."""
    return [batches[(start + i) % len(batches)] for i in range(count)]


def representative(
    batches: Sequence[list[int]], lengths: Sequence[int], count: int
) -> list[list[int]]:
    """``count`` batches spread evenly over the epoch's range of batch sizes (in tokens), in
    epoch order: their mean size is close to the epoch's, so tokens/s projects the recipe."""
    if count >= len(batches):
        return pick(batches, 0, count)
    by_size = sorted(range(len(batches)), key=lambda i: sum(lengths[j] for j in batches[i]))
    chosen = sorted(by_size[int((k + 0.5) * len(batches) / count)] for k in range(count))
    return [batches[i] for i in chosen]


def measure(
    pipelines: list[Pipeline], work: Workload, warmup: int, steps: int
) -> dict[str, dict[str, Any]]:
    """Warm every pipeline up, then time their steps in interleaved rounds, in two passes."""
    warm = pick(work.batches, 0, warmup)
    for p in pipelines:
        for batch in warm:
            p.step(batch)
    timed = representative(work.batches, work.train.lengths, steps)
    # per pass: steps, tokens, computed positions, seconds
    totals = {p.name: [[0, 0, 0, 0.0], [0, 0, 0, 0.0]] for p in pipelines}
    steady_steps: dict[str, list[float]] = {p.name: [] for p in pipelines}
    for first_pass in (True, False):
        for i, batch in enumerate(timed):
            for p in pipelines:
                if p.max_steps is not None and i >= p.max_steps:
                    continue
                start = time.perf_counter()
                tokens, computed = p.step(batch)
                total = totals[p.name][0 if first_pass else 1]
                total[0] += 1
                total[1] += tokens
                total[2] += computed
                elapsed = time.perf_counter() - start
                total[3] += elapsed
                if not first_pass:
                    steady_steps[p.name].append(round(elapsed, 4))
    results = {}
    for p in pipelines:
        first, (n, tokens, computed, seconds) = totals[p.name]
        real = sum(work.train.lengths[j] for b in timed[:n] for j in b)
        tps = tokens / seconds
        shapes = p.shapes or (lambda _: set())
        seen = set().union(*(shapes(b) for b in warm))
        new = set().union(*(shapes(b) for b in timed[:n])) - seen
        extra = max(first[3] - seconds, 0.0)
        results[p.name] = {
            "status": "ok",
            "steps": n,
            "sequences": sum(len(b) for b in timed[:n]),
            "target_tokens": tokens,
            "seconds": round(seconds, 4),
            "tokens_per_second": round(tps, 1),
            "ms_per_step": round(1000 * seconds / n, 2),
            "first_pass_tokens_per_second": round(first[1] / first[3], 1),
            "new_shapes": len(new),
            "ms_per_new_shape": round(1000 * extra / len(new), 1) if new else 0.0,
            "padding_share": round(1.0 - real / computed, 4) if computed else 0.0,
            # the second pass's seconds per step, in round order (per-round ratios)
            "step_seconds": steady_steps[p.name],
            "flops_per_second": round(flops_per_token(p.n_params) * tps),
            **p.info,
        }
        if p.name == "naive":
            micro = sum(math.ceil(len(b) / chapter.MICRO_BATCH) for b in timed[:n])
            results[p.name]["ms_per_micro_batch"] = round(1000 * seconds / micro, 2)
    return results


def naive_pipeline(work: Workload, max_steps: int | None = None) -> Pipeline:
    """The chapter: pad to the context, fp32, 8 micro-batches of 4, ``loss / 8``, AdamW."""
    cfg = work.cfg
    torch.manual_seed(cfg.seed)
    model = chapter.ChapterGPT(work.model_config())
    model.train()
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), weight_decay=cfg.weight_decay
    )

    def step(batch: list[int]) -> tuple[int, int]:
        tokens, positions = chapter.chapter_accumulate(model, work.train, batch, work.pad_id)
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return tokens, positions

    info = {
        "precision": "fp32",
        "micro_batches": "4x8, pad to 256",
        "padding_share_recipe": round(
            1.0 - sum(work.train.lengths) / (len(work.train) * cfg.block_size), 4
        ),
    }
    n_params = sum(p.numel() for p in model.parameters())
    return Pipeline("naive", step, n_params, info, max_steps)


def bankllm_pipeline(work: Workload, precision: str, name: str, stack: ExitStack) -> Pipeline:
    """bankllm's trainer itself (``Trainer._train_step``: accumulation, clipping, AdamW)."""
    cfg = replace(work.cfg, precision=precision)
    tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-"))
    trainer = Trainer(cfg, f"{tmp}/run", show_progress=False, log=lambda _: None)
    if trainer.train_data.lengths != work.train.lengths:
        raise RuntimeError("the trainer's train split differs from the workload's")

    def step(batch: list[int]) -> tuple[int, int]:
        before = trainer.padded_tokens
        record = trainer._train_step(batch)
        return record["tokens"], trainer.padded_tokens - before

    info = {
        "precision": trainer.precision,
        "micro_batches": _describe_micro(cfg),
        "padding_share_recipe": round(
            work.recipe_padding_share(cfg.micro_batch_size, cfg.micro_batch_tokens), 4
        ),
        "threads": torch.get_num_threads(),
    }
    return Pipeline(name, step, trainer.model.num_params(), info, shapes=work.batch_shapes)


def peer_pipeline(work: Workload, precision: str) -> Pipeline | dict[str, Any]:
    """The transformers GPT-2 of the same shape on bankllm's micro-batches, loss and AdamW;
    a status record instead when ``transformers`` is not installed."""
    version = peer.transformers_version()
    if version is None:
        return {
            "status": "unavailable: transformers is not installed "
            "(pip install 'bankllm[bench]' or pip install transformers)"
        }
    cfg, device, tok = work.cfg, torch.device("cpu"), work.tokenizer
    precision = resolve_precision(precision, device)
    torch.manual_seed(cfg.seed)
    model = peer.make_peer(work.model_config(), tok.pad_id, tok.bos_id, tok.eos_id)
    model.train()
    optimizer = make_optimizer(model, cfg, device)

    def step(batch: list[int]) -> tuple[int, int]:
        plan = plan_micro_batches(
            batch, work.train.lengths, cfg.micro_batch_size, cfg.micro_batch_tokens
        )
        parts = [collate(work.train, mb, tok.pad_id) for mb in plan]
        tokens = sum(int((y != IGNORE_INDEX).sum()) for _, y in parts)
        for x, y in parts:
            with autocast(device, precision):
                loss = peer.peer_loss(model, x, y)
            (loss / tokens).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return tokens, sum(x.numel() for x, _ in parts)

    info = {
        "precision": precision,
        "micro_batches": _describe_micro(cfg),
        "padding_share_recipe": round(
            work.recipe_padding_share(cfg.micro_batch_size, cfg.micro_batch_tokens), 4
        ),
        "transformers": version,
        "attention": str(getattr(model.config, "_attn_implementation", "?")),
        "activation": model.config.activation_function,
    }
    n_params = sum(p.numel() for p in model.parameters())
    return Pipeline(f"peer_{precision}", step, n_params, info, shapes=work.batch_shapes)


def _describe_micro(cfg: TrainConfig) -> str:
    if cfg.micro_batch_size:
        return f"{cfg.micro_batch_size}x{cfg.batch_size // cfg.micro_batch_size}"
    return f"auto <= {cfg.micro_batch_tokens} tok"


def recipe_projection(
    work: Workload, naive: dict[str, Any], bankllm: dict[str, Any]
) -> dict[str, Any]:
    """The full recipe's training time (all epochs' steps; per-epoch evaluation excluded).

    The naive pipeline always computes 4 x 256 positions, so its micro-batches times its
    steady ms per micro-batch; bankllm's target tokens at its steady rate, plus its one-time
    cost per new shape times the recipe's distinct batch shapes.
    """
    out: dict[str, Any] = {"label": "projected", "epochs": work.cfg.epochs}
    micro = sum(math.ceil(len(b) / chapter.MICRO_BATCH) for batches in work.epochs for b in batches)
    if naive.get("status") == "ok":
        out["naive_seconds"] = round(micro * naive["ms_per_micro_batch"] / 1000, 1)
    if bankllm.get("status") == "ok":
        # steady steps, plus the one-time cost of each batch shape the recipe meets
        shapes = len(work.recipe_shapes())
        one_time = shapes * bankllm["ms_per_new_shape"] / 1000
        steady = work.recipe_target_tokens() / bankllm["tokens_per_second"]
        out["bankllm_shapes"] = shapes
        out["bankllm_one_time_seconds"] = round(one_time, 1)
        out["bankllm_seconds"] = round(steady + one_time, 1)
    if "naive_seconds" in out and "bankllm_seconds" in out:
        out["speedup"] = round(out["naive_seconds"] / out["bankllm_seconds"], 4)
    return out
