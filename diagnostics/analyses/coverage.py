"""Coverage: does the loss measure the words and conversations it seems to?

Two settings make a run's loss measure less than the data, and no curve shows them:

- **Unknown words.** The tokenizer maps every word seen fewer than ``min_freq`` times in train
  to one ``<unk>`` marker. Predicting that marker is easy, so the more of the val targets are
  ``<unk>``, the better the loss looks and the less the model can say (an answer whose
  account number or payee is ``<unk>`` is no answer).
- **Truncation.** A conversation longer than the context (``block_size + 1`` tokens) is cut:
  its end, often the agent's answer, is neither trained on nor scored.

The ``<unk>`` share of the val targets (the positions the loss averages over) estimates how
much of new text the tokenizer misses: it carries an interval over val conversations and is
decided by the shared rule. The truncated share is a count over all of the run's train and
val conversations, not a sample, so it is banded as it is.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from diagnostics.decision import decide, rate
from diagnostics.results import CheckResult, combine

NAME = "coverage"
ORDER = 8  # first: whether the loss every later check reads covers the data
UNCHECKED_WHEN_SKIPPED = (
    "whether the val loss is inflated by <unk> targets or conversations cut at the context; "
    "needs val conversations with target tokens (a larger val_fraction, or loss_on='all')")
DEFAULTS = {
    # share of val target tokens that are <unk>: PASS when all of the interval lies at or
    # below 1%, FAIL when all of it lies above 5% (one word in twenty unknown)
    "unk_pass": 0.01,
    "unk_fail": 0.05,
    # share of train and val conversations cut at the context: PASS at or below 1%, FAIL above
    # 25% (a quarter of the conversations lose their ends)
    "truncated_pass": 0.01,
    "truncated_fail": 0.25,
    "min_conversations": 10,  # fewer never FAIL on their own
}
ORDERED = (("unk_pass", "unk_fail"), ("truncated_pass", "truncated_fail"))


def _pct(x: float) -> str:
    return f"{x:.1%}"


def analyse_coverage(unk_targets: Sequence[int], targets: Sequence[int], truncated: int,
                     conversations: int, thresholds: Mapping[str, float],
                     min_freq: int | None = None, block_size: int | None = None
                     ) -> CheckResult:
    """``unk_targets`` / ``targets``: per val conversation, its ``<unk>`` target tokens and all
    its target tokens; ``truncated`` of the run's ``conversations`` (train and val) were cut at
    the context. The ``<unk>`` share, an estimate of how much of new text the tokenizer misses
    (clustered by conversation), is decided by the shared rule; the truncated share is a count
    over all of the run's conversations, not a sample, so it is banded without an interval.
    Fewer than ``min_conversations`` never FAIL. The status is the worse of the two.
    ``min_freq`` and ``block_size`` (the run's) word the advice."""
    th = {k: float(thresholds[k]) for k in DEFAULTS}
    if not targets or sum(targets) == 0:
        return CheckResult(NAME, "SKIP", "no val target tokens to measure", {}, th)
    min_n = int(th["min_conversations"])
    n_unk, n_targets = int(sum(unk_targets)), int(sum(targets))
    unk = rate(unk_targets, targets, "val conversations")
    unk_verdict = decide(unk, pass_line=th["unk_pass"], fail_line=th["unk_fail"],
                         higher_is_better=False, fmt=_pct, min_n=min_n)
    share = truncated / conversations if conversations else 0.0
    cut_status = ("PASS" if share <= th["truncated_pass"] else
                  "WARN" if share <= th["truncated_fail"] or conversations < min_n else "FAIL")
    values: dict[str, Any] = {**unk.values("unk_share"), "unk_tokens": n_unk,
                              "target_tokens": n_targets, "truncated_share": share,
                              "truncated_conversations": truncated,
                              "conversations": conversations}
    unk_reason = f"<unk> among val targets {n_unk}/{n_targets}: {unk_verdict.reason}"
    if unk.low > th["unk_pass"]:  # conclusively above the pass line: say why it matters
        if min_freq and min_freq > 1:
            unk_reason += (f": words seen fewer than min_freq={min_freq} times in train are one "
                           "marker, easy to predict, so the loss looks better than the model is "
                           "and answers lose their words; lower min_freq")
        else:
            unk_reason += (": val words that train never has are one marker, easy to predict, so "
                           "the loss looks better than the model is; only more (or more varied) "
                           "train data helps")
    cut_reason = (f"conversations cut at the context: {truncated} of the run's {conversations} "
                  f"({share:.1%}; lines {th['truncated_pass']:.0%} / {th['truncated_fail']:.0%})")
    if truncated:
        ctx = f"block_size={block_size}" if block_size else "the context"
        cut_reason += (": their ends (often the answer) are neither trained on nor scored; "
                       f"raise {ctx}")
    if cut_status == "WARN" and share > th["truncated_fail"]:
        cut_reason += f" (fewer than the {min_n} conversations needed to FAIL on their own)"
    # no "decisions" for seed pooling: the truncated share is no estimate, and a seed group's
    # members share one split and tokenizer, so the worst member's verdict is the group's
    details: dict[str, Any] = {"notes": []}
    status, reason = combine([(unk_verdict.status, unk_reason), (cut_status, cut_reason)])
    return CheckResult(NAME, status, reason, values, th, details)
