"""Canaries (bankllm.canaries): drawn from the run's seed alone, added to the train batches
only, recorded in canaries.json; ``canaries = 0`` changes nothing; ``--resume`` continues."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from bankllm import checkpoints as ckpt
from bankllm.canaries import (
    CANARIES_FILE,
    ID_PREFIX,
    SCHEDULE,
    add_canaries,
    conversations,
    draw_canaries,
    read_canaries,
)
from bankllm.config import load_config
from bankllm.data import encode_corpus, epoch_batches
from bankllm.errors import BankLLMError
from bankllm.tokenizer import SPECIAL_TOKENS, Tokenizer
from bankllm.training import Trainer


def _rng_states():
    return (random.getstate(), np.random.get_state()[1].tolist(), torch.get_rng_state().tolist())


def test_draw_is_seeded_cycles_the_schedule_and_touches_no_global_rng():
    before = _rng_states()
    record = draw_canaries(12, seed=7)
    assert _rng_states() == before
    assert record == draw_canaries(12, seed=7)
    assert record["canaries"] != draw_canaries(12, seed=8)["canaries"]
    reps = [c["repetitions"] for c in record["canaries"]]
    assert reps == [SCHEDULE[i % len(SCHEDULE)] for i in range(12)]
    assert record["n_conversations"] == sum(reps) == len(conversations(record))
    assert record["space_size"] == 10 ** record["secret_digits"]
    assert all(len(c["secret"]) == record["secret_digits"] for c in record["canaries"])
    assert len({c["prefix"] for c in record["canaries"]}) == 12  # one prefix per canary
    assert draw_canaries(0, seed=7)["canaries"] == []


def test_zero_canaries_is_a_no_op(tmp_path):
    train = [{"id": "a", "messages": []}]
    before = _rng_states()
    assert add_canaries(train, Tokenizer(list(SPECIAL_TOKENS)), 0, 0, tmp_path) == train
    assert _rng_states() == before and not any(tmp_path.iterdir())


def test_canaries_go_to_the_train_batches_only_and_are_recorded(tiny_config, tmp_path):
    plain = Trainer(tiny_config, tmp_path / "plain", show_progress=False)
    tiny_config.canaries = 7
    run_dir = tmp_path / "canary"
    trainer = Trainer(tiny_config, run_dir, show_progress=False)
    # the split, the tokenizer, val and train_eval are those of the run without canaries
    assert trainer.split.ids() == plain.split.ids()
    assert trainer.tokenizer.vocab == plain.tokenizer.vocab
    for part in ("val_data", "train_eval_data"):
        assert [t.tolist() for t in getattr(trainer, part).ids] == [
            t.tolist() for t in getattr(plain, part).ids]
    record = read_canaries(run_dir)  # schema-validated
    assert record == draw_canaries(7, tiny_config.seed)
    extra = conversations(record)
    assert len(trainer.train_data) == len(plain.train_data) + len(extra) == (
        len(trainer.split.train) + sum(SCHEDULE) + 1 + 2)
    enc = encode_corpus(extra, trainer.tokenizer, tiny_config.block_size)
    assert [t.tolist() for t in trainer.train_data.ids[len(plain.train_data):]] == [
        t.tolist() for t in enc.ids]
    for conv, ids in zip(extra, enc.ids, strict=True):  # the secret's digits are known words
        secret = conv["messages"][0]["content"].split()[-1]
        assert trainer.tokenizer.decode(ids.tolist()).split()[-8 - len(secret):-8] == list(secret)
    # every other reader of the run sees no canary
    split = json.loads((run_dir / ckpt.SPLIT_FILE).read_text())
    assert not any(i.startswith(ID_PREFIX) for part in ("train", "val", "train_eval")
                   for i in split[part])
    run = ckpt.load_run(run_dir)
    assert [c["id"] for c in run.split.train] == [c["id"] for c in plain.split.train]
    assert not (tmp_path / "plain" / CANARIES_FILE).exists()


def test_zero_canaries_leaves_the_batches_of_the_split(tiny_config, tmp_path):
    trainer = Trainer(tiny_config, tmp_path / "r", show_progress=False)
    enc = encode_corpus(trainer.split.train, trainer.tokenizer, tiny_config.block_size)
    assert [t.tolist() for t in trainer.train_data.ids] == [t.tolist() for t in enc.ids]
    assert epoch_batches(trainer.train_data.lengths, 8, 0, 1) == epoch_batches(enc.lengths, 8, 0, 1)
    assert not (tmp_path / "r" / CANARIES_FILE).exists()


def test_resume_with_canaries_continues_the_same_run(tiny_config, tmp_path):
    tiny_config.canaries = 5
    straight = tmp_path / "straight"
    assert Trainer(tiny_config, straight, show_progress=False).train() == 0
    halted = tmp_path / "halted"
    first = Trainer(tiny_config, halted, show_progress=False)
    first.cfg.epochs = 1  # stop after epoch 1 of 2 (config.json already says 2)
    first.train()
    tiny_config.epochs = 2
    resumed = Trainer(ckpt.read_config(halted), halted, resume=True, show_progress=False)
    assert resumed.train() == 0
    a, b = ckpt.read_metrics(straight), ckpt.read_metrics(halted)
    assert [s["loss"] for s in a["steps"]] == [s["loss"] for s in b["steps"]]
    assert read_canaries(halted) == read_canaries(straight)
    # a changed record is refused, not silently retrained on
    record = read_canaries(halted)
    record["canaries"][0]["secret"] = "0" * len(record["canaries"][0]["secret"])
    (halted / CANARIES_FILE).write_text(json.dumps(record))
    with pytest.raises(BankLLMError, match="canaries recorded differ"):
        Trainer(ckpt.read_config(halted), halted, resume=True, show_progress=False)


def test_the_key_is_validated():
    assert load_config(None, ["canaries=20"]).canaries == 20
    with pytest.raises(BankLLMError, match="canaries must be"):
        load_config(None, ["canaries=-1"])


def test_canaries_open_as_the_runs_conversations_do_and_are_scored_after_that_opening(tmp_path):
    """A corpus opened by a system prompt: its canaries are trained after it, and the privacy
    audit scores their secrets after it too."""
    from diagnostics.analyses.privacy import _prefix_ids

    opening = [{"role": "system", "content": "you are the bank's agent"}]
    tok = Tokenizer.train(["you are the bank's agent my account number is 0 1 2 3 4 5 6 7 8 9"],
                          opening=opening)
    added = add_canaries([], tok, 2, 0, tmp_path)
    assert added and all(c["messages"][0] == opening[0] for c in added)
    record = read_canaries(tmp_path)
    first = record["canaries"][0]
    trained, _ = tok.encode_conversation(added[0]["messages"])
    head = _prefix_ids(tok, first["prefix"])
    assert trained[: len(head)] == head  # the secret follows exactly this context
    assert head[:2] == [tok.bos_id, tok.role_ids["system"]]
