"""Baselines: does the model beat count-based n-gram language models on val?

A run with no baseline file and no labels can still be caught broken: a transformer that
predicts val no better than a bigram table has learned no more than which word follows
which. Unigram, bigram and trigram models with interpolated Kneser-Ney smoothing are fitted
on the train split's targets and scored on exactly the val targets the model's val loss
averages over (same encoding, ``loss_on`` mask and truncation; the n-gram context restarts at
each conversation's ``<bos>``). The model's margin over each is the paired relative change
``sum(model NLL) / sum(baseline NLL) - 1`` over val conversations (``ratio_change``).

The n-gram code is plain numpy on token ids (no bankllm import): :func:`fit_ngram`,
:meth:`NGramLM.logprob`, :func:`score_ngram`, :func:`ngram_baselines`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from diagnostics.decision import Estimate, Verdict, decide, ratio_change
from diagnostics.results import CheckResult, table

NAME = "baselines"
ORDER = 25  # after loss_phases (20): is the curve's end any better than counting?
DEFAULTS = {
    # FAIL when the whole interval of (model - bigram) / bigram val CE is above -2 %: the
    # model is conclusively not even 2 % better than a bigram table. 2 % is the relative val
    # loss change the regression gate treats as noise (its default --tolerance 0.02).
    "bigram_fail": 0.02,
    # PASS needs the whole interval of (model - trigram) / trigram below -2 % (same source);
    # otherwise WARN: the model does not conclusively beat a trigram table.
    "trigram_pass": 0.02,
}
UNCHECKED_WHEN_SKIPPED = (
    "whether the model predicts val better than word-count (n-gram) tables, which catches a "
    "broken run without a baseline or labels; needs val conversations with target tokens "
    "(a larger val_fraction, or loss_on='all')")
ORDERS = {"unigram": 1, "bigram": 2, "trigram": 3}
UNIT = "val conversations"
_PAD = 0  # left padding before <bos> in shifted ids (token t is stored as t + 1)


# --------------------------------------------------------------------------- n-gram models


@dataclass(frozen=True)
class _Level:
    """One order k of an interpolated Kneser-Ney model: counts of k-grams (raw at the top
    order, continuation counts below), totals and distinct followers of their (k-1)-gram
    contexts, and the absolute discount."""

    gram_keys: np.ndarray
    gram_counts: np.ndarray
    ctx_keys: np.ndarray
    ctx_totals: np.ndarray
    ctx_types: np.ndarray
    discount: float


def _lookup(keys: np.ndarray, values: np.ndarray, query: np.ndarray) -> np.ndarray:
    """``values`` at ``query`` in the sorted unique ``keys``; 0 where absent."""
    if len(keys) == 0:
        return np.zeros(len(query), dtype=float)
    pos = np.minimum(np.searchsorted(keys, query), len(keys) - 1)
    return np.where(keys[pos] == query, values[pos], 0).astype(float)


def _encode(grams: np.ndarray, base: int) -> np.ndarray:
    """Integer keys of the rows of ``grams`` (shifted ids, 0 = padding) in base ``base``."""
    key = np.zeros(len(grams), dtype=np.int64)
    for j in range(grams.shape[1]):
        key = key * base + grams[:, j]
    return key


def _discount(counts: np.ndarray) -> float:
    """Ney's absolute discount ``n1 / (n1 + 2 n2)`` from the count-of-counts, kept in
    [0.1, 0.9] so that every level passes some mass down (no zero probability)."""
    n1, n2 = int(np.sum(counts == 1)), int(np.sum(counts == 2))
    d = n1 / (n1 + 2 * n2) if n1 + n2 > 0 else 0.5
    return float(min(0.9, max(0.1, d)))


@dataclass(frozen=True)
class NGramLM:
    """An interpolated Kneser-Ney n-gram model over token ids ``0..vocab_size-1`` that backs
    off to the uniform distribution over the vocabulary: every target has probability > 0 and
    each conditional distribution sums to 1 over the vocabulary."""

    order: int
    vocab_size: int
    levels: tuple[_Level, ...]  # orders 1..order

    def logprob(self, contexts: np.ndarray, targets: np.ndarray) -> np.ndarray:
        """Natural log P(target | context) for rows of ``contexts`` (m, order-1) of shifted ids
        (token + 1, 0 = before ``<bos>``; as :func:`ngram_events` gives them) and ``targets``
        (m,) of plain token ids."""
        targets = np.asarray(targets, dtype=np.int64)
        contexts = np.asarray(contexts, dtype=np.int64).reshape(len(targets), self.order - 1)
        base = self.vocab_size + 1
        p = np.full(len(targets), 1.0 / self.vocab_size)
        for k, level in enumerate(self.levels, start=1):
            hist = contexts[:, contexts.shape[1] - (k - 1):] if k > 1 else contexts[:, :0]
            h_key = _encode(hist, base)
            total = _lookup(level.ctx_keys, level.ctx_totals, h_key)
            types = _lookup(level.ctx_keys, level.ctx_types, h_key)
            count = _lookup(level.gram_keys, level.gram_counts, h_key * base + targets + 1)
            d = level.discount
            seen = total > 0
            mixed = (np.maximum(count - d, 0.0) + d * types * p) / np.where(seen, total, 1.0)
            p = np.where(seen, mixed, p)
        return np.log(p)


def ngram_events(
    sequences: Sequence[Sequence[int]], masks: Sequence[Sequence[bool]], order: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The scored events of ``sequences`` (token ids, each starting at ``<bos>``) under
    ``masks`` (per target position ``1..len-1``, as ``EncodedCorpus.loss_mask``): contexts
    (m, order-1) of shifted ids, left-padded with 0 so each sequence starts afresh, targets
    (m,) and the index of the sequence each event belongs to (m,)."""
    ctx, tgt, owner = [], [], []
    for i, (seq, mask) in enumerate(zip(sequences, masks, strict=True)):
        ids = np.asarray(seq, dtype=np.int64)
        m = np.asarray(mask, dtype=bool)
        if len(ids) < 2 or not m.any():
            continue
        if len(m) != len(ids) - 1:
            raise ValueError(f"sequence {i}: mask has {len(m)} positions, expected {len(ids) - 1}")
        padded = np.concatenate([np.full(order - 1, _PAD, dtype=np.int64), ids + 1])
        windows = np.lib.stride_tricks.sliding_window_view(padded, order)[1:][m]
        ctx.append(windows[:, :-1])
        tgt.append(windows[:, -1] - 1)
        owner.append(np.full(len(windows), i, dtype=np.int64))
    if not tgt:
        empty = np.zeros(0, dtype=np.int64)
        return np.zeros((0, order - 1), dtype=np.int64), empty, empty
    return np.concatenate(ctx), np.concatenate(tgt), np.concatenate(owner)


def fit_ngram(
    sequences: Sequence[Sequence[int]], masks: Sequence[Sequence[bool]], order: int,
    vocab_size: int,
) -> NGramLM:
    """Fit an interpolated Kneser-Ney model of ``order`` (1 = unigram) on the target events
    of ``sequences``/``masks`` (see :func:`ngram_events`): the top order uses raw counts, lower
    orders continuation counts (distinct left neighbours), each level discounted by Ney's
    estimate and interpolated with the next lower one, down to uniform over ``vocab_size``."""
    if order < 1 or vocab_size < 1:
        raise ValueError(f"need order >= 1 and vocab_size >= 1, got {order}, {vocab_size}")
    base = vocab_size + 1
    if order * math.log2(base) > 62:
        raise ValueError(f"vocabulary of {vocab_size} too large for {order}-gram integer keys")
    ctx, tgt, _ = ngram_events(sequences, masks, order)
    if len(tgt) and (tgt.min() < 0 or tgt.max() >= vocab_size):
        raise ValueError(f"target ids must lie in [0, {vocab_size})")
    grams = np.column_stack([ctx, tgt + 1])  # (m, order), shifted ids
    levels = []
    for k in range(1, order + 1):
        tail = grams[:, order - k:]
        if k == order:  # raw counts of the k-grams
            keys, counts = np.unique(_encode(tail, base), return_counts=True)
        else:  # continuation counts: distinct (k+1)-grams, counted by their last k tokens
            longer = np.unique(_encode(grams[:, order - k - 1:], base))
            keys, counts = np.unique(longer % base ** k, return_counts=True)
        hist = keys // base  # the (k-1)-gram context of each k-gram (0 for k = 1)
        ctx_keys, start = np.unique(hist, return_index=True)
        totals = np.add.reduceat(counts, start) if len(counts) else counts
        types = np.diff(np.append(start, len(keys)))
        levels.append(_Level(keys, counts.astype(float), ctx_keys, totals.astype(float),
                             types.astype(float), _discount(counts)))
    return NGramLM(order, vocab_size, tuple(levels))


def score_ngram(
    lm: NGramLM, sequences: Sequence[Sequence[int]], masks: Sequence[Sequence[bool]]
) -> list[tuple[float, int]]:
    """``(summed NLL in nats, target tokens)`` of each sequence under ``lm``, in order (the
    shape of ``bankllm.evaluation.per_conversation_losses``)."""
    ctx, tgt, owner = ngram_events(sequences, masks, lm.order)
    nll = -lm.logprob(ctx, tgt)
    sums = np.bincount(owner, weights=nll, minlength=len(sequences))
    counts = np.bincount(owner, minlength=len(sequences))
    return [(float(s), int(n)) for s, n in zip(sums, counts, strict=True)]


def ngram_baselines(
    train: tuple[Sequence[Sequence[int]], Sequence[Sequence[bool]]],
    val: tuple[Sequence[Sequence[int]], Sequence[Sequence[bool]]],
    vocab_size: int,
) -> dict[str, list[tuple[float, int]]]:
    """Per-val-sequence ``(NLL sum, tokens)`` of each model of :data:`ORDERS`, fitted on
    ``train`` (sequences, masks) and scored on ``val``."""
    return {name: score_ngram(fit_ngram(*train, order, vocab_size), *val)
            for name, order in ORDERS.items()}


# --------------------------------------------------------------------------- the check


def _pct(v: float) -> str:
    return f"{v:+.1%}"


def analyse_baselines(
    model: Sequence[tuple[float, int]], baselines: Mapping[str, Sequence[tuple[float, int]]],
    thresholds: Mapping[str, float], recorded_val_loss: float | None = None,
    optimizer_steps: int | None = None,
) -> CheckResult:
    """Judge the model's val cross-entropy against the n-gram baselines.

    ``model`` and each of ``baselines["unigram" | "bigram" | "trigram"]``: per val
    conversation ``(summed NLL, target tokens)``, in one order, with equal token counts.
    FAIL when the model is conclusively not better than the bigram by ``bigram_fail``
    (relative; the paired interval holds on a few conversations), WARN when it does not
    conclusively beat
    the trigram by ``trigram_pass``, PASS otherwise. ``recorded_val_loss``: the run's best val
    loss from metrics.json, shown beside the recomputed one; ``optimizer_steps``: how many
    the run took, named in a FAIL (a few dozen steps can leave a model short of a bigram).
    """
    th = thresholds
    used = {k: th[k] for k in ("bigram_fail", "trigram_pass")}
    keep = [i for i, (_, n) in enumerate(model) if n > 0]
    tokens = [model[i][1] for i in keep]
    for name, rows in baselines.items():
        if len(rows) != len(model):
            raise ValueError(f"{name}: {len(rows)} conversations scored, the model {len(model)}")
    values: dict[str, Any] = {"n_conversations": len(keep), "n_tokens": int(sum(tokens))}
    counted = [n for _, n in baselines["bigram"]]  # every n-gram is scored on the mask
    differ = [i for i, (row, (_, n)) in enumerate(zip(counted, model, strict=True)) if row != n]
    if differ:
        i = differ[0]
        values["conversations_with_other_targets"] = len(differ)
        return CheckResult(NAME, "FAIL", (
            f"the model's val loss counts other target tokens than the run's loss mask in "
            f"{len(differ)} of {len(model)} val conversations (conversation {i}: "
            f"{model[i][1]} scored, {counted[i]} in the mask): padding or masked positions "
            "enter the loss, so no loss of this run compares with anything — see causality"),
            values, used)
    details: dict[str, Any] = {"tables": [], "notes": [
        "n-gram models: interpolated Kneser-Ney (Ney's discounts) backing off to uniform over "
        "the vocabulary, fitted on the train split's targets; scored on the model's val "
        "targets (same loss_on mask and truncation; context restarts at <bos>)"]}
    if len(keep) == 0:
        return CheckResult(NAME, "SKIP", "no val conversation has a target token: nothing to "
                           "compare the model with", values, used, details)
    model_sums = [model[i][0] for i in keep]
    n_tok = sum(tokens)
    values["model_val_ce"] = sum(model_sums) / n_tok
    if recorded_val_loss is not None and math.isfinite(recorded_val_loss):
        values["recorded_best_val_loss"] = recorded_val_loss
        details["notes"].append(f"recomputed val CE {values['model_val_ce']:.4f} (fp32, eval "
                                f"mode); metrics.json best_val_loss {recorded_val_loss:.4f}")
    est: dict[str, Estimate] = {}
    for name in ORDERS:
        if name not in baselines:
            continue
        sums = [baselines[name][i][0] for i in keep]
        values[f"{name}_val_ce"] = sum(sums) / n_tok
        est[name] = ratio_change(model_sums, sums, UNIT)
        values.update(est[name].values(f"margin_{name}"))
    bi = decide(est["bigram"], pass_line=-th["bigram_fail"], fail_line=-th["bigram_fail"],
                higher_is_better=False, fmt=_pct)
    tri = decide(est["trigram"], pass_line=-th["trigram_pass"], fail_line=-th["trigram_pass"],
                 higher_is_better=False, fmt=_pct)
    if tri.status == "FAIL":  # conclusively short of the trigram: a WARN, never a FAIL
        tri = Verdict("WARN", tri.reason.replace("the fail line", "the pass line"))
    row_status = {"bigram": bi.status, "trigram": tri.status}
    rows = [(name, values[f"{name}_val_ce"], _pct(e.value),
             f"{_pct(e.low)} to {_pct(e.high)}") for name, e in est.items()]
    rows.append(("model", values["model_val_ce"], "—", "—"))
    details["tables"].append(table(
        f"Val cross-entropy (nats/token) over {len(keep)} conversations, {n_tok} tokens; "
        "margin = (model - baseline) / baseline",
        ["model", "val CE", "model margin", "95% CI (paired bootstrap)"], rows,
        [row_status.get(r[0]) for r in rows]))
    ce = (f"model val CE {values['model_val_ce']:.4g} vs bigram {values['bigram_val_ce']:.4g}, "
          f"trigram {values['trigram_val_ce']:.4g} nats/token")
    if bi.status == "FAIL":
        after = f" after {optimizer_steps} optimizer steps" if optimizer_steps else ""
        reason = (f"the model has learned no more than which word follows which{after}: {ce}; "
                  f"(model - bigram) / bigram {bi.reason}; before training longer, check the "
                  "learning rate (training_health's update ratios) and that the data reach the "
                  "model (causality, coverage)")
        return CheckResult(NAME, "FAIL", reason, values, used, details)
    if bi.status != "PASS":
        reason = (f"not conclusively better than a bigram table: {ce}; (model - bigram) / "
                  f"bigram {bi.reason}")
        return CheckResult(NAME, "WARN", reason, values, used, details)
    if tri.status != "PASS":
        reason = (f"beats the bigram but not conclusively a trigram table (the model uses "
                  f"little more than the last two words): {ce}; (model - trigram) / "
                  f"trigram {tri.reason}")
        return CheckResult(NAME, "WARN", reason, values, used, details)
    reason = f"beats every n-gram baseline: {ce}; (model - trigram) / trigram {tri.reason}"
    return CheckResult(NAME, "PASS", reason, values, used, details)
