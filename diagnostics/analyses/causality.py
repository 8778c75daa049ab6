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
from collections.abc import Mapping
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from bankllm.data import EncodedCorpus
from diagnostics.analyses._common import evenly_spread
from diagnostics.decision import decide, ratio_change
from diagnostics.results import CheckResult, combine

NAME = "causality"
ORDER = 12  # right after initial_loss: whether the losses every later check reads mean anything
UNCHECKED_WHEN_SKIPPED = (
    "whether the model reads later tokens, lets padding into its loss or echoes the token it "
    "reads (losses that look far better than the model is); needs val conversations of a few "
    "tokens with trained targets (a larger val_fraction)")
DEFAULTS = {
    # nats: a log-probability before the cut may move by rounding only (fp32 sees ~1e-6)
    "max_future_change": 1e-4,
    # conversations measured (evenly spread over val): each takes four forward passes alone
    "max_conversations": 300,
    # nats/token: scored alone or inside a right-padded batch, a conversation's loss may
    # differ by rounding only
    "max_padding_change": 1e-4,
    # next-token loss / current-token loss: PASS when all of its interval lies below 1 (the
    # model predicts what follows better than it echoes what it reads), FAIL when all of it
    # lies above. How much better is the baselines check's question, not this one's: an
    # untrained model sits at 1, a bigram-level one near 0.6, the CI recipe at 0.09.
    "max_next_over_current": 1.0,
    "min_conversations": 5,  # fewer never FAIL on the loss comparison alone
    # an echo counts as taught by training (unshifted targets) when training conclusively cut
    # the current-token loss by more than this share against the untrained model (unshifted
    # targets: -99%; lr=1e-7, which moved the weights by a hair: -0.0%)
    "min_echo_taught": 0.5,
}
MIN_TOKENS = 4  # a conversation needs a few tokens before and after its cut


@dataclass
class Measurement:
    """Per val conversation measured (one entry each, in corpus order): the largest change of
    an earlier log-probability when the later tokens are replaced, and of any log-probability
    when the same tokens are scored again; the summed loss of the next
    token and of the current token over the positions the model was trained to predict, and
    their number; the next-token loss as the trainer scores val (right-padded batches); and
    the untrained model's current-token loss, where it was measured."""

    future_change: list[float] = field(default_factory=list)
    repeat_change: list[float] = field(default_factory=list)
    next_nll: list[float] = field(default_factory=list)
    current_nll: list[float] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)
    batched_nll: list[float] = field(default_factory=list)
    untrained_current_nll: list[float] = field(default_factory=list)  # empty: not measured


def measure_causality(model: torch.nn.Module, corpus: EncodedCorpus, pad_id: int,
                      vocab_size: int, untrained: torch.nn.Module | None = None, seed: int = 0,
                      max_conversations: int | None = None) -> Measurement:
    """Measure each conversation of ``corpus`` (at most ``max_conversations`` of them, evenly
    spread over the corpus) with at least ``MIN_TOKENS`` tokens and a trained target, in fp32
    eval mode without autograd, one at a time with the shift done here: the largest absolute
    change of any log-probability when the same tokens are scored twice, and of any before
    the middle when every later token is replaced by a random one (seeded); the summed
    negative log-likelihood of the next and of the current token over the ``loss_mask``
    positions. Beside it, the same conversations scored as the trainer scores val
    (:func:`bankllm.evaluation.per_conversation_losses`: batches of 32, right-padded), and
    with ``untrained`` (the model the run started from) its current-token loss.
    ``model(x)`` must return ``(logits, ...)`` of shape (B, T, ``vocab_size``)."""
    from bankllm.evaluation import per_conversation_losses
    from bankllm.precision import inference

    gen = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    picked = evenly_spread(len(corpus), max_conversations)
    batched = per_conversation_losses(model, corpus, pad_id, precision="fp32", indices=picked)
    out = Measurement()

    def log_probs(scorer: torch.nn.Module, tokens: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(scorer(tokens[None])[0][0].float(), dim=-1)  # (T, V)

    with inference(model, "fp32"), (inference(untrained, "fp32") if untrained is not None
                                     else nullcontext()):
        for i in picked:
            ids, mask, batched_sum = corpus.ids[i], corpus.loss_mask[i], batched[i][0]
            x, mask = ids[:-1].to(device), mask[: len(ids) - 1].to(device).bool()
            if len(x) < MIN_TOKENS or not mask.any():
                continue
            logp = log_probs(model, x)
            out.repeat_change.append(float((logp - log_probs(model, x)).abs().max()))
            cut = len(x) // 2
            other = x.clone()
            other[cut:] = torch.randint(0, vocab_size, (len(x) - cut,), generator=gen).to(device)
            logp_other = log_probs(model, other)
            out.future_change.append(float((logp[:cut] - logp_other[:cut]).abs().max()))
            nll_next = -logp.gather(1, ids[1:].to(device)[:, None])[:, 0]
            nll_current = -logp.gather(1, x[:, None])[:, 0]
            out.next_nll.append(float(nll_next[mask].double().sum()))
            out.current_nll.append(float(nll_current[mask].double().sum()))
            out.tokens.append(int(mask.sum()))
            out.batched_nll.append(batched_sum)
            if untrained is not None:
                nll0 = -log_probs(untrained, x).gather(1, x[:, None])[:, 0]
                out.untrained_current_nll.append(float(nll0[mask].double().sum()))
    return out


def _largest(values: np.ndarray) -> float:
    return float(np.nanmax(values)) if not np.isnan(values).all() else math.nan


def analyse_causality(m: Measurement, thresholds: Mapping[str, float]) -> CheckResult:
    """FAIL when a log-probability is not finite; when the same tokens scored twice differ by
    more than ``max_future_change`` nats (random in eval mode); when a log-probability moved
    by more than that because later tokens changed (the model reads the future); when a
    conversation's loss scored as the trainer scores val differs from its loss scored alone
    by more than ``max_padding_change`` nats/token (padding or batching changes the loss); or
    when predicting the next token is conclusively worse than echoing the current one
    (``next_over_current`` = summed next-token loss / summed current-token loss, paired over
    conversations, against its one line ``max_next_over_current``) and training taught that
    echo (the current-token loss cut by more than ``min_echo_taught`` against the untrained
    model; otherwise a WARN). ``m``: :func:`measure_causality`'s."""
    th = thresholds
    used = {k: th[k] for k in DEFAULTS}
    n = len(m.future_change)
    if n == 0:
        return CheckResult(NAME, "SKIP", f"no val conversation of at least {MIN_TOKENS} tokens "
                           "with a trained target to measure", {}, used)
    tokens = np.maximum(np.asarray(m.tokens, dtype=float), 1)
    changes = np.asarray(m.future_change, dtype=float)
    repeats = np.asarray(m.repeat_change, dtype=float)
    padding = np.abs(np.asarray(m.batched_nll, dtype=float)
                     - np.asarray(m.next_nll, dtype=float)) / tokens
    tol, pad_tol = float(th["max_future_change"]), float(th["max_padding_change"])
    nonfinite = int((~np.isfinite(changes) | ~np.isfinite(padding)
                     | ~np.isfinite(repeats)).sum())
    random_eval = int((repeats > tol).sum())
    read = int((changes > tol).sum())
    padded = int((padding > pad_tol).sum())
    values: dict[str, Any] = {
        "n_conversations": n, "future_change_max": _largest(changes),
        "conversations_reading_future": read, "padding_change_max": _largest(padding),
        "conversations_changed_by_padding": padded, "conversations_nonfinite": nonfinite,
        "repeat_change_max": _largest(repeats), "conversations_random_in_eval": random_eval,
        "next_loss": float(np.sum(m.next_nll) / tokens.sum()),
        "current_loss": float(np.sum(m.current_nll) / tokens.sum()),
    }
    parts: list[tuple[str, str]] = []
    if nonfinite:
        parts.append(("FAIL", f"the model gives non-finite log-probabilities on {nonfinite} of "
                      f"{n} val conversations: nothing it scores can be trusted"))
    if random_eval:
        # a random model also "changes" when later tokens change: the future part can't tell
        parts.append(("FAIL", f"the model is random in eval mode: the same tokens scored twice "
                      f"got log-probabilities up to {values['repeat_change_max']:.3g} nats apart "
                      f"in {random_eval} of {n} val conversations (dropout still on at "
                      "evaluation?), so no loss it reports is reproducible, and the test of "
                      "later tokens cannot be read"))
    elif read:
        parts.append(("FAIL", f"the model reads the future: replacing the tokens after the "
                      f"middle of a conversation moved its log-probabilities before it by up to "
                      f"{values['future_change_max']:.3g} nats in {read} of {n} val "
                      f"conversations (a causal model: 0, tolerance {tol:g}); its attention lets "
                      "later tokens in, so its loss is not a language model's loss"))
    elif not nonfinite:
        parts.append(("PASS", f"causal: replacing later tokens changed no earlier "
                      f"log-probability over {n} val conversations (largest change "
                      f"{values['future_change_max']:.1g} nats, tolerance {tol:g}; scored twice, "
                      f"the same tokens moved by at most {values['repeat_change_max']:.1g})"))
    if padded:
        parts.append(("FAIL", f"scored in right-padded batches of 32 as the trainer scores val "
                      f"(here in fp32), {padded} of {n} val conversations get another loss than "
                      f"scored alone, by up to {values['padding_change_max']:.3g} nats/token "
                      f"(tolerance {pad_tol:g}): padding, its mask or the batch's targets enter "
                      "the loss"))
    next_sum, current_sum = float(np.sum(m.next_nll)), float(np.sum(m.current_nll))
    if not nonfinite and current_sum <= 0 < next_sum:
        values["next_over_current"] = math.inf
        parts.append(("FAIL", f"next-token loss {values['next_loss']:.3g} vs current-token "
                      "loss 0 nats/token: the model is certain of the token it reads; its "
                      "training targets were probably not shifted by one"))
    elif not nonfinite:
        change = ratio_change(m.next_nll, m.current_nll, "val conversations")
        est = dataclasses.replace(change, value=change.value + 1, low=change.low + 1,
                                  high=change.high + 1)
        line = float(th["max_next_over_current"])
        verdict = decide(est, pass_line=line, fail_line=line, higher_is_better=False,
                         fmt="{:.3g}".format, min_n=int(th["min_conversations"]))
        values.update(est.values("next_over_current"))
        shift = (f"next-token loss {values['next_loss']:.3g} vs current-token loss "
                 f"{values['current_loss']:.3g} nats/token, a ratio of {verdict.reason}")
        status = verdict.status
        if status == "FAIL":
            # an untrained GPT echoes too (its tied embeddings favour the token just read):
            # unshifted targets show as training having taught the echo
            taught = (ratio_change(m.current_nll, m.untrained_current_nll, "val conversations")
                      if len(m.untrained_current_nll) == n else None)
            if taught is not None:
                values.update(taught.values("current_loss_vs_untrained"))
            if taught is not None and taught.high < -float(th["min_echo_taught"]):
                shift += (f": the model predicts the token it is reading better than the one "
                          f"after it, and training taught it that (current-token loss "
                          f"{taught.value:+.0%} against the untrained model, 95% CI "
                          f"{taught.low:+.0%} to {taught.high:+.0%}); its training targets were "
                          "probably not shifted by one")
            else:
                status = "WARN"
                shift += (": the model echoes the token it reads better than it predicts the "
                          "next, as an untrained model does (its tied embeddings favour the "
                          "token just read)" + (", and training did not teach it that (the "
                                                f"current-token loss moved {taught.value:+.0%} "
                                                "against the untrained model): it has not "
                                                "learned yet (see baselines)"
                                                if taught is not None else
                                                "; without the untrained model's losses that "
                                                "cannot be told from unshifted targets"))
        elif est.low > line:  # past the line, too few conversations to FAIL
            shift += ": the model may echo the token it reads; score more val conversations"
        parts.append((status, shift))
    # no "decisions" for seed pooling: the other parts are no estimates, so a seed group
    # takes the worst member's verdict
    details = {"notes": [
        "each conversation is scored alone, its targets shifted by this check; the next- and "
        "current-token losses are summed over the positions the model was trained to predict "
        "(the run's loss_on), in fp32"]}
    status, reason = combine(parts)
    return CheckResult(NAME, status, reason, values, used, details)
