"""Val-loss regression gate: a run's best checkpoint against the committed baseline's.

The comparison is **paired** on the shared val set: ``rel = sum(new) / sum(base) - 1`` over the
summed token losses of the val conversations both hold (``per_conversation``, the best
checkpoints scored in fp32), with a paired bootstrap interval over conversations
(:func:`diagnostics.decision.ratio_change`). It is judged by the one decision rule
(:func:`diagnostics.decision.decide`) against the **effective tolerance**
``max(tolerance, seed spread)``, where the seed spread is the baseline's relative spread of best
val loss across the training seeds of its seed group, ``(max - min) / mean``
(:func:`seed_spread`; 0 for a one-run baseline): FAIL when the whole interval lies above it (a
conclusive regression), PASS when the whole interval lies at or below it, WARN otherwise
(inconclusive: the reason says how many more conversations would settle it). A baseline (or
run) without per-conversation losses falls back to the old unpaired rule, FAIL if
``(L_new - L_base) / L_base`` on best val loss exceeds the effective tolerance, and says so.

Both inputs are *summaries* of the shape of ``reports/baseline.json``
(``diagnostics.gate.summarize_run`` makes one from a run directory; ``--update`` writes exactly
that). What decides whether the two can be compared at all:

* refused (SKIP, ``values["refused"]`` names them; the CLI exits 2) unless forced:
  ``data_sha256`` (another corpus), ``eval_hash`` (another val set, vocabulary or ``loss_on``:
  val loss then measures another quantity), ``model_hash`` (another model), and a run that
  has not finished;
* informational: the recipe (lr, epochs, weight decay, ...): judging a recipe change is what
  the gate is for, so refusing on it would refuse exactly the runs it exists to stop; the
  training seed (``seed``, not part of the recipe: its effect is what the seed spread
  measures); and the environment (precision, CPU bf16 support, torch version): a noise source,
  named in the notes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from diagnostics.analyses._common import finite
from diagnostics.decision import Estimate, decide, ratio_change
from diagnostics.results import CheckResult, table

NAME = "regression"
ORDER = 90  # place in the report
UNCHECKED_WHEN_SKIPPED = (
    "whether val loss got worse than a known-good run (a silent regression from a code or data "
    "change); add a baseline from a good run (`bankllm gate --run RUN --update`, committed) or "
    "pass --baseline FILE")
# the gate's tolerance is a command-line option (--tolerance), not a threshold
DEFAULTS: dict[str, float] = {}
DEFAULT_TOLERANCE = 0.02
UPDATE_HINT = "bankllm gate --run RUN --update"
# a lower val loss is also what a broken evaluation gives (targets not shifted: val loss near
# 0), so the advice to re-baseline waits for the checks that would catch one
LOCK_IN = (f"once causality, leakage and checkpoint pass, lock the gain in with "
           f"`{UPDATE_HINT}`")

#: refusal keys: (summary key, what the message calls it)
REFUSAL_KEYS: tuple[tuple[str, str], ...] = (
    ("data_sha256", "data hash"),
    ("eval_hash", "val set"),
    ("model_hash", "model config"),
)
MODEL_KEYS = ("n_layer", "n_head", "n_embd", "block_size")
#: config keys that are not part of the recipe: where and how it ran, not what it computes
#: (the data path is covered by data_sha256; precision and device are in ``environment``)
NON_RECIPE_KEYS = (
    "data", "device", "precision", "threads", "deterministic", "save_every_steps",
    "micro_batch_size", "micro_batch_tokens", "max_nonfinite_steps",  # execution, same gradients
    "update_ratio_every", "tensorboard",  # what is logged, not what is computed
)
#: not recipe either: which random draws a run made (the training seed's effect on val loss is
#: the seed spread; the split seed is covered by eval_hash, the val ids it drew)
SEED_KEYS = ("seed", "split_seed")
SPREAD_DEFINITION = "(max - min) / mean of the seeds' best val losses"
UNIT = "val conversations"
ENV_KEYS: tuple[tuple[str, str], ...] = (
    ("precision", "precision"),
    ("cpu_bf16", "CPU bf16 support"),
    ("cpu_isa", "CPU vector ISA"),
    ("device", "device"),
    ("torch_version", "torch"),
)


def seed_spread(best_val_losses: Any) -> float:
    """Relative spread of best val loss across training seeds: ``(max - min) / mean`` (0 for
    fewer than two seeds): the largest relative difference two seeds of one recipe showed."""
    values = [float(v) for v in best_val_losses]
    if len(values) < 2:
        return 0.0
    return (max(values) - min(values)) / (sum(values) / len(values))


def baseline_spread(baseline: Mapping[str, Any]) -> float | None:
    """The seed spread a baseline records (its ``seed_group``), None for a one-run baseline."""
    group = baseline.get("seed_group")
    if not isinstance(group, Mapping) or not finite(group.get("spread")):
        return None
    return float(group["spread"])


def _paired(run: Mapping[str, Any], base: Mapping[str, Any]) -> tuple[Estimate | None, str]:
    """The paired ratio change of summed val loss over the conversations both hold, or None
    and why it cannot be computed."""
    new_pc, base_pc = run.get("per_conversation"), base.get("per_conversation")
    if not isinstance(base_pc, Mapping):
        return None, ("the baseline has no per-conversation val losses (written before the "
                      f"paired gate): compared best val loss unpaired; re-baseline with "
                      f"`{UPDATE_HINT}` for the paired comparison")
    if not isinstance(new_pc, Mapping):
        why = run.get("_per_conversation_error") or "not computed"
        return None, (f"the run has no per-conversation val losses ({why}): compared best val "
                      "loss unpaired")
    new_sums, base_sums = new_pc.get("loss_sum") or {}, base_pc.get("loss_sum") or {}
    ids = sorted(set(new_sums) & set(base_sums))
    if len(ids) < 2:
        return None, (f"the run and the baseline share {len(ids)} val conversation(s): "
                      "compared best val loss unpaired")
    est = ratio_change([float(new_sums[i]) for i in ids], [float(base_sums[i]) for i in ids],
                       UNIT)
    if len(ids) < max(len(new_sums), len(base_sums)):
        return est, (f"compared on the {len(ids)} val conversations both hold (baseline "
                     f"{len(base_sums)}, this run {len(new_sums)})")
    return est, ""


def _short(value: Any) -> str:
    text = "-" if value is None else str(value)
    return text[:12] + "…" if len(text) > 16 else text


def config_diff(base: Mapping[str, Any], new: Mapping[str, Any], keys: Any = None) -> list[str]:
    """``"key old → new"`` for every config key (of ``keys``, default all) whose values differ."""
    names = sorted(set(base) | set(new)) if keys is None else list(keys)
    return [f"{k} {base.get(k, '-')} → {new.get(k, '-')}" for k in names
            if base.get(k) != new.get(k)]


def _mismatches(run: Mapping[str, Any], base: Mapping[str, Any]) -> list[tuple[str, str]]:
    """``(key, "the <label> differs (<how>)")`` for each refusal key on which they differ."""
    out = []
    for key, label in REFUSAL_KEYS:
        if run.get(key) == base.get(key):
            continue
        why = f"baseline {_short(base.get(key))}, this run {_short(run.get(key))}"
        if key == "eval_hash":
            why = f"val ids, vocabulary or loss_on; {why}"
        if key == "model_hash":
            diff = config_diff(base.get("config") or {}, run.get("config") or {}, MODEL_KEYS)
            why = ", ".join(diff) or why
        out.append((key, f"the {label} differs ({why})"))
    return out


def _env_notes(run: Mapping[str, Any], base: Mapping[str, Any], tolerance: float) -> list[str]:
    env_b, env_r = base.get("environment") or {}, run.get("environment") or {}
    diffs = [f"{label} {env_b.get(k, '-')} → {env_r.get(k, '-')}" for k, label in ENV_KEYS
             if env_b.get(k) != env_r.get(k)]
    if not diffs:
        return []
    return [f"measured under other conditions than the baseline ({'; '.join(diffs)}): bf16 vs "
            "fp32 and different kernels change val loss by themselves, so a change near the "
            f"{tolerance:.1%} tolerance may be noise; re-baseline on this machine "
            f"({UPDATE_HINT}) or pin precision"]


def _split_seed(config: Mapping[str, Any]) -> Any:
    """The effective split seed of a config (``split_seed``, else ``seed``: older runs)."""
    value = config.get("split_seed")
    return config.get("seed") if value is None else value


def _comparison_table(run: Mapping[str, Any], base: Mapping[str, Any],
                      refused: set[str]) -> dict[str, Any]:
    env_b, env_r = base.get("environment") or {}, run.get("environment") or {}
    rows: list[tuple[str, Any, Any, str | None]] = [
        ("run", base.get("run_name"), run.get("run_name"), None),
        ("status", base.get("status"), run.get("status"),
         None if run.get("status") == "completed" else "FAIL"),
        ("best val loss", base.get("best_val_loss"), run.get("best_val_loss"), None),
        ("best epoch / epochs run", f"{base.get('best_epoch')} / {base.get('epochs_run')}",
         f"{run.get('best_epoch')} / {run.get('epochs_run')}", None),
    ]
    for key, label in (*REFUSAL_KEYS, ("recipe_hash", "recipe")):
        same = base.get(key) == run.get(key)
        mark = None if same else ("FAIL" if key in refused else "WARN")
        rows.append((label, _short(base.get(key)), _short(run.get(key)), mark))
    cfg_b, cfg_r = base.get("config") or {}, run.get("config") or {}
    rows.append(("training seed", cfg_b.get("seed"), cfg_r.get("seed"), None))
    rows.append(("split seed", _split_seed(cfg_b), _split_seed(cfg_r), None))
    for key, label in ENV_KEYS:
        same = env_b.get(key) == env_r.get(key)
        rows.append((label, env_b.get(key), env_r.get(key), None if same else "WARN"))
    rows.append(("trained", base.get("trained"), run.get("trained"), None))
    return table("Run against baseline", ["", "baseline", "this run"],
                 [r[:3] for r in rows], [r[3] for r in rows])


def analyse_regression(
    run: Mapping[str, Any],
    baseline: Mapping[str, Any],
    tolerance: float = DEFAULT_TOLERANCE,
    force: bool = False,
) -> CheckResult:
    """The paired verdict of the module docstring against ``max(tolerance, seed spread)``:
    PASS (interval at or below it), WARN (inconclusive), FAIL (interval above it, or the run
    diverged); the unpaired rule when either side lacks per-conversation losses (a note says
    so); SKIP ("refused", ``values["refused"]`` lists the keys) when the data hash, val set or
    model config differ, or the run has not finished, unless ``force``.

    ``run``/``baseline``: summaries as written to reports/baseline.json (``best_val_loss``,
    ``best_epoch``, ``status``, the hashes, ``config``, ``environment``, optionally
    ``per_conversation`` and, for the baseline, ``seed_group``); the run's ``best_val_loss``
    may be None (no epoch finished). ``tolerance``: finite, ``>= 0``.
    """
    used = {"tolerance": float(tolerance)}
    new, base = run.get("best_val_loss"), baseline.get("best_val_loss")
    values: dict[str, Any] = {"new": new, "baseline": base, "rel_change": None,
                              "tolerance": float(tolerance), "new_epoch": run.get("best_epoch"),
                              "baseline_epoch": baseline.get("best_epoch"), "refused": [],
                              "forced": bool(force)}
    mismatches = _mismatches(run, baseline)
    status = run.get("status")
    unfinished = status in ("running", "interrupted")
    refused = [k for k, _ in mismatches] + (["status"] if unfinished else [])
    notes: list[str] = []
    cfg_b, cfg_r = baseline.get("config") or {}, run.get("config") or {}
    recipe = config_diff(cfg_b, cfg_r, [k for k in sorted(set(cfg_b) | set(cfg_r))
                                        if k not in (*MODEL_KEYS, *NON_RECIPE_KEYS, *SEED_KEYS)])
    if recipe:
        notes.append(f"recipe differs from the baseline's: {', '.join(recipe)} (informational: "
                     "judging recipe changes is what the gate is for)")
    notes += _env_notes(run, baseline, tolerance)
    details = {"tables": [_comparison_table(run, baseline, set(refused))], "notes": notes}

    if refused and not force:
        parts = [w for _, w in mismatches]
        if unfinished:
            parts.append(f"the run has not finished (status {status}; resume it with "
                         "`bankllm train --resume RUN`)")
        values["refused"] = refused
        hint = (f"re-baseline with `{UPDATE_HINT}` if the change is intended, or "
                if mismatches else "")
        reason = (f"refused to compare with the baseline ({baseline.get('run_name')}): "
                  f"{'; '.join(parts)}; {hint}compare anyway with `bankllm gate --force`")
        return CheckResult(NAME, "SKIP", reason, values, used, details)
    if refused:
        why = [w for _, w in mismatches] + ([f"the run is {status}"] if unfinished else [])
        notes.insert(0, f"forced: compared although {'; '.join(why)}")

    if status == "diverged" or (not finite(new) and status == "completed"):
        at = f"best val loss {new:.4f} before that" if finite(new) else "no finite val loss"
        reason = (f"the run diverged ({at}; baseline {base:.4f}): the recipe no longer trains; "
                  "see the loss_phases check for where")
        return CheckResult(NAME, "FAIL", reason, values, used, details)
    if not finite(new):  # forced on a run that stopped before its first validation
        reason = (f"no val loss to compare (the run is {status} and finished no epoch; "
                  f"baseline {base:.4f}): resume it with `bankllm train --resume RUN`")
        return CheckResult(NAME, "FAIL", reason, values, used, details)

    spread = baseline_spread(baseline)
    eff = max(float(tolerance), spread or 0.0)
    values.update(seed_spread=spread, effective_tolerance=eff)
    used["effective_tolerance"] = eff
    cause = (f"the recipe changed ({', '.join(recipe[:4])})" if recipe else
             "same recipe, so look at code, data pipeline or environment changes")
    rebase = f"re-baseline with `{UPDATE_HINT}` only if the change is intended"
    tol_text = (f"+{eff:.2%} effective tolerance (the larger of the tolerance "
                f"+{tolerance:.2%} and the baseline's seed spread +{spread:.2%})"
                if spread is not None else f"+{eff:.2%} tolerance")
    est, why = _paired(run, baseline)
    if why:
        notes.insert(0, why)
    if est is not None:
        fmt = "{:+.2%}".format
        values.update(est.values("rel_change"), comparison="paired",
                      abs_change=float(new) - float(base))
        verdict = decide(est, pass_line=eff, fail_line=eff, higher_is_better=False, fmt=fmt)
        what = (f"paired change of summed val loss, best checkpoints scored in fp32 "
                f"(best val loss {new:.4f} vs baseline {base:.4f}): {verdict.reason}")
        if spread is not None:
            what += f"; the line is the {tol_text}"
        if verdict.status == "FAIL":
            reason = f"{what}: regression; {cause}; {rebase}"
        elif verdict.status == "WARN":
            reason = (f"{what}: not conclusive either way; rerun with other seeds (or gate a "
                      f"seed group) to tell a regression from seed noise")
        else:
            reason = what
            if est.high < -eff:
                reason += f"; improved: {LOCK_IN}"
        if verdict.more_items is not None:
            values["more_items"] = verdict.more_items
        details["decisions"] = {"rel_change": verdict.rule}
        return CheckResult(NAME, verdict.status, reason, values, used, details)

    rel = (float(new) - float(base)) / float(base)
    values["rel_change"], values["abs_change"] = rel, float(new) - float(base)
    values["comparison"] = "unpaired"
    cmp = (f"best val loss {new:.4f} (epoch {run.get('best_epoch')}) vs baseline {base:.4f} "
           f"(epoch {baseline.get('best_epoch')}): {rel:+.2%} (unpaired)")
    if rel > eff or math.isnan(rel):
        reason = f"{cmp} > {tol_text}: regression; {cause}; {rebase}"
        return CheckResult(NAME, "FAIL", reason, values, used, details)
    reason = f"{cmp} ≤ {tol_text}"
    if rel < -eff:
        reason += f"; improved: {LOCK_IN}"
    return CheckResult(NAME, "PASS", reason, values, used, details)
