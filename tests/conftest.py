"""What every tier shares: no model hub, and each test marked with its tier's markers.

The tiers are the folders (tests/README.md): ``unit/``, ``slow/``, ``services/`` and
``e2e/``. A test's folder gives its markers, so ``pytest -m`` selects as it always
did: ``services/`` is marked ``services``; ``e2e/`` both ``services`` and ``e2e`` (it
runs the whole stack); ``slow/`` ``slow``; ``unit/`` nothing. The real services'
fixtures (``services``, ``settings``, ``store``, ``origin``) live in
``services/conftest.py``, so a unit or slow test cannot reach them.
"""

from __future__ import annotations

import os

# Before anything imports open_clip: no test may reach for a model hub (no network here).
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from pathlib import Path

import pytest

TIERS: dict[str, tuple[str, ...]] = {
    "unit": (),
    "slow": ("slow",),
    "services": ("services",),
    "e2e": ("services", "e2e"),
}
HERE = Path(__file__).resolve().parent


def tier_of(path: Path) -> str | None:
    """The tier folder of a test file under tests/ (None outside tests/); UsageError for
    a test file that lies in no tier."""
    try:
        parts = path.resolve().relative_to(HERE).parts
    except ValueError:
        return None
    if len(parts) < 2 or parts[0] not in TIERS:
        raise pytest.UsageError(
            f"{path}: tests live in a tier folder of tests/: {', '.join(TIERS)} (tests/README.md)"
        )
    return parts[0]


@pytest.hookimpl(tryfirst=True)  # before -m deselects by these markers
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        tier = tier_of(item.path)
        for marker in TIERS[tier] if tier else ():
            item.add_marker(marker)
