import json
import subprocess
import sys

import pytest

from bankllm.cli import main
from bankllm.config import load_config


def _run_cli(argv, capsys):
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ('{"id": "a", "messages": [\n', ":1: not valid JSON"),
        (json.dumps({"messages": []}) + "\n", "'id' is a required property"),
        ("", "corpus is empty"),
    ],
)
def test_bad_corpus_is_one_line_and_exit_2(tmp_path, capsys, content, expected):
    data = tmp_path / "bad.jsonl"
    data.write_text(content)
    code, _, err = _run_cli(
        ["train", "--data", str(data), "--runs-dir", str(tmp_path / "runs"), "--quiet"], capsys
    )
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error: ") and expected in err
    assert str(data) in err


def test_unknown_config_key_lists_valid_keys(tmp_path, capsys):
    code, _, err = _run_cli(
        ["train", "--set", "learning_rate=1", "--runs-dir", str(tmp_path)], capsys
    )
    assert code == 2 and "unknown config key 'learning_rate'" in err and "n_layer" in err
    toml = tmp_path / "c.toml"
    toml.write_text("[train]\nepochs = 2\nbogus = 1\n")
    code, _, err = _run_cli(["train", "--config", str(toml)], capsys)
    assert code == 2 and "c.toml: unknown config key 'bogus'" in err


def test_config_values_are_typed_and_checked():
    cfg = load_config(None, ["epochs=3", "lr=1e-3", "deterministic=true", "loss_on=agent"])
    assert (cfg.epochs, cfg.lr, cfg.deterministic, cfg.loss_on) == (3, 1e-3, True, "agent")
    with pytest.raises(Exception, match="epochs must be int"):
        load_config(None, ["epochs=three"])
    with pytest.raises(Exception, match="batch_size must be a multiple"):
        load_config(None, ["batch_size=30", "micro_batch_size=4"])


def test_console_script_reports_errors_without_traceback(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bankllm",
            "train",
            "--data",
            str(tmp_path / "missing.jsonl"),
            "--runs-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().startswith("error:") and "missing.jsonl" in proc.stderr


def test_train_then_stats(tiny_config, corpus_file, tmp_path, capsys):
    code, out, _ = _run_cli(
        [
            "train",
            "--data",
            str(corpus_file),
            "--runs-dir",
            str(tmp_path / "runs"),
            "--name",
            "r",
            "--quiet",
            "--set",
            "n_layer=1",
            "--set",
            "n_embd=16",
            "--set",
            "n_head=2",
            "--set",
            "epochs=1",
            "--set",
            "precision=fp32",
        ],
        capsys,
    )
    assert code == 0 and "best val loss" in out
    code, out, _ = _run_cli(["data", "stats", str(corpus_file)], capsys)
    assert code == 0 and "vocab_size" in out and "check_balance" in out


TINY_SETTINGS = [
    "--quiet",
    *("--set", "n_layer=1", "--set", "n_embd=16", "--set", "n_head=2"),
    *("--set", "epochs=1", "--set", "precision=fp32"),
]


@pytest.fixture
def cli_run(corpus_file, tmp_path, capsys):
    """A completed one-epoch run trained through the CLI: runs/r under tmp_path."""
    runs = tmp_path / "runs"
    code, _, _ = _run_cli(
        ["train", "--data", str(corpus_file), "--runs-dir", str(runs), "--name", "r"]
        + TINY_SETTINGS,
        capsys,
    )
    assert code == 0
    return runs / "r"


def test_failed_start_leaves_no_empty_run_folder(tmp_path, capsys):
    data = tmp_path / "bad.jsonl"
    data.write_text("not json\n")
    runs = tmp_path / "runs"
    code, _, _ = _run_cli(["train", "--data", str(data), "--runs-dir", str(runs)], capsys)
    assert code == 2
    assert not runs.exists() or list(runs.iterdir()) == []


@pytest.mark.parametrize("name", ["a/b", "..", "a\\b", ""])
def test_run_name_must_be_one_folder_name(tmp_path, capsys, name):
    code, _, err = _run_cli(["train", "--name", name, "--runs-dir", str(tmp_path)], capsys)
    assert code == 2 and err.startswith("error: --name") and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_resume_refuses_options_it_would_ignore_and_knows_a_finished_run(cli_run, capsys):
    before = (cli_run / "metrics.json").read_bytes()
    for extra in (["--set", "epochs=2"], ["--data", "x.jsonl"], ["--name", "z"]):
        code, _, err = _run_cli(["train", "--resume", str(cli_run), *extra], capsys)
        assert code == 2 and "cannot be combined with --resume" in err and extra[0] in err
    code, out, _ = _run_cli(["train", "--resume", str(cli_run)], capsys)
    assert code == 0 and "already completed" in out
    assert (cli_run / "metrics.json").read_bytes() == before  # nothing rewritten


def test_resume_of_a_missing_run_names_the_likely_one(cli_run, capsys):
    runs = cli_run.parent
    code, _, err = _run_cli(["train", "--resume", "r", "--runs-dir", str(runs)], capsys)
    assert code == 2 and f"did you mean --resume {cli_run}" in err
    code, _, err = _run_cli(["train", "--resume", str(runs / "nope")], capsys)
    assert code == 2 and "no such run" in err


def test_generate_rejects_an_empty_prompt_and_explains_missing_best_weights(cli_run, capsys):
    code, _, err = _run_cli(["generate", "--run", str(cli_run), "  "], capsys)
    assert code == 2 and "prompt is empty" in err
    (cli_run / "best.safetensors").unlink()  # as if stopped before its first validation
    code, _, err = _run_cli(["generate", "--run", str(cli_run), "hello"], capsys)
    assert code == 2 and "no best weights yet" in err and "--resume" in err


def test_stats_min_freq_is_checked_like_the_config(corpus_file, capsys):
    code, _, err = _run_cli(["data", "stats", str(corpus_file), "--min-freq", "0"], capsys)
    assert code == 2 and "--min-freq must be >= 1" in err


def test_writing_over_a_folder_is_one_error_line(corpus_file, tmp_path, capsys):
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "kept.txt").write_text("kept")
    code, _, err = _run_cli(["data", "synth", "--n", "20", "-o", str(folder)], capsys)
    assert code == 2 and err.count("\n") == 1 and f"{folder}: is a folder" in err
    assert [p.name for p in folder.iterdir()] == ["kept.txt"]


def test_damaged_state_says_what_to_do(cli_run, capsys):
    state = cli_run / "state.pt"
    state.write_bytes(state.read_bytes()[:1000])  # truncated
    code, _, err = _run_cli(["train", "--resume", str(cli_run)], capsys)
    assert code == 0  # a completed run is not loaded at all
    metrics = json.loads((cli_run / "metrics.json").read_text())
    metrics["status"] = "interrupted"
    (cli_run / "metrics.json").write_text(json.dumps(metrics))
    code, _, err = _run_cli(["train", "--resume", str(cli_run)], capsys)
    assert code == 2 and err.count("\n") == 1
    assert "damaged" in err and err.rstrip().endswith("are a separate file)")


def test_bankllm_never_imports_diagnostics():
    code = (
        "import pkgutil, importlib, sys\n"
        "import bankllm\n"
        "for m in pkgutil.walk_packages(bankllm.__path__, 'bankllm.'):\n"
        "    if not m.name.endswith('__main__'):\n"
        "        importlib.import_module(m.name)\n"
        "bad = sorted(m for m in sys.modules if m.startswith('diagnostics'))\n"
        "assert not bad, bad\n"
        "print(sum(m.startswith('bankllm.') for m in sys.modules))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert int(proc.stdout) >= 15  # every module was imported


@pytest.mark.parametrize(
    ("command", "options"),
    [("report", ["--run", "--report-dir"]), ("gate", ["--baseline", "--tolerance", "--update"])],
)
def test_report_and_gate_come_from_entry_points(command, options):
    from importlib.metadata import entry_points

    from bankllm.cli import COMMANDS_GROUP

    names = {ep.name for ep in entry_points(group=COMMANDS_GROUP)}
    assert command in names, (
        f"entry point {COMMANDS_GROUP}:{command} not installed; reinstall: pip install -e ."
    )
    listing = subprocess.run(
        [sys.executable, "-m", "bankllm", "--help"], capture_output=True, text=True, timeout=120
    )
    assert listing.returncode == 0 and f"    {command} " in listing.stdout
    proc = subprocess.run(
        [sys.executable, "-m", "bankllm", command, "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert all(option in proc.stdout for option in options)
