"""Data ablations: retrain a run's exact config and seed on a fraction of its train split.

``bankllm ablate --run DIR --fractions 0.5 0.25`` trains, for each fraction, a normal run
directory ``DIR/ablations/<fraction>/`` on a subset of the parent's train split, with the
parent's val set and tokenizer, so its best val loss is comparable with the parent's (the parent
is the 100% point). The subset is stratified by intent when the conversations carry intent
labels (each intent keeps its share to within one conversation), random otherwise; subsets of
different fractions are nested (same seeded order per intent, prefixes of it).

Each ablation is keyed by a hash of the config, the data (the corpus SHA-256, the subset and val
ids, the tokenizer) and the fraction, stored in ``ablation.json`` next to the run files. A rerun
with the same key reuses a completed ablation (or resumes an interrupted one); any other key
retrains from scratch. A ``FileLock`` per fraction makes concurrent callers (pytest-xdist
workers, two shells) train it once: the first trains, the others wait, then reuse.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bankllm.checkpoints import METRICS_FILE, SPLIT_FILE, STATE_FILE, Run, load_run, read_metrics
from bankllm.config import TrainConfig
from bankllm.data import Split
from bankllm.errors import EXIT_DIVERGED, EXIT_OK, BankLLMError
from bankllm.fileio import atomic_write_json, read_json

ABLATIONS_DIR = "ablations"
KEY_FILE = "ablation.json"
KEY_VERSION = 1
NO_INTENT = "(none)"
FINAL = ("completed", "diverged")  # retraining with the same key would give the same result

__all__ = [
    "Ablation", "SideBySide", "ablation_dir", "ablation_key", "cached_ablations", "cli_ablate",
    "ensure_ablation", "finish_side_by_side", "fraction_name", "plan_ablation",
    "start_side_by_side", "stratified_subset",
]


def fraction_name(fraction: float) -> str:
    """Directory name of a fraction (``0.5`` -> ``"0.5"``); it must lie in (0, 1)."""
    if not isinstance(fraction, (int, float)) or not 0.0 < float(fraction) < 1.0:
        raise BankLLMError(
            f"ablation: fraction must be in (0, 1) (the parent run is the 100% point), "
            f"got {fraction!r}"
        )
    return f"{float(fraction):g}"


def ablation_dir(run_dir: str | Path, fraction: float) -> Path:
    """``<run_dir>/ablations/<fraction>``."""
    return Path(run_dir) / ABLATIONS_DIR / fraction_name(fraction)


def _allocate(sizes: dict[str, int], total: int) -> dict[str, int]:
    """Largest-remainder split of ``total`` over strata of ``sizes``: each stratum gets the
    floor or the ceiling of its exact share ``total * size / sum(sizes)``."""
    n = sum(sizes.values())
    exact = {k: total * v / n for k, v in sizes.items()}
    counts = {k: math.floor(q) for k, q in exact.items()}
    left = total - sum(counts.values())
    for k in sorted(exact, key=lambda k: (counts[k] - exact[k], k))[:left]:
        counts[k] += 1
    return counts


def stratified_subset(
    conversations: Sequence[dict[str, Any]], fraction: float, seed: int = 0
) -> tuple[list[dict[str, Any]], bool]:
    """``round(fraction * n)`` conversations (at least 1) and whether they were stratified.

    Stratified by ``intent`` when any conversation has one (unlabelled ones form their own
    stratum): every intent gets the floor or ceiling of its exact share. Otherwise a seeded
    random sample. Within a stratum the order is a seeded shuffle and the subset takes its
    prefix, so subsets of smaller fractions are nested in larger ones. Returned in input order.
    """
    fraction_name(fraction)
    if not conversations:
        return [], False
    strata: dict[str, list[int]] = {}
    for i, conv in enumerate(conversations):
        strata.setdefault(str(conv.get("intent") or NO_INTENT), []).append(i)
    stratified = set(strata) != {NO_INTENT}
    if not stratified:
        strata = {"all": list(range(len(conversations)))}
    total = min(len(conversations), max(1, round(fraction * len(conversations))))
    counts = _allocate({k: len(v) for k, v in strata.items()}, total)
    rng = random.Random(seed)
    picked: list[int] = []
    for name in sorted(strata):
        order = list(strata[name])
        rng.shuffle(order)
        picked.extend(order[: counts[name]])
    return [conversations[i] for i in sorted(picked)], stratified


def _sha(obj: Any) -> str:
    blob = json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def ablation_key(
    config: TrainConfig | dict[str, Any],
    data_sha256: str,
    train_ids: Iterable[str],
    val_ids: Iterable[str],
    fraction: float,
    tokenizer_vocab: Sequence[str] = (),
) -> str:
    """Hex SHA-256 identifying an ablation: config (all keys but the data path, whose contents
    ``data_sha256`` stands for), corpus hash, subset and val ids, tokenizer, fraction."""
    cfg = config.to_dict() if isinstance(config, TrainConfig) else dict(config)
    cfg.pop("data", None)
    if cfg.get("split_seed") is None:  # unset: the key of a run made before split_seed existed
        cfg.pop("split_seed", None)
    return _sha({
        "version": KEY_VERSION,
        "config": cfg,
        "data_sha256": data_sha256,
        "train_ids": list(train_ids),
        "val_ids": list(val_ids),
        "tokenizer": _sha(list(tokenizer_vocab)),
        "fraction": fraction_name(fraction),
    })


@dataclass
class Ablation:
    """One ablation run: where it is, its key, what it trained on, and its metrics."""

    fraction: float
    path: Path
    key: str
    n_train: int
    stratified: bool
    metrics: dict[str, Any] = field(default_factory=dict)
    reused: bool = False
    exit_code: int = 0
    seconds: float = 0.0  # wall time spent training in this call (0 when reused)

    @property
    def status(self) -> str | None:
        return self.metrics.get("status")

    @property
    def best_val_loss(self) -> float | None:
        return self.metrics.get("best_val_loss")


@dataclass
class Plan:
    """What an ablation trains on (:func:`plan_ablation`)."""

    fraction: float
    config: TrainConfig
    split: Split
    key: str
    stratified: bool
    intents: dict[str, int]


def _corpus_path(run: Run) -> Path:
    """The parent's corpus file: ``split.json``'s ``data``, else its ``data_abspath``."""
    info = read_json(run.path / SPLIT_FILE, "split")
    path = Path(info.get("data", ""))
    if not path.is_file() and Path(info.get("data_abspath", "")).is_file():
        path = Path(info["data_abspath"])
    if not path.is_file():
        raise BankLLMError(
            f"{run.path / SPLIT_FILE}: corpus {info.get('data')!r} not found; "
            "an ablation retrains on it"
        )
    return path.resolve()


def plan_ablation(run: Run, fraction: float) -> Plan:
    """The subset split (subset of train, the parent's val, a seeded ``train_eval`` of the
    subset the size of val; both drawn with the parent's split seed), the config (the
    parent's, data path made absolute, ``epochs / fraction`` epochs: the parent's number of
    optimizer steps) and the key."""
    # drawn with the split seed, like the parent's split: the ablations of runs that differ
    # only in their training seed train on the same subset (old runs: split seed = seed)
    split_seed = run.config.effective_split_seed
    subset, stratified = stratified_subset(run.split.train, fraction, split_seed)
    k = min(len(run.split.val), len(subset))
    pick = sorted(random.Random(split_seed + 1).sample(range(len(subset)), k))
    split = Split(train=subset, val=list(run.split.val), train_eval=[subset[i] for i in pick])
    # as many optimizer steps as the parent: with the epochs fixed, a smaller subset would also
    # be fewer steps, and the comparison would measure under-training as much as data
    epochs = max(1, round(run.config.epochs / fraction))
    config = dataclasses.replace(run.config, data=str(_corpus_path(run)), epochs=epochs)
    key = ablation_key(
        config, run.data_sha256, (c["id"] for c in subset), (c["id"] for c in run.split.val),
        fraction, run.tokenizer.vocab,
    )
    intents: dict[str, int] = {}
    for conv in subset:
        name = str(conv.get("intent") or NO_INTENT)
        intents[name] = intents.get(name, 0) + 1
    return Plan(float(fraction), config, split, key, stratified, dict(sorted(intents.items())))


def _read_key(path: Path) -> dict[str, Any]:
    try:
        info = read_json(path / KEY_FILE, "ablation key")
    except BankLLMError:
        return {}
    return info if isinstance(info, dict) else {}


def _read_metrics(path: Path) -> dict[str, Any]:
    if not (path / METRICS_FILE).is_file():
        return {}
    try:
        return read_metrics(path)
    except BankLLMError:
        return {}


@contextmanager
def torch_threads(threads: int | None):
    """Temporarily run torch with ``threads`` intra-op threads (None: unchanged)."""
    if not threads:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def ensure_ablation(
    run: Run | str | Path,
    fraction: float,
    show_progress: bool = True,
    log: Callable[[str], None] | None = None,
    threads: int | None = None,
    lock_timeout: float = -1,
    parent_running: bool = False,
) -> Ablation:
    """Train the ``fraction`` ablation of ``run`` unless a finished one (completed, or
    diverged: same key, same result) with the same key exists; return it either way.

    Holds ``<run>/ablations/.<fraction>.lock`` throughout, so concurrent callers train it
    once. An interrupted ablation with the same key is resumed; a different key, or an
    unusable directory, is removed and retrained. ``threads``: torch threads while training
    (None: leave as is; not part of the key). The parent run must be completed, or, with
    ``parent_running``, still training (what the ablation trains on is fixed when the parent
    starts). A non-zero ``exit_code`` means training stopped (diverged / interrupted)."""
    from filelock import FileLock

    run = run if isinstance(run, Run) else load_run(run)
    status = run.metrics.get("status")
    if status != "completed" and not parent_running:
        raise BankLLMError(
            f"{run.path}: the run is {status!r}, not completed: its best val loss is not final; "
            "finish it (bankllm train --resume) before ablating"
        )
    plan = plan_ablation(run, fraction)
    path = ablation_dir(run.path, fraction)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path.parent / f".{path.name}.lock"), timeout=lock_timeout)
    with lock:
        info, metrics = _read_key(path), _read_metrics(path)
        same = info.get("key") == plan.key
        result = Ablation(plan.fraction, path, plan.key, len(plan.split.train), plan.stratified)
        if same and metrics.get("status") in FINAL:
            result.metrics, result.reused = metrics, True
            result.exit_code = EXIT_OK if metrics["status"] == "completed" else EXIT_DIVERGED
            return result
        resume = same and bool(metrics) and (path / STATE_FILE).is_file()
        if not resume and path.exists():
            shutil.rmtree(path)  # a stale key or a broken directory: retrain from scratch
        if not resume:
            path.mkdir(parents=True)
            atomic_write_json(path / KEY_FILE, {
                "key": plan.key,
                "key_version": KEY_VERSION,
                "fraction": plan.fraction,
                "parent": str(run.path),
                "parent_data_sha256": run.data_sha256,
                "n_train": len(plan.split.train),
                "n_parent_train": len(run.split.train),
                "n_val": len(plan.split.val),
                "stratified": plan.stratified,
                "intents": plan.intents,
                "created": datetime.now(UTC).isoformat(timespec="seconds"),
            })
        from bankllm.training import Trainer

        t0 = time.perf_counter()
        with torch_threads(threads):
            trainer = Trainer(plan.config, path, resume=resume, show_progress=show_progress,
                              log=log, split=plan.split, tokenizer=run.tokenizer)
            result.exit_code = trainer.train()
        result.seconds = time.perf_counter() - t0
        result.metrics = trainer.metrics
        return result


SIDE_LOG = "ablate.log"


@dataclass
class SideBySide:
    """A ``bankllm ablate --parent-running`` process started beside a training run."""

    process: subprocess.Popen
    log: Path


def start_side_by_side(run_dir: str | Path, fractions: Sequence[float],
                       threads: int) -> SideBySide:
    """Start ``bankllm ablate --parent-running`` on ``run_dir`` (whose run files are written)
    for ``fractions`` (checked by the caller, before the run started) with ``threads`` torch
    threads, its output in ``<run_dir>/ablations/ablate.log``."""
    root = Path(run_dir) / ABLATIONS_DIR
    root.mkdir(parents=True, exist_ok=True)
    log = root / SIDE_LOG
    cmd = [sys.executable, "-m", "bankllm", "ablate", "--run", str(run_dir), "--fractions",
           *(f"{float(f):g}" for f in fractions), "--threads", str(threads), "--quiet",
           "--parent-running"]
    with open(log, "w", encoding="utf-8") as out:
        process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    return SideBySide(process, log)


def finish_side_by_side(side: SideBySide, parent_code: int) -> int:
    """Wait for ``side`` (stopping it first when the parent ended with ``parent_code`` != 0:
    its training saves and resumes later, like any interrupted ablation) and return its exit
    code."""
    if parent_code != 0 and side.process.poll() is None:
        side.process.send_signal(signal.SIGTERM)
    return side.process.wait()


def cached_ablations(run: Run | str | Path) -> list[Ablation]:
    """The completed ablations of ``run`` whose key matches the run as it is now, by fraction.

    Nothing is trained; a stale or unfinished ablation directory is left out."""
    run = run if isinstance(run, Run) else load_run(run)
    root = run.path / ABLATIONS_DIR
    found: list[Ablation] = []
    if not root.is_dir():
        return found
    for path in sorted(root.iterdir()):
        if path.is_symlink() or not path.is_dir():
            continue  # e.g. the trainer's "latest" link
        info = _read_key(path)
        fraction = info.get("fraction")
        if not isinstance(fraction, (int, float)) or path.name != _safe_name(fraction):
            continue
        plan = plan_ablation(run, fraction)
        metrics = _read_metrics(path)
        if info.get("key") != plan.key or metrics.get("status") != "completed":
            continue
        found.append(Ablation(plan.fraction, path, plan.key, len(plan.split.train),
                              plan.stratified, metrics, reused=True))
    return sorted(found, key=lambda a: a.fraction)


def _safe_name(fraction: float) -> str | None:
    try:
        return fraction_name(fraction)
    except BankLLMError:
        return None


def _shown(path: Path) -> str:
    """``path`` relative to the working directory when inside it, else absolute."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def cli_ablate(args: Any) -> int:
    """``bankllm ablate [--run DIR] --fractions F ...``: train (or reuse) each fraction's
    ablation, one status line per fraction, then a table against the parent (100%)."""
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False)
    fractions = sorted({float(f) for f in args.fractions}, reverse=True)
    for f in fractions:
        fraction_name(f)  # refuse bad fractions before any training
    run = load_run(args.run)
    quiet = bool(getattr(args, "quiet", False))
    parent_loss = run.metrics.get("best_val_loss")
    results: list[Ablation] = []
    code = 0
    for i, f in enumerate(fractions, start=1):
        plan = plan_ablation(run, f)
        how = f"stratified by {len(plan.intents)} intents" if plan.stratified else "random"
        console.print(
            f"[bold]ablation {i}/{len(fractions)}[/]: fraction {f:g}, "
            f"{len(plan.split.train)}/{len(run.split.train)} train conversations ({how}), "
            f"val {len(plan.split.val)} -> {ablation_dir(run.path, f)}"
        )
        result = ensure_ablation(run, f, show_progress=not quiet,
                                 log=lambda m: console.print(m, style="yellow"),
                                 threads=getattr(args, "threads", 0) or None,
                                 parent_running=bool(getattr(args, "parent_running", False)))
        results.append(result)
        done = "reused (same key)" if result.reused else f"trained in {result.seconds:.0f} s"
        loss = result.best_val_loss
        console.print(
            f"  {done}; status {result.status}, best val loss "
            f"{'-' if loss is None else f'{loss:.4f}'}"
        )
        if result.exit_code:
            code = code or result.exit_code
    table = Table(title=f"data ablation of {run.path}")
    for col in ("fraction", "train conversations", "best val loss", "vs 100%", "status", "dir"):
        table.add_column(col)
    table.add_row("1 (parent)", str(len(run.split.train)),
                  "-" if parent_loss is None else f"{parent_loss:.4f}", "",
                  str(run.metrics.get("status")),
                  _shown(run.path))
    for r in results:
        loss = r.best_val_loss
        rel = (
            f"{(loss - parent_loss) / parent_loss:+.1%}"
            if loss is not None and parent_loss else "-"
        )
        table.add_row(f"{r.fraction:g}", str(r.n_train),
                      "-" if loss is None else f"{loss:.4f}", rel, str(r.status),
                      _shown(r.path))
    console.print(table)
    return code
