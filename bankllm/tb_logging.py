"""Optional TensorBoard logging of a run (``--set tensorboard=true``) to ``<run>/tensorboard/``.

Scalars, all against the optimizer step: ``train/loss``, ``train/lr``, ``train/grad_norm`` per
step (left out where non-finite), ``update_ratio/<group>`` on the steps that log update ratios,
and per epoch ``epoch/train_loss``, ``epoch/train_eval_loss``, ``epoch/val_loss`` at the epoch's
last step. Needs the ``tensorboard`` package (``pip install 'bankllm[tensorboard]'``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from bankllm.errors import BankLLMError

TB_DIR = "tensorboard"
INSTALL_HINT = "pip install 'bankllm[tensorboard]'"


def require() -> None:
    """Raise :class:`BankLLMError` unless ``torch.utils.tensorboard`` can be imported."""
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError:
        raise BankLLMError(
            f"config: tensorboard=true needs the tensorboard package: {INSTALL_HINT}"
        ) from None


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class TensorBoardLog:
    """Writes a run's scalars; a disabled log (``run_dir`` None) does nothing.

    ``first_step``: the first optimizer step this process will log (a resumed run purges the
    events at and after it that an interrupted process had written). A context manager: the
    event files are flushed and closed on exit.
    """

    def __init__(self, run_dir: str | Path | None, first_step: int = 1):
        self.writer = None
        if run_dir is not None:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(
                str(Path(run_dir) / TB_DIR), purge_step=first_step if first_step > 1 else None
            )

    def log_step(self, record: dict[str, Any]) -> None:
        """One step record of metrics.json: loss, lr, grad norm and any update ratios."""
        if self.writer is None:
            return
        step = record["step"]
        for key in ("loss", "lr", "grad_norm"):
            if _number(record.get(key)):
                self.writer.add_scalar(f"train/{key}", record[key], step)
        for group, ratio in (record.get("update_ratio") or {}).items():
            if _number(ratio):
                self.writer.add_scalar(f"update_ratio/{group}", ratio, step)

    def log_epoch(self, record: dict[str, Any], step: int) -> None:
        """One epoch record of metrics.json, at ``step`` (the epoch's last optimizer step)."""
        if self.writer is None:
            return
        for key in ("train_loss", "train_eval_loss", "val_loss"):
            if _number(record.get(key)):
                self.writer.add_scalar(f"epoch/{key}", record[key], step)
        self.writer.flush()

    def __enter__(self) -> TensorBoardLog:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.writer is not None:
            self.writer.close()
