"""img2dataset in a virtual environment of its own, made once and cached.

img2dataset is the baseline of ``bench/ingest.py``, not a dependency of the
project: its pins (pandas, opencv, albumentations, wandb...) must not meet the
project's, so it gets its own environment under the user's cache folder
(``$XDG_CACHE_HOME`` or ``~/.cache``, then ``nft1000-bench/img2dataset-<version>``).
The environment counts as made only once pip succeeded (a marker file), so an
interrupted install is redone, not used half-made.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

VERSION = "1.47.0"
MARKER = ".installed"
INSTALL_TIMEOUT_S = 900.0


class Img2datasetInstallError(RuntimeError):
    """img2dataset's environment could not be made."""


def cache_root() -> Path:
    """Where bench environments live: the XDG cache folder, else ~/.cache."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "nft1000-bench"


def ensure_img2dataset(root: Path | None = None, version: str = VERSION) -> Path:
    """The img2dataset executable, installing it into its own environment on first use."""
    venv = (root or cache_root()) / f"img2dataset-{version}"
    exe = venv / "bin" / "img2dataset"
    if (venv / MARKER).exists() and exe.exists():
        return exe
    shutil.rmtree(venv, ignore_errors=True)  # a half-made one from an interrupted install
    venv.parent.mkdir(parents=True, exist_ok=True)
    steps = [
        [sys.executable, "-m", "venv", str(venv)],
        [str(venv / "bin" / "pip"), "install", "--quiet", f"img2dataset=={version}"],
    ]
    for argv in steps:
        try:
            done = subprocess.run(
                argv, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as e:
            raise Img2datasetInstallError(f"making {venv} failed: {e}") from e
        if done.returncode != 0:
            raise Img2datasetInstallError(
                f"making img2dataset {version}'s environment in {venv} failed "
                f"({' '.join(argv[:3])}... exited {done.returncode}); it needs PyPI:\n"
                f"{done.stderr[-2000:]}"
            )
    if not exe.exists():
        raise Img2datasetInstallError(f"pip installed img2dataset {version} but {exe} is missing")
    (venv / MARKER).write_text(f"img2dataset=={version}\n")
    return exe
