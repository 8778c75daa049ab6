"""Scoring a model on an encoded corpus, one total per conversation.

The trainer's val loss is the mean token loss over all target tokens of the val set; the
diagnostics (the n-gram baselines, the paired regression gate) need the same loss split by
conversation, so that intervals can resample whole conversations.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from bankllm.data import IGNORE_INDEX, EncodedCorpus, collate
from bankllm.precision import inference


def per_conversation_losses(
    model: torch.nn.Module,
    corpus: EncodedCorpus,
    pad_id: int,
    precision: str = "fp32",
    batch_size: int = 32,
    device: torch.device | str | None = None,
    indices: Sequence[int] | None = None,
) -> list[tuple[float, int]]:
    """``(summed token loss in nats, target tokens)`` of each conversation of ``corpus``, in
    corpus order, scored in eval mode (dropout off; the model's mode is restored) without
    autograd, on ``device`` (default: the model's), in right-padded batches of similar
    lengths. Targets are exactly those of the trainer's loss (:func:`~bankllm.data.collate`:
    ``loss_on`` mask, truncation to ``block_size``); ``sum(losses) / sum(tokens)`` is the
    trainer's val loss (:func:`bankllm.steps.evaluate` is this function). With ``indices``
    only those conversations are scored. A conversation without target tokens, or not
    scored, gives ``(0.0, 0)``. ``model(x)`` must return ``(logits, ...)`` of shape (B, T, V).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    out: list[tuple[float, int]] = [(0.0, 0)] * len(corpus)
    # similar lengths together: little padding (right padding never changes a causal loss)
    order = sorted(range(len(corpus)) if indices is None else indices,
                   key=lambda i: corpus.lengths[i])
    with inference(model, precision):
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            x, y = collate(corpus, batch, pad_id)
            x, y = x.to(device), y.to(device)
            logits = model(x)[0].float()
            loss = F.cross_entropy(logits.transpose(1, 2), y, ignore_index=IGNORE_INDEX,
                                   reduction="none")  # (B, T), 0 where ignored
            sums = loss.double().sum(dim=1).tolist()
            counts = (y != IGNORE_INDEX).sum(dim=1).tolist()
            for i, s, n in zip(batch, sums, counts, strict=True):
                out[i] = (float(s), int(n))
    return out


def continuation_logprobs(
    model: torch.nn.Module,
    contexts: list[list[int]],
    continuations: list[list[int]],
    pad_id: int,
    precision: str | None = "fp32",
    batch_size: int = 64,
) -> list[float]:
    """The summed log-probability (nats) of each continuation's tokens following its context,
    teacher-forced (eval mode, no autograd; right-padded batches, so padding never changes a
    causal prediction). A context and continuation longer than ``block_size + 1`` tokens lose
    their oldest context tokens; a continuation must have 1 to ``block_size`` tokens."""
    block = model.config.block_size
    seqs, ends = [], []
    for ctx, cont in zip(contexts, continuations, strict=True):
        if not 1 <= len(cont) <= block or not ctx:
            raise ValueError(f"need a context and a continuation of 1 to {block} tokens, got "
                             f"{len(ctx)} and {len(cont)}")
        seqs.append([*ctx, *cont][-(block + 1):])
        ends.append(len(cont))
    out = [0.0] * len(seqs)
    device = next(model.parameters()).device
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
    with inference(model, precision):
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            width = max(len(seqs[i]) for i in batch) - 1
            x = torch.full((len(batch), width), pad_id, dtype=torch.long, device=device)
            y = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long, device=device)
            for r, i in enumerate(batch):
                seq = torch.tensor(seqs[i], dtype=torch.long)
                n = len(seqs[i]) - 1
                x[r, :n] = seq[:-1]
                y[r, n - ends[i]:n] = seq[-ends[i]:]
            logits = model(x)[0].float()
            nll = F.cross_entropy(logits.transpose(1, 2), y, ignore_index=IGNORE_INDEX,
                                  reduction="none")
            for i, total in zip(batch, nll.double().sum(dim=1).tolist(), strict=True):
                out[i] = -total
    return out
