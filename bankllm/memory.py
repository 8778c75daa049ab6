"""The training process's memory: its allocator and oneDNN's per-shape kernel caches.

``bench/README.md`` (Memory) has the measured breakdown behind both: with glibc's allocator
the length-bucketed batches' ever-new tensor sizes fragment the heap, which keeps hundreds of
MB free and never returns them; mimalloc reuses that memory.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

from bankllm.errors import BankLLMError

#: "mimalloc" (the default, where the ``cmeel-mimalloc`` wheel is installed) or "system"
ALLOCATOR_VARIABLE = "BANKLLM_ALLOCATOR"
ALLOCATORS = ("mimalloc", "system")

#: kernels kept per cache. Each cached kernel holds some 100s of KiB; at 64 entries the
#: evaluation's new shapes alone grew the default recipe's RSS by ~150 MB, at 16 by none, and
#: rebuilding an evicted kernel (~1.5 ms) did not slow steps measurably (bench/README.md, Memory)
KERNEL_CACHE_CAPACITY = 16
#: oneDNN's primitive cache and ideep's (PyTorch's oneDNN wrapper) LRU cache: 1,024 each by
#: default, each kernel some 100s of KiB, one set per input shape (length bucketing: 69 shapes
#: in the default recipe)
KERNEL_CACHE_VARIABLES = ("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "LRU_CACHE_CAPACITY")


def bound_kernel_caches(capacity: int = KERNEL_CACHE_CAPACITY) -> None:
    """Cap oneDNN's kernel caches at ``capacity`` entries, unless the environment sets them.

    Read once, when the first oneDNN kernel of the process is built: call it before any
    matrix multiply. An evicted kernel is rebuilt when its shape returns (about 2 ms each);
    it computes the same values. (``LRU_CACHE_CAPACITY=0`` crashes ideep: ``capacity`` >= 1.)
    """
    if capacity < 1:
        raise ValueError(f"capacity must be >= 1, got {capacity}")
    for name in KERNEL_CACHE_VARIABLES:
        os.environ.setdefault(name, str(capacity))


def mimalloc_library() -> Path | None:
    """The mimalloc shared library installed by the ``cmeel-mimalloc`` wheel, or None."""
    try:
        dist = distribution("cmeel-mimalloc")
    except PackageNotFoundError:
        return None
    for file in dist.files or ():
        if file.name.startswith("libmimalloc.so."):  # the versioned soname, not the dev link
            path = Path(str(dist.locate_file(file)))
            if path.is_file():
                return path
    return None


def allocator_environment(environ: Mapping[str, str]) -> dict[str, str] | None:
    """The environment that gives a process started with ``environ`` mimalloc, or None.

    That is ``environ`` plus ``LD_PRELOAD`` naming mimalloc and, unless ``environ`` sets it,
    ``MIMALLOC_PURGE_DECOMMITS=0``: freed pages go back with MADV_FREE instead of being
    decommitted, which doubled the system time and cost ~9% of training speed
    (bench/README.md, Memory). None when nothing is to change: the allocator is set to
    "system", ``LD_PRELOAD`` is already set (the user's choice, or this process was started
    with mimalloc), the platform is not Linux, or mimalloc is not installed. An unknown
    allocator name raises ``BankLLMError``.
    """
    choice = environ.get(ALLOCATOR_VARIABLE, "mimalloc")
    if choice not in ALLOCATORS:
        raise BankLLMError(
            f"environment variable {ALLOCATOR_VARIABLE}={choice!r}: set it to one of "
            f"{', '.join(ALLOCATORS)} or unset it"
        )
    if choice == "system" or environ.get("LD_PRELOAD") or not sys.platform.startswith("linux"):
        return None
    library = mimalloc_library()
    if library is None:
        return None
    return {"MIMALLOC_PURGE_DECOMMITS": "0", **environ, "LD_PRELOAD": str(library)}


def restart_with_allocator(argv: Sequence[str]) -> None:
    """Replace this process by ``argv`` run again with mimalloc preloaded, if it is to be.

    An allocator can only be chosen before the process starts, so the training commands
    restart themselves once through ``exec`` (same process id, same arguments, the
    environment of :func:`allocator_environment`), as PyTorch's
    ``torch.backends.xeon.run_cpu`` launcher does. Returns without doing anything when that
    environment is None. Call it before anything is printed or written. The allocator
    changes memory, not arithmetic: the losses are the same with either.
    """
    env = allocator_environment(os.environ)
    if env is None:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, list(argv), env)
