"""Canaries: synthetic secret conversations inserted into the train batches for a privacy audit.

Carlini et al., "The Secret Sharer" (USENIX Security 2019): a run with ``canaries = n`` trains
on ``n`` extra conversations in which a customer states a random account number, each repeated
a fixed number of times (1, 2, 4, 8, 16, 1, 2, ...). The ``privacy`` diagnostic then measures
how much better the trained model ranks each true secret than random ones (its *exposure*) and
whether greedy decoding reproduces it.

Canary ``i``'s customer turn is ``PREFIX_TEMPLATE`` with its own 4-digit id followed by a
secret of ``SECRET_DIGITS`` uniformly random digits (the tokenizer keeps digits single tokens,
so the secret space holds ``10 ** SECRET_DIGITS`` sequences); an agent turn answers it. The id
gives every canary its own prefix, so each secret can be extracted on its own.

They are drawn after the split, from a generator seeded by the run's seed alone (no global RNG
is touched), and only ever added to the *train batches*: the corpus file, ``split.json`` (so
``bankllm.checkpoints.load_run(...).split``), val and ``train_eval`` never hold them. The run
directory records them in ``canaries.json`` (``schemas/canaries.schema.json``). With
``canaries = 0`` nothing is drawn or written and training is unchanged.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bankllm.errors import BankLLMError
from bankllm.fileio import atomic_write_json, load_schema, read_json, validate_json
from bankllm.tokenizer import Tokenizer, normalise_text

CANARIES_FILE = "canaries.json"
SCHEMA = "canaries.schema.json"
SCHEDULE: tuple[int, ...] = (1, 2, 4, 8, 16)  # repetitions of canary i: SCHEDULE[i % 5]
SECRET_DIGITS = 10  # a space of 10**10 secrets (log2: 33.2 bits)
ID_DIGITS = 4
PREFIX_TEMPLATE = "my id is {id} and my account is"
AGENT_REPLY = "thank you , i have your account ."
ID_PREFIX = "canary-"  # conversation ids: canary-003#2 (canary 3, copy 2)
_SALT = "bankllm-canaries"


def repetitions(index: int) -> int:
    """How many times canary ``index`` is in the train batches of every epoch."""
    return SCHEDULE[index % len(SCHEDULE)]


def spaced(digits: str) -> str:
    """``"0472"`` -> ``"0 4 7 2"``: how the tokenizer splits (and the analyses compare) it."""
    return " ".join(digits)


def draw_canaries(n: int, seed: int) -> dict[str, Any]:
    """The record of ``n`` canaries drawn with a generator seeded by ``seed`` only (the global
    ``random``, numpy and torch states are untouched): ids, prefixes, secrets, repetitions."""
    rng = random.Random(f"{_SALT}:{seed}")
    ids = rng.sample(range(10**ID_DIGITS), n) if n else []
    canaries = []
    for i, cid in enumerate(ids):
        secret = "".join(rng.choice("0123456789") for _ in range(SECRET_DIGITS))
        code = f"{cid:0{ID_DIGITS}d}"
        canaries.append({
            "index": i,
            "id": f"{ID_PREFIX}{i:03d}",
            "prefix": normalise_text(PREFIX_TEMPLATE.format(id=code)),
            "secret": secret,
            "repetitions": repetitions(i),
        })
    return {
        "version": 1,
        "seed": seed,
        "n_canaries": n,
        "schedule": list(SCHEDULE),
        "prefix_template": PREFIX_TEMPLATE,
        "agent_reply": AGENT_REPLY,
        "secret_digits": SECRET_DIGITS,
        "alphabet": "0123456789",
        "space_size": 10**SECRET_DIGITS,
        "n_conversations": sum(c["repetitions"] for c in canaries),
        "canaries": canaries,
    }


def conversations(record: dict[str, Any],
                  opening: Sequence[dict[str, str]] = ()) -> list[dict[str, Any]]:
    """The canary conversations of a record, every repetition a conversation of its own,
    each after ``opening`` (the run's, :class:`~bankllm.tokenizer.Tokenizer`), as the
    corpus's conversations begin."""
    out = []
    for c in record["canaries"]:
        messages = [
            *opening,
            {"role": "customer", "content": f"{c['prefix']} {c['secret']}"},
            {"role": "agent", "content": record["agent_reply"]},
        ]
        out.extend({"id": f"{c['id']}#{k}", "intent": None, "messages": messages}
                   for k in range(c["repetitions"]))
    return out


def read_canaries(run_dir: str | Path) -> dict[str, Any] | None:
    """The run's validated ``canaries.json``, or None when the run has none."""
    path = Path(run_dir) / CANARIES_FILE
    if not path.exists():
        return None
    record = read_json(path, "canaries")
    validate_json(record, load_schema("bankllm", SCHEMA), str(path))
    return record


def _check_vocabulary(tokenizer: Tokenizer, n: int) -> None:
    missing = [d for d in "0123456789" if d not in tokenizer.index]
    if missing:
        raise BankLLMError(
            f"config: canaries={n} needs every digit in the vocabulary (the secrets are digit "
            f"strings), but the train split never has {', '.join(missing)}; set canaries=0"
        )


def add_canaries(
    train: Sequence[dict[str, Any]],
    tokenizer: Tokenizer,
    n: int,
    seed: int,
    run_dir: str | Path,
    resume: bool = False,
    write: bool = True,
) -> list[dict[str, Any]]:
    """The conversations the train batches are made of: ``train`` followed by the canary
    conversations of ``n`` canaries drawn from ``seed`` (``train`` itself is not changed).

    ``n == 0``: ``train`` as it is; nothing drawn, read or written. A new run (``write``: the
    main process) records them in ``run_dir/canaries.json``; a resumed run checks that the
    recorded ones are the ones drawn again (a mismatch is a BankLLMError).
    """
    if n == 0:
        return list(train)
    _check_vocabulary(tokenizer, n)
    record = draw_canaries(n, seed)
    path = Path(run_dir) / CANARIES_FILE
    if resume and path.exists():
        if read_canaries(run_dir) != record:
            raise BankLLMError(f"{path}: the canaries recorded differ from those of canaries={n}, "
                               f"seed={seed}; cannot resume")
    elif write:
        validate_json(record, load_schema("bankllm", SCHEMA), str(path))
        atomic_write_json(path, record)
    return [*train, *conversations(record, tokenizer.opening)]
