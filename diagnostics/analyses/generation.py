"""Generation: is every greedy token the one the model's own forward pass ranks first?

The probe checks (``memorization``, ``consistency``, ``faithfulness``) judge answers decoded by
``bankllm.generation.generate``: prompts left-padded into batches, each new token computed
from a KV cache with its own position and padding mask. None of that machinery is what
training and the loss checks exercise, so a fault in it (a position off by one, a cache row
mixed up, padding attended to) changes the answers while every loss stays right. This check
decodes prompts (val's, topped up from train's) greedily exactly that way, in fp32, then
scores each prompt and its answer in one plain forward pass and asks, token by token,
whether the generated token has the highest log-probability there (within ``tolerance``
nats: fp32 kernels of another shape may break an exact tie either way). A healthy run agrees
on every token; the share is over generated tokens, with its interval over answers (a fault
hits some prompts' answers).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from diagnostics.analyses._common import agent_turns, evenly_spread
from diagnostics.decision import decide, rate
from diagnostics.results import CheckResult, table

NAME = "generation"
ORDER = 16  # after checkpoint: whether the answers every probe check reads are the model's
DEFAULTS = {
    # share of generated tokens that are the forward pass's first choice: a healthy decoder
    # agrees on all of them; a KV-cache position off by one agreed on 93.7% (docs/diagnostics.md)
    "agree_pass": 0.995,
    "agree_fail": 0.98,
    "tolerance": 1e-4,  # nats below the best log-probability that still count as first
    "max_prompts": 200,  # prompts decoded: val's agent turns, topped up from train's
    "max_new_tokens": 40,
}
ORDERED = (("agree_fail", "agree_pass"),)
UNCHECKED_WHEN_SKIPPED = (
    "whether the answers the probe checks read are the model's own (the decoder's positions, "
    "KV cache and padding mask); needs val conversations with agent turns that fit the context")
MAX_EXAMPLES = 5


@dataclass
class Measured:
    """Per generated answer: tokens that were the forward pass's first choice, tokens
    generated, and the first disagreement (prompt words, position, generated and first-ranked
    token, their log-probability gap) where there is one."""

    agree: list[int] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)
    misses: list[dict[str, Any]] = field(default_factory=list)
    nonfinite: int = 0  # answers whose forward pass gave a non-finite log-probability


def _cut(conversations: Sequence[Mapping[str, Any]], tokenizer: Any,
         block_size: int) -> list[list[int]]:
    """Each conversation cut before each of its agent turns, encoded as its training context
    (``encode_prompt(opening=False)``), where the context leaves room to answer."""
    prompts = (tokenizer.encode_prompt(c["messages"][:i], opening=False)
               for c, i in agent_turns(conversations))
    return [ids for ids in prompts if len(ids) < block_size]


def _spread(items: list[list[int]], limit: int) -> list[list[int]]:
    return [items[i] for i in evenly_spread(len(items), limit)]


def decoder_prompts(val: Sequence[Mapping[str, Any]], train: Sequence[Mapping[str, Any]],
                    tokenizer: Any, block_size: int, limit: int) -> list[list[int]]:
    """Up to ``limit`` prompts, evenly spread over val's agent turns, topped up from train's
    when val has fewer: whether the decoder computes what the model does is a property of
    the code, not of the split, and a small val set would leave it inconclusive."""
    prompts = _spread(_cut(val, tokenizer, block_size), limit)
    if len(prompts) < limit:
        prompts += _spread(_cut(train, tokenizer, block_size), limit - len(prompts))
    return prompts


def measure_generation(model: Any, tokenizer: Any, prompts: Sequence[Sequence[int]],
                       max_new_tokens: int, tolerance: float) -> Measured:
    """Decode ``prompts`` greedily with ``generate`` (batched, KV cache, fp32), then score
    each prompt + answer in one forward pass and compare (see the module docstring)."""
    import torch

    from bankllm.generation import generate

    block = model.config.block_size
    budgets = [max(1, min(max_new_tokens, block - len(p))) for p in prompts]
    answers = generate(model, prompts, tokenizer, max_new_tokens=budgets, precision="fp32")
    out = Measured()
    model.eval()
    with torch.no_grad():
        for prompt, answer in zip(prompts, answers, strict=True):
            if not answer:
                continue
            ids = torch.tensor([list(prompt) + list(answer[:-1])])
            logits, _ = model(ids)
            logp = torch.log_softmax(logits[0, len(prompt) - 1:].float(), dim=-1)
            if not bool(torch.isfinite(logp).all()):
                out.nonfinite += 1
                continue
            chosen = logp[torch.arange(len(answer)), torch.tensor(answer)]
            best, first = logp.max(dim=-1)
            ok = (best - chosen) <= tolerance
            out.agree.append(int(ok.sum()))
            out.tokens.append(len(answer))
            if not bool(ok.all()):
                k = int((~ok).nonzero()[0, 0])
                out.misses.append({
                    "prompt": tokenizer.decode(prompt[-24:]), "position": k,
                    "generated": tokenizer.vocab[answer[k]],
                    "first_choice": tokenizer.vocab[int(first[k])],
                    "gap_nats": float(best[k] - chosen[k])})
    return out


def analyse_generation(measured: Measured, thresholds: Mapping[str, float]) -> CheckResult:
    """The share of generated tokens that are the forward pass's first choice, with its
    interval over answers, against ``agree_pass`` / ``agree_fail`` (FAIL when the whole
    interval lies below the fail line). SKIP without a generated token or when the forward pass
    gives non-finite log-probabilities."""
    th = {k: thresholds[k] for k in DEFAULTS}
    if measured.nonfinite:
        return CheckResult(NAME, "SKIP", f"the model gives non-finite log-probabilities on "
                           f"{measured.nonfinite} answers: no first choice to compare with "
                           "(causality FAILs such a model)", {"nonfinite": measured.nonfinite},
                           th)
    n_answers, n_tokens = len(measured.tokens), sum(measured.tokens)
    if not n_tokens:
        return CheckResult(NAME, "SKIP", "no val prompt produced a generated token: nothing to "
                           "compare (no agent turns in val, or no room left in the context)",
                           {}, th)
    est = rate(measured.agree, measured.tokens, "generated answers")
    verdict = decide(est, pass_line=th["agree_pass"], fail_line=th["agree_fail"],
                     higher_is_better=True)
    agree = sum(measured.agree)
    values = {**est.values("agree_share"), "tokens": n_tokens, "answers": n_answers,
              "answers_with_a_miss": len(measured.misses)}
    shown = (f"{agree} of {n_tokens} greedy tokens over {n_answers} prompts are the "
             f"forward pass's first choice: {verdict.reason}")
    details: dict[str, Any] = {"decisions": {"agree_share": verdict.rule}, "tables": [],
                               "notes": ["decoded with bankllm.generation.generate (left-padded "
                                         "batches, KV cache) in fp32; each prompt + answer "
                                         "then scored in one forward pass"]}
    if measured.misses:
        m = measured.misses[0]
        details["tables"].append(table(
            "First disagreement per answer (generated token vs the forward pass's first choice)",
            ["prompt (end)", "position", "generated", "first choice", "gap (nats)"],
            [(x["prompt"], x["position"], x["generated"], x["first_choice"], x["gap_nats"])
             for x in measured.misses[:MAX_EXAMPLES]], ["FAIL"] * min(MAX_EXAMPLES,
                                                                      len(measured.misses))))
        example = (f"e.g. '{m['generated']}' where the forward pass ranks '{m['first_choice']}' "
                   f"first, {m['gap_nats']:.3g} nats above it")
    if verdict.status == "FAIL":
        reason = (f"{shown}; {len(measured.misses)} of {n_answers} answers hold a token the "
                  f"model does not rank first ({example}): the decoder (positions, KV cache or "
                  "padding mask) computes something else than the model, so the probe checks "
                  "judge answers the model would not give")
    elif verdict.status == "PASS":
        reason = f"{shown}: the probe checks read the model's own answers"
    else:
        reason = shown + (f"; {example}" if measured.misses else "")
    return CheckResult(NAME, verdict.status, reason, values, th, details)
