"""The ``bankllm`` command line: argument parsing only.

Each subcommand is implemented by a ``cli_*(args) -> int`` function in the module that owns
the concern; it is imported only when that subcommand runs, so ``bankllm --help`` stays fast.
A :class:`~bankllm.errors.BankLLMError` becomes one ``error:`` line and exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from bankllm.errors import EXIT_USAGE, BankLLMError

DEFAULT_RUN = "runs/latest"


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train", help="train a model; writes runs/<name>/ and points runs/latest at it"
    )
    p.add_argument("--config", help="TOML file of config keys (see README: Config keys)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one config key; repeatable, applied after --config",
    )
    p.add_argument("--data", help="corpus JSONL to train on (same as --set data=FILE)")
    p.add_argument("--name", help="run name (default: a timestamp)")
    p.add_argument("--runs-dir", default="runs", help="parent folder of run directories")
    p.add_argument("--resume", metavar="RUN", help="continue RUN from its last saved state")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        metavar="N",
        help="train a seed group: one run per training seed under runs/<name>/seed-N/, all on "
        "one split (split_seed, default the first seed); writes runs/<name>/group.json",
    )
    p.set_defaults(handler="bankllm.seed_group:cli_train")


def _add_generate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("generate", help="answer customer messages with a trained run's best model")
    p.add_argument("prompts", nargs="+", help="customer message(s)")
    p.add_argument("--run", default=DEFAULT_RUN, help=f"run directory (default {DEFAULT_RUN})")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    p.add_argument("--top-k", type=int, default=0, help="sample from the k most likely tokens")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(handler="bankllm.generation:cli_generate")


def _add_data(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="make, import and inspect corpus files")
    data_sub = p.add_subparsers(dest="data_command", required=True,
                                metavar="{synth,stats,import,audit}")

    synth = data_sub.add_parser("synth", help="generate the bundled synthetic banking corpus")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--n", type=int, default=900, help="number of conversations")
    synth.add_argument("-o", "--output", default="fixtures/banking_conversations.jsonl")
    synth.add_argument(
        "--probes-dir",
        default="fixtures/probes",
        help="where the consistency probe sets go ('' to skip)",
    )
    synth.set_defaults(handler="bankllm.synth:cli_synth")

    stats = data_sub.add_parser("stats", help="counts, intents, lengths and vocabulary of a corpus")
    stats.add_argument("file")
    stats.add_argument("--min-freq", type=int, default=1, help="tokenizer minimum word frequency")
    stats.set_defaults(handler="bankllm.data:cli_stats")

    imp = data_sub.add_parser("import", help="convert chat JSONL, CSV or SGD dialogues to a corpus")
    imp.add_argument("--format", required=True, choices=["chat-jsonl", "csv", "sgd"])
    imp.add_argument("paths", nargs="+", help="input file(s) or SGD folder(s)")
    imp.add_argument("-o", "--output", required=True)
    imp.add_argument("--prompt-column", default="prompt", help="CSV: customer column")
    imp.add_argument("--response-column", default="response", help="CSV: agent column")
    imp.add_argument("--intent-column", default=None, help="CSV: optional intent label column")
    imp.set_defaults(handler="bankllm.importers:cli_import")
    _add_data_audit(data_sub)


def _add_data_audit(data_sub: argparse._SubParsersAction) -> None:
    audit = data_sub.add_parser(
        "audit",
        help="label noise in a corpus: answers naming another entity, conflicting intents",
        description="Audit a corpus before training: agent answers that name another account "
        "type, amount or payee than their customer turn asked about, and near-identical "
        "customer turns labelled with different intents, each as a share with its 95% Wilson "
        "interval and examples (docs/diagnostics.md, data_consistency). Exit status: 0 when "
        "no share lies above its line (5%), 1 when one does, 2 for bad input.",
    )
    audit.add_argument("file", help="corpus JSONL")
    audit.add_argument("--examples", type=int, default=10, help="examples shown per finding")
    audit.set_defaults(handler="bankllm.audit:cli_audit")


def _add_report(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="re-render the diagnostics report from its JSON")
    p.add_argument(
        "--run", default=None, help="the run the report must be for (default: whichever it is)"
    )
    p.add_argument("--report-dir", default="reports", help="folder holding diagnostics.json")
    p.set_defaults(handler="diagnostics.report:cli_report")


def _add_ablate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ablate", help="retrain a run on fractions of its train split")
    p.add_argument("--run", default=DEFAULT_RUN)
    p.add_argument("--fractions", type=float, nargs="+", default=[0.5])
    p.set_defaults(handler="bankllm.ablation:cli_ablate")


def _add_gate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("gate", help="fail (exit 1) when best val loss regressed against a baseline")
    p.add_argument("--run", default=DEFAULT_RUN)
    p.add_argument("--baseline", default="reports/baseline.json")
    p.add_argument("--tolerance", type=float, default=0.02, help="allowed relative increase")
    p.add_argument("--force", action="store_true", help="compare even if data or config differ")
    p.add_argument("--update", action="store_true", help="rewrite the baseline from the run")
    p.set_defaults(handler="diagnostics.gate:cli_gate")


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export", help="write a run's best model as a Hugging Face transformers folder"
    )
    p.add_argument("--run", default=DEFAULT_RUN, help=f"run directory (default {DEFAULT_RUN})")
    p.add_argument("-o", "--output", required=True, help="folder to create (new or empty)")
    p.set_defaults(handler="bankllm.export:cli_export")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bankllm",
        description="Train and diagnose small language models for banking customer-service chat.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_train, _add_generate, _add_data, _add_report, _add_ablate, _add_gate,
                _add_export):
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``bankllm`` console script; returns the process exit code."""
    args = build_parser().parse_args(argv)
    module_name, func_name = args.handler.split(":")
    try:
        handler = getattr(importlib.import_module(module_name), func_name)
        return int(handler(args) or 0)
    except BankLLMError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    raise SystemExit(main())
