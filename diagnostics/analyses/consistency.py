"""§7 Prompt consistency (CheckList-style probes with phrasings the training data never has).

Two checks, because they need different things:

* ``consistency`` (INV paraphrase groups, MFT novel prompts) needs to know the *intent* of a
  response. A judge — TF-IDF word 1-2-grams and char_wb 2-5-grams, logistic regression —
  is trained on the train split's agent turns and their intent labels and validated on the val
  split's; below ``judge_min_accuracy`` (or without labels) the check is SKIP.
* ``faithfulness`` (DIR entity swaps) needs only the account types a response names
  (:func:`bankllm.synth.mentioned_account_types`), so it never waits on the judge: the
  chapter's "What is my credit balance?" -> "your checking account balance is ..." is a
  failure whatever the judge's accuracy.

Responses come from a *response source*, any callable ``list[customer message] -> list[agent
answer]``; the analyses take the answers as a ``{prompt: answer}`` mapping and need no model.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any

from bankllm.tokenizer import normalise_text as normalize_text
from diagnostics.analyses._common import rate_interval, spans_a_line
from diagnostics.results import CheckResult, table

NAME = "consistency"
FAITHFULNESS = "faithfulness"
NO_ANSWER = "(no answer)"
MAX_ROWS = 15

ResponseSource = Callable[[Sequence[str]], list[str]]


# --------------------------------------------------------------------------- the judge


@dataclass
class Judge:
    """An intent classifier for agent responses. ``accuracy`` is on the val agent turns; None
    (with ``reason``) when it could not be trained or validated."""

    predict: Callable[[Sequence[str]], list[str]]
    accuracy: float | None
    n_train: int = 0
    n_val: int = 0
    labels: list[str] = field(default_factory=list)
    reason: str = ""


def labelled_agent_turns(conversations: Iterable[Mapping[str, Any]]) -> tuple[list, list]:
    """(texts, intents) of the agent turns that have an intent: the message's own ``intent``
    when present, else the conversation's."""
    texts, labels = [], []
    for conv in conversations:
        for m in conv["messages"]:
            intent = m.get("intent") or conv.get("intent")
            if m["role"] == "agent" and intent and normalize_text(m["content"]):
                texts.append(normalize_text(m["content"]))
                labels.append(str(intent))
    return texts, labels


def _no_judge(reason: str, n_train: int = 0, n_val: int = 0) -> Judge:
    return Judge(lambda texts: [NO_ANSWER] * len(texts), None, n_train, n_val, [], reason)


def train_judge(train: Sequence[Mapping[str, Any]], val: Sequence[Mapping[str, Any]],
                seed: int = 0) -> Judge:
    """Fit the TF-IDF + logistic-regression judge on train agent turns, score it on val."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import FeatureUnion, Pipeline

    x_train, y_train = labelled_agent_turns(train)
    x_val, y_val = labelled_agent_turns(val)
    if len(set(y_train)) < 2:
        return _no_judge("no intent labels in this dataset (the judge needs agent turns "
                         "labelled with at least 2 intents)", len(x_train), len(x_val))
    pipe = Pipeline([
        ("features", FeatureUnion([
            ("words", TfidfVectorizer(analyzer="word", ngram_range=(1, 2), sublinear_tf=True,
                                      token_pattern=r"\S+")),
            ("chars", TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5),
                                      sublinear_tf=True)),
        ])),
        ("clf", LogisticRegression(C=10.0, max_iter=2000, random_state=seed)),
    ])
    pipe.fit(x_train, y_train)

    def predict(texts: Sequence[str]) -> list[str]:
        normal = [normalize_text(t) for t in texts]
        todo = [i for i, t in enumerate(normal) if t]
        out = [NO_ANSWER] * len(normal)
        if todo:
            for i, label in zip(todo, pipe.predict([normal[i] for i in todo]), strict=True):
                out[i] = str(label)
        return out

    labels = sorted(set(y_train))
    if not x_val:
        return Judge(predict, None, len(x_train), 0, labels,
                     "no labelled val agent turns to validate the judge on")
    hits = sum(p == y for p, y in zip(predict(x_val), y_val, strict=True))
    return Judge(predict, hits / len(x_val), len(x_train), len(x_val), labels)


# --------------------------------------------------------------------------- responses


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


# --------------------------------------------------------------------------- analyses


def _band(value: float, pass_at: float, margin: float) -> str:
    return "PASS" if value >= pass_at else "WARN" if value >= pass_at - margin else "FAIL"


def _worse(*statuses: str) -> str:
    return max(statuses, key=("PASS", "WARN", "FAIL").index)


def _clip(text: str, n: int = 90) -> str:
    """A response as a table shows it: readable (digits joined) and at most ``n`` chars."""
    from bankllm.generation import detokenize

    text = detokenize(text)
    return text if len(text) <= n else text[: n - 1] + "…"


def analyse_consistency(probes: Any, responses: Mapping[str, str], judge: Judge,
                        thresholds: Mapping[str, float]) -> CheckResult:
    """INV and MFT verdicts from the judged intent of each response.

    ``consistency``: share of agreeing pairs within INV groups (ParaRel), pooled over groups,
    with a 95% bootstrap interval over groups (``consistency_ci95_low``/``_high``: the
    uncertainty of sampling probes, not of training; the reason says when it spans a line);
    ``all_consistent``: share of groups whose answers all share one intent;
    ``consistent_and_correct``: ... all the group's expected intent; ``novel_accuracy``: share
    of MFT answers with the expected intent. An empty answer agrees with nothing. Status: the
    worse of consistency (vs ``consistency_pass``) and novel accuracy (vs
    ``novel_accuracy_pass``), WARN within ``warn_margin`` below; SKIP when the judge is
    missing or its val accuracy is below ``judge_min_accuracy``. ``probes``: a
    :class:`bankllm.probes.Probes`; ``responses``: ``{prompt: answer}``.
    """
    th = {k: float(thresholds[k]) for k in ("judge_min_accuracy", "consistency_pass",
                                            "novel_accuracy_pass", "warn_margin")}
    judge_values = {"judge_accuracy": judge.accuracy, "judge_n_train": judge.n_train,
                    "judge_n_val": judge.n_val}
    if judge.accuracy is None:
        return CheckResult(NAME, "SKIP", f"judge not available: {judge.reason}",
                           judge_values, th)
    if judge.accuracy < th["judge_min_accuracy"]:
        return CheckResult(NAME, "SKIP", f"judge not reliable: it labels {judge.accuracy:.1%} "
                           f"of {judge.n_val} val agent turns correctly (< "
                           f"{th['judge_min_accuracy']:.0%}), so its verdicts on the model's "
                           "answers would not mean much", judge_values, th)
    if not probes.inv and not probes.mft:
        return CheckResult(NAME, "SKIP", "no INV or MFT probes to ask", judge_values, th)
    asked = {r["intent"] for r in (*probes.inv, *probes.mft)}
    unknown = sorted(asked - set(judge.labels))
    if len(unknown) > len(asked) / 2:
        return CheckResult(NAME, "SKIP", f"the probes ask for {len(unknown)} of {len(asked)} "
                           f"intents this dataset has no labels for (e.g. {unknown[0]}): they "
                           "were written for another corpus", judge_values, th)
    prompts = probe_prompts(probes, ("inv", "mft"))
    intent = dict(zip(prompts, judge.predict([responses[p] for p in prompts]), strict=True))

    all_same = all_right = 0
    group_agree, group_pairs = [], []
    inv_rows, inv_status, failures_inv = [], [], []
    for group in probes.inv:
        got = [intent[p] for p in group["prompts"]]
        together = [a == b and a != NO_ANSWER for a, b in combinations(got, 2)]
        group_agree.append(sum(together))
        group_pairs.append(len(together))
        same = len(set(got)) == 1 and got[0] != NO_ANSWER
        right = same and got[0] == group["intent"]
        all_same += same
        all_right += right
        if not right:
            failures_inv.append({"id": group["id"], "intent": group["intent"],
                                 "answers": [{"prompt": p, "response": responses[p],
                                              "judged": intent[p]} for p in group["prompts"]]})
            for p in group["prompts"]:
                inv_rows.append((group["id"], group["intent"], p, _clip(responses[p]), intent[p]))
                inv_status.append(None if intent[p] == group["intent"] else "FAIL")
    novel_hits, failures_mft = 0, []
    for rec in probes.mft:
        ok = intent[rec["prompt"]] == rec["intent"]
        novel_hits += ok
        if not ok:
            failures_mft.append({"id": rec["id"], "intent": rec["intent"],
                                 "prompt": rec["prompt"], "response": responses[rec["prompt"]],
                                 "judged": intent[rec["prompt"]]})
    n_groups, n_mft = len(probes.inv), len(probes.mft)
    agree, pairs = sum(group_agree), sum(group_pairs)
    values: dict[str, Any] = {
        "consistency": agree / pairs if pairs else None,
        "all_consistent": all_same / n_groups if n_groups else None,
        "consistent_and_correct": all_right / n_groups if n_groups else None,
        "novel_accuracy": novel_hits / n_mft if n_mft else None,
        "n_inv_groups": n_groups, "n_inv_pairs": pairs, "n_mft": n_mft, **judge_values,
    }
    ci = rate_interval(group_agree, group_pairs)
    values["consistency_ci95_low"], values["consistency_ci95_high"] = ci or (None, None)
    statuses, parts = [], []
    if values["consistency"] is not None:
        s = _band(values["consistency"], th["consistency_pass"], th["warn_margin"])
        statuses.append(s)
        spread = f" [95% CI {ci[0]:.0%}-{ci[1]:.0%} over groups]" if ci else ""
        parts.append(f"consistency {values['consistency']:.0%}{spread} of {pairs} paraphrase "
                     f"pairs agree ({'≥' if s == 'PASS' else '<'} {th['consistency_pass']:.0%}); "
                     f"{values['consistent_and_correct']:.0%} of {n_groups} groups all answer "
                     "the expected intent")
        lines = [th["consistency_pass"], th["consistency_pass"] - th["warn_margin"]]
        if spans_a_line(ci, lines):
            parts.append(f"the interval spans a verdict line: {n_groups} probe groups do not "
                         "settle the verdict")
    if values["novel_accuracy"] is not None:
        s = _band(values["novel_accuracy"], th["novel_accuracy_pass"], th["warn_margin"])
        statuses.append(s)
        parts.append(f"novel accuracy {values['novel_accuracy']:.0%} of {n_mft} unseen prompts "
                     f"({'≥' if s == 'PASS' else '<'} {th['novel_accuracy_pass']:.0%})")
    status = _worse(*statuses)
    if status != "PASS":
        parts.append("the model answers by surface form, not by request — add paraphrases to "
                     "the training data")
    parts.append(f"judge accuracy {judge.accuracy:.1%} on val")
    details: dict[str, Any] = {
        "failures": {"inv": failures_inv, "mft": failures_mft}, "tables": [], "notes": [],
    }

    def pct(x: float | None) -> str | None:
        return None if x is None else f"{x:.1%}"

    summary = [
        ("INV", "consistency (agreeing pairs)", pct(values["consistency"]),
         f"≥ {th['consistency_pass']:.0%}"),
        ("INV", "95% interval (bootstrap over groups)",
         f"{ci[0]:.1%} - {ci[1]:.1%}" if ci else None, None),
        ("INV", "all consistent (groups)", pct(values["all_consistent"]), None),
        ("INV", "consistent and correct (groups)", pct(values["consistent_and_correct"]), None),
        ("MFT", "novel accuracy", pct(values["novel_accuracy"]),
         f"≥ {th['novel_accuracy_pass']:.0%}"),
        ("judge", "accuracy on val agent turns", pct(judge.accuracy),
         f"≥ {th['judge_min_accuracy']:.0%}"),
    ]
    details["tables"].append(table(
        "probe verdicts", ["probes", "measure", "value", "pass at"], summary,
        [statuses[0] if values["consistency"] is not None else None, None, None, None,
         statuses[-1] if values["novel_accuracy"] is not None else None, "PASS"]))
    if inv_rows:
        details["tables"].append(table(
            "INV groups not all answered with the expected intent",
            ["group", "expected", "prompt", "model's answer", "judged"],
            inv_rows[:MAX_ROWS], inv_status[:MAX_ROWS]))
    if failures_mft:
        details["tables"].append(table(
            "MFT prompts answered with another intent",
            ["probe", "expected", "prompt", "model's answer", "judged"],
            [(f["id"], f["intent"], f["prompt"], _clip(f["response"]), f["judged"])
             for f in failures_mft[:MAX_ROWS]], ["FAIL"] * min(MAX_ROWS, len(failures_mft))))
    details["notes"].append(
        f"judge: TF-IDF word 1-2-grams + char_wb 2-5-grams, logistic regression, trained on "
        f"{judge.n_train} train agent turns ({len(judge.labels)} intents), "
        f"{judge.accuracy:.1%} correct on {judge.n_val} val agent turns")
    if unknown:
        details["notes"].append("probe intents missing from the training labels (never "
                                "judged correct): " + ", ".join(unknown))
    if len(inv_rows) > MAX_ROWS or len(failures_mft) > MAX_ROWS:
        details["notes"].append(f"tables show the first {MAX_ROWS} rows; every failure is "
                                "in details.failures of diagnostics.json")
    return CheckResult(NAME, status, "; ".join(parts), values, th, details)


def analyse_faithfulness(probes: Any, responses: Mapping[str, str],
                         thresholds: Mapping[str, float]) -> CheckResult:
    """DIR: a response is faithful when the account types it names are exactly the requested
    one. ``faithfulness`` = share of faithful responses over all variants. PASS at
    ``faithfulness_pass``, WARN within ``warn_margin`` below, else FAIL."""
    from bankllm.entities import mentioned_account_types

    th = {k: float(thresholds[k]) for k in ("faithfulness_pass", "warn_margin")}
    if not probes.dir:
        return CheckResult(FAITHFULNESS, "SKIP", "no DIR (entity swap) probes to ask", {}, th)
    n = faithful = 0
    failures: list[dict[str, Any]] = []
    swapped = 0  # names another entity instead of the requested one
    for rec in probes.dir:
        for var in rec["variants"]:
            answer = responses[var["prompt"]]
            named = mentioned_account_types(answer)
            ok = named == [var["entity"]]
            n += 1
            faithful += ok
            if not ok:
                swapped += bool(named) and var["entity"] not in named
                failures.append({"id": rec["id"], "intent": rec["intent"],
                                 "requested": var["entity"], "prompt": var["prompt"],
                                 "response": answer, "named": named})
    share = faithful / n
    per_entity: dict[str, list[int]] = {}
    for rec in probes.dir:
        for var in rec["variants"]:
            hit = mentioned_account_types(responses[var["prompt"]]) == [var["entity"]]
            per_entity.setdefault(var["entity"], [0, 0])
            per_entity[var["entity"]][0] += hit
            per_entity[var["entity"]][1] += 1
    values: dict[str, Any] = {
        "faithfulness": share, "n_variants": n, "n_unfaithful": n - faithful,
        "n_swapped": swapped,
        **{f"faithfulness_{e.replace(' ', '_')}": h / t for e, (h, t) in per_entity.items()},
    }
    status = _band(share, th["faithfulness_pass"], th["warn_margin"])
    reason = (f"{faithful}/{n} entity-swapped requests ({share:.0%}) answered about exactly the "
              f"requested account ({'≥' if status == 'PASS' else '<'} "
              f"{th['faithfulness_pass']:.0%})")
    if status != "PASS":
        worst_entity = min(per_entity, key=lambda e: per_entity[e][0] / per_entity[e][1])
        reason += (f"; {swapped} name another account instead, worst for {worst_entity} "
                   f"({values['faithfulness_' + worst_entity.replace(' ', '_')]:.0%}) — the "
                   "model ignores the entity the customer asked about")
    details: dict[str, Any] = {"failures": failures, "tables": [], "notes": []}
    details["tables"].append(table(
        "faithfulness per requested account", ["account", "faithful", "of", "share"],
        [(e, h, t, f"{h / t:.1%}") for e, (h, t) in per_entity.items()],
        [_band(h / t, th["faithfulness_pass"], th["warn_margin"]) for h, t in per_entity.values()]))
    if failures:
        details["tables"].append(table(
            "unfaithful answers", ["probe", "asked about", "prompt", "model's answer", "names"],
            [(f["id"], f["requested"], f["prompt"], _clip(f["response"]),
              ", ".join(f["named"]) or "none") for f in failures[:MAX_ROWS]],
            ["FAIL"] * min(MAX_ROWS, len(failures))))
        if len(failures) > MAX_ROWS:
            details["notes"].append(f"table shows the first {MAX_ROWS} of {len(failures)}; all "
                                    "are in details.failures of diagnostics.json")
    return CheckResult(FAITHFULNESS, status, reason, values, th, details)
