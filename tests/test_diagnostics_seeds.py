"""Diagnosing a seed group: verdicts pooled over training seeds, seed-sensitive checks marked."""

from __future__ import annotations

import json
import re

import pytest

from bankllm.fileio import atomic_write_json
from diagnostics.decision import decide, rate
from diagnostics.results import CheckResult
from diagnostics.seeds import combine_seeds
from diagnostics.testing import healthy_metrics, plant_val_rising
from tests.test_diagnostics_plugin import run_diagnostics


def _consistency(share: float, groups: int = 30) -> CheckResult:
    hits = round(share * groups * 6)
    est = rate([6] * (hits // 6) + [hits % 6] + [0] * (groups - hits // 6 - 1), [6] * groups,
               "probe groups")
    verdict = decide(est, pass_line=0.90, fail_line=0.75, higher_is_better=True)
    return CheckResult("consistency", verdict.status, verdict.reason, est.values("consistency"),
                       {}, {"decisions": {"consistency": verdict.rule}})


def test_seeds_that_straddle_a_line_are_seed_sensitive_and_do_not_fail_pooled():
    results = [_consistency(v) for v in (0.84, 0.75, 0.67)]  # the chapter's seeds 0-2
    assert {r.status for r in results} >= {"WARN"}
    pooled = combine_seeds(results, ["seed-0", "seed-1", "seed-2"])
    assert pooled.values["seed_sensitive"] is (len({r.status for r in results}) > 1)
    low, high = pooled.values["consistency_ci95_low"], pooled.values["consistency_ci95_high"]
    assert low < 0.75 < high  # the seed spread makes the pooled evidence inconclusive
    assert pooled.status == "WARN" and "over 3 seeds" in pooled.reason
    assert pooled.values["consistency_seed_sd"] > 0.05
    assert set(pooled.values["seeds"]) == {"seed-0", "seed-1", "seed-2"}


def test_seeds_that_agree_far_from_the_lines_pass_and_far_below_fail():
    good = combine_seeds([_consistency(v, 200) for v in (0.98, 0.985, 0.99)], ["a", "b", "c"])
    assert good.status == "PASS" and good.values["seed_sensitive"] is False
    bad = combine_seeds([_consistency(v, 200) for v in (0.30, 0.31, 0.29)], ["a", "b", "c"])
    assert bad.status == "FAIL"


def test_a_pooled_share_stays_within_0_and_1():
    # three seeds near 100% that disagree: the Student t interval over 3 seeds is wide, but a
    # share above 100% is no value the model could have
    results = [_consistency(v, 40) for v in (0.90, 0.97, 0.96)]
    pooled = combine_seeds(results, ["a", "b", "c"])
    low, high = pooled.values["consistency_ci95_low"], pooled.values["consistency_ci95_high"]
    assert high == 1.0 and 0.0 < low < 0.90
    for r in results:  # the same rules without their range: the interval reaches past 100%
        del r.details["decisions"]["consistency"]["bounds"]
    unbounded = combine_seeds(results, ["a", "b", "c"])
    assert unbounded.values["consistency_ci95_high"] > 1.0
    assert unbounded.values["consistency_ci95_low"] == pytest.approx(low)


def test_a_pooled_log10_ratio_reads_as_a_ratio_not_a_percentage():
    from diagnostics.analyses.training_health import analyse_training_health
    from diagnostics.testing import with_update_ratios
    from diagnostics.thresholds import Thresholds

    th = Thresholds().for_check("training_health")
    results = [analyse_training_health(with_update_ratios(healthy_metrics(seed=s), ratio=1e-3),
                                       th) for s in range(3)]
    pooled = combine_seeds(results, ["s0", "s1", "s2"])
    assert pooled.status == "PASS", pooled.reason
    assert "embeddings_log10_median_high over 3 seeds: 0.001 (95% CI 0.00092 to 0.0011" \
        in pooled.reason, pooled.reason
    assert re.search(r"mlp_log10_median_high over 3 seeds: [0-9.]+ \(95% CI [0-9.]+ to [0-9.]+ "
                     r"over 3 training seeds\), all of it on the passing side of 0\.01;",
                     pooled.reason), pooled.reason


def test_a_check_without_estimates_takes_the_worst_member():
    results = [CheckResult("overfitting", s, f"member {s}") for s in ("PASS", "FAIL", "PASS")]
    pooled = combine_seeds(results, ["s0", "s1", "s2"])
    assert pooled.status == "FAIL" and pooled.values["seed_sensitive"] is True
    assert "seed-sensitive" in pooled.reason


@pytest.mark.slow
def test_pytest_diagnostics_on_a_group_reports_one_pooled_result_per_check(tmp_path):
    group = tmp_path / "grp"
    atomic_write_json(group / "seed-0" / "metrics.json", healthy_metrics(seed=0))
    atomic_write_json(group / "seed-1" / "metrics.json", plant_val_rising(healthy_metrics(seed=1)))
    atomic_write_json(group / "group.json", {
        "schema_version": 1, "name": "grp", "created": "2026-12-02T00:00:00Z", "seeds": [0, 1],
        "split_seed": 0, "split_seed_from": "the first seed given",
        "members": ["seed-0", "seed-1"]})
    reports = tmp_path / "reports"
    proc = run_diagnostics("--run", str(group), "--report-dir", str(reports), "-k",
                           "overfitting or initial_loss")
    assert proc.returncode == 1, proc.stdout + proc.stderr  # seed-1 overfits
    report = json.loads((reports / "diagnostics.json").read_text())
    checks = {c["name"]: c for c in report["checks"]}
    assert set(checks) == {"initial_loss", "overfitting"}
    assert checks["overfitting"]["status"] == "FAIL"
    assert checks["overfitting"]["values"]["seed_sensitive"] is True
    assert checks["initial_loss"]["values"]["seeds"]["seed-1"]["status"] == "PASS"
    assert report["run"]["group"]["members"] == ["seed-0", "seed-1"]
