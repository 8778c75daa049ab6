"""``bankllm data probes --check DIR``, the documented example probes, and ``fit_probes``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from bankllm.cli import main
from bankllm.probes import (
    PROBE_KINDS,
    Probes,
    dir_mentions,
    entities_named_in,
    fit_probes,
    load_probes,
)

EXAMPLE = Path(__file__).resolve().parents[1] / "docs" / "example-probes"


def _replace_line(path: Path, lineno: int, text: str) -> None:
    lines = path.read_text(encoding="utf-8").splitlines()
    lines[lineno - 1] = text
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_the_documented_example_probes_pass_the_check_and_load(capsys):
    assert main(["data", "probes", "--check", str(EXAMPLE)]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert out == f"{EXAMPLE}: 4 INV groups, 5 DIR swaps, 6 MFT prompts: all valid\n"
    assert load_probes(EXAMPLE).counts() == {"inv": 4, "dir": 5, "mft": 6}


def test_every_bad_record_gets_its_own_error_line(tmp_path, capsys):
    bad = tmp_path / "probes"
    shutil.copytree(EXAMPLE, bad)
    _replace_line(bad / "inv.jsonl", 3, '{"id": "inv-003", "intent": "transfer_money", '
                  '"entity": "savings", "prompts": ["a", "b"]}')
    _replace_line(bad / "dir.jsonl", 2, '{"id": "dir-002", "intent": "check_balance", '
                  '"variants": [{"entity": "checking", "prompt": "x"}, {"entity": "checking", '
                  '"prompt": "y"}, {"entity": "credit card", "prompt": "z"}]}')
    mft = bad / "mft.jsonl"
    _replace_line(mft, 5, (EXAMPLE / "mft.jsonl").read_text().splitlines()[4]
                  .replace("mft-005", "mft-002"))
    with mft.open("a", encoding="utf-8") as f:
        f.write('{"id": "mft-007", \n\n')
        f.write('{"id": "mft-008", "intent": "Check Balance", "entity": null, "prompt": "hi"}\n')
        f.write('{"id": "mft-009", "intent": "atm_fee", "entity": "loan", "prompt": "hi", '
                '"extra": 1}\n')
    assert main(["data", "probes", "--check", str(bad)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.splitlines()
    assert [line.split(": ", 3)[1:3] for line in lines] == [
        [f"{bad}/inv.jsonl:3", "field 'prompts'"],
        [f"{bad}/dir.jsonl:2", "field 'variants'"],
        [f"{bad}/mft.jsonl:5", "field 'id'"],
        [f"{bad}/mft.jsonl:7", "not valid JSON (Expecting property name enclosed in double "
                               "quotes at column 19)"],
        [f"{bad}/mft.jsonl:9", "field 'intent'"],
        [f"{bad}/mft.jsonl:10", "field '(top level)'"],
    ]
    assert all(line.startswith("error: ") for line in lines)
    assert "is too short" in lines[0]
    assert "entity 'checking' appears in more than one variant" in lines[1]
    assert "duplicate id 'mft-002' (first on line 2)" in lines[2]
    assert "not valid JSON" in lines[3] and "does not match" in lines[4]
    assert "'extra' was unexpected" in lines[5]


def test_a_missing_file_or_folder_is_named(tmp_path, capsys):
    probes = tmp_path / "probes"
    shutil.copytree(EXAMPLE, probes)
    (probes / "dir.jsonl").unlink()
    (probes / "mft.jsonl").write_text("")
    assert main(["data", "probes", "--check", str(probes)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {probes}/dir.jsonl: probe file not found; a probe folder "
                          "holds inv.jsonl, dir.jsonl and mft.jsonl")
    assert err.count("\n") == 1
    assert main(["data", "probes", "--check", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {tmp_path / 'nope'}: probe directory not found")
    assert err.count("\n") == 1


def test_fit_probes_leaves_out_intents_the_training_split_lacks():
    probes = load_probes(EXAMPLE)
    train = {"check_balance", "transfer_money"}
    fitted, left_out = fit_probes(probes, train)
    for kind in PROBE_KINDS:
        before = getattr(probes, kind)
        kept = getattr(fitted, kind)
        assert kept == [r for r in before if r["intent"] in train]
        assert left_out[kind] == len(before) - len(kept)
    assert left_out == {"inv": 2, "dir": 1, "mft": 4}
    assert probes.counts() == {"inv": 4, "dir": 5, "mft": 6}  # the input is not changed
    everything = {r["intent"] for k in PROBE_KINDS for r in getattr(probes, k)}
    assert fit_probes(probes, everything) == (probes, dict.fromkeys(PROBE_KINDS, 0))
    assert fit_probes(Probes(), set()) == (Probes(), dict.fromkeys(PROBE_KINDS, 0))


def _dir(rid: str, *variants: tuple) -> dict:
    return {"id": rid, "intent": "check_balance", "variants": [
        {"entity": e, "prompt": f"what is my {e} balance?", **({"mentions": m} if m else {})}
        for e, m in variants]}


def test_dir_probes_name_their_own_entities_and_the_words_that_mention_them(tmp_path, capsys):
    probes = tmp_path / "probes"
    probes.mkdir()
    (probes / "inv.jsonl").write_text("")
    (probes / "mft.jsonl").write_text("")
    records = [_dir("dir-001", ("gold card", ["gold card", "gold"]), ("silver card", None)),
               _dir("dir-002", ("mortgage", None), ("car loan", ["car loan", "auto loan"]),
                    ("savings", None))]
    (probes / "dir.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    assert main(["data", "probes", "--check", str(probes)]) == 0
    assert "2 DIR swaps" in capsys.readouterr().out
    loaded = load_probes(probes)
    assert dir_mentions(loaded.dir[0]) == {"gold card": ("gold card", "gold"),
                                           "silver card": ("silver card",)}
    # a DIR variant whose entity the training text never names is left out; a probe left with
    # fewer than two variants is no swap and goes whole
    seen = entities_named_in(loaded, ["Your Gold balance is $5.", "an auto loan of $3",
                                      "your silver card"])
    assert seen == {"gold card", "silver card", "car loan"}
    fitted, left_out = fit_probes(loaded, {"check_balance"}, seen)
    assert [r["id"] for r in fitted.dir] == ["dir-001"] and left_out["dir"] == 1
    # one record, one variant per entity; a single variant is no swap
    twice = _dir("dir-003", ("gold card", None), ("gold card", ["gold"]))
    single = _dir("dir-004", ("gold card", None))
    (probes / "dir.jsonl").write_text(json.dumps(twice) + "\n" + json.dumps(single) + "\n")
    assert main(["data", "probes", "--check", str(probes)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2
    assert "dir.jsonl:1: field 'variants': entity 'gold card' appears in more" in err[0]
    assert "dir.jsonl:2: field 'variants': " in err[1] and "too short" in err[1]


def test_a_probe_that_copies_an_earlier_one_is_an_error(tmp_path, capsys):
    """A copy would be counted as one more probe and narrow the intervals with no evidence."""
    probes = tmp_path / "probes"
    shutil.copytree(EXAMPLE, probes)
    for kind in ("inv", "dir", "mft"):
        first = json.loads((probes / f"{kind}.jsonl").read_text().splitlines()[0])
        copy = {**first, "id": f"{kind}-999"}
        if kind == "inv":
            copy["prompts"] = list(reversed(first["prompts"]))  # the same set, reordered
        with (probes / f"{kind}.jsonl").open("a") as f:
            f.write(json.dumps(copy) + "\n")
    assert main(["data", "probes", "--check", str(probes)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 3
    for line, kind, field in zip(err, ("inv", "dir", "mft"), ("prompts", "variants", "prompt"),
                                 strict=True):
        assert f"{kind}.jsonl:" in line
        assert f"field '{field}': asks exactly what {kind}-001 asks" in line
