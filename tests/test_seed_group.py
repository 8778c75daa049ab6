"""split_seed and seed groups (bankllm.seed_group), and gating a seed group."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from bankllm.cli import main
from bankllm.config import TrainConfig, load_config
from bankllm.data import load_conversations, split_conversations
from bankllm.fileio import load_schema
from bankllm.seed_group import read_group
from bankllm.training import Trainer
from diagnostics.analyses.regression import seed_spread
from diagnostics.gate import gate_result

TINY = {"n_layer": 1, "n_head": 2, "n_embd": 16, "block_size": 64, "dropout": 0.0, "epochs": 1,
        "batch_size": 8, "micro_batch_size": 4, "lr": 3e-3, "min_lr": 3e-4,
        "precision": "fp32", "threads": 1}


def _train(tiny_config: TrainConfig, run_dir: Path, **changes) -> Trainer:
    cfg = TrainConfig(**{**tiny_config.to_dict(), **TINY, **changes})
    trainer = Trainer(cfg, run_dir, show_progress=False, log=lambda _: None)
    assert trainer.train() == 0
    return trainer


# --------------------------------------------------------------------------- split_seed


def test_split_seed_parses_and_defaults_to_seed():
    assert load_config().split_seed is None and load_config().effective_split_seed == 0
    cfg = load_config(None, ["seed=4"])
    assert cfg.effective_split_seed == 4
    cfg = load_config(None, ["seed=4", "split_seed=7"])
    assert cfg.split_seed == 7 and cfg.effective_split_seed == 7
    assert load_config(None, ["split_seed=7", "split_seed=none"]).split_seed is None


def test_unset_split_seed_reproduces_the_old_split_and_losses(tiny_config, corpus_file, tmp_path):
    convs = load_conversations(corpus_file)
    old = split_conversations(convs, tiny_config.val_fraction, 3)  # the old call: the seed
    unset = _train(tiny_config, tmp_path / "unset", seed=3)
    assert unset.split.ids() == old.ids()  # val and train_eval
    info = json.loads((tmp_path / "unset" / "split.json").read_text())
    assert info["split_seed"] == 3 and info["seed"] == 3
    assert json.loads((tmp_path / "unset" / "config.json").read_text())["split_seed"] is None
    _train(tiny_config, tmp_path / "same", seed=3, split_seed=3)
    m1 = json.loads((tmp_path / "unset" / "metrics.json").read_text())
    m2 = json.loads((tmp_path / "same" / "metrics.json").read_text())
    assert [e["val_loss"] for e in m1["epochs"]] == [e["val_loss"] for e in m2["epochs"]]
    assert [s["loss"] for s in m1["steps"]] == [s["loss"] for s in m2["steps"]]


def test_split_seed_draws_the_split_and_seed_the_rest(tiny_config, corpus_file, tmp_path):
    convs = load_conversations(corpus_file)
    a = _train(tiny_config, tmp_path / "a", seed=1, split_seed=5)
    b = _train(tiny_config, tmp_path / "b", seed=2, split_seed=5)
    assert a.split.ids() == b.split.ids() == split_conversations(convs, 0.1, 5).ids()
    assert split_conversations(convs, 0.1, 1).ids() != a.split.ids()
    ma = json.loads((tmp_path / "a" / "metrics.json").read_text())
    mb = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert ma["initial_loss"] != mb["initial_loss"]  # other init: the training seed


def test_ablation_keeps_the_parents_split(tiny_config, tmp_path):
    from bankllm.ablation import plan_ablation
    from bankllm.checkpoints import load_run

    _train(tiny_config, tmp_path / "p", seed=1, split_seed=5)
    run = load_run(tmp_path / "p")
    plan = plan_ablation(run, 0.5)
    assert [c["id"] for c in plan.split.val] == [c["id"] for c in run.split.val]
    train_ids = {c["id"] for c in run.split.train}
    assert {c["id"] for c in plan.split.train} <= train_ids
    assert plan.config.split_seed == 5 and plan.config.seed == 1


# --------------------------------------------------------------------------- seed groups


@pytest.fixture(scope="module")
def group(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``bankllm train --seeds 3 1 --name g`` of a tiny config (split seed: the first, 3)."""
    from tests.conftest import make_conversations

    root = tmp_path_factory.mktemp("group")
    corpus = root / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(c) + "\n" for c in make_conversations()))
    config = root / "tiny.toml"
    config.write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in TINY.items()))
    code = main(["train", "--seeds", "3", "1", "--name", "g", "--runs-dir", str(root / "runs"),
                 "--config", str(config), "--data", str(corpus), "--quiet"])
    assert code == 0
    return root / "runs" / "g"


def test_group_json_lists_the_members_and_latest_points_at_the_group(group):
    info = json.loads((group / "group.json").read_text())
    jsonschema.Draft202012Validator(load_schema("bankllm", "group.schema.json")).validate(info)
    assert info["seeds"] == [3, 1] and info["split_seed"] == 3
    assert info["split_seed_from"] == "the first seed given"
    assert read_group(group) == [group / "seed-3", group / "seed-1"]
    assert read_group(group / "seed-3") is None
    assert (group.parent / "latest").resolve() == group.resolve()
    assert not (group / "latest").exists()
    splits = [json.loads((m / "split.json").read_text()) for m in read_group(group)]
    assert splits[0]["val"] == splits[1]["val"] and splits[0]["split_seed"] == 3
    configs = [json.loads((m / "config.json").read_text()) for m in read_group(group)]
    assert [c["seed"] for c in configs] == [3, 1] and {c["split_seed"] for c in configs} == {3}


def test_seeds_with_resume_is_refused(group, capsys):
    code = main(["train", "--seeds", "0", "1", "--resume", str(group / "seed-3")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1
    assert "--seeds" in err and "--resume" in err


def test_update_from_a_group_records_the_seed_spread(group, tmp_path, capsys):
    path = tmp_path / "baseline.json"
    assert main(["gate", "--run", str(group), "--baseline", str(path), "--update"]) == 0
    out = capsys.readouterr().out
    data = json.loads(path.read_text())
    members = read_group(group)
    losses = [json.loads((m / "metrics.json").read_text())["best_val_loss"] for m in members]
    sg = data["seed_group"]
    assert sg["seeds"] == [3, 1] and sg["best_val_losses"] == losses
    assert sg["spread"] == pytest.approx((max(losses) - min(losses)) / (sum(losses) / 2))
    assert sg["spread"] == seed_spread(losses) and "seed spread" in out
    # two members: the lower median, i.e. the better one
    ref = members[losses.index(min(losses))]
    assert sg["reference"] == ref.name and data["best_val_loss"] == min(losses)
    assert data["run_name"] == f"g/{ref.name}"
    val = json.loads((ref / "split.json").read_text())["val"]
    assert sorted(data["per_conversation"]["loss_sum"]) == sorted(val)

    # gating the group against it: each member, the group passes only if all do
    code = main(["gate", "--run", str(group), "--baseline", str(path)])
    out = capsys.readouterr().out
    assert code == 0 and "member seed-3" in out and "member seed-1" in out
    flat = " ".join(out.split())  # the console wraps long paths at its width
    assert "2 of 2 members pass" in flat or "verdict: WARN" in flat
    result = gate_result(group, path)
    assert result.status in ("PASS", "WARN") and set(result.values["members"]) == {
        "seed-3", "seed-1"}

    # one member regressed: the group fails, naming it
    metrics = group / "seed-1" / "metrics.json"
    before = metrics.read_text()
    from tests.test_gate import _plant

    cache = group / "seed-1" / "val_losses.json"
    try:
        _plant(group / "seed-1", 1.5)
        code = main(["gate", "--run", str(group), "--baseline", str(path)])
        out = capsys.readouterr().out
        assert code == 1 and "member seed-1: FAIL" in out and "verdict: FAIL" in out
        assert gate_result(group, path).status == "FAIL"
    finally:
        metrics.write_text(before)
        cache.unlink()


def test_a_group_frees_each_member_before_the_next_starts(tmp_path, monkeypatch):
    """Members train one after the other in one process: a member's model, optimizer state
    and kernels must be gone before the next member builds its own, or the group's peak
    memory grows with every seed."""
    import weakref

    from bankllm import training
    from tests.conftest import make_conversations

    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(c) + "\n" for c in make_conversations()))
    config = tmp_path / "tiny.toml"
    config.write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in TINY.items()))
    made: list[weakref.ref] = []
    alive_when_built: list[list[bool]] = []
    real_init = training.Trainer.__init__

    def init(self, *args, **kwargs):
        alive_when_built.append([ref() is not None for ref in made])
        made.append(weakref.ref(self))
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(training.Trainer, "__init__", init)
    code = main(["train", "--seeds", "0", "1", "2", "--name", "g", "--runs-dir",
                 str(tmp_path / "runs"), "--config", str(config), "--data", str(corpus),
                 "--quiet"])
    assert code == 0
    assert alive_when_built == [[], [False], [False, False]]
