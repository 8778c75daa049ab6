"""What one optimizer step and one evaluation compute.

AdamW with decoupled weight decay on weight matrices only; the cosine learning-rate schedule
with linear warm-up and a floor; gradient accumulation normalised by the target tokens of the
whole batch; a corpus scored in eval mode. :mod:`bankllm.training` runs
these in its loop.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any, NamedTuple

import torch

from bankllm import distributed
from bankllm.config import TrainConfig
from bankllm.data import IGNORE_INDEX, EncodedCorpus, collate, plan_micro_batches
from bankllm.evaluation import per_conversation_losses
from bankllm.model import GPT
from bankllm.precision import autocast


def make_optimizer(
    model: torch.nn.Module, cfg: TrainConfig, device: torch.device
) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices (dim >= 2) only; biases and LayerNorms undecayed."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), fused=True)


def lr_at(step: int, total_steps: int, cfg: TrainConfig) -> float:
    """Learning rate of optimizer step ``step`` (0-based): linear warm-up, cosine to min_lr."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    decay_steps = max(1, total_steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / decay_steps)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1.0 + math.cos(math.pi * progress))


class Evaluation(NamedTuple):
    """A corpus scored in eval mode: the mean per-token loss, and per conversation (in corpus
    order) the summed token loss in nats and the number of target tokens."""

    loss: float
    loss_sums: list[float]
    tokens: list[int]


def evaluate(
    model: GPT,
    corpus: EncodedCorpus,
    pad_id: int,
    device: torch.device,
    precision: str,
    batch_size: int = 32,
    ctx: distributed.Context | None = None,
) -> Evaluation:
    """``corpus`` scored in eval mode (dropout off; the mode is restored after) by
    :func:`~bankllm.evaluation.per_conversation_losses`: each conversation's summed loss and
    target tokens, and their mean over all target tokens.

    Under torchrun each process scores its share and the sums are gathered over processes.
    """
    ctx = ctx or distributed.Context()
    mine = ctx.shard(sorted(range(len(corpus)), key=lambda i: corpus.lengths[i]))
    scored = per_conversation_losses(model, corpus, pad_id, precision, batch_size, device, mine)
    sums, tokens = [s for s, _ in scored], [n for _, n in scored]
    if ctx.is_distributed:  # each conversation is scored by one process, 0 on the others
        shared = ctx.all_reduce_sum(*sums, *tokens)
        sums, tokens = shared[: len(corpus)], [round(n) for n in shared[len(corpus) :]]
    return Evaluation(sum(sums) / max(sum(tokens), 1), sums, tokens)


def accumulate_gradients(
    model: torch.nn.Module,
    corpus: EncodedCorpus,
    batch: list[int],
    micro_batch_size: int,
    pad_id: int,
    device: torch.device,
    precision: str,
    token_count: int | None = None,
    no_sync: Callable[[], Any] | None = None,
    micro_batch_tokens: int = 0,
) -> tuple[float, int, int]:
    """Backpropagate one optimizer batch in micro-batches; return (sum loss, tokens, padded).

    Each micro-batch's summed token loss is divided by ``token_count`` (default: the target
    tokens of the whole batch), so the accumulated gradient is exactly the gradient of the
    mean token loss over the batch, however it is cut into micro-batches
    (:func:`~bankllm.data.plan_micro_batches`: ``micro_batch_size`` 0 cuts by tokens).
    """
    plan = plan_micro_batches(batch, corpus.lengths, micro_batch_size, micro_batch_tokens)
    parts = [collate(corpus, mb, pad_id) for mb in plan]
    tokens = sum(int((y != IGNORE_INDEX).sum()) for _, y in parts)
    denominator = token_count if token_count is not None else tokens
    loss_sum, padded = 0.0, 0
    for i, (x, y) in enumerate(parts):
        x, y = x.to(device), y.to(device)
        padded += x.numel()
        last = i == len(parts) - 1
        with no_sync() if no_sync is not None and not last else nullcontext():
            with autocast(device, precision):
                loss = model(x, y, reduction="sum")[1]  # the logits freed before backward
            (loss / max(denominator, 1)).backward()
        loss_sum += float(loss.detach())
    return loss_sum, tokens, padded


#: the parameter groups whose update-to-weight ratios are logged, in this order
UPDATE_GROUPS = ("embeddings", "attention", "mlp", "norms", "biases")


def update_group(name: str) -> str:
    """The :data:`UPDATE_GROUPS` entry of a :class:`~bankllm.model.GPT` parameter ``name``:
    token and position embeddings (the tied output head included), attention (qkv and output
    projection) weights, MLP weights, LayerNorm weights and biases, the Linear biases."""
    if name.startswith(("wte.", "wpe.", "lm_head.")):
        return "embeddings"
    if ".ln_" in name or name.startswith("ln_"):
        return "norms"
    if name.endswith(".bias"):
        return "biases"
    if ".attn." in name:
        return "attention"
    if ".mlp." in name:
        return "mlp"
    raise ValueError(f"parameter {name!r} belongs to no update-ratio group")


def update_groups(model: torch.nn.Module) -> dict[str, list[torch.Tensor]]:
    """``model``'s trainable parameters by :func:`update_group` (each tensor once; groups
    without parameters left out)."""
    groups: dict[str, list[torch.Tensor]] = {g: [] for g in UPDATE_GROUPS}
    for name, p in model.named_parameters():
        if p.requires_grad:
            groups[update_group(name)].append(p)
    return {g: ps for g, ps in groups.items() if ps}


def snapshot(groups: dict[str, list[torch.Tensor]]) -> dict[str, list[torch.Tensor]]:
    """Detached copies of the parameters of ``groups`` (taken just before an optimizer step)."""
    return {g: [p.detach().clone() for p in ps] for g, ps in groups.items()}


def update_ratios(
    groups: dict[str, list[torch.Tensor]], before: dict[str, list[torch.Tensor]]
) -> dict[str, float | None]:
    """Per group, ``||w_after - w_before|| / ||w_before||`` over all its parameters together
    (Frobenius norms, in float64): the relative size of one optimizer step. None where the
    group's weights were all zero before the step (zero-initialised biases at step 1)."""
    out: dict[str, float | None] = {}
    with torch.no_grad():
        for g, params in groups.items():
            delta = sum(float((p.double() - b.double()).square().sum())
                        for p, b in zip(params, before[g], strict=True))
            scale = sum(float(b.double().square().sum()) for b in before[g])
            out[g] = math.sqrt(delta / scale) if scale > 0 else None
    return out
