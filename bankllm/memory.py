"""The training process's memory: glibc's mmap threshold, oneDNN's kernel caches, peak RSS.

``bench/README.md`` (Memory) has the measured breakdown behind :func:`return_freed_memory` and
:func:`bound_kernel_caches`.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import resource
import sys

#: allocations of at least this many bytes get their own mapping, returned to the OS on free
MMAP_THRESHOLD = 128 * 1024
_M_MMAP_THRESHOLD = -3  # mallopt parameter number (glibc malloc.h)


def return_freed_memory(threshold: int = MMAP_THRESHOLD) -> bool:
    """Fix glibc's mmap threshold at ``threshold`` bytes; True where it took effect (glibc).

    glibc starts at 128 KiB but raises the threshold to the size of every mapped block freed
    (up to 32 MiB), after which tensors of up to 32 MiB come from the heap; freed heap memory
    stays in the process, and length-bucketed batches (tensors of a new size at every step)
    fragment it. Setting the threshold explicitly turns that adjustment off. It changes where
    memory comes from, never a value computed.
    """
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, threshold))
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False


#: kernels kept per cache: the few shapes of one step (about 22 kernels each) with room to spare
KERNEL_CACHE_CAPACITY = 64
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


def peak_rss_bytes() -> int:
    """This process's peak resident set size so far (``ru_maxrss``), in bytes."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # Linux counts KiB
