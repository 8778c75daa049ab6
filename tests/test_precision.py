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
