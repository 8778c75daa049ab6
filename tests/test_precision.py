"""Precision choice (bankllm.precision): auto picks bf16 only where it is fast."""

import pytest
import torch

from bankllm import precision
from bankllm.precision import autocast, resolve_precision, run_precision


@pytest.mark.parametrize("fast, expected", [(True, "bf16"), (False, "fp32")])
def test_auto_follows_the_cpu_and_explicit_choices_win(monkeypatch, fast, expected):
    monkeypatch.setattr(precision, "cpu_has_fast_bf16", lambda: fast)
    assert resolve_precision("auto", "cpu") == expected
    assert resolve_precision("fp32", "cpu") == "fp32"
    assert resolve_precision("bf16", "cpu") == "bf16"
    # a bf16 run decodes in bf16 only where bf16 is fast; an fp32 run always in fp32
    assert run_precision({"precision": "bf16"}, "cpu") == expected
    assert run_precision({"precision": "fp32"}, "cpu") == "fp32"


def test_autocast_runs_matmuls_in_bf16_only_for_bf16():
    a = torch.randn(4, 4)
    with autocast("cpu", "bf16"):
        assert (a @ a).dtype == torch.bfloat16
    for p in ("fp32", None):
        with autocast("cpu", p):
            assert (a @ a).dtype == torch.float32
    with pytest.raises(ValueError, match="precision must be"):
        autocast("cpu", "fp16")


@pytest.mark.parametrize(
    "amx, avx512_bf16, expected",
    [(True, True, "AMX"), (False, True, "AVX512-BF16"), (False, False, "none")],
)
def test_bf16_support_names_the_fastest_unit_and_decides_fast_bf16(
    monkeypatch, amx, avx512_bf16, expected
):
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
    assert precision.cpu_bf16_support() == expected
    assert precision.cpu_has_fast_bf16() is (expected != "none")


def test_a_failing_cpu_probe_means_no_bf16(monkeypatch):
    def broken():
        raise RuntimeError("probe failed")

    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", broken, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", broken, raising=False)
    assert precision.cpu_bf16_support() == "none"


def test_cpu_model_is_a_name():
    name = precision.cpu_model()
    assert isinstance(name, str) and name.strip() and "\n" not in name


def test_machine_info_is_the_one_description_gate_and_bench_record(monkeypatch):
    from bench.workload import machine_info as bench_machine
    from diagnostics.gate import machine_info as gate_machine

    monkeypatch.setattr(precision, "cpu_bf16_support", lambda: "AMX")
    info = precision.machine_info()
    assert info["cpu_bf16"] == "AMX"
    assert set(info) == {"cpu_isa", "cpu_bf16", "cpu_model", "platform", "python"}
    assert gate_machine is precision.machine_info
    bench = bench_machine()
    assert {k: bench[k] for k in info} == info
    assert bench["fast_bf16"] is True
    monkeypatch.setattr(precision, "cpu_bf16_support", lambda: "none")
    assert bench_machine()["fast_bf16"] is False
    # a preloaded allocator changes the memory figures: the run records it
    monkeypatch.setenv("LD_PRELOAD", "/usr/lib/libtcmalloc_minimal.so.4")
    assert bench_machine()["env"]["LD_PRELOAD"] == "/usr/lib/libtcmalloc_minimal.so.4"


def test_machine_info_survives_a_failing_isa_probe(monkeypatch):
    def broken():
        raise RuntimeError("no probe")

    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", broken)
    assert precision.machine_info()["cpu_isa"] == "unknown"
