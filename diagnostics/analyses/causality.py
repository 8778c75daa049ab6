"""Causality: does the model predict the next token from the tokens before it, as its loss
assumes?

Two faults make a language model's loss look far better than the model is, and no curve shows
them: the loss just falls fast and far.

- **Reading the future.** Attention without its causal mask (or any path that lets later
  tokens in) sees the token it is asked to predict. Its teacher-forced loss heads for zero,
  while generation, which has no future to read, produces nothing useful.
- **Targets not shifted.** Training on ``(x, x)`` instead of ``(x[:-1], x[1:])`` teaches the
  model to echo the token it is reading; scored the same way, its loss is near zero too.

Both are measured on val conversations, with the shift done here rather than by the trainer's
batching: the largest change of any log-probability before a cut when every token from the
cut on is replaced (exactly 0 for a causal model, up to rounding), and, per conversation, the
summed loss of predicting the next token against that of predicting the current one, over
the positions the model was trained to predict.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from diagnostics.decision import decide, ratio_change
from diagnostics.results import CheckResult, worst

NAME = "causality"
ORDER = 12  # right after initial_loss: whether the losses every later check reads mean anything
DEFAULTS = {
    # nats: a log-probability before the cut may move by rounding only (fp32 sees ~1e-6)
    "max_future_change": 1e-4,
    # next-token loss / current-token loss: PASS when all of its interval lies below 1 (the
    # model predicts what follows better than it echoes what it reads), FAIL when all of it
    # lies above. How much better is the baselines check's question, not this one's: an
    # untrained model sits at 1, a bigram-level one near 0.6, the CI recipe at 0.09.
    "max_next_over_current": 1.0,
    "min_conversations": 5,  # fewer never FAIL on the loss comparison alone
}
MIN_TOKENS = 4  # a conversation needs a few tokens before and after its cut


def measure_causality(model: torch.nn.Module, sequences: Sequence[torch.Tensor],
                      masks: Sequence[torch.Tensor], vocab_size: int, seed: int = 0
                      ) -> tuple[list[float], list[float], list[float], list[int]]:
    """For each token sequence (with ``masks[i][t]`` true where the model was trained to
    predict token ``t + 1``) of at least ``MIN_TOKENS`` tokens, in fp32 eval mode without
    autograd: the largest absolute change of any log-probability at the positions before the
    middle when every later token is replaced by a random one (seeded), and the summed
    negative log-likelihood of the next token and of the current token over the masked
    positions, and their number. ``model(x)`` must return ``(logits, ...)`` of shape
    (1, T, ``vocab_size``). Returns four lists, one entry per sequence measured."""
    from bankllm.precision import inference

    gen = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    changes, next_nll, current_nll, tokens = [], [], [], []
    with inference(model, "fp32"):
        for ids, mask in zip(sequences, masks, strict=True):
            x, mask = ids[:-1].to(device), mask[: len(ids) - 1].to(device).bool()
            if len(x) < MIN_TOKENS or not mask.any():
                continue
            logp = torch.log_softmax(model(x[None])[0][0].float(), dim=-1)
            cut = len(x) // 2
            other = x.clone()
            other[cut:] = torch.randint(0, vocab_size, (len(x) - cut,), generator=gen).to(device)
            logp_other = torch.log_softmax(model(other[None])[0][0].float(), dim=-1)
            changes.append(float((logp[:cut] - logp_other[:cut]).abs().max()))
            nll_next = -logp.gather(1, ids[1:].to(device)[:, None])[:, 0]
            nll_current = -logp.gather(1, x[:, None])[:, 0]
            next_nll.append(float(nll_next[mask].double().sum()))
            current_nll.append(float(nll_current[mask].double().sum()))
            tokens.append(int(mask.sum()))
    return changes, next_nll, current_nll, tokens


def analyse_causality(future_changes: Sequence[float], next_nll: Sequence[float],
                      current_nll: Sequence[float], tokens: Sequence[int],
                      thresholds: Mapping[str, float]) -> CheckResult:
    """FAIL when a log-probability moved by more than ``max_future_change`` nats because later
    tokens changed (the model reads the future), or when predicting the next token is
    conclusively worse than echoing the current one (``next_over_current`` = summed
    next-token loss / summed current-token loss, paired over conversations, decided against
    its one line ``max_next_over_current``). Inputs: :func:`measure_causality`'s lists."""
    th = thresholds
    used = {k: th[k] for k in DEFAULTS}
    n = len(future_changes)
    if n == 0:
        return CheckResult(NAME, "SKIP", f"no val conversation of at least {MIN_TOKENS} tokens "
                           "with a trained target to measure", {}, used)
    changes = np.asarray(future_changes, dtype=float)
    tol = float(th["max_future_change"])
    read = int((~(changes <= tol)).sum())  # NaN counts as changed
    values: dict[str, Any] = {
        "n_conversations": n, "future_change_max": float(np.nanmax(changes))
        if not np.isnan(changes).all() else math.nan, "conversations_reading_future": read,
        "next_loss": float(np.sum(next_nll)) / max(1, int(np.sum(tokens))),
        "current_loss": float(np.sum(current_nll)) / max(1, int(np.sum(tokens))),
    }
    if read:
        future = ("FAIL", f"the model reads the future: replacing the tokens after the middle "
                  f"of a conversation moved its log-probabilities before it by up to "
                  f"{values['future_change_max']:.3g} nats in {read} of {n} val conversations "
                  f"(a causal model: 0, tolerance {tol:g}); its attention lets later tokens "
                  "in, so its loss is not a language model's loss")
    else:
        future = ("PASS", f"causal: replacing later tokens changed no earlier log-probability "
                  f"over {n} val conversations (largest change {values['future_change_max']:.1g}"
                  f" nats, tolerance {tol:g})")
    change = ratio_change(next_nll, current_nll, "val conversations")
    est = dataclasses.replace(change, value=change.value + 1, low=change.low + 1,
                              high=change.high + 1)
    line = float(th["max_next_over_current"])
    verdict = decide(est, pass_line=line, fail_line=line, higher_is_better=False,
                     fmt="{:.3g}".format, min_n=int(th["min_conversations"]))
    values.update(est.values("next_over_current"))
    shift = (f"next-token loss {values['next_loss']:.3g} vs current-token loss "
             f"{values['current_loss']:.3g} nats/token, a ratio of {verdict.reason}")
    if verdict.status == "FAIL":
        shift += (": the model predicts the token it is reading better than the one after it; "
                  "its training targets were probably not shifted by one")
    elif verdict.status == "WARN":
        shift += ": the model predicts what follows no better than it echoes what it reads"
    status = worst([future[0], verdict.status])
    # no "decisions" for seed pooling: the future part is no estimate, so a seed group takes
    # the worst member's verdict
    details = {"notes": [
        "the next-token and current-token losses are summed over the positions the model "
        "was trained to predict (the run's loss_on), in fp32"]}
    return CheckResult(NAME, status, f"{future[1]}; {shift}", values, used, details)
