"""Turn a token's metadata into clean, ordered traits for captions and masks.

Metadata is attacker-controlled JSON, so this never raises: whatever cannot be
used is skipped or changed, and each such step leaves a short reason in
``Traits.problems`` (``<key>[<position>]: <reason>``, ASCII, never quoting the
token's own text). Decisions, each by the shape of the metadata, never by collection:

- Traits come from whichever of ``attributes``, ``traits``, ``features`` holds the
  best-typed traits: typed (an object, or a list whose items mostly carry a trait
  type) beats untyped (plain values, items without trait types, or a list typed in
  name only: two or more items that all share one trait type, such as a project
  name, while at least half their values read "Key: Value"); a key that is not a
  list or object comes last. Equals go in that order. When several keys hold
  something, the key used and why is recorded, and what each key passed over held.
- A value with no trait type of its own, or under the shared trait type of a list
  typed in name only, that reads "Key: Value" (a key of at most ``MAX_KEY``
  characters starting with a letter, then ": ") becomes trait type Key, value Value.
- Count pseudo-traits are left out, recorded: a value "<n> traits" (or attributes,
  features, properties) under any trait type, or a trait type made only of words
  naming traits and counting them ("Trait Count", "# Traits", "Number of
  Attributes"; "Traits" itself when its value is a number). They restate how many
  traits the others are, so no caption, mask or rarity score needs them.
- A list holds items ``{trait_type, value, display_type}`` (also spelled
  ``type``/``key``/``name``/``trait`` and ``val``) or plain values; an object
  maps trait type to value. Order and repeated trait types are kept.
- A missing or unusable trait type, and a plain value in a list, get the trait
  type ``NO_TRAIT_TYPE`` (""): the value alone still describes the token.
- Numbers and booleans become text: ints as written, floats by ``repr`` (which
  round-trips), ``true``/``false``. Dates stay unix seconds as text. Non-finite
  numbers and numbers too long for the cap are dropped, never cut.
- A list value becomes one trait per element with the same trait type, so each
  element keeps its own count and mask (joining would make a new value per
  combination). Nested lists and objects are dropped.
- Text is NFC-normalised, stripped of control and format characters (ZWJ and
  ZWNJ stay: emoji and scripts need them), whitespace collapsed. None-like
  values (null, "", "none", "null", "n/a", "-") are dropped; longer text is cut
  to ``MAX_TEXT`` characters. At most ``MAX_TRAITS`` traits per token, read from
  at most ``MAX_ITEMS`` items (and as many elements of each list value); which key
  to read is judged from its first ``MAX_TRAITS`` items.
- Cost is bounded by the caps, never by the text: only the first
  ``READ_FACTOR * MAX_TEXT`` characters of a string are read, and runs of
  combining marks are cut to 30 before normalising (tasks/tables/normalise.py).

Visual (``is_visual``, for the preferred captions) is decided by the trait type's
words and a numeric ``display_type``, never by the value's shape: "05" under "Skin
Tone" is a drawn variant, as "Blue" is.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from tasks.tables.normalise import bounded_normalize

TRAIT_KEYS = ("attributes", "traits", "features")
MAX_TEXT = 256  # characters in a trait type, value or display type
READ_FACTOR = 4  # clean_text reads at most this many times its limit of the raw text
MAX_TRAITS = 100  # per token; real collections have a few dozen at most
MAX_PROBLEMS = 20  # listed per token; the rest are counted in one last entry
MAX_ITEMS = 1000  # items and list-value elements read per token: a bound on the work
MAX_KEY = 40  # characters of the Key in a "Key: Value" value read as a trait
NO_TRAIT_TYPE = ""

_TYPE_KEYS = ("trait_type", "type", "key", "name", "trait")
_VALUE_KEYS = ("value", "val")
_NONE_LIKE = frozenset({"", "none", "null", "n/a", "-"})
_KEPT_FORMAT_CHARS = frozenset({"\u200c", "\u200d"})  # ZWNJ, ZWJ
_DROPPED_CATEGORIES = frozenset({"Cc", "Cf", "Cs"})  # controls, format, lone surrogates
_INT_LIMIT = 10**MAX_TEXT  # ints this large would not fit the cap; checked before str()

# Words in a trait type that mark bookkeeping rather than something drawn.
NON_VISUAL_WORDS = frozenset(
    {
        "id",
        "rank",
        "ranking",
        "rarity",
        "score",
        "points",
        "xp",
        "level",
        "generation",
        "gen",
        "birthday",
        "birth",
        "born",
        "date",
        "edition",
        "serial",
        "number",
        "count",
        "name",
        "lore",
        "story",
    }
)
# Words of a trait type: camelCase and ALLCAPS pieces, digit runs.
_WORD = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+")
# A value that is only a number: 7, -1.5, 1e9, 1,000, #42, 25%, 3/10.
_NUMBER = re.compile(r"[#+-]?(?:\d[\d,]*(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?%?(?:/\d+)?")
# "Key: Value" text, once cleaned: a key that starts with a letter, then ": ".
_KEY_VALUE = re.compile(rf"([^\W\d_][^:]{{0,{MAX_KEY - 1}}}?) ?: (.+)")

# Count pseudo-traits: words that name a token's traits, words that count them, and a
# value that says how many there are ("3 attributes").
_TRAIT_WORDS = frozenset(
    {"trait", "traits", "attribute", "attributes", "feature", "features", "property", "properties"}
)
_COUNT_WORDS = frozenset({"count", "number", "num", "total"})
_COUNTED = re.compile(r"\d+ (?:trait|attribute|feature|propert(?:y|ie))s?", re.IGNORECASE)


@dataclass(frozen=True)
class Trait:
    """One clean trait; display_type is None unless the metadata gave one."""

    trait_type: str
    value: str
    display_type: str | None


@dataclass(frozen=True)
class Traits:
    """A token's traits, and the reasons for every item skipped or changed on the way."""

    traits: tuple[Trait, ...]
    problems: tuple[str, ...]


def normalise_traits(metadata: Mapping[str, Any]) -> Traits:
    """The token's usable traits in metadata order, and why anything was skipped or changed."""
    if not isinstance(metadata, Mapping):
        return Traits((), (f"metadata: is {_kind(metadata)}, not an object",))
    present = [key for key in TRAIT_KEYS if _has_content(metadata.get(key))]
    if not present:
        return Traits((), ())
    holds = {key: _holding(metadata[key]) for key in present}
    key = max(present, key=lambda k: holds[k].rank)  # the first of the best
    out = _Builder(key, shared_type=holds[key] is _TYPED_IN_NAME)
    if len(present) > 1:
        _record_choice(present, key, holds, out)
    source = metadata[key]
    if isinstance(source, list):
        _read_list(key, source, out)
    elif isinstance(source, Mapping):
        _read_object(key, source, out)
    else:
        out.problem(f"{key}: not a list or object")
    return out.result()


@dataclass(frozen=True)
class _Holding:
    """What a trait key holds, as the choice between keys sees it: better ranks win."""

    rank: int
    label: str  # for problems: what a key passed over held


_TYPED = _Holding(2, "typed")
_TYPED_IN_NAME = _Holding(1, "Key: Value text under one trait type")
_UNTYPED = _Holding(1, "values without trait types")
_NOT_TRAITS = _Holding(0, "not a list or object")


def _holding(source: Any) -> _Holding:
    """Judge a key from its first MAX_TRAITS items (see the module's docstring)."""
    if isinstance(source, Mapping):
        return _TYPED
    if not isinstance(source, list):
        return _NOT_TRAITS
    items = source[:MAX_TRAITS]
    types = [_quiet_text(_first(i, _TYPE_KEYS)) if isinstance(i, Mapping) else None for i in items]
    typed = [t.casefold() for t in types if t is not None]
    if 2 * len(typed) <= len(items):
        return _UNTYPED
    if len(typed) < len(items) or len(items) < 2 or len(set(typed)) > 1:
        return _TYPED
    # Every item has one same trait type: typed in name only if its values are "Key: Value".
    values = (_quiet_text(_first(item, _VALUE_KEYS)) for item in items)
    key_values = sum(_key_value(value) is not None for value in values)
    return _TYPED_IN_NAME if 2 * key_values >= len(items) else _TYPED


def _record_choice(
    present: list[str], key: str, holds: Mapping[str, _Holding], out: _Builder
) -> None:
    """Say which key was used and why, and what each key passed over for it held."""
    best = holds[key].rank
    if all(holds[k].rank == best for k in present):
        why = "the first"
    else:
        why = "the first typed" if holds[key] is _TYPED else "the first list or object"
    out.problem(f"{', '.join(present)}: several trait keys, used {key}, {why}")
    for other in present:
        if holds[other].rank < best:
            out.problem(f"{other}: {holds[other].label}, not used")


def _key_value(text: str | None) -> tuple[str, str] | None:
    """(Key, Value) of clean "Key: Value" text whose key is not none-like, else None."""
    match = None if text is None else _KEY_VALUE.fullmatch(text)
    return None if match is None or _is_none_like(match[1]) else (match[1], match[2])


def _counts_traits(trait_type: str, value: str) -> bool:
    """Whether a trait only counts the token's traits: "3 attributes" under any type, or a
    type of trait and count words ("Trait Count", "# Traits"; "Traits" with a number)."""
    if _COUNTED.fullmatch(value):
        return True
    words = _words(trait_type)
    if not words & _TRAIT_WORDS or not words <= _TRAIT_WORDS | _COUNT_WORDS | {"of"}:
        return False
    return bool(words & _COUNT_WORDS) or "#" in trait_type or bool(_NUMBER.fullmatch(value))


# The OpenSea display types that render a trait as a number, bar or date.
NUMERIC_DISPLAY_TYPES = frozenset({"number", "boost_number", "boost_percentage", "date"})


def is_visual(trait: Trait) -> bool:
    """Whether a trait likely shows in the image, for captions that leave bookkeeping out.

    Not visual: a numeric display_type (numbers, boosts, dates; other labels such
    as "string" say nothing), or a trait type with a word from NON_VISUAL_WORDS
    (rarity score, Token ID, Generation...). The value's shape says nothing: "05"
    under "Skin Tone" names a drawn variant.
    """
    if trait.display_type in NUMERIC_DISPLAY_TYPES:
        return False
    return not _words(trait.trait_type) & NON_VISUAL_WORDS


@lru_cache(maxsize=4096)
def _words(trait_type: str) -> frozenset[str]:
    """The casefolded words of a trait type; cached, as a collection repeats its types."""
    return frozenset(word.casefold() for word in _WORD.findall(trait_type))


class _Builder:
    """Collects traits up to MAX_TRAITS, from up to MAX_ITEMS items, and problems up to
    MAX_PROBLEMS."""

    def __init__(self, key: str, *, shared_type: bool = False) -> None:
        self.key = key
        self.shared_type = shared_type  # a list typed in name only: its values are read too
        self.split = False  # some "Key: Value" value was read as a trait type and value
        self.traits: list[Trait] = []
        self.problems: list[str] = []
        self.unlisted = 0
        self.full = False
        self.read = 0  # items and list elements taken, up to MAX_ITEMS
        self.over_read = False

    def take(self) -> bool:
        """Count one more item or element read; False once MAX_ITEMS were, to stop."""
        if self.read >= MAX_ITEMS:
            self.over_read = True
            return False
        self.read += 1
        return True

    def problem(self, text: str) -> None:
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(text)
        else:
            self.unlisted += 1

    def add(self, trait: Trait) -> bool:
        """Keep a trait; False once the cap is reached, to stop reading."""
        if len(self.traits) >= MAX_TRAITS:
            self.full = True
            return False
        self.traits.append(trait)
        return True

    def result(self) -> Traits:
        # The cap and the count of unlisted problems always show, whatever came before.
        problems = list(self.problems)
        if self.unlisted:
            problems.append(f"{self.unlisted} more problems not listed")
        if self.full:
            problems.append(f"{self.key}: over {MAX_TRAITS} traits, kept the first {MAX_TRAITS}")
        if self.over_read:
            problems.append(f"{self.key}: over {MAX_ITEMS} items and elements, read the first")
        return Traits(tuple(self.traits), tuple(problems))


def _read_list(key: str, items: list[Any], out: _Builder) -> None:
    for i, item in enumerate(items):
        if not out.take():
            return
        where = f"{key}[{i}]"
        if isinstance(item, Mapping):
            trait_type = _trait_type(where, _first(item, _TYPE_KEYS), out)
            display_type = _display_type(where, item.get("display_type"), out)
            going = _add_values(where, trait_type, _first(item, _VALUE_KEYS), display_type, out)
        elif isinstance(item, list):
            out.problem(f"{where}: item is a list")
            continue
        else:
            going = _add_values(where, NO_TRAIT_TYPE, item, None, out)
        if not going:
            return


def _read_object(key: str, items: Mapping[Any, Any], out: _Builder) -> None:
    for i, (name, value) in enumerate(items.items()):
        if not out.take():
            return
        where = f"{key}[{i}]"
        if not _add_values(where, _trait_type(where, name, out), value, None, out):
            return


def _first(item: Mapping[Any, Any], keys: tuple[str, ...]) -> Any:
    """The value under the first of keys that is set (not null), else None."""
    for key in keys:
        value = item.get(key)
        if value is not None:
            return value
    return None


def _add_values(
    where: str, trait_type: str, raw: Any, display_type: str | None, out: _Builder
) -> bool:
    """Add one trait per usable value; False once a cap (traits, items read) stops reading."""
    if not isinstance(raw, list):
        value = _text(where, "value", raw, out)
        return value is None or _add(where, trait_type, value, display_type, out)
    if not raw:
        out.problem(f"{where}: value is an empty list")
        return True
    out.problem(f"{where}: value is a list, one trait per element")
    for j, element in enumerate(raw):
        if not out.take():
            return False
        value = _text(f"{where}[{j}]", "value", element, out)
        if value is not None and not _add(f"{where}[{j}]", trait_type, value, display_type, out):
            return False
    return True


def _add(where: str, trait_type: str, value: str, display_type: str | None, out: _Builder) -> bool:
    """Add one clean trait, "Key: Value" text read as such and count pseudo-traits left out;
    False once the trait cap stops reading."""
    if trait_type == NO_TRAIT_TYPE or out.shared_type:
        pair = _key_value(value)
        if pair is not None:
            trait_type, value = pair
            if not out.split:
                out.split = True
                out.problem(f"{out.key}: Key: Value text read as trait type and value")
            if _is_none_like(value):
                out.problem(f"{where}: value is empty or none-like")
                return True
    if _counts_traits(trait_type, value):
        out.problem(f"{where}: counts traits, left out")
        return True
    return out.add(Trait(trait_type, value, display_type))


def _trait_type(where: str, raw: Any, out: _Builder) -> str:
    if raw is None:
        out.problem(f"{where}: no trait_type")
        return NO_TRAIT_TYPE
    text = _text(where, "trait_type", raw, out)
    return NO_TRAIT_TYPE if text is None else text


def _display_type(where: str, raw: Any, out: _Builder) -> str | None:
    """A display_type string; null or none-like means there is none."""
    if raw is None:
        return None
    if not isinstance(raw, str):
        out.problem(f"{where}: display_type is {_kind(raw)}, ignored")
        return None
    if _is_none_like(clean_text(raw)):
        return None
    return _text(where, "display_type", raw, out)


def _text(where: str, field: str, raw: Any, out: _Builder) -> str | None:
    """Clean text for a scalar, or None (with the reason recorded) if it is unusable."""
    if isinstance(raw, str):
        text, cut = clean_capped(raw, MAX_TEXT)
        if _is_none_like(text):
            out.problem(f"{where}: {field} is empty or none-like")
            return None
        if cut:
            out.problem(f"{where}: {field} cut to {MAX_TEXT} characters")
        return text
    if isinstance(raw, bool):
        return "true" if raw else "false"
    if isinstance(raw, int | float):
        number = _number_text(raw)
        if number is None:
            out.problem(f"{where}: {field} is a number that is not finite or too long")
        return number
    if raw is None:
        out.problem(f"{where}: {field} is empty or none-like")
    else:
        out.problem(f"{where}: {field} is {_kind(raw)}")
    return None


def _quiet_text(raw: Any) -> str | None:
    """_text without recording problems, for judging a key before it is read."""
    if isinstance(raw, str):
        text = clean_capped(raw, MAX_TEXT)[0]
        return None if _is_none_like(text) else text
    if isinstance(raw, bool):
        return "true" if raw else "false"
    return _number_text(raw) if isinstance(raw, int | float) else None


def _number_text(number: int | float) -> str | None:
    """Ints as written, floats by repr; None when infinite, NaN or over MAX_TEXT characters."""
    if isinstance(number, float):
        return repr(number) if math.isfinite(number) else None
    if abs(number) >= _INT_LIMIT:  # str() of a huge int is slow, or raises past 4300 digits
        return None
    text = str(number)
    return text if len(text) <= MAX_TEXT else None


def clean_text(text: str, limit: int = MAX_TEXT) -> str:
    """NFC, no control or format characters, single spaces, no outer whitespace.

    Reads at most ``READ_FACTOR * limit`` characters, so its cost is bounded by the
    limit, never by the text: the caller cuts the result to ``limit`` (cleaning
    seldom drops more than that factor).
    """
    text = text[: READ_FACTOR * limit]
    if text.isascii() and text.isprintable():  # nothing to drop or normalise
        return " ".join(text.split())
    if not text.isprintable():  # printable text has no controls or odd spaces
        text = "".join(
            c
            for c in text
            if c.isspace()
            or c in _KEPT_FORMAT_CHARS
            or unicodedata.category(c) not in _DROPPED_CATEGORIES
        )
    return " ".join(bounded_normalize("NFC", text, len(text)).split())


def clean_capped(raw: str, limit: int) -> tuple[str, bool]:
    """Clean text of at most ``limit`` characters, and whether any of ``raw`` was cut."""
    text = clean_text(raw, limit)
    cut = len(raw) > READ_FACTOR * limit or len(text) > limit
    return (text[:limit].rstrip() if len(text) > limit else text), cut


def _is_none_like(text: str) -> bool:
    return len(text) <= 4 and text.casefold() in _NONE_LIKE


def _has_content(value: Any) -> bool:
    """Whether a trait key holds anything: not null, an empty container or none-like text."""
    if value is None or (isinstance(value, list | Mapping) and not value):
        return False
    return not (isinstance(value, str) and _is_none_like(clean_text(value)))


def _kind(value: Any) -> str:
    """A JSON-ish name for a value's type, for problems (never the value itself)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, Mapping):
        return "an object"
    return "a " + type(value).__name__
