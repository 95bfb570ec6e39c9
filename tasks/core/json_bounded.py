"""Parse untrusted JSON with a size cap and a nesting cap checked before parsing.

``json.loads`` recurses once per nesting level, so a reply of 100,000 ``[`` raises
RecursionError (or, in a thread with a small stack, worse), and any consumer that
walks the result recursively inherits the depth. The depth is therefore measured
first by a linear scan that cannot recurse: strings are cut out with one regular
expression (possessive, so it never backtracks), then innermost ``[]`` pairs are
removed, one pass per level, at most ``max_depth`` passes. Real NFT metadata and
JSON-RPC replies nest 2 to 5 levels; 64 leaves room for any honest document.
"""

from __future__ import annotations

import json
import re
from typing import Any

MAX_DEPTH = 64

# A string (closed, or running to the end when unterminated: json.loads rejects it
# later) or a run of characters that are neither brackets nor quotes.
_NOT_BRACKETS = re.compile(r'"(?:[^"\\]++|\\.)*+(?:"|\\?\Z)|[^\[\]{}"]++', re.DOTALL)


class JSONLimitError(ValueError):
    """JSON over its size cap, nested deeper than allowed, or with unbalanced brackets."""


def check_depth(text: str, max_depth: int = MAX_DEPTH) -> None:
    """Raise JSONLimitError unless ``text``'s containers nest at most ``max_depth`` deep."""
    brackets = _NOT_BRACKETS.sub("", text).replace("{", "[").replace("}", "]")
    # Pass k removes every container whose subtree is k levels high, so a document
    # max_depth deep is empty after max_depth passes.
    for _ in range(max_depth):
        if not brackets:
            return
        shorter = brackets.replace("[]", "")
        if len(shorter) == len(brackets):
            break
        brackets = shorter
    if not brackets:
        return
    if "[]" in brackets:
        raise JSONLimitError(f"JSON nests deeper than {max_depth} levels")
    raise JSONLimitError("JSON brackets do not balance")


def loads_bounded(data: str | bytes, *, max_bytes: int, max_depth: int = MAX_DEPTH) -> Any:
    """``json.loads`` of untrusted text after its size and nesting are checked.

    Bytes are decoded as UTF-8 (a leading BOM is dropped). Raises ValueError:
    JSONLimitError for the caps, UnicodeDecodeError or JSONDecodeError otherwise.
    """
    if len(data) > max_bytes:
        raise JSONLimitError(f"JSON of {len(data)} bytes is over {max_bytes}")
    text = data.decode("utf-8-sig") if isinstance(data, bytes) else data
    check_depth(text, max_depth)
    return json.loads(text)
