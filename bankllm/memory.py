"""The training process's memory: oneDNN's per-shape kernel caches.

``bench/README.md`` (Memory) has the measured breakdown behind :func:`bound_kernel_caches`.
"""

from __future__ import annotations

import os

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
