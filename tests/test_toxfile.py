"""The inline tox plugin keeps the shared ``.tox/bankllm`` virtualenv across environments."""

from __future__ import annotations

import configparser
import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("toxfile", ROOT / "toxfile.py")
assert _spec is not None and _spec.loader is not None
toxfile = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(toxfile)  # from its file: tox loads it from the project root


def _write_info(env_dir: Path, content: object) -> Path:
    env_dir.mkdir(parents=True, exist_ok=True)
    info = env_dir / ".tox-info.json"
    info.write_text(json.dumps(content))
    return info


def test_forget_env_name_drops_only_the_name(tmp_path: Path) -> None:
    info = _write_info(
        tmp_path / "bankllm",
        {"ToxEnv": {"name": "train", "type": "VirtualEnvRunner"}, "Python": {"v": [3, 11]}},
    )
    assert toxfile.forget_env_name(info.parent)
    assert json.loads(info.read_text()) == {"Python": {"v": [3, 11]}}
    assert not toxfile.forget_env_name(info.parent)  # nothing left to drop
    assert [p.name for p in info.parent.iterdir()] == [".tox-info.json"]  # no temp file left


@pytest.mark.parametrize("content", ["not json", "[1, 2]", None])
def test_forget_env_name_leaves_odd_files_alone(tmp_path: Path, content: str | None) -> None:
    info = tmp_path / ".tox-info.json"
    if content is not None:
        info.write_text(content)
    assert not toxfile.forget_env_name(tmp_path)
    assert (info.read_text() if content is not None else None) == content


def test_teardown_hook_touches_only_the_shared_folder(tmp_path: Path) -> None:
    named = {"ToxEnv": {"name": "lint", "type": "VirtualEnvRunner"}}
    other = _write_info(tmp_path / "lint", named)
    shared = _write_info(tmp_path / toxfile.SHARED_ENV_DIR, named)
    for info in (other, shared):
        toxfile.tox_env_teardown(SimpleNamespace(env_dir=info.parent))
    assert json.loads(other.read_text()) == named
    assert json.loads(shared.read_text()) == {}


def test_switching_environments_reuses_the_shared_virtualenv(tmp_path: Path) -> None:
    """Two real tox environments in one folder: the second must not rebuild the first's."""
    shutil.copy(ROOT / "toxfile.py", tmp_path / "toxfile.py")
    (tmp_path / "tox.ini").write_text(
        "[tox]\nenv_list = one, two\n\n"
        "[testenv]\nskip_install = true\nenv_dir = {tox_root}{/}.tox{/}bankllm\n"
        "commands = python -c pass\n\n[testenv:one]\n\n[testenv:two]\n"
    )

    def tox(env: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "tox", "-e", env],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=240,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout + done.stderr

    tox("one")
    marker = tmp_path / ".tox" / "bankllm" / "kept"
    marker.write_text("a file a rebuild would delete")
    output = tox("two")
    assert "recreate env because" not in output
    assert marker.exists()


def test_ci_runs_the_slow_tests_that_tox_e_test_leaves_out() -> None:
    """``tox -e test`` runs the tests not marked slow, ``tox -e test-slow`` the slow ones, in
    the shared virtualenv, and ``.ci/run`` runs both: every test runs in CI."""
    ini = configparser.ConfigParser(interpolation=None)
    ini.read(ROOT / "tox.ini")
    assert 'pytest -n auto -m "not slow"' in ini["testenv:test"]["commands"]
    assert "pytest -n auto -m slow" in ini["testenv:test-slow"]["commands"]
    assert "env_dir" not in ini["testenv:test-slow"]  # the [testenv] one: .tox/bankllm
    commands = [line.split() for line in (ROOT / ".ci" / "run").read_text().splitlines()
                if line.strip() and not line.lstrip().startswith("#")]
    tox_runs = [c[1:] for c in commands if Path(c[0]).name == "tox"]
    assert ["-e", "test"] in tox_runs and ["-e", "test-slow"] in tox_runs
