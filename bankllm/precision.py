"""Numeric precision: which one a run trains and decodes in, its autocast context, and the
context every scoring or decoding pass runs in (:func:`inference`).

``bf16`` means bf16 autocast (weights and the residual stream stay fp32; matrix multiplies run
in bf16), chosen where the hardware runs bf16 fast: a CPU with AMX or AVX512-BF16, or a
bf16-capable GPU. Everything else runs fp32.
"""

from __future__ import annotations

import platform
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any

import torch

from bankllm.errors import BankLLMError


def cpu_bf16_support() -> str:
    """How this CPU multiplies bf16 matrices natively: ``"AMX"`` (tile units, several times
    its AVX-512 rate), ``"AVX512-BF16"`` (dot-product instructions, about twice its fp32 rate)
    or ``"none"``."""
    cpu = getattr(torch, "cpu", None)

    def has(name: str) -> bool:
        try:
            return bool(getattr(cpu, name, lambda: False)())
        except Exception:  # a private torch probe: absent or failing means "no"
            return False

    if has("_is_amx_tile_supported"):
        return "AMX"
    return "AVX512-BF16" if has("_is_avx512_bf16_supported") else "none"


def cpu_has_fast_bf16() -> bool:
    """True when this CPU runs bf16 matrix multiplies natively (AMX or AVX512-BF16)."""
    return cpu_bf16_support() != "none"


def cpu_model() -> str:
    """The CPU's model name as the OS reports it (``/proc/cpuinfo``), else the platform's."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def machine_info() -> dict[str, str]:
    """What this machine's CPU does for training numerics and speed: torch's vector ISA
    (``cpu_isa``: AVX512, AVX2, ...), native bf16 (``cpu_bf16``), ``cpu_model``, ``platform``
    and ``python``. The gate's baselines and the benchmark's report both record it."""
    try:
        isa = str(torch.backends.cpu.get_cpu_capability())
    except Exception:  # older or unusual builds: the ISA is informative only
        isa = "unknown"
    return {
        "cpu_isa": isa,
        "cpu_bf16": cpu_bf16_support(),
        "cpu_model": cpu_model(),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def fast_bf16(device: torch.device | str) -> bool:
    """True when ``device`` runs bf16 fast (see the module docstring)."""
    device = torch.device(device)
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    return device.type == "cpu" and cpu_has_fast_bf16()


def resolve_precision(requested: str, device: torch.device | str) -> str:
    """``bf16`` or ``fp32``: ``requested`` itself, or for ``auto`` bf16 where it is fast."""
    if requested != "auto":
        return requested
    return "bf16" if fast_bf16(device) else "fp32"


def run_precision(metrics: dict[str, Any], device: torch.device | str = "cpu") -> str:
    """The precision to decode a run in: bf16 if it trained in bf16 and ``device`` runs bf16
    fast, else fp32."""
    return "bf16" if metrics.get("precision") == "bf16" and fast_bf16(device) else "fp32"


def autocast(device: torch.device | str, precision: str | None) -> AbstractContextManager:
    """bf16 autocast for ``precision == "bf16"``; a no-op for ``fp32`` (or None)."""
    if precision == "bf16":
        return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)
    if precision not in (None, "fp32"):
        raise ValueError(f"precision must be 'bf16', 'fp32' or None, got {precision!r}")
    return nullcontext()


@contextmanager
def inference(model: torch.nn.Module, precision: str | None) -> Iterator[None]:
    """Run ``model`` for scoring or decoding: eval mode (dropout off; the previous mode is
    restored afterwards), no autograd, and ``precision``'s autocast."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), autocast(next(model.parameters()).device, precision):
            yield
    finally:
        model.train(was_training)


def resolve_device(device: str) -> torch.device:
    """The config's ``device``: ``cpu``, ``cuda`` (an error without CUDA) or ``auto`` (CUDA
    when present)."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise BankLLMError("config: device=cuda but no CUDA device is available (use cpu or auto)")
    return torch.device(device)
