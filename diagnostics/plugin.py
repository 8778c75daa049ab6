"""pytest plugin of the diagnostics suite: options, run fixtures, result collection, report.

Loaded only by ``diagnostics/conftest.py`` (never through an entry point, so the unit tests in
``tests/`` do not see it). Options::

    --run DIR           run directory (default runs/latest)
    --thresholds FILE   TOML overriding the thresholds (see diagnostics.thresholds)
    --report-dir DIR    where diagnostics.json/.svg/.html and loss_curves.png go (default reports)
    --baseline FILE     val-loss baseline of the regression check (default reports/baseline.json)
    --tolerance REL     allowed relative increase of best val loss over it (default 0.02;
                        finite and >= 0, checked as ``bankllm gate`` does)
    --probes DIR        probe sets (inv/dir/mft.jsonl) of consistency and faithfulness (default
                        fixtures/probes; a missing folder SKIPs them, a malformed file is an error)
    --strict            pytest's own flag; here it also makes WARN verdicts fail
    --no-<section>      one per entry of OPTIONAL_SECTIONS (skips tests marked
                        ``@pytest.mark.optional_section("<section>")``)

Every test hands its :class:`CheckResult` to the ``diagnose`` fixture, which records it in
``user_properties`` (pytest-xdist ships those to the controller) and turns FAIL into a failure,
SKIP into a skip, and WARN into a pass (a failure under ``--strict``). The controller collects
the results of all workers and, at session end, writes and prints the report (report.py).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from bankllm.errors import BankLLMError
from diagnostics.results import CheckResult
from diagnostics.thresholds import Thresholds, load_thresholds

DEFAULT_RUN = "runs/latest"
DEFAULT_PROBES = "fixtures/probes"
DEFAULT_REPORT_DIR = "reports"
TRAIN_HINT = "train one first with `tox -e train` (or `bankllm train`), or pass --run DIR"
USER_PROPERTY = "bankllm_check"
# optional parts of the suite: {"ablation": "..."} gives --no-ablation, which skips the tests
# marked @pytest.mark.optional_section("ablation")
OPTIONAL_SECTIONS: dict[str, str] = {
    "ablation": "skip the half-data retraining (slow: about half a training run)",
}

_THRESHOLDS = pytest.StashKey[Thresholds]()



def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("bankllm", "bankllm diagnostics")
    group.addoption("--run", dest="bankllm_run", default=DEFAULT_RUN, metavar="DIR",
                    help=f"training run to diagnose (default {DEFAULT_RUN})")
    group.addoption("--thresholds", dest="bankllm_thresholds", default=None, metavar="FILE",
                    help="TOML file overriding diagnostic thresholds")
    group.addoption("--report-dir", dest="bankllm_report_dir", default=DEFAULT_REPORT_DIR,
                    metavar="DIR", help=f"where the report files go (default {DEFAULT_REPORT_DIR})")
    group.addoption("--baseline", dest="bankllm_baseline", default="reports/baseline.json",
                    metavar="FILE", help="val-loss baseline (default reports/baseline.json)")
    group.addoption("--tolerance", dest="bankllm_tolerance", type=float, default=0.02,
                    metavar="REL", help="allowed relative val-loss increase (default 0.02)")
    group.addoption("--probes", dest="bankllm_probes", default=None, metavar="DIR",
                    help="probe sets of consistency and faithfulness (default: the thresholds "
                    f"file's probes key, else {DEFAULT_PROBES})")
    for name, text in OPTIONAL_SECTIONS.items():
        group.addoption(f"--no-{name}", dest=f"bankllm_no_{name}", action="store_true",
                        help=text)


def _path(config: pytest.Config, value: str) -> Path:
    path = Path(value)
    return path if path.is_absolute() else config.invocation_params.dir / path


def is_strict(config: pytest.Config) -> bool:
    """pytest's ``--strict`` flag (or ``strict = true`` in the ini) makes WARN fail."""
    if getattr(config.option, "strict", False):
        return True
    try:
        return bool(config.getini("strict"))
    except ValueError:  # pytest < 9 has no "strict" ini key
        return False


def run_dir(config: pytest.Config) -> Path:
    return _path(config, config.option.bankllm_run)


def report_dir(config: pytest.Config) -> Path:
    return _path(config, config.option.bankllm_report_dir)


def group_members(config: pytest.Config) -> list[Path] | None:
    """The member runs when ``--run`` is a seed group (``group.json``), else None."""
    from bankllm.seed_group import read_group

    try:
        return read_group(run_dir(config))
    except BankLLMError as exc:
        raise pytest.UsageError(str(exc)) from None


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """On a seed group, every check runs once per member (``run_path`` is parametrized)."""
    members = group_members(metafunc.config)
    if members and "run_path" in metafunc.fixturenames:
        metafunc.parametrize("run_path", [m.resolve() for m in members], indirect=True,
                             ids=[m.name for m in members], scope="session")


def probes_dir(config: pytest.Config) -> Path:
    """The probe folder: ``--probes``, else the ``probes`` key of the thresholds sources
    (pyproject's table or ``--thresholds FILE``), else the bundled ``fixtures/probes``."""
    if config.option.bankllm_probes is not None:
        return _path(config, config.option.bankllm_probes)
    return _chosen_probes(config) or _path(config, DEFAULT_PROBES)


def _chosen_probes(config: pytest.Config) -> Path | None:
    """The probe folder a thresholds source names, if any."""
    thresholds = config.stash.get(_THRESHOLDS, None)
    return thresholds.probes if thresholds is not None else None


def _workers() -> int:
    return max(1, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1))


def cores() -> int:
    """The cores this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _threads() -> int:
    return max(1, cores() // _workers())


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "optional_section(name): part of the suite skipped by --no-<name>")
    try:
        th = load_thresholds(config.rootpath / "pyproject.toml", config.option.bankllm_thresholds)
    except BankLLMError as exc:
        raise pytest.UsageError(str(exc)) from None
    config.stash[_THRESHOLDS] = th
    _check_options(config)
    # Before torch is imported: N workers on C cores get C // N threads each.
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, str(_threads()))
    if not hasattr(config, "workerinput"):  # the controller (or the only process)
        config.pluginmanager.register(ReportCollector(config), "bankllm-diagnostics-report")


def _check_options(config: pytest.Config) -> None:
    """--tolerance as ``bankllm gate`` checks it."""
    from diagnostics.gate import check_tolerance  # scipy: import when needed

    try:
        check_tolerance(config.option.bankllm_tolerance)
    except BankLLMError as exc:
        raise pytest.UsageError(str(exc)) from None


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    """Refuse to start without a run: one usage-error line (exit code 4), no traceback."""
    config = session.config
    if config.option.collectonly or getattr(config.option, "help", False):
        return
    from bankllm.fileio import read_json

    for path in group_members(config) or [run_dir(config)]:
        if not (path / "metrics.json").is_file():
            what = "no such directory" if not path.exists() else "no metrics.json in it"
            raise pytest.UsageError(f"no training run at {path} ({what}): {TRAIN_HINT}")
        try:
            read_json(path / "metrics.json", "run metrics")
        except BankLLMError as exc:
            raise pytest.UsageError(f"{exc}: retrain, or pass --run DIR") from None
    probes = probes_dir(config)
    chosen = config.option.bankllm_probes is not None or _chosen_probes(config) is not None
    if chosen and not probes.is_dir():
        raise pytest.UsageError(f"{probes}: probe directory not found (named by --probes or a "
                                "thresholds file's probes key); it should hold inv.jsonl, "
                                "dir.jsonl and mft.jsonl (docs/probes.md)")
    if probes.is_dir():  # a malformed probe file stops the session; a missing default SKIPs
        from bankllm.probes import load_probes

        try:
            load_probes(probes)
        except BankLLMError as exc:
            raise pytest.UsageError(f"{exc}: fix the file, or pass --probes DIR") from None


def pytest_report_header(config: pytest.Config) -> list[str]:
    path = run_dir(config)
    shown = f"{path} -> {path.resolve()}" if path.is_symlink() else str(path)
    sources = " + ".join(config.stash[_THRESHOLDS].sources)
    return [f"bankllm diagnostics: run {shown}; thresholds: {sources}; probes: "
            f"{probes_dir(config)}; strict: {'yes' if is_strict(config) else 'no'}"]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        for mark in item.iter_markers("optional_section"):
            name = mark.args[0]
            if getattr(config.option, f"bankllm_no_{name}", False):
                item.add_marker(pytest.mark.skip(reason=f"skipped by --no-{name}"))


# --------------------------------------------------------------------------- fixtures


def _set_torch_threads() -> None:
    import torch

    torch.set_num_threads(_threads())


@pytest.fixture(scope="session")
def thresholds(pytestconfig: pytest.Config) -> Thresholds:
    """The resolved thresholds (defaults < pyproject < --thresholds)."""
    return pytestconfig.stash[_THRESHOLDS]


@pytest.fixture(scope="session")
def run_path(request: pytest.FixtureRequest) -> Path:
    """The run directory given by --run, resolved (on a seed group: one member)."""
    return getattr(request, "param", None) or run_dir(request.config).resolve()


@pytest.fixture(scope="session")
def bankllm_run(run_path: Path) -> Any:
    """The run read back by ``bankllm.checkpoints.load_run`` (once per worker)."""
    _set_torch_threads()
    from bankllm.checkpoints import load_run

    try:
        return load_run(run_path)
    except BankLLMError as exc:
        pytest.fail(f"cannot load the run: {exc}", pytrace=False)


@pytest.fixture(scope="session")
def metrics(run_path: Path) -> dict[str, Any]:
    """The run's metrics.json, validated (no torch, no model: cheap)."""
    from bankllm.fileio import load_schema, read_json, validate_json

    path = run_path / "metrics.json"
    try:
        data = read_json(path, "metrics")
        validate_json(data, load_schema("bankllm", "metrics.schema.json"), str(path))
    except BankLLMError as exc:
        pytest.fail(str(exc), pytrace=False)
    return data


@pytest.fixture(scope="session")
def split_ids(run_path: Path) -> dict[str, list[str]] | None:
    """The ids of the run's split.json (train, val, train_eval) without loading the run; None
    for a run directory without one (a metrics.json alone)."""
    from bankllm.checkpoints import SPLIT_FILE, read_split

    if not (run_path / SPLIT_FILE).exists():
        return None
    try:
        return read_split(run_path)[1]
    except BankLLMError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def run_config(bankllm_run: Any) -> Any:
    """The run's resolved TrainConfig."""
    return bankllm_run.config


@pytest.fixture(scope="session")
def tokenizer(bankllm_run: Any) -> Any:
    return bankllm_run.tokenizer


@pytest.fixture(scope="session")
def split(bankllm_run: Any) -> Any:
    """The exact train/val split the run trained on (``.train``, ``.val``, ``.train_eval``)."""
    return bankllm_run.split


def _encoded(bankllm_run: Any, conversations: Any) -> Any:
    """``conversations`` encoded as the trainer encodes them (the run's tokenizer,
    ``block_size`` and ``loss_on``), as :class:`bankllm.data.EncodedCorpus`."""
    from bankllm.data import encode_corpus

    cfg = bankllm_run.config
    return encode_corpus(conversations, bankllm_run.tokenizer, cfg.block_size, cfg.loss_on)


@pytest.fixture(scope="session")
def encoded_split(bankllm_run: Any) -> Any:
    """``(train, val)``: the run's train and val splits encoded as the trainer encodes them."""
    return tuple(_encoded(bankllm_run, part)
                 for part in (bankllm_run.split.train, bankllm_run.split.val))


@pytest.fixture(scope="session")
def encoded_train_eval(bankllm_run: Any) -> Any:
    """The run's ``train_eval`` conversations encoded as the trainer encodes them."""
    return _encoded(bankllm_run, bankllm_run.split.train_eval)


@pytest.fixture(scope="session")
def model(run_path: Path, bankllm_run: Any) -> Any:
    """The run's best model in eval mode (loaded lazily, once per worker)."""
    from bankllm.checkpoints import load_model

    try:
        return load_model(run_path, "best", config=bankllm_run.config,
                          tokenizer=bankllm_run.tokenizer)
    except BankLLMError as exc:
        pytest.fail(f"cannot load the model: {exc}", pytrace=False)


@pytest.fixture(scope="session")
def untrained_model(bankllm_run: Any) -> Any:
    """The model the run started from: same config, initialised under the run's seed (as the
    trainer does), in eval mode. The global RNG state is left untouched."""
    import torch

    from bankllm.checkpoints import gpt_config
    from bankllm.model import GPT

    run = bankllm_run
    with torch.random.fork_rng():
        torch.manual_seed(run.config.seed)
        return GPT(gpt_config(run.config, len(run.tokenizer))).eval()


@pytest.fixture(scope="session")
def probes(pytestconfig: pytest.Config) -> Any:
    """The probe sets of ``--probes`` (validated at session start), or None when the folder
    does not exist: the probe checks then SKIP, naming it."""
    from bankllm.probes import load_probes

    path = probes_dir(pytestconfig)
    return load_probes(path) if path.is_dir() else None


MIN_PROBE_FIT = 0.5  # a probe set of which less than half fits the run SKIPs its check


@pytest.fixture(scope="session")
def fitted_probes(probes: Any, split: Any) -> Any:
    """``(probes that fit the run, {kind: left out})``, or None without probes: a probe whose
    intent the train split lacks (when it has intent labels) or a DIR variant whose entity it
    never names is left out (``bankllm.probes.fit_probes``)."""
    from bankllm.probes import entities_named_in, fit_probes

    if probes is None:
        return None
    intents = {str(i) for c in split.train
               for i in (c.get("intent"), *(m.get("intent") for m in c["messages"])) if i}
    if not intents:  # no labels: only the entities can be checked
        intents = {r["intent"] for kind in ("inv", "dir", "mft") for r in getattr(probes, kind)}
    entities = entities_named_in(probes, [m["content"] for c in split.train
                                          for m in c["messages"]])
    return fit_probes(probes, intents, entities)


def probes_that_fit(config: pytest.Config, name: str, probes: Any, fitted: Any,
                    kinds: Sequence[str], used: dict[str, Any]) -> tuple[Any, CheckResult | None,
                                                                         str | None]:
    """``(probes to score, a SKIP result or None, a note on what was left out or None)`` for
    a probe check asking ``kinds``."""
    if probes is None:
        return None, no_probes_result(config, name, used), None
    kept, left_out = fitted
    total = sum(len(getattr(probes, k)) for k in kinds)
    fit = sum(len(getattr(kept, k)) for k in kinds)
    out = sum(left_out[k] for k in kinds)
    if total and fit < MIN_PROBE_FIT * total:
        return None, CheckResult(name, "SKIP", f"only {fit} of {total} {'/'.join(kinds).upper()} "
                                 f"probes in {probes_dir(config)} fit this run (their intents or "
                                 "entities are not in its training split): write probes for its "
                                 "own intents and entities (docs/probes.md) and pass --probes DIR",
                                 {"probes_left_out": out}, used), None
    note = (f"{out} of {total} probes left out: their intent or entity is not in the training "
            "split, so a miss would say nothing about the model") if out else None
    return kept, None, note


@pytest.fixture(scope="session")
def baseline_outcomes(pytestconfig: pytest.Config) -> dict[str, Any] | None:
    """``{check: outcomes}`` that the ``--baseline`` file holds (``check_outcomes``, copied by
    ``bankllm gate --update`` from a diagnostics report of the baseline's run), for the paired
    change against the baseline (diagnostics.paired); None when the file is missing, unreadable
    (the regression check says so) or older than that key."""
    from diagnostics.gate import read_check_outcomes

    return read_check_outcomes(_path(pytestconfig, pytestconfig.option.bankllm_baseline))


def no_probes_result(config: pytest.Config, name: str, used: dict[str, Any]) -> CheckResult:
    """The SKIP of a probe check whose ``--probes`` folder does not exist."""
    where = probes_dir(config)
    return CheckResult(name, "SKIP", f"no probe sets: {where} does not exist (make them with "
                       f"`bankllm data synth --probes-dir {where}`, or pass --probes DIR)",
                       {}, used)


_ANSWERS: dict[tuple[Path, str], str] = {}  # (run, prompt) -> greedy answer, per worker
MAX_NEW_TOKENS = 64
ANSWER_BATCH = 128


@pytest.fixture(scope="session")
def probe_answers(run_path: Path, bankllm_run: Any,
                  model: Any) -> Callable[[Sequence[str]], dict[str, str]]:
    """``probe_answers(prompts)``: the best model's greedy answer to each prompt (batched, in
    the run's precision); prompts answered before on this worker are reused."""
    from bankllm.generation import answers
    from bankllm.precision import run_precision
    from diagnostics.analyses._probes import collect_responses

    precision = run_precision(bankllm_run.metrics, next(model.parameters()).device)

    def _answers(prompts: Sequence[str]) -> dict[str, str]:
        todo = [p for p in dict.fromkeys(prompts) if (run_path, p) not in _ANSWERS]
        if todo:
            got = collect_responses(todo, lambda ps: answers(
                model, bankllm_run.tokenizer, ps, max_new_tokens=MAX_NEW_TOKENS,
                precision=precision, batch_size=ANSWER_BATCH))
            _ANSWERS.update({(run_path, p): a for p, a in got.items()})
        return {p: _ANSWERS[run_path, p] for p in prompts}

    return _answers


@pytest.fixture
def diagnose(request: pytest.FixtureRequest) -> Callable[[CheckResult], CheckResult]:
    """``diagnose(result)``: record ``result`` for the report and assert on its status."""
    strict = is_strict(request.config)

    def _diagnose(result: CheckResult) -> CheckResult:
        request.node.user_properties.append((USER_PROPERTY, result.to_json()))
        if result.status == "FAIL":
            pytest.fail(f"{result.name}: {result.reason}", pytrace=False)
        if result.status == "SKIP":
            pytest.skip(f"{result.name}: {result.reason}")
        if result.status == "WARN" and strict:
            pytest.fail(f"{result.name} (WARN, --strict): {result.reason}", pytrace=False)
        return result

    return _diagnose


# --------------------------------------------------------------------------- controller


def _check_name(nodeid: str) -> str:
    name = nodeid.split("::")[-1].split("[")[0]
    return name.removeprefix("test_")


def _snapshot(folder: Path) -> dict[Path, tuple[int, int]]:
    """``{file: (inode, mtime_ns)}`` of the plain files in ``folder`` ({} if it is missing)."""
    try:
        entries = list(folder.iterdir())
    except OSError:
        return {}
    out: dict[Path, tuple[int, int]] = {}
    for path in entries:
        try:
            st = path.stat()
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode):
            out[path] = (st.st_ino, st.st_mtime_ns)
    return out


def _first_line(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple):  # skip: (path, lineno, "Skipped: reason")
        return str(longrepr[2]).removeprefix("Skipped: ")
    crash = getattr(longrepr, "reprcrash", None)
    text = crash.message if crash is not None else report.longreprtext
    lines = [ln for ln in str(text).splitlines() if ln.strip()]
    return lines[0].removeprefix("Failed: ") if lines else "no message"


def _combine_members(results: dict[str, CheckResult]) -> list[CheckResult]:
    """One pooled result per check from the per-member results of a seed group (the member is
    the test's parameter id, ``test_x[seed-0]``)."""
    from diagnostics.seeds import combine_seeds

    by_check: dict[str, list[tuple[str, CheckResult]]] = {}
    for nodeid, result in sorted(results.items()):
        member = nodeid.split("[", 1)[1].rstrip("]") if "[" in nodeid else "run"
        by_check.setdefault(result.name, []).append((member, result))
    return [combine_seeds([r for _, r in pairs], [m for m, _ in pairs])
            for pairs in by_check.values()]


class ReportCollector:
    """Lives on the controller only: gathers every worker's CheckResults from the test reports,
    then writes (session finish) and prints (terminal summary) the report."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.results: dict[str, CheckResult] = {}
        self.report: dict[str, Any] | None = None
        self.written: list[Path] = []
        self.error: str | None = None
        self.before = _snapshot(report_dir(config))

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        recorded = [v for k, v in report.user_properties if k == USER_PROPERTY]
        if recorded:
            self.results[report.nodeid] = CheckResult.from_json(str(recorded[-1]))
        elif report.nodeid not in self.results and (
            (report.when == "setup" and not report.passed)
            or (report.when == "call" and report.failed)
        ):  # the test died before it could call diagnose(): still one verdict line
            status = "SKIP" if report.skipped else "FAIL"
            why = _first_line(report)
            reason = why if report.skipped else f"test error: {why}"
            self.results[report.nodeid] = CheckResult(_check_name(report.nodeid), status, reason)

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if not self.results:
            return
        from diagnostics import report as rep

        members = group_members(self.config)
        results = list(self.results.values())
        summary = rep.run_summary(members[0] if members else run_dir(self.config))
        if members:
            results = _combine_members(self.results)
            summary["group"] = {"path": str(run_dir(self.config).resolve()),
                                "members": [m.name for m in members]}
        self.report = rep.build_report(
            results, summary,
            self.config.stash[_THRESHOLDS].to_dict(), is_strict(self.config))
        try:
            self.written = rep.write_report(self.report, report_dir(self.config))
        except (OSError, BankLLMError) as exc:
            self.error = f"could not write the report to {report_dir(self.config)}: {exc}"
        # files the checks wrote there themselves (e.g. the ablation's scaling_curve.png)
        after = _snapshot(report_dir(self.config))
        self.written += sorted(p for p, stamp in after.items()
                               if self.before.get(p) != stamp and p not in self.written)

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.report is None:
            return
        from diagnostics import report as rep

        width = getattr(terminalreporter._tw, "fullwidth", 100)
        terminalreporter.write(rep.render_text(self.report, width, terminalreporter.hasmarkup))
        if self.written:
            names = ", ".join(p.name for p in self.written)
            terminalreporter.write_line(f"report: {names} in {self.written[0].parent}")
        if self.error:
            terminalreporter.write_line(self.error, red=True)
