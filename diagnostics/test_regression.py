"""Val-loss regression: the run's best checkpoint against the committed baseline.

Same comparison as ``bankllm gate`` (diagnostics.gate): paired over the shared val
conversations, FAIL when conclusively above max(tolerance, the baseline's seed spread), WARN
when inconclusive; unpaired on best val loss for a baseline without per-conversation losses;
a seed group passes only if every member does. Options: ``--baseline FILE`` (default
reports/baseline.json), ``--tolerance REL`` (default 0.02). No baseline: SKIP, with the command
that makes one; a run that cannot be compared (data, val set or model differ): SKIP, naming why
(``bankllm gate`` exits 2 there).
"""

from __future__ import annotations

from pathlib import Path

from diagnostics.gate import gate_result


def test_regression(pytestconfig, run_path, diagnose):
    """FAIL if val loss rose conclusively beyond max(tolerance, seed spread)."""
    baseline = Path(pytestconfig.getoption("bankllm_baseline"))
    if not baseline.is_absolute():
        baseline = pytestconfig.invocation_params.dir / baseline
    diagnose(gate_result(run_path, baseline, pytestconfig.getoption("bankllm_tolerance")))
