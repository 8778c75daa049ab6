"""Diagnostic power of ``generation``: a decoder whose cached steps read positions off by one
FAILs, the trainer's decoder PASSes, a miss or two on a handful of answers never FAILs."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from bankllm import generation
from bankllm.checkpoints import load_model, load_run
from bankllm.training import Trainer
from diagnostics.analyses.generation import (
    NAME,
    Measured,
    analyse_generation,
    decoder_prompts,
    measure_generation,
)
from diagnostics.thresholds import Thresholds
from tests.conftest import make_tiny_config, write_corpus

TH = Thresholds().for_check(NAME)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny run trained long enough for position to matter to its answers."""
    root = tmp_path_factory.mktemp("generation")
    cfg = replace(make_tiny_config(write_corpus(root / "corpus.jsonl", n=80)), epochs=6)
    assert Trainer(cfg, root / "run", show_progress=False, log=lambda _: None).train() == 0
    return root / "run"


def _measure(run_dir: Path):
    run = load_run(run_dir)
    model = load_model(run_dir, config=run.config, tokenizer=run.tokenizer)
    prompts = decoder_prompts(run.split.val, run.split.train, run.tokenizer,
                              model.config.block_size, 150)
    val_only = decoder_prompts(run.split.val, [], run.tokenizer, model.config.block_size, 150)
    assert len(val_only) < len(prompts)  # a tiny val set, topped up from train
    return measure_generation(model, run.tokenizer, prompts, 12, TH["tolerance"])


def test_the_decoder_agrees_with_the_forward_pass_and_one_off_by_one_fails(trained, monkeypatch):
    healthy = analyse_generation(_measure(trained), TH)
    assert healthy.status == "PASS", healthy.reason
    assert healthy.values["agree_share"] == 1.0 and healthy.values["answers_with_a_miss"] == 0

    forward = generation._forward_static

    def shifted(model, idx, positions, mask, cache, start):  # the planted fault
        if idx.size(1) == 1:  # a cached decoding step reads the previous token's position
            positions = (positions - 1).clamp(min=0)
        return forward(model, idx, positions, mask, cache, start)

    monkeypatch.setattr(generation, "_forward_static", shifted)
    faulty = analyse_generation(_measure(trained), TH)
    assert faulty.status == "FAIL", faulty.reason
    assert faulty.values["agree_share_ci95_high"] < TH["agree_fail"]
    assert "the decoder (positions, KV cache or padding mask)" in faulty.reason
    assert faulty.details["tables"][0]["rows"]  # the first disagreements, shown


def test_a_miss_on_a_few_answers_is_no_conclusive_evidence():
    few = Measured(agree=[10, 9, 10], tokens=[10, 10, 10])  # 29 of 30, one answer
    few.misses.append({"prompt": "p", "position": 3, "generated": "a", "first_choice": "b",
                       "gap_nats": 0.01})
    result = analyse_generation(few, TH)
    assert result.status == "WARN", result.reason
    assert "inconclusive" in result.reason and "'a' where the forward pass ranks 'b'" \
        in result.reason
    assert analyse_generation(Measured(), TH).status == "SKIP"
    broken = analyse_generation(Measured(agree=[3], tokens=[3], nonfinite=2), TH)
    assert broken.status == "SKIP" and "non-finite log-probabilities on 2 answers" in broken.reason
