"""Training configuration: one flat dataclass, loaded from TOML and ``--set key=value`` overrides.

The defaults are the chapter's recipe with one change: a 6-layer, 8-head, 512-wide GPT with a
256-token context and dropout 0.15 (the chapter's 0.1, ``configs/chapter.toml``, lets the model
recite account numbers a customer said four times; 0.2 costs paraphrase consistency: README,
"Privacy audit"), trained for 10
epochs with AdamW (lr 3e-4, weight decay 0.1) on batches of 32 conversations. How a batch is
cut into micro-batches is an execution choice (the gradient is the mean over the whole batch
however it is cut): by default as few passes as fit ``micro_batch_tokens`` padded tokens each;
``micro_batch_size=4`` gives the chapter's 8 accumulation steps of 4. The cut does change which
random bits each dropout mask gets (masks are drawn pass by pass), so runs cut differently
differ like runs of different seeds, not by rounding only.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from bankllm.errors import BankLLMError

DEFAULT_DATA = "fixtures/banking_conversations.jsonl"


@dataclass
class TrainConfig:
    """Every knob of a training run. Model-shape keys come first, then data, then optimisation."""

    # model
    n_layer: int = 6
    n_head: int = 8
    n_embd: int = 512
    block_size: int = 256
    dropout: float = 0.15
    # data
    data: str = DEFAULT_DATA
    val_fraction: float = 0.1
    loss_on: str = "all"  # "all" tokens (the chapter) or "agent" tokens only
    min_freq: int = 1  # tokenizer: words seen fewer times in train become <unk>
    canaries: int = 0  # synthetic secrets added to the train batches (bankllm.canaries)
    # optimisation
    epochs: int = 10
    batch_size: int = 32  # sequences per optimizer step: this defines the recipe
    micro_batch_size: int = 0  # sequences per forward pass; 0: auto (micro_batch_tokens)
    # auto: padded tokens per forward pass. 1024 keeps the default recipe's peak RSS under
    # 1 GB for ~5% of step time against one pass per batch (8192 = 32 x 256): bench/README.md
    micro_batch_tokens: int = 1024
    lr: float = 3e-4
    min_lr: float = 3e-5  # floor of the cosine schedule
    warmup_steps: int = 0
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0
    # execution
    seed: int = 0  # init, dropout and data order (and the split when split_seed is unset)
    split_seed: int | None = None  # train/val split and train_eval subset; None: same as seed
    precision: str = "auto"  # "auto" (bf16 where the CPU has it), "bf16" or "fp32"
    device: str = "cpu"  # "cpu", "cuda" or "auto"
    threads: int = 0  # torch threads; 0 = leave torch's default
    deterministic: bool = False  # torch.use_deterministic_algorithms
    bucket_batches: int = 16  # length bucketing: sort within groups of this many batches
    max_nonfinite_steps: int = (
        0  # optimizer steps with a non-finite loss/grad to skip before stopping
    )
    save_every_steps: int = (
        0  # also write the resumable state every N optimizer steps (0: per epoch)
    )
    update_ratio_every: int = 10  # log update-to-weight ratios every N optimizer steps (0: off)
    tensorboard: bool = False  # also write TensorBoard event files to <run>/tensorboard/

    @property
    def effective_split_seed(self) -> int:
        """The seed that draws the train/val split and the train_eval subset: ``split_seed``,
        or ``seed`` when it is unset (every run made before ``split_seed`` existed)."""
        return self.seed if self.split_seed is None else self.split_seed

    @property
    def grad_accum_steps(self) -> int:
        """Forward passes per optimizer step (auto: at most; 1 unless the token budget cuts)."""
        if self.micro_batch_size:
            return self.batch_size // self.micro_batch_size
        return max(1, math.ceil(self.batch_size * self.block_size / self.micro_batch_tokens))

    def validate(self) -> None:
        """Raise :class:`BankLLMError` naming the first key whose value is out of range."""
        checks: list[tuple[bool, str]] = [
            (self.n_layer >= 1, "n_layer must be >= 1"),
            (self.n_head >= 1, "n_head must be >= 1"),
            (self.n_embd % max(self.n_head, 1) == 0, "n_embd must be a multiple of n_head"),
            (self.block_size >= 8, "block_size must be >= 8"),
            (0.0 <= self.dropout < 1.0, "dropout must be in [0, 1)"),
            (0.0 < self.val_fraction < 1.0, "val_fraction must be in (0, 1)"),
            (self.loss_on in ("all", "agent"), "loss_on must be 'all' or 'agent'"),
            (self.min_freq >= 1, "min_freq must be >= 1"),
            (0 <= self.canaries <= 1000, "canaries must be in [0, 1000]"),
            (self.epochs >= 1, "epochs must be >= 1"),
            (self.batch_size >= 1, "batch_size must be >= 1"),
            (self.micro_batch_size >= 0, "micro_batch_size must be >= 0 (0: auto)"),
            (self.micro_batch_tokens >= 1, "micro_batch_tokens must be >= 1"),
            (
                self.batch_size % max(self.micro_batch_size, 1) == 0,
                "batch_size must be a multiple of micro_batch_size",
            ),
            (self.lr > 0, "lr must be > 0"),
            (0 <= self.min_lr <= self.lr, "min_lr must be in [0, lr]"),
            (self.warmup_steps >= 0, "warmup_steps must be >= 0"),
            (self.weight_decay >= 0, "weight_decay must be >= 0"),
            (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1, "beta1 and beta2 must be in [0, 1)"),
            (self.grad_clip >= 0, "grad_clip must be >= 0 (0 disables clipping)"),
            (self.precision in ("auto", "bf16", "fp32"), "precision must be auto, bf16 or fp32"),
            (self.device in ("cpu", "cuda", "auto"), "device must be cpu, cuda or auto"),
            (0 <= self.threads <= 1024, "threads must be in [0, 1024]"),
            (0 <= self.seed < 2**63, "seed must be in [0, 2**63)"),
            (
                self.split_seed is None or 0 <= self.split_seed < 2**63,
                "split_seed must be in [0, 2**63) (or unset: same as seed)",
            ),
            (self.bucket_batches >= 1, "bucket_batches must be >= 1"),
            (self.max_nonfinite_steps >= 0, "max_nonfinite_steps must be >= 0"),
            (self.save_every_steps >= 0, "save_every_steps must be >= 0"),
            (self.update_ratio_every >= 0, "update_ratio_every must be >= 0 (0 disables)"),
        ]
        for ok, message in checks:
            if not ok:
                raise BankLLMError(f"config: {message}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def model_hash(self) -> str:
        """Hash of the keys that define the model's shape (what a baseline must share)."""
        keys = ("n_layer", "n_head", "n_embd", "block_size")
        blob = json.dumps({k: getattr(self, k) for k in keys}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


CONFIG_KEYS: tuple[str, ...] = tuple(f.name for f in fields(TrainConfig))
#: keys that may be unset (None; ``--set key=none``, or left out of a TOML file)
OPTIONAL_KEYS: dict[str, type] = {"split_seed": int}
_FIELD_TYPES: dict[str, type] = {
    f.name: OPTIONAL_KEYS.get(f.name) or type(getattr(TrainConfig(), f.name))
    for f in fields(TrainConfig)
}


def _printable(text: str, limit: int = 80) -> str:
    """``text`` as it may appear in a one-line error: escaped control characters, shortened."""
    shown = text if text.isprintable() else text.encode("unicode_escape").decode("ascii")
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."


def _coerce(key: str, value: Any, origin: str) -> Any:
    """Convert ``value`` to the type of ``key``'s default; strings from ``--set`` are parsed."""
    if key not in _FIELD_TYPES:
        valid = ", ".join(CONFIG_KEYS)
        raise BankLLMError(f"{origin}: unknown config key '{_printable(key)}'; valid keys: {valid}")
    want = _FIELD_TYPES[key]
    if key in OPTIONAL_KEYS and (
        value is None or (isinstance(value, str) and value.strip().lower() in ("none", "null"))
    ):
        return None
    if isinstance(value, str) and want is not str:
        text = value.strip().lower()
        if want is bool:
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise BankLLMError(f"{origin}: {key} must be true or false, got '{_printable(value)}'")
        try:
            number = float(text) if want is int and ("e" in text or "." in text) else want(text)
        except ValueError:
            raise BankLLMError(
                f"{origin}: {key} must be {want.__name__}, got '{_printable(value)}'"
            ) from None
        if want is int and isinstance(number, float):  # "1e3" is 1000; "1.5" or "1e400" no int
            if not number.is_integer():
                raise BankLLMError(f"{origin}: {key} must be an integer, got '{_printable(value)}'")
            number = int(number)
        value = number
    if want is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value) if abs(value) < 2**1023 else math.inf  # a 400-digit int: no float
    if not isinstance(value, want) or (want is not bool and isinstance(value, bool)):
        raise BankLLMError(
            f"{origin}: {key} must be {want.__name__}, "
            f"got {type(value).__name__} {_printable(repr(value))}"
        )
    if want is float and not math.isfinite(value):
        raise BankLLMError(f"{origin}: {key} must be a finite number, got {value!r}")
    return value


def config_from_dict(values: dict[str, Any], origin: str = "config") -> TrainConfig:
    """Build a validated config from ``values``; unknown keys and wrong types are errors."""
    if not isinstance(values, dict):
        raise BankLLMError(f"{origin}: expected a table of config keys")
    cfg = TrainConfig()
    for key, value in values.items():
        setattr(cfg, key, _coerce(key, value, origin))
    cfg.validate()
    return cfg


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> TrainConfig:
    """Load a TOML config file (optional) and apply ``key=value`` overrides, in that order.

    A TOML file may hold the keys at top level or under a ``[train]`` table.
    """
    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise BankLLMError(f"{path}: config file not found") from None
        except OSError as exc:
            raise BankLLMError(f"{path}: cannot read config file ({exc.strerror})") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise BankLLMError(f"{path}: not valid TOML ({exc})") from None
        table = raw.get("train", raw) if isinstance(raw.get("train"), dict) else raw
        for key, value in table.items():
            values[key] = _coerce(key, value, str(path))
    for item in overrides or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise BankLLMError(f"--set {_printable(repr(item))}: expected key=value")
        values[key.strip()] = _coerce(key.strip(), value.strip(), f"--set {_printable(item)}")
    return config_from_dict(values)
