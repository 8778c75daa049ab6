"""Entities a text names: account types, and any entity a probe file defines by its mentions.

An entity is named by one or more *mentions*, words or phrases compared word by word after
:func:`bankllm.tokenizer.split_words` (so case, digits and punctuation are split the way the
model sees them). The faithfulness (DIR) check finds the entities an answer names this way, with
the mentions a probe gives; the synthetic generator (:mod:`bankllm.synth`) draws its
account-type slots from :data:`ACCOUNT_TYPES` and the corpus audit uses
:data:`ACCOUNT_MENTIONS`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from bankllm.tokenizer import split_words

ACCOUNT_TYPES: tuple[str, ...] = ("checking", "savings", "credit card")
"""The account types a request can name; ``slots["account_type"]`` is one of these."""

ACCOUNT_MENTIONS: dict[str, tuple[str, ...]] = {
    "checking": ("checking",),
    "savings": ("savings", "saving"),
    "credit card": ("credit card", "credit"),
}
"""How a text names each account type ("credit" alone counts as credit card)."""

MONTHS: tuple[str, ...] = (
    "January", "February", "March", "April", "May", "June", "July", "August", "September",
    "October", "November", "December",
)


def mention_spans(words: Sequence[str], mentions: Mapping[str, Sequence[str]]
                  ) -> list[tuple[int, int, str]]:
    """``(start, end, entity)`` of each mention in ``words`` (already split), left to right and
    never overlapping: where two mentions overlap the one starting first wins, and of two
    starting together the longer ("gold card" over "card")."""
    found = []
    for entity, phrases in mentions.items():
        for phrase in phrases:
            target = split_words(phrase)
            n = len(target)
            found += [(i, i + n, entity) for i in range(len(words) - n + 1)
                      if n and list(words[i:i + n]) == target]
    found.sort(key=lambda s: (s[0], s[0] - s[1]))
    spans: list[tuple[int, int, str]] = []
    for span in found:
        if not spans or span[0] >= spans[-1][1]:
            spans.append(span)
    return spans


def named_entities(text: str, mentions: Mapping[str, Sequence[str]]) -> list[str]:
    """The entities of ``mentions`` (entity -> its mentions) that ``text`` names, in the
    mapping's order (see :func:`mention_spans`)."""
    named = {entity for _, _, entity in mention_spans(split_words(text), mentions)}
    return [entity for entity in mentions if entity in named]


def mentioned_account_types(text: str) -> list[str]:
    """The account types ``text`` names, in :data:`ACCOUNT_TYPES` order: "credit card" and a
    bare "credit" count as ``"credit card"``, "savings"/"saving" as ``"savings"``."""
    return named_entities(text, ACCOUNT_MENTIONS)
