"""Overfitting gap: val loss against the eval-mode train loss (``train_eval``), per epoch.

The running train loss (dropout on, averaged over an epoch while the weights move) is shown
for reference but never compared with val: that comparison is how the chapter read
"epoch 1: train 1.98, val 0.15" as fine.

Both losses are means over a sample of conversations, so the verdicts carry intervals: the
trainer records each epoch's summed loss per conversation (``val_loss_sums``,
``train_eval_loss_sums``, with ``val_tokens`` / ``train_eval_tokens``), and the relative gap
gets a bootstrap interval resampling the two sets of conversations independently, the rise of
val after its best a paired bootstrap over val conversations. A run trained before those were
recorded is judged on the point values, and says so.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from diagnostics.analyses._common import epoch_rows, finite
from diagnostics.decision import (
    Estimate,
    Verdict,
    decide,
    family_level,
    ratio_change,
    ratio_of_rates,
)
from diagnostics.results import CheckResult, table, worst

NAME = "overfitting"
ORDER = 30  # place in the report
# rel_gap = (val - train_eval) / train_eval at the last epoch
DEFAULTS = {
    "rel_gap_pass": 0.10,
    "rel_gap_warn": 0.25,
    "min_abs_gap": 0.01,  # nats/token; a smaller gap is never overfitting (ppl ratio < 1 %)
    "widen_slope": 0.01,  # per epoch, least squares over the last widen_epochs epochs
    "widen_epochs": 3,
    "min_conversations": 30,  # judged on point values (no interval), fewer never FAIL
}
ORDERED = (("rel_gap_pass", "rel_gap_warn"),)


def _pct(x: float) -> str:
    return f"{x:+.1%}"


def _nats(x: float) -> str:
    return f"{x:+.4f}"


def _conversations(metrics: Mapping[str, Any], row: Mapping[str, Any]
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """(val sums, val tokens, train_eval sums, train_eval tokens) of one epoch, over the
    conversations with target tokens, or None when the run did not record them (or recorded
    them inconsistently, or fewer than 2 conversations of a side have targets)."""
    parts = []
    for sums_key, tokens_key in (("val_loss_sums", "val_tokens"),
                                 ("train_eval_loss_sums", "train_eval_tokens")):
        sums, tokens = row.get(sums_key), metrics.get(tokens_key)
        if not isinstance(sums, list) or not isinstance(tokens, list) \
                or len(sums) != len(tokens) or not all(finite(v) for v in sums):
            return None
        s, t = np.asarray(sums, dtype=float), np.asarray(tokens, dtype=float)
        if (t > 0).sum() < 2:
            return None
        parts += [s[t > 0], t[t > 0]]
    return parts[0], parts[1], parts[2], parts[3]


def gap_estimate(metrics: Mapping[str, Any], row: Mapping[str, Any]) -> Estimate | None:
    """``rel_gap = val / train_eval - 1`` of one epoch, each a ratio of summed losses to target
    tokens over its conversations, with an interval over val and train_eval conversations
    resampled independently (:func:`~diagnostics.decision.ratio_of_rates`); None without
    per-conversation losses."""
    data = _conversations(metrics, row)
    if data is None:
        return None
    vs, vt, ts, tt = data
    est = ratio_of_rates((vs, vt), (ts, tt), "val + train_eval conversations")
    # the value the trainer recorded (its mean), the interval around it
    value = float(row["val_loss"] / row["train_eval_loss"] - 1.0)
    return dataclasses.replace(est, value=value, low=min(est.low, value),
                               high=max(est.high, value))


def rise_estimate(metrics: Mapping[str, Any], best: Mapping[str, Any],
                  last: Mapping[str, Any], candidates: int = 1) -> Estimate | None:
    """How much val loss (nats/token) rose from epoch ``best`` to epoch ``last``, with a paired
    interval over val conversations (:func:`~diagnostics.decision.ratio_change`); None without
    per-conversation losses. ``best`` was the lowest of ``candidates`` epochs scored on the
    same conversations, so its loss is biased low by that choice: the interval is at the
    Bonferroni level of that many comparisons (:func:`~diagnostics.decision.family_level`)."""
    a, b = _conversations(metrics, last), _conversations(metrics, best)
    if a is None or b is None or len(a[0]) != len(b[0]):
        return None
    rel = ratio_change(a[0], b[0], "val conversations", level=family_level(candidates))
    scale = float(best["val_loss"])  # same tokens: a relative change of the sums times the mean
    value = float(last["val_loss"]) - scale
    return dataclasses.replace(rel, value=value, low=min(rel.low * scale, value),
                               high=max(rel.high * scale, value))


def _too_few(verdict: Verdict, n_val: int, min_n: int) -> Verdict:
    """A FAIL on point values over fewer than ``min_n`` val conversations becomes a WARN that
    says so."""
    if verdict.status != "FAIL" or n_val >= min_n:
        return verdict
    return Verdict("WARN", f"{verdict.reason}, but {n_val} val conversations are fewer than "
                   f"the {min_n} needed to FAIL on their own: add val conversations",
                   verdict.more_items, verdict.rule)


def _gap_verdict(gap: float, rel: float, train_eval: float, est: Estimate | None, n_val: int,
                 th: Mapping[str, float]) -> Verdict:
    """One epoch's rel_gap against ``rel_gap_pass`` / ``rel_gap_warn``, by its interval where
    there is one. A gap under ``min_abs_gap`` nats (all of its interval, where there is one)
    is never overfitting: near zero loss, rel_gap explodes (0.01 vs 0.02 is +100 %) while val
    perplexity is within 1 % of train's."""
    small = th["min_abs_gap"]
    if est is not None:  # an interval fit for small samples: it alone decides
        verdict = decide(est, pass_line=th["rel_gap_pass"], fail_line=th["rel_gap_warn"],
                         higher_is_better=False, fmt=_pct)
        top = est.high * train_eval  # the interval's upper edge in nats
        if verdict.status != "PASS" and top <= small:
            return Verdict("PASS", f"{rel:+.1%}, but the gap's interval reaches no higher than "
                           f"{top:+.4g} nats, under {small:g}: not overfitting")
        return verdict
    if gap <= small:
        return Verdict("PASS", f"{rel:+.1%}, but the gap of {gap:+.4g} nats is under "
                       f"{small:g}: not overfitting")
    if rel <= th["rel_gap_pass"]:
        verdict = Verdict("PASS", f"{rel:+.1%} (point value), under {th['rel_gap_pass']:.0%}")
    else:
        status = "WARN" if rel <= th["rel_gap_warn"] else "FAIL"
        line = th["rel_gap_pass" if status == "WARN" else "rel_gap_warn"]
        verdict = Verdict(status, f"{rel:+.1%} (point value), above {line:.0%}")
    return _too_few(verdict, n_val, int(th["min_conversations"]))


def _rise_verdict(rise: float, est: Estimate | None, n_val: int,
                  th: Mapping[str, float]) -> Verdict:
    """The rise of val over its best (nats/token) against ``min_delta``: FAIL when the whole
    interval lies above it."""
    if est is not None:
        return decide(est, pass_line=th["min_delta"], fail_line=th["min_delta"],
                      higher_is_better=False, fmt=_nats)
    verdict = Verdict("FAIL", f"{rise:+.4f} (point value) above {th['min_delta']:g}")
    return _too_few(verdict, n_val, int(th["min_conversations"]))


def analyse_overfitting(metrics: Mapping[str, Any], thresholds: Mapping[str, float],
                        split_ids: Mapping[str, Sequence[str]] | None = None) -> CheckResult:
    """Per-epoch gap = val - train_eval and rel_gap = gap / train_eval; final rel_gap against
    its lines, widening gap, val rising after its best; verdict underfitting / good fit /
    overfitting. FAIL only on conclusive evidence: an interval past its line (without
    per-conversation losses, a point value over at least ``min_conversations`` val
    conversations). ``metrics``: a run's metrics.json;
    ``thresholds``: ``overfitting`` keys plus ``min_delta``/``patience``; ``split_ids``: the
    run's split.json ids (``train``, ``val``, ``train_eval``), whose train_eval must lie in
    train for the gap to mean anything (FAIL otherwise)."""
    th = thresholds
    used = {k: th[k] for k in ("rel_gap_pass", "rel_gap_warn", "min_abs_gap", "widen_slope",
                               "widen_epochs", "min_conversations", "min_delta", "patience")}
    if split_ids is not None:
        train = set(split_ids["train"])
        outside = [i for i in split_ids["train_eval"] if i not in train]
        if outside:
            in_val = len(set(outside) & set(split_ids["val"]))
            return CheckResult(NAME, "FAIL", (
                f"train_eval holds {len(outside)} of its {len(split_ids['train_eval'])} "
                f"conversations outside train ({in_val} of them val conversations, e.g. "
                f"{outside[0]}): the gap does not compare val with what the model trained on; "
                "draw train_eval from train (split.json)"),
                {"train_eval_outside_train": len(outside), "train_eval_in_val": in_val}, used)
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
    n_val = len(metrics.get("val_tokens") or []) or int(metrics.get("n_val") or 0)
    estimates = [gap_estimate(metrics, e) for e in rows]
    verdicts = [_gap_verdict(g, r, t, est, n_val, th)
                for g, r, t, est in zip(gap, rel, tev, estimates, strict=True)]
    status_rows = [v.status for v in verdicts]
    min_delta, patience = float(th["min_delta"]), int(th["patience"])

    # val rising: the trailing epochs above best + min_delta
    best_i = int(np.argmin(val))
    rising = 0
    for v in val[::-1]:
        if v <= val[best_i] + min_delta:
            break
        rising += 1
    rise_est = rise = None
    if rising >= patience:
        rise_est = rise_estimate(metrics, rows[best_i], rows[-1], len(val) - rising)
        rise = _rise_verdict(val[-1] - val[best_i], rise_est, n_val, th)
    for i in range(len(val) - rising, len(val)):
        status_rows[i] = worst([status_rows[i], rise.status if rise else "WARN"])
    # widening: least-squares slope of gap over the last widen_epochs epochs
    k = int(th["widen_epochs"])
    slope = float(np.polyfit(ep[-k:], gap[-k:], 1)[0]) if len(ep) >= max(k, 2) else None
    widening = slope is not None and slope > th["widen_slope"]

    final = verdicts[-1]
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
    if estimates[-1] is not None:
        values.update({k: v for k, v in estimates[-1].values("final_rel_gap").items()
                       if k != "final_rel_gap"})
    if rise is not None:
        values["val_rise"] = val[-1] - val[best_i]
        if rise_est is not None:
            values.update(rise_est.values("val_rise"))
    running = [e.get("train_loss") for e in rows]

    def interval(est: Estimate | None) -> str:
        return f"{est.low:+.1%} to {est.high:+.1%}" if est is not None else "-"

    details: dict[str, Any] = {"tables": [table(
        "Per-epoch losses (gap = val - train_eval; rel_gap's 95% interval over conversations)",
        ["epoch", "train (running)", "train_eval", "val", "gap", "rel_gap", "95% CI"],
        [(e, r, t, v, g, f"{q:+.1%}", interval(est))
         for e, r, t, v, g, q, est in zip(ep, running, tev, val, gap, rel, estimates,
                                          strict=True)],
        status_rows)], "notes": [],
        # per epoch row, for the chart's error bars
        "rel_gap_ci95": [None if est is None else [est.low, est.high] for est in estimates]}
    if estimates[-1] is None:
        details["notes"].append(
            "metrics.json holds no usable per-conversation losses (val_loss_sums, "
            "train_eval_loss_sums with val_tokens, train_eval_tokens): the gap is judged on its "
            "point values, without an interval (a FAIL then needs min_conversations val "
            "conversations and the value past its line); retrain with the current trainer")
    for e, r, v, t in zip(ep, running, val, tev, strict=True):
        if finite(r) and r > v:
            details["notes"].append(
                f"epoch {e}: running train {r:.4g} > val {v:.4g} is expected (dropout on, mean "
                f"over an epoch while the weights move) and says nothing about fit; "
                f"eval-mode train_eval is {t:.4g}")
            break

    nums = (f"val {val[-1]:.4g} vs train_eval {tev[-1]:.4g} at epoch {ep[-1]} "
            f"(gap {gap[-1]:+.4g})")
    last_drop = val[-2] - val[-1] if len(val) > 1 else None
    final_low = estimates[-1].low if estimates[-1] is not None else rel[-1]
    remedy = "add dropout/weight decay or more data" + (
        f", or stop at epoch {ep[best_i]} (best val)" if best_i < len(val) - 1 else "")
    if rise is not None:
        values["stop_epoch"] = ep[best_i]
        rose = (f"val loss rose for {rising} epochs after its best {val[best_i]:.4g} at epoch "
                f"{ep[best_i]} to {val[-1]:.4g}: {rise.reason}")
        if rise.status == "FAIL":
            status, verdict = "FAIL", "overfitting"
            reason = (f"overfitting: {rose}; {nums}: stop at epoch {ep[best_i]} (early "
                      "stopping) or regularise more")
        else:
            status, verdict = "WARN", "val rising (not enough to FAIL)"
            reason = (f"val rising, not enough evidence to FAIL: {rose}; {nums}: early stopping "
                      f"would keep epoch {ep[best_i]}")
    elif final.status != "PASS" and (final_low > th["rel_gap_pass"] or final.status == "FAIL"):
        if not plateaued:
            # A large gap while val still improves is memorization of train-only content
            # (random values, exact phrasings), not yet harm to generalization: stopping now
            # would give a worse val loss. The memorization check measures it; FAIL waits for
            # the plateau.
            status, verdict = "WARN", "overfitting (val still improving)"
            reason = (f"generalization gap: {nums}, rel_gap {final.reason}; but val still "
                      f"improving (best at epoch {ep[best_i]}), so not yet harmful: the model "
                      "fits train-only content — see the memorization check — or val is not "
                      "drawn as train is (a split that is not a random one)")
        else:
            status, verdict = final.status, "overfitting"
            reason = f"overfitting: {nums}, rel_gap {final.reason}: {remedy}"
    elif final.status != "PASS":
        status, verdict = "WARN", "gap inconclusive"
        reason = f"gap inconclusive: {nums}, rel_gap {final.reason}"
        if widening:
            reason += f"; gap widening {slope:+.3g}/epoch over the last {k} epochs"
    elif widening:
        status, verdict = "WARN", "gap widening"
        reason = (f"gap widening: {nums}, rel_gap {final.reason}; {slope:+.3g}/epoch over the "
                  f"last {k} epochs: {remedy}")
    elif last_drop is not None and last_drop >= min_delta:
        status, verdict = "PASS", "underfitting"
        reason = (f"underfitting: val still falling ({-last_drop:+.4g} in the last epoch) with "
                  f"a small gap; {nums}, rel_gap {final.reason}: train longer (if baselines "
                  "FAILs, the learning rate or the data come first)")
    else:
        status, verdict = "PASS", "good fit"
        reason = f"good fit: {nums}, rel_gap {final.reason}; gap not widening"
    values["verdict"] = verdict
    return CheckResult(NAME, status, reason, values, used, details)
