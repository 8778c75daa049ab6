"""Data ablation (bankllm.ablation) and its diagnostic (diagnostics.analyses.ablation)."""

from __future__ import annotations

import dataclasses
import json
import math
import random
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from bankllm.ablation import (
    KEY_FILE,
    ablation_dir,
    ablation_key,
    cached_ablations,
    cli_ablate,
    ensure_ablation,
    stratified_subset,
)
from bankllm.checkpoints import load_run
from bankllm.config import TrainConfig
from bankllm.errors import BankLLMError
from diagnostics.analyses.ablation import analyse_ablation, band, fit_scaling
from diagnostics.decision import Estimate, ratio_change
from diagnostics.registry import DEFAULTS
from diagnostics.report import plot_scaling_curve

TH = DEFAULTS["ablation"]


def _labelled(sizes: dict[str, int]) -> list[dict]:
    convs = []
    for intent, n in sizes.items():
        convs += [{"id": f"{intent}-{i}", "intent": intent, "messages": []} for i in range(n)]
    random.Random(0).shuffle(convs)  # input order not grouped by intent
    return convs


# --------------------------------------------------------------------------- subset


@pytest.mark.parametrize("fraction", [0.5, 0.25, 0.33, 0.9])
def test_stratified_subset_keeps_each_intent_share_within_one(fraction):
    sizes = {"balance": 101, "transfer": 57, "card_lost": 13, "loan": 7, "rare": 1, "fees": 2}
    convs = _labelled(sizes)
    subset, stratified = stratified_subset(convs, fraction, seed=3)
    assert stratified
    assert len(subset) == round(fraction * len(convs))
    got = Counter(c["intent"] for c in subset)
    total = len(subset)
    for intent, n in sizes.items():  # share of the subset's size, to within one conversation
        assert abs(got[intent] - total * n / len(convs)) < 1, intent
    order = {c["id"]: i for i, c in enumerate(convs)}
    assert [order[c["id"]] for c in subset] == sorted(order[c["id"]] for c in subset)
    assert len({c["id"] for c in subset}) == len(subset)


def test_subsets_are_seeded_and_nested():
    convs = _labelled({"a": 40, "b": 25, "c": 9})
    quarter = {c["id"] for c in stratified_subset(convs, 0.25, seed=1)[0]}
    half = {c["id"] for c in stratified_subset(convs, 0.5, seed=1)[0]}
    assert quarter < half
    assert half == {c["id"] for c in stratified_subset(convs, 0.5, seed=1)[0]}
    assert half != {c["id"] for c in stratified_subset(convs, 0.5, seed=2)[0]}


def test_unlabelled_corpus_gets_a_random_subset():
    convs = [{"id": str(i), "messages": []} for i in range(50)]
    subset, stratified = stratified_subset(convs, 0.5, seed=0)
    assert not stratified and len(subset) == 25
    assert [c["id"] for c in subset] != [str(i) for i in range(25)]


@pytest.mark.parametrize("fraction", [0.0, 1.0, 1.5, -0.1])
def test_fraction_outside_open_unit_interval_is_an_error(fraction):
    with pytest.raises(BankLLMError, match="fraction must be in"):
        stratified_subset(_labelled({"a": 4}), fraction)


# --------------------------------------------------------------------------- cache key


def test_key_changes_with_config_data_and_fraction():
    cfg = TrainConfig()
    base = dict(config=cfg, data_sha256="ab" * 32, train_ids=["a", "b"], val_ids=["v"],
                fraction=0.5, tokenizer_vocab=["<pad>", "x"])
    key = ablation_key(**base)
    assert key == ablation_key(**base)  # deterministic
    assert key == ablation_key(**{**base, "config": dataclasses.replace(cfg, data="elsewhere")})
    changed = [
        {"config": dataclasses.replace(cfg, lr=1e-3)},
        {"config": dataclasses.replace(cfg, seed=1)},
        {"data_sha256": "cd" * 32},
        {"train_ids": ["a", "c"]},
        {"val_ids": ["w"]},
        {"tokenizer_vocab": ["<pad>", "y"]},
        {"fraction": 0.25},
    ]
    keys = {ablation_key(**{**base, **change}) for change in changed}
    assert key not in keys and len(keys) == len(changed)


# --------------------------------------------------------------------------- fit


@pytest.mark.parametrize("alpha,noise", [(0.3, 0.0), (0.7, 0.0), (0.5, 0.003), (1.2, 0.002)])
def test_fit_recovers_alpha_within_ten_percent(alpha, noise):
    rng = np.random.default_rng(0)
    d = np.array([100, 200, 400, 800, 1600, 3200], dtype=float)
    loss = 0.4 + 30.0 * d ** -alpha
    loss = loss * (1 + noise * rng.standard_normal(len(d)))
    fit = fit_scaling(d, loss)
    assert fit is not None and fit.n == 6
    assert abs(fit.alpha - alpha) / alpha < 0.10
    assert fit.rmse < 0.05 * loss.min()
    np.testing.assert_allclose(fit.predict(d), loss, rtol=0.02)


def test_fit_needs_three_sizes_and_three_points_fit_exactly():
    assert fit_scaling([100, 200], [1.0, 0.9]) is None
    assert fit_scaling([100, 100, 200], [1.0, 1.0, 0.9]) is None
    d = np.array([200.0, 400.0, 800.0])
    fit = fit_scaling(d, 0.2 + 5.0 * d ** -0.5)
    assert fit is not None and fit.rmse < 1e-6 and abs(fit.alpha - 0.5) < 0.05
    assert not fit.at_bound
    concave = fit_scaling(d, [1.0, 0.99, 0.9])  # drops faster with more data: no power law
    assert concave is not None and concave.at_bound and concave.rmse > 1e-3


# --------------------------------------------------------------------------- verdicts


@pytest.mark.parametrize("rel,status", [
    (0.0, "PASS"), (0.10, "PASS"), (0.25, "PASS"), (-0.01, "WARN"), (-0.5, "WARN"),
    (0.26, "WARN"), (0.50, "WARN"), (0.51, "FAIL"), (2.0, "FAIL"),
])
def test_band(rel, status):
    assert band(rel, TH["rel_pass"], TH["rel_warn"]) == status


def _paired(rel: float, spread: float, n: int = 90) -> Estimate:
    """The paired change of ``n`` conversations whose own changes scatter by ``spread``."""
    rng = np.random.default_rng(1)
    base = rng.uniform(20, 60, n)
    new = base * (1 + rel + rng.normal(0, spread, n))
    return ratio_change(new.tolist(), base.tolist(), "val conversations")


@pytest.mark.parametrize("l50,status,words", [
    (0.11, "PASS", "scaling as expected"), (0.095, "WARN", "did not hurt"),
    (0.14, "WARN", "data-hungry"), (0.2, "FAIL", "data-starved"),
])
def test_analyse_ablation_verdicts(l50, status, words):
    rel = (l50 - 0.1) / 0.1
    r = analyse_ablation(0.1, 800, [{"fraction": 0.5, "n_train": 400, "best_val_loss": l50}], TH,
                         paired=_paired(rel, 0.05))
    assert r.status == status and words in r.reason, r.reason
    assert math.isclose(r.values["rel_increase"], (l50 - 0.1) / 0.1)
    assert r.values["chapter_prediction"] == 0.10 and "alpha" not in r.values
    assert "needs 3" in " ".join(r.details["notes"])
    json.dumps(r.to_dict())


def test_a_point_value_alone_never_fails():
    r = analyse_ablation(0.1, 800, [{"fraction": 0.5, "n_train": 400, "best_val_loss": 0.2}], TH)
    assert r.status == "WARN" and "never FAILs" in r.reason


def test_a_noisy_pairing_near_the_fail_line_warns_and_a_large_clear_one_fails():
    pts = [{"fraction": 0.5, "n_train": 400, "best_val_loss": 0.155}]
    noisy = analyse_ablation(0.1, 800, pts, TH, paired=_paired(0.55, 0.6, n=20))
    assert noisy.status == "WARN" and "inconclusive" in noisy.reason, noisy.reason
    clear = analyse_ablation(0.1, 800, pts, TH, paired=_paired(0.55, 0.05, n=200))
    assert clear.status == "FAIL" and clear.values["paired_rel_increase_ci95_low"] > 0.5


def test_analyse_ablation_with_three_sizes_fits_alpha_and_plots(tmp_path):
    d = {0.25: 200, 0.5: 400, 1.0: 800}
    loss = {f: 0.05 + 2.0 * n ** -0.6 for f, n in d.items()}
    pts = [{"fraction": f, "n_train": d[f], "best_val_loss": loss[f]} for f in (0.25, 0.5)]
    r = analyse_ablation(loss[1.0], 800, pts, TH, em_val={1.0: 0.8, 0.5: 0.7})
    assert abs(r.values["alpha"] - 0.6) < 0.06 and r.values["fit_points"] == 3
    assert r.values["em_val_100"] == 0.8 and r.values["em_val_50"] == 0.7
    assert len(r.details["tables"][0]["rows"]) == 3
    png = plot_scaling_curve(r.to_dict(), tmp_path / "reports" / "scaling_curve.png")
    assert png is not None and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(png.parent.glob(".*.tmp"))


def test_still_improving_parent_adds_the_training_budget_note():
    pts = [{"fraction": 0.5, "n_train": 400, "best_val_loss": 0.15}]
    note = "neither had converged"
    assert note not in " ".join(analyse_ablation(0.1, 800, pts, TH).details["notes"])
    r = analyse_ablation(0.1, 800, pts, TH, parent_still_improving=True)
    assert note in " ".join(r.details["notes"])


def test_less_data_not_hurting_an_unconverged_run_is_not_called_saturation():
    pts = [{"fraction": 0.5, "n_train": 400, "best_val_loss": 0.095}]
    paired = _paired(-0.05, 0.05)
    converged = analyse_ablation(0.1, 800, pts, TH, paired=paired)
    assert converged.status == "WARN" and "saturated" in converged.reason
    still = analyse_ablation(0.1, 800, pts, TH, paired=paired, parent_still_improving=True)
    assert still.status == "WARN" and "saturated" not in still.reason
    assert "train longer" in still.reason, still.reason


def test_an_interval_reaching_below_zero_warns_as_inconclusive_not_as_expected_scaling():
    """The expected band is 0 to rel_pass: a small val set whose paired change spans 0 has not
    shown that less data hurt at all, whatever side of 0 its point value lies on."""
    pts = [{"fraction": 0.5, "n_train": 400, "best_val_loss": 0.09}]
    for rel in (-0.10, 0.05):
        small = analyse_ablation(0.1, 800, pts, TH, paired=_paired(rel, 0.3, n=4))
        assert small.values["paired_rel_increase_ci95_low"] < 0 < small.values[
            "paired_rel_increase_ci95_high"]
        assert small.status == "WARN", small.reason
        assert "inconclusive whether less data hurt" in small.reason, small.reason
        assert "saturated" not in small.reason and "as expected" not in small.reason
    healthy = analyse_ablation(0.1, 800, pts, TH, paired=_paired(0.10, 0.05))
    assert healthy.status == "PASS", healthy.reason
    # both edges are recorded, so a seed group pools each
    assert set(healthy.details["decisions"]) == {"paired_rel_increase",
                                                 "paired_rel_increase_above_zero"}


def test_a_seed_group_whose_pooled_change_is_below_zero_warns():
    from diagnostics.seeds import combine_seeds

    pts = [{"fraction": 0.5, "n_train": 400, "best_val_loss": 0.095}]
    members = [analyse_ablation(0.1, 800, pts, TH, paired=_paired(-0.05, 0.05, n=90 + k))
               for k in range(3)]
    assert all(m.status == "WARN" for m in members)
    pooled = combine_seeds(members, ["seed-0", "seed-1", "seed-2"])
    assert pooled.status == "WARN", pooled.reason


def test_analyse_ablation_skips_or_fails_without_a_usable_half():
    assert analyse_ablation(0.1, 800, [], TH).status == "SKIP"
    assert analyse_ablation(None, 800, [], TH).status == "SKIP"
    bad = [{"fraction": 0.5, "n_train": 400, "best_val_loss": None}]
    assert analyse_ablation(0.1, 800, bad, TH).status == "FAIL"


# --------------------------------------------------------------------------- end to end


@pytest.fixture
def tiny_run(tiny_config: TrainConfig, tmp_path: Path) -> Path:
    from bankllm.training import Trainer

    cfg = dataclasses.replace(tiny_config, n_layer=1, n_head=2, n_embd=16, epochs=1)
    run_dir = tmp_path / "runs" / "tiny"
    assert Trainer(cfg, run_dir, show_progress=False, log=lambda m: None).train() == 0
    return run_dir


def test_ablate_trains_once_then_reuses(tiny_run: Path):
    parent = load_run(tiny_run)
    first = ensure_ablation(parent, 0.5, show_progress=False, log=lambda m: None)
    assert not first.reused and first.exit_code == 0 and first.status == "completed"
    path = ablation_dir(tiny_run, 0.5)
    assert first.path == path.resolve() or first.path == path
    child = load_run(path)
    assert child.tokenizer.vocab == parent.tokenizer.vocab
    assert [c["id"] for c in child.split.val] == [c["id"] for c in parent.split.val]
    train_ids = {c["id"] for c in child.split.train}
    assert train_ids < {c["id"] for c in parent.split.train}
    assert len(train_ids) == round(0.5 * len(parent.split.train))
    assert {c["id"] for c in child.split.train_eval} <= train_ids
    assert child.metrics["n_train"] == len(train_ids)
    mtime = (path / "metrics.json").stat().st_mtime_ns

    second = ensure_ablation(tiny_run, 0.5, show_progress=False)
    assert second.reused and second.key == first.key
    assert second.best_val_loss == first.best_val_loss
    assert (path / "metrics.json").stat().st_mtime_ns == mtime
    assert [a.fraction for a in cached_ablations(tiny_run)] == [0.5]

    info = json.loads((path / KEY_FILE).read_text())
    (path / KEY_FILE).write_text(json.dumps({**info, "key": "stale"}))
    assert cached_ablations(tiny_run) == []
    third = ensure_ablation(tiny_run, 0.5, show_progress=False, log=lambda m: None)
    assert not third.reused and json.loads((path / KEY_FILE).read_text())["key"] == first.key


def test_cli_ablate_reuses_and_prints_a_table(tiny_run: Path, capsys):
    args = SimpleNamespace(run=str(tiny_run), fractions=[0.5], quiet=True)
    assert cli_ablate(args) == 0
    assert cli_ablate(args) == 0
    out = capsys.readouterr().out
    assert "trained in" in out and "reused (same key)" in out and "data ablation" in out


def test_ablate_refuses_an_unfinished_parent(tiny_run: Path):
    metrics = json.loads((tiny_run / "metrics.json").read_text())
    metrics["status"] = "interrupted"
    (tiny_run / "metrics.json").write_text(json.dumps(metrics))
    with pytest.raises(BankLLMError, match="not completed"):
        ensure_ablation(tiny_run, 0.5, show_progress=False)


def _set_status(run_dir: Path, status: str) -> None:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    metrics["status"] = status
    (run_dir / "metrics.json").write_text(json.dumps(metrics))


def test_diverged_ablation_is_final_and_interrupted_one_resumes(tiny_run: Path):
    first = ensure_ablation(tiny_run, 0.5, show_progress=False, log=lambda m: None)
    path = first.path
    _set_status(path, "diverged")
    again = ensure_ablation(tiny_run, 0.5, show_progress=False)
    assert again.reused and again.status == "diverged" and again.exit_code == 3
    _set_status(path, "interrupted")  # resumes from state.pt (here: nothing left to do)
    resumed = ensure_ablation(tiny_run, 0.5, show_progress=False, log=lambda m: None)
    assert not resumed.reused and resumed.status == "completed" and resumed.exit_code == 0
    assert resumed.best_val_loss == first.best_val_loss
    assert any(e["kind"] == "resumed" for e in resumed.metrics["events"])



def test_the_ablation_takes_as_many_optimizer_steps_as_its_parent(tiny_run: Path):
    from bankllm.ablation import plan_ablation

    parent = load_run(tiny_run)
    for fraction, epochs in ((0.5, 2), (0.25, 4)):
        assert plan_ablation(parent, fraction).config.epochs == epochs * parent.config.epochs


# --------------------------------------------------------------------------- beside training

TINY_CLI = ["--quiet", "--set", "n_layer=1", "--set", "n_head=2", "--set", "n_embd=16",
            "--set", "block_size=64", "--set", "epochs=1", "--set", "batch_size=8",
            "--set", "precision=fp32", "--set", "threads=1"]


def test_train_with_ablate_leaves_the_ablation_the_diagnostics_reuse(corpus_file, tmp_path,
                                                                      capsys):
    from bankllm.cli import main

    runs = tmp_path / "runs"
    base = ["train", "--data", str(corpus_file), "--runs-dir", str(runs), *TINY_CLI]
    assert main([*base, "--name", "with", "--ablate", "0.5"]) == 0
    out = capsys.readouterr().out
    assert "training beside the run" in out and "data ablation" in out  # the ablate table
    assert main([*base, "--name", "without"]) == 0
    capsys.readouterr()
    # the run itself is the run without --ablate, loss for loss
    steps = [json.loads((runs / n / "metrics.json").read_text())["steps"]
             for n in ("with", "without")]
    assert steps[0] and [s["loss"] for s in steps[0]] == [s["loss"] for s in steps[1]]
    # the ablation is complete and keyed to the finished run: ensure_ablation reuses it
    assert [a.fraction for a in cached_ablations(runs / "with")] == [0.5]
    assert ensure_ablation(runs / "with", 0.5, show_progress=False).reused


def test_train_refuses_a_bad_ablate_fraction_before_making_the_run(corpus_file, tmp_path,
                                                                   capsys):
    from bankllm.cli import main

    runs = tmp_path / "runs"
    code = main(["train", "--data", str(corpus_file), "--runs-dir", str(runs), "--name", "r",
                 *TINY_CLI, "--ablate", "1.0"])
    assert code == 2 and "fraction must be in (0, 1)" in capsys.readouterr().err
    assert not (runs / "r").exists()


def test_a_running_parent_is_ablated_only_when_asked(tiny_run: Path):
    _set_status(tiny_run, "running")
    with pytest.raises(BankLLMError, match="not completed"):
        ensure_ablation(tiny_run, 0.5, show_progress=False)
    half = ensure_ablation(tiny_run, 0.5, show_progress=False, log=lambda m: None,
                           parent_running=True)
    assert half.status == "completed"


def test_a_stopped_run_stops_its_side_by_side_ablation(tmp_path):
    import subprocess
    import sys

    from bankllm.ablation import SideBySide, finish_side_by_side

    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    side = SideBySide(sleeper, tmp_path / "ablate.log")
    assert finish_side_by_side(side, parent_code=130) != 0
    assert sleeper.poll() is not None  # stopped, not waited out for 60 s
