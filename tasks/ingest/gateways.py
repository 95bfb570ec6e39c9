"""The IPFS gateways a shard asks, healthiest first.

Every IPFS download asks the configured gateways in turn until one serves content
that verifies. Without memory, a gateway that is down or lying costs every token
a timeout or a wasted download before the next one is asked. The pool remembers:
a gateway whose last ``FAILS_TO_BENCH`` answers failed for its own reasons
(timeouts, connection errors, 5xx, broken or wrong CARs) goes to the back of the
order for ``BENCH_S`` seconds, then gets another chance; one success puts it back.
Answers that are the content's fault (404, too large, a bad DAG) say nothing of
the gateway's health.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from tasks.core.errors import ItemError

FAILS_TO_BENCH = 3  # one failure is noise; three in a row on different tokens is not
BENCH_S = 30.0  # long enough to skip a dead gateway for many tokens, short enough to retry
# Kinds that blame the gateway rather than the content it was asked for.
GATEWAY_FAULTS = frozenset(
    {"timeout", "connection", "http_status_retryable", "bad_car", "cid_mismatch"}
)


class GatewayPool:
    """Gateways in configured order, benched ones last. One per shard (one event loop)."""

    def __init__(
        self, gateways: Sequence[str], clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.gateways = tuple(gateways)
        self._clock = clock
        self._fails = dict.fromkeys(self.gateways, 0)
        self._benched_until = dict.fromkeys(self.gateways, 0.0)

    def order(self) -> list[str]:
        """The gateways to ask, in turn: those not benched first, each group in configured
        order (sorting is stable)."""
        now = self._clock()
        return sorted(self.gateways, key=lambda g: self._benched_until[g] > now)

    def succeeded(self, gateway: str) -> None:
        self._fails[gateway] = 0
        self._benched_until[gateway] = 0.0

    def failed(self, gateway: str, error: ItemError) -> None:
        """Count a failure against the gateway when the error is its fault."""
        if error.kind not in GATEWAY_FAULTS or error.verified:
            return
        self._fails[gateway] += 1
        if self._fails[gateway] >= FAILS_TO_BENCH:
            self._benched_until[gateway] = self._clock() + BENCH_S

    def benched(self) -> list[str]:
        """The gateways now at the back of the order (for logs and tests)."""
        now = self._clock()
        return [g for g in self.gateways if self._benched_until[g] > now]
