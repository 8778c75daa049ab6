"""Memorization: exact/fuzzy/token match on train against val agent turns, k-extraction,
value regurgitation, each beside an untrained model's rates on the same prompts.

Generation is batched greedy KV-cache decoding (bf16 where the run trained in bf16); the
k-extraction queries are answered by teacher forcing. The trained and the untrained model see
exactly the same items (a seeded sample of ``memorization.n_train_turns`` train turns, every
val turn).
"""

from __future__ import annotations

import time

from diagnostics.analyses.memorization import (
    NAME,
    analyse_memorization,
    build_items,
    collect_generations,
    model_source,
    training_values,
)
from diagnostics.paired import compare_with_baseline

BATCH_SIZE = 128  # prompts per decoding batch: measured fastest on CPU (64-256 tried)


def test_memorization(bankllm_run, model, untrained_model, thresholds, baseline_outcomes,
                      diagnose):
    """Memorization gap EM_train - EM_val and value regurgitation, with chance baselines, and
    the gap's paired change against the baseline's outcomes on the same conversations."""
    from bankllm.precision import run_precision

    run = bankllm_run
    used = thresholds.for_check(NAME)
    precision = run_precision(run.metrics, next(model.parameters()).device)
    start = time.perf_counter()
    items = build_items(run.split.train, run.split.val, run.tokenizer, run.config.block_size,
                        n_train=int(used["n_train_turns"]), seed=run.config.seed)
    generations = collect_generations(
        items, model_source(model, run.tokenizer, precision, BATCH_SIZE))
    chance = collect_generations(
        items, model_source(untrained_model, run.tokenizer, precision, BATCH_SIZE))
    result = analyse_memorization(generations, chance, training_values(run.split.train),
                                  len(run.split.train), used)
    result.values["precision"] = precision
    result.values["seconds"] = time.perf_counter() - start
    diagnose(compare_with_baseline(result, baseline_outcomes))
