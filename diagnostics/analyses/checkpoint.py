"""Checkpoint: do the saved best weights score the val loss the run recorded for them?

Every later check loads ``best.safetensors`` and trusts it to be the model that scored the
run's ``best_val_loss``. This check scores the val split again with those weights, in the
run's own precision, and compares with what training recorded at its best epoch, conversation
by conversation (``val_loss_sums`` and ``val_tokens`` of metrics.json). Scoring is
deterministic, so the two agree up to summation order; a difference means the weights, the
tokenizer, the val split or the evaluation itself are not what training scored (the best
checkpoint holding another epoch's weights, a weight-loading bug, dropout left on in
evaluation). The comparison covers the whole val split, not a sample of it: no interval.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from diagnostics.results import CheckResult, table

NAME = "checkpoint"
ORDER = 14  # after causality: whether the weights every later check loads are the best ones
DEFAULTS = {
    # |rescored / recorded - 1| of the summed val loss. Rescoring the same weights in the same
    # precision agrees to within 0.02% (bf16 against fp32 kernels included); PASS up to
    # 0.1%, FAIL above 0.5%, WARN between (other threads or kernels may move bf16 sums a
    # little, never by half a percent).
    "rel_pass": 0.001,
    "rel_fail": 0.005,
}
ORDERED = (("rel_pass", "rel_fail"),)


def analyse_checkpoint(
    rescored: Sequence[tuple[float, int]], metrics: Mapping[str, Any],
    thresholds: Mapping[str, float],
) -> CheckResult:
    """Verdict on the best weights' val loss ``rescored`` against the run's record.

    ``rescored``: ``(summed token loss, target tokens)`` per val conversation, in split order,
    of the best weights in the run's precision (``bankllm.evaluation.per_conversation_losses``).
    ``metrics``: the run's metrics.json (``best_epoch``, ``best_val_loss``, ``epochs`` with
    ``val_loss`` and ``val_loss_sums``, ``val_tokens``). PASS when the summed loss agrees within
    ``rel_pass``, FAIL beyond ``rel_fail`` or when the val targets differ, WARN between; SKIP
    when the run recorded no best epoch.
    """
    rel_pass, rel_fail = float(thresholds["rel_pass"]), float(thresholds["rel_fail"])
    used = {"rel_pass": rel_pass, "rel_fail": rel_fail}
    best_epoch, recorded = metrics.get("best_epoch"), metrics.get("best_val_loss")
    epochs = {e.get("epoch"): e for e in metrics.get("epochs") or []}
    if best_epoch is None or recorded is None or best_epoch not in epochs:
        return CheckResult(NAME, "SKIP", "the run recorded no best epoch (it finished no "
                           "validation): no best weights to check", {}, used)
    tokens = [int(n) for _, n in rescored]
    total_tokens = sum(tokens)
    loss = sum(s for s, _ in rescored) / total_tokens if total_tokens else math.nan
    values: dict[str, Any] = {"best_epoch": best_epoch, "recorded_best_val_loss": recorded,
                              "rescored_val_loss": loss, "n_conversations": len(rescored),
                              "n_tokens": total_tokens}
    recorded_tokens = metrics.get("val_tokens")
    if isinstance(recorded_tokens, list) and recorded_tokens != tokens:
        differ = sum(a != b for a, b in zip(recorded_tokens, tokens, strict=False))
        differ += abs(len(recorded_tokens) - len(tokens))
        reason = (f"the val targets differ from those training scored: {total_tokens} tokens "
                  f"over {len(tokens)} conversations against {sum(recorded_tokens)} over "
                  f"{len(recorded_tokens)} ({differ} conversations differ); the val split, "
                  "the tokenizer or block_size/loss_on is not the run's")
        return CheckResult(NAME, "FAIL", reason, values, used)
    rel = loss / float(recorded) - 1.0 if math.isfinite(loss) else math.nan
    values["rel_difference"] = rel
    sums = epochs[best_epoch].get("val_loss_sums")
    details: dict[str, Any] = {}
    if isinstance(sums, list) and len(sums) == len(rescored):
        per = [abs(s / r - 1.0) for (s, _), r in zip(rescored, sums, strict=True) if r > 0]
        values["max_conversation_rel_difference"] = max(per, default=0.0)
    shown = (f"best weights (epoch {best_epoch}) rescored: val loss {loss:.6g} against the "
             f"recorded {float(recorded):.6g}, {rel:+.3%}")
    if abs(rel) <= rel_pass:
        return CheckResult(NAME, "PASS", f"{shown} (within ±{rel_pass:.1%}): every later check "
                           "reads the weights that scored best", values, used)
    nearest = min(epochs.values(), key=lambda e: abs(_rel(loss, e.get("val_loss"))))
    near_rel = _rel(loss, nearest.get("val_loss"))
    values["nearest_epoch"], values["nearest_epoch_rel_difference"] = nearest["epoch"], near_rel
    details["tables"] = [table(
        "Recorded val loss per epoch against the best weights rescored",
        ["epoch", "recorded val loss", "rescored vs recorded"],
        [(e["epoch"], e.get("val_loss"), f"{_rel(loss, e.get('val_loss')):+.3%}")
         for e in epochs.values()])]
    if nearest["epoch"] != best_epoch and abs(near_rel) <= rel_pass:
        cause = (f"they score epoch {nearest['epoch']}'s val loss {nearest['val_loss']:.6g} "
                 f"({near_rel:+.3%}): best.safetensors holds epoch {nearest['epoch']}'s weights, "
                 f"not the best epoch's; check when the trainer saves it")
    else:
        cause = ("they score no epoch's recorded val loss: the weights are not what training "
                 "scored (a loading or saving bug), or evaluation is not deterministic "
                 "(dropout on in eval mode?)")
    status = "FAIL" if not abs(rel) <= rel_fail else "WARN"
    if status == "WARN":
        cause = (f"between ±{rel_pass:.1%} and ±{rel_fail:.1%}: more than kernel or thread "
                 f"differences usually move a sum; {cause}")
    return CheckResult(NAME, status, f"{shown}; {cause}", values, used, details)


def _rel(loss: float, recorded: Any) -> float:
    try:
        return loss / float(recorded) - 1.0
    except (TypeError, ValueError, ZeroDivisionError):
        return math.inf
