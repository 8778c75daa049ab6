"""The inputs of the ablation check: the 50% retraining and EM_val of both models.

Both are cached on disk (``<run>/ablations/0.5`` by ``bankllm.ablation``, EM_val in
``<run>/ablations/em_val.json``) under file locks, so pytest-xdist workers and concurrent
sessions compute them once and later sessions reuse them. The check is collected first, so
under xdist the retraining starts at once and overlaps the other, shorter checks (measured:
quicker than training it alone in the controller before them, 108 s against 118 s).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

FRACTION = 0.5
EM_CACHE = "em_val.json"
EM_BATCH_SIZE = 128


def prepare_ablation(run: Any, threads: int | None = None) -> tuple[Any, dict[float, float]]:
    """Train (or reuse) the ``FRACTION`` ablation of ``run`` with ``threads`` torch threads and
    return it with ``{fraction: EM_val}`` of the parent (1.0) and the ablation ({} when the
    ablation did not complete or the memorization analysis is absent).

    Raises ``BankLLMError`` when the ablation cannot be trained (e.g. the parent is not
    completed or its corpus is gone)."""
    from bankllm.ablation import ensure_ablation, torch_threads

    half = ensure_ablation(run, FRACTION, show_progress=False, threads=threads)
    if half.status != "completed":
        return half, {}
    with torch_threads(threads):
        return half, em_val(run, {1.0: run.path, FRACTION: half.path})


def em_val(run: Any, models: dict[float, Path]) -> dict[float, float]:
    """EM_val (greedy exact match on every val agent turn, as the memorization check does) of
    each model directory (same tokenizer, val set and block size as ``run``), by fraction; {}
    when the memorization analysis is not installed. Cached, keyed by each model's ``best.json``,
    the prompts and the precision, so a rerun decodes nothing."""
    try:
        from diagnostics.analyses.memorization import (
            build_items,
            collect_generations,
            model_source,
        )
    except ImportError:
        return {}
    from filelock import FileLock

    from bankllm.checkpoints import load_model, read_metrics
    from bankllm.fileio import atomic_write_json, read_json
    from bankllm.precision import run_precision

    items = [
        i
        for i in build_items(
            [], run.split.val, run.tokenizer, run.config.block_size, n_train=0,
            seed=run.config.seed,
        )
        if i.split == "val" and i.kind == "turn"
    ]
    if not items:
        return {}
    prompts = hashlib.sha256(json.dumps([(i.prompt, i.expected) for i in items]).encode())
    cache_path = run.path / "ablations" / EM_CACHE
    out: dict[float, float] = {}
    with FileLock(str(cache_path.parent / f".{EM_CACHE}.lock")):
        cache = read_json(cache_path, "EM cache") if cache_path.is_file() else {}
        for fraction, path in models.items():
            precision = run_precision(read_metrics(path), "cpu")
            key = hashlib.sha256(
                json.dumps(
                    {
                        "best": (path / "best.json").read_text(),
                        "items": prompts.hexdigest(),
                        "precision": precision,
                    }
                ).encode()
            ).hexdigest()
            entry = cache.get(f"{fraction:g}") or {}
            if entry.get("key") != key:
                model = load_model(path, "best", tokenizer=run.tokenizer)
                gens = collect_generations(
                    items, model_source(model, run.tokenizer, precision, EM_BATCH_SIZE)
                )
                em = sum(g.generated == g.item.expected for g in gens) / len(gens)
                entry = cache[f"{fraction:g}"] = {"key": key, "em_val": em, "n": len(gens)}
                atomic_write_json(cache_path, cache)
            out[fraction] = float(entry["em_val"])
    return out
