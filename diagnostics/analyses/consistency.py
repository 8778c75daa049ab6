"""Prompt consistency (docs/diagnostics.md, "consistency"): CheckList-style INV paraphrase
groups and MFT novel prompts, with phrasings the training data never has.

Judging them needs the *intent* of a response. A judge — TF-IDF word 1-2-grams and char_wb
2-5-grams, logistic regression — is trained on the train split's agent turns and their intent
labels and validated on the val split's; below ``judge_min_accuracy`` (or without labels) the
check is SKIP. Entity swaps (DIR) need no judge: they are the ``faithfulness`` check.

The analysis takes the answers as a ``{prompt: answer}`` mapping and needs no model.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any

from bankllm.tokenizer import normalise_text
from diagnostics.analyses._probes import MAX_ROWS, NO_ANSWER, clip_answer, probe_prompts
from diagnostics.decision import decide, rate
from diagnostics.paired import identity
from diagnostics.results import CheckResult, combine, table, worst

NAME = "consistency"
ORDER = 60  # place in the report
UNCHECKED_WHEN_SKIPPED = (
    "whether paraphrased prompts get answers of one intent and unseen phrasings the right one "
    "(prompt brittleness); add probe sets (`bankllm data synth --probes-dir DIR`, then --probes "
    "DIR) and a corpus with intents the judge can learn")
# INV/MFT judged by an intent classifier (SKIP below judge_min_accuracy on val);
# PASS at the value, FAIL below it minus warn_margin
DEFAULTS = {
    "judge_min_accuracy": 0.95,
    "consistency_pass": 0.90,
    "novel_accuracy_pass": 0.80,
    "warn_margin": 0.15,
}


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
            if m["role"] == "agent" and intent and normalise_text(m["content"]):
                texts.append(normalise_text(m["content"]))
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
        normal = [normalise_text(t) for t in texts]
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


# --------------------------------------------------------------------------- analyses


# a FAIL where one answer takes at least this share of the probes (and twice the share of the
# most asked intent) is read as "has not learned the requests apart", not as brittleness
ONE_ANSWER_SHARE = 0.5


def _remedy(judged: Mapping[str, str], expected: Mapping[str, str]) -> str:
    """What a FAIL most likely means, from the judged intent of each probe prompt and the one
    it asks for: one answer to nearly every request (the model has not learned to tell them
    apart: undertrained, or the data do not reach it), or answers that follow the wording."""
    top, count = Counter(judged.values()).most_common(1)[0]
    share = count / len(judged)
    asked = max(Counter(expected.values()).values()) / len(expected)
    if share >= max(ONE_ANSWER_SHARE, 2 * asked):
        answer = "no answer" if top == NO_ANSWER else top
        return (f"{share:.0%} of the {len(judged)} probe prompts get one answer ({answer}), "
                f"where no intent is asked by more than {asked:.0%}: the model has not learned "
                "to tell the requests apart — see baselines and loss_phases (undertrained?) "
                "before adding data")
    return ("the model answers by surface form, not by request — add paraphrases to the "
            "training data, once baselines and loss_phases show it trained (a model barely past "
            "a bigram table answers this way too: train it longer first) and generation that "
            "these answers are its own (a faulty decoder gives such answers too)")


def _pct(x: float) -> str:
    return f"{x:.1%}"


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
                inv_rows.append((group["id"], group["intent"], p, clip_answer(responses[p]),
                                 intent[p]))
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
    parts: list[tuple[str, str]] = []
    decisions: dict[str, Any] = {}
    est = novel = None
    if pairs:
        est = rate(group_agree, group_pairs, "probe groups")
        values.update(est.values("consistency"))
        verdict = decide(est, pass_line=th["consistency_pass"],
                         fail_line=th["consistency_pass"] - th["warn_margin"],
                         higher_is_better=True, fmt=_pct)
        decisions["consistency"] = verdict.rule
        parts.append((verdict.status,
                      f"consistency (share of {pairs} paraphrase pairs that agree) "
                      f"{verdict.reason}; {values['consistent_and_correct']:.0%} of {n_groups} "
                      "groups all answer the expected intent"))
    if n_mft:
        novel = rate([1] * novel_hits + [0] * (n_mft - novel_hits), [1] * n_mft, "novel prompts")
        values.update(novel.values("novel_accuracy"))
        verdict = decide(novel, pass_line=th["novel_accuracy_pass"],
                         fail_line=th["novel_accuracy_pass"] - th["warn_margin"],
                         higher_is_better=True, fmt=_pct)
        decisions["novel_accuracy"] = verdict.rule
        parts.append((verdict.status, f"novel accuracy {verdict.reason}"))
    statuses = [status for status, _ in parts]  # the summary table's marks
    if worst(statuses) == "FAIL":
        expected = {p: g["intent"] for g in probes.inv for p in g["prompts"]}
        expected.update((r["prompt"], r["intent"]) for r in probes.mft)
        parts.append(("FAIL", _remedy(intent, expected)))
    status, reason = combine(parts)
    reason += f"; judge accuracy {judge.accuracy:.1%} on val"
    details: dict[str, Any] = {
        "failures": {"inv": failures_inv, "mft": failures_mft}, "tables": [], "notes": [],
        "decisions": decisions,
        # per item, for the paired change against the baseline (diagnostics.paired)
        "outcomes": {
            "identity": identity({"inv": probes.inv, "mft": probes.mft}),
            "inv": {g["id"]: [a, n] for g, a, n in zip(probes.inv, group_agree, group_pairs,
                                                        strict=True)},
            "mft": {r["id"]: int(intent[r["prompt"]] == r["intent"]) for r in probes.mft},
        },
    }

    def pct(x: float | None) -> str | None:
        return None if x is None else f"{x:.1%}"

    summary = [
        ("INV", "consistency (agreeing pairs)", pct(values["consistency"]),
         f"≥ {th['consistency_pass']:.0%}"),
        ("INV", "95% interval (bootstrap over groups)",
         f"{est.low:.1%} - {est.high:.1%}" if est else None, None),
        ("INV", "all consistent (groups)", pct(values["all_consistent"]), None),
        ("INV", "consistent and correct (groups)", pct(values["consistent_and_correct"]), None),
        ("MFT", "novel accuracy", pct(values["novel_accuracy"]),
         f"≥ {th['novel_accuracy_pass']:.0%}"),
        ("MFT", "95% interval (Wilson)", f"{novel.low:.1%} - {novel.high:.1%}" if novel else None,
         None),
        ("judge", "accuracy on val agent turns", pct(judge.accuracy),
         f"≥ {th['judge_min_accuracy']:.0%}"),
    ]
    details["tables"].append(table(
        "probe verdicts", ["probes", "measure", "value", "pass at"], summary,
        [statuses[0] if values["consistency"] is not None else None, None, None, None,
         statuses[-1] if values["novel_accuracy"] is not None else None, None, "PASS"]))
    if inv_rows:
        details["tables"].append(table(
            "INV groups not all answered with the expected intent",
            ["group", "expected", "prompt", "model's answer", "judged"],
            inv_rows[:MAX_ROWS], inv_status[:MAX_ROWS]))
    if failures_mft:
        details["tables"].append(table(
            "MFT prompts answered with another intent",
            ["probe", "expected", "prompt", "model's answer", "judged"],
            [(f["id"], f["intent"], f["prompt"], clip_answer(f["response"]), f["judged"])
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
    return CheckResult(NAME, status, reason, values, th, details)
