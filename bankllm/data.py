"""Corpus loading, the train/val split, encoding and length-bucketed batching.

A corpus file holds one conversation per line (``bankllm/schemas/conversation.schema.json``).
Batches are padded only to their own longest sequence, and sequences of similar length are
batched together, so almost no compute is spent on padding; padded targets are ignored by the
loss (``IGNORE_INDEX``).
"""

from __future__ import annotations

import hashlib
import random
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bankllm.errors import BankLLMError
from bankllm.fileio import load_schema, parse_records
from bankllm.tokenizer import Tokenizer, normalise_text

IGNORE_INDEX = -100


def load_conversations(path: str | Path) -> list[dict[str, Any]]:
    """Read and validate a corpus JSONL file.

    Errors name ``file:line`` and the field at fault; an empty file or duplicate ids are errors.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        where = "" if path.is_absolute() else f" in {Path.cwd()}"
        raise BankLLMError(
            f"{path}: corpus file not found{where} (pass --data FILE, "
            "or make one with 'bankllm data synth' or 'bankllm data import')"
        ) from None
    except OSError as exc:
        raise BankLLMError(f"{path}: cannot read corpus ({exc.strerror})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BankLLMError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    schema = load_schema("bankllm", "conversation.schema.json")
    conversations = parse_records(text, str(path), schema)
    if not conversations:
        raise BankLLMError(f"{path}: corpus is empty (expected one JSON conversation per line)")
    return conversations


def opening_messages(conversations: Sequence[dict[str, Any]],
                     min_share: float = 0.5) -> list[dict[str, str]]:
    """The messages before the first customer turn (a system prompt, an agent greeting) that
    open more than ``min_share`` of ``conversations``, role and content identical: what a
    prompt of one customer message should start with to look like the conversations a model
    was trained on. [] when no opening is that common (none, or one that varies)."""
    counts: Counter[tuple[tuple[str, str], ...]] = Counter()
    for conv in conversations:
        head = []
        for message in conv["messages"]:
            if message["role"] == "customer":
                break
            head.append((message["role"], message["content"]))
        counts[tuple(head)] += 1
    if not counts:
        return []
    head, n = counts.most_common(1)[0]
    if not head or n <= min_share * len(conversations):
        return []
    return [{"role": role, "content": content} for role, content in head]


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes: the data hash runs and baselines are keyed by."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def conversation_text(conversation: dict[str, Any]) -> str:
    """All turns of a conversation as one string, ``role: content`` per turn."""
    return "\n".join(f"{m['role']}: {m['content']}" for m in conversation["messages"])


def normalised_conversation(conversation: dict[str, Any]) -> str:
    """The form used to decide whether two conversations are the same (split, leakage)."""
    return normalise_text(conversation_text(conversation))


@dataclass
class Split:
    """A train/val split of a corpus plus the fixed train subset measured in eval mode."""

    train: list[dict[str, Any]]
    val: list[dict[str, Any]]
    train_eval: list[dict[str, Any]] = field(default_factory=list)

    def ids(self) -> dict[str, list[str]]:
        return {
            "train": [c["id"] for c in self.train],
            "val": [c["id"] for c in self.val],
            "train_eval": [c["id"] for c in self.train_eval],
        }

    @classmethod
    def from_ids(cls, conversations: Sequence[dict[str, Any]], ids: dict[str, list[str]]) -> Split:
        """Rebuild a split saved with :meth:`ids` from the corpus it was made from."""
        by_id = {c["id"]: c for c in conversations}
        try:
            return cls(*([by_id[i] for i in ids[part]] for part in ("train", "val", "train_eval")))
        except KeyError as exc:
            raise BankLLMError(f"split: conversation {exc} is not in the corpus") from None


def split_conversations(
    conversations: Sequence[dict[str, Any]], val_fraction: float = 0.1, seed: int = 0
) -> Split:
    """Seeded split; identical normalised conversations always land on the same side.

    Conversations are grouped by normalised text, groups are shuffled with ``seed`` and val
    takes whole groups until it holds ``round(val_fraction * n)`` conversations. ``train_eval``
    is a fixed, seeded subset of train the size of val.
    """
    groups: dict[str, list[dict[str, Any]]] = {}
    for conv in conversations:
        groups.setdefault(normalised_conversation(conv), []).append(conv)
    keys = sorted(groups)
    random.Random(seed).shuffle(keys)
    n_val = max(1, round(val_fraction * len(conversations)))
    val: list[dict[str, Any]] = []
    train: list[dict[str, Any]] = []
    for key in keys:
        (val if len(val) + len(groups[key]) <= n_val and len(val) < n_val else train).extend(
            groups[key]
        )
    if not train or not val:
        raise BankLLMError(
            f"data: cannot split {len(conversations)} conversations into train and val "
            "(need at least 2 distinct conversations)"
        )
    order = {c["id"]: i for i, c in enumerate(conversations)}
    train.sort(key=lambda c: order[c["id"]])
    val.sort(key=lambda c: order[c["id"]])
    pick = random.Random(seed + 1).sample(range(len(train)), min(len(val), len(train)))
    return Split(train=train, val=val, train_eval=[train[i] for i in sorted(pick)])


@dataclass
class EncodedCorpus:
    """Token ids of each conversation, truncated to the context, and its loss mask."""

    ids: list[torch.Tensor]
    loss_mask: list[torch.Tensor]  # per target position: 1 = counts in the loss
    truncated: int = 0

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def lengths(self) -> list[int]:
        return [len(x) - 1 for x in self.ids]

    def n_target_tokens(self, indices: Sequence[int] | None = None) -> int:
        """Target tokens of the given conversations (default: all)."""
        masks = self.loss_mask if indices is None else [self.loss_mask[i] for i in indices]
        return int(sum(int(m.sum()) for m in masks))


def encode_corpus(
    conversations: Sequence[dict[str, Any]],
    tokenizer: Tokenizer,
    block_size: int,
    loss_on: str = "all",
) -> EncodedCorpus:
    """Encode conversations for next-token training.

    A conversation longer than ``block_size + 1`` tokens is cut to that length (counted in
    ``truncated``). With ``loss_on="agent"`` only agent-turn tokens are targets.
    """
    ids_list, masks, truncated = [], [], 0
    for conv in conversations:
        ids, roles = tokenizer.encode_conversation(conv["messages"])
        if len(ids) > block_size + 1:
            ids, roles = ids[: block_size + 1], roles[: block_size + 1]
            truncated += 1
        mask = [1] * (len(ids) - 1) if loss_on == "all" else roles[1:]
        ids_list.append(torch.tensor(ids, dtype=torch.long))
        masks.append(torch.tensor(mask, dtype=torch.bool))
    return EncodedCorpus(ids_list, masks, truncated)


def collate(
    corpus: EncodedCorpus, indices: Sequence[int], pad_id: int, length: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and targets of ``indices``, right-padded to the longest among them (or to
    ``length``, e.g. the whole context as the chapter pads).

    Targets are the inputs shifted by one; padding and masked-out positions are IGNORE_INDEX.
    With causal attention, right padding never changes the loss of the real tokens.
    """
    if length is None:
        length = max(len(corpus.ids[i]) - 1 for i in indices)
    x = torch.full((len(indices), length), pad_id, dtype=torch.long)
    y = torch.full((len(indices), length), IGNORE_INDEX, dtype=torch.long)
    for row, i in enumerate(indices):
        ids, mask = corpus.ids[i], corpus.loss_mask[i]
        n = len(ids) - 1
        x[row, :n] = ids[:-1]
        y[row, :n] = torch.where(mask, ids[1:], torch.full_like(ids[1:], IGNORE_INDEX))
    return x, y


def epoch_batches(
    lengths: Sequence[int], batch_size: int, seed: int, epoch: int, bucket_batches: int = 8
) -> list[list[int]]:
    """The batches of one epoch: a seeded shuffle, length-sorted within buckets.

    The order depends only on ``(seed, epoch)``, so a resumed run sees the same batches.
    The train set is shuffled, cut into buckets of ``batch_size * bucket_batches``
    conversations, each bucket sorted by length and cut into batches, and the batch order
    shuffled again: batches stay random while their members have similar lengths.
    """
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(lengths))
    bucket = batch_size * bucket_batches
    batches: list[list[int]] = []
    for start in range(0, len(order), bucket):
        chunk = sorted(order[start : start + bucket].tolist(), key=lambda i: -lengths[i])
        batches.extend(chunk[j : j + batch_size] for j in range(0, len(chunk), batch_size))
    return [batches[i] for i in rng.permutation(len(batches))]


def micro_batches(batch: Sequence[int], micro_batch_size: int) -> Iterator[list[int]]:
    """Split one optimizer batch into consecutive micro-batches."""
    for start in range(0, len(batch), micro_batch_size):
        yield list(batch[start : start + micro_batch_size])


def plan_micro_batches(
    batch: Sequence[int],
    lengths: Sequence[int],
    micro_batch_size: int,
    micro_batch_tokens: int = 0,
) -> list[list[int]]:
    """Cut one optimizer batch into the micro-batches computed in one forward pass each.

    ``micro_batch_size`` > 0: consecutive groups of that many sequences (the chapter's).
    0 (auto): consecutive sequences while their padded size, count x longest (``lengths[i]``
    is item ``i``'s input length), stays within ``micro_batch_tokens`` (0: no limit), at
    least one per micro-batch; a bucketed batch of 32 short conversations is one pass.
    The trainer's gradient does not depend on the cut (it is normalised by the batch's tokens).
    """
    if micro_batch_size > 0:
        return list(micro_batches(batch, micro_batch_size))
    parts: list[list[int]] = []
    longest = 0
    for i in batch:
        grown = max(longest, lengths[i])
        if parts and (
            micro_batch_tokens <= 0 or (len(parts[-1]) + 1) * grown <= micro_batch_tokens
        ):
            parts[-1].append(i)
            longest = grown
        else:
            parts.append([i])
            longest = lengths[i]
    return parts


def padding_positions(
    batch: Sequence[int], lengths: Sequence[int], micro_batch_size: int, micro_batch_tokens: int
) -> int:
    """Pad positions the forward passes of ``batch`` compute: each micro-batch of
    :func:`plan_micro_batches` is padded to its longest sequence."""
    return sum(
        len(mb) * max(lengths[i] for i in mb) - sum(lengths[i] for i in mb)
        for mb in plan_micro_batches(batch, lengths, micro_batch_size, micro_batch_tokens)
    )


def corpus_stats(conversations: Sequence[dict[str, Any]], min_freq: int = 1) -> dict[str, Any]:
    """Counts, intents, lengths and vocabulary of a corpus (what ``bankllm data stats`` prints):
    ``intents`` counts the conversations that carry each intent, on the conversation or on any
    of its messages (``multi_intent`` of them carry more than one); ``opening`` is
    :func:`opening_messages`."""
    tokenizer = Tokenizer.train(
        (m["content"] for c in conversations for m in c["messages"]), min_freq=min_freq
    )
    lengths = np.array(
        [len(tokenizer.encode_conversation(c["messages"])[0]) for c in conversations]
    )
    exchanges = Counter(sum(m["role"] == "agent" for m in c["messages"]) for c in conversations)
    # a conversation counts once for each intent it or any of its messages carries
    labels = [list(dict.fromkeys(i for i in (c.get("intent"), *(m.get("intent") for m in
                                                                c["messages"])) if i))
              for c in conversations]
    intents = Counter(i for found in labels for i in (found or ["(none)"]))
    texts = [m["content"] for c in conversations for m in c["messages"]]
    return {
        "conversations": len(conversations),
        "messages": len(texts),
        "exchanges": dict(sorted(exchanges.items())),
        "intents": dict(intents.most_common()),
        "multi_intent": sum(len(found) > 1 for found in labels),
        "opening": opening_messages(conversations),
        "tokens": int(lengths.sum()),
        "length_min": int(lengths.min()),
        "length_mean": float(lengths.mean()),
        "length_p95": float(np.percentile(lengths, 95)),
        "length_max": int(lengths.max()),
        "vocab_size": len(tokenizer),
        "min_freq": min_freq,
        "unk_rate": tokenizer.unk_rate(texts),
    }


def cli_stats(args: Any) -> int:
    """``bankllm data stats FILE``: print a corpus summary table."""
    from rich.console import Console
    from rich.table import Table

    if args.min_freq < 1:  # as the train config's min_freq
        raise BankLLMError(f"--min-freq must be >= 1, got {args.min_freq}")
    stats = corpus_stats(load_conversations(args.file), min_freq=args.min_freq)
    table = Table(title=f"{args.file}", show_header=False)
    for key in ("conversations", "messages", "tokens", "vocab_size", "min_freq"):
        table.add_row(key, str(stats[key]))
    table.add_row("unk_rate (min_freq)", f"{stats['unk_rate']:.2%}")
    table.add_row(
        "length (tokens)",
        f"min {stats['length_min']}  mean {stats['length_mean']:.1f}  "
        f"p95 {stats['length_p95']:.0f}  max {stats['length_max']}",
    )
    table.add_row("exchanges", ", ".join(f"{k}: {v}" for k, v in stats["exchanges"].items()))
    multi = stats["multi_intent"]
    table.add_row(
        f"intents ({len(stats['intents'])})",
        ", ".join(f"{k} {v}" for k, v in stats["intents"].items())
        + (f" (conversations per intent; {multi} carry more than one)" if multi else ""),
    )
    if stats["opening"]:
        table.add_row("opening (most conversations)", " | ".join(
            f"{m['role']}: {m['content']}" for m in stats["opening"]))
    Console().print(table)
    return 0
