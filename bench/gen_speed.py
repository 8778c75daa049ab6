"""Greedy generation speed on the memorization workload: KV cache against recomputation.

Prompts are the val conversations cut before each agent turn (``<agent>`` appended), each
decoding the true answer's length plus its end token (``stop_at_turn_end=False``: the token
count does not depend on how well the model has learnt the answers; only ``<eos>`` stops a
row early). All paths are :func:`bankllm.generation.generate` in the same precision: batched
with its KV cache; batched with ``use_cache=False`` (the whole sequence recomputed at every
step); and naive, ``use_cache=False`` one prompt at a time, like the chapter's loop.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from bankllm.model import GPT
from bench.workload import Workload


def memorization_prompts(work: Workload, limit: int) -> tuple[list[list[int]], list[int]]:
    """Prompts (token ids) and per-prompt budgets: every agent turn of the val conversations."""
    tok = work.tokenizer
    prompts, budgets = [], []
    for conv in work.val_conversations:
        messages = conv["messages"]
        for j, message in enumerate(messages):
            if message["role"] != "agent" or j == 0:
                continue
            prompt = tok.encode_prompt(messages[:j])
            if len(prompt) < work.cfg.block_size:
                prompts.append(prompt)
                budgets.append(len(tok.encode_text(message["content"])) + 1)
    return prompts[:limit], budgets[:limit]


def bench_generation(
    work: Workload,
    model: GPT,
    precision: str,
    max_prompts: int,
    batch_size: int = 64,
    naive_prompts: int = 64,
) -> dict[str, Any]:
    """Tokens per second of greedy decoding: batched with the KV cache, batched recomputing
    (the same batches: what the cache alone buys), and naive (one prompt at a time,
    recomputing, as the chapter's loop; on the first ``naive_prompts`` prompts)."""
    try:
        from bankllm.generation import generate
    except ImportError:
        return {"status": "unavailable: bankllm.generation is not there yet"}
    prompts, budgets = memorization_prompts(work, max_prompts)
    if not prompts:
        return {"status": "skipped: no val prompt fits the context"}
    tok = work.tokenizer

    def run(use_cache: bool, size: int, n: int) -> dict[str, Any]:
        kwargs = dict(temperature=0.0, batch_size=size, use_cache=use_cache, precision=precision)
        kwargs["stop_at_turn_end"] = False
        generate(model, prompts[:4], tok, budgets[:4], **kwargs)  # warm-up
        start = time.perf_counter()
        out = generate(model, prompts[:n], tok, budgets[:n], **kwargs)
        seconds = time.perf_counter() - start
        tokens = sum(len(o) for o in out)
        return {
            "batch_size": size,
            "prompts": n,
            "tokens": tokens,
            "seconds": round(seconds, 3),
            "tokens_per_second": round(tokens / max(seconds, 1e-9), 1),
            "outputs": out,
        }

    n = len(prompts)
    with torch.no_grad():
        cached = run(True, batch_size, n)
        recompute = run(False, batch_size, n)
        naive = run(False, 1, min(n, naive_prompts))
    same = sum(a == b for a, b in zip(cached["outputs"], recompute["outputs"], strict=True))
    for r in (cached, recompute, naive):
        del r["outputs"]

    def speedup(base: dict[str, Any]) -> float | None:
        rate = base["tokens_per_second"]
        return round(cached["tokens_per_second"] / rate, 4) if rate else None

    return {
        "status": "ok",
        "precision": precision,
        "prompts": n,
        "mean_prompt_tokens": round(sum(map(len, prompts)) / n, 1),
        "mean_answer_tokens": round(sum(budgets) / n, 1),
        "cached": cached,
        "recompute": recompute,
        "naive_recompute": naive,
        "speedup_vs_recompute": speedup(recompute),
        "speedup": speedup(naive),
        "identical_outputs": round(same / n, 4),
    }
