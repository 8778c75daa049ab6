"""§8 Val-loss regression gate: a run's best val loss against the committed baseline.

``rel = (L_new - L_base) / L_base``; FAIL if ``rel > tolerance``. Both inputs are *summaries*
of the shape of ``reports/baseline.json`` (``diagnostics.gate.summarize_run`` makes one from a
run directory; ``--update`` writes exactly that). What decides whether the two numbers can be
compared at all:

* refused (SKIP, ``values["refused"]`` names them; the CLI exits 2) unless forced:
  ``data_sha256`` (another corpus), ``eval_hash`` (another val set, vocabulary or ``loss_on``:
  val loss then measures another quantity), ``model_hash`` (another model; the design doc's
  "model config"), and a run that has not finished;
* informational: the recipe (lr, epochs, weight decay, ...): judging a recipe change is what
  the gate is for, so refusing on it would refuse exactly the runs it exists to stop; and the
  environment (precision, CPU bf16 support, torch version): a noise source, named in the notes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from diagnostics.analyses._common import finite
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
)
ENV_KEYS: tuple[tuple[str, str], ...] = (
    ("precision", "precision"),
    ("cpu_bf16", "CPU bf16 support"),
    ("cpu_isa", "CPU vector ISA"),
    ("device", "device"),
    ("torch_version", "torch"),
)


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
    """PASS if ``(new - base) / base <= tolerance``, FAIL above it or if the run diverged;
    SKIP ("refused", ``values["refused"]`` lists the keys) when the data hash, val set or
    model config differ, or the run has not finished, unless ``force``.

    ``run``/``baseline``: summaries as written to reports/baseline.json (``best_val_loss``,
    ``best_epoch``, ``status``, the hashes, ``config``, ``environment``); the run's
    ``best_val_loss`` may be None (no epoch finished). ``tolerance``: finite, ``>= 0``.
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
                                        if k not in MODEL_KEYS and k not in NON_RECIPE_KEYS])
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

    rel = (float(new) - float(base)) / float(base)
    values["rel_change"], values["abs_change"] = rel, float(new) - float(base)
    cmp = (f"best val loss {new:.4f} (epoch {run.get('best_epoch')}) vs baseline {base:.4f} "
           f"(epoch {baseline.get('best_epoch')}): {rel:+.2%}")
    if rel > tolerance or math.isnan(rel):
        cause = (f"the recipe changed ({', '.join(recipe[:4])})" if recipe else
                 "same recipe, so look at code, data pipeline or environment changes")
        reason = (f"{cmp} > +{tolerance:.2%} tolerance: regression; {cause}; re-baseline with "
                  f"`{UPDATE_HINT}` only if the change is intended")
        return CheckResult(NAME, "FAIL", reason, values, used, details)
    reason = f"{cmp} ≤ +{tolerance:.2%} tolerance"
    if rel < -tolerance:
        reason += f"; improved: lock the gain in with `{UPDATE_HINT}`"
    return CheckResult(NAME, "PASS", reason, values, used, details)
