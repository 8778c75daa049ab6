"""The trainer: every feature of the training chapter, done right.

- AdamW (decoupled weight decay on weight matrices only), fused where available.
- Cosine learning-rate schedule stepped per optimizer step, optional linear warm-up, a floor.
- Gradient accumulation whose loss is normalised by the number of target tokens in the
  whole accumulation window, so the gradient equals that of one batch of ``batch_size``
  sequences however it is cut into micro-batches (the chapter's ``loss / accumulation_steps``
  does not: micro-batches hold different numbers of tokens).
- Gradient clipping, with the pre-clip norm logged.
- Every ``update_ratio_every`` steps, the update-to-weight ratio ||dw|| / ||w|| of the step per
  parameter group (:func:`bankllm.steps.update_ratios`); optional TensorBoard scalars
  (:mod:`bankllm.tb_logging`).
- After every epoch: val loss and ``train_eval`` (eval mode on a fixed train subset the size
  of val) so that train and val are compared like for like, each also per conversation so
  that the diagnostics can put intervals on them.
- Only the best checkpoint by val loss is kept, plus a resumable last state.
- bf16 autocast where the CPU has AMX or AVX512-BF16; seeded, resumable data order.
- Non-finite losses or gradients skip the step (up to ``max_nonfinite_steps``) or stop the
  run; SIGINT / SIGTERM finish the current step, save, and exit 130 / 143.

This module is the loop: set up a run, then epochs of optimizer steps, evaluation and saving.
What one step computes is in :mod:`bankllm.steps`, the saved files in :mod:`bankllm.checkpoints`,
the command line in :mod:`bankllm.train_cli`.
"""

from __future__ import annotations

import math
import signal
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Literal

import torch

from bankllm import checkpoints as ckpt
from bankllm import distributed, tb_logging
from bankllm.canaries import add_canaries
from bankllm.checkpoints import check_writable, rng_state, seed_everything, set_rng_state
from bankllm.config import TrainConfig
from bankllm.data import (
    collate,
    encode_corpus,
    epoch_batches,
    file_sha256,
    load_conversations,
    opening_messages,
    padding_positions,
    split_conversations,
)
from bankllm.errors import EXIT_DIVERGED, EXIT_OK, EXIT_SIGINT, EXIT_SIGTERM, BankLLMError
from bankllm.fileio import atomic_write_json, load_schema, validate_json
from bankllm.memory import bound_kernel_caches
from bankllm.model import GPT
from bankllm.precision import inference, resolve_device, resolve_precision
from bankllm.progress import TrainingProgress
from bankllm.steps import (
    accumulate_gradients,
    evaluate,
    lr_at,
    make_optimizer,
    snapshot,
    update_groups,
    update_ratios,
)
from bankllm.stopping import StopRequest
from bankllm.tokenizer import Tokenizer

# the trainer's counters saved in state.pt["progress"] (and the only attributes it restores)
_PROGRESS_KEYS = (
    "epoch",
    "batch_in_epoch",
    "step",
    "epoch_loss_sum",
    "epoch_tokens",
    "epoch_seconds",
    "nonfinite_steps",
    "padded_tokens",
    "pad_positions",
)


class Trainer:
    """Trains one run into ``run_dir``; see the module docstring for what it does."""

    def __init__(
        self,
        cfg: TrainConfig,
        run_dir: str | Path,
        resume: bool = False,
        show_progress: bool = True,
        log: Callable[[str], None] | None = None,
        split: ckpt.Split | None = None,
        tokenizer: Tokenizer | None = None,
        ctx: distributed.Context | None = None,
    ):
        """``split`` / ``tokenizer`` (new runs only): train on exactly these instead of splitting
        ``cfg.data`` and building a vocabulary (ablations: a subset of a parent run's train split,
        its val set and its tokenizer). ``cfg.data`` must still be the corpus they come from.
        ``ctx``: this process's place in a torchrun job (default: a single process)."""
        self.ctx = ctx or distributed.Context()
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.show_progress = show_progress
        log = log or (lambda msg: print(msg, file=sys.stderr))
        self.log = log if self.ctx.is_main else (lambda msg: None)
        if cfg.tensorboard:
            tb_logging.require()
        if self.ctx.is_main:
            check_writable(self.run_dir)
        bound_kernel_caches()  # bench/README.md, Memory
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        if cfg.deterministic:
            torch.use_deterministic_algorithms(True)
        self.device = resolve_device(cfg.device)
        if self.device.type == "cuda" and self.ctx.is_distributed:
            self.device = torch.device("cuda", self.ctx.local_rank)
        self.precision = resolve_precision(cfg.precision, self.device)
        self._prepare_data(resume, split, tokenizer)
        self._build(resume)

    # -- setup -------------------------------------------------------------------------------
    def _prepare_data(
        self, resume: bool, split: ckpt.Split | None = None, tokenizer: Tokenizer | None = None
    ) -> None:
        cfg = self.cfg
        conversations = load_conversations(cfg.data)
        self.data_sha256 = file_sha256(cfg.data)
        if resume:
            split_info = ckpt.read_json(self.run_dir / ckpt.SPLIT_FILE, "split")
            if split_info.get("data_sha256") != self.data_sha256:
                raise BankLLMError(f"{cfg.data}: data changed since the run started; cannot resume")
            self.split = ckpt.Split.from_ids(conversations, split_info)
            self.tokenizer = Tokenizer.load(self.run_dir / ckpt.TOKENIZER_FILE)
        else:
            self.split = (
                split
                if split is not None
                else split_conversations(conversations, cfg.val_fraction, cfg.effective_split_seed)
            )
            self.tokenizer = (
                tokenizer
                if tokenizer is not None
                else Tokenizer.train(
                    (m["content"] for c in self.split.train for m in c["messages"]),
                    min_freq=cfg.min_freq,
                    opening=opening_messages(self.split.train),
                )
            )
        enc = lambda convs: encode_corpus(convs, self.tokenizer, cfg.block_size, cfg.loss_on)  # noqa: E731
        self.train_data, self.val_data, self.train_eval_data = (
            # the train batches: the train split plus any canaries (bankllm.canaries)
            enc(add_canaries(self.split.train, self.tokenizer, cfg.canaries, cfg.seed,
                             self.run_dir, resume, write=self.ctx.is_main)),
            enc(self.split.val),
            enc(self.split.train_eval),
        )
        # train_eval is a subset of train: its truncations are already counted
        self.truncated = self.train_data.truncated + self.val_data.truncated
        if self.truncated:
            self.log(self._truncation_note())
        self.steps_per_epoch = math.ceil(len(self.train_data) / cfg.batch_size)
        self.total_steps = self.steps_per_epoch * cfg.epochs

    def _build(self, resume: bool) -> None:
        cfg = self.cfg
        seed_everything(cfg.seed)
        self.model = GPT(ckpt.gpt_config(cfg, len(self.tokenizer))).to(self.device)
        # what forward/backward run through: DDP averages gradients over processes
        self.train_model: torch.nn.Module = self.model
        if self.ctx.is_distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.train_model = torch.nn.parallel.DistributedDataParallel(self.model, ids)
        self.optimizer = make_optimizer(self.model, cfg, self.device)
        self.update_groups = update_groups(self.model)
        # the schedule captures the step count, not ``self``: a trainer in no reference cycle is
        # freed as soon as it is dropped (a seed group trains its members in one process)
        total_steps = self.total_steps
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: lr_at(step, total_steps, cfg) / cfg.lr
        )
        self.epoch, self.batch_in_epoch, self.step = 1, 0, 0
        self.epoch_loss_sum, self.epoch_tokens, self.epoch_seconds = 0.0, 0, 0.0
        self.nonfinite_steps = 0
        self.padded_tokens, self.pad_positions = 0, 0
        if resume:
            path = self.run_dir / ckpt.STATE_FILE
            state = ckpt.load_state(path)
            try:
                self._restore(state)
            except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as exc:
                detail = " ".join(str(exc).split())[:300]  # one line
                raise BankLLMError(
                    f"{path}: not a usable training state for this run "
                    f"({type(exc).__name__}: {detail})"
                ) from None
            return
        first = epoch_batches(
            self.train_data.lengths, cfg.batch_size, cfg.seed, 1, cfg.bucket_batches
        )
        initial = self._initial_loss(first[0])
        self.metrics: dict[str, Any] = {
            "schema_version": 1,
            "run_name": self.run_dir.name,
            "status": "running",
            "n_params": self.model.num_params(),
            "vocab_size": len(self.tokenizer),
            "n_train": len(self.split.train),
            "n_val": len(self.split.val),
            "n_train_eval": len(self.split.train_eval),
            "initial_loss": initial,
            "precision": self.precision,
            "device": str(self.device),
            "torch_version": str(torch.__version__),  # not TorchVersion: weights_only refuses it
            "world_size": self.ctx.world_size,
            "warmup_steps": cfg.warmup_steps,
            "steps_per_epoch": self.steps_per_epoch,
            "train_seconds": 0.0,
            "tokens_per_second": 0.0,
            "padding_share": 0.0,
            "truncated_conversations": self.truncated,
            "unk_rate_val": self.tokenizer.unk_rate(
                m["content"] for c in self.split.val for m in c["messages"]
            ),
            "data_sha256": self.data_sha256,
            "best_epoch": None,
            "best_val_loss": None,
            "steps": [],
            "epochs": [],
            "events": [],
        }
        if self.truncated:  # recorded once, when the run starts
            self._add_event("truncated", self._truncation_note(), step=0, epoch=1)
        if self.ctx.is_main:
            self._write_run_files()

    def _add_event(
        self,
        kind: Literal["nonfinite", "interrupted", "resumed", "stopped", "truncated"],
        message: str,
        step: int | None = None,
        epoch: int | None = None,
    ) -> None:
        """Append an event to the metrics (default: at the current step and epoch)."""
        step = self.step if step is None else step
        epoch = self.epoch if epoch is None else epoch
        self.metrics["events"].append(ckpt.event_record(kind, step, epoch, message))

    def _truncation_note(self) -> str:
        return (
            f"note: {self.truncated} conversation(s) longer than block_size="
            f"{self.cfg.block_size} tokens were truncated"
        )

    def _initial_loss(self, batch: list[int]) -> float:
        """The untrained model's loss on the first batch, in eval mode."""
        x, y = collate(self.train_data, batch, self.tokenizer.pad_id)
        with inference(self.model, self.precision):
            _, loss = self.model(x.to(self.device), y.to(self.device))
        return float(loss)

    def _write_run_files(self) -> None:
        atomic_write_json(self.run_dir / ckpt.CONFIG_FILE, self.cfg.to_dict())
        self.tokenizer.save(self.run_dir / ckpt.TOKENIZER_FILE)
        ckpt.write_split(self.run_dir, self.cfg, self.data_sha256, self.split.ids())
        ckpt.write_metrics(self.run_dir, self.metrics)

    # -- resumable state ---------------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "progress": {key: getattr(self, key) for key in _PROGRESS_KEYS},
            "rng": rng_state(),
            "metrics": self.metrics,
        }

    def _restore(self, state: dict[str, Any]) -> None:
        progress = state["progress"]
        for key in _PROGRESS_KEYS:  # only known counters: a file never sets other attributes
            value = progress[key]
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise TypeError(f"progress '{key}' is {type(value).__name__}")
        validate_json(
            state["metrics"],
            load_schema("bankllm", "metrics.schema.json"),
            f"{self.run_dir / ckpt.STATE_FILE}: metrics",
        )
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        for key in _PROGRESS_KEYS:
            setattr(self, key, progress[key])
        self.metrics = state["metrics"]
        self.metrics["status"] = "running"
        self._add_event("resumed", f"resumed at epoch {self.epoch}, batch {self.batch_in_epoch}")
        set_rng_state(state["rng"])
        self.model.train()

    def save_state(self) -> None:
        if not self.ctx.is_main:
            return
        ckpt.save_state(self._state(), self.run_dir / ckpt.STATE_FILE)
        ckpt.write_metrics(self.run_dir, self.metrics)

    # -- training ----------------------------------------------------------------------------
    def _train_step(self, batch: list[int]) -> dict[str, Any]:
        """One optimizer step on ``batch``; returns its step record."""
        cfg = self.cfg
        lr = self.scheduler.get_last_lr()[0]
        # Every process knows the whole batch, so each divides its summed loss by the target
        # tokens of the whole batch; DDP averages gradients over world_size processes, which
        # the denominator undoes. The step is exactly one of `batch_size` conversations.
        ctx = self.ctx
        tokens = self.train_data.n_target_tokens(batch)
        shard = ctx.shard(batch)
        denominator = tokens / ctx.world_size
        if not shard:  # fewer conversations than processes: join the gradient sync with zeros
            shard, denominator = batch[:1], math.inf
        loss_sum, _, padded = accumulate_gradients(
            self.train_model,
            self.train_data,
            shard,
            cfg.micro_batch_size,
            self.tokenizer.pad_id,
            self.device,
            self.precision,
            token_count=denominator,
            no_sync=getattr(self.train_model, "no_sync", None),
            micro_batch_tokens=cfg.micro_batch_tokens,
        )
        if denominator == math.inf:
            loss_sum, padded = 0.0, 0
        pad_positions = (
            padding_positions(
                shard, self.train_data.lengths, cfg.micro_batch_size, cfg.micro_batch_tokens
            )
            if padded
            else 0
        )
        loss_sum, padded, pad_positions = ctx.all_reduce_sum(loss_sum, padded, pad_positions)
        self.pad_positions += int(pad_positions)
        clip = cfg.grad_clip if cfg.grad_clip > 0 else float("inf")
        # foreach: one call for all parameters (torch picks it by default only on CUDA); on CPU
        # it loops over them inside ATen instead of one call per parameter from Python, and
        # gives the same norm to the bit
        grad_norm = float(
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip, foreach=True)
        )
        loss = loss_sum / max(tokens, 1)
        self.step += 1
        self.padded_tokens += int(padded)
        record = {
            "step": self.step,
            "epoch": self.epoch,
            "loss": loss,
            "lr": lr,
            "grad_norm": grad_norm,
            "tokens": tokens,
        }
        if math.isfinite(loss) and math.isfinite(grad_norm):
            # the update is the same on every process (DDP): rank 0 measures it
            every = cfg.update_ratio_every
            measure = every > 0 and self.step % every == 0 and ctx.is_main
            before = snapshot(self.update_groups) if measure else None
            self.optimizer.step()
            if before is not None:
                record["update_ratio"] = update_ratios(self.update_groups, before)
            self.epoch_loss_sum += loss_sum
            self.epoch_tokens += tokens
        else:
            self.nonfinite_steps += 1
            record.update(
                loss=loss if math.isfinite(loss) else None,
                grad_norm=grad_norm if math.isfinite(grad_norm) else None,
                skipped=True,
            )
            what = "loss" if not math.isfinite(loss) else "gradient norm"
            self._add_event(
                "nonfinite",
                f"non-finite {what} at step {self.step} (epoch {self.epoch}); step skipped",
            )
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        return record

    def _end_epoch(self) -> dict[str, Any]:
        pad, ctx = self.tokenizer.pad_id, self.ctx
        scored = evaluate(self.model, self.val_data, pad, self.device, self.precision, ctx=ctx)
        train_eval = evaluate(
            self.model, self.train_eval_data, pad, self.device, self.precision, ctx=ctx
        )
        val = scored.loss
        record = {
            "epoch": self.epoch,
            "train_loss": self.epoch_loss_sum / self.epoch_tokens if self.epoch_tokens else None,
            "train_eval_loss": train_eval.loss,
            "val_loss": val,
            "lr": self.scheduler.get_last_lr()[0],
            "seconds": self.epoch_seconds,
            "tokens": self.epoch_tokens,
            # per conversation, in split.json's order: what the overfitting check resamples
            "val_loss_sums": scored.loss_sums,
            "train_eval_loss_sums": train_eval.loss_sums,
        }
        self.metrics["val_tokens"], self.metrics["train_eval_tokens"] = (
            scored.tokens, train_eval.tokens)
        self.metrics["epochs"].append(record)
        best = self.metrics["best_val_loss"]
        if math.isfinite(val) and (best is None or val < best) and ctx.is_main:
            # weights first, then the record naming them: a crash between leaves an older
            # best.json next to better weights, never a record of weights that do not exist
            ckpt.save_weights(
                self.model,
                self.run_dir / ckpt.BEST_WEIGHTS,
                {"epoch": str(self.epoch), "val_loss": repr(val)},
            )
            atomic_write_json(self.run_dir / ckpt.BEST_INFO, {"epoch": self.epoch, "val_loss": val})
            self.metrics["best_epoch"], self.metrics["best_val_loss"] = self.epoch, val
        return record

    def _update_throughput(self) -> None:
        seconds = sum(e["seconds"] for e in self.metrics["epochs"]) + self.epoch_seconds
        tokens = sum(s["tokens"] for s in self.metrics["steps"])
        self.metrics["train_seconds"] = seconds
        self.metrics["tokens_per_second"] = tokens / seconds if seconds > 0 else 0.0
        # share of the input positions computed that were padding
        self.metrics["padding_share"] = (
            self.pad_positions / self.padded_tokens if self.padded_tokens else 0.0
        )

    def train(self) -> int:
        """Run (or continue) training; return the process exit code."""
        cfg = self.cfg
        progress = TrainingProgress(self) if self.show_progress and self.ctx.is_main else None
        tb_dir = self.run_dir if cfg.tensorboard and self.ctx.is_main else None
        tb = tb_logging.TensorBoardLog(tb_dir, first_step=self.step + 1)
        with StopRequest() as stop, progress or nullcontext(), tb:
            while self.epoch <= cfg.epochs:
                batches = epoch_batches(
                    self.train_data.lengths,
                    cfg.batch_size,
                    cfg.seed,
                    self.epoch,
                    cfg.bucket_batches,
                )
                while self.batch_in_epoch < len(batches):
                    t0 = time.perf_counter()
                    batch = batches[self.batch_in_epoch]
                    record = self._train_step(batch)
                    self.batch_in_epoch += 1
                    self.epoch_seconds += time.perf_counter() - t0
                    self.metrics["steps"].append(record)
                    tb.log_step(record)
                    if progress:
                        progress.update(record)
                    if self.nonfinite_steps > cfg.max_nonfinite_steps:
                        return self._stop_diverged(record)
                    if self.ctx.broadcast_flag(stop.signum is not None):
                        return self._stop_interrupted(stop.signum or signal.SIGTERM)
                    if cfg.save_every_steps and self.step % cfg.save_every_steps == 0:
                        self._update_throughput()
                        self.save_state()
                tb.log_epoch(self._end_epoch(), self.step)
                self.epoch += 1
                self.batch_in_epoch, self.epoch_loss_sum, self.epoch_tokens = 0, 0.0, 0
                self.epoch_seconds = 0.0
                self._update_throughput()
                self.save_state()
                if progress:
                    progress.epoch_done(self.metrics["epochs"][-1])
                if self.ctx.broadcast_flag(stop.signum is not None):
                    return self._stop_interrupted(stop.signum or signal.SIGTERM)
        self.metrics["status"] = "completed"
        self._update_throughput()
        self.save_state()
        if self.ctx.is_main:
            ckpt.point_latest(self.run_dir)
        return EXIT_OK

    def _stop_diverged(self, record: dict[str, Any]) -> int:
        self.metrics["status"] = "diverged"
        message = (
            f"training stopped at step {record['step']} (epoch {record['epoch']}): "
            f"{self.nonfinite_steps} non-finite step(s), more than max_nonfinite_steps="
            f"{self.cfg.max_nonfinite_steps}; the best checkpoint is untouched"
        )
        self._add_event("stopped", message, step=record["step"], epoch=record["epoch"])
        self._update_throughput()
        if self.ctx.is_main:
            ckpt.write_metrics(self.run_dir, self.metrics)
        self.log(f"error: {message}")
        return EXIT_DIVERGED

    def _stop_interrupted(self, signum: int) -> int:
        self.metrics["status"] = "interrupted"
        name = signal.Signals(signum).name
        self._add_event("interrupted", f"{name} after step {self.step}; state saved")
        self._update_throughput()
        self.save_state()
        self.log(
            f"interrupted by {name} after step {self.step}; state saved. Resume with:\n"
            f"  bankllm train --resume {self.run_dir}"
        )
        return EXIT_SIGINT if signum == signal.SIGINT else EXIT_SIGTERM
