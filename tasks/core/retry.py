"""One backoff policy for every remote call (JSON-RPC nodes, HTTP origins, gateways).

Exponential with full jitter (a uniform draw between 0 and the exponential step),
capped: shard tasks that failed together against one node or host then retry
spread out instead of all at once. A server's own Retry-After wins, capped too.
"""

from __future__ import annotations

import random


def backoff_delay(
    retry: int,
    base_s: float,
    cap_s: float,
    rng: random.Random,
    retry_after: float | None = None,
) -> float:
    """Seconds to wait before retry number ``retry`` (0 for the first)."""
    if retry_after is not None:
        return min(max(retry_after, 0.0), cap_s)  # a server may ask for days: capped
    return rng.uniform(0, min(cap_s, base_s * 2**retry))
