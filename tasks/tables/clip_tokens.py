"""How many CLIP tokens a text takes, counted word by word so SQL can add them up.

CLIP's tokenizer splits text at whitespace before its byte-pair encoding, and no
piece spans a space: the tokens of ``"a b"`` are the tokens of ``"a"`` followed
by those of ``"b"``. So a caption's length is the sum over its space-separated
words, and DuckDB only needs each distinct word counted once (a collection has
a few hundred), instead of tokenizing millions of captions in Python.

Counts are open_clip's, with its own cleaning (ftfy, HTML entities, case) and
split into pieces; only the byte-pair merges of each piece are done here instead.
open_clip's merge loop rescans the whole piece once per merge, so a 2,000-letter
word of random letters takes 0.5 s and one such word per token would stall a
build. Here a piece is merged with a heap: the same merges in the same order
(each round merges every occurrence of the best-ranked pair, left to right), in
n log n; 3 to 13 times faster from 8 letters to 100, and 20,000 letters in 0.4 s.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from open_clip.tokenizer import SimpleTokenizer

CONTEXT_LENGTH = 77  # CLIP's text context, start and end tokens included
CONTENT_TOKENS = CONTEXT_LENGTH - 2  # what is left for the text itself
PIECES_CACHED = 1 << 16  # distinct pieces whose counts are kept (texts repeat words)


@lru_cache(maxsize=1)
def tokenizer() -> SimpleTokenizer:
    """open_clip's CLIP BPE tokenizer; its vocabulary ships inside the package. Imported
    here, when a count is first asked for: open_clip brings torch (seconds), which the
    processes that only build tokens files never need."""
    from open_clip.tokenizer import SimpleTokenizer

    return SimpleTokenizer()


def count(text: str) -> int:
    """Tokens of text, without the start and end tokens."""
    clip = tokenizer()
    return sum(_piece_tokens(piece) for piece in clip.pat.findall(clip.clean_fn(text)))


@lru_cache(maxsize=PIECES_CACHED)
def _piece_tokens(piece: str) -> int:
    clip = tokenizer()
    return merged_count(
        "".join(clip.byte_encoder[b] for b in piece.encode("utf-8")), clip.bpe_ranks
    )


def merged_count(symbols: str, ranks: Mapping[tuple[str, str], int]) -> int:
    """Tokens byte-pair encoding makes of one piece (its characters, the last one ending
    the word): what open_clip's ``bpe`` gives, in n log n instead of n**2."""
    word = [*symbols[:-1], symbols[-1] + "</w>"]
    after = [*range(1, len(word)), -1]  # next live symbol, -1 at the end
    before = list(range(-1, len(word) - 1))
    alive = [True] * len(word)
    heap = []
    for i in range(len(word) - 1):
        rank = ranks.get((word[i], word[i + 1]))
        if rank is not None:
            heap.append((rank, i))
    heapq.heapify(heap)
    tokens = len(word)
    while heap:
        # One round: every occurrence of the best pair, left to right, as open_clip merges
        # them before it looks for the next pair. A pair a merge makes holds a newer
        # token, so it is never this pair; it waits in the heap for a later round.
        rank = heap[0][0]
        places = []
        while heap and heap[0][0] == rank:
            places.append(heapq.heappop(heap)[1])
        for i in places:
            j = after[i] if alive[i] else -1
            if j < 0 or ranks.get((word[i], word[j])) != rank:
                continue  # merged away since it was pushed
            word[i] += word[j]
            alive[j] = False
            after[i] = after[j]
            if after[j] >= 0:
                before[after[j]] = i
            tokens -= 1
            for left, right in ((before[i], i), (i, after[i])):
                if left >= 0 and right >= 0:
                    found = ranks.get((word[left], word[right]))
                    if found is not None:
                        heapq.heappush(heap, (found, left))
    return tokens


def word_counts(words: Iterable[str]) -> list[int]:
    """Tokens of each word (a word: text between two ASCII spaces)."""
    return [count(word) for word in words]
