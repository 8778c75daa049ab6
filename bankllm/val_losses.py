"""Per-conversation val losses of a run's best checkpoint: what the paired gate compares.

For every val conversation: the summed token cross-entropy (nats) and the number of target
tokens, scored exactly as the trainer's val loss (:func:`bankllm.training.evaluate`: eval mode,
dropout off, the same length-sorted batches of 32 and the same targets), but always in
**fp32**, whatever precision the run trained in: the numbers then depend only on the weights,
not on the machine's bf16 support, and two runs scored on one val set can be compared
conversation by conversation. (For an fp32 run, total loss / total tokens is its best val loss;
for a bf16 run it differs from it by bf16's rounding, typically well under 0.5%.)

Computed on demand (a few seconds for the default recipe's 90 val conversations) and cached in
``<run>/val_losses.json``, keyed by the run's ``best.json`` (the checkpoint's epoch and val
loss), its val ids and the precision, so a new best checkpoint recomputes it. A run directory
that cannot be written still gets its losses, just not cached.
"""

from __future__ import annotations

import hashlib
import json
from contextlib import suppress
from pathlib import Path
from typing import Any

from bankllm.errors import BankLLMError
from bankllm.evaluation import per_conversation_losses
from bankllm.fileio import atomic_write_json, read_json

VAL_LOSSES_FILE = "val_losses.json"
PRECISION = "fp32"


def _key(run_dir: Path, val_ids: list[str]) -> str:
    best = (run_dir / "best.json").read_text(encoding="utf-8")
    blob = json.dumps({"best": best, "val": val_ids, "precision": PRECISION}, sort_keys=True)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def run_val_losses(run_dir: str | Path) -> dict[str, Any]:
    """The per-conversation val losses of ``run_dir``'s best checkpoint:
    ``{"precision", "best_epoch", "loss_sum": {id: nats}, "tokens": {id: count}}`` (the
    ``per_conversation`` field of a gate summary). Read from ``val_losses.json`` when its key
    matches, else computed and cached. A run without best weights, or whose corpus is gone or
    changed, is a :class:`BankLLMError` saying so."""
    from bankllm import checkpoints as ckpt

    run_dir = Path(run_dir)
    if not (run_dir / ckpt.BEST_INFO).is_file() or not (run_dir / ckpt.BEST_WEIGHTS).is_file():
        raise BankLLMError(f"{run_dir}: no best checkpoint yet (no epoch has finished)")
    split = read_json(run_dir / ckpt.SPLIT_FILE, "split")
    val_ids = [str(i) for i in split.get("val", [])] if isinstance(split, dict) else []
    key = _key(run_dir, val_ids)
    cache = run_dir / VAL_LOSSES_FILE
    if cache.is_file():
        try:
            data = read_json(cache, "val losses")
            if isinstance(data, dict) and data.get("key") == key:
                return data["per_conversation"]
        except (BankLLMError, KeyError):
            pass  # recompute
    run = ckpt.load_run(run_dir)
    model = run.load_model("best")
    from bankllm.data import encode_corpus

    corpus = encode_corpus(run.split.val, run.tokenizer, run.config.block_size,
                           run.config.loss_on)
    ids = [str(c["id"]) for c in run.split.val]
    losses = dict(zip(ids, per_conversation_losses(model, corpus, run.tokenizer.pad_id,
                                                   precision=PRECISION), strict=True))
    best = read_json(run_dir / ckpt.BEST_INFO, "best checkpoint record")
    result = {
        "precision": PRECISION,
        "best_epoch": best.get("epoch") if isinstance(best, dict) else None,
        "loss_sum": {i: s for i, (s, _) in losses.items()},
        "tokens": {i: n for i, (_, n) in losses.items()},
    }
    with suppress(OSError, BankLLMError):  # a read-only run: computed again next time
        atomic_write_json(cache, {"schema_version": 1, "key": key, "per_conversation": result})
    return result
