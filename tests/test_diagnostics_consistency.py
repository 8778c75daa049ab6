"""Diagnostic power of the consistency checks, with response sources instead of a model,
on the bundled probe sets and corpus: the chapter's always-"checking" answers FAIL
faithfulness, answers that ignore the request FAIL consistency, an oracle passes; an
unreliable or missing judge SKIPs consistency but never hides a faithfulness failure."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from bankllm.data import load_conversations, split_conversations
from bankllm.entities import mentioned_account_types
from bankllm.probes import Probes, load_probes
from bankllm.tokenizer import normalise_text
from diagnostics.analyses._probes import collect_responses, probe_prompts
from diagnostics.analyses.consistency import (
    Judge,
    analyse_consistency,
    labelled_agent_turns,
    train_judge,
)
from diagnostics.analyses.faithfulness import analyse_faithfulness, entity_decision_points
from diagnostics.decision import family_level
from diagnostics.thresholds import Thresholds

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "fixtures" / "banking_conversations.jsonl"
PROBES = ROOT / "fixtures" / "probes"
TH = Thresholds().for_check("consistency")
TH_DIR = Thresholds().for_check("faithfulness")
CHAPTER_PROMPT = "What is my credit balance?"
CHAPTER_ANSWER = "your checking account balance is $ 2 , 4 5 0 . 3 2 ."

pytestmark = pytest.mark.skipif(not (CORPUS.exists() and PROBES.is_dir()),
                                reason="needs the bundled corpus and probes (bankllm data synth)")


@pytest.fixture(scope="module")
def setup():
    split = split_conversations(load_conversations(CORPUS), 0.1, seed=0)
    return split, load_probes(PROBES), train_judge(split.train, split.val)


def expectations(probes: Probes) -> dict[str, tuple[str, str | None]]:
    """prompt -> (expected intent, requested account type or None)."""
    want: dict[str, tuple[str, str | None]] = {}
    for g in probes.inv:
        want.update({p: (g["intent"], g["entity"]) for p in g["prompts"]})
    for r in probes.mft:
        want[r["prompt"]] = (r["intent"], r["entity"])
    for r in probes.dir:
        want.update({v["prompt"]: (r["intent"], v["entity"]) for v in r["variants"]})
    return want


def oracle(split, probes: Probes):
    """Answers every probe right: a training answer of the expected intent that names the
    requested account type (or any answer of that intent when the request names none)."""
    texts, intents = labelled_agent_turns(split.train)
    want = expectations(probes)

    def answer(prompt: str) -> str:
        intent, entity = want[prompt]
        options = [t for t, i in zip(texts, intents, strict=True) if i == intent]
        named = [t for t in options if mentioned_account_types(t) == [entity]]
        return (named or options)[0]

    return lambda prompts: [answer(p) for p in prompts]


def always_checking(split, probes: Probes):
    """The chapter's model: right intent, but every account is the checking account."""
    right = oracle(split, probes)

    def respond(prompts):
        return [a.replace("savings account", "checking account").replace(
            "credit card", "checking account").replace("savings", "checking")
            for a in right(prompts)]

    return lambda prompts: [CHAPTER_ANSWER if p == CHAPTER_PROMPT else a
                            for p, a in zip(prompts, respond(prompts), strict=True)]


def surface_matcher(split):
    """Ignores the request: a random training answer per prompt (seeded)."""
    texts, _ = labelled_agent_turns(split.train)
    rng = random.Random(0)
    return lambda prompts: [rng.choice(texts) for _ in prompts]


def run_both(setup, source, judge=None):
    split, probes, trained = setup
    answers = collect_responses(probe_prompts(probes), source)
    return (analyse_consistency(probes, answers, judge or trained, TH),
            analyse_faithfulness(probes, answers, TH_DIR))


def test_judge_is_reliable_on_the_bundled_corpus(setup):
    _, _, judge = setup
    assert judge.accuracy is not None and judge.accuracy >= TH["judge_min_accuracy"]
    assert judge.predict([CHAPTER_ANSWER, ""]) == ["check_balance", "(no answer)"]


def test_oracle_passes(setup):
    consistency, faithfulness = run_both(setup, oracle(setup[0], setup[1]))
    assert consistency.status == "PASS", consistency.reason
    assert faithfulness.status == "PASS", faithfulness.reason
    assert consistency.values["consistency"] == 1.0
    assert consistency.values["novel_accuracy"] == 1.0
    assert consistency.values["consistent_and_correct"] == 1.0
    assert faithfulness.values["faithfulness"] == 1.0


def test_always_checking_fails_faithfulness_with_the_chapters_example(setup):
    consistency, faithfulness = run_both(setup, always_checking(setup[0], setup[1]))
    assert faithfulness.status == "FAIL"
    v = faithfulness.values
    assert v["per_entity"]["checking"] == 1.0
    assert v["per_entity"]["savings"] == 0.0 and v["per_entity"]["credit card"] == 0.0
    failed = {(f["prompt"], f["response"]) for f in faithfulness.details["failures"]}
    assert (CHAPTER_PROMPT, CHAPTER_ANSWER) in failed
    assert "name another of the probe's entities instead" in faithfulness.reason
    # the intents are right: consistency alone would have called this model fine
    assert consistency.status == "PASS" and consistency.values["consistency"] == 1.0


def test_answers_that_ignore_the_request_fail_consistency(setup):
    consistency, faithfulness = run_both(setup, surface_matcher(setup[0]))
    assert consistency.status == "FAIL"
    assert consistency.values["consistency"] < 0.5 and consistency.values["novel_accuracy"] < 0.5
    assert faithfulness.status == "FAIL"
    tables = [t["title"] for t in consistency.details["tables"]]
    assert any("INV" in t for t in tables) and any("MFT" in t for t in tables)


def test_one_answer_to_every_request_fails_as_not_learned_not_as_brittleness(setup):
    """An undertrained model answers every request with the same sentence: its paraphrases
    agree (consistency passes), novel accuracy fails, and the reason opens with that FAIL and
    says the model has not told the requests apart, not "add paraphrases"."""
    split, probes, _ = setup
    consistency, _ = run_both(setup, lambda prompts: [CHAPTER_ANSWER] * len(prompts))
    assert consistency.status == "FAIL"
    assert consistency.values["consistency"] == 1.0
    assert consistency.reason.startswith("novel accuracy"), consistency.reason
    assert "get one answer (check_balance)" in consistency.reason
    assert "not learned to tell the requests apart" in consistency.reason
    assert "surface form" not in consistency.reason
    brittle, _ = run_both(setup, surface_matcher(split))
    assert "surface form" in brittle.reason and "one answer" not in brittle.reason
    assert "once baselines and loss_phases show it trained" in brittle.reason
    assert "and generation that these answers are its own" in brittle.reason


def test_unreliable_judge_skips_consistency_but_not_faithfulness(setup):
    bad = Judge(lambda texts: ["check_balance"] * len(texts), 0.6, 10, 10, ["check_balance"])
    consistency, faithfulness = run_both(setup, always_checking(setup[0], setup[1]), judge=bad)
    assert consistency.status == "SKIP" and "judge not reliable" in consistency.reason
    assert faithfulness.status == "FAIL"


def test_no_intent_labels_skips_with_that_reason(setup):
    split, probes, _ = setup
    strip = [{**c, "intent": None, "messages": [{"role": m["role"], "content": m["content"]}
                                                 for m in c["messages"]]} for c in split.train]
    judge = train_judge(strip, split.val)
    result = analyse_consistency(probes, {}, judge, TH)
    assert result.status == "SKIP" and "no intent labels" in result.reason


def test_warn_band_just_below_the_pass_mark(setup):
    split, probes, judge = setup
    answers = collect_responses(probe_prompts(probes), oracle(split, probes))
    inv = set(probe_prompts(probes, ("inv",)))
    novel = [r["prompt"] for r in probes.mft if r["prompt"] not in inv]
    wrong = round(0.07 * len(probes.mft))  # 93% right, against a 95% pass line
    for prompt in novel[:wrong]:  # a closing remark: never the intent of a request
        answers[prompt] = "you ' re welcome ! have a great day ."
    result = analyse_consistency(probes, answers, judge, {**TH, "novel_accuracy_pass": 0.95})
    assert result.values["novel_accuracy"] == pytest.approx(1 - wrong / len(probes.mft))
    assert result.values["consistency"] == 1.0
    assert result.status == "WARN"
    assert "novel accuracy" in result.reason and "spans the line 95.0%" in result.reason
    assert "inconclusive" in result.reason and "more novel prompts would settle it" in result.reason


def test_judge_works_in_the_models_word_space(setup):
    split, _, judge = setup
    texts, intents = labelled_agent_turns(split.val)
    raw = [m["content"] for c in split.val for m in c["messages"] if m["role"] == "agent"]
    assert texts[:5] == [normalise_text(t) for t in raw[:5]]
    assert judge.predict(raw[:20]) == intents[:20]


def test_a_verdict_inside_its_interval_of_doubt_says_so(setup):
    split, probes, judge = setup
    answers = collect_responses(probe_prompts(probes), oracle(split, probes))
    for group in probes.inv[:4]:  # four groups answered off-request: consistency near 75-90%
        for prompt in group["prompts"][::2]:
            answers[prompt] = "you ' re welcome ! have a great day ."
    result = analyse_consistency(probes, answers, judge, TH)
    v = result.values
    assert v["consistency_ci95_low"] < v["consistency"] < v["consistency_ci95_high"]
    spans = any(v["consistency_ci95_low"] < line <= v["consistency_ci95_high"]
                for line in (TH["consistency_pass"],
                             TH["consistency_pass"] - TH["warn_margin"]))
    assert spans == ("inconclusive" in result.reason), result.reason
    assert result.status == "WARN"  # never FAIL on an interval that reaches a line
    assert spans, v  # the planted case sits near a line
    oracle_result = analyse_consistency(
        probes, collect_responses(probe_prompts(probes), oracle(split, probes)), judge, TH)
    assert "inconclusive" not in oracle_result.reason
    assert oracle_result.values["consistency_ci95_low"] > TH["consistency_pass"]  # settled
    assert oracle_result.values["consistency_ci95_high"] == 1.0


def _split_model_probs(probes: Probes, answers: dict[str, str], intent: str,
                       p_split: float, p_other: float = 0.99) -> dict[str, float]:
    """Probability of the requested entity: ``p_split`` on ``intent``'s probes (a model torn
    between two accounts), ``p_other`` elsewhere."""
    return {prompt: p_split if any(r["intent"] == intent and prompt in
                                   [v["prompt"] for v in r["variants"]] for r in probes.dir)
            else p_other for prompt, *_ in entity_decision_points(probes, answers)}


def test_a_model_split_between_accounts_fails_by_probability_though_greedy_is_right(setup):
    split, probes, _ = setup
    answers = collect_responses(probe_prompts(probes), oracle(split, probes))
    greedy_only = analyse_faithfulness(probes, answers, TH_DIR)
    assert greedy_only.status == "PASS"  # every greedy answer names the right account
    probs = _split_model_probs(probes, answers, "check_balance", 0.4)
    result = analyse_faithfulness(probes, answers, TH_DIR, entity_probs=probs)
    per_intent = result.values["entity_probability_per_intent"]
    assert per_intent["check_balance"]["status"] == "FAIL"
    assert per_intent["check_balance"]["entity_probability_ci95_high"] < 0.75
    assert result.status == "FAIL" and "check_balance" in result.reason


def test_a_confident_model_passes_by_probability_and_a_small_torn_sample_only_warns(setup):
    split, probes, _ = setup
    answers = collect_responses(probe_prompts(probes), oracle(split, probes))
    sure = analyse_faithfulness(probes, answers, TH_DIR,
                                entity_probs=_split_model_probs(probes, answers, "x", 0.0))
    assert sure.status == "PASS" and sure.values["entity_probability"] > 0.98
    few = Probes(inv=[], dir=probes.dir[:2], mft=[])
    torn = analyse_faithfulness(few, answers, TH_DIR,
                                entity_probs={p: 0.7 for p, *_ in
                                              entity_decision_points(few, answers)})
    assert torn.status == "WARN", torn.reason


def test_entity_decision_points_stop_before_the_first_entity_word(setup):
    split, probes, _ = setup
    answers = collect_responses(probe_prompts(probes), oracle(split, probes))
    points = entity_decision_points(probes, answers)
    assert points
    for prompt, before, entities, requested in points:
        assert requested in entities and len(entities) >= 2
        assert not set(before) & {"checking", "savings", "credit"}
        assert answers[prompt].split()[len(before)] in {"checking", "savings", "credit"}


def test_one_intent_just_past_the_fail_line_warns_until_it_beats_the_family_of_intents(setup):
    """Six intents are six chances to FAIL: an intent whose 95% interval only just clears the
    fail line is inconclusive at the family-wise level and WARNs; a clear shortfall FAILs."""
    split, probes, _ = setup
    answers = collect_responses(probe_prompts(probes), oracle(split, probes))
    balance = [r for r in probes.dir if r["intent"] == "check_balance"]
    n_variants = sum(len(r["variants"]) for r in balance)
    level = family_level(len({r["intent"] for r in probes.dir}))

    def swapped(k: int) -> dict[str, str]:
        """The oracle's answers with ``k`` check_balance variants answered about the next
        variant's account."""
        out = dict(answers)
        variants = [(r, i) for r in balance for i in range(len(r["variants"]))][:k]
        for r, i in variants:
            other = r["variants"][(i + 1) % len(r["variants"])]["prompt"]
            out[r["variants"][i]["prompt"]] = answers[other]
        return out

    for k in range(n_variants):  # the fewest swaps whose 95% interval is past the fail line
        result = analyse_faithfulness(probes, swapped(k), TH_DIR)
        per_intent = result.values["per_intent"]["check_balance"]
        if per_intent["faithfulness_ci95_high"] < TH_DIR["faithfulness_pass"] - TH_DIR[
                "warn_margin"]:
            break
    assert per_intent["status"] == "WARN" and result.status == "WARN", result.reason
    assert f"{level:.1%}" in " ".join(result.details["notes"]), result.details["notes"]
    clear = analyse_faithfulness(probes, swapped(int(0.6 * n_variants)), TH_DIR)
    assert clear.values["per_intent"]["check_balance"]["status"] == "FAIL"
    assert clear.status == "FAIL" and "check_balance" in clear.reason
    # the pooled share over every intent does not fail: the reason opens with what does
    assert clear.values["faithfulness_ci95_high"] >= TH_DIR["faithfulness_pass"] - TH_DIR[
        "warn_margin"]
    assert clear.reason.startswith("worst intent check_balance"), clear.reason


def test_dir_probes_with_their_own_entities_are_judged_by_their_own_mentions():
    """A bank's own entities: "premier savings" and "savings" overlap, and the longer mention
    wins, so an answer about premier savings does not also count as naming savings."""
    dirs = [{"id": f"dir-{k:03d}", "intent": "check_balance", "variants": [
        {"entity": "premier savings", "prompt": f"premier savings balance please {k}"},
        {"entity": "savings", "prompt": f"savings balance please {k}", "mentions": ["savings"]},
        {"entity": "mortgage", "prompt": f"mortgage balance please {k}",
         "mentions": ["mortgage", "home loan"]}]} for k in range(40)]
    probes = Probes(inv=[], dir=dirs, mft=[])
    prompts = probe_prompts(probes, ("dir",))

    def faithful(prompts):
        return [f"your {p.split(' balance')[0].replace('mortgage', 'home loan')} balance is $ 5"
                for p in prompts]

    def swapped(prompts):
        return ["your premier savings balance is $ 5" if p.startswith("savings") else
                "your savings balance is $ 5" for p in prompts]

    good = analyse_faithfulness(probes, collect_responses(prompts, faithful), TH_DIR)
    assert good.status == "PASS", good.reason
    assert good.values["per_entity"] == {"premier savings": 1.0, "savings": 1.0, "mortgage": 1.0}
    bad = analyse_faithfulness(probes, collect_responses(prompts, swapped), TH_DIR)
    assert bad.status == "FAIL"
    assert bad.values["per_entity"] == {"premier savings": 0.0, "savings": 0.0, "mortgage": 0.0}
    assert bad.values["n_swapped"] == 120  # each names another of its probe's entities
    points = entity_decision_points(probes, collect_responses(prompts, faithful))
    assert len(points) == 120
    prompt, before, first_mentions, requested = points[0]
    assert before == ["your"] and requested == "premier savings"
    assert first_mentions == {"premier savings": "premier savings", "savings": "savings",
                              "mortgage": "mortgage"}
