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
