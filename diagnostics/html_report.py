"""diagnostics.html: the report as one self-contained page (inline CSS, charts as data URIs).

Top: the tally and one line per check (badge, name, reason) linking to ``#check-<name>``.
Each check's section holds its values (with 95% intervals and MDE where the result has them),
its tables (rows coloured by ``row_status``), notes, charts, any other details (collapsed, as
JSON) and the thresholds it used. All text is escaped; nothing is fetched from the network.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from html import escape
from string import Template
from typing import Any

from diagnostics.report import format_value
from diagnostics.results import STATUSES

#: the check section each chart belongs to; a chart whose check is absent goes to the run section
CHART_CHECK = {"loss_curves.png": "loss_phases", "overfitting_gap.png": "overfitting",
               "scaling_curve.png": "ablation", "training_health.png": "training_health"}
CHART_ALT = {"loss_curves.png": "step loss, per-epoch train / train_eval / val and loss phases",
             "overfitting_gap.png": "generalization gap (val - train_eval) per epoch",
             "scaling_curve.png": "best val loss against train conversations, with the fit",
             "training_health.png": "update-to-weight ratio per parameter group over steps"}
INTERVAL_SUFFIXES = ("_ci95_low", "_ci95_high", "_n", "_mde")

CSS = """
:root{--pass:#1a7f37;--warn:#9a6700;--fail:#cf222e;--skip:#0969da;--fg:#1f2328;--muted:#59636e;
--line:#d1d9e0;--bg:#fff;--soft:#f6f8fa}
*{box-sizing:border-box}
body{margin:0;font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);
background:var(--bg)}
header,main,footer{max-width:1100px;margin:0 auto;padding:0 12px}
h1{font-size:1.35rem;margin:16px 0 4px}
h2{font-size:1.15rem;margin:0 0 6px;display:flex;gap:8px;align-items:center;flex-wrap:wrap}
h3{font-size:.95rem;margin:14px 0 4px}
.muted{color:var(--muted);overflow-wrap:anywhere}
.tally{display:flex;flex-wrap:wrap;gap:6px;align-items:center;margin:10px 0}
.badge{display:inline-block;min-width:3.6em;text-align:center;padding:1px 6px;border-radius:6px;
font:600 .8rem/1.5 ui-monospace,monospace;color:#fff;flex:none}
.PASS{background:var(--pass)}.WARN{background:var(--warn)}.FAIL{background:var(--fail)}
.SKIP{background:var(--skip)}.zero{background:#afb8c1}
ol.verdicts{list-style:none;padding:0;margin:0 0 12px;border:1px solid var(--line);
border-radius:8px}
ol.verdicts li{border-top:1px solid var(--line)}ol.verdicts li:first-child{border-top:0}
ol.verdicts a{display:flex;flex-wrap:wrap;gap:2px 8px;padding:6px 8px;color:inherit;
text-decoration:none}
ol.verdicts a:hover{background:var(--soft)}
.name{font-weight:600}
.reason{flex:1 1 100%;color:var(--muted);font-size:.9rem;overflow-wrap:anywhere}
section{border:1px solid var(--line);border-left-width:5px;border-radius:8px;padding:10px 12px;
margin:14px 0}
section.s-PASS{border-left-color:var(--pass)}section.s-WARN{border-left-color:var(--warn)}
section.s-FAIL{border-left-color:var(--fail)}section.s-SKIP{border-left-color:var(--skip)}
section>p.reason{font-size:.95rem;color:var(--fg)}
.scroll{overflow-x:auto;-webkit-overflow-scrolling:touch;margin:4px 0 8px}
table{border-collapse:collapse;font-size:.85rem}
caption{text-align:left;font-weight:600;padding:4px 0}
th,td{border-bottom:1px solid var(--line);padding:3px 8px;text-align:left;vertical-align:top}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
th{background:var(--soft);white-space:nowrap}
tr.r-PASS td{background:#dafbe1}tr.r-WARN td{background:#fff8c5}tr.r-FAIL td{background:#ffebe9}
tr.r-SKIP td{background:#ddf4ff}
ul.notes{padding-left:1.2em;margin:6px 0}ul.notes li{font-style:italic;overflow-wrap:anywhere}
figure{margin:8px 0}figure img{max-width:100%;height:auto;border:1px solid var(--line);
border-radius:6px}
figcaption{font-size:.8rem;color:var(--muted)}
details{margin:6px 0}summary{cursor:pointer;color:var(--muted)}
pre{background:var(--soft);padding:8px;overflow-x:auto;font-size:.8rem;max-height:420px}
dl.run{display:grid;grid-template-columns:max-content 1fr;gap:2px 12px;margin:0}
dl.run dt{font-weight:600}dl.run dd{margin:0;overflow-wrap:anywhere}
footer{font-size:.8rem;color:var(--muted);padding-bottom:24px}
@media (max-width:600px){body{font-size:14px}section{padding:8px}th,td{padding:3px 5px}}
"""

PAGE = Template("""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>$title</title>
<style>$css</style>
</head>
<body>
<header>
<h1>$title</h1>
<p class="muted">$subtitle</p>
<div class="tally" id="tally">$tally</div>
<nav aria-label="verdicts"><ol class="verdicts">
$verdicts
</ol></nav>
</header>
<main>
$run
$sections
</main>
<footer><p>$footer</p></footer>
</body>
</html>
""")


def _e(value: Any) -> str:
    return escape(str(value), quote=True)


def _fmt(value: Any) -> str:
    if isinstance(value, (list, dict)):
        return json.dumps(value, ensure_ascii=False)
    return format_value(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _cell(value: Any, numeric: bool) -> str:
    return f'<td class="num">{_e(_fmt(value))}</td>' if numeric else f"<td>{_e(_fmt(value))}</td>"


def _badge(status: str) -> str:
    cls = status if status in STATUSES else "SKIP"
    return f'<span class="badge {cls}">{_e(status)}</span>'


def anchor(name: str) -> str:
    """The id of a check's section: ``check-<name>``."""
    return f"check-{name}"


def _table(title: str | None, columns: Sequence[Any], rows: Sequence[Sequence[Any]],
           row_status: Sequence[Any] = ()) -> str:
    head = "".join(f"<th scope=\"col\">{_e(c)}</th>" for c in columns)
    width = max((len(r) for r in rows), default=0)
    numeric = [all(_is_number(r[j]) or r[j] is None for r in rows if j < len(r))
               for j in range(width)]
    body = []
    for i, row in enumerate(rows):
        status = row_status[i] if i < len(row_status) else None
        cls = f' class="r-{_e(status)}"' if status in STATUSES else ""
        cells = "".join(_cell(v, numeric[j]) for j, v in enumerate(row))
        body.append(f"<tr{cls}>{cells}</tr>")
    caption = f"<caption>{_e(title)}</caption>" if title else ""
    return (f'<div class="scroll"><table>{caption}<thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table></div>")


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


def values_table(values: Mapping[str, Any]) -> str:
    """The scalar values of a result; a value with ``<key>_ci95_low``/``_high`` gets its
    interval, ``_n`` and ``_mde`` on its row. Empty string without scalar values."""
    with_ci = {k for k in values if f"{k}_ci95_low" in values or f"{k}_ci95_high" in values}
    folded = {f"{k}{s}" for k in with_ci for s in INTERVAL_SUFFIXES}
    rows = []
    for key, value in values.items():
        if key in folded or not _is_scalar(value):
            continue
        if key in with_ci:
            low, high = values.get(f"{key}_ci95_low"), values.get(f"{key}_ci95_high")
            ci = f"{_fmt(low)} to {_fmt(high)}"
            rows.append((key, value, ci, values.get(f"{key}_n"), values.get(f"{key}_mde")))
        else:
            rows.append((key, value, "", "", ""))
    if not rows:
        return ""
    if not with_ci:
        return _table("values", ["name", "value"], [r[:2] for r in rows])
    return _table("values", ["name", "value", "95% interval", "n", "MDE"], rows)


def _json_block(key: str, value: Any) -> str:
    text = json.dumps(value, indent=2, ensure_ascii=False)
    return f"<details><summary>{_e(key)}</summary><pre>{_e(text)}</pre></details>"


def _records_table(key: str, records: Sequence[Mapping[str, Any]]) -> str:
    columns: list[str] = []
    for r in records:
        columns += [k for k in r if k not in columns]
    return (f"<details><summary>{_e(key)} ({len(records)})</summary>"
            f"{_table(None, columns, [[r.get(c) for c in columns] for r in records])}</details>")


def _extra(key: str, value: Any) -> str:
    if (isinstance(value, list) and value and all(isinstance(r, dict) for r in value)
            and all(_is_scalar(v) for r in value for v in r.values())):
        return _records_table(key, value)
    return _json_block(key, value)


def _figure(name: str, png: bytes) -> str:
    data = base64.b64encode(png).decode("ascii")
    alt = CHART_ALT.get(name, name)
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{_e(alt)}" loading="lazy">'
            f"<figcaption>{_e(name)}: {_e(alt)}</figcaption></figure>")


def check_section(check: Mapping[str, Any], charts: Mapping[str, bytes] | None = None) -> str:
    """One check's ``<section id="check-<name>">``."""
    details = check.get("details") or {}
    values = check.get("values") or {}
    parts = [f'<h2>{_badge(check["status"])} <span class="name">{_e(check["name"])}</span></h2>',
             f'<p class="reason">{_e(check["reason"])}</p>']
    parts += [_figure(name, png) for name, png in (charts or {}).items()]
    parts.append(values_table(values))
    for spec in details.get("tables") or []:
        parts.append(_table(spec.get("title"), spec.get("columns", []), spec.get("rows", []),
                            spec.get("row_status") or []))
    notes = details.get("notes") or []
    if notes:
        parts.append('<ul class="notes">' + "".join(f"<li>{_e(n)}</li>" for n in notes) + "</ul>")
    parts += [_extra(k, v) for k, v in values.items() if not _is_scalar(v)]
    parts += [_extra(k, v) for k, v in details.items() if k not in ("tables", "notes")]
    thresholds = check.get("thresholds") or {}
    if thresholds:
        parts.append('<p class="muted">thresholds: '
                     + ", ".join(f"{_e(k)} = {_e(_fmt(v))}" for k, v in thresholds.items())
                     + "</p>")
    return (f'<section id="{_e(anchor(check["name"]))}" class="check s-{_e(check["status"])}">\n'
            + "\n".join(p for p in parts if p) + "\n</section>")


RUN_ROWS = (("run", "run_name"), ("status", "status"), ("parameters", "n_params"),
            ("vocabulary", "vocab_size"), ("train / val / train_eval", None),
            ("epochs / steps", None), ("best epoch", "best_epoch"),
            ("best val loss", "best_val_loss"), ("initial loss", "initial_loss"),
            ("precision / device", None), ("training time (s)", "train_seconds"),
            ("tokens/s", "tokens_per_second"), ("torch", "torch_version"), ("path", "path"))


def run_section(run: Mapping[str, Any], charts: Mapping[str, bytes] | None = None) -> str:
    """The run facts (and charts whose check is not in the report)."""
    combined = {
        "train / val / train_eval": " / ".join(_fmt(run.get(k))
                                               for k in ("n_train", "n_val", "n_train_eval")),
        "epochs / steps": f"{_fmt(run.get('n_epochs'))} / {_fmt(run.get('n_steps'))}",
        "precision / device": f"{_fmt(run.get('precision'))} / {_fmt(run.get('device'))}",
    }
    rows = [(label, combined[label] if key is None else _fmt(run.get(key)))
            for label, key in RUN_ROWS]
    body = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in rows)
    if run.get("error"):
        body += f"<dt>error</dt><dd>{_e(run['error'])}</dd>"
    figures = "".join(_figure(n, p) for n, p in (charts or {}).items())
    return f'<section id="run"><h2>Run</h2><dl class="run">{body}</dl>{figures}</section>'


def render_html(report: Mapping[str, Any], charts: Mapping[str, bytes] | None = None) -> str:
    """The whole page for a diagnostics.json ``report``; ``charts``: ``{file name: PNG}`` as
    from ``report.render_charts``, each embedded in the section of its check."""
    run = report.get("run") or {}
    checks = report.get("checks") or []
    names = {c["name"] for c in checks}
    placed: dict[str, dict[str, bytes]] = {}
    for chart, png in (charts or {}).items():
        owner = CHART_CHECK.get(chart)
        placed.setdefault(owner if owner in names else "", {})[chart] = png
    counts = report.get("tally") or {}
    overall = report.get("overall", "SKIP")
    tally = " ".join(f'<span class="badge {s if counts.get(s) else "zero"}">'
                     f"{_e(counts.get(s, 0))} {_e(s)}</span>" for s in STATUSES)
    tally += f' <span>overall</span> {_badge(overall)}'
    if report.get("strict"):
        tally += ' <span class="muted">(--strict: WARN fails)</span>'
    verdicts = "\n".join(
        f'<li><a href="#{_e(anchor(c["name"]))}">{_badge(c["status"])}'
        f'<span class="name">{_e(c["name"])}</span><span class="reason">{_e(c["reason"])}</span>'
        "</a></li>" for c in checks)
    sources = ", ".join((report.get("thresholds") or {}).get("sources") or []) or "defaults"
    title = f"bankllm diagnostics · run {run.get('run_name') or '?'}"
    return PAGE.substitute(
        title=_e(title), css=CSS,
        subtitle=_e(f"{run.get('path', '')} · created {report.get('created', '?')}"),
        tally=tally, verdicts=verdicts, run=run_section(run, placed.get("", {})),
        sections="\n".join(check_section(c, placed.get(c["name"], {})) for c in checks),
        footer=_e(f"schema version {report.get('schema_version')} · thresholds from {sources} "
                  "· the same content as diagnostics.json; `bankllm report --format html` "
                  "re-renders this page from it"))
