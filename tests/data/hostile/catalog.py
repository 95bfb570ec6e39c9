"""The categories of the corpus, by name, and which are fast enough for every test run."""

from __future__ import annotations

import importlib
from collections.abc import Callable

from tests.data.hostile.case import Case

# Category name -> module under tests.data.hostile with a ``cases()`` function
# (or "module:function" for a subset).
MODULES = {
    "ssrf": "ssrf",
    "http": "http_behaviour",
    "images": "images",
    "metadata": "metadata",
    "rpc": "rpc",
    "car": "car",
    "svg": "svg",
    "tables": "tables",
    "tables_core": "tables:core_cases",  # the build's first cases, for the slow test tier
    "selftest": "selftest",  # the runner's own checks; not part of the corpus
}
# What the slow test tier runs, as groups run side by side (one child each): the
# first group mostly waits on deadlines, the second computes. bench.hostile runs
# CORPUS, the whole of every category.
TESTED = (("http", "rpc", "ssrf"), ("images", "car", "metadata", "svg", "tables_core"))
CORPUS = ("ssrf", "http", "images", "metadata", "rpc", "car", "svg", "tables")


def cases_of(category: str) -> list[Case]:
    """The category's cases, generated now."""
    module_name, _, function = MODULES[category].partition(":")
    module = importlib.import_module(f"tests.data.hostile.{module_name}")
    make: Callable[[], list[Case]] = getattr(module, function or "cases")
    found = make()
    names = [c.name for c in found]
    if len(set(names)) != len(names):
        raise ValueError(f"{category}: case names are not unique")
    return found
