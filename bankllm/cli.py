"""The ``bankllm`` command line: argument parsing only.

Each subcommand is implemented by a ``cli_*(args) -> int`` function in the module that owns
the concern, named by a ``"module:function"`` handler string and imported only when that
subcommand runs, so ``bankllm --help`` stays fast. Other packages add subcommands through the
entry-point group :data:`COMMANDS_GROUP`: each entry point is a function that takes the
subparsers and adds its subparser, with a ``handler`` default like the ones here.
The commands that train (``trains`` default) restart once with mimalloc preloaded
(:func:`bankllm.memory.restart_with_allocator`) when run from the command line.
A :class:`~bankllm.errors.BankLLMError` becomes one ``error:`` line and exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable
from importlib.metadata import entry_points

from bankllm.errors import EXIT_USAGE, BankLLMError
from bankllm.memory import restart_with_allocator

DEFAULT_RUN = "runs/latest"
COMMANDS_GROUP = "bankllm.commands"
"""Entry-point group of subcommands added by other installed packages."""
HELP_ORDER = ("train", "generate", "data", "report", "ablate", "gate")
"""Order of the subcommands in ``bankllm --help``; any others follow by name."""

AddCommand = Callable[[argparse._SubParsersAction], None]


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
    p.add_argument(
        "--ablate",
        type=float,
        nargs="+",
        metavar="F",
        help="also train the run's data ablations of these fractions (as `bankllm ablate`), "
        "side by side with it in a second process (half the cores); the run's own losses are "
        "those of a run without --ablate",
    )
    p.set_defaults(handler="bankllm.seed_group:cli_train", trains=True)


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
                                metavar="{synth,stats,import,audit,probes}")

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

    probes = data_sub.add_parser("probes", help="check a consistency probe folder (docs/probes.md)")
    probes.add_argument("--check", required=True, metavar="DIR",
                        help="folder of inv.jsonl, dir.jsonl, mft.jsonl: list every bad record")
    probes.set_defaults(handler="bankllm.probes:cli_check_probes")
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


def _add_ablate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ablate", help="retrain a run on fractions of its train split")
    p.add_argument("--run", default=DEFAULT_RUN)
    p.add_argument("--fractions", type=float, nargs="+", default=[0.5])
    p.add_argument("--threads", type=int, default=0,
                   help="torch threads while training (default: torch's, all cores)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--parent-running", action="store_true",
                   help="train although the parent is still training (its split, config and "
                   "tokenizer are fixed when it starts); `bankllm train --ablate` uses it")
    p.set_defaults(handler="bankllm.ablation:cli_ablate", trains=True)


def _builtin_commands() -> dict[str, AddCommand]:
    return {"train": _add_train, "generate": _add_generate, "data": _add_data,
            "ablate": _add_ablate, "export": _add_export}


def _entry_point_commands() -> dict[str, AddCommand]:
    """The installed entry points of :data:`COMMANDS_GROUP`, by name (the first of a name wins);
    one that fails to load is left out with a warning on stderr."""
    found: dict[str, AddCommand] = {}
    for ep in entry_points(group=COMMANDS_GROUP):
        if ep.name in found:
            continue
        try:
            found[ep.name] = ep.load()
        except Exception as exc:  # a broken plugin must not take the other commands down
            print(f"bankllm: warning: cannot load command {ep.name!r} ({ep.value}): {exc}",
                  file=sys.stderr)
    return found


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export", help="write a run's best model as a Hugging Face transformers folder"
    )
    p.add_argument("--run", default=DEFAULT_RUN, help=f"run directory (default {DEFAULT_RUN})")
    p.add_argument("-o", "--output", required=True, help="folder to create (new or empty)")
    p.set_defaults(handler="bankllm.export:cli_export")


def build_parser() -> argparse.ArgumentParser:
    """The parser of every subcommand: the built-in ones and those of :data:`COMMANDS_GROUP`."""
    parser = argparse.ArgumentParser(
        prog="bankllm",
        description="Train and diagnose small language models for banking customer-service chat.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    commands = {**_entry_point_commands(), **_builtin_commands()}
    rank = {name: i for i, name in enumerate(HELP_ORDER)}
    for name in sorted(commands, key=lambda n: (rank.get(n, len(rank)), n)):
        commands[name](sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``bankllm`` console script; returns the process exit code."""
    args = build_parser().parse_args(argv)
    module_name, func_name = args.handler.split(":")
    try:
        if argv is None and getattr(args, "trains", False):
            restart_with_allocator(sys.orig_argv)  # returns when there is nothing to change
        handler = getattr(importlib.import_module(module_name), func_name)
        return int(handler(args) or 0)
    except BankLLMError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    raise SystemExit(main())
