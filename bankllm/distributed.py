"""Data-parallel training with torchrun and DistributedDataParallel.

``torchrun --nproc_per_node N -m bankllm train ...`` starts N processes with ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK`` and a rendezvous in the environment; :func:`setup` joins the
process group (gloo on CPU, nccl on CUDA). Every process computes the same seeded batch order
and takes its own share of each optimizer batch, so the effective batch stays ``batch_size``
conversations whatever the world size; token counts and losses are summed over processes so
the logged metrics mean what they mean in one process. Only rank 0 writes the run directory.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Context:
    """Where this process stands in the job: rank 0 of 1 when not distributed."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, batch: Sequence[int]) -> list[int]:
        """This process's share of an optimizer batch (every ``world_size``-th item)."""
        return list(batch[self.rank :: self.world_size])

    def all_reduce_sum(self, *values: float) -> list[float]:
        """Sum scalars over all processes (identity when not distributed)."""
        if not self.is_distributed:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t.tolist()

    def broadcast_flag(self, flag: bool) -> bool:
        """True on every process when ``flag`` is true on any (e.g. a stop request)."""
        if not self.is_distributed:
            return flag
        t = torch.tensor([1 if flag else 0], dtype=torch.int64)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def broadcast_text(self, text: str, max_bytes: int = 1024) -> str:
        """Rank 0's ``text`` on every process (sent as bytes in a tensor, never pickled)."""
        if not self.is_distributed:
            return text
        data = text.encode("utf-8")[:max_bytes]
        buf = torch.zeros(max_bytes, dtype=torch.uint8)
        buf[0 : len(data)] = torch.tensor(list(data), dtype=torch.uint8)
        length = torch.tensor([len(data)], dtype=torch.int64)
        dist.broadcast(length, src=0)
        dist.broadcast(buf, src=0)
        return bytes(buf[: int(length.item())].tolist()).decode("utf-8", errors="replace")

    def barrier(self) -> None:
        if self.is_distributed:
            dist.barrier()


def setup(device_type: str) -> Context:
    """Join the torchrun process group when ``WORLD_SIZE`` > 1; else the single-process context."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Context()
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    if device_type == "cuda":
        torch.cuda.set_device(local_rank)
    return Context(rank=rank, world_size=world_size, local_rank=local_rank)


# The last barrier's Work, released by the interpreter itself at exit; see :func:`teardown`.
_final_barrier: list[dist.Work] = []


def teardown(ctx: Context) -> None:
    """Leave the process group once every process is done with it.

    Without the barrier a process that finishes first tears down its gloo connections while
    another is still writing the run; its gloo threads then abort the process at exit
    ("terminate called without an active exception", SIGABRT) and torchrun fails the job.

    The barrier's Work is kept referenced here, so the main thread frees it, not a gloo worker
    thread: it holds the earlier all-reduces, whose tensors are Python objects, and a gloo
    thread that frees them needs the GIL; if the interpreter has begun finalizing by then,
    Python ends that thread and std::terminate aborts the process (pytorch/pytorch#190489).
    """
    if ctx.is_distributed and dist.is_initialized():
        with contextlib.suppress(RuntimeError):  # a peer already failed: torchrun says which
            work = dist.barrier(async_op=True)
            _final_barrier.append(work)
            work.wait()
        dist.destroy_process_group()
