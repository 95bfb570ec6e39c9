"""Unicode normalisation whose cost is bounded whatever the text.

``unicodedata.normalize`` puts each run of combining marks in canonical order
with an insertion sort, so a run of n marks costs n**2 steps: 4 MB of alternating
marks does not finish in minutes, and 8,000 take 70 ms. Text is therefore cut to
a length first, then every run of combining characters (non-starters) is cut to
30, the limit of Unicode's Stream-Safe Text Format (UAX #15): no script needs
more, and the sort becomes linear. ASCII text, which neither form changes, is
returned as it is.
"""

from __future__ import annotations

import re
import sys
import unicodedata
from functools import lru_cache
from typing import Literal

MAX_NON_STARTERS = 30  # combining characters kept in a row (UAX #15's stream-safe limit)

Form = Literal["NFC", "NFKC"]


@lru_cache(maxsize=1)
def _long_runs() -> re.Pattern[str]:
    """Runs of more than MAX_NON_STARTERS combining characters; built once per process
    (0.1 s) from this Python's Unicode database, so it always agrees with normalize."""
    ranges: list[list[int]] = []
    for code in range(sys.maxunicode + 1):
        if unicodedata.combining(chr(code)):
            if ranges and ranges[-1][1] == code - 1:
                ranges[-1][1] = code
            else:
                ranges.append([code, code])
    members = "".join(f"{re.escape(chr(a))}-{re.escape(chr(b))}" for a, b in ranges)
    return re.compile(f"[{members}]{{{MAX_NON_STARTERS + 1},}}")


def bounded_normalize(form: Form, text: str, max_chars: int) -> str:
    """``unicodedata.normalize(form, text)`` of the first ``max_chars`` characters, with runs
    of combining characters cut to MAX_NON_STARTERS: linear time in ``max_chars``."""
    text = text[:max_chars]
    if text.isascii():  # both forms leave ASCII as it is
        return text
    text = _long_runs().sub(lambda run: run[0][:MAX_NON_STARTERS], text)
    return unicodedata.normalize(form, text)
