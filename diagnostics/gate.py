"""``bankllm gate``: the val-loss regression gate against a committed baseline.

Exit codes of :func:`cli_gate`: 0 the run passes (``rel <= tolerance``), 1 it regressed (or
diverged), 2 unusable input: a missing or malformed baseline, a missing run, or a run that
cannot be compared (data hash, val set or model config differ, or the run has not finished)
without ``--force``. ``--update`` rewrites the baseline from the run (atomically,
schema-checked), with the per-item outcomes of the probe checks when ``--report`` (default
reports/diagnostics.json) is a diagnostics report of that run (``check_outcomes``: what their
paired change against the baseline compares, diagnostics.paired).

The baseline (``reports/baseline.json``, ``schemas/baseline.schema.json``) is the summary of a
run that :func:`summarize_run` makes; the comparison is the pure
:func:`diagnostics.analyses.regression.analyse_regression`, shared with ``pytest diagnostics``
(``test_regression.py``, via :func:`gate_result`).
"""

from __future__ import annotations

import hashlib
import json
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bankllm.errors import EXIT_OK as EXIT_PASS
from bankllm.errors import EXIT_REGRESSION, BankLLMError
from bankllm.fileio import atomic_write_json, read_json, validate_json
from bankllm.precision import machine_info
from diagnostics.analyses.regression import (
    DEFAULT_TOLERANCE,
    NAME,
    NON_RECIPE_KEYS,
    SEED_KEYS,
    SPREAD_DEFINITION,
    UPDATE_HINT,
    analyse_regression,
    seed_spread,
)
from diagnostics.results import CheckResult, worst

DEFAULT_BASELINE = "reports/baseline.json"
DEFAULT_REPORT = "reports/diagnostics.json"
# the checks whose per-item outcomes --update copies into the baseline (diagnostics.paired)
OUTCOME_CHECKS = ("consistency", "faithfulness", "memorization")
# Next to this module (not importlib.resources: that fails when an editable install predating
# diagnostics/__init__.py made ``diagnostics`` a namespace package).
SCHEMA_PATH = Path(__file__).resolve().parent / "schemas" / "baseline.schema.json"
_STYLE = {"PASS": "bold green", "FAIL": "bold red", "SKIP": "bold yellow", "WARN": "yellow"}


def baseline_schema() -> dict[str, Any]:
    """The JSON Schema of a baseline file (schemas/baseline.schema.json)."""
    return read_json(SCHEMA_PATH, "baseline schema")


def _hash(obj: Any) -> str:
    """First 16 hex digits of the SHA-256 of ``obj`` as canonical JSON."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def _now() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def summarize_run(run_dir: str | Path) -> dict[str, Any]:
    """The run as a baseline record (schemas/baseline.schema.json, except that
    ``best_val_loss``/``best_epoch`` may be None). Reads metrics.json, config.json, split.json
    and tokenizer.json; ``environment`` pairs the run's precision, device and torch with this
    machine's CPU (the gate runs where the run trained, as in CI). ``per_conversation``: the
    best checkpoint's summed val loss and target tokens per val conversation, scored in fp32
    (:func:`bankllm.val_losses.run_val_losses`, cached in the run's val_losses.json); when they
    cannot be computed, ``_per_conversation_error`` says why (never written to a baseline).
    Raises :class:`BankLLMError` for a missing or unreadable run."""
    from bankllm.checkpoints import read_config, read_metrics

    path = Path(run_dir)
    if not path.is_dir():
        raise BankLLMError(f"{path}: no such run (train one with 'bankllm train' or "
                           "'tox -e train', or pass --run DIR)")
    metrics = read_metrics(path)
    cfg = read_config(path)
    split = read_json(path / "split.json", "split")
    vocab = read_json(path / "tokenizer.json", "tokenizer")
    if not isinstance(split, dict) or not isinstance(split.get("val"), list):
        raise BankLLMError(f"{path / 'split.json'}: no list of val ids")
    data_sha = metrics.get("data_sha256") or split.get("data_sha256")
    if not isinstance(data_sha, str):
        raise BankLLMError(f"{path}: no data_sha256 in metrics.json or split.json")
    config = cfg.to_dict()
    recipe = {k: v for k, v in config.items() if k not in (*NON_RECIPE_KEYS, *SEED_KEYS)}
    trained = datetime.fromtimestamp((path / "metrics.json").stat().st_mtime, UTC)
    extra: dict[str, Any] = {}
    if metrics.get("best_val_loss") is not None:
        from bankllm.val_losses import run_val_losses

        try:
            extra["per_conversation"] = run_val_losses(path)
        except BankLLMError as exc:  # e.g. the corpus is gone: the unpaired comparison says so
            extra["_per_conversation_error"] = str(exc)
    return {
        "schema_version": 1,
        "run_name": str(metrics.get("run_name") or path.resolve().name),
        "created": _now(),
        "trained": trained.replace(microsecond=0).isoformat().replace("+00:00", "Z"),
        "status": metrics["status"],
        "best_val_loss": metrics.get("best_val_loss"),
        "best_epoch": metrics.get("best_epoch"),
        "epochs_run": len(metrics.get("epochs") or []),
        "data_sha256": data_sha,
        "eval_hash": _hash({"val": sorted(map(str, split["val"])), "tokenizer": vocab,
                            "loss_on": cfg.loss_on}),
        "model_hash": cfg.model_hash(),
        "recipe_hash": _hash(recipe),
        "config": config,
        "environment": {
            "torch_version": str(metrics.get("torch_version", "unknown")),
            "precision": str(metrics.get("precision", "unknown")),
            "device": str(metrics.get("device", "unknown")),
            **machine_info(),
        },
        "split_seed": cfg.effective_split_seed,
        **extra,
    }


def read_baseline(path: str | Path) -> dict[str, Any]:
    """Read and schema-check a baseline; any problem is one :class:`BankLLMError` line that
    names the file and says how to make a new one."""
    path = Path(path)
    fix = f"create it from a good run with `{UPDATE_HINT}`"
    if not path.is_file():
        raise BankLLMError(f"{path}: baseline not found; {fix}")
    try:
        data = read_json(path, "baseline")
        validate_json(data, baseline_schema(), str(path))
    except BankLLMError as exc:
        raise BankLLMError(f"{exc}; fix it, or re{fix}") from None
    return data


def read_check_outcomes(path: str | Path) -> dict[str, Any] | None:
    """The baseline's ``check_outcomes`` (``{check: outcomes}``), or None when the file is
    missing, unreadable or older than that key: never an error (the regression check reports
    a bad baseline)."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        outcomes = read_baseline(path).get("check_outcomes")
    except BankLLMError:
        return None
    return dict(outcomes) if isinstance(outcomes, dict) else None


def write_baseline(path: str | Path, record: dict[str, Any]) -> Path:
    """Schema-check ``record`` (less its ``_``-prefixed working keys) and write it to ``path``
    atomically (never half a file)."""
    record = {k: v for k, v in record.items() if not k.startswith("_")}
    validate_json(record, baseline_schema(), str(path))
    return atomic_write_json(path, record)


def gate_result(run_dir: str | Path, baseline_path: str | Path,
                tolerance: float = DEFAULT_TOLERANCE, force: bool = False) -> CheckResult:
    """The gate as one CheckResult, for ``pytest diagnostics``: SKIP without a baseline (with
    the command that makes one), FAIL for an unreadable baseline, else analyse_regression."""
    baseline_path = Path(baseline_path)
    try:
        tolerance = check_tolerance(tolerance)
    except BankLLMError as exc:
        return CheckResult(NAME, "FAIL", str(exc))
    if not baseline_path.is_file():
        return CheckResult(NAME, "SKIP", f"no baseline at {baseline_path}: create one from a "
                           f"good run with `bankllm gate --run {run_dir} --update` and commit "
                           "it", thresholds={"tolerance": tolerance})
    try:
        baseline = read_baseline(baseline_path)
        members = read_group(run_dir)
        if members is None:
            return analyse_regression(summarize_run(run_dir), baseline, tolerance, force)
        results = [analyse_regression(summarize_run(m), baseline, tolerance, force)
                   for m in members]
    except BankLLMError as exc:
        return CheckResult(NAME, "FAIL", str(exc), thresholds={"tolerance": tolerance})
    return group_result(run_dir, members, results)


def read_group(run_dir: str | Path) -> list[Path] | None:
    """The member runs of a seed group (bankllm.seed_group.read_group), None for one run."""
    from bankllm.seed_group import read_group as read

    return read(run_dir)


def group_result(run_dir: str | Path, members: list[Path],
                 results: list[CheckResult]) -> CheckResult:
    """A seed group's verdict: every member gated on its own; it passes only if every member
    passes. Status: FAIL if any member FAILs, else refused (SKIP) if any is refused, else
    WARN if any WARNs, else PASS; the reason gives each member's verdict."""
    statuses = [r.status for r in results]
    status = "FAIL" if "FAIL" in statuses else "SKIP" if "SKIP" in statuses else worst(statuses)
    parts = [f"{m.name}: {r.status} ({r.reason})" for m, r in zip(members, results, strict=True)]
    passed = sum(st == "PASS" for st in statuses)
    reason = (f"seed group {Path(run_dir).name}: {passed} of {len(results)} members pass "
              f"(the group passes only if all do); " + "; ".join(parts))
    pairs = list(zip(members, results, strict=True))
    values: dict[str, Any] = {
        "group": str(run_dir), "members": {m.name: r.values for m, r in pairs},
        "refused": sorted({k for _, r in pairs for k in r.values.get("refused", [])}),
    }
    tables = [dict(t, title=f"{m.name}: {t['title']}")
              for m, r in pairs for t in r.details.get("tables", [])]
    notes = [f"{m.name}: {n}" for m, r in pairs for n in r.details.get("notes", [])]
    return CheckResult(NAME, status, reason, values, results[0].thresholds,
                       {"tables": tables, "notes": notes})


# --------------------------------------------------------------------------- CLI


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return "-" if value is None else str(value)


def _change_text(v: dict[str, Any]) -> str:
    rel = v.get("rel_change")
    if rel is None:
        return "not compared"
    if v.get("comparison") != "paired":
        return f"{rel:+.2%} (unpaired: best val loss against best val loss)"
    low, high = v.get("rel_change_ci95_low"), v.get("rel_change_ci95_high")
    interval = ("" if low is None or high is None or not math.isfinite(low + high)
                else f", 95% CI {low:+.2%} to {high:+.2%}")
    return (f"{rel:+.2%} (paired over {v.get('rel_change_n')} val conversations{interval}; "
            "summed val loss of the best checkpoints, fp32)")


def render(result: CheckResult, console: Any, run_dir: Any, baseline_path: Any,
           verdict: bool = True) -> None:
    """Print the explanation: new against baseline, relative change (paired, with its
    interval, or unpaired), tolerance, seed spread and effective tolerance, the comparison
    table, notes, and (``verdict``) the verdict line."""
    from rich.table import Table

    v = result.values
    console.print(f"[bold]val-loss regression gate[/]: run {run_dir} against {baseline_path}")
    summary = Table(show_header=False, box=None, padding=(0, 2))
    summary.add_row("best val loss", f"{_fmt(v.get('new'))} (epoch {_fmt(v.get('new_epoch'))})"
                    f"  against baseline {_fmt(v.get('baseline'))} "
                    f"(epoch {_fmt(v.get('baseline_epoch'))})")
    summary.add_row("relative change", _change_text(v))
    summary.add_row("tolerance", f"+{v.get('tolerance', 0.0):.2%}")
    if "effective_tolerance" in v:
        spread = v.get("seed_spread")
        summary.add_row("seed spread", "not recorded (one-run baseline)" if spread is None
                        else f"+{spread:.2%} ({SPREAD_DEFINITION})")
        summary.add_row("effective tolerance",
                        f"+{v['effective_tolerance']:.2%} = max(tolerance, seed spread)")
    console.print(summary)
    for spec in result.details.get("tables", []):
        table = Table(title=spec["title"], title_justify="left", padding=(0, 1))
        for col in spec["columns"]:
            table.add_column(col, overflow="fold")
        marks = spec.get("row_status") or [None] * len(spec["rows"])
        for row, mark in zip(spec["rows"], marks, strict=True):
            style = "red" if mark == "FAIL" else "yellow" if mark == "WARN" else None
            table.add_row(*map(_fmt, row), style=style)
        console.print(table)
    for note in result.details.get("notes", []):
        console.print(f"[yellow]note[/]: {note}")
    if verdict:
        print_verdict(result, console)


def print_verdict(result: CheckResult, console: Any) -> None:
    """The verdict line: PASS and WARN exit 0, FAIL 1; refused (exit 2) follows as an error."""
    if result.status == "SKIP":  # the reason follows as the one-line error (exit 2)
        console.print(f"[{_STYLE['SKIP']}]verdict: REFUSED[/], not compared (exit 2)")
        return
    verdict = {"PASS": "PASS (exit 0)", "WARN": "WARN, inconclusive (exit 0)",
               "FAIL": "FAIL: regression (exit 1)"}[result.status]
    console.print(f"[{_STYLE[result.status]}]verdict: {verdict}[/] — {result.reason}")


def check_tolerance(value: Any) -> float:
    """``--tolerance`` as a float (None: the default); not finite or below 0 is an error."""
    tol = DEFAULT_TOLERANCE if value is None else float(value)
    if not math.isfinite(tol) or tol < 0:
        raise BankLLMError(f"--tolerance must be a finite number >= 0, got {value}")
    return tol


def _check_baseline_run(run: dict[str, Any], run_dir: Any, force: bool) -> None:
    status, best = run["status"], run["best_val_loss"]
    if status != "completed" and not force:
        raise BankLLMError(f"{run_dir}: the run is {status}; only a completed run can become "
                           "the baseline (pass --force to use it anyway)")
    if not isinstance(best, (int, float)) or not math.isfinite(best) or best <= 0:
        raise BankLLMError(f"{run_dir}: no finite best val loss; it cannot be a baseline")


def median_member(records: list[dict[str, Any]]) -> int:
    """Index of the member whose per-conversation losses a group baseline keeps: the median
    by best val loss (the lower median for an even count; ties in seed order), so that
    neither a lucky nor an unlucky seed sets the reference."""
    order = sorted(range(len(records)), key=lambda i: (records[i]["best_val_loss"], i))
    return order[(len(order) - 1) // 2]


def summarize_group(group_dir: str | Path, members: list[Path],
                    force: bool = False) -> dict[str, Any]:
    """A seed group as a baseline record: the median member's summary (its best val loss and
    per-conversation losses) plus ``seed_group``: the seeds, their best val losses and their
    spread. Every member must be completed (unless ``force``), on one val set and model."""
    from bankllm.seed_group import read_group_info

    info = read_group_info(group_dir)
    records = [summarize_run(m) for m in members]
    for member, record in zip(members, records, strict=True):
        _check_baseline_run(record, member, force)
    for key in ("data_sha256", "eval_hash", "model_hash"):
        if len({r[key] for r in records}) > 1:
            raise BankLLMError(f"{group_dir}: the members differ in {key}; a seed group "
                               "baseline needs one corpus, val set and model")
    pick = median_member(records)
    losses = [float(r["best_val_loss"]) for r in records]
    record = dict(records[pick])
    record["run_name"] = f"{Path(group_dir).resolve().name}/{members[pick].name}"
    record["seed_group"] = {
        "name": str(info["name"]),
        "seeds": [int(r["config"]["seed"]) for r in records],
        "split_seed": int(record["split_seed"]),
        "members": [m.name for m in members],
        "best_val_losses": losses,
        "spread": seed_spread(losses),
        "spread_definition": SPREAD_DEFINITION,
        "reference": members[pick].name,
    }
    return record


def _same_path(shown: Any, wanted: Path) -> bool:
    return isinstance(shown, str) and bool(shown) and Path(shown).resolve() == wanted.resolve()


def report_outcomes(report_path: str | Path, run_dir: str | Path, trained: str,
                    reference: str | None = None) -> tuple[dict[str, Any] | None, str]:
    """The per-item ``outcomes`` of the checks of :data:`OUTCOME_CHECKS` in the diagnostics
    report at ``report_path``, when that report is of ``run_dir`` (its ``run.path``, resolved)
    and not older than the run (``trained``, ISO 8601); for a seed group (``reference``: the
    member the baseline keeps), the report of the group, taking that member's results, or of
    that member alone. Returns ``(outcomes, "")`` or ``(None, why not)``."""
    path, run_dir = Path(report_path), Path(run_dir)
    if not path.is_file():
        return None, f"no diagnostics report at {path}"
    try:
        report = read_json(path, "diagnostics report")
        summary = report["run"]
        checks = {c["name"]: c for c in report["checks"]}
        created = datetime.fromisoformat(str(report["created"]))
        if created.tzinfo is None:
            created = created.replace(tzinfo=UTC)
    except (BankLLMError, KeyError, TypeError, ValueError) as exc:
        return None, f"{path} is not a readable diagnostics report ({exc})"
    group = summary.get("group") if isinstance(summary.get("group"), dict) else None
    member = None  # the key of the reference member's result in a group report
    if reference is None:
        same = group is None and _same_path(summary.get("path"), run_dir)
    elif group is not None:
        same, member = _same_path(group.get("path"), run_dir), reference
    else:
        same = _same_path(summary.get("path"), run_dir / reference)
    if not same:
        shown = (group or {}).get("path") or summary.get("path")
        return None, f"{path} is the report of another run ({shown})"
    if created < datetime.fromisoformat(trained.replace("Z", "+00:00")):
        return None, f"{path} is older than the run (made {report['created']})"
    outcomes: dict[str, Any] = {}
    for name in OUTCOME_CHECKS:
        result = checks.get(name) or {}
        if member is not None:
            result = ((result.get("details") or {}).get("members") or {}).get(member) or {}
        found = (result.get("details") or {}).get("outcomes")
        if isinstance(found, dict) and found.get("identity"):
            outcomes[name] = found
    if not outcomes:
        return None, f"{path} holds no outcomes of {', '.join(OUTCOME_CHECKS)} (SKIPped?)"
    return outcomes, ""


def _add_outcomes(run: dict[str, Any], run_dir: Any, report: Path | None,
                  console: Any) -> None:
    """Put the matching report's check outcomes into the baseline record ``run``, or say in
    one line why the checks will have no change against it and how to get one."""
    if report is None:
        return
    group = run.get("seed_group")
    reference = group["reference"] if group else None
    outcomes, why = report_outcomes(report, run_dir, run["trained"], reference)
    if outcomes is not None:
        section = baseline_schema()["properties"]["check_outcomes"]
        try:
            validate_json(outcomes, section, f"{report}: outcomes")
        except BankLLMError as exc:
            outcomes, why = None, str(exc)
    if outcomes is None:
        console.print(f"[yellow]note[/]: {why}: the probe comparison (the checks' change "
                      "against the baseline) will be unavailable; to get it, run `pytest "
                      f"diagnostics --run {run_dir}` first, then this command again",
                      soft_wrap=True)
        return
    run["check_outcomes"] = outcomes
    run["check_outcomes_report"] = {"path": str(report), "created": _report_created(report)}
    console.print(f"probe outcomes of {', '.join(outcomes)} copied from {report}: the "
                  "diagnostics will report their paired change against this baseline",
                  soft_wrap=True)


def _report_created(report: Path) -> str:
    return str(read_json(report, "diagnostics report").get("created", ""))


def _update(run: dict[str, Any], run_dir: Any, path: Path, force: bool, tolerance: float,
            console: Any, report: Path | None = None) -> int:
    _check_baseline_run(run, run_dir, force)
    _add_outcomes(run, run_dir, report, console)
    best = run["best_val_loss"]
    old = None
    if path.exists():
        try:
            old = read_baseline(path)
        except BankLLMError as exc:
            console.print(f"[yellow]replacing an unreadable baseline[/]: {exc}")
    try:
        write_baseline(path, run)
    except OSError as exc:
        raise BankLLMError(f"{path}: cannot write the baseline ({exc}); the old file, if any, "
                           "is unchanged") from None
    if old is not None:
        console.print(f"previous baseline: {old['run_name']}, best val loss "
                      f"{old['best_val_loss']:.4f} (epoch {old['best_epoch']}); new one "
                      f"{(best - old['best_val_loss']) / old['best_val_loss']:+.2%} against it")
    group = run.get("seed_group")
    if group:
        console.print(f"seed group {group['name']}: seeds {group['seeds']}, best val losses "
                      + ", ".join(f"{x:.4f}" for x in group["best_val_losses"])
                      + f"; seed spread +{group['spread']:.2%} ({SPREAD_DEFINITION}); "
                      f"per-conversation losses from {group['reference']} (the median)")
    if "per_conversation" not in run:
        console.print("[yellow]note[/]: no per-conversation val losses "
                      f"({run.get('_per_conversation_error', 'not computed')}): the gate will "
                      "compare unpaired")
    console.print(f"[bold green]baseline written[/]: {path} from run {run['run_name']} "
                  f"(best val loss {best:.4f} at epoch {run['best_epoch']}, "
                  f"{run['environment']['precision']} on {run['environment']['cpu_bf16']}/"
                  f"{run['environment']['cpu_isa']}); commit it")
    return EXIT_PASS


def cli_gate(args: Any) -> int:
    """``bankllm gate``: 0 pass (or WARN: inconclusive), 1 regression, 2 unusable input
    (raised as BankLLMError, which the CLI prints as one ``error:`` line). ``args``: run,
    baseline, tolerance, force, update. A seed group (``group.json``) gates every member and
    passes only if every member passes; ``--update`` from a group records its seed spread."""
    from rich.console import Console

    console = Console(highlight=False)
    tolerance = check_tolerance(args.tolerance)
    path = Path(args.baseline)
    members = read_group(args.run)
    if members is not None:
        return _cli_group(args, members, path, tolerance, console)
    run = summarize_run(args.run)
    if args.update:
        return _update(run, args.run, path, args.force, tolerance, console, _report_arg(args))
    baseline = read_baseline(path)
    result = analyse_regression(run, baseline, tolerance, args.force)
    render(result, console, args.run, path)
    return _exit(result)


def _report_arg(args: Any) -> Path:
    """``--report FILE``: the diagnostics report --update takes check outcomes from."""
    return Path(getattr(args, "report", None) or DEFAULT_REPORT)


def _exit(result: CheckResult) -> int:
    if result.status in ("PASS", "WARN"):
        return EXIT_PASS
    if result.status == "FAIL":
        return EXIT_REGRESSION
    raise BankLLMError(result.reason)


def _cli_group(args: Any, members: list[Path], path: Path, tolerance: float,
               console: Any) -> int:
    if args.update:
        record = summarize_group(args.run, members, args.force)
        return _update(record, args.run, path, args.force, tolerance, console,
                       _report_arg(args))
    baseline = read_baseline(path)
    results = []
    for member in members:
        result = analyse_regression(summarize_run(member), baseline, tolerance, args.force)
        render(result, console, member, path, verdict=False)
        console.print(f"[{_STYLE[result.status]}]member {member.name}: "
                      f"{'REFUSED' if result.status == 'SKIP' else result.status}[/] — "
                      f"{result.reason}")
        console.print()
        results.append(result)
    combined = group_result(args.run, members, results)
    passed = sum(r.status == "PASS" for r in results)
    line = ", ".join(f"{m.name} {'REFUSED' if r.status == 'SKIP' else r.status}"
                     for m, r in zip(members, results, strict=True))
    console.print(f"seed group {args.run}: {passed} of {len(results)} members pass ({line}); "
                  "the group passes only if every member does")
    print_verdict(CheckResult(NAME, combined.status, f"seed group: {line}"), console)
    return _exit(combined)
