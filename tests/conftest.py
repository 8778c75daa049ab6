"""Shared fixtures of the unit tests: a small corpus and a tiny model config."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from bankllm.config import TrainConfig

ACCOUNTS = ("checking", "savings", "credit card")


def make_conversations(n: int = 60, seed: int = 0) -> list[dict]:
    """Small banking conversations of 1 or 2 exchanges and unequal lengths."""
    rng = random.Random(seed)
    conversations = []
    for i in range(n):
        account = rng.choice(ACCOUNTS)
        amount = f"${rng.randint(10, 9999):,}.{rng.randint(0, 99):02d}"
        messages = [
            {"role": "customer", "content": f"How much money is in my {account} account?"},
            {"role": "agent", "content": f"Your {account} account balance is {amount}."},
        ]
        if rng.random() < 0.5:
            messages += [
                {"role": "customer", "content": "Thanks, and what is the overdraft fee?"},
                {"role": "agent", "content": "The overdraft fee is $35 per item."},
            ]
        conversations.append(
            {
                "id": f"c{i:03d}",
                "intent": "check_balance",
                "slots": {"account_type": account},
                "messages": messages,
            }
        )
    return conversations


def write_corpus(path: Path, n: int = 60, seed: int = 0) -> Path:
    """``path`` holding :func:`make_conversations` as JSON Lines."""
    path.write_text("".join(json.dumps(c) + "\n" for c in make_conversations(n, seed)))
    return path


def make_tiny_config(corpus_file: Path) -> TrainConfig:
    """The ``tiny_config`` of a corpus (for fixtures of a wider scope than a test)."""
    return TrainConfig(
        n_layer=2,
        n_head=2,
        n_embd=32,
        block_size=64,
        dropout=0.0,
        data=str(corpus_file),
        epochs=2,
        batch_size=8,
        micro_batch_size=4,
        lr=3e-3,
        min_lr=3e-4,
        precision="fp32",
        threads=1,
    )


@pytest.fixture
def corpus_file(tmp_path: Path) -> Path:
    return write_corpus(tmp_path / "corpus.jsonl")


@pytest.fixture
def tiny_config(corpus_file: Path) -> TrainConfig:
    return make_tiny_config(corpus_file)
