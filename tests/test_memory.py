"""The trainer bounds oneDNN's per-shape kernel caches (bench/README.md, Memory) unless the
environment sets them."""

from __future__ import annotations

import os

import pytest

from bankllm import memory
from bankllm.training import Trainer


def test_the_trainer_bounds_the_kernel_caches(tiny_config, tmp_path, monkeypatch):
    for name in memory.KERNEL_CACHE_VARIABLES:  # restored after the test
        monkeypatch.delenv(name, raising=False)
    Trainer(tiny_config, tmp_path / "a", show_progress=False).train()
    for name in memory.KERNEL_CACHE_VARIABLES:
        assert os.environ[name] == str(memory.KERNEL_CACHE_CAPACITY)


def test_kernel_caches_are_bounded_unless_the_environment_says_otherwise(monkeypatch):
    monkeypatch.delenv("ONEDNN_PRIMITIVE_CACHE_CAPACITY", raising=False)
    monkeypatch.setenv("LRU_CACHE_CAPACITY", "1024")
    memory.bound_kernel_caches(64)
    assert os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] == "64"
    assert os.environ["LRU_CACHE_CAPACITY"] == "1024"
    with pytest.raises(ValueError):
        memory.bound_kernel_caches(0)  # ideep crashes on an LRU capacity of 0
