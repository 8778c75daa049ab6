"""Initial loss: an untrained LM should predict near-uniformly, so ``L0 ≈ ln V``."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from diagnostics.results import CheckResult

NAME = "initial_loss"
ORDER = 10  # place in the report
# FAIL if |L0 - ln V| > max_rel_dev * ln V
DEFAULTS = {"max_rel_dev": 0.25}


def analyse_initial_loss(
    metrics: Mapping[str, Any], thresholds: Mapping[str, float]
) -> CheckResult:
    """FAIL if ``|L0 - ln V| > max_rel_dev * ln V``.

    ``metrics``: a run's metrics.json (``initial_loss``: mean per-token loss of the untrained
    model in eval mode; ``vocab_size``). ``thresholds``: needs ``max_rel_dev``.
    """
    max_rel = float(thresholds["max_rel_dev"])
    used = {"max_rel_dev": max_rel}
    loss, vocab = metrics.get("initial_loss"), metrics.get("vocab_size")
    if loss is None and metrics.get("status") == "diverged":
        return CheckResult(NAME, "FAIL", "initial loss is not finite: the untrained model "
                           "already produces NaN/inf; check weight init and input ids", {}, used)
    if loss is None or not vocab or vocab < 2:
        return CheckResult(NAME, "SKIP", "metrics.json has no initial_loss or vocab_size "
                           "(run trained by an older trainer?); retrain to measure it", {}, used)
    loss, vocab = float(loss), int(vocab)
    if not math.isfinite(loss):
        return CheckResult(NAME, "FAIL", f"initial loss is {loss}: the untrained model already "
                           "produces NaN/inf; check weight init and input ids", {}, used)
    ln_v = math.log(vocab)
    dev = loss - ln_v
    rel = abs(dev) / ln_v
    values = {
        "initial_loss": loss,
        "vocab_size": vocab,
        "ln_vocab": ln_v,
        "deviation": dev,
        "rel_deviation": rel,
    }
    where = f"initial loss {loss:.3f} vs ln V = {ln_v:.3f} (V = {vocab})"
    if rel <= max_rel:
        reason = (f"{where}: {rel:.1%} off (≤ {max_rel:.0%}), near-uniform predictions as a "
                  "correctly initialised LM should make")
        return CheckResult(NAME, "PASS", reason, values, used)
    if dev > 0:
        reason = (f"{where}: {rel:.0%} above; the untrained model is confidently wrong — check "
                  "the init scale (output/embedding std) and that padding is ignored by the loss")
    else:
        reason = (f"{where}: {rel:.0%} below; the untrained model already predicts its "
                  "targets — check that targets are inputs shifted by one (no leak) and what "
                  "the loss averages over")
    return CheckResult(NAME, "FAIL", reason, values, used)
