"""Thresholds: design-doc defaults, the pyproject table, override files, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from bankllm.errors import BankLLMError
from diagnostics.registry import DEFAULTS
from diagnostics.thresholds import load_thresholds, valid_keys

REPO = Path(__file__).resolve().parents[1]


def test_builtin_defaults_are_the_design_docs():
    th = load_thresholds()
    assert th.for_check("initial_loss")["max_rel_dev"] == 0.25
    over = th.for_check("overfitting")
    assert (over["rel_gap_pass"], over["rel_gap_warn"], over["widen_slope"]) == (0.10, 0.25, 0.01)
    assert (over["min_delta"], over["patience"]) == (0.005, 2)
    phases = th.for_check("loss_phases")
    assert (phases["max_phases"], phases["spike_noise_k"], phases["spike_floor_nats"],
            phases["spike_window"], phases["clip_norm_factor"]) == (4, 6.0, 0.5, 20, 2.0)
    assert th.for_check("leakage") == {**DEFAULTS["early_stopping"], "near_ratio": 95,
                                       "max_exact": 0.05, "max_near": 0.05}


def test_repo_pyproject_table_is_valid_and_matches_defaults():
    th = load_thresholds(REPO / "pyproject.toml")
    assert th.values == DEFAULTS
    assert any("pyproject.toml" in s for s in th.sources)


def test_override_file_dotted_keys_and_tables(tmp_path):
    f = tmp_path / "th.toml"
    f.write_text("overfitting.rel_gap_pass = 0.2\n[early_stopping]\npatience = 3\n")
    th = load_thresholds(None, f)
    assert th.for_check("overfitting")["rel_gap_pass"] == 0.2
    assert th.for_check("loss_phases")["patience"] == 3
    assert th.sources[-1] == str(f)


def test_override_file_may_be_a_pyproject(tmp_path):
    f = tmp_path / "pyproject.toml"
    f.write_text("[tool.bankllm.diagnostics]\nleakage.near_ratio = 90\n")
    assert load_thresholds(None, f).for_check("leakage")["near_ratio"] == 90


@pytest.mark.parametrize("text, message", [
    ("overfitting.rel_gap_pas = 0.2\n", "unknown threshold 'overfitting.rel_gap_pas'"),
    ("overfiting.rel_gap_pass = 0.2\n", "unknown threshold section 'overfiting'"),
    ("bogus_key = 1\n", "unknown top-level key 'bogus_key' (thresholds are written "
     "section.key = number; sections: early_stopping, coverage, initial_loss,"),
])
def test_unknown_key_is_a_clear_error_listing_valid_keys(tmp_path, text, message):
    f = tmp_path / "th.toml"
    f.write_text(text)
    with pytest.raises(BankLLMError) as err:
        load_thresholds(None, f)
    msg = str(err.value)
    assert msg.startswith(str(f)) and message in msg and "\n" not in msg
    assert "valid keys: " in msg and all(k in msg for k in valid_keys())


def test_a_section_given_a_value_names_its_keys(tmp_path):
    f = tmp_path / "th.toml"
    f.write_text("leakage = 90\n")
    with pytest.raises(BankLLMError) as err:
        load_thresholds(None, f)
    assert str(err.value) == (f"{f}: 'leakage' is a threshold section, not a value: set its keys "
                              "as leakage.KEY = number; valid keys: leakage.near_ratio, "
                              "leakage.max_exact, leakage.max_near")


@pytest.mark.parametrize("text, message", [
    ("early_stopping.patience = 1.5\n", "must be an integer"),
    ("overfitting.rel_gap_pass = 'x'\n", "must be a number"),
    ("overfitting.rel_gap_pass = -1\n", ">= 0"),
    ("overfitting.rel_gap_pass = 0.5\n", "rel_gap_pass must be <= overfitting.rel_gap_warn"),
    ("this is not toml", "not valid TOML"),
])
def test_bad_values_are_errors(tmp_path, text, message):
    f = tmp_path / "th.toml"
    f.write_text(text)
    with pytest.raises(BankLLMError, match=message):
        load_thresholds(None, f)


def test_missing_override_file_is_an_error(tmp_path):
    with pytest.raises(BankLLMError, match="thresholds file not found"):
        load_thresholds(None, tmp_path / "nope.toml")


def test_a_thresholds_source_names_the_probe_folder_relative_to_itself(tmp_path):
    assert load_thresholds(None, None).probes is None
    project = tmp_path / "project"
    project.mkdir()
    (project / "pyproject.toml").write_text('[tool.bankllm.diagnostics]\nprobes = "our-probes"\n')
    assert load_thresholds(project / "pyproject.toml").probes == project / "our-probes"
    override = tmp_path / "th.toml"
    override.write_text('probes = "/abs/probes"\nleakage.near_ratio = 90\n')
    th = load_thresholds(project / "pyproject.toml", override)
    assert th.probes == Path("/abs/probes")  # the later source wins
    assert th.for_check("leakage")["near_ratio"] == 90
    override.write_text("probes = 3\n")
    with pytest.raises(BankLLMError, match="probes must be the path of a probe folder"):
        load_thresholds(None, override)
