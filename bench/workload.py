"""The benchmark's workload: the bundled corpus's train split, batched as the trainer does.

Every pipeline is measured on the same optimizer batches (epoch 1 of the default recipe's
seeded, length-bucketed order), so their throughputs compare like for like.
"""

from __future__ import annotations

import os
import resource
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from bankllm import precision
from bankllm.checkpoints import gpt_config
from bankllm.config import DEFAULT_DATA, TrainConfig
from bankllm.data import (
    EncodedCorpus,
    encode_corpus,
    epoch_batches,
    load_conversations,
    plan_micro_batches,
    split_conversations,
)
from bankllm.model import GPTConfig
from bankllm.tokenizer import Tokenizer

# model shapes the benchmark can run: the recipe's, and a tiny one for smoke tests
SIZES: dict[str, dict[str, int]] = {
    "default": {},
    "tiny": {"n_layer": 2, "n_head": 2, "n_embd": 64, "block_size": 256},
}


@dataclass
class Workload:
    """Data, tokenizer and batches shared by every measurement."""

    cfg: TrainConfig
    tokenizer: Tokenizer
    train: EncodedCorpus
    val: EncodedCorpus
    val_conversations: list[dict[str, Any]]
    batches: list[list[int]]  # epoch 1's optimizer batches
    epochs: list[list[list[int]]] = field(default_factory=list)  # every epoch's batches

    @property
    def vocab_size(self) -> int:
        return len(self.tokenizer)

    @property
    def pad_id(self) -> int:
        return self.tokenizer.pad_id

    def model_config(self) -> GPTConfig:
        return gpt_config(self.cfg, self.vocab_size)

    def recipe_padding_share(self, micro_batch_size: int, micro_batch_tokens: int) -> float:
        """Padding share of every micro-batch of the recipe, cut as the trainer cuts them."""
        lengths = self.train.lengths
        real = computed = 0
        for batches in self.epochs:
            for batch in batches:
                for mb in plan_micro_batches(batch, lengths, micro_batch_size, micro_batch_tokens):
                    real += sum(lengths[i] for i in mb)
                    computed += len(mb) * max(lengths[i] for i in mb)
        return 1.0 - real / computed

    def batch_shapes(self, batch: list[int]) -> set[tuple[int, int]]:
        """(sequences, padded length) of each forward pass of ``batch`` as the trainer cuts it."""
        lengths, cfg = self.train.lengths, self.cfg
        plan = plan_micro_batches(batch, lengths, cfg.micro_batch_size, cfg.micro_batch_tokens)
        return {(len(mb), max(lengths[i] for i in mb)) for mb in plan}

    def recipe_shapes(self) -> set[tuple[int, int]]:
        """Every distinct forward-pass shape of the recipe's batches (all epochs)."""
        return set().union(*(self.batch_shapes(b) for batches in self.epochs for b in batches))

    def recipe_target_tokens(self) -> int:
        """Target tokens of all epochs of the recipe."""
        return self.cfg.epochs * self.train.n_target_tokens()


def bench_config(size: str = "default", data: str | None = None, **overrides: Any) -> TrainConfig:
    """The default recipe's config at ``size``, on ``data`` (the bundled corpus by default)."""
    cfg = replace(TrainConfig(), **SIZES[size], **overrides)
    bundled = Path(__file__).resolve().parents[1] / DEFAULT_DATA
    cfg.data = data or (DEFAULT_DATA if Path(DEFAULT_DATA).exists() else str(bundled))
    cfg.validate()
    return cfg


def load_workload(cfg: TrainConfig) -> Workload:
    """Split, tokenize and batch ``cfg.data`` exactly as the trainer does for a new run."""
    conversations = load_conversations(cfg.data)
    split = split_conversations(conversations, cfg.val_fraction, cfg.seed)
    tokenizer = Tokenizer.train(
        (m["content"] for c in split.train for m in c["messages"]), min_freq=cfg.min_freq
    )
    train = encode_corpus(split.train, tokenizer, cfg.block_size, cfg.loss_on)
    val = encode_corpus(split.val, tokenizer, cfg.block_size, cfg.loss_on)
    per_epoch = [
        epoch_batches(train.lengths, cfg.batch_size, cfg.seed, epoch, cfg.bucket_batches)
        for epoch in range(1, cfg.epochs + 1)
    ]
    return Workload(cfg, tokenizer, train, val, split.val, per_epoch[0], per_epoch)


#: environment variables a run's figures depend on, recorded with them
RECORDED_ENV = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME",
                "LD_PRELOAD", "GLIBC_TUNABLES", "MALLOC_ARENA_MAX")


def machine_info() -> dict[str, Any]:
    """What the figures were measured on: :func:`bankllm.precision.machine_info` (CPU model,
    ISA, native bf16: AMX multiplies bf16 matrices several times faster than AVX512-BF16, so
    the targets' absolute figures depend on it) and the thread settings."""
    machine = precision.machine_info()
    return {
        **machine,
        "fast_bf16": machine["cpu_bf16"] != "none",
        "logical_cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "torch": str(torch.__version__),
        # OpenMP's waiting policy decides how 2-thread runs fare on a busy machine; the
        # allocator and its settings decide peak RSS (bench/README.md, Memory)
        "env": {k: os.environ[k] for k in RECORDED_ENV if k in os.environ},
    }


def load_average() -> float | None:
    """The 1-minute load average, if known. It lags by minutes (a job that just ended still
    counts) and on some VMs reads 1-2 on idle CPUs: :func:`contention` is the measurement."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


@dataclass(frozen=True)
class CpuSample:
    """CPU time counters at one moment: what :func:`contention` differences."""

    wall: float  # time.monotonic()
    own: float  # the benchmark's CPU seconds (user + system, all threads, finished children)
    busy: float | None  # all CPUs' busy seconds since boot (user, nice, system, irq, softirq)
    steal: float | None  # seconds the hypervisor ran other guests on this VM's CPUs


def cpu_sample(proc_stat: str | Path = "/proc/stat") -> CpuSample:
    """The counters now; ``busy`` and ``steal`` are None where ``proc_stat`` cannot be read
    (not Linux)."""
    # the benchmark's own CPU time includes its finished children (the memory phase's)
    own = sum(
        usage.ru_utime + usage.ru_stime
        for usage in (resource.getrusage(resource.RUSAGE_SELF),
                      resource.getrusage(resource.RUSAGE_CHILDREN))
    )
    busy = steal = None
    try:
        with open(proc_stat, encoding="ascii") as f:
            fields = f.readline().split()
        if fields and fields[0] == "cpu":
            # user nice system idle iowait irq softirq steal ... in clock ticks
            ticks = [int(v) for v in fields[1:9]]
            hz = os.sysconf("SC_CLK_TCK")
            busy = (ticks[0] + ticks[1] + ticks[2] + ticks[5] + ticks[6]) / hz
            steal = ticks[7] / hz
    except (OSError, ValueError, IndexError):
        pass
    return CpuSample(time.monotonic(), own, busy, steal)


def contention(start: CpuSample, end: CpuSample) -> dict[str, float] | None:
    """What competed with the benchmark for the CPUs while it ran, in CPUs (1.0: one core's
    worth, on average): ``other_processes`` (all CPUs' busy time less the benchmark's own, its
    finished child processes included) and
    ``steal`` (time the hypervisor gave to other guests). None without ``/proc/stat``."""
    seconds = end.wall - start.wall
    if start.busy is None or end.busy is None or seconds <= 0:
        return None
    others = (end.busy - start.busy) - (end.own - start.own)
    steal = (end.steal or 0.0) - (start.steal or 0.0)
    return {
        "seconds": round(seconds, 1),
        "other_processes": round(max(others, 0.0) / seconds, 2),
        "steal": round(max(steal, 0.0) / seconds, 2),
    }
