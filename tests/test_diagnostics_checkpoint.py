"""Diagnostic power of ``checkpoint``: best weights that are not the best epoch's, or not what
training scored, FAIL; the weights a healthy run saved PASS; differences of kernel size never
FAIL."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from bankllm import checkpoints
from bankllm.checkpoints import load_model, load_run
from bankllm.data import encode_corpus
from bankllm.evaluation import per_conversation_losses
from bankllm.training import Trainer
from diagnostics.analyses.checkpoint import NAME, analyse_checkpoint
from diagnostics.thresholds import Thresholds
from tests.conftest import make_tiny_config, write_corpus

TH = Thresholds().for_check(NAME)


def _metrics(per_epoch: list[list[float]], best: int, tokens: list[int]) -> dict:
    """metrics.json of a run whose epoch ``i + 1`` scored ``per_epoch[i]`` per val conversation."""
    epochs = [{"epoch": i + 1, "val_loss": sum(s) / sum(tokens), "val_loss_sums": s}
              for i, s in enumerate(per_epoch)]
    return {"best_epoch": best, "best_val_loss": epochs[best - 1]["val_loss"],
            "epochs": epochs, "val_tokens": tokens}


TOKENS = [40, 55, 38, 61]
EPOCHS = [[120.0, 160.0, 110.0, 170.0], [80.0, 110.0, 75.0, 118.0], [60.0, 90.0, 58.0, 95.0]]


def test_the_best_epochs_own_scores_pass():
    rescored = list(zip(EPOCHS[2], TOKENS, strict=True))
    result = analyse_checkpoint(rescored, _metrics(EPOCHS, 3, TOKENS), TH)
    assert result.status == "PASS" and result.values["rel_difference"] == 0.0, result.reason


def test_weights_of_another_epoch_fail_and_the_reason_names_it():
    rescored = list(zip(EPOCHS[1], TOKENS, strict=True))  # saved at epoch 2, best at 3
    result = analyse_checkpoint(rescored, _metrics(EPOCHS, 3, TOKENS), TH)
    assert result.status == "FAIL" and "holds epoch 2's weights" in result.reason, result.reason
    assert result.values["nearest_epoch"] == 2


def test_weights_that_score_no_epoch_fail():
    rescored = [(s * 1.04, n) for s, n in zip(EPOCHS[2], TOKENS, strict=True)]
    result = analyse_checkpoint(rescored, _metrics(EPOCHS, 3, TOKENS), TH)
    assert result.status == "FAIL" and "no epoch's" in result.reason, result.reason


def test_other_val_targets_fail():
    rescored = list(zip(EPOCHS[2], [40, 55, 38, 60], strict=True))
    result = analyse_checkpoint(rescored, _metrics(EPOCHS, 3, TOKENS), TH)
    assert result.status == "FAIL" and "val targets differ" in result.reason


@pytest.mark.parametrize("scale,status", [(1.0004, "PASS"), (0.9997, "PASS"), (1.003, "WARN"),
                                          (0.996, "WARN"), (1.006, "FAIL")])
def test_a_single_conversation_fails_only_beyond_the_fail_line(scale, status):
    metrics = _metrics([[50.0], [30.0]], 2, [40])
    result = analyse_checkpoint([(30.0 * scale, 40)], metrics, TH)
    assert result.status == status, result.reason


def test_a_run_without_a_best_epoch_skips():
    assert analyse_checkpoint([], {"best_epoch": None, "epochs": []}, TH).status == "SKIP"


def _rescore(run_dir: Path) -> tuple[list[tuple[float, int]], dict]:
    run = load_run(run_dir)
    val = encode_corpus(run.split.val, run.tokenizer, run.config.block_size, run.config.loss_on)
    model = load_model(run_dir, "best", config=run.config, tokenizer=run.tokenizer)
    return (per_conversation_losses(model, val, run.tokenizer.pad_id,
                                    precision=run.metrics["precision"]), run.metrics)


def _train(root: Path) -> Path:
    root.mkdir()
    cfg = replace(make_tiny_config(write_corpus(root / "corpus.jsonl")), epochs=3)
    assert Trainer(cfg, root / "run", show_progress=False, log=lambda _: None).train() == 0
    return root / "run"


def test_a_trainer_that_keeps_its_first_best_weights_fails_and_a_healthy_one_passes(
        tmp_path, monkeypatch):
    healthy = analyse_checkpoint(*_rescore(_train(tmp_path / "healthy")), TH)
    assert healthy.status == "PASS", healthy.reason

    save = checkpoints.save_weights
    calls = []

    def first_only(*args, **kwargs):  # the planted fault: later bests never reach the file
        calls.append(args)
        if len(calls) == 1:
            save(*args, **kwargs)

    monkeypatch.setattr(checkpoints, "save_weights", first_only)
    rescored, metrics = _rescore(_train(tmp_path / "faulty"))
    assert len(calls) > 1 and metrics["best_epoch"] > 1  # val improved after the first save
    result = analyse_checkpoint(rescored, metrics, TH)
    assert result.status == "FAIL" and "holds epoch 1's weights" in result.reason, result.reason
