"""The trainer's Rich progress bar (epoch, step, loss, lr, tokens/s, ETA) and epoch lines."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bankllm.training import Trainer


class TrainingProgress:
    """Rich progress bar of a :class:`~bankllm.training.Trainer`, used as a context manager."""

    def __init__(self, trainer: Trainer) -> None:
        from rich.progress import (
            BarColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.trainer = trainer
        self.progress = Progress(
            TextColumn("[bold]epoch {task.fields[epoch]}/{task.fields[epochs]}"),
            BarColumn(),
            TextColumn("step {task.completed}/{task.total}"),
            TextColumn("loss {task.fields[loss]}"),
            TextColumn("lr {task.fields[lr]}"),
            TextColumn("{task.fields[tps]} tok/s"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            transient=False,
        )
        self.tokens, self.t0 = 0, time.perf_counter()

    def __enter__(self) -> TrainingProgress:
        t = self.trainer
        self.progress.__enter__()
        self.task = self.progress.add_task(
            "train",
            total=t.total_steps,
            completed=t.step,
            epoch=t.epoch,
            epochs=t.cfg.epochs,
            loss="-",
            lr="-",
            tps="-",
        )
        return self

    def update(self, record: dict[str, Any]) -> None:
        """Advance the bar to the step ``record`` (an entry of ``metrics["steps"]``)."""
        self.tokens += record["tokens"]
        elapsed = time.perf_counter() - self.t0
        loss = record["loss"]
        self.progress.update(
            self.task,
            completed=record["step"],
            epoch=record["epoch"],
            loss="nan" if loss is None else f"{loss:.3f}",
            lr=f"{record['lr']:.2e}",
            tps=f"{self.tokens / elapsed:,.0f}" if elapsed > 0 else "-",
        )

    def epoch_done(self, record: dict[str, Any]) -> None:
        """Print one line of the epoch ``record`` (an entry of ``metrics["epochs"]``)."""
        self.progress.console.print(
            f"epoch {record['epoch']:>2}: train {record['train_loss']:.4f} (running, dropout on)  "
            f"train_eval {record['train_eval_loss']:.4f}  val {record['val_loss']:.4f}  "
            f"{record['seconds']:.1f}s"
        )

    def __exit__(self, *exc: Any) -> None:
        self.progress.__exit__(*exc)
