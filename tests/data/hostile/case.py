"""One hostile case and what holds for it.

A case's ``run`` gets the environment (the loopback servers) and the input its
``make`` built (built first, so building a big input counts against neither bound).
It returns a result or raises. The outcome holds when the raised ItemError's kind
is one of ``kinds``, or when ``check`` accepts the returned result, and the run
stayed within ``time_s`` seconds and ``memory_mb`` MiB.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.data.hostile.servers import RawServer

Check = Callable[[Any], "str | None"]  # None when the result holds, else why not


@dataclass(frozen=True)
class Env:
    """What cases may use: two loopback servers and a scratch folder.

    ``origin`` serves whatever a case registers on it (HTTP, JSON-RPC, gateway) and
    may be allowed; ``sentinel`` stands for every inward address and must never see
    a connection.
    """

    origin: RawServer
    sentinel: RawServer
    scratch: Path


class Violation(Exception):
    """A case's own assertion failed (say, the sentinel saw a connection)."""


@dataclass(frozen=True)
class Case:
    name: str
    run: Callable[[Env, Any], Any]
    kinds: frozenset[str] = frozenset()
    check: Check | None = None
    make: Callable[[], Any] | None = None
    time_s: float = 2.0
    memory_mb: float = 128.0
    hang_after_s: float | None = None  # default: max(10 s, 3 * time_s)

    @property
    def hang_s(self) -> float:
        """When the parent stops waiting and kills the child."""
        return self.hang_after_s or max(10.0, 3 * self.time_s)


def refused(*kinds: str) -> frozenset[str]:
    return frozenset(kinds)


def is_ok(result: Any) -> str | None:
    """A check for cases where any returned result holds."""
    return None
