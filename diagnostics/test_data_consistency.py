"""``data_consistency`` on the train split the run trained on (docs/diagnostics.md)."""

from __future__ import annotations

from diagnostics.analyses.data_consistency import NAME, analyse_data_consistency


def test_data_consistency(split, thresholds, diagnose):
    """Answers naming another entity, and conflicting intents on near-identical turns."""
    diagnose(analyse_data_consistency(split.train, thresholds.for_check(NAME)))
