"""Update-to-weight ratios: the groups cover the model, the ratio is ||dw|| / ||w||, logging
them changes no loss, and a resumed run logs what the uninterrupted one does."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
import torch

from bankllm import distributed
from bankllm.checkpoints import read_metrics
from bankllm.config import load_config
from bankllm.errors import BankLLMError
from bankllm.model import GPT, GPTConfig
from bankllm.steps import UPDATE_GROUPS, snapshot, update_group, update_groups, update_ratios
from bankllm.training import Trainer


def test_every_parameter_is_in_exactly_one_group_and_the_tied_head_counts_once():
    model = GPT(GPTConfig(vocab_size=50, block_size=16, n_layer=2, n_head=2, n_embd=16))
    groups = update_groups(model)
    assert tuple(groups) == UPDATE_GROUPS
    ids = [id(p) for ps in groups.values() for p in ps]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    names = {name: update_group(name) for name, _ in model.named_parameters()}
    assert names["wte.weight"] == names["wpe.weight"] == "embeddings"
    assert names["blocks.0.attn.c_attn.weight"] == names["blocks.1.attn.c_proj.weight"] == (
        "attention")
    assert names["blocks.0.mlp.c_fc.weight"] == names["blocks.0.mlp.c_proj.weight"] == "mlp"
    assert names["blocks.0.ln_1.weight"] == names["blocks.1.ln_2.bias"] == "norms"
    assert names["ln_f.weight"] == names["ln_f.bias"] == "norms"
    assert names["blocks.0.attn.c_attn.bias"] == names["blocks.0.mlp.c_proj.bias"] == "biases"


def test_the_ratio_is_the_norm_of_the_change_over_the_norm_before_over_the_whole_group():
    a, b = torch.tensor([3.0, 0.0]), torch.tensor([0.0, 4.0])
    zero = torch.zeros(2)
    groups = {"mlp": [a, b], "biases": [zero]}
    before = snapshot(groups)
    a += torch.tensor([0.3, 0.0])
    b += torch.tensor([0.0, 0.4])
    zero += 1.0
    ratios = update_ratios(groups, before)
    assert ratios["mlp"] == pytest.approx(math.sqrt(0.3**2 + 0.4**2) / 5.0)
    assert ratios["biases"] is None  # all zero before the step: no ratio


def test_update_ratio_every_is_a_non_negative_config_key():
    assert load_config(None, ["update_ratio_every=0"]).update_ratio_every == 0
    assert load_config().update_ratio_every == 10
    with pytest.raises(BankLLMError, match="update_ratio_every"):
        load_config(None, ["update_ratio_every=-1"])


def test_logging_update_ratios_changes_no_loss(tiny_config, tmp_path):
    tiny_config.dropout = 0.1  # dropout draws random numbers: a snapshot must not

    def run(every: int) -> dict:
        tiny_config.update_ratio_every = every
        Trainer(tiny_config, tmp_path / f"every{every}", show_progress=False).train()
        return read_metrics(tmp_path / f"every{every}")

    off, on = run(0), run(1)
    assert [s["loss"] for s in on["steps"]] == [s["loss"] for s in off["steps"]]
    assert [s["grad_norm"] for s in on["steps"]] == [s["grad_norm"] for s in off["steps"]]
    assert [e["val_loss"] for e in on["epochs"]] == [e["val_loss"] for e in off["epochs"]]
    assert not any("update_ratio" in s for s in off["steps"])
    assert all(set(s["update_ratio"]) == set(UPDATE_GROUPS) for s in on["steps"])
    first, later = on["steps"][0]["update_ratio"], on["steps"][-1]["update_ratio"]
    assert first["biases"] is None  # zero-initialised biases: no ratio at step 1
    assert all(0 < later[g] < 1 for g in UPDATE_GROUPS)


@dataclass(frozen=True)
class _StopAtOnce(distributed.Context):
    """A single process that is asked to stop after its first step (as by SIGTERM)."""

    def broadcast_flag(self, flag: bool) -> bool:
        return True


def test_a_resumed_run_logs_the_ratios_of_the_uninterrupted_run(tiny_config, tmp_path):
    tiny_config.update_ratio_every = 3
    Trainer(tiny_config, tmp_path / "whole", show_progress=False).train()
    assert Trainer(tiny_config, tmp_path / "cut", show_progress=False,
                   ctx=_StopAtOnce()).train() != 0
    assert Trainer(tiny_config, tmp_path / "cut", resume=True, show_progress=False).train() == 0
    whole, cut = read_metrics(tmp_path / "whole"), read_metrics(tmp_path / "cut")
    logged = [s["step"] for s in whole["steps"] if "update_ratio" in s]
    assert logged == list(range(3, len(whole["steps"]) + 1, 3))
    assert [s.get("update_ratio") for s in cut["steps"]] == [
        s.get("update_ratio") for s in whole["steps"]]
