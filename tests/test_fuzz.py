"""Fuzzed bad input: every reader of a user or run file ends in a correct result or a
:class:`~bankllm.errors.BankLLMError` (one line; exit 2 through the CLI), never in another
exception or a hang.

Readers covered: the corpus loader, the tokenizer loader, the config parser (TOML files and
``--set`` strings), the probe loader, the run metrics reader, the safetensors weights loader,
the resumable-state loader, the diagnostics report reader and the gate's baseline reader. Each
gets random bytes, random text, truncated valid files and valid files with fields deleted,
replaced or retyped.

Examples are derandomized (the same every run) so that the suite is reproducible; set
``BANKLLM_FUZZ_SEARCH=1`` (and e.g. ``BANKLLM_FUZZ_EXAMPLES=2000``) to search afresh.
"""

from __future__ import annotations

import copy
import datetime as dt
import functools
import json
import math
import os
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bankllm import checkpoints as ckpt
from bankllm.config import _FIELD_TYPES, CONFIG_KEYS, OPTIONAL_KEYS, load_config
from bankllm.data import load_conversations
from bankllm.errors import BankLLMError
from bankllm.tokenizer import SPECIAL_TOKENS, Tokenizer

SEARCH = bool(os.environ.get("BANKLLM_FUZZ_SEARCH"))
FUZZ = settings(
    max_examples=int(os.environ.get("BANKLLM_FUZZ_EXAMPLES", "100")),
    deadline=dt.timedelta(seconds=5),  # generous: the machine is shared; a hang is far longer
    database=None,
    derandomize=not SEARCH,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _path(workdir: Path, name: str, content: bytes) -> Path:
    path = workdir / name
    path.write_bytes(content)
    return path


REFUSED = type("Refused", (), {"__repr__": lambda self: "REFUSED"})()


def outcome(read, *args) -> Any:
    """``read(*args)``, or ``REFUSED`` when it raised a one-line BankLLMError; else it fails."""
    try:
        return read(*args)
    except BankLLMError as exc:
        message = str(exc)
        assert message and "\n" not in message, f"not one line: {message!r}"
        assert "Traceback" not in message
        return REFUSED


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


# -- strategies ------------------------------------------------------------------------------
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()  # NaN and +-inf included: json.loads accepts NaN and Infinity
    | st.text(max_size=12)
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=10,
)
WEIRD_TEXT = st.text(
    alphabet=st.sampled_from('ab {}[]":,\\0123456789.eE-+\n\r\t\u2028\u2029\x85\x1c\x00é€😀'),
    max_size=60,
)
ANY_TEXT = st.text(max_size=60) | WEIRD_TEXT


def _nodes(obj: Any, path: tuple = ()):
    yield path
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield from _nodes(value, (*path, key))
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            yield from _nodes(value, (*path, i))


def _retype(value: Any) -> Any:
    """The same information in the wrong JSON type."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return {str(i): v for i, v in enumerate(value)}
    if isinstance(value, dict):
        return list(value.values())
    return 0


@st.composite
def mutated(draw, valid: Any, max_mutations: int = 3) -> Any:
    """``valid`` with 1..max_mutations fields deleted, replaced by random JSON, or retyped."""
    obj = copy.deepcopy(valid)
    for _ in range(draw(st.integers(1, max_mutations))):
        path = draw(st.sampled_from(list(_nodes(obj))))
        action = draw(st.sampled_from(["replace", "retype", "delete"]))
        if not path:
            obj = draw(JSON_VALUES) if action == "replace" else _retype(obj)
            continue
        parent = obj
        for key in path[:-1]:
            parent = parent[key]
        key = path[-1]
        if action == "delete":
            del parent[key]
        elif action == "replace":
            parent[key] = draw(JSON_VALUES)
        else:
            parent[key] = _retype(parent[key])
    return obj


@st.composite
def damaged_bytes(draw, valid: bytes) -> bytes:
    """``valid`` truncated, with bytes flipped, or with a chunk spliced out."""
    kind = draw(st.sampled_from(["truncate", "flip", "splice"]))
    n = len(valid)
    if kind == "truncate":
        return valid[: draw(st.integers(0, max(n - 1, 0)))]
    if kind == "flip":
        data = bytearray(valid)
        for _ in range(draw(st.integers(1, 4))):
            i = draw(st.integers(0, n - 1))
            data[i] ^= draw(st.integers(1, 255))
        return bytes(data)
    start = draw(st.integers(0, n))
    end = draw(st.integers(start, min(n, start + 64)))
    return valid[:start] + valid[end:]


def _dumps(obj: Any) -> bytes:
    return (json.dumps(obj, ensure_ascii=False) + "\n").encode("utf-8", "surrogatepass")


MESSAGE = st.fixed_dictionaries(
    {"role": st.sampled_from(["customer", "agent", "system"]), "content": ANY_TEXT}
)
CONVERSATION = st.fixed_dictionaries(
    {"messages": st.lists(MESSAGE, min_size=2, max_size=4)},
    optional={
        "intent": st.none() | st.text(max_size=10),
        "slots": st.dictionaries(
            st.text(max_size=6),
            st.none() | st.text(max_size=6) | st.integers() | st.floats(allow_nan=False),
            max_size=3,
        ),
        "meta": st.dictionaries(st.text(max_size=6), st.text(max_size=6), max_size=2),
    },
)
CORPUS = st.lists(CONVERSATION, min_size=1, max_size=5).map(
    lambda convs: [{"id": f"c{i}\u2028{i}", **c} for i, c in enumerate(convs)]
)
VALID_CONVERSATION = {
    "id": "c1",
    "intent": "check_balance",
    "slots": {"account_type": "savings", "amount": 12.5},
    "messages": [
        {"role": "customer", "content": "What is my savings balance?"},
        {"role": "agent", "content": "Your savings balance is $12.50."},
    ],
    "meta": {"source": "fuzz"},
}


# -- corpus loader ---------------------------------------------------------------------------
@FUZZ
@given(content=st.binary(max_size=300) | ANY_TEXT.map(lambda t: t.encode("utf-8", "surrogatepass")))
def test_corpus_loader_random_bytes(workdir, content):
    result = outcome(load_conversations, _path(workdir, "corpus.jsonl", content))
    assert result is REFUSED or all(isinstance(c, dict) and c["messages"] for c in result)


@FUZZ
@given(corpus=CORPUS, crlf=st.booleans())
def test_corpus_loader_reads_any_valid_corpus_back_exactly(workdir, corpus, crlf):
    # U+2028, U+0085 and \x1c inside strings (written raw by ensure_ascii=False) are not lines
    text = b"".join(_dumps(c) for c in corpus)
    if crlf:
        text = text.replace(b"\n", b"\r\n")
    assert load_conversations(_path(workdir, "corpus.jsonl", text)) == corpus


@FUZZ
@given(corpus=CORPUS, data=st.data())
def test_corpus_loader_truncated_or_damaged(workdir, corpus, data):
    valid = b"".join(_dumps(c) for c in corpus)
    damaged = data.draw(damaged_bytes(valid))
    result = outcome(load_conversations, _path(workdir, "corpus.jsonl", damaged))
    if result is not REFUSED and damaged == valid[: len(damaged)]:  # a prefix: whole lines only
        assert result == corpus[: len(result)]


@FUZZ
@given(record=mutated(VALID_CONVERSATION), extra=st.lists(JSON_VALUES, max_size=2))
def test_corpus_loader_wrongly_typed_records(workdir, record, extra):
    content = _dumps(record) + b"".join(_dumps(e) for e in extra)
    result = outcome(load_conversations, _path(workdir, "corpus.jsonl", content))
    if result is not REFUSED:
        assert all(isinstance(c["id"], str) and isinstance(c["messages"], list) for c in result)


@pytest.mark.parametrize(
    "line",
    ["[" * 100_000, "1" * 5000, '{"id": ' + "9" * 5000 + "}", "\ud800"],
    ids=["deep-nesting", "5000-digit-int", "5000-digit-field", "lone-surrogate"],
)
def test_corpus_loader_pathological_lines(workdir, line):
    path = _path(workdir, "corpus.jsonl", line.encode("utf-8", "surrogatepass") + b"\n")
    assert outcome(load_conversations, path) is REFUSED


# -- tokenizer loader ------------------------------------------------------------------------
VALID_TOKENIZER = {"type": "word-level", "version": 1, "vocab": [*SPECIAL_TOKENS, "a", "b", "$"]}


@FUZZ
@given(
    content=st.binary(max_size=200)
    | JSON_VALUES.map(_dumps)
    | mutated(VALID_TOKENIZER).map(_dumps)
    | damaged_bytes(_dumps(VALID_TOKENIZER))
)
def test_tokenizer_loader(workdir, content):
    tok = outcome(Tokenizer.load, _path(workdir, "tokenizer.json", content))
    if tok is not REFUSED:
        assert tok.vocab[: len(SPECIAL_TOKENS)] == list(SPECIAL_TOKENS)
        assert len(set(tok.vocab)) == len(tok.vocab)
        assert tok.decode(tok.encode_text("a b $ zzz")) is not None


@FUZZ
@given(words=st.lists(st.text(min_size=1, max_size=8), max_size=20, unique=True))
def test_tokenizer_loader_reads_any_valid_vocabulary_back(workdir, words):
    vocab = [*SPECIAL_TOKENS, *(w for w in words if w not in SPECIAL_TOKENS)]
    path = workdir / "tokenizer.json"
    Tokenizer(vocab).save(path)
    assert Tokenizer.load(path).vocab == vocab


# -- config parser ---------------------------------------------------------------------------
TOML_SCALARS = (
    st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats()
    | st.booleans()
    | st.text(max_size=10)
    | st.datetimes(min_value=dt.datetime(1, 1, 1), max_value=dt.datetime(9999, 1, 1))
    | st.dates()
    | st.lists(st.integers(-5, 5), max_size=3)
    | st.dictionaries(st.sampled_from(["a", "b"]), st.integers(0, 3), max_size=2)
)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, (int, dt.date)):
        return value.isoformat() if isinstance(value, dt.date) else str(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a TOML basic string
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return "{" + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + "}"


CONFIG_KEY = st.sampled_from(CONFIG_KEYS) | st.text(
    alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=10
)


@st.composite
def toml_documents(draw) -> str:
    table = draw(st.dictionaries(CONFIG_KEY, TOML_SCALARS, max_size=4))
    body = "".join(f"{key} = {_toml_value(value)}\n" for key, value in table.items())
    return ("[train]\n" + body) if draw(st.booleans()) else body


SET_VALUES = (
    st.text(max_size=12)
    | WEIRD_TEXT
    | st.sampled_from(
        [
            "1e400",
            "-1e400",
            "nan",
            "inf",
            "-0",
            "0x10",
            "1_000",
            "1.5",
            "2.0",
            "1e3",
            "",
            " 7 ",
            "9" * 5000,
            "true",
            "off",
            "fp32",
            "cuda",
            "\u0663",
        ]  # fmt: skip
    )
    | st.integers(min_value=-(2**70), max_value=2**70).map(str)
    | st.floats().map(repr)
)
SET_ITEMS = st.lists(
    st.tuples(CONFIG_KEY, SET_VALUES).map(lambda kv: f"{kv[0]}={kv[1]}") | st.text(max_size=15),
    max_size=4,
)


def _check_config(cfg) -> None:
    for key in CONFIG_KEYS:
        value, want = getattr(cfg, key), _FIELD_TYPES[key]
        assert type(value) is want or (value is None and key in OPTIONAL_KEYS), (key, value)
        if want is float:
            assert math.isfinite(value), (key, value)
    cfg.validate()


@FUZZ
@given(document=toml_documents() | ANY_TEXT, overrides=SET_ITEMS)
def test_config_parser(workdir, document, overrides):
    path = _path(workdir, "config.toml", document.encode("utf-8", "surrogatepass"))
    cfg = outcome(load_config, path, overrides)
    if cfg is not REFUSED:
        _check_config(cfg)


@FUZZ
@given(overrides=SET_ITEMS)
def test_config_set_strings(overrides):
    cfg = outcome(load_config, None, overrides)
    if cfg is not REFUSED:
        _check_config(cfg)


@FUZZ
@given(values=mutated({**{k: getattr(load_config(), k) for k in CONFIG_KEYS}}))
def test_run_config_json(workdir, values):
    (workdir / "run").mkdir(exist_ok=True)
    _path(workdir / "run", "config.json", _dumps(values))
    cfg = outcome(ckpt.read_config, workdir / "run")
    if cfg is not REFUSED:
        _check_config(cfg)


def test_config_file_that_is_a_directory(workdir):
    assert outcome(load_config, workdir) is REFUSED


@settings(
    FUZZ, suppress_health_check=[*FUZZ.suppress_health_check, HealthCheck.function_scoped_fixture]
)
@given(document=toml_documents(), overrides=SET_ITEMS)
def test_config_errors_through_the_cli_exit_2(workdir, document, overrides, capsys):
    """A valid config reaches the (missing) corpus; every path ends in exit 2, one line."""
    from bankllm.cli import main

    path = _path(workdir, "cli.toml", document.encode("utf-8", "surrogatepass"))
    argv = ["train", "--config", str(path), "--runs-dir", str(workdir / "runs"), "--quiet"]
    for item in overrides:
        argv.append(f"--set={item}")  # "--set -x" would be an option to argparse
    argv += ["--data", str(workdir / "missing.jsonl"), "--name", "x"]
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err


# -- probe loader ----------------------------------------------------------------------------
PROBES_DIR = Path(__file__).resolve().parents[1] / "fixtures" / "probes"
# the first record of each bundled probe file (written by `bankllm data synth`)
VALID_PROBES = {
    kind: json.loads((PROBES_DIR / f"{kind}.jsonl").read_text(encoding="utf-8").split("\n")[0])
    for kind in ("inv", "dir", "mft")
    if (PROBES_DIR / f"{kind}.jsonl").exists()
}


def _probe_dir(workdir: Path, files: dict[str, bytes]) -> Path:
    directory = workdir / "probes"
    directory.mkdir(exist_ok=True)
    for kind, content in files.items():
        (directory / f"{kind}.jsonl").write_bytes(content)
    return directory


def _load_probes():
    if len(VALID_PROBES) < 3:
        pytest.skip("fixtures/probes/*.jsonl not there (run `bankllm data synth`)")
    return pytest.importorskip("bankllm.probes").load_probes


def test_the_valid_probe_records_load(workdir):
    load_probes = _load_probes()
    probes = load_probes(_probe_dir(workdir, {k: _dumps(v) for k, v in VALID_PROBES.items()}))
    assert probes.counts() == {"inv": 1, "dir": 1, "mft": 1}


@FUZZ
@given(kind=st.sampled_from(["inv", "dir", "mft"]), data=st.data())
def test_probe_loader(workdir, kind, data):
    load_probes = _load_probes()
    files = {k: _dumps(v) for k, v in VALID_PROBES.items()}
    files[kind] = data.draw(
        st.binary(max_size=200)
        | ANY_TEXT.map(lambda t: t.encode("utf-8", "surrogatepass"))
        | mutated(VALID_PROBES[kind]).map(_dumps)
        | damaged_bytes(files[kind])
    )
    probes = outcome(load_probes, _probe_dir(workdir, files))
    if probes is not REFUSED:
        assert all(isinstance(r["id"], str) for r in getattr(probes, kind))


def test_probe_loader_reads_prompts_holding_unicode_line_separators(workdir):
    load_probes = _load_probes()
    files = {k: _dumps(v) for k, v in VALID_PROBES.items()}
    files["mft"] = _dumps({**VALID_PROBES["mft"], "prompt": "savings\u2028balance"})
    assert load_probes(_probe_dir(workdir, files)).mft[0]["prompt"] == "savings\u2028balance"


# -- run metrics reader ----------------------------------------------------------------------
def _valid_metrics() -> dict[str, Any]:
    step = {"step": 1, "epoch": 1, "loss": 3.0, "lr": 1e-3, "grad_norm": 1.0, "tokens": 10}
    epoch = {"epoch": 1, "train_loss": 3.0, "train_eval_loss": 2.9, "val_loss": 2.95,
             "lr": 1e-3, "seconds": 0.1, "tokens": 10}  # fmt: skip
    return {
        "schema_version": 1, "run_name": "r", "status": "completed", "n_params": 10,
        "vocab_size": 9, "n_train": 2, "n_val": 1, "n_train_eval": 1, "initial_loss": 2.2,
        "precision": "fp32", "device": "cpu", "steps": [step, {**step, "step": 2}],
        "epochs": [epoch], "best_epoch": 1, "best_val_loss": 2.95,
        "events": [{"step": 2, "epoch": 1, "kind": "nonfinite", "message": "m"}],
    }  # fmt: skip


def test_the_valid_metrics_read(workdir):
    (workdir / "metrics").mkdir(exist_ok=True)
    _path(workdir / "metrics", "metrics.json", _dumps(_valid_metrics()))
    assert ckpt.read_metrics(workdir / "metrics") == _valid_metrics()


@FUZZ
@given(data=st.data())
def test_metrics_reader(workdir, data):
    valid = _dumps(_valid_metrics())
    content = data.draw(
        st.binary(max_size=200)
        | JSON_VALUES.map(_dumps)
        | mutated(_valid_metrics(), max_mutations=4).map(_dumps)
        | damaged_bytes(valid)
    )
    (workdir / "metrics").mkdir(exist_ok=True)
    _path(workdir / "metrics", "metrics.json", content)
    metrics = outcome(ckpt.read_metrics, workdir / "metrics")
    if metrics is not REFUSED:
        assert isinstance(metrics["steps"], list) and isinstance(metrics["events"], list)


# -- weights and state: the files of a run ---------------------------------------------------
@pytest.fixture(scope="module")
def tiny_files(workdir):
    """best.safetensors and state.pt of a one-epoch run of a tiny model."""
    from bankllm.config import TrainConfig
    from bankllm.training import Trainer
    from tests.conftest import make_conversations

    corpus = workdir / "tiny.jsonl"
    corpus.write_text("".join(json.dumps(c) + "\n" for c in make_conversations(20)))
    cfg = TrainConfig(
        n_layer=1, n_head=2, n_embd=8, block_size=64, dropout=0.0, data=str(corpus), epochs=1,
        batch_size=8, micro_batch_size=8, precision="fp32", threads=1,
    )  # fmt: skip
    run_dir = workdir / "tiny-run"
    assert Trainer(cfg, run_dir, show_progress=False).train() == 0
    return run_dir, (run_dir / ckpt.BEST_WEIGHTS).read_bytes(), (run_dir / "state.pt").read_bytes()


@FUZZ
@given(data=st.data())
def test_weights_loader(workdir, tiny_files, data):
    run_dir, weights, _ = tiny_files
    model = ckpt.load_model(run_dir)  # the config's shapes
    reference = {k: v.clone() for k, v in model.state_dict().items()}
    damaged = data.draw(damaged_bytes(weights) | st.binary(max_size=100))
    path = _path(workdir, "best.safetensors", damaged)
    if outcome(ckpt.load_weights, model, path) is REFUSED:
        assert all(torch.equal(v, reference[k]) for k, v in model.state_dict().items())


@settings(FUZZ, max_examples=max(10, FUZZ.max_examples // 3))
@given(data=st.data())
def test_state_loader(workdir, tiny_files, data):
    _, _, state = tiny_files
    damaged = data.draw(damaged_bytes(state))
    result = outcome(ckpt.load_state, _path(workdir, "state.pt", damaged))
    assert result is REFUSED or isinstance(result, dict)


# -- diagnostics report reader ---------------------------------------------------------------
@FUZZ
@given(data=st.data())
def test_report_reader(workdir, data):
    report = pytest.importorskip("diagnostics.report")
    content = data.draw(
        st.binary(max_size=200) | JSON_VALUES.map(_dumps) | mutated(_VALID_REPORT()).map(_dumps)
    )
    loaded = outcome(report.load_report, _path(workdir, "diagnostics.json", content))
    if loaded is not REFUSED:
        report.render_text(loaded, width=80, color=False)  # `bankllm report` shows it




@FUZZ
@given(data=st.data())
def test_report_run_summary_reads_any_metrics(workdir, data):
    report = pytest.importorskip("diagnostics.report")
    content = data.draw(
        JSON_VALUES.map(_dumps) | mutated(_valid_metrics(), max_mutations=4).map(_dumps)
    )
    (workdir / "summary").mkdir(exist_ok=True)
    _path(workdir / "summary", "metrics.json", content)
    summary = outcome(report.run_summary, workdir / "summary")
    assert summary is REFUSED or isinstance(summary, dict)


@functools.cache
def _VALID_REPORT() -> dict[str, Any]:  # noqa: N802
    report = pytest.importorskip("diagnostics.report")
    from diagnostics.results import CheckResult, table
    from diagnostics.thresholds import Thresholds

    results = [
        CheckResult("overfitting", "WARN", "val rising", values={"gap": 0.1},
                    details={"tables": [table("t", ["a", "b"], [[1, 2.5]], ["WARN"])]}),
        CheckResult("memorization", "SKIP", "no model yet"),
    ]  # fmt: skip
    run = {"path": "/runs/x", "n_steps": 2, "n_epochs": 1, "best_val_loss": 2.95}
    return json.loads(json.dumps(report.build_report(results, run, Thresholds().to_dict())))


# -- gate baseline reader --------------------------------------------------------------------
# (the gate's reader, diagnostics.gate.read_baseline, owned by another engineer)
VALID_BASELINE = {
    "schema_version": 1, "run_name": "r", "created": "2024-01-01T00:00:00+00:00",
    "trained": "2024-01-01T00:00:00+00:00", "status": "completed", "best_val_loss": 2.5,
    "best_epoch": 3, "epochs_run": 3, "data_sha256": "0" * 64, "eval_hash": "1" * 16,
    "model_hash": "2" * 16, "recipe_hash": "3" * 16, "config": {"n_layer": 1},
    "environment": {"torch_version": "2", "precision": "fp32", "device": "cpu",
                    "cpu_isa": "AVX2", "cpu_bf16": "none", "platform": "linux"},
}  # fmt: skip


@FUZZ
@given(data=st.data())
def test_baseline_reader(workdir, data):
    gate = pytest.importorskip("diagnostics.gate")
    content = data.draw(
        st.binary(max_size=200)
        | JSON_VALUES.map(_dumps)
        | mutated(VALID_BASELINE).map(_dumps)
        | damaged_bytes(_dumps(VALID_BASELINE))
    )
    baseline = outcome(gate.read_baseline, _path(workdir, "baseline.json", content))
    assert baseline is REFUSED or isinstance(baseline, dict)


def test_the_valid_baseline_reads(workdir):
    gate = pytest.importorskip("diagnostics.gate")
    assert gate.read_baseline(_path(workdir, "baseline.json", _dumps(VALID_BASELINE))) == (
        VALID_BASELINE
    )


def test_report_run_summary_survives_a_null_step(workdir):
    report = pytest.importorskip("diagnostics.report")
    metrics = _valid_metrics()
    metrics["steps"][0]["step"] = None
    (workdir / "summary-null").mkdir(exist_ok=True)
    _path(workdir / "summary-null", "metrics.json", _dumps(metrics))
    assert isinstance(outcome(report.run_summary, workdir / "summary-null"), dict)
