"""Half-data ablation and the data-scaling curve.

``rel_increase = (L50 - L100) / L100`` of best val loss, where L100 is the parent run and L50
its retraining on a stratified half of the same train split (same config, seed, val set and
tokenizer; ``bankllm.ablation``). With at least three data sizes (the parent plus two or more
cached ablations) ``L(D) = L_inf + A * D^-alpha`` is fitted by ``scipy.optimize.curve_fit``
(D = train conversations). :func:`plot_scaling_curve` draws the points and the fit.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from diagnostics.analyses._common import finite
from diagnostics.decision import Estimate, decide
from diagnostics.results import CheckResult, table, worst

NAME = "ablation"
ORDER = 80  # place in the report
UNCHECKED_WHEN_SKIPPED = (
    "whether more data would still lower val loss (the data-scaling curve); let the run "
    "complete and run the suite without --no-ablation")
# rel_increase = (L50 - L100) / L100 of best val loss; PASS up to rel_pass, FAIL above
# rel_warn
DEFAULTS = {"rel_pass": 0.25, "rel_warn": 0.50}
ORDERED = (("rel_pass", "rel_warn"),)
CHAPTER_PREDICTION = 0.10  # "Would see ~10% loss increase, not 50%"
ALPHA_BOUNDS = (1e-3, 10.0)


@dataclass
class ScalingFit:
    """``L(D) = l_inf + a * D**-alpha`` fitted to ``n`` points; ``rmse``: root-mean-square
    residual (nats/token); ``at_bound``: alpha or l_inf ended on a bound (the points do not
    look like a decreasing power law, read alpha with care)."""

    l_inf: float
    a: float
    alpha: float
    rmse: float
    max_abs_residual: float
    n: int
    at_bound: bool

    def predict(self, sizes: Any) -> np.ndarray:
        return self.l_inf + self.a * np.asarray(sizes, dtype=float) ** -self.alpha


def fit_scaling(sizes: Sequence[float], losses: Sequence[float]) -> ScalingFit | None:
    """Least-squares fit of ``L(D) = L_inf + A * D^-alpha`` (``L_inf, A >= 0``, alpha in
    ``ALPHA_BOUNDS``) with ``scipy.optimize.curve_fit``; None with fewer than 3 distinct
    positive sizes or when the optimiser fails. D is rescaled by its largest value inside the
    fit for conditioning; the returned ``a`` is for D in the given units."""
    from scipy.optimize import OptimizeWarning, curve_fit

    pts = sorted((float(d), float(v)) for d, v in zip(sizes, losses, strict=True)
                 if finite(d) and finite(v) and d > 0)
    if len({d for d, _ in pts}) < 3:
        return None
    d = np.array([p[0] for p in pts])
    y = np.array([p[1] for p in pts])
    scale = d.max()
    x = d / scale

    def model(x: np.ndarray, l_inf: float, a: float, alpha: float) -> np.ndarray:
        return l_inf + a * x ** -alpha

    # start from the best alpha of a grid (linear least squares for L_inf, A at each alpha)
    best: tuple[float, float, float, float] | None = None
    for alpha in np.geomspace(0.02, 5.0, 60):
        basis = np.column_stack([np.ones_like(x), x ** -alpha])
        coef, *_ = np.linalg.lstsq(basis, y, rcond=None)
        l_inf, a = max(float(coef[0]), 0.0), max(float(coef[1]), 1e-9)
        sse = float(np.sum((model(x, l_inf, a, alpha) - y) ** 2))
        if best is None or sse < best[0]:
            best = (sse, l_inf, a, float(alpha))
    assert best is not None
    upper_l = max(float(y.min()), 1e-9)
    p0 = (min(best[1], upper_l * 0.999), best[2], best[3])
    lower, upper = [0.0, 0.0, ALPHA_BOUNDS[0]], [upper_l, np.inf, ALPHA_BOUNDS[1]]
    try:
        with warnings.catch_warnings():  # 3 points, 3 parameters: no covariance, by design
            warnings.simplefilter("ignore", OptimizeWarning)
            params, _ = curve_fit(model, x, y, p0=p0, bounds=(lower, upper), maxfev=20000)
    except (RuntimeError, ValueError):
        return None
    l_inf, a_scaled, alpha = (float(p) for p in params)
    resid = model(x, l_inf, a_scaled, alpha) - y
    tol = 1e-3
    at_bound = (alpha <= ALPHA_BOUNDS[0] * (1 + tol) or alpha >= ALPHA_BOUNDS[1] * (1 - tol)
                or l_inf >= upper_l * (1 - 1e-6) or l_inf <= upper_l * 1e-6)
    return ScalingFit(l_inf=l_inf, a=a_scaled * scale ** alpha, alpha=alpha,
                      rmse=float(np.sqrt(np.mean(resid ** 2))),
                      max_abs_residual=float(np.max(np.abs(resid))), n=len(pts),
                      at_bound=bool(at_bound))


def band(rel_increase: float, rel_pass: float, rel_warn: float) -> str:
    """The verdict without an interval: PASS ``0 <= rel <= rel_pass``; WARN ``rel < 0`` or
    ``rel <= rel_warn``; FAIL above ``rel_warn``."""
    if rel_increase < 0:
        return "WARN"
    if rel_increase <= rel_pass:
        return "PASS"
    return "WARN" if rel_increase <= rel_warn else "FAIL"


def analyse_ablation(
    l100: float | None,
    n100: int,
    points: Sequence[Mapping[str, Any]],
    thresholds: Mapping[str, float],
    fraction: float = 0.5,
    em_val: Mapping[float, float] | None = None,
    parent_still_improving: bool = False,
    paired: Estimate | None = None,
) -> CheckResult:
    """Verdict on ``rel_increase`` of the ``fraction`` ablation against the parent.

    ``l100``/``n100``: the parent's best val loss and train conversations. ``points``: the
    ablations, each ``{"fraction", "n_train", "best_val_loss"}`` (others ignored); the one at
    ``fraction`` is required (SKIP without it). ``thresholds``: ``rel_pass``, ``rel_warn``.
    ``em_val``: optional exact-match rate on val by fraction (1.0 = parent), reported only.
    With >= 3 distinct sizes (parent included) the data-scaling fit is added.
    ``parent_still_improving`` (best epoch = last epoch) adds a note: the ablation takes as
    many optimizer steps as the parent (``bankllm.ablation``), so neither run had converged and
    the comparison holds at this training budget; a negative change is then not read as
    saturation.
    ``paired``: the paired relative change of the two models' val losses over val
    conversations (:func:`diagnostics.decision.ratio_change`); with it the verdict follows its
    interval by the shared rule against both edges of the expected band: pass line
    ``rel_pass`` and fail line ``rel_warn`` above, and 0 below (an interval reaching below 0
    WARNs: less data may not have hurt; it never FAILs); without it the point value is banded
    and never FAILs.
    """
    rel_pass, rel_warn = float(thresholds["rel_pass"]), float(thresholds["rel_warn"])
    used = {"rel_pass": rel_pass, "rel_warn": rel_warn, "fraction": fraction}
    pts = sorted(({"fraction": float(p["fraction"]), "n_train": int(p["n_train"]),
                   "best_val_loss": p.get("best_val_loss")} for p in points),
                 key=lambda p: p["fraction"])
    half = next((p for p in pts if math.isclose(p["fraction"], fraction)), None)
    if not finite(l100) or l100 <= 0:
        return CheckResult(NAME, "SKIP", f"the run has no usable best val loss ({l100!r})",
                           {}, used)
    if half is None:
        return CheckResult(NAME, "SKIP", f"no {fraction:g} ablation to compare with "
                           f"(run `bankllm ablate --fractions {fraction:g}`)", {}, used)
    l50 = half["best_val_loss"]
    if not finite(l50):
        return CheckResult(NAME, "FAIL", f"the {fraction:g} ablation has no finite best val loss "
                           f"({l50!r}): it diverged or stopped; see its metrics.json", {}, used)
    rel = (l50 - l100) / l100
    verdict = hurt = None
    if paired is not None:
        verdict = decide(paired, pass_line=rel_pass, fail_line=rel_warn, higher_is_better=False,
                         fmt="{:+.1%}".format)
        # the expected band is 0 to rel_pass: its lower edge is a pass line too, and a change
        # below it is a WARN (saturation or leakage), never a FAIL (-100% is the floor)
        hurt = decide(paired, pass_line=0.0, fail_line=-1.0, higher_is_better=True,
                      fmt="{:+.1%}".format)
        status = worst([verdict.status, hurt.status])
    else:
        status = band(rel, rel_pass, rel_warn)
        status = "WARN" if status == "FAIL" else status
    all_pts = [*pts, {"fraction": 1.0, "n_train": int(n100), "best_val_loss": float(l100)}]
    values: dict[str, Any] = {
        "l100": float(l100), "l50": float(l50), "rel_increase": rel,
        "n_train_100": int(n100), "n_train_50": half["n_train"],
        "chapter_prediction": CHAPTER_PREDICTION,
        **(paired.values("paired_rel_increase") if paired is not None else {}),
        "points": [{**p, "rel_increase": (p["best_val_loss"] - l100) / l100
                    if finite(p["best_val_loss"]) else None} for p in all_pts],
    }
    em = dict(em_val or {})
    if em:
        values["em_val_100"] = em.get(1.0)
        values[f"em_val_{round(fraction * 100)}"] = em.get(fraction)
    notes = [f"chapter predicted ~{CHAPTER_PREDICTION:.0%} loss increase on half the data; "
             f"measured {rel:+.1%}"]
    if parent_still_improving:
        notes.append("the parent's val loss was still falling at its last epoch: the "
                     f"{fraction:.0%} run took as many optimizer steps, so neither had converged "
                     "and rel_increase compares the data at this training budget; a longer "
                     "recipe can change it")
    if finite(em.get(1.0)) and finite(em.get(fraction)):
        notes.append(f"EM_val (greedy exact match on val agent turns): {em[1.0]:.1%} with all "
                     f"the data, {em[fraction]:.1%} with {fraction:.0%}")
    usable = [p for p in all_pts if finite(p["best_val_loss"])]
    fit = fit_scaling([p["n_train"] for p in usable], [p["best_val_loss"] for p in usable])
    if fit is not None:
        values.update(alpha=fit.alpha, l_inf=fit.l_inf, A=fit.a, fit_rmse=fit.rmse,
                      fit_max_abs_residual=fit.max_abs_residual, fit_points=fit.n,
                      fit_at_bound=fit.at_bound)
        exact = " (3 points, 3 parameters: an exact fit)" \
            if fit.n == 3 and fit.rmse < 1e-6 * float(l100) else ""
        bound = ("; L_inf or alpha sits on its bound: the points are not a decreasing, "
                 "flattening power law, read alpha with care") if fit.at_bound else ""
        notes.append(f"L(D) = {fit.l_inf:.4f} + {fit.a:.4g} * D^-{fit.alpha:.3f} over {fit.n} "
                     f"sizes, RMS residual {fit.rmse:.2e} nats{exact}{bound}")
    else:
        notes.append(f"{len(usable)} data sizes: the scaling fit needs 3 "
                     "(e.g. `bankllm ablate --fractions 0.25 0.5`)")
    rows = [[f"{p['fraction']:g}" + (" (parent)" if p["fraction"] == 1.0 else ""),
             p["n_train"], p["best_val_loss"],
             None if not finite(p["best_val_loss"]) else (p["best_val_loss"] - l100) / l100,
             em.get(p["fraction"])] for p in reversed(all_pts)]
    details: dict[str, Any] = {
        "tables": [table("Data ablation (best val loss)",
                         ["fraction", "train conversations", "best val loss",
                          "rel. increase vs 100%", "EM_val"], rows)],
        "notes": notes,
        "fit": asdict(fit) if fit is not None else None,
        "decisions": {"paired_rel_increase": verdict.rule,
                      "paired_rel_increase_above_zero": hurt.rule}
        if verdict is not None and hurt is not None else {},
    }
    measured = (f"best val loss {l50:.4f} on {fraction:.0%} of the data vs {l100:.4f} on all: "
                f"{rel:+.1%} (chapter: ~{CHAPTER_PREDICTION:+.0%})")
    if verdict is not None:
        measured += f"; paired over val conversations {verdict.reason}"
    else:
        measured += ("; no per-conversation losses to pair, so no interval: a point value "
                     "alone never FAILs")
    # with an interval, "less data did not hurt" needs all of it below 0
    lower = paired.high < 0 if paired is not None else rel < 0
    if status == "PASS":
        reason = f"{measured}: data scaling as expected"
    elif paired is not None and hurt is not None and paired.low < 0 <= paired.high \
            and status != "FAIL":
        settle = hurt.reason.partition("inconclusive; ")[2]
        reason = (f"{measured}; the interval reaches below +0.0%: inconclusive whether less "
                  f"data hurt at all" + (f" ({settle})" if settle else ""))
    elif lower and parent_still_improving:
        reason = (f"{measured}: less data did not hurt at this training budget — the parent "
                  "was still improving, so the data was not yet what limited it: train longer "
                  "(loss_phases) and ablate again; or val leaks into train (see the leakage "
                  "check)")
    elif lower:
        reason = (f"{measured}: less data did not hurt — the model is saturated on this "
                  "corpus, or val leaks into train (see the leakage check)")
    elif status == "WARN":
        reason = f"{measured}: data-hungry — loss still falls with data, more data should help"
    else:
        reason = (f"{measured}: data-starved or memorizing — collect more data, regularise, or "
                  "stop earlier")
    return CheckResult(NAME, status, reason, values, used, details)
