"""``bankllm data probes --check DIR``, the documented example probes, and ``fit_probes``."""

from __future__ import annotations

import shutil
from pathlib import Path

from bankllm.cli import main
from bankllm.probes import PROBE_KINDS, Probes, fit_probes, load_probes

EXAMPLE = Path(__file__).resolve().parents[1] / "docs" / "example-probes"


def _replace_line(path: Path, lineno: int, text: str) -> None:
    lines = path.read_text(encoding="utf-8").splitlines()
    lines[lineno - 1] = text
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_the_documented_example_probes_pass_the_check_and_load(capsys):
    assert main(["data", "probes", "--check", str(EXAMPLE)]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert out == f"{EXAMPLE}: 4 INV groups, 3 DIR triples, 6 MFT prompts: all valid\n"
    assert load_probes(EXAMPLE).counts() == {"inv": 4, "dir": 3, "mft": 6}


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
        [f"{bad}/inv.jsonl:3", "prompts"],
        [f"{bad}/dir.jsonl:2", "variants/1/entity"],
        [f"{bad}/mft.jsonl:5", "id"],
        [f"{bad}/mft.jsonl:7", "(record)"],
        [f"{bad}/mft.jsonl:9", "intent"],
        [f"{bad}/mft.jsonl:10", "(top level)"],
    ]
    assert all(line.startswith("error: ") for line in lines)
    assert "is too short" in lines[0] and "'savings' was expected" in lines[1]
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
    assert err == (f"error: {probes}/dir.jsonl: file not found; a probe folder holds inv.jsonl, "
                   "dir.jsonl and mft.jsonl (an empty file for a kind you do not use)\n")
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
    assert probes.counts() == {"inv": 4, "dir": 3, "mft": 6}  # the input is not changed
    everything = {r["intent"] for k in PROBE_KINDS for r in getattr(probes, k)}
    assert fit_probes(probes, everything) == (probes, dict.fromkeys(PROBE_KINDS, 0))
    assert fit_probes(Probes(), set()) == (Probes(), dict.fromkeys(PROBE_KINDS, 0))
