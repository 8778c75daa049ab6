"""Parking a real ``bankllm train`` subprocess at a known point, for the signal and crash tests.

:func:`hooked_env` gives a subprocess environment with a ``sitecustomize.py`` first on its
``PYTHONPATH``. It is inert unless ``BANKLLM_TEST_*`` variables are set (``_start`` in
``test_reliability.py`` sets them): ``HANG_STEP=N`` parks every process after the gradients
of its N-th optimizer step, ``BLOCK_WRITE=name:n`` parks inside the n-th atomic write of
``name`` with half the file written; the process touches ``MARKER`` when parked and goes on
when ``RELEASE`` exists. The test then polls ``state.pt`` (:func:`wait_for_state`) and sends
its signal at that point instead of racing a training run that takes 0.2 s.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from bankllm import checkpoints as ckpt

REPO = Path(__file__).resolve().parents[1]

HOOKS = '''
"""Test hooks of tests/test_reliability.py; inert unless BANKLLM_TEST_* variables are set."""
import os
import time
from pathlib import Path


def _park(marker):
    """Say where we are, then wait for the test's release file (or its SIGKILL)."""
    Path(marker).touch()
    release = os.environ.get("BANKLLM_TEST_RELEASE")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if release and Path(release).exists():
            return
        time.sleep(0.02)
    os._exit(99)  # nobody came: never hang the test suite


if os.environ.get("BANKLLM_TEST_HANG_STEP"):
    import bankllm.training as training

    _hang_step = int(os.environ["BANKLLM_TEST_HANG_STEP"])
    _original = training.accumulate_gradients
    _calls = [0]

    def accumulate_gradients(*args, **kwargs):
        result = _original(*args, **kwargs)  # gradients computed, optimizer not stepped yet
        _calls[0] += 1
        if _calls[0] == _hang_step:
            _park(os.environ["BANKLLM_TEST_MARKER"])
        return result

    training.accumulate_gradients = accumulate_gradients

if os.environ.get("BANKLLM_TEST_BLOCK_WRITE"):
    import bankllm.checkpoints as checkpoints
    import bankllm.fileio as fileio

    _name, _, _nth = os.environ["BANKLLM_TEST_BLOCK_WRITE"].partition(":")
    _original_write = fileio.atomic_write
    _seen = [0]

    def atomic_write(path, write):
        if Path(path).name == _name:
            _seen[0] += 1
            if _seen[0] == int(_nth):

                def half_written(tmp):
                    write(tmp)
                    data = tmp.read_bytes()
                    tmp.write_bytes(data[: len(data) // 2])  # the process dies mid-write
                    _park(os.environ["BANKLLM_TEST_MARKER"])

                return _original_write(path, half_written)
        return _original_write(path, write)

    fileio.atomic_write = atomic_write
    checkpoints.atomic_write = atomic_write
'''


def hooked_env(directory: Path) -> dict[str, str]:
    """This process's environment with the hooks first on PYTHONPATH and one thread."""
    (directory / "sitecustomize.py").write_text(HOOKS)
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("BANKLLM_TEST_")},
        "PYTHONPATH": os.pathsep.join([str(directory), str(REPO)]),
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }


def wait_for_state(proc: subprocess.Popen, run_dir: Path, ready, marker: Path) -> dict:
    """Poll ``state.pt`` until its progress satisfies ``ready`` and the hook has parked."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"trainer exited early ({proc.returncode}): {proc.stderr.read()}")
        if marker.exists() and (run_dir / ckpt.STATE_FILE).exists():
            progress = ckpt.load_state(run_dir / ckpt.STATE_FILE)["progress"]
            if ready(progress):
                return progress
        time.sleep(0.05)
    proc.kill()
    pytest.fail("the trainer never reached the expected state")
