"""Reliability: exact resume, clean interruption, crash-safe writes, NaN guard, untrusted files.

The end-to-end tests really start ``python -m bankllm train`` and hit it with SIGKILL, SIGINT
or SIGTERM. To kill it at a known point (and not race a 0.2 s training run) the subprocess gets
a ``sitecustomize.py`` on its ``PYTHONPATH`` (``tests/training_hooks.py``) that, only when its
``BANKLLM_TEST_*`` variables are set, parks the process inside a training step or inside an
atomic write; the test then polls the run's ``state.pt`` and sends the signal.
"""

from __future__ import annotations

import copy
import errno
import json
import math
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import bankllm.fileio as fileio
import bankllm.training as training
from bankllm import checkpoints as ckpt
from bankllm.errors import EXIT_DIVERGED, BankLLMError
from bankllm.model import GPT
from bankllm.steps import evaluate
from bankllm.training import Trainer
from tests.conftest import make_conversations, make_tiny_config, write_corpus
from tests.training_hooks import hooked_env, wait_for_state

REPO = Path(__file__).resolve().parents[1]

# 40 conversations: 36 train / 4 val, 9 optimizer steps per epoch, 27 in all
TINY = {
    "n_layer": 1,
    "n_head": 2,
    "n_embd": 16,
    "block_size": 64,
    "dropout": 0.1,  # dropout draws random numbers: resume must restore the RNG exactly
    "epochs": 3,
    "batch_size": 4,
    "micro_batch_size": 2,
    "lr": 3e-3,
    "min_lr": 3e-4,
    "precision": "fp32",
    "threads": 1,
    "deterministic": True,
    "save_every_steps": 2,
}
STEPS_PER_EPOCH = 9



# -- helpers ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """Environment of the subprocesses: the hooks first on PYTHONPATH, one thread."""
    return hooked_env(tmp_path_factory.mktemp("hooks"))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "corpus.jsonl"
    path.write_text("".join(json.dumps(c) + "\n" for c in make_conversations(40)))
    return path


def _train_args(corpus: Path, runs: Path, name: str, **overrides) -> list[str]:
    args = ["train", "--data", str(corpus), "--runs-dir", str(runs), "--name", name, "--quiet"]
    for key, value in {**TINY, **overrides}.items():
        args += ["--set", f"{key}={str(value).lower() if isinstance(value, bool) else value}"]
    return args


def _start(args: list[str], env: dict[str, str], **hooks: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "bankllm", *args],
        cwd=REPO,
        env={**env, **{f"BANKLLM_TEST_{k.upper()}": str(v) for k, v in hooks.items()}},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(proc: subprocess.Popen, timeout: float = 120) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def _bankllm(args: list[str], env: dict[str, str]) -> tuple[int, str, str]:
    return _finish(_start(args, env))


def _comparable(metrics: dict) -> dict:
    """Metrics without timings, run name and the bookkeeping events of a stop and a resume."""
    m = copy.deepcopy(metrics)
    for key in ("train_seconds", "tokens_per_second", "run_name"):
        m.pop(key)
    for epoch in m["epochs"]:
        epoch.pop("seconds")
    m["events"] = [e for e in m["events"] if e["kind"] not in ("resumed", "interrupted")]
    return m


def _safetensors(path: Path) -> tuple[dict, dict]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return f.metadata(), {k: f.get_tensor(k).numpy().tobytes() for k in f.keys()}  # noqa: SIM118


def _assert_same_run(run_dir: Path, reference: Path) -> None:
    got, want = ckpt.read_metrics(run_dir), ckpt.read_metrics(reference)
    assert got["status"] == "completed"
    assert len(got["steps"]) == 3 * STEPS_PER_EPOCH and len(got["epochs"]) == 3
    # exact equality: every step's loss, lr and grad norm, every epoch's losses
    assert _comparable(got) == _comparable(want)
    # the same best weights and metadata (not bytes: safetensors orders its header keys by hash)
    assert _safetensors(run_dir / ckpt.BEST_WEIGHTS) == _safetensors(reference / ckpt.BEST_WEIGHTS)
    last, ref = ckpt.load_state(run_dir / ckpt.STATE_FILE), ckpt.load_state(reference / "state.pt")
    assert all(torch.equal(last["model"][k], v) for k, v in ref["model"].items())
    assert not list(run_dir.glob(".*.tmp")), "stale temporary files left in the run directory"


@pytest.fixture(scope="module")
def baseline(corpus, env, tmp_path_factory) -> Path:
    """One uninterrupted run that the interrupted-and-resumed runs must reproduce exactly."""
    runs = tmp_path_factory.mktemp("baseline")
    code, _, err = _bankllm(_train_args(corpus, runs, "straight"), env)
    assert code == 0, err
    metrics = ckpt.read_metrics(runs / "straight")
    val = [e["val_loss"] for e in metrics["epochs"]]
    assert val[1] < val[0], "the crash-during-save test needs epoch 2 to improve on epoch 1"
    return runs / "straight"


# -- 1. exact resume after SIGKILL -----------------------------------------------------------
@pytest.mark.slow
def test_sigkill_mid_step_then_resume_equals_the_uninterrupted_run(baseline, corpus, env, tmp_path):
    run_dir, marker = tmp_path / "runs" / "killed", tmp_path / "parked"
    # state saved every 2 steps: the last one is step 12; step 13 done and lost, 14 in flight
    proc = _start(
        _train_args(corpus, tmp_path / "runs", "killed"), env, hang_step=14, marker=marker
    )
    progress = wait_for_state(
        proc, run_dir, lambda p: p["epoch"] == 2 and p["batch_in_epoch"] >= 1, marker
    )
    proc.send_signal(signal.SIGKILL)
    code, _, _ = _finish(proc)
    assert code == -signal.SIGKILL
    assert progress["step"] == 12 and progress["batch_in_epoch"] == 3  # mid-epoch state
    saved = ckpt.load_state(run_dir / ckpt.STATE_FILE)
    assert saved["progress"]["step"] == 12  # what was saved survived the kill

    code, _, err = _bankllm(["train", "--resume", str(run_dir), "--quiet"], env)
    assert code == 0, err
    _assert_same_run(run_dir, baseline)
    resumed = [e for e in ckpt.read_metrics(run_dir)["events"] if e["kind"] == "resumed"]
    assert [(e["step"], e["epoch"]) for e in resumed] == [(12, 2)]


@pytest.mark.slow
def test_sigkill_while_writing_the_state_keeps_the_previous_state_and_resumes_exactly(
    baseline, corpus, env, tmp_path
):
    run_dir, marker = tmp_path / "runs" / "killed", tmp_path / "parked"
    # state writes: steps 2, 4, 6, 8, end of epoch 1, steps 10, 12, 14 <- the 8th, half written
    proc = _start(
        _train_args(corpus, tmp_path / "runs", "killed"),
        env,
        block_write=f"{ckpt.STATE_FILE}:8",
        marker=marker,
    )
    wait_for_state(proc, run_dir, lambda p: p["step"] == 12, marker)
    proc.send_signal(signal.SIGKILL)
    assert _finish(proc)[0] == -signal.SIGKILL
    assert len(list(run_dir.glob(".state.pt.*.tmp"))) == 1  # the half-written new state
    assert ckpt.load_state(run_dir / ckpt.STATE_FILE)["progress"]["step"] == 12  # old one intact
    ckpt.read_metrics(run_dir)  # and so is metrics.json

    code, _, err = _bankllm(["train", "--resume", str(run_dir), "--quiet"], env)
    assert code == 0, err
    _assert_same_run(run_dir, baseline)  # also checks the temporary file was cleaned up


@pytest.mark.slow
def test_sigkill_while_writing_the_best_checkpoint_keeps_the_previous_best(
    baseline, corpus, env, tmp_path
):
    run_dir, marker = tmp_path / "runs" / "killed", tmp_path / "parked"
    proc = _start(
        _train_args(corpus, tmp_path / "runs", "killed"),
        env,
        block_write=f"{ckpt.BEST_WEIGHTS}:2",  # epoch 2's (better) weights, half written
        marker=marker,
    )
    wait_for_state(proc, run_dir, lambda p: p["epoch"] == 2, marker)
    before = (run_dir / ckpt.BEST_WEIGHTS).read_bytes()
    proc.send_signal(signal.SIGKILL)
    assert _finish(proc)[0] == -signal.SIGKILL

    assert (run_dir / ckpt.BEST_WEIGHTS).read_bytes() == before
    assert len(list(run_dir.glob(".best.safetensors.*.tmp"))) == 1
    info = json.loads((run_dir / ckpt.BEST_INFO).read_text())
    epoch1_val = ckpt.read_metrics(baseline)["epochs"][0]["val_loss"]
    assert info == {"epoch": 1, "val_loss": epoch1_val}
    # the previous best still loads, and is what it was: it scores epoch 1's val loss
    run = ckpt.load_run(run_dir)
    model = run.load_model()
    from bankllm.data import encode_corpus

    val = encode_corpus(run.split.val, run.tokenizer, run.config.block_size)
    got = evaluate(model, val, run.tokenizer.pad_id, torch.device("cpu"), "fp32").loss
    assert math.isclose(got, epoch1_val, rel_tol=1e-6)

    code, _, err = _bankllm(["train", "--resume", str(run_dir), "--quiet"], env)
    assert code == 0, err
    _assert_same_run(run_dir, baseline)


# -- 2. SIGINT / SIGTERM ---------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize(("sig", "exit_code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_finishes_the_step_saves_and_prints_how_to_resume(
    baseline, corpus, env, tmp_path, sig, exit_code
):
    run_dir, marker, release = tmp_path / "runs" / "stopped", tmp_path / "parked", tmp_path / "go"
    proc = _start(
        _train_args(corpus, tmp_path / "runs", "stopped"),
        env,
        hang_step=5,
        marker=marker,
        release=release,
    )
    wait_for_state(proc, run_dir, lambda p: p["step"] == 4, marker)
    proc.send_signal(sig)  # arrives in the middle of step 5
    time.sleep(0.1)
    release.touch()
    code, _, err = _finish(proc)
    assert code == exit_code, err
    name = signal.Signals(sig).name
    assert f"interrupted by {name} after step 5; state saved" in err
    assert f"bankllm train --resume {run_dir}" in err
    assert "Traceback" not in err
    state = ckpt.load_state(run_dir / ckpt.STATE_FILE)
    assert state["progress"]["step"] == 5  # the step in flight was finished, then saved
    metrics = ckpt.read_metrics(run_dir)
    assert metrics["status"] == "interrupted" and len(metrics["steps"]) == 5
    assert [e["kind"] for e in metrics["events"]] == ["interrupted"]
    if sig != signal.SIGINT:
        return  # resuming after SIGINT is enough (the state written is the same)

    code, _, err = _bankllm(["train", "--resume", str(run_dir), "--quiet"], env)
    assert code == 0, err
    _assert_same_run(run_dir, baseline)


# -- 3. the best checkpoint is never replaced by a worse or a broken one ----------------------
def _tiny(cfg, **changes):
    cfg.n_layer, cfg.n_head, cfg.n_embd = 1, 2, 16
    for key, value in changes.items():
        setattr(cfg, key, value)
    return cfg


def test_best_checkpoint_is_not_replaced_by_a_worse_a_nonfinite_or_a_failed_save(
    tiny_config, tmp_path, monkeypatch
):
    cfg = _tiny(tiny_config, epochs=5)
    run_dir = tmp_path / "run"
    trainer = Trainer(cfg, run_dir, show_progress=False)
    scripted_val = {1: 2.0, 2: 1.5, 3: 1.8, 4: float("nan"), 5: 1.0}  # worse, NaN, better
    best_at: dict[int, bytes] = {}
    real_evaluate = training.evaluate

    def evaluate(model, corpus, *args, **kwargs):
        scored = real_evaluate(model, corpus, *args, **kwargs)
        if corpus is not trainer.val_data:
            return scored
        if (run_dir / ckpt.BEST_WEIGHTS).exists():
            best_at[trainer.epoch] = (run_dir / ckpt.BEST_WEIGHTS).read_bytes()
        return scored._replace(loss=scripted_val[trainer.epoch])

    real_write = fileio.atomic_write

    def disk_full_for_weights(path, write):
        if Path(path).name != ckpt.BEST_WEIGHTS or trainer.epoch < 5:
            return real_write(path, write)

        def half_then_enospc(tmp):
            write(tmp)
            tmp.write_bytes(tmp.read_bytes()[:100])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        return real_write(path, half_then_enospc)

    monkeypatch.setattr(training, "evaluate", evaluate)
    monkeypatch.setattr(ckpt, "atomic_write", disk_full_for_weights)  # writes best weights
    with pytest.raises(OSError, match="No space left"):
        trainer.train()

    epoch2_best = best_at[3]  # what best.safetensors held after epoch 2
    assert best_at[4] == epoch2_best and best_at[5] == epoch2_best  # epochs 3, 4 kept it
    assert (run_dir / ckpt.BEST_WEIGHTS).read_bytes() == epoch2_best  # the failed save too
    assert json.loads((run_dir / ckpt.BEST_INFO).read_text()) == {"epoch": 2, "val_loss": 1.5}
    assert not list(run_dir.glob(".*.tmp"))  # the failed write cleaned up after itself
    model = GPT(ckpt.gpt_config(cfg, len(trainer.tokenizer)))
    ckpt.load_weights(model, run_dir / ckpt.BEST_WEIGHTS)  # still loads


def test_disk_full_during_training_is_one_line_exit_2_with_the_resume_command(
    corpus, env, tmp_path, monkeypatch, capsys
):
    from bankllm.cli import main

    real_write = fileio.atomic_write
    calls = [0]

    def enospc_on_fifth_state(path, write):
        if Path(path).name == ckpt.STATE_FILE:
            calls[0] += 1
            if calls[0] == 5:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real_write(path, write)

    monkeypatch.setattr(fileio, "atomic_write", enospc_on_fifth_state)
    monkeypatch.setattr(ckpt, "atomic_write", enospc_on_fifth_state)
    code = main(_train_args(corpus, tmp_path / "runs", "full", epochs=1, deterministic=False))
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert "No space left on device" in err and "--resume" in err
    assert ckpt.load_state(tmp_path / "runs" / "full" / ckpt.STATE_FILE)["progress"]["step"] == 8


# -- 4. non-finite loss or gradient ----------------------------------------------------------
def test_nan_parameter_mid_run_stops_with_exit_3_and_leaves_the_best_untouched(
    tiny_config, tmp_path, monkeypatch
):
    cfg = _tiny(tiny_config, epochs=3)  # 54 train conversations, 7 steps per epoch
    run_dir = tmp_path / "run"
    messages: list[str] = []
    trainer = Trainer(cfg, run_dir, show_progress=False, log=messages.append)
    snapshot: dict[str, bytes] = {}
    real_step = trainer._train_step

    def poisoned_step(batch):
        if trainer.step + 1 == 10:  # epoch 2: epoch 1's best checkpoint exists
            snapshot["best"] = (run_dir / ckpt.BEST_WEIGHTS).read_bytes()
            snapshot["info"] = (run_dir / ckpt.BEST_INFO).read_bytes()
            snapshot["state"] = (run_dir / ckpt.STATE_FILE).read_bytes()
            with torch.no_grad():
                trainer.model.blocks[0].mlp.c_fc.weight[0, 0] = float("nan")
        return real_step(batch)

    monkeypatch.setattr(trainer, "_train_step", poisoned_step)
    assert trainer.train() == EXIT_DIVERGED == 3
    assert len(messages) == 1 and messages[0].startswith("error: training stopped at step 10 ")
    assert "(epoch 2)" in messages[0] and "best checkpoint is untouched" in messages[0]
    assert (run_dir / ckpt.BEST_WEIGHTS).read_bytes() == snapshot["best"]
    assert (run_dir / ckpt.BEST_INFO).read_bytes() == snapshot["info"]
    assert (run_dir / ckpt.STATE_FILE).read_bytes() == snapshot["state"]  # last good state
    metrics = ckpt.read_metrics(run_dir)
    assert metrics["status"] == "diverged" and metrics["best_epoch"] == 1
    assert metrics["steps"][-1]["step"] == 10 and metrics["steps"][-1]["loss"] is None
    assert metrics["steps"][-1]["skipped"] is True
    kinds = [(e["kind"], e["step"], e["epoch"]) for e in metrics["events"]]
    assert kinds == [("nonfinite", 10, 2), ("stopped", 10, 2)]
    assert "step 10" in metrics["events"][0]["message"]


def test_max_nonfinite_steps_tolerates_that_many_skipped_steps(tiny_config, tmp_path, monkeypatch):
    real = training.accumulate_gradients
    state = {"calls": 0, "bad": set()}

    def flaky(model, *args, **kwargs):
        loss_sum, tokens, padded = real(model, *args, **kwargs)
        state["calls"] += 1
        if state["calls"] in state["bad"]:  # a transient fault: NaN gradients and loss
            for p in model.parameters():
                p.grad.fill_(float("nan"))
            loss_sum = float("nan")
        return loss_sum, tokens, padded

    monkeypatch.setattr(training, "accumulate_gradients", flaky)
    for bad, code in (({3, 9}, 0), ({3, 9, 11}, EXIT_DIVERGED)):
        state.update(calls=0, bad=bad)
        cfg = _tiny(copy.deepcopy(tiny_config), epochs=2, max_nonfinite_steps=2)
        run_dir = tmp_path / f"run{len(bad)}"
        trainer = Trainer(cfg, run_dir, show_progress=False, log=lambda _: None)
        assert trainer.train() == code
        metrics = ckpt.read_metrics(run_dir)
        skipped = [s["step"] for s in metrics["steps"] if s.get("skipped")]
        assert skipped == sorted(bad)
        assert all(metrics["steps"][i - 1]["loss"] is None for i in skipped)
        events = [(e["kind"], e["step"]) for e in metrics["events"]]
        assert events[: len(bad)] == [("nonfinite", s) for s in sorted(bad)]
        assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
        if code == 0:
            assert metrics["status"] == "completed" and len(metrics["epochs"]) == 2
        else:
            assert events[-1] == ("stopped", 11) and metrics["status"] == "diverged"


def test_exploding_lr_through_the_cli_exits_3_naming_the_step(corpus, tmp_path, capsys):
    from bankllm.cli import main

    run_dir = tmp_path / "runs" / "boom"
    args = _train_args(
        corpus, tmp_path / "runs", "boom", lr=1e6, max_nonfinite_steps=2, deterministic=False
    )
    code, err = main(args), capsys.readouterr().err
    assert code == EXIT_DIVERGED, err
    assert "error: training stopped at step 4 (epoch 1): 3 non-finite step(s)" in err
    assert "Traceback" not in err
    metrics = ckpt.read_metrics(run_dir)
    assert metrics["status"] == "diverged"
    assert [e["kind"] for e in metrics["events"]] == ["nonfinite"] * 3 + ["stopped"]
    assert [s["loss"] for s in metrics["steps"][1:]] == [None] * 3
    assert not (run_dir / ckpt.BEST_WEIGHTS).exists()  # nothing better than nothing to save


# -- 5. untrusted files ----------------------------------------------------------------------
class _Exploit:
    """Unpickling this runs a shell command: what a malicious state.pt would hold."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def trained_small_run(tmp_path_factory) -> Path:
    """A one-epoch tiny run, trained once for the tests that damage a copy of it."""
    root = tmp_path_factory.mktemp("small")
    cfg = _tiny(make_tiny_config(write_corpus(root / "corpus.jsonl")), epochs=1)
    run_dir = root / "runs" / "small"
    assert Trainer(cfg, run_dir, show_progress=False).train() == 0
    return run_dir


@pytest.fixture
def small_run(trained_small_run, tmp_path) -> Path:
    """A fresh copy of ``trained_small_run`` (same name) for this test to tamper with."""
    return Path(shutil.copytree(trained_small_run, tmp_path / "runs" / "small"))


@pytest.mark.parametrize("fmt", ["torch.save", "pickle"])
def test_a_state_whose_pickle_runs_code_is_refused_and_never_run(small_run, tmp_path, capsys,
                                                                 fmt):
    marker = tmp_path / "pwned"
    payload = {"model": _Exploit(marker), "optimizer": {}, "progress": {}}
    state_file = small_run / ckpt.STATE_FILE
    if fmt == "torch.save":
        torch.save(payload, state_file)
    else:
        state_file.write_bytes(pickle.dumps(payload, protocol=2))
    # sanity: the payload really runs a command when unpickled without protection
    assert "system" in pickle.dumps(payload).decode("latin-1")

    with pytest.raises(BankLLMError, match="refused to load resumable state") as info:
        ckpt.load_state(state_file)
    assert "\n" not in str(info.value)
    with pytest.raises(BankLLMError, match="refused"):
        ckpt.load_model(small_run, "last")
    assert not marker.exists()
    if fmt != "torch.save":
        return  # the CLI once is enough
    # a completed run is left alone by --resume (its state is not even read): the state of
    # an interrupted run is what --resume loads
    metrics = ckpt.read_metrics(small_run)
    ckpt.write_metrics(small_run, {**metrics, "status": "interrupted"})
    from bankllm.cli import main

    capsys.readouterr()
    code = main(["train", "--resume", str(small_run), "--quiet"])
    out, err = capsys.readouterr()
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1 and "refused" in err, err
    assert "Traceback" not in err and "bankllm:" not in out  # stopped before training
    assert not marker.exists()


@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        (lambda s: s.pop("rng"), "not a bankllm training state"),
        (lambda s: s["progress"].update(step="12"), "progress 'step' is str"),
        (lambda s: s["progress"].pop("epoch"), "KeyError"),
        (lambda s: s["model"].update({"wte.weight": torch.zeros(3, 3)}), "size mismatch"),
        (lambda s: s["metrics"].update(status="hacked"), "field 'status'"),
        (lambda s: s.update(metrics=[1, 2]), "metrics: field '(top level)'"),
    ],
)
def test_a_tampered_but_harmless_state_is_a_clear_error(small_run, tiny_config, tamper, message):
    state = ckpt.load_state(small_run / ckpt.STATE_FILE)
    tamper(state)
    torch.save(state, small_run / ckpt.STATE_FILE)
    with pytest.raises(BankLLMError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Trainer(ckpt.read_config(small_run), small_run, resume=True, show_progress=False)


def _weights(small_run: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load

    return load((small_run / ckpt.BEST_WEIGHTS).read_bytes())


def _save(tensors, path):
    from safetensors.torch import save_file

    save_file(tensors, str(path))


@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        (lambda t: t.update({"wte.weight": t["wte.weight"][:, :8].contiguous()}), r"\(\d+, 8\)"),
        (lambda t: t.update({"ln_f.weight": t["ln_f.weight"].half()}), "torch.float16"),
        (lambda t: t.pop("ln_f.bias"), "missing \\['ln_f.bias'\\]"),
        (lambda t: t.update({"evil": torch.zeros(1)}), "unexpected \\['evil'\\]"),
    ],
)
def test_weights_that_do_not_match_the_config_are_a_clear_error(small_run, tamper, message):
    tensors = _weights(small_run)
    tamper(tensors)
    _save(tensors, small_run / ckpt.BEST_WEIGHTS)
    with pytest.raises(BankLLMError, match=message) as info:
        ckpt.load_model(small_run)
    assert "best.safetensors" in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize(
    "damage",
    [
        lambda b: b[: len(b) // 2],  # truncated
        lambda b: b[:7],  # header cut
        lambda b: b"",  # empty
        lambda b: b[:8] + b"{not json" + b[17:],  # header garbled
        lambda b: (10**12).to_bytes(8, "little") + b[8:],  # header length lies
        lambda b: os.urandom(len(b)),  # garbage
    ],
)
def test_a_corrupt_best_checkpoint_is_a_clear_error(small_run, damage):
    path = small_run / ckpt.BEST_WEIGHTS
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(BankLLMError, match="best.safetensors") as info:
        ckpt.load_model(small_run)
    assert "\n" not in str(info.value)


def test_a_truncated_state_is_a_clear_error(small_run):
    path = small_run / ckpt.STATE_FILE
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(BankLLMError, match="damaged or not a torch checkpoint"):
        ckpt.load_state(path)


# -- 6. truncated conversations: counted, reported once --------------------------------------
def test_long_conversations_are_truncated_counted_and_reported_once(tiny_config, tmp_path):
    cfg = _tiny(tiny_config, epochs=1, block_size=32)
    notes: list[str] = []
    trainer = Trainer(cfg, tmp_path / "run", show_progress=False, log=notes.append)
    from bankllm.data import encode_corpus

    expected = sum(
        len(trainer.tokenizer.encode_conversation(c["messages"])[0]) > cfg.block_size + 1
        for c in trainer.split.train + trainer.split.val
    )
    assert 0 < expected < 60
    assert trainer.train() == 0
    assert notes == [
        f"note: {expected} conversation(s) longer than block_size=32 tokens were truncated"
    ]
    metrics = ckpt.read_metrics(tmp_path / "run")
    assert metrics["truncated_conversations"] == expected
    assert [e["kind"] for e in metrics["events"]] == ["truncated"]
    enc = encode_corpus(trainer.split.train, trainer.tokenizer, cfg.block_size)
    assert max(enc.lengths) == cfg.block_size


# -- 7. unwritable output --------------------------------------------------------------------
def test_a_run_directory_under_a_regular_file_fails_before_training(
    corpus, tmp_path, capsys, monkeypatch
):
    from bankllm.cli import main

    def never(*args, **kwargs):
        raise AssertionError("training started before the run directory was checked")

    monkeypatch.setattr(Trainer, "train", never)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory\n")
    code = main(_train_args(corpus, blocker / "runs", "x", deterministic=False))
    out, err = capsys.readouterr()
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1 and "not writable" in err, err
    assert "bankllm:" not in out  # the banner printed once the trainer is built: never reached
    assert blocker.read_text() == "not a directory\n"


@pytest.mark.parametrize("where", ["/proc/bankllm-test/run", "/dev/null/run"])
def test_a_run_directory_that_cannot_be_created_fails_before_loading_data(
    tiny_config, where, monkeypatch
):
    def never(*args, **kwargs):
        raise AssertionError("data loaded before the run directory was checked")

    monkeypatch.setattr(training, "load_conversations", never)
    with pytest.raises(BankLLMError, match="run directory is not writable"):
        Trainer(tiny_config, Path(where), show_progress=False)


@pytest.mark.skipif(
    hasattr(os, "geteuid") and os.geteuid() == 0,
    reason="running as root: chmod does not stop root from writing (tested with paths under "
    "a regular file and /proc instead)",
)
def test_a_read_only_runs_directory_fails_before_training(tiny_config, tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    runs.chmod(0o555)
    try:
        with pytest.raises(BankLLMError, match="run directory is not writable"):
            Trainer(tiny_config, runs / "x", show_progress=False)
    finally:
        runs.chmod(0o755)


def test_resume_refuses_a_run_whose_tokenizer_was_tampered(small_run):
    (small_run / ckpt.TOKENIZER_FILE).write_text('{"vocab": ["<pad>", 3]}')
    with pytest.raises(BankLLMError, match="tokenizer.json: field 'vocab'"):
        Trainer(ckpt.read_config(small_run), small_run, resume=True, show_progress=False)
