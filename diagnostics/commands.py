"""The ``bankllm report`` and ``bankllm gate`` subcommands, registered as entry points.

pyproject.toml lists each function under ``[project.entry-points."bankllm.commands"]``; the
``bankllm`` CLI calls it with its subparsers to add the subcommand. A handler is named by a
``"module:function"`` string and imported only when its subcommand runs.
"""

from __future__ import annotations

import argparse

DEFAULT_RUN = "runs/latest"


def add_report(sub: argparse._SubParsersAction) -> None:
    """Add ``bankllm report``: re-render the diagnostics report from its JSON."""
    p = sub.add_parser("report", help="re-render the diagnostics report from its JSON")
    p.add_argument(
        "--run", default=None, help="the run the report must be for (default: whichever it is)"
    )
    p.add_argument("--report-dir", default="reports", help="folder holding diagnostics.json")
    p.add_argument("--format", choices=["text", "markdown", "html"], default="text",
                   help="text: the terminal report; markdown: a summary for a pull request or "
                   "$GITHUB_STEP_SUMMARY; html: rewrite diagnostics.html, .svg and the charts")
    p.set_defaults(handler="diagnostics.report:cli_report")


def add_gate(sub: argparse._SubParsersAction) -> None:
    """Add ``bankllm gate``: fail when best val loss regressed against a baseline."""
    p = sub.add_parser("gate", help="fail (exit 1) when best val loss regressed against a baseline")
    p.add_argument("--run", default=DEFAULT_RUN)
    p.add_argument("--baseline", default="reports/baseline.json")
    p.add_argument("--tolerance", type=float, default=0.02, help="allowed relative increase")
    p.add_argument("--force", action="store_true", help="compare even if data or config differ")
    p.add_argument("--update", action="store_true", help="rewrite the baseline from the run")
    p.add_argument("--report", default="reports/diagnostics.json", metavar="FILE",
                   help="with --update: diagnostics report of the run whose probe outcomes the "
                   "baseline keeps (default reports/diagnostics.json)")
    p.set_defaults(handler="diagnostics.gate:cli_gate")
