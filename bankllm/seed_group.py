"""Seed groups: one recipe trained under several training seeds on one shared split.

``bankllm train --seeds 0 1 2 --name NAME`` trains ``runs/NAME/seed-0``, ``seed-1``,
``seed-2`` one after the other (each a normal run directory, each with all cores), every one
with the same ``split_seed`` (the config's, or the first seed given when it is unset), so
they share one val set and differ only in initialisation, dropout and data order. It writes
``runs/NAME/group.json`` (``schemas/group.schema.json``: the seeds, the split seed and the
member directories) before the first member starts, and points ``runs/latest`` at the group
when the last one is done. ``bankllm gate`` gates each member of a group, and
``bankllm gate --update`` records the seed spread of its best val losses in the baseline.

This module is the ``bankllm train`` handler: without ``--seeds`` it hands over to
:func:`bankllm.train_cli.cli_train` unchanged.
"""

from __future__ import annotations

import argparse
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bankllm.errors import BankLLMError
from bankllm.fileio import atomic_write_json, load_schema, read_json, validate_json

GROUP_FILE = "group.json"
SCHEMA = "group.schema.json"


def member_name(seed: int) -> str:
    """Directory of a group's member trained with ``seed``: ``seed-<seed>``."""
    return f"seed-{seed}"


def read_group(path: str | Path) -> list[Path] | None:
    """The member run directories of the seed group at ``path`` (in the order of its seeds),
    or None when ``path`` is not a group (no ``group.json``). A ``group.json`` that is not
    valid is a :class:`BankLLMError` naming it."""
    file = Path(path) / GROUP_FILE
    if not file.is_file():
        return None
    return [Path(path) / m for m in read_group_info(path)["members"]]


def read_group_info(path: str | Path) -> dict[str, Any]:
    """The validated contents of ``<path>/group.json``."""
    file = Path(path) / GROUP_FILE
    info = read_json(file, "seed group")
    validate_json(info, load_schema("bankllm", SCHEMA), str(file))
    if len(set(info["seeds"])) != len(info["seeds"]) or len(info["members"]) != len(info["seeds"]):
        raise BankLLMError(f"{file}: seeds must be distinct, one member per seed")
    if any(Path(m).name != m or m in (".", "..") for m in info["members"]):
        raise BankLLMError(f"{file}: a member is one folder name inside the group")
    return info


def write_group(group_dir: Path, name: str, seeds: list[int], split_seed: int,
                split_seed_from: str) -> Path:
    """Schema-check and atomically write ``group_dir/group.json``."""
    info = {
        "schema_version": 1,
        "name": name,
        "created": datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z"),
        "seeds": list(seeds),
        "split_seed": split_seed,
        "split_seed_from": split_seed_from,
        "members": [member_name(s) for s in seeds],
    }
    path = group_dir / GROUP_FILE
    validate_json(info, load_schema("bankllm", SCHEMA), str(path))
    return atomic_write_json(path, info)


def cli_train(args: Any) -> int:
    """``bankllm train``: a seed group with ``--seeds``, else one run (train_cli.cli_train)."""
    from bankllm import train_cli as training

    if not getattr(args, "seeds", None):
        return training.cli_train(args)
    return train_group(args)


def train_group(args: Any) -> int:
    """Train one run per seed of ``args.seeds`` into ``<runs-dir>/<name>/seed-<N>/``; return
    0, or the exit code of the first member that stops non-zero (diverged, interrupted): the
    group stops there and says how to resume that member and train the rest."""
    from bankllm import checkpoints as ckpt
    from bankllm import train_cli as training
    from bankllm.config import load_config

    seeds = list(args.seeds)
    if args.resume:
        raise BankLLMError(
            "--seeds cannot be combined with --resume: resume one member with "
            "--resume RUNS/NAME/seed-N"
        )
    if len(set(seeds)) != len(seeds):
        raise BankLLMError(f"--seeds {' '.join(map(str, seeds))}: each seed at most once")
    training._check_run_name(args.name)
    overrides = list(args.overrides)
    if args.data:
        overrides.append(f"data={args.data}")
    cfg = load_config(args.config, overrides)  # validated before anything is written
    for seed in seeds:
        load_config(args.config, [*overrides, f"seed={seed}"])  # each seed in range
    if cfg.split_seed is None:
        split_seed, split_seed_from = seeds[0], "the first seed given"
    else:
        split_seed, split_seed_from = cfg.split_seed, "the config"
    name = args.name or training.default_run_name()
    group_dir = Path(args.runs_dir) / name
    if (group_dir / GROUP_FILE).exists() or (group_dir / ckpt.METRICS_FILE).exists():
        raise BankLLMError(f"{group_dir}: a run or seed group of that name exists; pick another "
                           "--name")
    main = os.environ.get("RANK", "0") == "0"
    if main:
        group_dir.mkdir(parents=True, exist_ok=True)
        write_group(group_dir, name, seeds, split_seed, split_seed_from)
        print(f"bankllm: seed group {group_dir}: training seeds {' '.join(map(str, seeds))} "
              f"one after the other, all on split seed {split_seed} ({split_seed_from})",
              flush=True)
    for i, seed in enumerate(seeds):
        member = argparse.Namespace(**vars(args))
        member.seeds, member.name, member.runs_dir = None, member_name(seed), str(group_dir)
        member.data = None
        member.overrides = [*overrides, f"seed={seed}", f"split_seed={split_seed}"]
        code = training.cli_train(member)
        if main:  # the member pointed <group>/latest at itself: the group's latest is runs/
            (group_dir / "latest").unlink(missing_ok=True)
        if code != 0:
            rest = seeds[i + 1:]
            hint = "".join(
                f"\n  bankllm train --runs-dir {group_dir} --name {member_name(s)} "
                f"--set seed={s} --set split_seed={split_seed} (and the same --config/--set)"
                for s in rest)
            print(f"bankllm: seed group {group_dir}: member {member_name(seed)} stopped with "
                  f"exit {code}; resume it with: bankllm train --resume "
                  f"{group_dir / member_name(seed)}" + (f"; then train the rest:{hint}"
                                                        if rest else ""), flush=True)
            return code
    if main:
        ckpt.point_latest(group_dir)
        print(f"bankllm: seed group {group_dir} done ({len(seeds)} runs); runs/latest points at "
              f"it; gate it with: bankllm gate --run {group_dir}", flush=True)
    return 0
