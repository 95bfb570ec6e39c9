"""The hashed split does not depend on the process (PYTHONHASHSEED): a fresh interpreter agrees."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tasks.tables.splits import hashed_split
from tests.support import REPO


def test_hashed_split_is_the_same_in_another_process() -> None:
    names = [f"collection-{i}" for i in range(200)]
    code = (
        "import json, sys; from tasks.tables.splits import hashed_split; "
        "print(json.dumps([hashed_split(n) for n in json.loads(sys.argv[1])]))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", code, json.dumps(names)],
        capture_output=True,
        text=True,
        check=True,
        env=env,
        cwd=REPO,
    ).stdout
    assert json.loads(out) == [hashed_split(n) for n in names]
