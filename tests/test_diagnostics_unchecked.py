"""Saying what was not checked: a SKIPped check's ``UNCHECKED_WHEN_SKIPPED`` sentence reaches
the report's ``unchecked`` list, its JSON schema and the terminal summary."""

from __future__ import annotations

import importlib

import pytest

from diagnostics import report as rep
from diagnostics.results import CheckResult
from diagnostics.thresholds import Thresholds


@pytest.mark.parametrize("name", ["baselines", "consistency", "faithfulness", "regression",
                                  "ablation"])
def test_checks_that_skip_for_lack_of_inputs_say_what_goes_unchecked(name):
    said = importlib.import_module(f"diagnostics.analyses.{name}").UNCHECKED_WHEN_SKIPPED
    assert isinstance(said, str) and len(said) > 40 and "\n" not in said


def _results():
    return [
        CheckResult("regression", "SKIP", "no baseline at reports/baseline.json"),
        CheckResult("consistency", "SKIP", "no probe sets"),
        CheckResult("consistency", "SKIP", "no probe sets (second worker)"),
        CheckResult("faithfulness", "PASS", "fine"),
        CheckResult("loss_phases", "SKIP", "no completed epoch"),  # declares nothing
    ]


def test_unchecked_lists_skipped_checks_once_in_report_order():
    got = rep.unchecked_by_skips(_results())
    assert [u["check"] for u in got] == ["consistency", "regression"]
    from diagnostics.analyses import regression

    assert got[1]["what"] == regression.UNCHECKED_WHEN_SKIPPED
    assert rep.unchecked_by_skips(_results(), declared={"loss_phases": "x"}) == [
        {"check": "loss_phases", "what": "x"}]
    assert rep.unchecked_by_skips([CheckResult("regression", "PASS", "ok")]) == []


def test_report_carries_and_prints_what_was_not_checked(tmp_path):
    report = rep.build_report(_results(), {"path": str(tmp_path)}, Thresholds().to_dict())
    rep.validate_report(report, "test")
    assert [u["check"] for u in report["unchecked"]] == ["consistency", "regression"]
    text = " ".join(rep.render_text(report, width=200, color=False).split())
    after_tally = text[text.index("→ PASS"):]  # the tally line ends in the overall
    assert "not checked (skipped):" in after_tally
    assert "regression: whether val loss got worse than a known-good run" in after_tally
    clean = rep.build_report([CheckResult("faithfulness", "PASS", "fine")],
                             {"path": str(tmp_path)}, Thresholds().to_dict())
    assert clean["unchecked"] == []
    assert "not checked" not in rep.render_text(clean, width=200, color=False)
    # reports written before the key existed stay valid
    rep.validate_report({k: v for k, v in clean.items() if k != "unchecked"}, "old")
