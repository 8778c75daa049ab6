"""Probe helpers shared by the probe-based checks (consistency, faithfulness): the prompts a
probe set asks, the answers of a response source, and how a table shows an answer."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

NO_ANSWER = "(no answer)"
MAX_ROWS = 15  # rows of a failure table; every failure is in the result's details

ResponseSource = Callable[[Sequence[str]], list[str]]


def probe_prompts(probes: Any, kinds: Sequence[str] = ("inv", "dir", "mft")) -> list[str]:
    """The distinct customer prompts of the given probe kinds, in file order."""
    seen: dict[str, None] = {}
    for kind in kinds:
        for rec in getattr(probes, kind):
            if kind == "inv":
                seen.update(dict.fromkeys(rec["prompts"]))
            elif kind == "dir":
                seen.update(dict.fromkeys(v["prompt"] for v in rec["variants"]))
            else:
                seen[rec["prompt"]] = None
    return list(seen)


def collect_responses(prompts: Sequence[str], source: ResponseSource) -> dict[str, str]:
    """``{prompt: answer}`` for every prompt, from one call to ``source``."""
    answers = source(list(prompts))
    if len(answers) != len(prompts):
        raise ValueError(f"response source returned {len(answers)} answers for {len(prompts)} "
                         "prompts")
    return {p: str(a) for p, a in zip(prompts, answers, strict=True)}


def clip_answer(text: str, n: int = 90) -> str:
    """A response as a table shows it: readable (digits joined) and at most ``n`` chars."""
    from bankllm.generation import detokenize

    text = detokenize(text)
    return text if len(text) <= n else text[: n - 1] + "…"
