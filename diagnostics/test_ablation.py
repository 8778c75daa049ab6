"""§6 half-data ablation: retrain on a stratified half of train (same config, seed, val set,
tokenizer) and compare best val losses; with >= 3 data sizes cached, fit the scaling curve.

The 50% run is trained once and cached under ``<run>/ablations/0.5`` (``bankllm.ablation``);
its file lock makes pytest-xdist workers (or concurrent sessions) train it once and reuse it.
``EM_val`` (greedy exact match on every val agent turn, as in §5) of the parent and of the 50%
model is cached in ``<run>/ablations/em_val.json``, keyed by each model's ``best.json``, the
prompts and the precision, so a rerun decodes nothing. Skipped with ``--no-ablation``. Writes
``<report-dir>/scaling_curve.png``.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest

from diagnostics.analyses.ablation import NAME, analyse_ablation, plot_scaling_curve
from diagnostics.results import CheckResult

pytestmark = pytest.mark.optional_section("ablation")
FRACTION = 0.5
EM_CACHE = "em_val.json"
EM_BATCH_SIZE = 128


def _cores() -> int:
    """All cores: the ablation is the long pole of the session, the other checks are short."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _em_val(run: Any, models: dict[float, Path]) -> dict[float, float]:
    """EM_val of each model directory (same tokenizer, val set and block size as ``run``), by
    fraction; {} when the memorization analysis (§5) is not installed. Cached, see above."""
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
    from bankllm.generation import run_precision

    items = [i for i in build_items([], run.split.val, run.tokenizer, run.config.block_size,
                                    n_train=0, seed=run.config.seed)
             if i.split == "val" and i.kind == "turn"]
    if not items:
        return {}
    prompts = hashlib.sha256(json.dumps([(i.prompt, i.expected) for i in items]).encode())
    cache_path = run.path / "ablations" / EM_CACHE
    out: dict[float, float] = {}
    with FileLock(str(cache_path.parent / f".{EM_CACHE}.lock")):
        cache = read_json(cache_path, "EM cache") if cache_path.is_file() else {}
        for fraction, path in models.items():
            precision = run_precision(read_metrics(path), "cpu")
            key = hashlib.sha256(json.dumps({
                "best": (path / "best.json").read_text(), "items": prompts.hexdigest(),
                "precision": precision}).encode()).hexdigest()
            entry = cache.get(f"{fraction:g}") or {}
            if entry.get("key") != key:
                model = load_model(path, "best", tokenizer=run.tokenizer)
                gens = collect_generations(
                    items, model_source(model, run.tokenizer, precision, EM_BATCH_SIZE))
                em = sum(g.generated == g.item.expected for g in gens) / len(gens)
                entry = cache[f"{fraction:g}"] = {"key": key, "em_val": em, "n": len(gens)}
                atomic_write_json(cache_path, cache)
            out[fraction] = float(entry["em_val"])
    return out


def test_ablation(pytestconfig, bankllm_run, thresholds, diagnose):
    """§6: rel_increase = (L50 - L100) / L100 of best val loss, EM_val of both, and the
    data-scaling fit when >= 3 data sizes are cached."""
    from bankllm.ablation import cached_ablations, ensure_ablation
    from bankllm.errors import BankLLMError
    from diagnostics.plugin import report_dir

    run = bankllm_run
    used = thresholds.for_check(NAME)
    status = run.metrics.get("status")
    if status != "completed":
        diagnose(CheckResult(NAME, "SKIP", f"the run is {status!r}, not completed: its best val "
                             "loss is not final; finish it before ablating", {}, used))
    try:
        half = ensure_ablation(run, FRACTION, show_progress=False, threads=_cores())
        cached = cached_ablations(run)
        em = _em_val(run, {1.0: run.path, FRACTION: half.path}) if half.status == "completed" \
            else {}
    except BankLLMError as exc:
        diagnose(CheckResult(NAME, "FAIL", f"cannot train the {FRACTION:g} ablation: {exc}",
                             {}, used))
        return
    if half.status != "completed":
        diagnose(CheckResult(NAME, "FAIL", f"the {FRACTION:g} ablation did not complete (status "
                             f"{half.status!r}): see {half.path / 'metrics.json'}", {}, used))
    points = {a.fraction: a for a in cached}
    points[half.fraction] = half
    result = analyse_ablation(
        run.metrics.get("best_val_loss"), len(run.split.train),
        [{"fraction": a.fraction, "n_train": a.n_train, "best_val_loss": a.best_val_loss}
         for a in points.values()],
        used, fraction=FRACTION, em_val=em,
        parent_still_improving=run.metrics.get("best_epoch") == len(run.metrics["epochs"]),
    )
    result.values["reused"] = half.reused
    result.values["ablation_train_seconds"] = half.seconds
    result.values["ablation_dir"] = str(half.path)
    if not em:
        result.details.setdefault("notes", []).append(
            "EM_val not compared: the memorization analysis (§5) is not available")
    png = plot_scaling_curve(result, report_dir(pytestconfig) / "scaling_curve.png")
    if png is not None:
        result.details.setdefault("notes", []).append(f"scaling curve: {png}")
    diagnose(result)
