"""Overfitting gap: val loss against the eval-mode train loss (``train_eval``), per epoch.

The running train loss (dropout on, averaged over an epoch while the weights move) is shown
for reference but never compared with val: that comparison is how the chapter read
"epoch 1: train 1.98, val 0.15" as fine.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from diagnostics.analyses._common import epoch_rows, finite
from diagnostics.results import CheckResult, table

NAME = "overfitting"
ORDER = 30  # place in the report
# rel_gap = (val - train_eval) / train_eval at the last epoch
DEFAULTS = {
    "rel_gap_pass": 0.10,
    "rel_gap_warn": 0.25,
    "min_abs_gap": 0.01,  # nats/token; a smaller gap is never overfitting (ppl ratio < 1 %)
    "widen_slope": 0.01,  # per epoch, least squares over the last widen_epochs epochs
    "widen_epochs": 3,
}
ORDERED = (("rel_gap_pass", "rel_gap_warn"),)


def _band(gap: float, rel: float, th: Mapping[str, float]) -> str:
    """PASS/WARN/FAIL of one epoch's gap. A gap under ``min_abs_gap`` nats is never
    overfitting: near zero loss, rel_gap explodes (0.01 vs 0.02 is +100 %) while val
    perplexity is within 1 % of train's."""
    if gap <= th["min_abs_gap"] or rel <= th["rel_gap_pass"]:
        return "PASS"
    return "WARN" if rel <= th["rel_gap_warn"] else "FAIL"


def analyse_overfitting(metrics: Mapping[str, Any], thresholds: Mapping[str, float]) -> CheckResult:
    """Per-epoch gap = val - train_eval and rel_gap = gap / train_eval; final rel_gap bands,
    widening gap, val rising after its best; verdict underfitting / good fit / overfitting.
    ``metrics``: a run's metrics.json; ``thresholds``: ``overfitting`` keys plus
    ``min_delta``/``patience``."""
    th = thresholds
    used = {k: th[k] for k in ("rel_gap_pass", "rel_gap_warn", "min_abs_gap", "widen_slope",
                               "widen_epochs", "min_delta", "patience")}
    rows = [e for e in epoch_rows(metrics) if finite(e.get("val_loss"))]
    if not rows:
        return CheckResult(NAME, "SKIP", "no completed epoch with a val loss in metrics.json: "
                           "nothing to compare", {}, used)
    if not all(finite(e.get("train_eval_loss")) and e["train_eval_loss"] > 0 for e in rows):
        return CheckResult(NAME, "SKIP", "metrics.json has no eval-mode train loss "
                           "(train_eval_loss); the running train loss (dropout on, weights "
                           "moving) cannot be compared with val — retrain with the current trainer",
                           {}, used)
    ep = [int(e["epoch"]) for e in rows]
    val = np.array([e["val_loss"] for e in rows], dtype=float)
    tev = np.array([e["train_eval_loss"] for e in rows], dtype=float)
    gap, rel = val - tev, (val - tev) / tev
    status_rows = [_band(g, r, th) for g, r in zip(gap, rel, strict=True)]
    min_delta, patience = float(th["min_delta"]), int(th["patience"])

    # val rising: the trailing epochs above best + min_delta
    best_i = int(np.argmin(val))
    rising = 0
    for v in val[::-1]:
        if v <= val[best_i] + min_delta:
            break
        rising += 1
    for i in range(len(val) - rising, len(val)):
        status_rows[i] = "FAIL" if rising >= patience else max(status_rows[i], "WARN",
                                                              key=("PASS", "WARN", "FAIL").index)
    # widening: least-squares slope of gap over the last widen_epochs epochs
    k = int(th["widen_epochs"])
    slope = float(np.polyfit(ep[-k:], gap[-k:], 1)[0]) if len(ep) >= max(k, 2) else None
    widening = slope is not None and slope > th["widen_slope"]

    final = _band(gap[-1], rel[-1], th)
    # EarlyStopping replayed on val: epochs since the last improvement of at least min_delta
    best_so_far, waiting = val[0], 0
    for v in val[1:]:
        if v < best_so_far - min_delta:
            best_so_far, waiting = v, 0
        else:
            waiting += 1
    plateaued = waiting >= patience
    values: dict[str, Any] = {
        "final_epoch": ep[-1], "final_val": val[-1], "final_train_eval": tev[-1],
        "final_gap": gap[-1], "final_rel_gap": rel[-1], "gap_slope": slope,
        "best_epoch": ep[best_i], "best_val": val[best_i], "epochs_rising": rising,
        "epochs_without_improvement": waiting,
    }
    running = [e.get("train_loss") for e in rows]
    details: dict[str, Any] = {"tables": [table(
        "Per-epoch losses (gap = val - train_eval)",
        ["epoch", "train (running)", "train_eval", "val", "gap", "rel_gap"],
        [(e, r, t, v, g, f"{q:+.1%}") for e, r, t, v, g, q in zip(ep, running, tev, val, gap, rel,
                                                                  strict=True)],
        status_rows)], "notes": []}
    for e, r, v, t in zip(ep, running, val, tev, strict=True):
        if finite(r) and r > v:
            details["notes"].append(
                f"epoch {e}: running train {r:.4g} > val {v:.4g} is expected (dropout on, mean "
                f"over an epoch while the weights move) and says nothing about fit; "
                f"eval-mode train_eval is {t:.4g}")
            break

    nums = (f"val {val[-1]:.4g} vs train_eval {tev[-1]:.4g} at epoch {ep[-1]} "
            f"(gap {gap[-1]:+.4g}, rel_gap {rel[-1]:+.1%})")
    last_drop = val[-2] - val[-1] if len(val) > 1 else None
    if rising >= patience:
        status, verdict = "FAIL", "overfitting"
        reason = (f"overfitting: val loss rose for {rising} epochs after its best "
                  f"{val[best_i]:.4g} at epoch {ep[best_i]} to {val[-1]:.4g}; {nums}: "
                  f"stop at epoch {ep[best_i]} (early stopping) or regularise more")
        values["stop_epoch"] = ep[best_i]
    elif final == "FAIL" and not plateaued:
        # A large gap while val still improves is memorization of train-only content (random
        # values, exact phrasings), not yet harm to generalization: stopping now would give a
        # worse val loss. The memorization check measures it; FAIL waits for the plateau.
        status, verdict = "WARN", "overfitting (val still improving)"
        reason = (f"large generalization gap: {nums}; rel_gap above {th['rel_gap_warn']:.0%} "
                  f"but val still improving (best at epoch {ep[best_i]}), so not yet harmful: "
                  "the model fits train-only content — see the memorization check")
    elif final != "PASS" or widening:
        status = "FAIL" if final == "FAIL" else "WARN"
        verdict = "overfitting"
        why = []
        if final != "PASS":
            bound = th["rel_gap_pass" if final == "WARN" else "rel_gap_warn"]
            why.append(f"rel_gap above {bound:.0%}")
        if widening:
            why.append(f"gap widening {slope:+.3g}/epoch over the last {k} epochs")
        reason = (f"overfitting: {nums}; {', '.join(why)}: add dropout/weight decay, more data "
                  f"or stop earlier (best val at epoch {ep[best_i]})")
    elif last_drop is not None and last_drop >= min_delta:
        status, verdict = "PASS", "underfitting"
        reason = (f"underfitting: val still falling ({-last_drop:+.4g} in the last epoch) with "
                  f"a small gap; {nums}: train longer")
    else:
        status, verdict = "PASS", "good fit"
        reason = f"good fit: {nums}, gap not widening"
    values["verdict"] = verdict
    return CheckResult(NAME, status, reason, values, used, details)
