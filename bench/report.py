"""The benchmark's Rich table, its targets, and the measured run it can quote."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from bankllm.config import TrainConfig
from bankllm.errors import BankLLMError
from bankllm.fileio import read_json

# the targets: (key, description, threshold, higher is better)
TARGETS: tuple[tuple[str, str, float, bool], ...] = (
    ("bankllm_tokens_per_second", "bankllm default training tok/s", 8000.0, True),
    # the 8,000 tok/s target as a share of the matmul peak ("about 1 TFLOP/s, a third of the
    # matmul peak" of an AMX machine), judged against this machine's own peak
    ("bankllm_share_of_peak", "bankllm default training, share of matmul peak", 1 / 3, True),
    ("recipe_speedup", "full recipe vs naive (projected)", 10.0, True),
    ("vs_peer_bf16", "tok/s vs transformers peer, bf16", 1.5, True),
    ("vs_peer_fp32", "tok/s vs transformers peer, fp32", 1.5, True),
    ("padding_share", "padding share of bankllm default", 0.10, False),
    ("generation_speedup", "KV-cache generation vs naive recompute", 5.0, True),
    ("parity_relative_difference", "bf16 vs fp32 best val loss", 0.02, False),
)


def ratio(a: dict[str, Any], b: dict[str, Any]) -> float | None:
    """tokens/s of ``a`` over ``b`` when both were measured, to 4 decimals: the targets judge
    this value, so it must not be rounded onto a target's line (1.4976 is not 1.5)."""
    if a.get("status") == "ok" and b.get("status") == "ok":
        return round(a["tokens_per_second"] / b["tokens_per_second"], 4)
    return None


def round_ratios(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any] | None:
    """How ``a``'s speed over ``b``'s varies from round to round: each round ran both on the
    same batch, moments apart, so its ratio is ``b``'s step time over ``a``'s. The median and
    range over the rounds show how much the ratio of totals depends on the batch mix and on
    the machine's drift (None unless both have steady steps)."""
    if a.get("status") != "ok" or b.get("status") != "ok":
        return None
    pairs = list(zip(a.get("step_seconds", []), b.get("step_seconds", []), strict=False))
    values = sorted(tb / ta for ta, tb in pairs if ta > 0)
    if not values:
        return None
    return {
        "rounds": len(values),
        "median": round(statistics.median(values), 4),
        "min": round(values[0], 4),
        "max": round(values[-1], 4),
    }


def warnings(
    load: dict[str, float | None],
    machine: dict[str, Any],
    contention: dict[str, float] | None = None,
) -> list[str]:
    """Why the figures of this run may not be representative of the machine.

    ``contention`` (:func:`bench.workload.contention`: other processes' and the hypervisor's
    use of the CPUs while the benchmark ran) decides where it was measured. Without it, the
    load average stands in: the load before the run is other processes'; at its end it
    includes the benchmark's own threads, so only load beyond those counts.
    """
    if contention is not None:
        others = contention["other_processes"] + contention["steal"]
        source = (
            f"other processes used {contention['other_processes']:.1f} and the hypervisor "
            f"{contention['steal']:.1f} of {machine['logical_cpus']} CPUs while it ran"
        )
    else:
        others = max(
            load.get("start") or 0.0, (load.get("end") or 0.0) - machine.get("torch_threads", 1)
        )
        source = f"other processes' load about {others:.1f} on {machine['logical_cpus']} CPUs"
    if others <= 0.5:
        return []
    text = (
        f"busy machine ({source}): absolute figures are low; ratios (interleaved) are the "
        "figures to use"
    )
    if machine.get("env", {}).get("OMP_WAIT_POLICY", "").upper() != "PASSIVE":
        text += (
            "; OpenMP threads spin-wait by default, which makes multi-threaded runs "
            "collapse while other processes compete (OMP_WAIT_POLICY=PASSIVE avoids it)"
        )
    return [text]


def evaluate_targets(
    values: dict[str, float | None], ceilings: dict[str, float | None] | None = None
) -> dict[str, Any]:
    """Each target of :data:`TARGETS` with its measured value and whether it is met.

    ``ceilings`` gives, for a higher-is-better target, the most this machine can reach (tokens/s
    if every FLOP ran at its measured matmul peak): a target above it is marked
    ``reachable: False``, so a miss that no code can close is told apart from one that code can.
    """
    out = {}
    for key, what, threshold, higher in TARGETS:
        value = values.get(key)
        met = None if value is None else (value >= threshold if higher else value <= threshold)
        row: dict[str, Any] = {"what": what, "target": threshold, "value": value, "met": met}
        ceiling = (ceilings or {}).get(key)
        if higher and ceiling is not None:
            row["ceiling"] = ceiling
            row["reachable"] = threshold <= ceiling
        out[key] = row
    return out


def _met_cell(row: dict[str, Any]) -> str:
    if row["met"] is None:
        return "-"
    if row["met"]:
        return "[green]yes"
    if row.get("reachable") is False:
        return f"[red]no[/]: above this machine's ceiling ({_num(row['ceiling'])})"
    return "[red]no"


def measured_run(path: Path, required: bool = False) -> dict[str, Any] | None:
    """``train_seconds`` and friends of a real run (e.g. ``runs/latest``), if there is one.

    A missing or unreadable run is ``None``, or a :class:`BankLLMError` when ``required``.
    """
    try:
        if not path.is_dir():
            raise BankLLMError(f"{path}: {'not a' if path.exists() else 'no such'} folder")
        metrics = read_json(path / "metrics.json", "run metrics")
        config = read_json(path / "config.json", "run config")
        if not isinstance(metrics, dict) or not isinstance(config, dict):
            raise BankLLMError(f"{path}: metrics.json or config.json is not a JSON object")
    except BankLLMError as exc:
        if not required:
            return None
        raise BankLLMError(
            f"--measured-run: {exc}; give a run folder that 'bankllm train' wrote, "
            "or leave the option out"
        ) from None
    default = TrainConfig()
    shape = ("n_layer", "n_head", "n_embd", "block_size", "dropout", "epochs", "batch_size")
    return {
        "label": "measured",
        "run": str(path.resolve()),
        "status": metrics.get("status"),
        "epochs_done": len(metrics.get("epochs", [])),
        "train_seconds": metrics.get("train_seconds"),
        "tokens_per_second": metrics.get("tokens_per_second"),
        "padding_share": metrics.get("padding_share"),
        "precision": metrics.get("precision"),
        "micro_batch_size": config.get("micro_batch_size"),
        "micro_batch_tokens": config.get("micro_batch_tokens"),
        "default_recipe": all(config.get(k) == getattr(default, k) for k in shape),
    }


def _num(value: float | None, fmt: str = ",.0f") -> str:
    return "-" if value is None else format(value, fmt)


def _target_value(value: float | None) -> str:
    """A judged value as judged: counts (tok/s) whole, ratios and shares to the 4 decimals
    the targets compare, so no row reads "1.500 ... no"."""
    if value is None:
        return "-"
    return format(value, ",.0f") if abs(value) >= 100 else format(value, ".4f")


def print_report(result: dict[str, Any], console: Console | None = None) -> None:
    """Print the benchmark's tables."""
    console = console or Console(width=max(Console().width, 120))
    training = result["training"]
    naive = training.get("naive", {})
    description = escape(result["workload"]["description"])
    table = Table(title=f"training throughput ({description})")
    for column in ("pipeline", "precision", "micro-batches", "target tok/s", "ms/step"):
        table.add_column(column, justify="right" if "/" in column else "left")
    for column in ("padding (recipe)", "model TFLOP/s", "of peak", "vs naive", "peak RSS MB"):
        table.add_column(column, justify="right")
    for name, row in training.items():
        if row.get("status") != "ok":
            table.add_row(name, "-", escape(row.get("status", "-")), *["-"] * 7)
            continue
        table.add_row(
            name,
            row["precision"],
            row["micro_batches"],
            _num(row["tokens_per_second"]),
            _num(row["ms_per_step"], ",.1f"),
            f"{row['padding_share']:.1%} ({row.get('padding_share_recipe', 0):.1%})",
            _num(row["flops_per_second"] / 1e12, ".3f"),
            f"{row.get('share_of_matmul_peak', 0):.1%}",
            _num(ratio(row, naive), ".2f") + "x" if ratio(row, naive) else "-",
            _num(row.get("peak_rss_mb")),
        )
    console.print(table)
    memory = result.get("memory", {})
    if memory.get("baseline_rss_mb") is not None:
        console.print(f"peak RSS: each pipeline in a process of its own on the same batches; a "
                      f"process that steps nothing peaks at {memory['baseline_rss_mb']:,.0f} MB; "
                      f"allocator {memory.get('allocator', 'system')}")

    summary = Table(title="recipe, generation, parity", show_header=False)
    recipe = result["recipe"]
    summary.add_row(
        f"full recipe ({recipe['epochs']} epochs, projected)",
        f"naive {_num(recipe.get('naive_seconds'), ',.0f')} s, bankllm "
        f"{_num(recipe.get('bankllm_seconds'), ',.1f')} s (of which "
        f"{_num(recipe.get('bankllm_one_time_seconds'), ',.1f')} s building kernels for "
        f"{recipe.get('bankllm_shapes', '-')} batch shapes): "
        f"{_num(recipe.get('speedup'), '.1f')}x",
    )
    measured = recipe.get("measured")
    if measured:
        summary.add_row(
            "measured run",
            f"{escape(measured['run'])}: {escape(str(measured['status']))}, "
            f"{measured['epochs_done']} epochs, "
            f"train_seconds {_num(measured['train_seconds'], ',.1f')}, "
            f"{_num(measured['tokens_per_second'])} tok/s",
        )
    gen = result["generation"]
    if gen.get("status") == "ok":
        summary.add_row(
            "greedy generation",
            f"batched KV cache {_num(gen['cached']['tokens_per_second'])} tok/s; batched "
            f"recompute {_num(gen['recompute']['tokens_per_second'])} tok/s "
            f"({gen['speedup_vs_recompute']:.1f}x); naive one-prompt recompute "
            f"{_num(gen['naive_recompute']['tokens_per_second'])} tok/s "
            f"({gen['speedup']:.1f}x); {gen['prompts']} prompts, {gen['precision']}",
        )
    else:
        summary.add_row("greedy generation", escape(gen.get("status", "-")))
    parity = result["parity"]
    if parity.get("status") == "ok":
        summary.add_row(
            f"bf16 vs fp32 ({parity['epochs']} epochs)",
            f"best val {parity['bf16']['best_val_loss']:.4f} vs "
            f"{parity['fp32']['best_val_loss']:.4f}: "
            f"{parity['relative_difference']:.2%} (tolerance {parity['tolerance']:.0%})",
        )
    else:
        summary.add_row("bf16 vs fp32", escape(parity.get("status", "-")))
    console.print(summary)

    targets = Table(title="targets")
    for column in ("target", "threshold", "value", "met", "per round (same batch)"):
        targets.add_column(column)
    for row in result["targets"].values():
        spread, spread_cell = row.get("rounds"), ""
        if spread:
            spread_cell = (
                f"median {spread['median']:.4f}, {spread['min']:.4f}-{spread['max']:.4f} "
                f"over {spread['rounds']}"
            )
        targets.add_row(
            row["what"],
            f"{row['target']:,.4g}",
            _target_value(row["value"]),
            _met_cell(row),
            spread_cell,
        )
    console.print(targets)
    for text in result.get("warnings", []):
        console.print(f"[yellow]warning:[/] {escape(text)}")
