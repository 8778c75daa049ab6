"""Checkpoint: do the saved best weights score the losses the run recorded for them?

Every later check loads ``best.safetensors`` and trusts it to be the model that scored the
run's ``best_val_loss``; ``overfitting`` also trusts the recorded ``train_eval`` losses. This
check scores the val and ``train_eval`` conversations again with those weights, in the run's
own precision, and compares with what training recorded at its best epoch (``<part>_loss``,
``<part>_loss_sums`` and ``<part>_tokens`` of metrics.json). Scoring is deterministic, so the
two agree up to summation order; a difference means the weights, the tokenizer, the
conversations scored or the evaluation itself are not what training scored (the best
checkpoint holding another epoch's weights, a weight-loading bug, ``train_eval`` drawn from
other conversations than split.json names, dropout left on in evaluation). The comparison
covers every conversation of each part, not a sample: no interval.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from diagnostics.analyses._common import finite
from diagnostics.results import CheckResult, table, worst

NAME = "checkpoint"
ORDER = 14  # after causality: whether the weights every later check loads are the best ones
DEFAULTS = {
    # |rescored / recorded - 1| of each part's summed loss. Rescoring the same weights in the
    # same precision agrees to within 0.02% (bf16 against fp32 kernels included); PASS up to
    # 0.1%, FAIL above 0.5%, WARN between (other threads or kernels may move bf16 sums a
    # little, never by half a percent).
    "rel_pass": 0.001,
    "rel_fail": 0.005,
}
ORDERED = (("rel_pass", "rel_fail"),)
PARTS = ("val", "train_eval")  # the splits training scores every epoch (metrics.json)


def analyse_checkpoint(
    rescored: Mapping[str, Sequence[tuple[float, int]]], metrics: Mapping[str, Any],
    thresholds: Mapping[str, float],
) -> CheckResult:
    """Verdict on the best weights' losses ``rescored`` against the run's record.

    ``rescored``: for ``"val"`` (required) and optionally ``"train_eval"``, ``(summed token
    loss, target tokens)`` per conversation in split order, of the best weights in the run's
    precision (``bankllm.evaluation.per_conversation_losses``). ``metrics``: the run's
    metrics.json (``best_epoch``, ``epochs`` with ``<part>_loss`` and ``<part>_loss_sums``,
    ``<part>_tokens``). Each part PASSes when its summed loss agrees within ``rel_pass``, FAILs
    beyond ``rel_fail`` or when its targets differ, WARNs between; the worst part decides.
    SKIP when the run recorded no best epoch.
    """
    rel_pass, rel_fail = float(thresholds["rel_pass"]), float(thresholds["rel_fail"])
    used = {"rel_pass": rel_pass, "rel_fail": rel_fail}
    best_epoch = metrics.get("best_epoch")
    epochs = {e.get("epoch"): e for e in metrics.get("epochs") or []}
    if best_epoch is None or best_epoch not in epochs:
        return CheckResult(NAME, "SKIP", "the run recorded no best epoch (it finished no "
                           "validation): no best weights to check", {}, used)
    values: dict[str, Any] = {"best_epoch": best_epoch}
    statuses, texts, details = [], [], {"tables": []}
    for part in PARTS:
        if part not in rescored or epochs[best_epoch].get(f"{part}_loss") is None:
            continue
        status, text = _compare(part, rescored[part], metrics, epochs, best_epoch, used,
                                values, details)
        statuses.append(status)
        texts.append(text)
    if not statuses:
        return CheckResult(NAME, "SKIP", f"the best epoch ({best_epoch}) recorded no val loss: "
                           "nothing to compare the best weights with", values, used)
    status = worst(statuses)
    shown = f"best weights (epoch {best_epoch}) rescored: {'; '.join(texts)}"
    lower = _lower_than_best(epochs, best_epoch)
    if lower is not None:
        values["lowest_val_epoch"] = lower["epoch"]
        return CheckResult(NAME, "FAIL", (
            f"epoch {lower['epoch']} scored a lower val loss ({_num(lower['val_loss'])}) than "
            f"the recorded best, epoch {best_epoch} "
            f"({_num(epochs[best_epoch].get('val_loss'))}): a worse epoch replaced the best "
            f"checkpoint, so every later check reads weights that did not score best — the "
            f"trainer must save only on improvement; {shown}"), values, used, details)
    if status == "PASS":
        return CheckResult(NAME, "PASS", f"{shown}: every later check reads the weights that "
                           "scored best", values, used)
    return CheckResult(NAME, status, shown, values, used, details)


def _lower_than_best(epochs: Mapping[Any, Mapping[str, Any]],
                     best_epoch: Any) -> Mapping[str, Any] | None:
    """The epoch of lowest val loss when it is lower than the recorded best epoch's, else None
    (the trainer keeps the first of equal losses)."""
    scored = [e for e in epochs.values() if finite(e.get("val_loss"))]
    best = epochs[best_epoch].get("val_loss")
    if not scored or not finite(best):
        return None
    lowest = min(scored, key=lambda e: e["val_loss"])
    return lowest if lowest["val_loss"] < best else None


def _compare(part: str, rescored: Sequence[tuple[float, int]], metrics: Mapping[str, Any],
             epochs: Mapping[Any, Mapping[str, Any]], best_epoch: Any, used: Mapping[str, float],
             values: dict[str, Any], details: dict[str, Any]) -> tuple[str, str]:
    """One part's status and sentence; its figures go into ``values`` under ``part``."""
    rel_pass, rel_fail = used["rel_pass"], used["rel_fail"]
    tokens = [int(n) for _, n in rescored]
    total = sum(tokens)
    loss = sum(s for s, _ in rescored) / total if total else math.nan
    recorded = epochs[best_epoch].get(f"{part}_loss")
    values.update({f"{part}_recorded_loss": recorded, f"{part}_rescored_loss": loss,
                   f"{part}_conversations": len(rescored), f"{part}_tokens": total})
    recorded_tokens = metrics.get(f"{part}_tokens")
    if isinstance(recorded_tokens, list) and recorded_tokens != tokens:
        differ = sum(a != b for a, b in zip(recorded_tokens, tokens, strict=False))
        differ += abs(len(recorded_tokens) - len(tokens))
        return "FAIL", (f"{part} targets differ from those training scored ({total} tokens over "
                        f"{len(tokens)} conversations against {sum(recorded_tokens)} over "
                        f"{len(recorded_tokens)}, {differ} conversations differ): the {part} "
                        "split, the tokenizer or block_size/loss_on is not what training scored")
    rel = _rel(loss, recorded)
    values[f"{part}_rel_difference"] = rel
    sums = epochs[best_epoch].get(f"{part}_loss_sums")
    if isinstance(sums, list) and len(sums) == len(rescored):
        per = [abs(s / r - 1.0) for (s, _), r in zip(rescored, sums, strict=True) if r > 0]
        values[f"{part}_max_conversation_rel_difference"] = max(per, default=0.0)
    shown = f"{part} loss {loss:.6g} against the recorded {_num(recorded)}, {rel:+.3%}"
    if abs(rel) <= rel_pass:
        return "PASS", f"{shown} (within ±{rel_pass:.1%})"
    key = f"{part}_loss"
    nearest = min(epochs.values(), key=lambda e: abs(_rel(loss, e.get(key))))
    near_rel = _rel(loss, nearest.get(key))
    values[f"{part}_nearest_epoch"] = nearest["epoch"]
    details["tables"].append(table(
        f"Recorded {part} loss per epoch against the best weights rescored",
        ["epoch", f"recorded {part} loss", "rescored vs recorded"],
        [(e["epoch"], e.get(key), f"{_rel(loss, e.get(key)):+.3%}") for e in epochs.values()]))
    if nearest["epoch"] != best_epoch and abs(near_rel) <= rel_pass:
        cause = (f"they score epoch {nearest['epoch']}'s {part} loss {_num(nearest.get(key))} "
                 f"({near_rel:+.3%}): best.safetensors holds epoch {nearest['epoch']}'s "
                 "weights, not the best epoch's; check when the trainer saves it")
    else:
        cause = (f"they score no epoch's recorded {part} loss: the weights or the {part} "
                 "conversations are not what training scored (a saving or loading bug, another "
                 "subset), or evaluation is not deterministic (dropout on in eval mode?)")
    if abs(rel) <= rel_fail:
        return "WARN", (f"{shown}, between ±{rel_pass:.1%} and ±{rel_fail:.1%}: more than "
                        f"kernel or thread differences usually move a sum; {cause}")
    return "FAIL", f"{shown}; {cause}"


def _num(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, (int, float)) else repr(value)


def _rel(loss: float, recorded: Any) -> float:
    try:
        return loss / float(recorded) - 1.0
    except (TypeError, ValueError, ZeroDivisionError):
        return math.inf
