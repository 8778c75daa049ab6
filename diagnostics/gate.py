"""``bankllm gate``: the val-loss regression gate (design doc §8) against a committed baseline.

Exit codes of :func:`cli_gate`: 0 the run passes (``rel <= tolerance``), 1 it regressed (or
diverged), 2 unusable input: a missing or malformed baseline, a missing run, or a run that
cannot be compared (data hash, val set or model config differ, or the run has not finished)
without ``--force``. ``--update`` rewrites the baseline from the run (atomically, schema-checked).

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
    UPDATE_HINT,
    analyse_regression,
)
from diagnostics.results import CheckResult

DEFAULT_BASELINE = "reports/baseline.json"
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
    machine's CPU (the gate runs where the run trained, as in CI). Raises
    :class:`BankLLMError` for a missing or unreadable run."""
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
    recipe = {k: v for k, v in config.items() if k not in NON_RECIPE_KEYS}
    trained = datetime.fromtimestamp((path / "metrics.json").stat().st_mtime, UTC)
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


def write_baseline(path: str | Path, record: dict[str, Any]) -> Path:
    """Schema-check ``record`` and write it to ``path`` atomically (never half a file)."""
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
        run = summarize_run(run_dir)
    except BankLLMError as exc:
        return CheckResult(NAME, "FAIL", str(exc), thresholds={"tolerance": tolerance})
    return analyse_regression(run, baseline, tolerance, force)


# --------------------------------------------------------------------------- CLI


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return "-" if value is None else str(value)


def render(result: CheckResult, console: Any, run_dir: Any, baseline_path: Any) -> None:
    """Print the explanation: new against baseline, relative change, tolerance, the
    comparison table, notes, and the verdict line."""
    from rich.table import Table

    v = result.values
    console.print(f"[bold]val-loss regression gate[/]: run {run_dir} against {baseline_path}")
    summary = Table(show_header=False, box=None, padding=(0, 2))
    summary.add_row("best val loss", f"{_fmt(v.get('new'))} (epoch {_fmt(v.get('new_epoch'))})"
                    f"  against baseline {_fmt(v.get('baseline'))} "
                    f"(epoch {_fmt(v.get('baseline_epoch'))})")
    rel = v.get("rel_change")
    summary.add_row("relative change", "not compared" if rel is None else f"{rel:+.2%}")
    summary.add_row("tolerance", f"+{v.get('tolerance', 0.0):.2%}")
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
    if result.status == "SKIP":  # the reason follows as the one-line error (exit 2)
        console.print(f"[{_STYLE['SKIP']}]verdict: REFUSED[/], not compared (exit 2)")
        return
    verdict = "PASS (exit 0)" if result.status == "PASS" else "FAIL: regression (exit 1)"
    console.print(f"[{_STYLE[result.status]}]verdict: {verdict}[/] — {result.reason}")


def check_tolerance(value: Any) -> float:
    """``--tolerance`` as a float (None: the default); not finite or below 0 is an error."""
    tol = DEFAULT_TOLERANCE if value is None else float(value)
    if not math.isfinite(tol) or tol < 0:
        raise BankLLMError(f"--tolerance must be a finite number >= 0, got {value}")
    return tol


def _update(run: dict[str, Any], run_dir: Any, path: Path, force: bool, tolerance: float,
            console: Any) -> int:
    status, best = run["status"], run["best_val_loss"]
    if status != "completed" and not force:
        raise BankLLMError(f"{run_dir}: the run is {status}; only a completed run can become "
                           "the baseline (pass --force to use it anyway)")
    if not isinstance(best, (int, float)) or not math.isfinite(best) or best <= 0:
        raise BankLLMError(f"{run_dir}: no finite best val loss; it cannot be a baseline")
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
    console.print(f"[bold green]baseline written[/]: {path} from run {run['run_name']} "
                  f"(best val loss {best:.4f} at epoch {run['best_epoch']}, "
                  f"{run['environment']['precision']} on {run['environment']['cpu_bf16']}/"
                  f"{run['environment']['cpu_isa']}); commit it")
    return EXIT_PASS


def cli_gate(args: Any) -> int:
    """``bankllm gate``: 0 pass, 1 regression, 2 unusable input (raised as BankLLMError, which
    the CLI prints as one ``error:`` line). ``args``: run, baseline, tolerance, force, update."""
    from rich.console import Console

    console = Console(highlight=False)
    tolerance = check_tolerance(args.tolerance)
    path = Path(args.baseline)
    run = summarize_run(args.run)
    if args.update:
        return _update(run, args.run, path, args.force, tolerance, console)
    baseline = read_baseline(path)
    result = analyse_regression(run, baseline, tolerance, args.force)
    render(result, console, args.run, path)
    if result.status == "PASS":
        return EXIT_PASS
    if result.status == "FAIL":
        return EXIT_REGRESSION
    raise BankLLMError(result.reason)
