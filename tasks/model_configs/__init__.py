"""open_clip model configs shipped with the project, as ``local-dir:`` folders.

Kept free of torch imports so the CLI can name them without loading torch.
"""

from pathlib import Path

TINY = Path(__file__).parent / "tiny_clip"
# 3.4M parameters at 64 px: trains on a CPU in the tests and the demo.
TINY_ARCHITECTURE = f"local-dir:{TINY}"
