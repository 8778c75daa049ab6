import ctypes
import os
import sys

import pytest
import torch

from bankllm import memory
from bankllm.checkpoints import read_metrics
from bankllm.training import Trainer


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
                     "uordblks", "fordblks", "keepcost")
    ]


def _mapped_bytes() -> int:
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = _MallInfo2
    return libc.mallinfo2().hblkhd


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_after_a_large_free_a_1_mib_tensor_is_still_mapped_not_taken_from_the_heap():
    assert memory.return_freed_memory()
    torch.empty(8 << 20, dtype=torch.uint8)  # freed at once: glibc's default would now heap 1 MiB
    before = _mapped_bytes()
    t = torch.empty(1 << 20, dtype=torch.uint8)
    assert _mapped_bytes() - before >= 1 << 20
    del t


def test_the_trainer_sets_the_allocator_and_its_losses_do_not_change(
    tiny_config, tmp_path, monkeypatch
):
    import bankllm.training as training

    for name in memory.KERNEL_CACHE_VARIABLES:  # restored after the test
        monkeypatch.setenv(name, "1024")
    calls = []
    with monkeypatch.context() as m:
        m.setattr(training, "return_freed_memory", lambda: calls.append(1) or False)
        Trainer(tiny_config, tmp_path / "a", show_progress=False).train()
    Trainer(tiny_config, tmp_path / "b", show_progress=False).train()
    assert calls == [1]
    epochs = [
        [(e["train_loss"], e["val_loss"]) for e in read_metrics(tmp_path / run)["epochs"]]
        for run in ("a", "b")
    ]
    assert epochs[0] == epochs[1]


def test_peak_rss_counts_a_tensor_the_process_touched():
    resident = torch.ones(64 << 20, dtype=torch.uint8)  # 64 MiB touched
    assert memory.peak_rss_bytes() >= resident.numel()


def test_kernel_caches_are_bounded_unless_the_environment_says_otherwise(monkeypatch):
    monkeypatch.delenv("ONEDNN_PRIMITIVE_CACHE_CAPACITY", raising=False)
    monkeypatch.setenv("LRU_CACHE_CAPACITY", "1024")
    memory.bound_kernel_caches(64)
    assert os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] == "64"
    assert os.environ["LRU_CACHE_CAPACITY"] == "1024"
    with pytest.raises(ValueError):
        memory.bound_kernel_caches(0)  # ideep crashes on an LRU capacity of 0
