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
    """metrics.json of a run whose epoch ``i + 1`` scored ``per_epoch[i]`` per val conversation
    and, on its train_eval conversations, 0.8 of that."""
    epochs = [{"epoch": i + 1, "val_loss": sum(s) / sum(tokens), "val_loss_sums": s,
               "train_eval_loss": 0.8 * sum(s) / sum(tokens),
               "train_eval_loss_sums": [0.8 * x for x in s]} for i, s in enumerate(per_epoch)]
    return {"best_epoch": best, "best_val_loss": epochs[best - 1]["val_loss"],
            "epochs": epochs, "val_tokens": tokens, "train_eval_tokens": tokens}


TOKENS = [40, 55, 38, 61]
EPOCHS = [[120.0, 160.0, 110.0, 170.0], [80.0, 110.0, 75.0, 118.0], [60.0, 90.0, 58.0, 95.0]]


def _scores(sums: list[float], scale: float = 1.0, tokens: list[int] = TOKENS) -> dict:
    """Rescored val losses ``sums`` (times ``scale``) and train_eval ones 0.8 of them."""
    return {"val": [(scale * s, n) for s, n in zip(sums, tokens, strict=True)],
            "train_eval": [(0.8 * s, n) for s, n in zip(sums, TOKENS, strict=True)]}


def test_the_best_epochs_own_scores_pass():
    result = analyse_checkpoint(_scores(EPOCHS[2]), _metrics(EPOCHS, 3, TOKENS), TH)
    assert result.status == "PASS" and result.values["val_rel_difference"] == 0.0, result.reason
    assert result.values["train_eval_rel_difference"] == 0.0


def test_weights_of_another_epoch_fail_and_the_reason_names_it():
    rescored = _scores(EPOCHS[1])  # saved at epoch 2, best at 3
    result = analyse_checkpoint(rescored, _metrics(EPOCHS, 3, TOKENS), TH)
    assert result.status == "FAIL" and "holds epoch 2's weights" in result.reason, result.reason
    assert result.values["val_nearest_epoch"] == 2


def test_a_best_checkpoint_replaced_by_a_worse_epoch_fails():
    """A trainer that saves every epoch (val rose after epoch 2): the weights are epoch 3's
    and score its loss, as the record says, but epoch 2 scored lower, so 'best' is not."""
    rising = [EPOCHS[0], EPOCHS[2], EPOCHS[1]]
    result = analyse_checkpoint(_scores(rising[2]), _metrics(rising, 3, TOKENS), TH)
    assert result.status == "FAIL", result.reason
    assert result.reason.startswith("epoch 2 scored a lower val loss")
    assert "a worse epoch replaced the best checkpoint" in result.reason
    assert result.values["lowest_val_epoch"] == 2
    tied = [EPOCHS[0], EPOCHS[2], EPOCHS[2]]  # equal losses: the trainer keeps the first
    assert analyse_checkpoint(_scores(tied[1]), _metrics(tied, 2, TOKENS), TH).status == "PASS"


def test_weights_that_score_no_epoch_fail():
    result = analyse_checkpoint(_scores(EPOCHS[2], 1.04), _metrics(EPOCHS, 3, TOKENS), TH)
    assert result.status == "FAIL" and "no epoch's recorded val loss" in result.reason


def test_other_val_targets_fail():
    rescored = _scores(EPOCHS[2], tokens=[40, 55, 38, 60])
    result = analyse_checkpoint(rescored, _metrics(EPOCHS, 3, TOKENS), TH)
    assert result.status == "FAIL" and "val targets differ" in result.reason


def test_train_eval_scored_on_other_conversations_fails():
    rescored = _scores(EPOCHS[2])
    rescored["train_eval"] = rescored["val"]  # what training recorded was not these
    result = analyse_checkpoint(rescored, _metrics(EPOCHS, 3, TOKENS), TH)
    assert result.status == "FAIL" and "recorded train_eval loss" in result.reason, result.reason
    assert result.values["val_rel_difference"] == 0.0


@pytest.mark.parametrize("scale,status", [(1.0004, "PASS"), (0.9997, "PASS"), (1.003, "WARN"),
                                          (0.996, "WARN"), (1.006, "FAIL")])
def test_a_single_conversation_fails_only_beyond_the_fail_line(scale, status):
    metrics = _metrics([[50.0], [30.0]], 2, [40])
    result = analyse_checkpoint({"val": [(30.0 * scale, 40)]}, metrics, TH)
    assert result.status == status, result.reason


def test_a_run_without_a_best_epoch_skips():
    assert analyse_checkpoint({"val": []}, {"best_epoch": None, "epochs": []}, TH).status == "SKIP"


def _rescore(run_dir: Path) -> tuple[dict, dict]:
    run = load_run(run_dir)
    model = load_model(run_dir, "best", config=run.config, tokenizer=run.tokenizer)
    scores = {}
    for part in ("val", "train_eval"):
        enc = encode_corpus(getattr(run.split, part), run.tokenizer, run.config.block_size,
                            run.config.loss_on)
        scores[part] = per_conversation_losses(model, enc, run.tokenizer.pad_id,
                                               precision=run.metrics["precision"])
    return scores, run.metrics


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
