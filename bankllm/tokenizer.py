"""Word-level tokenizer: lower-cased words, single digits and single punctuation marks.

``"Your balance is $2,450.32."`` becomes ``your balance is $ 2 , 4 5 0 . 3 2 .``. The chapter
kept digit groups whole (``$ 2 , 450 . 32``); we split every digit so that the vocabulary stays
in the low hundreds and an amount never seen in training is still spelled with known tokens
instead of ``<unk>``.

A conversation is encoded as ``<bos> <customer> ... <agent> ... <customer> ... <agent> ... <eos>``
(an optional ``<system>`` turn may come first). An agent turn ends where the next role marker
or ``<eos>`` begins, so generation stops at any of those.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from bankllm.errors import BankLLMError
from bankllm.fileio import atomic_write_json, read_json

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
ROLE_TOKENS = {"customer": "<customer>", "agent": "<agent>", "system": "<system>"}
SPECIAL_TOKENS = (PAD, BOS, EOS, UNK, *ROLE_TOKENS.values())

_WORD_RE = re.compile(r"[a-z]+(?:'[a-z]+)*|\d|[^\sa-z\d]")


def split_words(text: str) -> list[str]:
    """Lower-case ``text`` and split it into words, single digits and punctuation marks."""
    return _WORD_RE.findall(text.lower())


def normalise_text(text: str) -> str:
    """The canonical form two texts are compared in: their words joined by single spaces."""
    return " ".join(split_words(text))


class Tokenizer:
    """A fixed vocabulary mapping words to ids; ids 0..6 are the special tokens.

    ``opening``: the messages the training conversations open with before their first customer
    turn (a system prompt; :func:`bankllm.data.opening_messages`), which
    :meth:`encode_prompt` puts before a prompt that starts with the customer, as a chat
    template's default system prompt does; empty when the conversations share none."""

    def __init__(self, vocab: Sequence[str], opening: Sequence[dict[str, str]] = ()):
        if list(vocab[: len(SPECIAL_TOKENS)]) != list(SPECIAL_TOKENS):
            raise BankLLMError("tokenizer: vocabulary must start with the special tokens")
        if len(set(vocab)) != len(vocab):
            raise BankLLMError("tokenizer: vocabulary has duplicate entries")
        self.vocab: list[str] = list(vocab)
        self.opening: tuple[dict[str, str], ...] = tuple(
            {"role": m["role"], "content": m["content"]} for m in opening)
        if any(m["role"] not in ROLE_TOKENS or m["role"] == "customer" for m in self.opening):
            raise BankLLMError("tokenizer: an opening holds system or agent messages only")
        self.index: dict[str, int] = {w: i for i, w in enumerate(self.vocab)}
        self.pad_id = self.index[PAD]
        self.bos_id = self.index[BOS]
        self.eos_id = self.index[EOS]
        self.unk_id = self.index[UNK]
        self.role_ids = {role: self.index[tok] for role, tok in ROLE_TOKENS.items()}
        # Tokens that end an agent turn during generation.
        self.turn_end_ids = frozenset({self.eos_id, *self.role_ids.values()})

    def __len__(self) -> int:
        return len(self.vocab)

    @classmethod
    def train(cls, texts: Iterable[str], min_freq: int = 1,
              opening: Sequence[dict[str, str]] = ()) -> Tokenizer:
        """Build a vocabulary from ``texts``: words seen at least ``min_freq`` times.

        Order is by descending count, then alphabetical, so the result is deterministic.
        ``opening``: see the class docstring.
        """
        counts = Counter(w for text in texts for w in split_words(text))
        words = sorted(
            (w for w, c in counts.items() if c >= min_freq), key=lambda w: (-counts[w], w)
        )
        return cls([*SPECIAL_TOKENS, *(w for w in words if w not in SPECIAL_TOKENS)], opening)

    def encode_text(self, text: str) -> list[int]:
        """Ids of ``text``'s words; unknown words map to ``<unk>``."""
        return [self.index.get(w, self.unk_id) for w in split_words(text)]

    def encode_conversation(
        self, messages: Sequence[dict[str, Any]]
    ) -> tuple[list[int], list[int]]:
        """Encode a conversation; return ``(ids, roles)``.

        ``roles[i]`` is 1 where token ``i`` belongs to an agent turn (its words and the token
        that ends it), else 0: the mask used to train on agent tokens only.
        """
        ids, roles = [self.bos_id], [0]
        for message in messages:
            role = message["role"]
            ids.append(self.role_ids[role])
            # the marker that opens a turn is predicted from the previous turn: it belongs to it
            roles.append(roles[-1] if len(roles) > 1 else 0)
            words = self.encode_text(message["content"])
            ids.extend(words)
            roles.extend([1 if role == "agent" else 0] * len(words))
        ids.append(self.eos_id)
        roles.append(roles[-1])
        return ids, roles

    def encode_prompt(self, messages: Sequence[dict[str, Any]], opening: bool = True) -> list[int]:
        """Ids of ``messages`` followed by ``<agent>``: the prompt for the next agent turn.
        Messages that start with a customer turn get the :attr:`opening` first, unless
        ``opening`` is False (to rebuild a training conversation's context exactly)."""
        if opening and messages and messages[0]["role"] == "customer":
            messages = [*self.opening, *messages]
        ids, _ = self.encode_conversation(messages)
        return ids[:-1] + [self.role_ids["agent"]]

    def decode(self, ids: Iterable[int], skip_special: bool = True) -> str:
        """Words of ``ids`` joined by spaces; special tokens dropped unless ``skip_special``."""
        words = (self.vocab[i] if 0 <= i < len(self.vocab) else UNK for i in ids)
        if skip_special:
            words = (w for w in words if w not in SPECIAL_TOKENS or w == UNK)
        return " ".join(words)

    def unk_rate(self, texts: Iterable[str]) -> float:
        """Share of words in ``texts`` that are not in the vocabulary."""
        total = unknown = 0
        for text in texts:
            for w in split_words(text):
                total += 1
                unknown += w not in self.index
        return unknown / total if total else 0.0

    def save(self, path: str | Path) -> None:
        """Write the vocabulary as JSON (atomically)."""
        data: dict[str, Any] = {"type": "word-level", "version": 1, "vocab": self.vocab}
        if self.opening:
            data["opening"] = list(self.opening)
        atomic_write_json(path, data)

    @classmethod
    def load(cls, path: str | Path) -> Tokenizer:
        """Read a tokenizer written by :meth:`save`; a malformed file is a BankLLMError."""
        data = read_json(path, "tokenizer")
        vocab = data.get("vocab") if isinstance(data, dict) else None
        if not isinstance(vocab, list) or not all(isinstance(w, str) for w in vocab):
            raise BankLLMError(f"{path}: field 'vocab' must be a list of strings")
        opening = data.get("opening", [])
        if not isinstance(opening, list) or not all(
                isinstance(m, dict) and isinstance(m.get("role"), str)
                and isinstance(m.get("content"), str) for m in opening):
            raise BankLLMError(f"{path}: field 'opening' must be a list of messages "
                               "({\"role\": ..., \"content\": ...})")
        try:
            return cls(vocab, opening)
        except BankLLMError as exc:
            raise BankLLMError(f"{path}: {exc}") from None
