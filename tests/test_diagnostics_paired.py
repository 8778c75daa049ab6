"""The paired change against the baseline (diagnostics.paired): planted drops on the same
probes are found (interval below 0, McNemar p < 0.05), identical outcomes give no change, a
baseline without outcomes or on other probes gives no comparison and no error, and the
absolute verdict never moves. The analyses are fed tiny probe sets and response sources."""

from __future__ import annotations

import math

import pytest

from bankllm.probes import Probes
from diagnostics.analyses.consistency import Judge, analyse_consistency
from diagnostics.analyses.faithfulness import analyse_faithfulness
from diagnostics.analyses.memorization import Generation, Item, analyse_memorization
from diagnostics.paired import binary_change, clustered_change, compare_with_baseline
from diagnostics.results import CheckResult
from diagnostics.thresholds import Thresholds

ENTITIES = ("checking", "savings")


def _binary(n: int = 40, wrong: int = 2) -> dict[str, int]:
    return {f"mft-{i:03d}": int(i >= wrong) for i in range(n)}


def _flip(outcomes: dict[str, int], k: int) -> dict[str, int]:
    """``outcomes`` with the first ``k`` right items answered wrong."""
    out, left = dict(outcomes), k
    for key, ok in outcomes.items():
        if ok and left:
            out[key], left = 0, left - 1
    return out


def test_a_planted_drop_of_10_in_40_binary_items_is_conclusive():
    base = _binary()
    ch = binary_change(_flip(base, 10), base, "novel_accuracy", "MFT prompts")
    assert ch is not None
    assert ch.value == pytest.approx(-0.25)
    assert ch.high < 0 and ch.low < ch.value < ch.high
    assert ch.p is not None and ch.p < 0.05
    assert ch.n == 40 and ch.discordant == (10, 0)
    assert ch.conclusion(higher_is_better=True) == "conclusively worse"


def test_identical_binary_outcomes_give_no_change_and_p_1():
    base = _binary()
    ch = binary_change(dict(base), base, "novel_accuracy", "MFT prompts")
    assert ch is not None and ch.value == 0 and ch.p == 1.0
    assert ch.low <= 0 <= ch.high
    assert ch.conclusion(higher_is_better=True) == "no conclusive change"


def test_a_few_discordant_items_are_not_conclusive():
    base = _binary()
    ch = binary_change(_flip(base, 2), base, "novel_accuracy", "MFT prompts")
    assert ch is not None and ch.p is not None and ch.p > 0.05
    assert not ch.conclusive and ch.high >= 0


def test_items_on_one_side_only_are_left_out_and_counted():
    base = _binary()
    new = {k: v for k, v in base.items() if k != "mft-039"} | {"mft-new": 0}
    ch = binary_change(new, base, "novel_accuracy", "MFT prompts")
    assert ch is not None and ch.n == 39 and ch.only_new == 1 and ch.only_base == 1
    assert ch.value == 0
    assert "2 on one side only left out" in ch.sentence(True)
    assert binary_change({"a": 1}, {"b": 1}, "x", "items") is None


def test_a_planted_drop_in_clustered_items_is_conclusive():
    base = {f"inv-{i:03d}": [6, 6] for i in range(40)}
    new = {k: ([1, 6] if i < 10 else [6, 6]) for i, k in enumerate(base)}
    ch = clustered_change([new], [base], "consistency", "INV groups")
    assert ch is not None and ch.p is None and ch.n == 40
    assert ch.value == pytest.approx(-10 * 5 / 240)
    assert ch.high < 0
    same = clustered_change([dict(base)], [base], "consistency", "INV groups")
    assert same is not None and same.value == 0 and same.low <= 0 <= same.high
    assert not same.conclusive


def test_one_shared_item_has_no_interval_and_is_not_conclusive():
    ch = binary_change({"a": 0}, {"a": 1}, "x", "items")
    assert ch is not None and ch.value == -1 and not math.isfinite(ch.low)
    assert not ch.conclusive and "too few shared items" in ch.sentence(True)


# --------------------------------------------------------------------------- faithfulness


def _dir_probes(n: int = 20) -> Probes:
    return Probes(dir=[{"id": f"dir-{i:03d}", "intent": "check_balance", "variants": [
        {"entity": e, "prompt": f"what is my {e} balance? ({i})"} for e in ENTITIES]}
        for i in range(n)])


def _dir_answers(probes: Probes, wrong: int = 0) -> dict[str, str]:
    """Faithful answers, except that the first ``wrong`` variants name the other account."""
    out = {}
    for k, var in enumerate(v for r in probes.dir for v in r["variants"]):
        entity = var["entity"] if k >= wrong else next(e for e in ENTITIES if e != var["entity"])
        out[var["prompt"]] = f"your {entity} account balance is $ 1 0 ."
    return out


TH_DIR = Thresholds().for_check("faithfulness")


def test_faithfulness_records_its_outcomes_per_probe_and_entity():
    probes = _dir_probes()
    result = analyse_faithfulness(probes, _dir_answers(probes, wrong=3), TH_DIR)
    outcomes = result.details["outcomes"]
    assert set(outcomes) == {"identity", "dir"} and len(outcomes["dir"]) == 40
    assert outcomes["dir"]["dir-000/checking"] == 0 and outcomes["dir"]["dir-019/savings"] == 1
    assert sum(outcomes["dir"].values()) == 37


def test_faithfulness_planted_drop_against_the_baseline_is_reported_not_judged():
    probes = _dir_probes()
    base = analyse_faithfulness(probes, _dir_answers(probes), TH_DIR)
    new = analyse_faithfulness(probes, _dir_answers(probes, wrong=10), TH_DIR)
    status, reason = new.status, new.reason
    compare_with_baseline(new, {"faithfulness": base.details["outcomes"]})
    v = new.values
    assert v["faithfulness_vs_baseline"] == pytest.approx(-0.25)
    assert v["faithfulness_vs_baseline_ci95_high"] < 0
    assert v["faithfulness_vs_baseline_p"] < 0.05 and v["faithfulness_vs_baseline_n"] == 40
    assert new.status == status  # information beside the verdict, never a verdict
    assert new.reason.startswith(reason)
    assert "faithfulness vs baseline: -25.0 points (95% CI" in new.reason
    assert "McNemar p = 0.002" in new.reason and "40 shared DIR variants" in new.reason
    assert new.reason.endswith("conclusively worse")
    rows = [t for t in new.details["tables"] if t["title"].startswith("change against")]
    assert len(rows) == 1 and rows[0]["rows"][0][0] == "faithfulness"
    CheckResult.from_json(new.to_json())  # JSON-able


def test_identical_outcomes_give_change_0_and_p_1_in_the_result():
    probes = _dir_probes()
    base = analyse_faithfulness(probes, _dir_answers(probes, wrong=4), TH_DIR)
    new = analyse_faithfulness(probes, _dir_answers(probes, wrong=4), TH_DIR)
    compare_with_baseline(new, {"faithfulness": base.details["outcomes"]})
    assert new.values["faithfulness_vs_baseline"] == 0
    assert new.values["faithfulness_vs_baseline_p"] == 1.0
    assert new.reason.endswith("no conclusive change")


@pytest.mark.parametrize("baseline", [None, {}, {"consistency": {"identity": "0" * 16}}])
def test_a_baseline_without_outcomes_gives_no_comparison_and_no_error(baseline):
    probes = _dir_probes()
    new = analyse_faithfulness(probes, _dir_answers(probes), TH_DIR)
    before = (new.status, new.reason, dict(new.values))
    compare_with_baseline(new, baseline)
    assert (new.status, new.reason, new.values) == before
    assert any("no change against the baseline" in n for n in new.details["notes"])


def test_outcomes_on_other_probes_are_refused_with_a_note():
    probes = _dir_probes()
    other = _dir_probes(21)
    base = analyse_faithfulness(other, _dir_answers(other), TH_DIR)
    new = analyse_faithfulness(probes, _dir_answers(probes, wrong=10), TH_DIR)
    compare_with_baseline(new, {"faithfulness": base.details["outcomes"]})
    assert "faithfulness_vs_baseline" not in new.values
    assert any("other probes" in n and "refused" in n for n in new.details["notes"])


def test_a_skipped_check_is_left_alone():
    result = CheckResult("faithfulness", "SKIP", "no DIR probes")
    assert compare_with_baseline(result, {"faithfulness": {"identity": "x"}}).details == {}


# --------------------------------------------------------------------------- consistency


def _consistency_probes() -> Probes:
    inv = [{"id": f"inv-{i:03d}", "intent": "check_balance", "entity": "checking",
            "prompts": [f"balance please {i} {j}" for j in range(3)]} for i in range(40)]
    mft = [{"id": f"mft-{i:03d}", "intent": "check_balance", "entity": "checking",
            "prompt": f"how much money do I have {i}"} for i in range(40)]
    return Probes(inv=inv, mft=mft)


def _judge() -> Judge:
    return Judge(lambda texts: ["check_balance" if "balance" in t else "transfer"
                                for t in texts], 1.0, 10, 10, ["check_balance", "transfer"])


def _consistency_answers(probes: Probes, wrong: int = 0) -> dict[str, str]:
    """Right answers, except the last prompt of the first ``wrong`` INV groups and the first
    ``wrong`` MFT prompts."""
    out = {}
    for i, g in enumerate(probes.inv):
        for j, p in enumerate(g["prompts"]):
            out[p] = "send money" if i < wrong and j == 2 else "your balance is $ 5 ."
    for i, r in enumerate(probes.mft):
        out[r["prompt"]] = "send money" if i < wrong else "your balance is $ 5 ."
    return out


def test_consistency_compares_inv_groups_and_mft_prompts_with_the_baseline():
    probes = _consistency_probes()
    th = Thresholds().for_check("consistency")
    base = analyse_consistency(probes, _consistency_answers(probes), _judge(), th)
    new = analyse_consistency(probes, _consistency_answers(probes, wrong=10), _judge(), th)
    outcomes = new.details["outcomes"]
    assert outcomes["inv"]["inv-000"] == [1, 3] and outcomes["inv"]["inv-039"] == [3, 3]
    assert outcomes["mft"]["mft-000"] == 0 and outcomes["mft"]["mft-039"] == 1
    status = new.status
    compare_with_baseline(new, {"consistency": base.details["outcomes"]})
    v = new.values
    assert new.status == status
    assert v["novel_accuracy_vs_baseline"] == pytest.approx(-0.25)
    assert v["novel_accuracy_vs_baseline_p"] < 0.05
    assert v["novel_accuracy_vs_baseline_ci95_high"] < 0
    assert v["consistency_vs_baseline"] == pytest.approx(-20 / 120)
    assert v["consistency_vs_baseline_ci95_high"] < 0
    assert "consistency_vs_baseline_p" not in v  # clustered: no McNemar
    assert v["consistency_vs_baseline_n"] == 40


# --------------------------------------------------------------------------- memorization


def _generations(train_hits: int, val_hits: int, n: int = 30) -> list[Generation]:
    """``n`` train and ``n`` val conversations of 2 turns; the first ``*_hits`` conversations
    of each split answered exactly."""
    gens = []
    for split, hits in (("train", train_hits), ("val", val_hits)):
        for c in range(n):
            for t in range(2):
                item = Item(split, "turn", f"{split}-{c}", f"<bos> hi {c} {t} <agent>",
                            f"answer {c} {t}")
                gens.append(Generation(item, item.expected if c < hits else "something else"))
    return gens


def test_memorization_gap_change_is_paired_over_conversations():
    th = Thresholds().for_check("memorization")
    base = analyse_memorization(_generations(10, 10), [], {}, 30, th)
    new = analyse_memorization(_generations(25, 10), [], {}, 30, th)
    assert new.details["outcomes"]["val"]["val-0"] == [2, 2]
    assert new.details["outcomes"]["train"]["train-29"] == [0, 2]
    status = new.status
    compare_with_baseline(new, {"memorization": base.details["outcomes"]})
    v = new.values
    assert new.status == status
    assert v["gap_vs_baseline"] == pytest.approx(0.5)
    assert v["gap_vs_baseline_ci95_low"] > 0 and v["gap_vs_baseline_n"] == 60
    assert new.reason.endswith("conclusively worse")  # a wider gap is worse
