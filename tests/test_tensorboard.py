"""``tensorboard=true``: a run writes event files TensorBoard reads back; without the package,
one error line at start."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

import pytest

from bankllm import cli, distributed
from bankllm.checkpoints import STATE_FILE, read_metrics
from bankllm.tb_logging import TB_DIR
from bankllm.training import Trainer


def test_a_tiny_run_writes_the_scalars_tensorboard_reads(tiny_config, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tiny_config.tensorboard, tiny_config.update_ratio_every = True, 2
    run_dir = tmp_path / "tb"
    assert Trainer(tiny_config, run_dir, show_progress=False).train() == 0
    metrics = read_metrics(run_dir)
    events = EventAccumulator(str(run_dir / TB_DIR))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    groups = {f"update_ratio/{g}" for s in metrics["steps"] for g in s.get("update_ratio", {})}
    assert {"train/loss", "train/lr", "train/grad_norm", "epoch/train_loss",
            "epoch/train_eval_loss", "epoch/val_loss"} | groups <= tags
    loss = events.Scalars("train/loss")
    assert [e.step for e in loss] == [s["step"] for s in metrics["steps"]]
    assert [e.value for e in loss] == pytest.approx([s["loss"] for s in metrics["steps"]])
    val = events.Scalars("epoch/val_loss")
    last_steps = [max(s["step"] for s in metrics["steps"] if s["epoch"] == e["epoch"])
                  for e in metrics["epochs"]]
    assert [e.step for e in val] == last_steps
    assert [e.value for e in val] == pytest.approx([e["val_loss"] for e in metrics["epochs"]])
    attention = events.Scalars("update_ratio/attention")
    assert [e.step for e in attention] == [s["step"] for s in metrics["steps"]
                                           if "update_ratio" in s]


def test_without_the_package_tensorboard_true_is_one_error_line(
        corpus_file, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    code = cli.main(["train", "--data", str(corpus_file), "--runs-dir", str(tmp_path),
                     "--name", "tb", "--quiet", "--set", "tensorboard=true",
                     "--set", "n_layer=1", "--set", "n_embd=16", "--set", "n_head=2"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("error: ")
    assert "pip install 'bankllm[tensorboard]'" in err[0]
    assert not (tmp_path / "tb").exists()


def test_tensorboard_off_writes_no_event_files(tiny_config, tmp_path):
    tiny_config.epochs = 1
    Trainer(tiny_config, tmp_path / "plain", show_progress=False).train()
    assert not (tmp_path / "plain" / TB_DIR).exists()



@dataclass(frozen=True)
class _StopAt(distributed.Context):
    """A single process asked to stop (as by SIGTERM) at its ``at``-th stop-flag check."""

    at: int = 1
    calls: list = field(default_factory=list)

    def broadcast_flag(self, flag: bool) -> bool:
        self.calls.append(flag)
        return len(self.calls) >= self.at


def test_a_resumed_run_purges_the_steps_logged_after_its_state_and_logs_each_once(
        tiny_config, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tiny_config.tensorboard = True
    run_dir = tmp_path / "cut"
    assert Trainer(tiny_config, run_dir, show_progress=False, ctx=_StopAt(at=1)).train() != 0
    state_at_step_1 = (run_dir / STATE_FILE).read_bytes()
    assert Trainer(tiny_config, run_dir, resume=True, show_progress=False,
                   ctx=_StopAt(at=3)).train() != 0
    # a crash after steps 2-4 were logged but before their state was saved
    (run_dir / STATE_FILE).write_bytes(state_at_step_1)
    assert Trainer(tiny_config, run_dir, resume=True, show_progress=False).train() == 0
    events = EventAccumulator(str(run_dir / TB_DIR))
    events.Reload()
    steps = [e.step for e in events.Scalars("train/loss")]
    assert steps == list(range(1, len(read_metrics(run_dir)["steps"]) + 1))
