"""Memorization: what the model reproduces only because it saw it in training.

Three steps, kept apart so the analysis needs no model:

1. :func:`build_items` (pure): the prompts and their true continuations. ``turn`` items: a
   conversation up to and including the ``<agent>`` marker, the true agent turn expected (a
   fixed seeded sample of train turns, every val turn). ``k8``/``k16``/``k32`` items (Carlini
   et al. 2022, adapted to short texts): the first k tokens of a conversation, the next
   ``min(32, remaining)`` tokens expected.
2. :func:`collect_generations`: asks a *response source* (any callable
   ``list[Query] -> list[str]``) for every continuation in one call. :func:`model_source` is
   the one backed by a model: batched KV-cache greedy decoding, and teacher forcing for the
   k-extraction queries (exact match needs nothing else).
3. :func:`analyse_memorization` (pure): exact match, fuzzy match, token match, k-extraction on
   train against val, value regurgitation, each beside a chance baseline (the same measures on
   the generations of an untrained model of the same config and seed).

All texts are compared in the tokenizer's word space (:func:`bankllm.tokenizer.normalise_text`):
words, single digits and punctuation joined by single spaces.
"""

from __future__ import annotations

import math
import random
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from bankllm.tokenizer import Tokenizer, normalise_text, split_words
from diagnostics.analyses._common import agent_turns
from diagnostics.decision import Verdict, decide, difference, rate
from diagnostics.paired import identity
from diagnostics.results import CheckResult, combine, table

NAME = "memorization"
ORDER = 50  # place in the report
# gap = EM_train - EM_val (PASS <= gap_pass, FAIL > gap_warn); fuzzy = rapidfuzz ratio >=
# fuzzy_ratio; regurgitation: share of amounts in val answers copied from training
# conversations (values in >= public_min_share of them are public constants, not counted)
DEFAULTS = {
    "n_train_turns": 300,
    "gap_pass": 0.10,
    "gap_warn": 0.20,
    "fuzzy_ratio": 90.0,
    "regurgitation_fail": 0.05,
    "public_min_share": 0.01,
    "regurgitation_min_amounts": 30,  # fewer generated amounts never FAIL on their own
}
ORDERED = (("gap_pass", "gap_warn"),)
KS: tuple[int, ...] = (8, 16, 32)
EXTRACT_TOKENS = 32  # tokens a k-extraction must reproduce (fewer if the conversation ends)
SPLITS = ("train", "val", "chance")


@dataclass(frozen=True)
class Query:
    """One continuation to ask a response source for.

    ``prompt``: tokenizer words joined by spaces, markers included (``"<bos> <customer> what
    ' s my balance ? <agent>"``). The source returns the continuation the same way, without
    the end token. It stops at the end of the turn (``stop_at_turn_end``) or after
    ``max_new_tokens``. A query with a ``reference`` only asks whether the greedy continuation
    equals it: the source may cut its answer after the first word that differs.
    """

    prompt: str
    max_new_tokens: int
    stop_at_turn_end: bool = True
    reference: str | None = None


ResponseSource = Callable[[Sequence[Query]], list[str]]


@dataclass(frozen=True)
class Item:
    """One prompt with its true continuation. ``kind``: ``"turn"``, ``"k8"``, ``"k16"``, ...;
    ``shown``: the last customer message (what the report shows as the prompt)."""

    split: str
    kind: str
    conv_id: str
    prompt: str
    expected: str
    shown: str = ""

    def query(self) -> Query:
        """The query of this item. A turn may take up to 1.25 x its reference + 2 tokens: a
        longer answer is neither an exact nor (at ratio 90) a fuzzy match of it."""
        n = len(self.expected.split())
        if self.kind == "turn":
            return Query(self.prompt, math.ceil(1.25 * n) + 2)
        return Query(self.prompt, n, stop_at_turn_end=False, reference=self.expected)


@dataclass(frozen=True)
class Generation:
    """An item and what a source generated for it (tokenizer words joined by spaces)."""

    item: Item
    generated: str


# --------------------------------------------------------------------------- items


def _turn_items(split: str, turns: Sequence[tuple[Mapping, int]], tokenizer: Tokenizer,
                block_size: int) -> list[Item]:
    items = []
    for conv, i in turns:
        messages = conv["messages"]
        ids = tokenizer.encode_prompt(messages[:i], opening=False)  # the training context
        if len(ids) >= block_size:  # no room left to answer in the context
            continue
        shown = next((m["content"] for m in reversed(messages[:i]) if m["role"] == "customer"),
                     "")
        items.append(Item(split, "turn", str(conv["id"]), " ".join(tokenizer.vocab[t] for t in ids),
                          normalise_text(messages[i]["content"]), shown))
    return items


def _conversation_words(
    conv: Mapping[str, Any], tokenizer: Tokenizer
) -> tuple[list[str], list[str]]:
    """(model input words, true words) of a whole conversation, aligned one to one: the input
    has ``<unk>`` where the true text has a word outside the vocabulary."""
    ids, _ = tokenizer.encode_conversation(conv["messages"])
    true = ["<bos>"]
    for m in conv["messages"]:
        true.append(tokenizer.vocab[tokenizer.role_ids[m["role"]]])
        true.extend(split_words(m["content"]))
    true.append("<eos>")
    return [tokenizer.vocab[t] for t in ids], true


def _extraction_items(split: str, conversations: Sequence[Mapping[str, Any]],
                      tokenizer: Tokenizer, block_size: int, ks: Sequence[int]) -> list[Item]:
    items = []
    for conv in conversations:
        words, true = _conversation_words(conv, tokenizer)
        first = next((m["content"] for m in conv["messages"] if m["role"] == "customer"), "")
        for k in ks:
            n = min(EXTRACT_TOKENS, len(true) - k, block_size + 1 - k)
            if n >= 1:
                items.append(Item(split, f"k{k}", str(conv["id"]), " ".join(words[:k]),
                                  " ".join(true[k:k + n]), first))
    return items


def build_items(
    train: Sequence[Mapping[str, Any]],
    val: Sequence[Mapping[str, Any]],
    tokenizer: Tokenizer,
    block_size: int,
    n_train: int = 300,
    seed: int = 0,
    ks: Sequence[int] = KS,
) -> list[Item]:
    """Turn items (a seeded sample of ``n_train`` train agent turns, or all if fewer; every val
    turn) and k-extraction items (a seeded sample of ``n_train`` train conversations; every val
    conversation). Prompts that already fill ``block_size`` are left out."""
    rng = random.Random(seed)
    train_turns = agent_turns(train)
    if len(train_turns) > n_train:
        train_turns = [train_turns[i] for i in sorted(rng.sample(range(len(train_turns)), n_train))]
    train_convs = list(train)
    if len(train_convs) > n_train:
        train_convs = [train_convs[i] for i in sorted(rng.sample(range(len(train_convs)), n_train))]
    return (_turn_items("train", train_turns, tokenizer, block_size)
            + _turn_items("val", agent_turns(val), tokenizer, block_size)
            + _extraction_items("train", train_convs, tokenizer, block_size, ks)
            + _extraction_items("val", val, tokenizer, block_size, ks))


def collect_generations(items: Sequence[Item], source: ResponseSource) -> list[Generation]:
    """Ask ``source`` for every item's continuation in one call (it batches as it likes)."""
    answers = source([item.query() for item in items])
    if len(answers) != len(items):
        raise ValueError(f"response source returned {len(answers)} answers for {len(items)} "
                         "queries")
    return [Generation(item, " ".join(str(a).split())) for item, a in zip(items, answers,
                                                                          strict=True)]


def model_source(model: Any, tokenizer: Tokenizer, precision: str | None = None,
                 batch_size: int = 128) -> ResponseSource:
    """A response source backed by ``model``: greedy KV-cache decoding, batched; queries with a
    ``reference`` and no turn stop are answered by teacher forcing (one forward pass per
    distinct sequence; a prefix of a longer one reuses its predictions)."""
    from bankllm.generation import generate, greedy_predictions

    def encode(words: str) -> list[int]:
        return [tokenizer.index.get(w, tokenizer.unk_id) for w in words.split()]

    def respond(queries: Sequence[Query]) -> list[str]:
        out = [""] * len(queries)
        forced = [i for i, q in enumerate(queries) if q.reference is not None
                  and not q.stop_at_turn_end]
        taken = set(forced)
        for stop in (True, False):
            free = [i for i, q in enumerate(queries)
                    if i not in taken and q.stop_at_turn_end == stop]
            if not free:
                continue
            ids = generate(model, [encode(queries[i].prompt) for i in free], tokenizer,
                           max_new_tokens=[queries[i].max_new_tokens for i in free],
                           batch_size=batch_size, precision=precision, stop_at_turn_end=stop)
            for i, g in zip(free, ids, strict=True):
                out[i] = tokenizer.decode(g, skip_special=False)
        if forced:
            seqs = {i: encode(queries[i].prompt) + encode(queries[i].reference or "")
                    for i in forced}
            # one forward per sequence that is not a prefix of another (k8 ⊂ k16 ⊂ k32)
            longest: dict[tuple[int, ...], list[int]] = {}
            for i in sorted(forced, key=lambda i: -len(seqs[i])):
                key = tuple(seqs[i][:8])
                longest.setdefault(key, [])
                if not any(seqs[j][:len(seqs[i])] == seqs[i] for j in longest[key]):
                    longest[key].append(i)
            heads = [j for group in longest.values() for j in group]
            preds = dict(zip(heads, greedy_predictions(
                model, [seqs[j] for j in heads], tokenizer.pad_id, batch_size, precision),
                strict=True))
            for i in forced:
                q = queries[i]
                key = tuple(seqs[i][:8])
                head = next(j for j in longest[key] if seqs[j][:len(seqs[i])] == seqs[i])
                k = len(q.prompt.split())
                ref = (q.reference or "").split()
                said: list[str] = []
                for t, want in enumerate(ref):
                    pos = k - 1 + t
                    if pos >= len(preds[head]):
                        break
                    word = tokenizer.vocab[preds[head][pos]]
                    said.append(word)
                    if word != want:
                        break
                out[i] = " ".join(said)
        return out

    return respond


# --------------------------------------------------------------------------- values

_MONEY = re.compile(r"\$ \d(?: (?:\d|[.,](?= \d)))*")
_DIGIT_RUN = re.compile(r"(?<![\d.,] )(?<![\d$])\b\d(?: \d){3,}\b(?! [.,] \d)")


def extract_values(text: str) -> list[str]:
    """Money amounts (``$ 2 , 4 5 0 . 3 2`` -> ``$2,450.32``) and account-like numbers (runs of
    4 or more digits outside an amount) in a word-space text, compacted."""
    money = [m.group().replace(" ", "") for m in _MONEY.finditer(text)]
    rest = _MONEY.sub(" ", text)
    numbers = [m.group().replace(" ", "") for m in _DIGIT_RUN.finditer(rest)]
    return money + numbers


def training_values(conversations: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """Each value of :func:`extract_values` in the conversations -> how many contain it."""
    counts: Counter[str] = Counter()
    for conv in conversations:
        text = " ".join(normalise_text(m["content"]) for m in conv["messages"])
        counts.update(set(extract_values(text)))
    return dict(counts)


# --------------------------------------------------------------------------- analysis


def _ratio(a: str, b: str) -> float:
    from rapidfuzz import fuzz

    return float(fuzz.ratio(a, b))


def _token_match(generated: str, expected: str) -> float:
    """Pythia's memorization score: share of reference positions the generation matches."""
    ref, gen = expected.split(), generated.split()
    return sum(g == r for g, r in zip(gen, ref, strict=False)) / len(ref) if ref else 0.0


def _regurgitated(gen: Generation, train_values: Mapping[str, int], public: int) -> tuple:
    """(values generated, values copied from training, of which private) of one val turn."""
    said = extract_values(gen.generated)
    known = set(extract_values(gen.item.prompt)) | set(extract_values(gen.item.expected))
    copied = [v for v in said if v not in known and v in train_values]
    private = [v for v in copied if train_values[v] < public]
    return said, copied, private


def _measure(gens: Sequence[Generation], ratio: float, train_values: Mapping[str, int],
             public: int) -> dict[str, Any]:
    """Exact, fuzzy and token match of the turns, k-extraction rates, regurgitation."""
    turns = [g for g in gens if g.item.kind == "turn"]
    r: dict[str, Any] = {"n_turns": len(turns)}
    if turns:
        r["exact"] = float(np.mean([g.generated == g.item.expected for g in turns]))
        r["fuzzy"] = float(np.mean([_ratio(g.generated, g.item.expected) >= ratio
                                    for g in turns]))
        r["token_match"] = float(np.mean([_token_match(g.generated, g.item.expected)
                                          for g in turns]))
    for kind in sorted({g.item.kind for g in gens} - {"turn"}, key=lambda k: int(k[1:])):
        ex = [g for g in gens if g.item.kind == kind]
        r[f"extract_{kind}"] = float(np.mean([g.generated == g.item.expected for g in ex]))
    said = copied = private = 0
    for g in turns:
        s, c, p = _regurgitated(g, train_values, public)
        said, copied, private = said + len(s), copied + len(c), private + len(p)
    r["values_generated"] = said
    r["values_regurgitated"] = private
    r["regurgitation"] = private / said if said else 0.0
    r["regurgitation_any"] = copied / said if said else 0.0
    return r


def _by_conversation(gens: Sequence[Generation], split: str) -> dict[str, list[int]]:
    """``{conversation id: [exact-match hits, agent turns]}`` of ``split`` (the clusters of
    the gap's bootstrap: turns of one conversation are not independent)."""
    out: dict[str, list[int]] = {}
    for g in gens:
        if g.item.kind == "turn" and g.item.split == split:
            cell = out.setdefault(g.item.conv_id, [0, 0])
            cell[0] += g.generated == g.item.expected
            cell[1] += 1
    return out


def _hits_by_conversation(gens: Sequence[Generation], split: str) -> tuple[list, list]:
    """Exact-match hits and agent turns per conversation of ``split``, as two lists."""
    cells = list(_by_conversation(gens, split).values())
    return [h for h, _ in cells], [n for _, n in cells]


def _outcomes(gens: Sequence[Generation]) -> dict[str, Any]:
    """Per-conversation ``[EM hits, turns]`` of train and val, for the paired change against
    the baseline (diagnostics.paired); the identity is that of the val prompts asked."""
    val = sorted((g.item.conv_id, g.item.prompt, g.item.expected) for g in gens
                 if g.item.kind == "turn" and g.item.split == "val")
    return {"identity": identity(val), "train": _by_conversation(gens, "train"),
            "val": _by_conversation(gens, "val")}


def _examples(gens: Sequence[Generation], train_values: Mapping[str, int], public: int,
              limit: int = 8) -> list[dict[str, Any]]:
    """Worst cases: val answers that copy a private training value, then train answers
    reproduced verbatim although they hold a value no prompt reveals."""
    rows: list[dict[str, Any]] = []
    for g in gens:
        if g.item.split == "val" and g.item.kind == "turn":
            _, _, private = _regurgitated(g, train_values, public)
            if private:
                rows.append({"split": "val", "prompt": g.item.shown, "expected": g.item.expected,
                             "generated": g.generated,
                             "why": "copies training value " + ", ".join(sorted(set(private)))})
    for g in gens:
        if (g.item.split == "train" and g.item.kind == "turn" and g.generated == g.item.expected):
            hidden = [v for v in extract_values(g.item.expected)
                      if v not in extract_values(g.item.prompt) and train_values.get(v, 0) < public]
            if hidden:
                rows.append({"split": "train", "prompt": g.item.shown, "expected": g.item.expected,
                             "generated": g.generated,
                             "why": "reproduces " + ", ".join(hidden) + " no prompt reveals"})
    val_rows = [r for r in rows if r["split"] == "val"][: limit // 2]
    train_rows = [r for r in rows if r["split"] == "train"]
    picked = val_rows + train_rows[: limit - len(val_rows)]
    if len(picked) < limit // 2:  # nothing memorized to show: the val answers furthest off
        misses = sorted(((_ratio(g.generated, g.item.expected), i) for i, g in enumerate(gens)
                         if g.item.split == "val" and g.item.kind == "turn"
                         and g.generated != g.item.expected))
        for score, i in misses[: limit // 2 - len(picked)]:
            g = gens[i]
            picked.append({"split": "val", "prompt": g.item.shown, "expected": g.item.expected,
                           "generated": g.generated, "why": f"far from the truth (ratio "
                           f"{score:.0f})"})
    return picked


def _signed(x: float) -> str:
    return f"{x:+.1%}"


def analyse_memorization(
    generations: Sequence[Generation],
    chance: Sequence[Generation],
    train_values: Mapping[str, int],
    n_train_conversations: int,
    thresholds: Mapping[str, float],
) -> CheckResult:
    """Memorization gap ``EM_train - EM_val`` with its 95% interval over conversations, judged
    by the shared rule against ``gap_pass`` / ``gap_warn``; value regurgitation in val answers
    with its Wilson interval over generated amounts, against the one line
    ``regurgitation_fail`` (fewer than ``regurgitation_min_amounts`` amounts never FAIL); the
    status is the worse of the two.

    ``generations``: the model's, for :func:`build_items`' items; ``chance``: an untrained
    model's for the same items (may be empty). ``train_values``: :func:`training_values` of the
    train split, of ``n_train_conversations`` conversations. A generated value counts as
    regurgitated when it is in neither the prompt nor the true answer but is in training data,
    and is private there: in fewer than ``public_min_share`` of the training conversations
    (more common values are the bank's public constants, such as a fee).
    """
    th = {k: float(thresholds[k]) for k in ("gap_pass", "gap_warn", "fuzzy_ratio",
                                            "regurgitation_fail",
                                            "public_min_share")}
    used = {**th, "n_train_turns": int(thresholds["n_train_turns"]),
            "regurgitation_min_amounts": int(thresholds["regurgitation_min_amounts"])}
    public = max(2, math.ceil(th["public_min_share"] * max(1, n_train_conversations)))
    def measure(gens: Sequence[Generation], split: str | None) -> dict[str, Any]:
        return _measure([g for g in gens if split in (None, g.item.split)], th["fuzzy_ratio"],
                        train_values, public)

    train, val = measure(generations, "train"), measure(generations, "val")
    if not train["n_turns"] or not val["n_turns"]:
        return CheckResult(NAME, "SKIP", f"no agent turns to prompt with (train "
                           f"{train['n_turns']}, val {val['n_turns']}): nothing to compare",
                           {}, used)
    # an untrained model has no train/val difference: its rates pool both splits, except
    # regurgitation, which is defined on val answers
    base: dict[str, Any] = {}
    if chance:
        base = measure(chance, None)
        chance_val = measure(chance, "val")
        for k in ("regurgitation", "regurgitation_any", "values_generated"):
            base[k] = chance_val[k]
    gap_est = difference(_hits_by_conversation(generations, "train"),
                         _hits_by_conversation(generations, "val"), "conversations")
    said, private = val["values_generated"], val["values_regurgitated"]
    reg_est = rate([1] * private + [0] * (said - private), [1] * said, "generated amounts")
    values: dict[str, Any] = {
        "em_train": train["exact"], "em_val": val["exact"], "em_chance": base.get("exact"),
        **gap_est.values("gap"),
        "fuzzy_train": train["fuzzy"], "fuzzy_val": val["fuzzy"],
        "fuzzy_chance": base.get("fuzzy"),
        "token_match_train": train["token_match"], "token_match_val": val["token_match"],
        "token_match_chance": base.get("token_match"),
        **reg_est.values("regurgitation"), "regurgitation_any": val["regurgitation_any"],
        "regurgitation_chance": base.get("regurgitation"),
        "values_generated_val": val["values_generated"],
        "n_train_turns": train["n_turns"], "n_val_turns": val["n_turns"],
        "public_min_conversations": public,
    }
    for k in sorted({k for k in train if k.startswith("extract_")}, key=lambda s: int(s[9:])):
        values[f"{k}_train"] = train.get(k)
        values[f"{k}_val"] = val.get(k)
        values[f"{k}_chance"] = base.get(k)

    rows = [("exact match (EM)", "exact"), (f"fuzzy (ratio ≥ {th['fuzzy_ratio']:g})", "fuzzy"),
            ("token match (Pythia)", "token_match")]
    rows += [(f"{k[8:]}-extractable", k) for k in sorted(
        (k for k in train if k.startswith("extract_")), key=lambda s: int(s[9:]))]
    def pct(x: float | None, sign: bool = False) -> str | None:
        return None if x is None else f"{x:+.1%}" if sign else f"{x:.1%}"

    side = [(label, pct(train.get(key)), pct(val.get(key)),
             None if train.get(key) is None or val.get(key) is None
             else pct(train[key] - val[key], sign=True), pct(base.get(key)))
            for label, key in rows]
    side.append(("value regurgitation (val answers)", None, pct(val["regurgitation"]), None,
                 pct(base.get("regurgitation"))))
    gap_verdict = decide(gap_est, pass_line=th["gap_pass"], fail_line=th["gap_warn"],
                         higher_is_better=False, fmt=_signed)
    reg = val["regurgitation"]
    reg_verdict = (decide(reg_est, pass_line=th["regurgitation_fail"],
                          fail_line=th["regurgitation_fail"], higher_is_better=False,
                          fmt="{:.1%}".format, min_n=used["regurgitation_min_amounts"])
                   if said else Verdict("PASS", "no amounts in val answers to copy"))
    gap_status, reg_status = gap_verdict.status, reg_verdict.status
    examples = _examples(generations, train_values, public)
    details: dict[str, Any] = {
        "rates": {"train": train, "val": val, "chance": base},
        "outcomes": _outcomes(generations),
        "examples": examples,
        "decisions": {"gap": gap_verdict.rule, **({"regurgitation": reg_verdict.rule}
                                                   if reg_verdict.rule else {})},
        "tables": [table("train / val / chance (untrained model, same prompts)",
                         ["measure", "train", "val", "train − val", "chance"], side,
                         [gap_status, None, None] + [None] * (len(side) - 4) + [reg_status])],
        "notes": [],
    }
    if examples:
        from bankllm.generation import detokenize

        details["tables"].append(table(
            "worst examples", ["split", "prompt", "expected", "generated", "why"],
            [(e["split"], e["prompt"], detokenize(e["expected"]), detokenize(e["generated"]),
              e["why"]) for e in examples]))
    details["notes"].append(
        f"EM over {train['n_turns']} train and {val['n_turns']} val agent turns, greedy "
        "decoding until the end of the turn; k-extractable: the first k tokens of a "
        f"conversation, the next min({EXTRACT_TOKENS}, remaining) reproduced exactly")
    details["notes"].append(
        f"regurgitation: {reg:.1%} of {val['values_generated']} amounts/numbers in val answers "
        f"are private training values (any training value: {val['regurgitation_any']:.1%}; "
        f"values in ≥ {public} training conversations count as public)")
    chance = f", chance {base['exact']:.1%}" if "exact" in base else ""
    gap_text = (f"EM train {train['exact']:.1%} vs val {val['exact']:.1%}{chance}; gap "
                f"{gap_verdict.reason}")
    if gap_status == "FAIL":
        gap_text += ("; the model reproduces training answers it cannot produce for unseen "
                     "conversations — regularise (dropout, weight decay), stop earlier or add data")
    reg_text = (f"value regurgitation (private training amounts among the {said} in val "
                f"answers) {reg_verdict.reason}")
    if reg_status == "FAIL":
        reg_text += "; a privacy risk: the model hands one customer's amounts to another"
    status, reason = combine([(gap_status, gap_text), (reg_status, reg_text)])
    return CheckResult(NAME, status, reason, values, used, details)
