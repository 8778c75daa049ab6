"""§8 Val-loss regression: the run's best val loss against the committed baseline.

Same comparison as ``bankllm gate`` (diagnostics.gate). Options: ``--baseline FILE`` (default
reports/baseline.json), ``--tolerance REL`` (default 0.02). No baseline: SKIP, with the command
that makes one; a run that cannot be compared (data, val set or model differ): SKIP, naming why
(``bankllm gate`` exits 2 there).
"""

from __future__ import annotations

from pathlib import Path

from diagnostics.gate import gate_result


def test_regression(pytestconfig, run_path, diagnose):
    """§8: FAIL if (L_new - L_base) / L_base > tolerance."""
    baseline = Path(pytestconfig.getoption("bankllm_baseline"))
    if not baseline.is_absolute():
        baseline = pytestconfig.invocation_params.dir / baseline
    diagnose(gate_result(run_path, baseline, pytestconfig.getoption("bankllm_tolerance")))
