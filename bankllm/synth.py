"""Deterministic generator of the bundled synthetic banking corpus and its consistency probes.

``bankllm data synth --seed 0 --n 900`` writes ``fixtures/banking_conversations.jsonl`` (records
in the format of ``schemas/conversation.schema.json``) and the probe sets ``inv.jsonl``,
``dir.jsonl`` and ``mft.jsonl`` (``schemas/probes.schema.json``, loaded by
:mod:`bankllm.probes`). The same seed always gives byte-identical files: all randomness comes
from one :class:`random.Random` per output, and every table is iterated in its literal order.

Design of the data (see ``docs/diagnostics.md`` §5 and §7):

* Every intent has customer phrasing templates with slots. :data:`PHRASINGS` are the ones the
  corpus uses; :data:`HELDOUT_PHRASINGS` never occur in the corpus and feed only the probes.
* Every intent has ONE agent answer template (:data:`ANSWERS`). Its text is fixed (a fixed fee
  per intent, fixed policies) except for slot values copied from the request (account type,
  amount, payee, date, ...) and, for the intents in :data:`RANDOM_ANSWER_INTENTS`, values drawn
  at random per conversation that no prompt reveals (a balance, available credit, a due date,
  an exchange rate). The first kind of answer is learnable; the second can only be memorized.
* Slot values stored in a record's ``slots`` are strings exactly as they appear in the text:
  ``account_type`` is one of :data:`ACCOUNT_TYPES`, ``amount`` is e.g. ``"1,250.00"`` (rendered
  ``$1,250.00``), ``date`` is e.g. ``"March 14"``.
* A conversation has 1 to 3 exchanges (customer then agent); a later exchange is another
  request or a closing (intent ``goodbye``). Every message carries its exchange's intent.
"""

from __future__ import annotations

import json
import random
import string
import sys
from collections import Counter
from importlib.resources import files
from pathlib import Path
from typing import Any

from bankllm.entities import ACCOUNT_MENTIONS, ACCOUNT_TYPES, MONTHS

CARD_TYPES: tuple[str, ...] = ("debit card", "credit card")
PAYEES: tuple[str, ...] = (
    "Alex", "Maria", "John", "Sarah", "David", "Emma", "Chris", "Laura", "Sam", "Nina",
)
_MONTH_DAYS = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
CURRENCIES: dict[str, tuple[float, float]] = {
    # currency word -> range of units per US dollar (the rate itself is random per conversation)
    "euros": (0.85, 0.97),
    "pounds": (0.74, 0.84),
    "yen": (140.0, 160.0),
    "pesos": (16.5, 19.5),
}
MONTHLY_FEES: dict[str, str] = {"checking": "$12", "savings": "$5", "credit card": "$0"}
"""Fixed monthly fee per account type (learnable: it follows from the request)."""

# Surface forms of an account type. ``{acct}`` is the adjective ("my savings balance"),
# ``{acct_noun}`` the product ("my savings account", "my credit card"), ``{acct_short}`` the
# clipped form people say ("my credit balance").
_ACCT_NOUN = {"checking": "checking account", "savings": "savings account",
              "credit card": "credit card"}
_ACCT_SHORT = {"checking": "checking", "savings": "savings", "credit card": "credit"}

# ---------------------------------------------------------------------------------------------
# Intent tables, read from resources/synth_tables.json. Order matters (it fixes the random
# stream): JSON objects and arrays keep the order of the file.
# ---------------------------------------------------------------------------------------------

TABLES_FILE = "synth_tables.json"
"""The phrasing and answer tables, shipped in ``bankllm/resources/``."""


def _load_tables() -> dict[str, Any]:
    text = files("bankllm").joinpath("resources", TABLES_FILE).read_text(encoding="utf-8")
    return json.loads(text)


_TABLES = _load_tables()

PHRASINGS: dict[str, tuple[str, ...]] = {
    intent: tuple(templates) for intent, templates in _TABLES["phrasings"].items()
}
"""Customer phrasing templates used in the corpus, per intent."""

HELDOUT_PHRASINGS: dict[str, tuple[str, ...]] = {
    intent: tuple(templates) for intent, templates in _TABLES["heldout_phrasings"].items()
}
"""Customer phrasing templates kept out of the corpus; only the probe sets use them.

``check_balance`` also has templates naming no account type: only the generic "account
balance" paraphrase group uses them."""

ANSWERS: dict[str, str] = dict(_TABLES["answers"])
"""The agent's answer template per intent (one per intent, so most answers are learnable)."""

INTENTS: tuple[str, ...] = tuple(PHRASINGS)
"""All intent names, in table order (``goodbye`` is the closing exchange)."""

CLOSING_INTENT = "goodbye"

RANDOM_ANSWER_INTENTS: tuple[str, ...] = (
    "check_balance", "exchange_rate", "payment_due_date", "credit_limit",
)
"""Intents whose answer contains a value drawn at random per conversation (not learnable)."""

INTENT_ENTITY: dict[str, str] = {
    "interest_rate": "savings",
    "payment_due_date": "credit card",
    "credit_limit": "credit card",
}
"""Account type implied by an intent whose phrasings carry no account-type slot."""

# How often each intent opens a conversation (others 1): the chapter's two core requests.
_INTENT_WEIGHTS = {"check_balance": 3, "transfer_money": 3}
_EXCHANGE_WEIGHTS = ((1, 15), (2, 50), (3, 35))  # exchanges per conversation -> weight
# The last exchange is a closing ("Thanks!") with this chance, and only after at least
# _CLOSING_AFTER requests: short request+closing conversations differ too little from one
# another (rapidfuzz ratio >= 95), which would make the leakage check's near overlap high.
_CLOSING_SHARE = 0.5
_CLOSING_AFTER = 2

# placeholder -> slot key stored in the record
_SLOT_OF_FIELD = {
    "acct": "account_type", "acct_noun": "account_type", "acct_short": "account_type",
    "amount": "amount", "payee": "payee", "date": "date", "month": "month", "card": "card",
    "currency": "currency",
}
_SLOT_ORDER = ("account_type", "card", "amount", "payee", "date", "month", "currency")

def template_slots(template: str) -> tuple[str, ...]:
    """Return the slot keys (e.g. ``("account_type", "amount")``) a phrasing template uses."""
    found = {_SLOT_OF_FIELD[f] for _, f, _, _ in string.Formatter().parse(template) if f}
    return tuple(s for s in _SLOT_ORDER if s in found)


def intent_slots(intent: str) -> tuple[str, ...]:
    """Return the slot keys every corpus phrasing of ``intent`` carries."""
    return template_slots(PHRASINGS[intent][0])


def format_money(amount: str) -> str:
    """Render a slot amount such as ``"1,250.00"`` as it appears in text: ``"$1,250.00"``."""
    return f"${amount}"


# ---------------------------------------------------------------------------------------------
# Random values
# ---------------------------------------------------------------------------------------------


def _money(rng: random.Random, low: int, high: int, round_share: float = 0.0) -> str:
    """A random amount in [low, high] dollars as "1,234.56" (``round_share``: chance of .00)."""
    dollars = rng.randint(low, high)
    cents = 0 if rng.random() < round_share else rng.randint(0, 99)
    return f"{dollars:,}.{cents:02d}"


def _date(rng: random.Random) -> str:
    month = rng.randrange(12)
    return f"{MONTHS[month]} {rng.randint(1, _MONTH_DAYS[month])}"


def _draw_slots(rng: random.Random, slots: tuple[str, ...]) -> dict[str, str]:
    """Random request slot values for the given slot keys (in :data:`_SLOT_ORDER`)."""
    values: dict[str, str] = {}
    for slot in slots:
        if slot == "account_type":
            values[slot] = rng.choice(ACCOUNT_TYPES)
        elif slot == "card":
            values[slot] = rng.choice(CARD_TYPES)
        elif slot == "amount":
            values[slot] = _money(rng, 5, 2500, round_share=0.5)
        elif slot == "payee":
            values[slot] = rng.choice(PAYEES)
        elif slot == "date":
            values[slot] = _date(rng)
        elif slot == "month":
            values[slot] = rng.choice(MONTHS)
        elif slot == "currency":
            values[slot] = rng.choice(tuple(CURRENCIES))
        else:  # pragma: no cover - tables and _SLOT_ORDER agree
            raise ValueError(f"unknown slot {slot!r}")
    return values


def _hidden_values(rng: random.Random, intent: str, slots: dict[str, str]) -> dict[str, str]:
    """Values of an answer that no prompt reveals (random per conversation)."""
    if intent == "check_balance":
        high = 6000 if slots["account_type"] == "credit card" else 25000
        return {"balance": format_money(_money(rng, 0, high))}
    if intent == "exchange_rate":
        low, high = CURRENCIES[slots["currency"]]
        rate = rng.uniform(low, high)
        return {"rate": f"{rate:.2f}"}
    if intent == "payment_due_date":
        return {"due_date": _date(rng), "min_payment": format_money(_money(rng, 25, 150))}
    if intent == "credit_limit":
        limit = rng.choice((2000, 3000, 5000, 7500, 10000, 15000))
        available = _money(rng, 0, limit - 1)
        return {"limit": f"${limit:,}", "available": format_money(available)}
    return {}


def _fields(slots: dict[str, str]) -> dict[str, str]:
    """Template fields (surface forms) for a set of request slot values."""
    fields = dict(slots)
    if "account_type" in slots:
        acct = slots["account_type"]
        fields.update(acct=acct, acct_noun=_ACCT_NOUN[acct], acct_short=_ACCT_SHORT[acct])
    if "amount" in slots:
        fields["amount"] = format_money(slots["amount"])
    return fields


def render_prompt(template: str, slots: dict[str, str]) -> str:
    """Fill a customer phrasing template with request slot values (as stored in ``slots``)."""
    return template.format(**_fields(slots))


def render_answer(intent: str, slots: dict[str, str], hidden: dict[str, str] | None = None) -> str:
    """Fill the agent answer of ``intent`` with the request slots and any hidden values."""
    fields = _fields(slots)
    if intent == "monthly_fee":
        fields["fee"] = MONTHLY_FEES[slots["account_type"]]
    fields.update(hidden or {})
    return ANSWERS[intent].format(**fields)


# ---------------------------------------------------------------------------------------------
# Corpus
# ---------------------------------------------------------------------------------------------


def _exchange(rng: random.Random, intent: str) -> tuple[str, dict[str, str], str, str]:
    """One customer/agent exchange: (intent, slots, customer text, agent text)."""
    template = rng.choice(PHRASINGS[intent])
    slots = _draw_slots(rng, intent_slots(intent))
    hidden = _hidden_values(rng, intent, slots)
    return intent, slots, render_prompt(template, slots), render_answer(intent, slots, hidden)


def synthesize_corpus(seed: int = 0, n: int = 900) -> list[dict[str, Any]]:
    """Generate ``n`` conversation records (deterministic in ``seed``).

    Each record is ``{"id", "intent", "slots", "messages"}`` as in
    ``schemas/conversation.schema.json``; ``intent``/``slots`` are those of the first exchange,
    and every message carries the intent of its exchange.
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    rng = random.Random(seed)
    requests = tuple(i for i in INTENTS if i != CLOSING_INTENT)
    weights = tuple(_INTENT_WEIGHTS.get(i, 1) for i in requests)
    lengths = tuple(k for k, _ in _EXCHANGE_WEIGHTS)
    length_weights = tuple(w for _, w in _EXCHANGE_WEIGHTS)
    width = max(4, len(str(n)))
    records: list[dict[str, Any]] = []
    for index in range(1, n + 1):
        n_exchanges = rng.choices(lengths, length_weights)[0]
        exchanges: list[tuple[str, dict[str, str], str, str]] = []
        for position in range(n_exchanges):
            last = position == n_exchanges - 1
            if position >= _CLOSING_AFTER and last and rng.random() < _CLOSING_SHARE:
                intent = CLOSING_INTENT
            else:
                intent = rng.choices(requests, weights)[0]
            exchange = _exchange(rng, intent)
            while any(exchange[2] == previous[2] for previous in exchanges):
                exchange = _exchange(rng, intent)  # never repeat a question verbatim
            exchanges.append(exchange)
        messages: list[dict[str, str]] = []
        for intent, _, customer, agent in exchanges:
            messages.append({"role": "customer", "content": customer, "intent": intent})
            messages.append({"role": "agent", "content": agent, "intent": intent})
        records.append({
            "id": f"conv-{index:0{width}d}",
            "intent": exchanges[0][0],
            "slots": exchanges[0][1],
            "messages": messages,
        })
    return records


# ---------------------------------------------------------------------------------------------
# Probes (design §7): INV paraphrase groups, DIR entity swaps, MFT novel prompts
# ---------------------------------------------------------------------------------------------

CHAPTER_BALANCE_PROMPTS: tuple[str, ...] = (
    "What is my account balance?", "What is my savings balance?", "What is my credit balance?",
)
CHAPTER_NOVEL_PROMPT = "What is your overdraft fee?"

# DIR swaps: intents whose request names an account type, and how many slot draws per
# held-out template (a draw that repeats an earlier probe, as every draw of a template with
# no other slot does, is skipped).
# Probe set sizes: enough items that the 95% intervals of the probe checks decide a line on
# a healthy run (docs/diagnostics.md); the probes are held out of the corpus, so their number
# changes no training data.
_DIR_DRAWS = {
    "check_balance": 4, "transfer_money": 6, "monthly_fee": 4, "open_account": 4,
    "close_account": 4, "statement_request": 4,
}
_INV_GROUPS = 4  # paraphrase groups per intent with slots (distinct slot values each)
_INV_EXTRA_GROUPS = {"check_balance": 2, "transfer_money": 2}  # more groups for core intents
# prompts per paraphrase group, the first held-out phrasings: consistency counts agreeing pairs,
# so a group of n prompts weighs about n^2, and one long group would outweigh the rest
_INV_MAX_PROMPTS = 5
_MFT_PER_INTENT = 4
_MAX_REDRAWS = 50


def _entity(intent: str, slots: dict[str, str]) -> str | None:
    if "account_type" in slots:
        return slots["account_type"]
    if slots.get("card") == "credit card":
        return "credit card"
    return INTENT_ENTITY.get(intent)


def synthesize_probes(seed: int = 0) -> dict[str, list[dict[str, Any]]]:
    """Generate the probe sets ``{"inv": [...], "dir": [...], "mft": [...]}`` (deterministic).

    Every prompt comes from :data:`HELDOUT_PHRASINGS`, so none occurs in the corpus. Records
    follow ``schemas/probes.schema.json``.
    """
    rng = random.Random(f"bankllm-probes-{seed}")
    requests = tuple(i for i in INTENTS if i != CLOSING_INTENT)

    inv: list[dict[str, Any]] = []

    def add_group(intent: str, templates: tuple[str, ...], slots: dict[str, str]) -> None:
        prompts = [render_prompt(t, slots) for t in templates]
        if any(g["prompts"] == prompts for g in inv):
            return  # a copy adds no evidence, only false confidence to the intervals
        inv.append({
            "id": f"inv-{len(inv) + 1:03d}",
            "intent": intent,
            "entity": _entity(intent, slots),
            "prompts": prompts,
        })

    generic_balance = tuple(
        t for t in HELDOUT_PHRASINGS["check_balance"] if not template_slots(t)
    )
    add_group("check_balance", generic_balance, {})
    for intent in requests:
        full = intent_slots(intent)
        templates = tuple(t for t in HELDOUT_PHRASINGS[intent]
                          if template_slots(t) == full)[:_INV_MAX_PROMPTS]
        draws = (_INV_GROUPS if full else 1) + _INV_EXTRA_GROUPS.get(intent, 0)
        used: list[dict[str, str]] = []
        for k in range(draws):
            if intent == "check_balance":  # one group per account type
                slots = {"account_type": ACCOUNT_TYPES[k % len(ACCOUNT_TYPES)]}
            else:
                slots = _draw_slots(rng, full)
                for _ in range(_MAX_REDRAWS):  # distinct slot values, while there are any
                    if slots not in used:
                        break
                    slots = _draw_slots(rng, full)
                else:
                    break
            used.append(slots)
            add_group(intent, templates, slots)

    dir_: list[dict[str, Any]] = []
    for intent, draws in _DIR_DRAWS.items():
        full = intent_slots(intent)
        templates = tuple(t for t in HELDOUT_PHRASINGS[intent] if template_slots(t) == full)
        for template in templates:
            for _ in range(draws):
                base = _draw_slots(rng, full)
                variants = [{"entity": acct,
                             "prompt": render_prompt(template, {**base, "account_type": acct}),
                             "mentions": list(ACCOUNT_MENTIONS[acct])} for acct in ACCOUNT_TYPES]
                if any(r["variants"] == variants for r in dir_):
                    continue  # the same draw again (a template with no other slot): a copy
                dir_.append({"id": f"dir-{len(dir_) + 1:03d}", "intent": intent,
                             "variants": variants})

    mft: list[dict[str, Any]] = []
    seen: set[str] = set()
    for intent in requests:
        templates = list(HELDOUT_PHRASINGS[intent])
        picks = rng.sample(templates, min(_MFT_PER_INTENT, len(templates)))
        if intent == "overdraft_fee" and CHAPTER_NOVEL_PROMPT not in picks:
            picks[0] = CHAPTER_NOVEL_PROMPT
        for template in picks:
            slots = _draw_slots(rng, template_slots(template))
            prompt = render_prompt(template, slots)
            if prompt in seen:
                continue
            seen.add(prompt)
            entity = _entity(intent, slots)
            mft.append({
                "id": f"mft-{len(mft) + 1:03d}",
                "intent": intent,
                "entity": entity,
                "prompt": prompt,
            })
    return {"inv": inv, "dir": dir_, "mft": mft}


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------

PROBE_FILES: dict[str, str] = {"inv": "inv.jsonl", "dir": "dir.jsonl", "mft": "mft.jsonl"}
"""File name of each probe kind inside the probes directory."""


def cli_synth(args: Any) -> int:
    """``bankllm data synth``: write the corpus (and probes unless ``--probes-dir ''``)."""
    from bankllm.errors import BankLLMError
    from bankllm.fileio import atomic_write_jsonl, load_schema, validate_json

    if args.n < 1:
        raise BankLLMError(f"--n must be at least 1, got {args.n}")
    records = synthesize_corpus(seed=args.seed, n=args.n)
    schema = load_schema("bankllm", "conversation.schema.json")
    for record in records:
        validate_json(record, schema, f"generated {record['id']}")
    output = Path(args.output)
    try:
        atomic_write_jsonl(output, records)
    except OSError as exc:
        raise BankLLMError(f"{output}: cannot write corpus ({exc})") from None
    lengths = Counter(len(r["messages"]) // 2 for r in records)
    summary = (
        f"wrote {len(records)} conversations to {output} "
        f"({len({r['intent'] for r in records})} intents; exchanges "
        + ", ".join(f"{k}: {lengths[k]}" for k in sorted(lengths)) + ")"
    )
    if args.probes_dir:
        probes = synthesize_probes(seed=args.seed)
        directory = Path(args.probes_dir)
        try:
            for kind, name in PROBE_FILES.items():
                atomic_write_jsonl(directory / name, probes[kind])
        except OSError as exc:
            raise BankLLMError(f"{directory}: cannot write probes ({exc})") from None
        summary += "; probes " + ", ".join(
            f"{len(probes[k])} {k}" for k in PROBE_FILES
        ) + f" in {directory}"
    print(summary, file=sys.stdout)
    return 0
