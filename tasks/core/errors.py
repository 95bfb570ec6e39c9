"""One exception type for everything that can go wrong with a single token.

A token's data is attacker-controlled, so every failure caused by it becomes an
``ItemError`` that is written into that token's manifest row; the shard goes on.
``kind`` is a short machine-readable reason (the summary counts failures by it),
``retryable`` says whether a later run should try the token again.
"""

from __future__ import annotations

# Reasons a token can fail, and whether trying again later can help.
RETRYABLE_KINDS = frozenset(
    {"timeout", "connection", "http_status_retryable", "rpc_error", "unexpected"}
)

KINDS = frozenset(
    {
        "bad_uri",  # token URI cannot be parsed
        "unsupported_uri",  # a scheme we do not fetch
        "blocked_address",  # URL resolves to a non-public address
        "http_status",  # a 4xx other than 429: permanent
        "http_status_retryable",  # 429/5xx after all retries
        "timeout",
        "connection",
        "too_large",  # body, JSON or data: URI over its byte cap
        "cid_mismatch",  # IPFS content does not hash to its CID
        "bad_car",  # malformed trustless-gateway response
        "bad_json",  # metadata is not a JSON object
        "no_image",  # metadata names no image
        "bad_image",  # image bytes fail to decode or exceed the pixel limit
        "bad_svg",  # SVG refused before rendering: DTD, entities, outside references, limits
        "render_crashed",  # the sandboxed SVG renderer died (signal) or ran out of memory
        "render_timeout",  # the sandboxed SVG renderer ran past its CPU or wall-clock limit
        "rpc_error",  # node unreachable or batch failed
        "not_minted",  # tokenURI reverted (burned, gap in ids, out of range)
        "unexpected",  # a bug met by this token's data; retried once the code is fixed
    }
)


class ItemError(Exception):
    """A failure of one token, recorded against it instead of stopping the run."""

    def __init__(
        self, kind: str, message: str, *, retryable: bool | None = None, verified: bool = False
    ) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown error kind {kind!r}")
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.retryable = kind in RETRYABLE_KINDS if retryable is None else retryable
        # True when content checked against its hash proves the error (not a server's say).
        self.verified = verified

    def __str__(self) -> str:
        return f"{self.kind}: {self.message}"
