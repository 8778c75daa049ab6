"""Normalising imported conversations into schema-valid corpus records.

Normalising means, in order: empty messages are dropped; system messages are kept only at the
start (merged into one); agent turns before the first customer turn are dropped; consecutive
messages of one role are merged; a trailing customer turn is dropped; a conversation left
without a customer turn followed by an agent turn is skipped. :class:`RecordCollector` does
this per conversation, gives unique ids and validates against ``conversation.schema.json``;
the readers of :mod:`bankllm.importers` feed it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from bankllm.fileio import load_schema, validate_json

# Reasons counted in ImportResult.skipped: whole conversations, then single messages.
SKIP_NON_BANKS = "conversation: dialogue involves a non-Banks service"
SKIP_NO_EXCHANGE = "conversation: no customer turn answered by an agent turn"
SKIP_EMPTY = "message: empty content"
SKIP_TRAILING_CUSTOMER = "message: trailing customer turn (no agent answer)"
SKIP_LEADING_AGENT = "message: agent turn before the first customer turn"
SKIP_LATE_SYSTEM = "message: system message after the conversation started"
SKIP_TOOL = "message: tool/function message"
# Changes counted in ImportResult.adjusted (nothing lost).
ADJ_MERGED = "consecutive messages of one role merged"
ADJ_RENAMED = "duplicate id renamed"

Message = dict[str, Any]
Record = dict[str, Any]


@dataclass
class ImportResult:
    """Schema-valid conversations, and what was dropped (``skipped``) or changed (``adjusted``).

    Keys of ``skipped`` start with ``conversation:`` (a whole record dropped) or ``message:``
    (one message dropped from a record that was kept or later skipped).
    """

    conversations: list[Record] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)
    adjusted: Counter[str] = field(default_factory=Counter)

    def summary(self) -> str:
        """A few lines for people: imported N, skipped M, each reason with its count."""
        n_msgs = sum(len(c["messages"]) for c in self.conversations)
        conv_skips = sum(n for r, n in self.skipped.items() if r.startswith("conversation:"))
        msg_skips = sum(n for r, n in self.skipped.items() if r.startswith("message:"))
        lines = [
            f"imported {len(self.conversations)} conversations ({n_msgs} messages); "
            f"skipped {conv_skips} conversations, {msg_skips} messages"
        ]
        lines += [f"  skipped {reason} → {n}" for reason, n in sorted(self.skipped.items())]
        lines += [f"  {reason} → {n}" for reason, n in sorted(self.adjusted.items())]
        intents = Counter(c.get("intent") for c in self.conversations)
        if any(intent is not None for intent in intents):
            shown = ", ".join(f"{k if k is not None else '(none)'} {n}"
                              for k, n in intents.most_common())
            lines.append(f"  intents: {shown}")
        else:
            lines.append("  intents: none (checks that need intent labels will be skipped)")
        return "\n".join(lines)


def normalise_messages(
    messages: Iterable[Message], skipped: Counter[str], adjusted: Counter[str]
) -> list[Message] | None:
    """Return ``messages`` made schema-shaped (see module doc), or None if no exchange is left.

    Each input message has ``role`` in customer/agent/system, ``content`` a string and maybe
    ``intent``. Drops are counted in ``skipped``, merges in ``adjusted``; the input is not changed.
    """
    system: list[str] = []
    body: list[Message] = []
    for msg in messages:
        content = msg["content"].strip()
        if not content:
            skipped[SKIP_EMPTY] += 1
            continue
        role = msg["role"]
        if role == "system":
            if body:
                skipped[SKIP_LATE_SYSTEM] += 1
            else:
                system.append(content)
            continue
        if role == "agent" and not body:
            skipped[SKIP_LEADING_AGENT] += 1
            continue
        new = {"role": role, "content": content}
        if "intent" in msg:
            new["intent"] = msg["intent"]
        if body and body[-1]["role"] == role:
            last = body[-1]
            last["content"] += "\n" + content
            if last.get("intent") is None and new.get("intent") is not None:
                last["intent"] = new["intent"]
            adjusted[ADJ_MERGED] += 1
            continue
        body.append(new)
    if body and body[-1]["role"] == "customer":
        skipped[SKIP_TRAILING_CUSTOMER] += 1
        body.pop()
    if len(body) < 2:
        return None
    if len(system) > 1:
        adjusted[ADJ_MERGED] += len(system) - 1
    head = [{"role": "system", "content": "\n".join(system)}] if system else []
    return head + body


class RecordCollector:
    """Builds an ImportResult: normalises, gives unique ids, validates against the schema."""

    def __init__(self) -> None:
        """Start an empty :class:`ImportResult` (``self.result``)."""
        self.result = ImportResult()
        self._ids: set[str] = set()
        self._schema = load_schema("bankllm", "conversation.schema.json")

    def add(
        self, *, rid: str, intent: str | None, slots: dict[str, Any],
        messages: list[Message], meta: dict[str, Any], origin: str,
    ) -> None:
        """Normalise and append one conversation, or count it as skipped."""
        result = self.result
        normal = normalise_messages(messages, result.skipped, result.adjusted)
        if normal is None:
            result.skipped[SKIP_NO_EXCHANGE] += 1
            return
        unique, n = rid, 1
        while unique in self._ids:
            n += 1
            unique = f"{rid}~{n}"
        if unique != rid:
            result.adjusted[ADJ_RENAMED] += 1
        self._ids.add(unique)
        record = {"id": unique, "intent": intent, "slots": slots, "messages": normal, "meta": meta}
        validate_json(record, self._schema, origin)
        result.conversations.append(record)
