"""The trainer bounds oneDNN's per-shape kernel caches unless the environment sets them, and
the training commands run with mimalloc unless told otherwise (bench/README.md, Memory)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from bankllm import cli, memory
from bankllm.errors import EXIT_USAGE, BankLLMError
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


def test_the_allocator_follows_the_environment(monkeypatch):
    library = memory.mimalloc_library()
    assert library is not None and library.is_file()  # a Linux dependency of bankllm
    env = memory.allocator_environment({"HOME": "/h"})
    assert env == {"HOME": "/h", "LD_PRELOAD": str(library), "MIMALLOC_PURGE_DECOMMITS": "0"}
    chosen = {memory.ALLOCATOR_VARIABLE: "mimalloc", "MIMALLOC_PURGE_DECOMMITS": "1"}
    env = memory.allocator_environment(chosen)
    assert env["LD_PRELOAD"] == str(library)
    assert env["MIMALLOC_PURGE_DECOMMITS"] == "1"  # a mimalloc option the user sets stands
    assert memory.allocator_environment({memory.ALLOCATOR_VARIABLE: "system"}) is None
    torchrun_worker = memory.allocator_environment({"LOCAL_RANK": "1"})
    assert torchrun_worker is not None and torchrun_worker["LD_PRELOAD"] == str(library)
    # a library the user preloads (or this process already has) stands
    assert memory.allocator_environment({"LD_PRELOAD": "/usr/lib/libjemalloc.so.2"}) is None
    with pytest.raises(BankLLMError, match="BANKLLM_ALLOCATOR='tcmalloc'"):
        memory.allocator_environment({memory.ALLOCATOR_VARIABLE: "tcmalloc"})
    monkeypatch.setattr(sys, "platform", "darwin")  # no LD_PRELOAD there
    assert memory.allocator_environment({}) is None


_COUNT_MAPPED_MIMALLOC = (
    "import sys; from bankllm.memory import restart_with_allocator; "
    "restart_with_allocator(sys.orig_argv); "
    "print(open('/proc/self/maps').read().count('libmimalloc'))"
)


@pytest.mark.parametrize("allocator, mapped", [("mimalloc", True), ("system", False)])
def test_a_process_restarts_once_with_mimalloc_mapped(allocator, mapped, monkeypatch):
    monkeypatch.delenv("LD_PRELOAD", raising=False)
    monkeypatch.setenv(memory.ALLOCATOR_VARIABLE, allocator)
    out = subprocess.run(
        [sys.executable, "-c", _COUNT_MAPPED_MIMALLOC],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout.split()
    assert len(out) == 1  # printed by one process: restarted at most once
    assert (int(out[0]) > 0) is mapped


def test_the_command_line_names_a_bad_allocator_setting(monkeypatch, capsys):
    monkeypatch.setenv(memory.ALLOCATOR_VARIABLE, "tcmalloc")
    monkeypatch.setattr(sys, "argv", ["bankllm", "train", "--set", "epochs=1"])
    assert cli.main() == EXIT_USAGE
    assert "BANKLLM_ALLOCATOR" in capsys.readouterr().err
