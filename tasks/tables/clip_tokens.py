"""How many CLIP tokens a text takes, counted word by word so SQL can add them up.

CLIP's tokenizer splits text at whitespace before its byte-pair encoding, and no
piece spans a space: the tokens of ``"a b"`` are the tokens of ``"a"`` followed
by those of ``"b"``. So a caption's length is the sum over its space-separated
words, and DuckDB only needs each distinct word counted once (a collection has
a few hundred), instead of tokenizing millions of captions in Python.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from open_clip.tokenizer import SimpleTokenizer

CONTEXT_LENGTH = 77  # CLIP's text context, start and end tokens included
CONTENT_TOKENS = CONTEXT_LENGTH - 2  # what is left for the text itself


@lru_cache(maxsize=1)
def tokenizer() -> SimpleTokenizer:
    """open_clip's CLIP BPE tokenizer; its vocabulary ships inside the package. Imported
    here, when a count is first asked for: open_clip brings torch (seconds), which the
    processes that only build tokens files never need."""
    from open_clip.tokenizer import SimpleTokenizer

    return SimpleTokenizer()


def count(text: str) -> int:
    """Tokens of text, without the start and end tokens."""
    return len(tokenizer().encode(text))


def word_counts(words: Iterable[str]) -> list[int]:
    """Tokens of each word (a word: text between two ASCII spaces)."""
    return [count(word) for word in words]
