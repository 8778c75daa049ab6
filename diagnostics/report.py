"""The diagnostics report: assembled from CheckResults, written to the report dir, rendered.

All rendering lives here. Files (all written atomically)::

    diagnostics.json    run summary, curves, thresholds, every CheckResult, tally (validated
                        against schemas/diagnostics.schema.json)
    diagnostics.svg     the terminal report as an image (Rich Console(record=True) export)
    diagnostics.html    one self-contained page, charts embedded (diagnostics/html_report.py)
    loss_curves.png     step loss, running train / train_eval / val per epoch, phases, best epoch
    overfitting_gap.png rel_gap and gap per epoch, the overfitting lines
    scaling_curve.png   the ablation's data-scaling curve (2+ data sizes)
    training_health.png update-to-weight ratio per parameter group over steps, the band

Each chart is rendered once (:func:`render_charts`), written and embedded in the page.
``bankllm report`` (:func:`cli_report`) re-renders from the JSON alone (text, markdown, html).
A check gets a report section from its ``details`` (``tables``, ``notes``; see results.py); a
check that needs more registers a renderer in :data:`SECTION_RENDERERS`.
"""

from __future__ import annotations

import html
import io
import math
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from rich import box
from rich.console import Console, Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from bankllm.errors import BankLLMError
from bankllm.fileio import (
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    load_schema,
    read_json,
    validate_json,
)
from diagnostics.analyses._common import finite
from diagnostics.analyses.training_health import JUDGED as JUDGED_GROUPS
from diagnostics.registry import CHECK_NAMES, CHECKS
from diagnostics.results import STATUSES, CheckResult, jsonable, tally, worst

SCHEMA_VERSION = 1
REPORT_JSON = "diagnostics.json"
STATUS_STYLE = {"PASS": "bold green", "WARN": "bold yellow", "FAIL": "bold red", "SKIP": "cyan"}
ROW_STYLE = {"PASS": "green", "WARN": "yellow", "FAIL": "red", "SKIP": "cyan"}
PHASE_STYLES = ("cyan", "green", "yellow", "magenta", "blue", "red")
BLOCKS = " ▁▂▃▄▅▆▇█"
FILE_WIDTH = 110  # columns of the SVG/HTML exports
MAX_CURVE_POINTS = 5000
SUMMARY_KEYS = ("run_name", "status", "n_params", "vocab_size", "n_train", "n_val",
                "n_train_eval", "initial_loss", "precision", "device", "torch_version",
                "warmup_steps", "steps_per_epoch", "train_seconds", "tokens_per_second",
                "truncated_conversations", "padding_share", "unk_rate_val", "best_epoch",
                "best_val_loss")


# --------------------------------------------------------------------------- assembling


def _epoch_steps(steps: Sequence[Mapping[str, Any]], epoch: Any) -> dict[str, Any]:
    mine = [s["step"] for s in steps if s.get("epoch") == epoch and "step" in s]
    return {"first_step": min(mine, default=None), "last_step": max(mine, default=None)}


def run_summary(run_dir: Path) -> dict[str, Any]:
    """Run facts and curves for the report, read from ``run_dir/metrics.json`` (no torch)."""
    run: dict[str, Any] = {"path": str(Path(run_dir).resolve())}
    try:
        path = Path(run_dir) / "metrics.json"
        metrics = read_json(path, "run metrics")
        validate_json(metrics, load_schema("bankllm", "metrics.schema.json"), str(path))
    except BankLLMError as exc:
        run["error"] = str(exc)
        return run
    run.update({k: metrics.get(k) for k in SUMMARY_KEYS})
    steps = [s for s in metrics.get("steps") or [] if isinstance(s, dict)]
    stride = max(1, math.ceil(len(steps) / MAX_CURVE_POINTS))
    kept = steps[::stride]
    epochs = [e for e in metrics.get("epochs") or [] if isinstance(e, dict)]
    run["n_steps"], run["n_epochs"] = len(steps), len(epochs)
    run["curves"] = {
        "step": [s.get("step") for s in kept],
        "epoch": [s.get("epoch") for s in kept],
        "loss": [s.get("loss") for s in kept],
        "epochs": [{k: e.get(k) for k in ("epoch", "train_loss", "train_eval_loss", "val_loss")}
                   | _epoch_steps(steps, e.get("epoch")) for e in epochs],
    }
    return jsonable(run)


def _order(result: CheckResult) -> tuple[int, str]:
    name = result.name
    return (CHECK_NAMES.index(name) if name in CHECK_NAMES else len(CHECK_NAMES), name)


def unchecked_by_skips(
    results: Sequence[CheckResult], declared: Mapping[str, str] | None = None,
) -> list[dict[str, str]]:
    """``[{"check", "what"}]``: for each SKIPped check (once, in report order) whose module
    declares ``UNCHECKED_WHEN_SKIPPED`` (``declared``: name -> sentence; default: the check
    modules'), what kind of failure went unchecked and what the user would add."""
    if declared is None:
        declared = {m.NAME: m.UNCHECKED_WHEN_SKIPPED for m in CHECKS
                    if getattr(m, "UNCHECKED_WHEN_SKIPPED", None)}
    out: list[dict[str, str]] = []
    for r in sorted(results, key=_order):
        if r.status == "SKIP" and declared.get(r.name) and all(u["check"] != r.name for u in out):
            out.append({"check": r.name, "what": declared[r.name]})
    return out


def build_report(
    results: Sequence[CheckResult], run: Mapping[str, Any], thresholds: Mapping[str, Any],
    strict: bool = False,
) -> dict[str, Any]:
    """The JSON report: run summary, thresholds, results (sorted by CHECK_NAMES), tally, and
    what the SKIPped checks left unchecked (:func:`unchecked_by_skips`)."""
    ordered = sorted(results, key=_order)
    return {
        "schema_version": SCHEMA_VERSION,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "strict": bool(strict),
        "run": jsonable(dict(run)),
        "thresholds": jsonable(dict(thresholds)),
        "checks": [r.to_dict() for r in ordered],
        "tally": tally(ordered),
        "overall": worst(r.status for r in ordered),
        "unchecked": unchecked_by_skips(ordered),
    }


def validate_report(report: Any, origin: str) -> None:
    """Raise :class:`BankLLMError` if ``report`` does not match diagnostics.schema.json."""
    validate_json(report, load_schema("diagnostics", "diagnostics.schema.json"), origin)


# --------------------------------------------------------------------------- rendering


def format_value(value: Any) -> str:
    """A value as the report tables show it: — for None, yes/no, 4 significant digits, 1,234."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _summary(run: Mapping[str, Any], width: int) -> RenderableType:
    per_row = 2 if width >= 110 else 1
    grid = Table.grid(padding=(0, 2))
    for _ in range(2 * per_row):
        grid.add_column()
    seconds = run.get("train_seconds")
    tps = run.get("tokens_per_second")
    fv = format_value
    cells = [
        ("model", f"{fv(run.get('n_params'))} params, vocab {fv(run.get('vocab_size'))}"),
        ("data", f"train {fv(run.get('n_train'))} · val {fv(run.get('n_val'))} · "
                 f"train_eval {fv(run.get('n_train_eval'))} conversations"),
        ("training", "—" if not isinstance(seconds, (int, float)) else
         f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"),
        ("throughput", f"{tps:,.0f} tokens/s" if isinstance(tps, (int, float)) else "—"),
        ("precision", f"{fv(run.get('precision'))} on {fv(run.get('device'))}"),
        ("epochs", f"{fv(run.get('n_epochs'))} ({fv(run.get('n_steps'))} steps), best "
                   f"{fv(run.get('best_epoch'))} at val {fv(run.get('best_val_loss'))}"),
        ("status", fv(run.get("status"))),
        ("torch", fv(run.get("torch_version"))),
    ]
    for i in range(0, len(cells), per_row):
        row: list[RenderableType] = []
        for key, val in cells[i:i + per_row]:
            row += [Text(key, style="bold"), Text(val)]
        grid.add_row(*row)
    if run.get("error"):
        grid.add_row(Text("error", style="bold red"), Text(str(run["error"])))
    title = f"bankllm diagnostics · run {run.get('run_name') or '?'}"
    return Panel(grid, title=title, subtitle=str(run.get("path", "")), box=box.ROUNDED)


def loss_chart(
    steps: Sequence[int], losses: Sequence[float | None], boundaries: Sequence[int] = (),
    epochs: Sequence[int] | None = None, width: int = 80, height: int = 10,
) -> Text:
    """Step loss as a unicode area chart on a log scale; phases coloured, boundaries ``┊``/``┴``,
    non-finite steps ``✕``, epoch starts labelled under the axis."""
    pts = [(s, v) for s, v in zip(steps, losses, strict=True)
           if isinstance(v, (int, float)) and math.isfinite(v) and v > 0]
    if len(pts) < 2:
        return Text("(not enough finite step losses to plot)", style="dim")
    label_w, cols = 9, max(10, width - 10)
    s0, s1 = steps[0], steps[-1]

    def col(step: float) -> int:
        return min(cols - 1, max(0, int((step - s0) * cols / max(1, s1 - s0 + 1))))

    buckets: list[list[float]] = [[] for _ in range(cols)]
    for s, v in pts:
        buckets[col(s)].append(math.log10(v))
    lo = min(min(b) for b in buckets if b)
    hi = max(max(b) for b in buckets if b)
    hi = hi if hi > lo else lo + 1.0
    level, last = [0] * cols, None
    for c, b in enumerate(buckets):
        last = sum(b) / len(b) if b else last
        if last is not None:
            level[c] = 1 + round((last - lo) / (hi - lo) * (height * 8 - 1))
    bounds = sorted({col(b) for b in boundaries})
    phase = [sum(1 for b in bounds if b <= c) for c in range(cols)]
    bad = {col(s) for s, v in zip(steps, losses, strict=True)
           if not (isinstance(v, (int, float)) and math.isfinite(v))}
    out = Text()
    for r in range(height - 1, -1, -1):
        frac = r / max(1, height - 1)
        label = f"{10 ** (lo + frac * (hi - lo)):.3g}" if r in (0, height // 2, height - 1) else ""
        out.append(f"{label:>{label_w - 1}} ┤" if label else " " * label_w + "│", style="dim")
        for c in range(cols):
            fill = min(8, max(0, level[c] - r * 8))
            if c in bad and r == height - 1:
                out.append("✕", style="bold red")
            elif fill == 0 and c in bounds:
                out.append("┊", style="bold white")
            else:
                out.append(BLOCKS[fill], style=PHASE_STYLES[phase[c] % len(PHASE_STYLES)])
        out.append("\n")
    axis = ["┴" if c in bounds else "─" for c in range(cols)]
    out.append(" " * label_w + "└" + "".join(axis) + "\n", style="dim")
    ticks = [" "] * cols
    if epochs is not None:
        seen: set[int] = set()
        for s, e in zip(steps, epochs, strict=True):
            if e in seen:
                continue
            seen.add(e)
            tag, c = f"e{e}", col(s)
            free = all(ch == " " for ch in ticks[max(0, c - 1):c + len(tag) + 1])
            if free and c + len(tag) <= cols:
                ticks[c:c + len(tag)] = tag
    out.append(" " * (label_w + 1) + "".join(ticks) + "\n", style="dim")
    return out


def _chart_section(report: Mapping[str, Any], width: int) -> RenderableType | None:
    curves = report.get("run", {}).get("curves")
    if not curves or not curves.get("step"):
        return None
    phases = next((c for c in report.get("checks", []) if c["name"] == "loss_phases"), None)
    boundaries = (phases or {}).get("details", {}).get("boundaries", [])
    chart = loss_chart(curves["step"], curves["loss"], boundaries, curves.get("epoch"),
                       width=width - 4)
    legend = Text()
    labels = (phases or {}).get("values", {}).get("phases") or []
    for i, label in enumerate(labels):
        legend.append("■ ", style=PHASE_STYLES[i % len(PHASE_STYLES)])
        legend.append(f"{i + 1} {label}   ")
    title = f"step loss (log scale), steps {curves['step'][0]}-{curves['step'][-1]}, and phases"
    return Panel(Group(chart, legend), title=title, box=box.ROUNDED)


def _details_table(spec: Mapping[str, Any]) -> Table:
    tbl = Table(title=spec.get("title"), box=box.SIMPLE_HEAD, title_justify="left",
                title_style="bold")
    for name in spec.get("columns", []):
        tbl.add_column(str(name), overflow="fold")
    statuses = spec.get("row_status") or []
    for i, row in enumerate(spec.get("rows", [])):
        style = ROW_STYLE.get(statuses[i]) if i < len(statuses) and statuses[i] else None
        tbl.add_row(*(format_value(v) for v in row), style=style)
    return tbl


def render_details(result: Mapping[str, Any]) -> list[RenderableType]:
    """Generic section of one check: its tables, then its notes."""
    parts: list[RenderableType] = [_details_table(t) for t in result.get("details", {})
                                   .get("tables", [])]
    parts += [Text(f"• {n}", style="italic") for n in result.get("details", {}).get("notes", [])]
    return parts


SECTION_RENDERERS: dict[str, Callable[[Mapping[str, Any]], list[RenderableType]]] = {}


def _verdicts(report: Mapping[str, Any]) -> RenderableType:
    grid = Table.grid(padding=(0, 1))
    grid.add_column(no_wrap=True)
    grid.add_column(no_wrap=True, style="bold")
    grid.add_column()
    for c in report.get("checks", []):
        grid.add_row(Text(f"{c['status']:<4}", style=STATUS_STYLE[c["status"]]), c["name"],
                     c["reason"])
    return grid


def _tally(report: Mapping[str, Any]) -> Text:
    counts = report.get("tally", {})
    out = Text()
    for s in STATUSES:
        out.append(f"{counts.get(s, 0)} {s}", style=STATUS_STYLE[s] if counts.get(s) else "dim")
        out.append("  ")
    overall = report.get("overall", "SKIP")
    out.append("→ ")
    out.append(overall, style=STATUS_STYLE[overall])
    if report.get("strict"):
        out.append("  (--strict: WARN fails)", style="dim")
    return out


def render(report: Mapping[str, Any], console: Console) -> None:
    """Print the whole report on ``console``."""
    console.print(_summary(report.get("run", {}), console.width))
    chart = _chart_section(report, console.width)
    if chart is not None:
        console.print(chart)
    for c in report.get("checks", []):
        parts = SECTION_RENDERERS.get(c["name"], render_details)(c)
        if parts:
            console.rule(Text(c["name"], style=STATUS_STYLE[c["status"]]), align="left")
            for part in parts:
                console.print(part)
    console.rule("verdicts", align="left")
    console.print(_verdicts(report))
    console.print(_tally(report))
    if report.get("unchecked"):  # what the SKIPs left unchecked, and what to add
        console.print(Text("not checked (skipped):", style=STATUS_STYLE["SKIP"]))
        for u in report["unchecked"]:
            console.print(Text(f"  • {u['check']}: {u['what']}"))


def render_text(report: Mapping[str, Any], width: int = 100, color: bool = True) -> str:
    """The report as terminal text (ANSI colours when ``color``)."""
    buf = io.StringIO()
    console = Console(file=buf, width=width, force_terminal=color,
                      color_system="auto" if color else None, highlight=False)
    render(report, console)
    return buf.getvalue()


# --------------------------------------------------------------------------- files


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(figure: Any) -> bytes:
    """Lay out ``figure``, return it as PNG bytes, and close it."""
    plt = _pyplot()
    try:
        figure.tight_layout()
        buf = io.BytesIO()
        figure.savefig(buf, format="png")
        return buf.getvalue()
    finally:
        plt.close(figure)


def loss_curves_png(report: Mapping[str, Any]) -> bytes | None:
    """loss_curves.png: step loss, per-epoch running train / train_eval / val, phase
    boundaries, best epoch. None when the run has no curves."""
    curves = report.get("run", {}).get("curves") or {}
    if not curves.get("step"):
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(10, 5.5), dpi=110)
    pts = [(s, v) for s, v in zip(curves["step"], curves["loss"], strict=True) if v]
    ax.plot([p[0] for p in pts], [p[1] for p in pts], lw=0.8, color="0.6", label="step loss")
    ends = [e for e in curves.get("epochs", []) if e.get("last_step") and e.get("first_step")]
    for key, style, label in (("train_loss", "o--", "train (running mean, dropout on)"),
                              ("train_eval_loss", "s-", "train_eval (eval mode, epoch end)"),
                              ("val_loss", "^-", "val (epoch end)")):
        # the running mean is taken over the epoch: plot it mid-epoch, the others at its end
        xy = [((e["first_step"] + e["last_step"]) / 2 if key == "train_loss" else e["last_step"],
               e[key]) for e in ends if e.get(key)]
        if xy:
            ax.plot(*zip(*xy, strict=True), style, ms=4, label=label)
    phases = next((c for c in report.get("checks", []) if c["name"] == "loss_phases"), {})
    bounds = phases.get("details", {}).get("boundaries", [])
    for i, b in enumerate(bounds):
        ax.axvline(b, color="tab:purple", ls=":", lw=1, label="phase boundary" if i == 0 else None)
    edges = [curves["step"][0], *bounds, curves["step"][-1]]
    for i, label in enumerate(phases.get("values", {}).get("phases") or []):
        if i + 1 < len(edges):
            ax.text((edges[i] + edges[i + 1]) / 2, 0.98, label, ha="center", va="top", fontsize=8,
                    color="tab:purple", transform=ax.get_xaxis_transform())
    best = report.get("run", {}).get("best_epoch")
    for e in ends:
        if e["epoch"] == best and e.get("val_loss"):
            ax.plot(e["last_step"], e["val_loss"], "*", ms=16, color="gold", mec="k",
                    label=f"best epoch {best}")
    ax.set_yscale("log")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (nats/token, log scale)")
    ax.set_title(f"run {report.get('run', {}).get('run_name')}: loss curves")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


def plot_loss_curves(report: Mapping[str, Any], path: Path) -> Path | None:
    """Write :func:`loss_curves_png` to ``path``; None (nothing written) without curves."""
    png = loss_curves_png(report)
    return None if png is None else atomic_write_bytes(path, png)


def _check(report: Mapping[str, Any], name: str) -> Mapping[str, Any] | None:
    return next((c for c in report.get("checks", []) if c["name"] == name), None)


def overfitting_gap_png(report: Mapping[str, Any]) -> bytes | None:
    """overfitting_gap.png: per epoch, val - train_eval as a share of train_eval (rel_gap) with
    its 95% interval where the result has one, its PASS/WARN lines from the overfitting
    result, and the absolute gap. None without an
    overfitting result or epochs with both losses."""
    check = _check(report, "overfitting")
    epochs = [e for e in report.get("run", {}).get("curves", {}).get("epochs", [])
              if finite(e.get("val_loss")) and finite(e.get("train_eval_loss"))
              and e["train_eval_loss"] > 0]
    if check is None or not epochs:
        return None
    plt = _pyplot()
    ep = [e["epoch"] for e in epochs]
    gap = [e["val_loss"] - e["train_eval_loss"] for e in epochs]
    rel = [g / e["train_eval_loss"] * 100 for g, e in zip(gap, epochs, strict=True)]
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    ax.plot(ep, rel, "-", color="0.5", lw=1, zorder=2)
    intervals = check.get("details", {}).get("rel_gap_ci95") or []
    if len(intervals) == len(ep):
        shown = [(x, r, ci) for x, r, ci in zip(ep, rel, intervals, strict=True)
                 if ci and all(finite(c) for c in ci) and ci[0] * 100 <= r <= ci[1] * 100]
        if shown:
            ax.errorbar([x for x, _, _ in shown], [r for _, r, _ in shown],
                        yerr=[[r - ci[0] * 100 for _, r, ci in shown],
                              [ci[1] * 100 - r for _, r, ci in shown]],
                        fmt="none", ecolor="0.35", elinewidth=1, capsize=3, zorder=2,
                        label="95% interval over conversations")
    tables = check.get("details", {}).get("tables") or [{}]
    marks = tables[0].get("row_status") or []
    colors = {"PASS": "tab:green", "WARN": "goldenrod", "FAIL": "tab:red"}
    ax.scatter(ep, rel, s=36, zorder=3, edgecolors="k", linewidths=0.5,
               c=[colors.get(marks[i] if i < len(marks) and len(marks) == len(ep) else "",
                             "tab:blue") for i in range(len(ep))])
    th = check.get("thresholds", {})
    for key, color in (("rel_gap_pass", "tab:green"), ("rel_gap_warn", "tab:red")):
        if finite(th.get(key)):
            ax.axhline(th[key] * 100, color=color, ls=":", lw=1, label=f"{key} {th[key]:.0%}")
    best = report.get("run", {}).get("best_epoch")
    if best in ep:
        ax.axvline(best, color="gold", lw=2, alpha=0.6, label=f"best epoch {best}")
    ax2 = ax.twinx()
    ax2.bar(ep, gap, width=0.5, color="tab:blue", alpha=0.18, zorder=1)
    ax2.set_ylabel("gap (nats/token, bars)")
    ax.set_zorder(ax2.get_zorder() + 1)
    ax.patch.set_visible(False)
    ax.set_xticks(ep)
    ax.set_xlabel("epoch")
    ax.set_ylabel("rel_gap = (val - train_eval) / train_eval (%)")
    ax.set_title("overfitting: generalization gap per epoch")
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="upper left")
    return _png(fig)


def scaling_curve_png(result: Mapping[str, Any]) -> bytes | None:
    """scaling_curve.png: the data-scaling curve of the ablation result (a report entry), or
    None when it has fewer than 2 points."""
    pts = [p for p in result["values"].get("points") or [] if finite(p.get("best_val_loss"))]
    if len(pts) < 2:
        return None
    plt = _pyplot()
    import matplotlib.ticker

    pts.sort(key=lambda p: p["n_train"])
    d = np.array([p["n_train"] for p in pts], dtype=float)
    y = np.array([p["best_val_loss"] for p in pts], dtype=float)
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    ax.plot(d, y, "o", ms=7, color="tab:blue", label="best val loss", zorder=3)
    for p in pts:
        ax.annotate(f"{p['fraction']:.0%}", (p["n_train"], p["best_val_loss"]),
                    textcoords="offset points", xytext=(6, 6), fontsize=8)
    fit = result["details"].get("fit")
    if fit:
        grid = np.geomspace(d.min() / 1.5, d.max() * 2.0, 200)
        curve = fit["l_inf"] + fit["a"] * grid ** -fit["alpha"]
        ax.plot(grid, curve, "-", color="tab:orange",
                label=f"L(D) = {fit['l_inf']:.3f} + A·D^-{fit['alpha']:.2f}")
        ax.axhline(fit["l_inf"], color="tab:orange", ls=":", lw=1, label="L_inf")
    else:
        ax.plot(d, y, "--", color="0.6", lw=1)
    ax.set_xscale("log")
    ax.set_xticks(d, [f"{int(v)}" for v in d])  # label the measured sizes, not powers of 10
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("train conversations D (log scale)")
    ax.set_ylabel("best val loss (nats/token)")
    rel = result["values"].get("rel_increase")
    title = "data scaling"
    if finite(rel):
        title += f": half data {rel:+.1%} (chapter ~+10%)"
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


def plot_scaling_curve(result: Mapping[str, Any], path: Path) -> Path | None:
    """Write :func:`scaling_curve_png` to ``path``; None (nothing written) under 2 points."""
    png = scaling_curve_png(result)
    return None if png is None else atomic_write_bytes(path, png)


def training_health_png(result: Mapping[str, Any]) -> bytes | None:
    """training_health.png: each parameter group's logged update-to-weight ratio against the
    optimizer step (log scale), the PASS band shaded, the fail lines dotted; None when the
    training_health result (a report entry) has no series."""
    series = result.get("details", {}).get("series") or {}
    if not series:
        return None
    plt = _pyplot()
    th = result.get("thresholds", {})
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    for group, points in series.items():
        if points:
            # a log axis has no 0: a group that never moved gets its name, not an empty line
            label = group if any(r > 0 for _, r in points) else f"{group} (ratio 0: not drawn)"
            ax.plot(*zip(*points, strict=True), lw=1, label=label,
                    ls="-" if group in JUDGED_GROUPS else "--")
    low, high, factor = th.get("ratio_low"), th.get("ratio_high"), th.get("fail_factor")
    if finite(low) and finite(high):
        ax.axhspan(low, high, color="tab:green", alpha=0.12, label=f"band {low:g} to {high:g}")
        if finite(factor):
            for line in (low / factor, high * factor):
                ax.axhline(line, color="tab:red", ls=":", lw=1)
    ax.set_yscale("log")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("||dw|| / ||w|| per step (log scale)")
    ax.set_title("update-to-weight ratio per parameter group (dashed: not judged)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


def canary_exposure_png(result: Mapping[str, Any]) -> bytes | None:
    """canary_exposure.png: each canary's exposure (bits) against its repetitions, the mean
    per repetition count, the maximum log2 |space|, extracted canaries marked; None when the
    privacy result has no canaries."""
    values = result.get("values", {})
    per = [p for p in values.get("canaries") or [] if finite(p.get("exposure"))]
    if not per:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    for hit, style, label in ((False, dict(marker="o", color="tab:blue"), "canary"),
                              (True, dict(marker="X", color="tab:red", ms=9),
                               "canary extracted by greedy decoding")):
        pts = [(p["repetitions"], p["exposure"]) for p in per if bool(p.get("extracted")) == hit]
        if pts:
            ax.plot(*zip(*pts, strict=True), ls="", alpha=0.8, label=label, **style)
    rows = sorted(values.get("exposure_by_repetitions") or [], key=lambda r: r["repetitions"])
    if rows:
        ax.plot([r["repetitions"] for r in rows], [r["mean"] for r in rows], "-", color="0.4",
                label="mean per repetition count")
    top = values.get("log2_space")
    if finite(top):
        ax.axhline(top, color="tab:red", ls=":", lw=1, label=f"log2 |space| = {top:.1f} bits")
    reps = sorted({p["repetitions"] for p in per})
    ax.set_xscale("log", base=2)
    ax.set_xticks(reps, [str(r) for r in reps])
    ax.set_xlabel("times the secret is in the train set (log scale)")
    ax.set_ylabel("exposure (bits)")
    ax.set_ylim(bottom=0)
    ax.set_title("canary exposure (Secret Sharer): higher = more memorized")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


def membership_roc_png(result: Mapping[str, Any]) -> bytes | None:
    """membership_roc.png: the ROC curve of the loss-based membership-inference attack (the
    privacy result's downsampled ``roc``) against chance, log-log and linear; None when the
    result has none."""
    values = result.get("values", {})
    roc = values.get("roc") or {}
    if not roc.get("fpr"):
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fpr, tpr = np.asarray(roc["fpr"], dtype=float), np.asarray(roc["tpr"], dtype=float)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.5), dpi=110)
    auc = values.get("auc")
    label = f"attack (AUC {auc:.3f})" if finite(auc) else "attack"
    for ax, log in zip(axes, (False, True), strict=True):
        ax.plot(fpr, tpr, "-", color="tab:blue", label=label)
        ax.plot([0, 1], [0, 1], "--", color="0.6", label="chance")
        if log:
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlim(1e-3, 1)
            ax.set_ylim(1e-3, 1)
        ax.set_xlabel("false positive rate (val flagged as member)")
        ax.set_ylabel("true positive rate (train flagged)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    axes[0].set_title("membership inference ROC")
    axes[1].set_title("low-FPR region (log-log)")
    return _png(fig)


def render_charts(report: Mapping[str, Any]) -> dict[str, bytes]:
    """Every chart the report has, rendered once: ``{file name: PNG bytes}`` in report order
    (loss_curves.png, training_health.png, overfitting_gap.png, scaling_curve.png,
    canary_exposure.png, membership_roc.png; each only when it has data)."""
    health = _check(report, "training_health")
    charts = {"loss_curves.png": loss_curves_png(report),
              "training_health.png": training_health_png(health) if health else None,
              "overfitting_gap.png": overfitting_gap_png(report)}
    ablation = _check(report, "ablation")
    if ablation is not None:
        charts["scaling_curve.png"] = scaling_curve_png(ablation)
    privacy = _check(report, "privacy")
    if privacy is not None:
        charts["canary_exposure.png"] = canary_exposure_png(privacy)
        charts["membership_roc.png"] = membership_roc_png(privacy)
    return {name: png for name, png in charts.items() if png is not None}


def render_files(report: Mapping[str, Any], report_dir: str | Path) -> list[Path]:
    """Write diagnostics.svg, diagnostics.html and the chart PNGs of ``report`` (not the JSON)
    into ``report_dir``; return the paths."""
    from diagnostics.html_report import render_html

    out = Path(report_dir)
    console = Console(record=True, file=io.StringIO(), width=FILE_WIDTH, force_terminal=True,
                      color_system="truecolor", highlight=False)
    render(report, console)
    written = [atomic_write_text(out / "diagnostics.svg",
                                 console.export_svg(title="bankllm diagnostics", clear=False))]
    charts = render_charts(report)
    written.append(atomic_write_text(out / "diagnostics.html", render_html(report, charts)))
    written += [atomic_write_bytes(out / name, png) for name, png in charts.items()]
    return written


def write_report(report: Mapping[str, Any], report_dir: str | Path) -> list[Path]:
    """Validate and write diagnostics.json, then :func:`render_files` (.svg, .html, the chart
    PNGs); return the paths."""
    out = Path(report_dir)
    validate_report(report, str(out / REPORT_JSON))
    return [atomic_write_json(out / REPORT_JSON, report), *render_files(report, out)]


STATUS_EMOJI = {"PASS": "✅", "WARN": "⚠️", "FAIL": "❌", "SKIP": "⏭️"}
MD_REASON_CHARS = 160


def _md_cell(text: str) -> str:
    return html.escape(" ".join(text.split()), quote=False).replace("|", "\\|")


def _shorten(text: str, limit: int = MD_REASON_CHARS) -> str:
    """``text`` cut at a word boundary to at most ``limit`` characters, ``…`` marking a cut;
    a code span the cut opened is closed."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    cut = (cut.rsplit(" ", 1)[0] if " " in cut else cut).rstrip(" ,;:")
    if cut.count("`") % 2:
        cut += "`"
    return cut + "…"


def _g(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, (int, float)) else "—"


def headline_values(check: Mapping[str, Any]) -> str:
    """The values of a result that carry a 95% interval, as ``key value [low, high]``; for
    the regression check, its change against the baseline. Empty when it has neither."""
    values = check.get("values") or {}
    if check["name"] == "regression":
        rel = values.get("rel_change")
        if values.get("refused") and not values.get("forced"):
            return "not compared (refused)"
        if isinstance(rel, (int, float)):
            tol = values.get("effective_tolerance", values.get("tolerance", 0))
            return (f"{rel:+.2%} vs baseline ({_g(values.get('new'))} vs "
                    f"{_g(values.get('baseline'))}; tolerance +{tol:.2%})")
        return ""
    parts = [f"{k} {_g(v)} [{_g(values.get(f'{k}_ci95_low'))}, {_g(values.get(f'{k}_ci95_high'))}]"
             for k, v in values.items()
             if f"{k}_ci95_low" in values and f"{k}_ci95_high" in values]
    return "; ".join(parts)


def render_markdown(report: Mapping[str, Any]) -> str:
    """A short Markdown summary for a pull request or ``$GITHUB_STEP_SUMMARY``: overall
    verdict and tally, one table row per check (status, name, value with its 95% interval or
    the change against the baseline, the reason cut to one short line)."""
    run = report.get("run") or {}
    counts = report.get("tally") or {}
    overall = report.get("overall", "SKIP")
    lines = [f"### {STATUS_EMOJI[overall]} bankllm diagnostics: {overall} · run "
             f"{_md_cell(str(run.get('run_name') or run.get('path') or '?'))}", "",
             " · ".join(f"{counts.get(s, 0)} {s}" for s in STATUSES)
             + (" (--strict: WARN fails)" if report.get("strict") else ""), "",
             "| status | check | value [95% interval] | reason |", "|---|---|---|---|"]
    for c in report.get("checks", []):
        lines.append(f"| {STATUS_EMOJI[c['status']]} {c['status']} | {_md_cell(c['name'])} | "
                     f"{_md_cell(headline_values(c))} | {_md_cell(_shorten(c['reason']))} |")
    regression = next((c for c in report.get("checks", []) if c["name"] == "regression"), None)
    if regression is not None:
        change = headline_values(regression) or regression["reason"]
        lines += ["", f"**Val loss against the baseline:** {_md_cell(_shorten(change))}"]
    lines += ["", "Full report: `diagnostics.html` next to `diagnostics.json` "
              "(`bankllm report --format html` re-renders it)."]
    return "\n".join(lines) + "\n"


def load_report(path: str | Path, run: str | None = None) -> dict[str, Any]:
    """Read and validate a diagnostics.json; errors say to run ``pytest diagnostics`` (with
    ``--run run`` when a run is named)."""
    command = "pytest diagnostics" + (f" --run {run}" if run else "")
    hint = f"run `{command}` to (re)create it"
    try:
        report = read_json(path, "diagnostics report")
        validate_report(report, str(path))
    except BankLLMError as exc:
        raise BankLLMError(f"{exc}; {hint}") from None
    return report


def _same_run(shown: str | None, wanted: str) -> bool:
    return bool(shown) and Path(str(shown)).resolve() == Path(wanted).resolve()


def cli_report(args: Any) -> int:
    """``bankllm report``: re-render the report from ``<report-dir>/diagnostics.json`` without
    recomputing anything: ``--format text`` (default) the terminal report, ``markdown`` the
    summary of :func:`render_markdown` on stdout, ``html`` rewrites the .html, .svg and charts.
    With ``--run X``, X must exist and be the run the report is for; otherwise the error says
    how to diagnose X."""
    wanted = getattr(args, "run", None)
    if wanted is not None and not Path(wanted).is_dir():
        raise BankLLMError(f"{wanted}: no such run directory; pass an existing run to --run, or "
                           "train one with `bankllm train`")
    path = Path(args.report_dir) / REPORT_JSON
    report = load_report(path, wanted)
    shown = report.get("run", {}).get("path")
    if wanted is not None and not _same_run(shown, wanted):
        raise BankLLMError(f"{path}: this report is for run {shown}, not {wanted}; run "
                           f"`pytest diagnostics --run {wanted}` to diagnose {wanted}")
    fmt = getattr(args, "format", None) or "text"
    if fmt == "markdown":
        print(render_markdown(report), end="")
        return 0
    if fmt == "html":
        for written in render_files(report, Path(args.report_dir)):
            print(written)
        return 0
    console = Console(highlight=False)
    console.print(Text(f"diagnostics report for run {shown} (from {path})", style="dim"))
    render(report, console)
    return 0
