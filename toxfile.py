"""tox's inline plugin (tox loads ``toxfile.py`` next to ``tox.ini`` by itself).

The environments that run bankllm (test, train, diagnostics, gate) share one virtualenv,
``.tox/bankllm``: same Python, same dependencies, one copy of torch. tox 4 records the name
of the environment that last set up a folder in its ``.tox-info.json`` and rebuilds the whole
virtualenv when another name meets it (tox-dev/tox#2788), so ``tox -e train`` followed by
``tox -e diagnostics`` reinstalled torch (35-50 s here). After an environment in that folder
is torn down, this hook drops the recorded name; the next environment records its own without
a rebuild. Everything else tox records (Python, dependencies, the package) is untouched, so a
change of those still rebuilds.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from tox.plugin import impl

SHARED_ENV_DIR = "bankllm"  # tox.ini: env_dir = {tox_root}/.tox/bankllm
ENV_NAME_KEY = "ToxEnv"  # the section of .tox-info.json that holds the environment's name


def forget_env_name(env_dir: Path) -> bool:
    """Drop the environment name from ``env_dir/.tox-info.json``; return whether it changed.

    Leaves the file alone when it is missing, unreadable or has no name recorded; the
    rewrite is atomic (a temporary file renamed over it).
    """
    info = env_dir / ".tox-info.json"
    try:
        content: Any = json.loads(info.read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(content, dict) or ENV_NAME_KEY not in content:
        return False
    del content[ENV_NAME_KEY]
    fd, tmp = tempfile.mkstemp(dir=env_dir, prefix=".tox-info.", suffix=".tmp")
    with os.fdopen(fd, "w") as handle:
        json.dump(content, handle, indent=2)
    os.replace(tmp, info)
    return True


@impl
def tox_env_teardown(tox_env: Any) -> None:
    """After a run in the shared folder, forget which environment ran there."""
    env_dir = Path(tox_env.env_dir)
    if env_dir.name == SHARED_ENV_DIR:
        forget_env_name(env_dir)
