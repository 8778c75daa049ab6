"""Loss phases: change points of log(step loss), epoch shares, plateau, divergence, clipping.

Divergence is judged on the run's own scale: a spike is a step whose log loss rises over the
median of the previous ``spike_window`` steps (before there are that many: over the larger of
the earlier steps' median and the untrained model's loss) by more than ``spike_noise_k`` robust
standard deviations of the run's step-to-step log-loss changes *and* by more than
``spike_floor_nats`` nats, so noise at a near-zero loss (0.12 -> 0.37) is no divergence. The
share of clipped steps is reported, not judged: it follows how far training got, not the
learning rate.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from diagnostics.analyses._common import early_stopping, epoch_rows, finite
from diagnostics.results import CheckResult, table

NAME = "loss_phases"
ORDER = 20  # place in the report
# change points of log(step loss); divergence = a spike over the rolling median
DEFAULTS = {
    "max_phases": 4,
    # a spike: log loss above the median of the previous spike_window steps by more than
    # spike_noise_k x the robust sd (1.4826 x MAD) of the run's step-to-step log-loss changes
    # (6 sd: under Gaussian noise about one false alarm in 10^9 steps; batch-order noise is
    # heavier-tailed, hence not 3) ...
    "spike_noise_k": 6.0,
    # ... and by more than spike_floor_nats nats: a near-zero loss doubling (0.12 -> 0.37) is
    # noise, while a real blow-up moves the loss by nats (the chapter's initial loss is ln V)
    "spike_floor_nats": 0.5,
    "spike_window": 20,
    # the clipped share is reported, not judged (docs/diagnostics.md): "hard" is a pre-clip
    # grad_norm above clip_norm_factor x grad_clip (the clip more than halved the update)
    "clip_norm_factor": 2.0,
    "plateau_rate": 0.02,  # a phase losing < 2 % of its loss per epoch is a plateau
    "rapid_ratio": 0.5,  # slope >= 0.5 x the steepest phase's: "rapid drop"
    "learning_ratio": 0.15,  # >= 0.15 x: "domain learning"; below: "refinement"
    "share_target": 0.95,  # report the epoch by which this share of the reduction is done
}
MAX_POINTS = 200  # longer curves are averaged into this many consecutive-step buckets
METHOD = "ruptures.Dynp(model='linear') on log(loss) vs step; 1..max_phases segments by BIC"


def _segments(
    x: np.ndarray, y: np.ndarray, max_phases: int, min_size: int = 3
) -> list[tuple[int, int]]:
    """Least-squares piecewise-linear segmentation of ``y(x)`` into at most ``max_phases``
    ``[start, end)`` index ranges of at least ``min_size`` points (and at least m / 20).

    ``ruptures.Dynp`` with the ``"linear"`` cost (least-squares line per segment, regressors
    ``[x, 1]``) is the *exact* dynamic programme over all breakpoint positions; with at most
    ~200 points it costs a fraction of a second, so the approximate ``Binseg``/``BottomUp`` buy
    nothing. (``"clinear"`` is not a least-squares fit: it interpolates between the noisy end
    samples of each segment.) The number of segments is chosen by BIC, so a flat or cleanly
    log-linear curve keeps one phase instead of being forced into four.
    """
    import ruptures as rpt

    m = len(y)
    min_size = max(3, m // 20, min_size)
    xs = (x - x[0]) / max(float(x[-1] - x[0]), 1.0)
    algo = rpt.Dynp(model="linear", min_size=min_size, jump=1)
    algo.fit(np.column_stack([y, xs, np.ones(m)]))
    best: tuple[float, list[int]] = (math.inf, [m])
    for k in range(max_phases):
        if m < (k + 1) * min_size:
            break
        bkps = algo.predict(n_bkps=k) if k else [m]
        sse = float(algo.cost.sum_of_costs(bkps))
        bic = m * math.log(max(sse / m, 1e-12)) + (3 * k + 2) * math.log(m)
        if bic < best[0]:
            best = (bic, bkps)
    starts = [0, *best[1][:-1]]
    return list(zip(starts, best[1], strict=True))


def _label(rate: float, steepest: float, th: Mapping[str, float]) -> str:
    """Name a phase by its log-loss decrease per epoch ``rate``, relative to the steepest."""
    if rate < -th["plateau_rate"]:
        return "rising"
    if rate <= th["plateau_rate"]:
        return "plateau"
    if rate >= th["rapid_ratio"] * steepest:
        return "rapid drop"
    return "domain learning" if rate >= th["learning_ratio"] * steepest else "refinement"


def _phases(
    steps: np.ndarray, epochs: np.ndarray, loss: np.ndarray, th: Mapping[str, float],
    steps_per_epoch: float,
) -> list[dict[str, Any]]:
    n = len(loss)
    groups = np.array_split(np.arange(n), min(n, MAX_POINTS))
    x = np.array([steps[g].mean() for g in groups])
    y = np.array([np.log(loss[g]).mean() for g in groups])
    # A phase lasts at least an epoch: within one, step losses follow the batch order
    # (length-bucketed batches differ in difficulty), not a change in learning.
    per_epoch = math.ceil(steps_per_epoch * len(groups) / n)
    segs = _segments(x, y, int(th["max_phases"]), min_size=per_epoch)
    fits = [np.polyfit(x[a:b], y[a:b], 1) if b - a > 1 else (0.0, y[a]) for a, b in segs]
    rates = [-float(f[0]) * steps_per_epoch for f in fits]
    steepest = max(max(rates), 1e-12)
    labels = [_label(r, steepest, th) for r in rates]
    for i, (a, b) in enumerate(segs):
        # a rise of the step loss shorter than two epochs is not called a phase: it can be
        # batch order (or one bad stretch, which the spike check judges); real divergence and
        # overfitting last longer (and the overfitting check reads val loss for the latter)
        if labels[i] == "rising" and b - a < 2 * per_epoch:
            labels[i] = labels[i - 1] if i else "plateau"
    merged: list[list[int]] = []  # adjacent segments with one label are one phase
    for i, lab in enumerate(labels):
        if merged and labels[merged[-1][0]] == lab:
            merged[-1].append(i)
        else:
            merged.append([i])
    phases = []
    for number, idx in enumerate(merged, start=1):
        a, b = segs[idx[0]][0], segs[idx[-1]][1]
        first, last = groups[a][0], groups[b - 1][-1]
        slope, icept = np.polyfit(x[a:b], y[a:b], 1) if b - a > 1 else (0.0, y[a])
        phases.append({
            "phase": number, "label": labels[idx[0]],
            "first_step": int(steps[first]), "last_step": int(steps[last]),
            "first_epoch": int(epochs[first]), "last_epoch": int(epochs[last]),
            "loss_start": float(np.exp(icept + slope * steps[first])),
            "loss_end": float(np.exp(icept + slope * steps[last])),
            "drop_per_epoch": float(1 - np.exp(slope * steps_per_epoch)),
        })
    return phases


def finite_steps(steps: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The steps whose loss is finite and positive, in order: what every curve measure uses."""
    return [s for s in steps if finite(s.get("loss")) and s["loss"] > 0]


def log_noise(fin: Sequence[Mapping[str, Any]]) -> float:
    """Robust sd (1.4826 x MAD) of the step-to-step changes of log(step loss) over ``fin``
    (:func:`finite_steps`); 0 with fewer than 3 of them."""
    losses = np.array([s["loss"] for s in fin], dtype=float)
    if len(losses) < 3:
        return 0.0
    d = np.diff(np.log(losses))
    return float(1.4826 * np.median(np.abs(d - np.median(d))))


def _spikes(fin: Sequence[Mapping[str, Any]], warmup: int, th: Mapping[str, float],
            noise: float, initial_loss: float | None = None) -> list:
    """Steps of ``fin`` (:func:`finite_steps`) after warm-up whose loss rises over a reference
    by more than ``spike_noise_k`` x ``noise`` in log and by more than ``spike_floor_nats``
    nats, as ``(step, epoch, loss, reference, jump / noise, what the reference is)``.

    The reference is the median of the previous ``spike_window`` finite step losses. Before
    there are that many it is the larger of the median of all previous ones and
    ``initial_loss`` (the untrained model's): a step then counts only if the model got worse
    than it was untrained, since early steps swing too much for a rise over the few steps
    before them to prove divergence (docs/diagnostics.md, loss_phases). Without
    ``initial_loss`` the first ``spike_window`` steps are not judged."""
    window = int(th["spike_window"])
    losses = np.array([s["loss"] for s in fin], dtype=float)
    k, floor = float(th["spike_noise_k"]), float(th["spike_floor_nats"])
    early = finite(initial_loss) and initial_loss > 0
    full = (np.median(np.lib.stride_tricks.sliding_window_view(losses, window)[:-1], axis=1)
            if len(fin) > window else np.empty(0))  # full[j - window]: median before step j
    out = []
    for j in range(1 if early else window, len(fin)):
        ref = float(full[j - window] if j >= window else np.median(losses[:j]))
        untrained = j < window and initial_loss > ref
        if untrained:
            ref = float(initial_loss)
        jump = math.log(losses[j] / ref)
        if fin[j]["step"] > warmup and jump > k * noise and losses[j] - ref > floor:
            what = (f"the initial loss {ref:.3g} (untrained)" if untrained else
                    f"the median {ref:.3g} of the previous {min(j, window)} step{'s' * (j > 1)}")
            out.append((fin[j]["step"], fin[j]["epoch"], float(losses[j]), ref,
                        jump / noise if noise > 0 else math.inf, what))
    return out


def clip_counts(steps: Sequence[Mapping[str, Any]], grad_clip: float | None, factor: float
                ) -> tuple[int, int, int] | None:
    """``(clipped, clipped hard, counted)``: optimizer steps whose logged pre-clip
    ``grad_norm`` exceeded ``grad_clip``, and ``factor`` x ``grad_clip``, out of those with a
    finite one; None without clipping (``grad_clip`` None or <= 0)."""
    if not finite(grad_clip) or grad_clip <= 0:
        return None
    norms = np.array([s["grad_norm"] for s in steps if finite(s.get("grad_norm"))], dtype=float)
    return (int((norms > grad_clip).sum()), int((norms > factor * grad_clip).sum()),
            len(norms))


def analyse_loss_phases(metrics: Mapping[str, Any], thresholds: Mapping[str, float],
                        grad_clip: float | None = None) -> CheckResult:
    """Phases of the step-loss curve, per-epoch shares of the loss reduction, plateau epoch
    (EarlyStopping on val loss), divergence and the share of clipped steps. ``metrics``: a
    run's metrics.json. ``thresholds``: ``loss_phases`` keys plus ``min_delta``/``patience``.
    ``grad_clip``: the run's clipping norm (config; ``metrics["grad_clip"]`` wins if present;
    None or 0: no clipping, no share)."""
    th = thresholds
    used = {k: th[k] for k in ("max_phases", "spike_noise_k", "spike_floor_nats", "spike_window",
                               "clip_norm_factor", "plateau_rate", "min_delta", "patience")}
    steps = sorted(metrics.get("steps") or [], key=lambda s: s["step"])
    epochs = epoch_rows(metrics)
    values: dict[str, Any] = {"n_steps": len(steps), "n_epochs": len(epochs)}
    details: dict[str, Any] = {"method": METHOD, "tables": [], "notes": [], "boundaries": []}

    # divergence
    bad = [s for s in steps if not finite(s.get("loss"))]
    events = [e for e in metrics.get("events") or [] if e.get("kind") == "nonfinite"]
    fin = finite_steps(steps)
    noise = log_noise(fin)
    spikes = _spikes(fin, int(metrics.get("warmup_steps") or 0), th, noise,
                     metrics.get("initial_loss"))
    values.update(nonfinite_steps=len(bad), nonfinite_events=len(events), spikes=len(spikes),
                  log_loss_noise=noise, run_status=metrics.get("status"))
    if spikes:
        details["tables"].append(table(
            "Loss spikes", ["step", "epoch", "loss", "reference", "jump (nats)",
                            "jump / noise (log)"],
            [(s, e, v, m, v - m, z) for s, e, v, m, z, _ in spikes[:20]],
            ["FAIL"] * min(20, len(spikes))))

    # clipping, reported only: the share of clipped steps follows how far training got (an
    # untrained model's gradients are large), not the learning rate
    clip, factor = metrics.get("grad_clip", grad_clip), float(th["clip_norm_factor"])
    counts = clip_counts(steps, clip, factor)
    if counts is None:
        details["notes"].append("no grad_clip known (or clipping off): no clipped share")
    elif counts[2]:
        clipped, hard, counted = counts
        share = hard / counted
        values.update(grad_clip=clip, clipped_steps=hard, clip_share=share,
                      clip_share_any=clipped / counted)
        details["notes"].append(
            f"{values['clip_share_any']:.0%} of {counted} steps had grad_norm above grad_clip "
            f"{clip:g}, {share:.0%} above {factor:g}x it (not judged: the share follows how far "
            "training got, not the learning rate)")

    # phases
    if len(fin) >= 8:
        spe = float(metrics.get("steps_per_epoch") or len(steps) / max(1, steps[-1]["epoch"]))
        phases = _phases(np.array([s["step"] for s in fin]), np.array([s["epoch"] for s in fin]),
                         np.array([s["loss"] for s in fin], dtype=float), th, max(spe, 1.0))
        details["boundaries"] = [p["first_step"] for p in phases[1:]]
        values["n_phases"] = len(phases)
        values["phases"] = [p["label"] for p in phases]
        details["tables"].append(table(
            "Loss phases (fitted on log loss)",
            ["phase", "label", "steps", "epochs", "loss start", "loss end", "drop/epoch"],
            [(p["phase"], p["label"], f"{p['first_step']}-{p['last_step']}",
              f"{p['first_epoch']}-{p['last_epoch']}", p["loss_start"], p["loss_end"],
              f"{p['drop_per_epoch']:.1%}") for p in phases]))
    else:
        details["notes"].append(f"only {len(fin)} finite step losses: too few to find phases")

    # per-epoch share of the loss reduction, at eval-mode loss between epochs
    l0 = metrics.get("initial_loss")
    if not finite(l0) and fin:
        l0 = fin[0]["loss"]
        details["notes"].append("initial_loss missing: epoch 1 starts from the first step loss")
    use_eval = all(finite(e.get("train_eval_loss")) for e in epochs)
    ends = [e.get("train_eval_loss") if use_eval else e.get("train_loss") for e in epochs]
    if epochs and finite(l0) and all(finite(v) for v in ends) and l0 - ends[-1] > 0:
        total, rows, start, done = l0 - ends[-1], [], l0, None
        for e, end in zip(epochs, ends, strict=True):
            share, cum = (start - end) / total, (l0 - end) / total
            if done is None and cum >= th["share_target"]:
                done = e["epoch"]
            rows.append((e["epoch"], start, end, f"{share:.1%}", f"{cum:.1%}"))
            start = end
        values.update(share_epoch1=(l0 - ends[0]) / total, epoch_share_target=done)
        kind = "train_eval" if use_eval else "running train (train_eval missing)"
        details["tables"].append(table(
            f"Share of the loss reduction per epoch ({kind} loss at epoch ends)",
            ["epoch", "loss start", "loss end", "share", "cumulative"], rows))

    # plateau: EarlyStopping replayed on val loss
    vals = [(e["epoch"], e["val_loss"]) for e in epochs if finite(e.get("val_loss"))]
    stop = None
    if vals:
        stop = early_stopping([v[0] for v in vals], [v[1] for v in vals],
                              float(th["min_delta"]), int(th["patience"]))
        values.update(plateau_epoch=stop.plateau_epoch, early_stop_epoch=stop.stop_epoch,
                      recommended_stop_epoch=stop.plateau_epoch, best_val_epoch=stop.best_epoch)

    if bad or events or spikes or metrics.get("status") == "diverged":
        if bad or events:
            where = sorted({(s["step"], s["epoch"]) for s in bad + events})
            what = f"non-finite loss at step {where[0][0]} (epoch {where[0][1]})"
            what += f" and {len(where) - 1} more steps" if len(where) > 1 else ""
        elif spikes:
            s, e, v, m, z, ref = spikes[0]
            what = (f"step {s} (epoch {e}) loss {v:.3g} is {v - m:+.3g} nats over {ref} "
                    f"({z:.0f}× the run's step-to-step noise of log loss)")
            what += f" ({len(spikes) - 1} more spikes)" if len(spikes) > 1 else ""
        else:
            what = "the trainer marked the run as diverged"
        reason = f"divergence: {what}; lower lr, add warmup_steps, keep grad_clip on or use fp32"
        return CheckResult(NAME, "FAIL", reason, values, used, details)
    if stop is None:
        return CheckResult(NAME, "SKIP", "no completed epoch with a val loss: nothing to judge "
                           "(run interrupted before its first epoch ended?)", values, used, details)
    share = values.get("epoch_share_target")
    tail = (f"; {th['share_target']:.0%} of the loss reduction done by epoch {share}"
            if share and share < epochs[-1]["epoch"] else "")
    if stop.plateau_epoch is None:
        last = vals[-1]
        window = vals[-int(th["patience"]) - 1] if len(vals) > th["patience"] else vals[0]
        if len(vals) == 1:
            reason = (f"one epoch with a val loss ({last[1]:.4g}): too few to tell improvement "
                      f"from a plateau (EarlyStopping's patience is {int(th['patience'])} "
                      f"epochs); train more epochs{tail}")
        elif stop.best_epoch == last[0]:
            reason = (f"still improving: val loss {window[1]:.4g} → {last[1]:.4g} over epochs "
                      f"{window[0]}-{last[0]} (EarlyStopping min_delta {th['min_delta']:g}, "
                      f"patience {int(th['patience'])} never triggered); train more epochs "
                      f"(if baselines FAILs, the learning rate or the data come first){tail}")
        else:
            waited = last[0] - stop.best_epoch
            reason = (f"not improving since epoch {stop.best_epoch} (val loss "
                      f"{stop.best_value:.4g}, epoch {last[0]} {last[1]:.4g}: less than "
                      f"min_delta {th['min_delta']:g} better for {waited} of the "
                      f"{int(th['patience'])} epochs EarlyStopping waits): too few epochs to "
                      f"call a plateau{tail}")
        return CheckResult(NAME, "WARN", reason, values, used, details)
    reason = (f"val loss plateaued after epoch {stop.plateau_epoch} (best {stop.best_value:.4g}; "
              f"< {th['min_delta']:g} better for {int(th['patience'])} epochs): recommended stop "
              f"epoch {stop.plateau_epoch}; {values.get('n_phases', 0)} phases{tail}")
    lowest = min(vals, key=lambda ev: ev[1])
    if lowest[1] < stop.best_value - th["min_delta"]:
        values["improved_after_plateau"] = lowest[0]
        reason += (f"; but val fell again after it, to {lowest[1]:.4g} at epoch {lowest[0]} "
                   f"(the run's best): a patience of {int(th['patience'])} epochs would stop "
                   "this run too early")
    return CheckResult(NAME, "PASS", reason, values, used, details)
