"""The run directory: what a training run writes, and how it is read back.

``runs/<name>/`` holds::

    config.json          resolved TrainConfig
    tokenizer.json       vocabulary built from the train split
    split.json           data file, its SHA-256, and the ids of train / val / train_eval
    best.safetensors     weights of the best epoch by val loss (tied lm_head not stored)
    best.json            epoch and val loss of those weights
    state.pt             resumable state (model, optimizer, scheduler, progress, RNG);
                         plain tensors and Python values, loaded with weights_only=True
    metrics.json         per-step and per-epoch metrics (schemas/metrics.schema.json)
    metrics.csv          the same, one row per optimizer step
    canaries.json        with canaries > 0: the secrets added to the train batches
    tensorboard/         with tensorboard = true: event files (bankllm.tb_logging)

Every file but the TensorBoard event files is written atomically; loading never unpickles
arbitrary objects.
"""

from __future__ import annotations

import csv
import io
import os
import pickle
import random
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bankllm.config import TrainConfig, config_from_dict
from bankllm.data import Split, file_sha256, load_conversations
from bankllm.errors import BankLLMError
from bankllm.fileio import (
    atomic_write,
    atomic_write_json,
    atomic_write_text,
    load_schema,
    read_json,
    validate_json,
)
from bankllm.model import GPT, GPTConfig
from bankllm.tokenizer import Tokenizer

CONFIG_FILE = "config.json"
TOKENIZER_FILE = "tokenizer.json"
SPLIT_FILE = "split.json"
BEST_WEIGHTS = "best.safetensors"
BEST_INFO = "best.json"
STATE_FILE = "state.pt"
METRICS_FILE = "metrics.json"
METRICS_CSV = "metrics.csv"
TIED_KEYS = ("lm_head.weight",)


def check_writable(run_dir: Path) -> None:
    """Fail before training when the run directory cannot be created or written.

    Also removes temporary files a killed process left mid-write (``.<name>.*.tmp`` of
    :func:`bankllm.fileio.atomic_write`): the files they were replacing are intact.
    """
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_bytes(b"")  # a probe, deleted at once: not a run file
        probe.unlink()
        for stale in run_dir.glob(".*.tmp"):
            stale.unlink(missing_ok=True)
    except OSError as exc:
        raise BankLLMError(
            f"{run_dir}: run directory is not writable ({exc.strerror}); "
            "choose another with --runs-dir or --name"
        ) from None


def gpt_config(cfg: TrainConfig, vocab_size: int) -> GPTConfig:
    """The model shape a training config asks for."""
    return GPTConfig(
        vocab_size=vocab_size,
        block_size=cfg.block_size,
        n_layer=cfg.n_layer,
        n_head=cfg.n_head,
        n_embd=cfg.n_embd,
        dropout=cfg.dropout,
    )


def save_weights(
    model: torch.nn.Module, path: str | Path, metadata: dict[str, str] | None = None
) -> None:
    """Write the model's weights as safetensors, atomically (tied copies stored once).

    Written from the tensors' memory into the file (``save_file``), not through a ``bytes``
    copy of the whole model, which would add its size to the training process's peak RSS."""
    from safetensors.torch import save_file

    tensors = {
        k: v.detach().contiguous().cpu()
        for k, v in model.state_dict().items()
        if k not in TIED_KEYS
    }
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


def load_weights(model: torch.nn.Module, path: str | Path) -> None:
    """Load safetensors weights into ``model``; missing, extra or mis-shaped tensors are errors."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    try:
        tensors = load(Path(path).read_bytes())
    except FileNotFoundError:
        raise BankLLMError(f"{path}: weights not found") from None
    except (SafetensorError, OSError, ValueError) as exc:
        raise BankLLMError(f"{path}: not a readable safetensors file ({exc})") from None
    expected = {k: v for k, v in model.state_dict().items() if k not in TIED_KEYS}
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    if missing or extra:
        raise BankLLMError(
            f"{path}: weights do not match the config "
            f"(missing {missing[:3]}, unexpected {extra[:3]})"
        )
    for key, want in expected.items():
        got = tensors[key]
        if got.shape != want.shape or got.dtype != want.dtype:
            raise BankLLMError(
                f"{path}: tensor '{key}' is {got.dtype} {tuple(got.shape)}, the config needs "
                f"{want.dtype} {tuple(want.shape)}"
            )
    model.load_state_dict(tensors, strict=False)


def save_state(state: dict[str, Any], path: str | Path) -> None:
    """Atomically write the resumable training state with ``torch.save``."""
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_state(path: str | Path) -> dict[str, Any]:
    """Read a state written by :func:`save_state`; never executes pickled code."""
    path = Path(path)
    if not path.exists():
        raise BankLLMError(f"{path}: no resumable state in this run")
    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": noise here
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # weights_only=True refused a global (a function or class) before running anything
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        detail = next((ln for ln in lines if "GLOBAL" in ln or "Unsupported" in ln), "")
        raise BankLLMError(
            f"{path}: refused to load resumable state: it holds objects other than tensors and "
            f"plain values (code would run on loading), which bankllm never writes; nothing in "
            f"it was executed{f' ({detail[:160]})' if detail else ''}"
        ) from None
    except Exception as exc:  # torch raises RuntimeError, EOFError, ... for a damaged file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        first = first.split(". ")[0].rstrip(".")[:160]  # torch's first sentence
        raise BankLLMError(
            f"{path}: cannot load resumable state, the file is damaged or not a torch "
            f"checkpoint ({type(exc).__name__}: {first}); restore it from a copy, or start a "
            f"new run (the best weights, {BEST_WEIGHTS}, are a separate file)"
        ) from None
    required = ("model", "optimizer", "scheduler", "progress", "rng", "metrics")
    if not isinstance(state, dict) or not all(k in state for k in required):
        raise BankLLMError(f"{path}: not a bankllm training state (expected keys {required})")
    return state


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """All RNG states as tensors and plain values (loadable with ``weights_only=True``)."""
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": list(random.getstate()[1]) + [random.getstate()[2]],
        "python_version": random.getstate()[0],
        "numpy": torch.from_numpy(np_state[1].astype(np.int64)),
        "numpy_pos": int(np_state[2]),
        "numpy_gauss": [int(np_state[3]), float(np_state[4])],  # the cached normal deviate
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the RNG states :func:`rng_state` captured."""
    torch.set_rng_state(state["torch"])
    internal = tuple(int(x) for x in state["python"][:-1])
    gauss = state["python"][-1]
    random.setstate((state["python_version"], internal, gauss))
    has_gauss, gauss_value = state.get("numpy_gauss", (0, 0.0))
    np.random.set_state(
        (
            "MT19937",
            state["numpy"].numpy().astype(np.uint32),
            int(state["numpy_pos"]),
            int(has_gauss),
            float(gauss_value),
        )
    )
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def event_record(kind: str, step: int, epoch: int, message: str) -> dict[str, Any]:
    """One entry of ``metrics["events"]``: what happened (``kind``), when, and a message."""
    return {"step": step, "epoch": epoch, "kind": kind, "message": message}


def write_metrics(run_dir: str | Path, metrics: dict[str, Any]) -> None:
    """Validate and atomically write ``metrics.json`` and ``metrics.csv``."""
    run_dir = Path(run_dir)
    validate_json(
        metrics, load_schema("bankllm", "metrics.schema.json"), str(run_dir / METRICS_FILE)
    )
    atomic_write_json(run_dir / METRICS_FILE, metrics)
    by_epoch = {e["epoch"]: e for e in metrics["epochs"]}
    last_step_of_epoch = {s["epoch"]: s["step"] for s in metrics["steps"]}
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    epoch_cols = ("train_loss", "train_eval_loss", "val_loss", "seconds")
    writer.writerow(["step", "epoch", "loss", "lr", "grad_norm", "tokens", *epoch_cols])
    for s in metrics["steps"]:
        ep = by_epoch.get(s["epoch"]) if last_step_of_epoch[s["epoch"]] == s["step"] else None
        writer.writerow(
            [s["step"], s["epoch"], s["loss"], s["lr"], s["grad_norm"], s["tokens"]]
            + [ep[c] if ep else "" for c in epoch_cols]
        )
    atomic_write_text(run_dir / METRICS_CSV, buf.getvalue())


def read_metrics(run_dir: str | Path) -> dict[str, Any]:
    """Read and validate ``metrics.json``."""
    path = Path(run_dir) / METRICS_FILE
    metrics = read_json(path, "metrics")
    validate_json(metrics, load_schema("bankllm", "metrics.schema.json"), str(path))
    return metrics


def point_latest(run_dir: Path) -> None:
    """Atomically make ``<runs>/latest`` a symlink to ``run_dir``."""
    link = run_dir.parent / "latest"
    tmp = run_dir.parent / f".latest.{os.getpid()}"
    tmp.unlink(missing_ok=True)
    os.symlink(run_dir.name, tmp)
    os.replace(tmp, link)


@dataclass
class Run:
    """A finished (or interrupted) run, read back from its directory."""

    path: Path
    config: TrainConfig
    metrics: dict[str, Any]
    tokenizer: Tokenizer
    split: Split
    data_sha256: str

    def load_model(self, which: str = "best") -> GPT:
        return load_model(self.path, which, config=self.config, tokenizer=self.tokenizer)


def _resolve_run_dir(run_dir: str | Path) -> Path:
    path = Path(run_dir)
    if not path.is_dir():
        raise BankLLMError(
            f"{path}: no such run (train one with 'bankllm train' or 'tox -e train')"
        )
    return path.resolve()


def read_config(run_dir: str | Path) -> TrainConfig:
    """The resolved config a run was trained with."""
    path = Path(run_dir) / CONFIG_FILE
    return config_from_dict(read_json(path, "run config"), origin=str(path))


def load_model(
    run_dir: str | Path,
    which: str = "best",
    config: TrainConfig | None = None,
    tokenizer: Tokenizer | None = None,
) -> GPT:
    """The run's model in eval mode: ``which="best"`` weights, or ``"last"`` from state.pt."""
    run_dir = _resolve_run_dir(run_dir)
    config = config or read_config(run_dir)
    tokenizer = tokenizer or Tokenizer.load(run_dir / TOKENIZER_FILE)
    model = GPT(gpt_config(config, len(tokenizer)))
    if which == "best":
        if not (run_dir / BEST_WEIGHTS).exists() and (run_dir / STATE_FILE).exists():
            raise BankLLMError(
                f"{run_dir}: no best weights yet ({BEST_WEIGHTS} is written when the first "
                f"epoch's validation ends); continue the run with: bankllm train --resume "
                f"{run_dir}"
            )
        load_weights(model, run_dir / BEST_WEIGHTS)
    elif which == "last":
        try:
            model.load_state_dict(load_state(run_dir / STATE_FILE)["model"])
        except (RuntimeError, TypeError, AttributeError) as exc:  # shapes or keys differ
            detail = " ".join(str(exc).split())[:300]  # one line
            raise BankLLMError(
                f"{run_dir / STATE_FILE}: model weights do not match the config ({detail})"
            ) from None
    else:
        raise ValueError(f"which must be 'best' or 'last', got {which!r}")
    return model.eval()


def load_run(run_dir: str | Path) -> Run:
    """Read a run directory: config, metrics, tokenizer and the exact split it trained on."""
    run_dir = _resolve_run_dir(run_dir)
    config = read_config(run_dir)
    metrics = read_metrics(run_dir)
    tokenizer = Tokenizer.load(run_dir / TOKENIZER_FILE)
    split_info, ids = read_split(run_dir)
    try:
        data_path, data_sha = Path(split_info["data"]), split_info["data_sha256"]
    except (KeyError, TypeError) as exc:
        raise BankLLMError(f"{run_dir / SPLIT_FILE}: missing field {exc}") from None
    if not data_path.exists() and Path(split_info.get("data_abspath", "")).exists():
        data_path = Path(split_info["data_abspath"])
    if data_path.exists() and file_sha256(data_path) != data_sha:
        raise BankLLMError(
            f"{data_path}: the corpus changed since this run was trained (SHA-256 differs); "
            "retrain or restore the file"
        )
    split = Split.from_ids(load_conversations(data_path), ids)
    return Run(run_dir, config, metrics, tokenizer, split, data_sha)


def read_split(run_dir: Path) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """``split.json`` of ``run_dir``: its contents and the conversation ids of train, val and
    train_eval (lists of strings); BankLLMError naming the file and the field otherwise."""
    path = Path(run_dir) / SPLIT_FILE
    info = read_json(path, "split")
    try:
        ids = {k: info[k] for k in ("train", "val", "train_eval")}
    except (KeyError, TypeError) as exc:
        raise BankLLMError(f"{path}: missing field {exc}") from None
    for part, values in ids.items():
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise BankLLMError(f"{path}: field '{part}' must be a list of conversation ids")
    return info, ids


def write_split(run_dir: Path, cfg: TrainConfig, data_sha256: str, ids: dict[str, Any]) -> None:
    """Write ``split.json``: the corpus (path, absolute path, sha256), the seeds that drew the
    split, ``val_fraction`` and the split's conversation ids ``ids``."""
    atomic_write_json(
        run_dir / SPLIT_FILE,
        {
            "data": cfg.data,
            "data_abspath": str(Path(cfg.data).resolve()),
            "data_sha256": data_sha256,
            "seed": cfg.seed,
            "split_seed": cfg.effective_split_seed,  # drew val and train_eval
            "val_fraction": cfg.val_fraction,
            **ids,
        },
    )
