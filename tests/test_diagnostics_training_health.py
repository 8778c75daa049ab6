"""The training_health check: a group rewritten every step FAILs, ~1e-3 per step PASSes,
just outside the band on a few logged steps WARNs, a run without ratios SKIPs."""

from __future__ import annotations

import pytest

from diagnostics.analyses.training_health import JUDGED, NAME, analyse_training_health
from diagnostics.report import training_health_png
from diagnostics.testing import healthy_metrics, plant_update_ratio, with_update_ratios
from diagnostics.thresholds import Thresholds

TH = Thresholds().for_check(NAME)
PNG = b"\x89PNG\r\n\x1a\n"


def test_attention_rewritten_every_step_fails_and_says_lower_lr():
    metrics = plant_update_ratio(with_update_ratios(healthy_metrics()), "attention", 0.3)
    result = analyse_training_health(metrics, TH)
    assert result.status == "FAIL"
    assert "attention" in result.reason and "lower lr" in result.reason
    assert "mlp" not in result.reason
    assert result.values["attention_median"] == pytest.approx(0.3, rel=0.1)
    assert result.values["attention_median_ci95_low"] > TH["ratio_high"] * TH["fail_factor"]
    series = result.details["series"]  # what the chart draws: (step, ratio) per group
    assert series["attention"][0][1] > 0.1 > series["mlp"][0][1]
    assert [p[0] for p in series["mlp"]] == list(range(10, 241, 10))


def test_a_healthy_run_passes_whatever_its_biases_and_norms_do():
    metrics = with_update_ratios(healthy_metrics(), ratio=1e-3)
    result = analyse_training_health(metrics, TH)
    assert result.status == "PASS", result.reason
    assert result.values["biases_median"] > TH["ratio_high"]  # shown, not judged
    assert set(result.details["decisions"]) == {f"{g}_log10_median_{side}"
                                                for g in JUDGED for side in ("high", "low")}


def test_just_outside_the_band_on_few_logged_steps_warns_not_fails():
    few = with_update_ratios(healthy_metrics(epochs=1), ratio=1.5e-2, every=10)
    assert sum("update_ratio" in s for s in few["steps"]) == 3
    assert analyse_training_health(few, TH).status == "WARN"
    # far outside but on fewer logged steps than min_logged_steps: still no FAIL on its own
    wild = plant_update_ratio(few, "mlp", 0.5)
    result = analyse_training_health(wild, TH)
    assert result.status == "WARN" and "fewer than the 5" in result.reason


def test_weights_that_barely_move_warn_then_fail_and_say_raise_lr():
    slow = analyse_training_health(with_update_ratios(healthy_metrics(), ratio=5e-5), TH)
    frozen = analyse_training_health(with_update_ratios(healthy_metrics(), ratio=1e-6), TH)
    assert slow.status == "WARN" and frozen.status == "FAIL"
    assert "raise lr" in frozen.reason


def test_weights_the_optimizer_never_updates_fail_and_are_not_dropped():
    """A ratio of exactly 0 (the MLP left out of the optimizer's parameter groups) is a
    measurement: the group FAILs and the reason says it never moved, not "raise lr"."""
    metrics = plant_update_ratio(with_update_ratios(healthy_metrics()), "mlp", 0.0)
    result = analyse_training_health(metrics, TH)
    assert result.status == "FAIL", result.reason
    assert "mlp did not move in any of its 24 logged steps" in result.reason
    assert "check that the optimizer updates every weight" in result.reason
    assert "raise lr" not in result.reason and "attention" not in result.reason
    assert "mlp" in result.values["groups"]
    assert training_health_png(result.to_dict()).startswith(PNG)  # a log axis with ratios of 0


def test_first_and_last_thirds_are_reported():
    metrics = with_update_ratios(healthy_metrics(), ratio=1e-3, spread=0.0)
    for s in metrics["steps"]:
        if "update_ratio" in s and s["step"] > 160:
            s["update_ratio"]["mlp"] = 1e-4
    values = analyse_training_health(metrics, TH).values
    assert values["mlp_first_third"] == pytest.approx(1e-3)
    assert values["mlp_last_third"] == pytest.approx(1e-4)


def test_a_run_without_update_ratios_skips_naming_the_key():
    result = analyse_training_health(healthy_metrics(), TH)
    assert result.status == "SKIP" and "update_ratio_every" in result.reason


def test_the_chart_draws_the_logged_ratios_and_none_without():
    result = analyse_training_health(with_update_ratios(healthy_metrics()), TH).to_dict()
    assert training_health_png(result).startswith(PNG)
    skipped = analyse_training_health(healthy_metrics(), TH).to_dict()
    assert training_health_png(skipped) is None
