"""Audit a corpus for label noise before training: answers naming the wrong entity, and
near-identical customer turns labelled with conflicting intents.

Pure functions on conversation dicts (``schemas/conversation.schema.json``) that return counts
and examples; the verdict is the ``data_consistency`` check's
(``diagnostics/analyses/data_consistency.py``), and ``bankllm data audit FILE`` prints the same
table from the corpus alone. Definitions (docs/diagnostics.md, ``data_consistency``):

* An **exchange** is a customer turn and the agent turn that directly follows it (system turns
  are skipped). Its **intent label** is the agent turn's ``intent``, else the customer turn's,
  else, for a conversation's first exchange only, the conversation's ``intent``; else none.
* **Entity kinds** compared: ``account_type`` (checking / savings / credit card, as
  :func:`bankllm.synth.mentioned_account_types` finds them), ``amount`` (``$`` amounts compared
  to the cent: ``$1,250`` equals ``$1,250.00``) and ``payee`` (a name from the corpus's
  ``slots["payee"]`` values, or a capitalised word right after to / for / pay / paid / paying /
  send / sent, months and weekdays excepted).
* An exchange is **eligible** for a kind when the customer turn names exactly one entity of that
  kind, the agent turn names at least one, and its intent label **echoes** the kind: in this
  corpus at least ``echo_min_share`` (half) of that intent's such exchanges repeat the
  customer's entity, or conclusively more of them than chance (:func:`echoes`); an intent whose
  answers legitimately name another amount, such as a fee asked about a withdrawal, is not
  compared. It is a **mismatch** when none of the agent's
  entities of that kind is the customer's. The exchange counts once however many kinds it is
  eligible for, and is a mismatch when any kind mismatches.
* Customer turns with an intent label are normalised (:func:`bankllm.tokenizer.normalise_text`);
  two are **near-identical** when equal or their ``rapidfuzz`` ratio is at least ``near_ratio``.
  A **cluster** is a connected group of near-identical turns with at least two turns; it
  **conflicts** when its turns carry more than one intent label (equivalently: some pair of
  near-identical turns in it is labelled differently).

Both shares get the Wilson score interval (exchanges and clusters counted as independent
items); a share whose whole interval lies above its line (:data:`MAX_ENTITY_MISMATCH`,
:data:`MAX_INTENT_CONFLICT`) is above the line.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from bankllm.entities import MONTHS, mentioned_account_types
from bankllm.errors import BankLLMError
from bankllm.intervals import wilson
from bankllm.tokenizer import normalise_text

MAX_ENTITY_MISMATCH = 0.05
"""Line for the share of eligible exchanges whose answer names another entity. Label noise of
more than a few percent measurably hurts a small model trained on it (the model learns the
wrong mapping at the noise rate and its faithfulness drops), so 5% is where to stop."""
MAX_INTENT_CONFLICT = 0.05
"""Line for the share of near-identical customer-turn clusters whose intent labels conflict."""
NEAR_RATIO = 95
"""``rapidfuzz`` ratio at or above which two normalised customer turns are near-identical (the
leakage check's near-duplicate line)."""
ECHO_MIN_SHARE = 0.5
"""An intent echoes an entity kind when at least this share of its comparable exchanges repeat
the customer's entity in the answer."""
MAX_EXAMPLES = 10
"""Examples kept per finding, worst first."""

ENTITY_KINDS: tuple[str, ...] = ("account_type", "amount", "payee")
UNLABELLED = "(none)"

_MONEY_RE = re.compile(r"\$\s?(\d{1,3}(?:,\d{3})+|\d+)(\.\d+)?")
_CUE_NAME_RE = re.compile(r"\b(?:to|for|pay|paid|paying|send|sent)\s+([A-Z][a-z]+)\b",
                          re.IGNORECASE)
_NOT_NAMES = frozenset({*MONTHS, "Monday", "Tuesday", "Wednesday", "Thursday", "Friday",
                        "Saturday", "Sunday", "Today", "Tomorrow"})
_CELLS_PER_CHUNK = 4_000_000  # bound one rapidfuzz score block to ~16 MB


@dataclass(frozen=True)
class Exchange:
    """One customer turn and the agent turn answering it."""

    conversation: str  # conversation id
    number: int  # 1-based exchange number within the conversation
    customer: str
    agent: str
    intent: str | None


def exchanges(conversations: Iterable[dict[str, Any]]) -> list[Exchange]:
    """The exchanges of ``conversations`` in order, with their intent labels (module doc)."""
    found: list[Exchange] = []
    for conv in conversations:
        turns = [m for m in conv["messages"] if m["role"] != "system"]
        number = 0
        for question, answer in zip(turns, turns[1:], strict=False):
            if question["role"] != "customer" or answer["role"] != "agent":
                continue
            number += 1
            label = answer.get("intent") or question.get("intent")
            if not label and number == 1:
                label = conv.get("intent")
            found.append(Exchange(str(conv["id"]), number, question["content"],
                                  answer["content"], label or None))
    return found


def payee_names(conversations: Iterable[dict[str, Any]]) -> frozenset[str]:
    """Payee names the corpus declares in its records' ``slots["payee"]``."""
    names = set()
    for conv in conversations:
        value = (conv.get("slots") or {}).get("payee")
        if isinstance(value, str) and value.strip():
            names.add(value.strip())
    return frozenset(names)


def _money(text: str) -> set[str]:
    amounts = set()
    for whole, cents in _MONEY_RE.findall(text):
        try:
            amounts.add(f"${Decimal(whole.replace(',', '') + (cents or '')):,.2f}")
        except InvalidOperation:  # pragma: no cover - the regex only matches numbers
            continue
    return amounts


def mentions(text: str, kind: str, payees: frozenset[str] = frozenset()) -> set[str]:
    """The entities of ``kind`` (one of :data:`ENTITY_KINDS`) that ``text`` names."""
    if kind == "account_type":
        return set(mentioned_account_types(text))
    if kind == "amount":
        return _money(text)
    if kind == "payee":
        named = {m.capitalize() for m in _CUE_NAME_RE.findall(text) if m[0].isupper()}
        named |= {p for p in payees if re.search(rf"\b{re.escape(p)}\b", text)}
        return {n for n in named if n not in _NOT_NAMES}
    raise ValueError(f"unknown entity kind {kind!r}")


@dataclass
class EntityAudit:
    """Mismatched entities over eligible exchanges (module doc)."""

    eligible: int = 0
    mismatched: int = 0
    hits: list[int] = field(default_factory=list)  # one 0/1 per eligible exchange
    by_intent: dict[str, list[int]] = field(default_factory=dict)  # the hits of each label
    per_kind: dict[str, dict[str, int]] = field(default_factory=dict)
    not_echoing: dict[str, list[str]] = field(default_factory=dict)  # kind -> intents skipped
    examples: list[dict[str, Any]] = field(default_factory=list)


def echoes(pairs: Sequence[tuple[str, set[str]]], min_share: float = ECHO_MIN_SHARE,
           alpha: float = 0.05) -> bool:
    """Whether an intent's answers repeat the customer's entity: in at least ``min_share`` of
    its ``(asked, answered)`` pairs, or conclusively more often than chance, the share that
    pairing each question with a random answer of the same intent would give (one-sided
    binomial test at ``alpha``). The second clause keeps an intent whose answers are mostly
    corrupted in the audit while they still follow the question more than chance; answers
    that follow it less than chance look like an intent that names other entities."""
    from scipy.stats import binomtest

    n = len(pairs)
    hits = sum(asked in answered for asked, answered in pairs)
    if n == 0 or hits >= min_share * n:
        return n > 0
    asked = Counter(a for a, _ in pairs)
    named = Counter(e for _, answered in pairs for e in answered)
    chance = sum(asked[e] * named[e] for e in asked) / (n * n)
    return 0 < chance < 1 and binomtest(hits, n, chance, alternative="greater").pvalue < alpha


def audit_entities(conversations: Sequence[dict[str, Any]], echo_min_share: float = ECHO_MIN_SHARE,
                   max_examples: int = MAX_EXAMPLES) -> EntityAudit:
    """Exchanges whose answer names an entity other than the one the customer asked about.

    Examples (at most ``max_examples``) worst first: most kinds mismatched, then the most
    frequent (kind, asked, answered) pattern (a systematic error before a one-off), then
    corpus order."""
    payees = payee_names(conversations)
    items = exchanges(conversations)
    # kind -> per exchange: (asked, answered) when comparable, else None
    comparable: dict[str, list[tuple[str, set[str]] | None]] = {}
    for kind in ENTITY_KINDS:
        rows: list[tuple[str, set[str]] | None] = []
        for ex in items:
            asked, answered = mentions(ex.customer, kind, payees), mentions(ex.agent, kind, payees)
            rows.append((next(iter(asked)), answered) if len(asked) == 1 and answered else None)
        comparable[kind] = rows
    out = EntityAudit()
    mismatch_kinds: list[list[tuple[str, str, set[str]]]] = [[] for _ in items]
    eligible = [False] * len(items)
    for kind, rows in comparable.items():
        by_label: dict[str, list[tuple[str, set[str]]]] = {}
        for ex, row in zip(items, rows, strict=True):
            if row is not None:
                by_label.setdefault(ex.intent or UNLABELLED, []).append(row)
        echoing = {i for i, pairs in by_label.items() if echoes(pairs, echo_min_share)}
        out.not_echoing[kind] = sorted(set(by_label) - echoing)
        counts = {"eligible": 0, "mismatched": 0}
        for j, (ex, row) in enumerate(zip(items, rows, strict=True)):
            if row is None or (ex.intent or UNLABELLED) not in echoing:
                continue
            eligible[j] = True
            counts["eligible"] += 1
            if row[0] not in row[1]:
                counts["mismatched"] += 1
                mismatch_kinds[j].append((kind, row[0], row[1]))
        out.per_kind[kind] = counts
    patterns = Counter((k, a, tuple(sorted(b))) for found in mismatch_kinds for k, a, b in found)
    ranked = []
    for j, ex in enumerate(items):
        if not eligible[j]:
            continue
        out.eligible += 1
        out.hits.append(int(bool(mismatch_kinds[j])))
        out.by_intent.setdefault(ex.intent or UNLABELLED, []).append(out.hits[-1])
        if mismatch_kinds[j]:
            out.mismatched += 1
            found = mismatch_kinds[j]
            weight = max(patterns[(k, a, tuple(sorted(b)))] for k, a, b in found)
            ranked.append((-len(found), -weight, j))
    for _, _, j in sorted(ranked)[:max_examples]:
        ex = items[j]
        out.examples.append({
            "conversation": ex.conversation, "exchange": ex.number, "intent": ex.intent,
            "kinds": [k for k, _, _ in mismatch_kinds[j]],
            "asked": "; ".join(a for _, a, _ in mismatch_kinds[j]),
            "answered": "; ".join(", ".join(sorted(b)) for _, _, b in mismatch_kinds[j]),
            "customer": ex.customer, "agent": ex.agent,
        })
    return out


@dataclass
class IntentAudit:
    """Near-identical customer-turn clusters with conflicting intent labels (module doc)."""

    labelled_turns: int = 0
    clusters: int = 0
    conflicting: int = 0
    hits: list[int] = field(default_factory=list)  # one 0/1 per cluster
    examples: list[dict[str, Any]] = field(default_factory=list)


def _near_pairs(texts: Sequence[str], cutoff: float) -> Iterable[tuple[int, int]]:
    """Index pairs ``i < j`` of ``texts`` whose rapidfuzz ratio is at least ``cutoff``."""
    import numpy as np
    from rapidfuzz import fuzz, process

    if len(texts) < 2:
        return
    rows = max(1, _CELLS_PER_CHUNK // len(texts))
    for start in range(0, len(texts), rows):
        block = process.cdist(texts[start:start + rows], texts, scorer=fuzz.ratio,
                              score_cutoff=cutoff, dtype=np.float32, workers=1)
        for i, j in zip(*np.nonzero(block >= cutoff), strict=True):
            if start + i < j:
                yield int(start + i), int(j)


def audit_intents(conversations: Sequence[dict[str, Any]], near_ratio: float = NEAR_RATIO,
                  max_examples: int = MAX_EXAMPLES) -> IntentAudit:
    """Clusters of near-identical labelled customer turns and those whose labels conflict.

    Examples (at most ``max_examples``) worst first: most turns outside the cluster's majority
    label, then the largest cluster; each shows one turn per label."""
    out = IntentAudit()
    turns: dict[str, list[tuple[str, Exchange]]] = defaultdict(list)  # normal form -> turns
    for ex in exchanges(conversations):
        if ex.intent:
            out.labelled_turns += 1
            turns[normalise_text(ex.customer)].append((ex.intent, ex))
    texts = sorted(turns)
    parent = list(range(len(texts)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in _near_pairs(texts, near_ratio):
        parent[root(i)] = root(j)
    groups: dict[int, list[int]] = defaultdict(list)
    for i in range(len(texts)):
        groups[root(i)].append(i)
    ranked = []
    for members in groups.values():
        labelled = [pair for i in members for pair in turns[texts[i]]]
        if len(labelled) < 2:
            continue
        out.clusters += 1
        labels = Counter(label for label, _ in labelled)
        conflict = len(labels) > 1
        out.hits.append(int(conflict))
        if conflict:
            minority = len(labelled) - labels.most_common(1)[0][1]
            ranked.append((-minority, -len(labelled), texts[members[0]], labelled, labels))
    out.conflicting = sum(out.hits)
    for minority, _, _, labelled, labels in sorted(ranked, key=lambda r: r[:3])[:max_examples]:
        first: dict[str, Exchange] = {}
        for label, ex in labelled:
            first.setdefault(label, ex)
        out.examples.append({
            "turns": len(labelled), "minority": -minority,
            "intents": ", ".join(f"{k} {v}" for k, v in labels.most_common()),
            "texts": " | ".join(f"{label}: {ex.customer}" for label, ex in first.items()),
            "conversations": ", ".join(f"{ex.conversation}#{ex.number}"
                                       for ex in first.values()),
        })
    return out


@dataclass
class Audit:
    """Both findings on one corpus."""

    conversations: int
    exchanges: int
    entities: EntityAudit
    intents: IntentAudit


def audit_corpus(conversations: Sequence[dict[str, Any]], near_ratio: float = NEAR_RATIO,
                 echo_min_share: float = ECHO_MIN_SHARE,
                 max_examples: int = MAX_EXAMPLES) -> Audit:
    """Entity mismatches and intent conflicts of ``conversations`` (counts and examples)."""
    return Audit(len(conversations), len(exchanges(conversations)),
                 audit_entities(conversations, echo_min_share, max_examples),
                 audit_intents(conversations, near_ratio, max_examples))


def _side(hits: int, n: int, line: float) -> str:
    """Where the Wilson interval of ``hits`` in ``n`` lies against ``line``."""
    low, high = wilson(hits, n)
    if n == 0:
        return "nothing to compare"
    return "ABOVE the line" if low > line else "below the line" if high <= line else "inconclusive"


def cli_audit(args: Any) -> int:
    """``bankllm data audit FILE``: print the audit; 1 when a share's interval lies wholly above
    its line (the entity-mismatch share overall or of one intent label, the intent-conflict
    share), else 0. Bad input raises :class:`~bankllm.errors.BankLLMError` (exit 2)."""
    from rich.console import Console
    from rich.table import Table

    from bankllm.data import load_conversations

    if args.examples < 0:
        raise BankLLMError(f"--examples must be >= 0, got {args.examples}")
    audit = audit_corpus(load_conversations(args.file), max_examples=args.examples)
    ent, its = audit.entities, audit.intents
    console = Console()
    summary = Table(title=f"{args.file}: data consistency ({audit.conversations} "
                          f"conversations, {audit.exchanges} exchanges)")
    for column in ("finding", "count", "share", "95% CI (Wilson)", "line", "where"):
        summary.add_column(column)
    above, inconclusive = False, []

    def row(name: str, k: int, n: int, unit: str, line: float, judged: bool = True) -> None:
        nonlocal above
        low, high = wilson(k, n)
        side = _side(k, n, line)
        above = above or (judged and side == "ABOVE the line")
        if judged and side == "inconclusive":
            inconclusive.append(name.strip())
        summary.add_row(name, f"{k} / {n} {unit}", f"{k / n:.1%}" if n else "-",
                        f"{low:.1%} to {high:.1%}" if n else "-", f"{line:.0%}",
                        side if judged or side == "ABOVE the line" else "")

    row("entity mismatch", ent.mismatched, ent.eligible, "eligible exchanges",
        MAX_ENTITY_MISMATCH)
    for label, hits in sorted(ent.by_intent.items(), key=lambda kv: -sum(kv[1]) / len(kv[1])):
        if sum(hits):  # an intent counts only when it lies above the line
            row(f"  intent {label}", sum(hits), len(hits), "", MAX_ENTITY_MISMATCH, False)
            above = above or _side(sum(hits), len(hits), MAX_ENTITY_MISMATCH) == "ABOVE the line"
    for kind, counts in ent.per_kind.items():
        skipped = ent.not_echoing.get(kind)
        note = f"not compared: {', '.join(skipped)}" if skipped else ""
        summary.add_row(f"  {kind}", f"{counts['mismatched']} / {counts['eligible']}", "", "",
                        "", note)
    row("intent conflict", its.conflicting, its.clusters, "near-identical clusters",
        MAX_INTENT_CONFLICT)
    console.print(summary)
    if ent.examples:
        table = Table(title="Entity mismatches (worst first)")
        for column in ("exchange", "intent", "kind", "asked", "answered", "customer", "agent"):
            table.add_column(column)
        for ex in ent.examples:
            table.add_row(f"{ex['conversation']}#{ex['exchange']}", ex["intent"] or UNLABELLED,
                          ", ".join(ex["kinds"]), ex["asked"], ex["answered"], ex["customer"],
                          ex["agent"])
        console.print(table)
    if its.examples:
        table = Table(title="Conflicting intents on near-identical customer turns (worst first)")
        for column in ("turns", "intents", "customer turns", "exchanges"):
            table.add_column(column)
        for ex in its.examples:
            table.add_row(str(ex["turns"]), ex["intents"], ex["texts"], ex["conversations"])
        console.print(table)
    if above:
        console.print("ABOVE a line: exit 1")
    elif inconclusive:
        console.print(f"nothing conclusively above a line; inconclusive: {', '.join(inconclusive)} "
                      "(its interval reaches the line: more data would settle it): exit 0")
    else:
        console.print("nothing above the lines: exit 0")
    return 1 if above else 0
