"""Hostile metadata and names through the tokens step (tasks.tables.tokens.token_record):
every case ends in a row with its problem recorded, within a time and memory bound."""

from __future__ import annotations

import json
import random
import time
import tracemalloc
import unicodedata
from collections.abc import Callable
from typing import Any

import pytest

from tasks.ingest.manifest import ManifestRow
from tasks.tables.normalise import MAX_NON_STARTERS, bounded_normalize
from tasks.tables.splits import Partitioning, hashed_split, split_for
from tasks.tables.tokens import (
    MAX_COLLECTION,
    MAX_DESCRIPTION,
    MAX_ID,
    MAX_NAME,
    TokenRecord,
    _field,
    collection_name,
    token_record,
)
from tasks.tables.traits import (
    MAX_ITEMS,
    MAX_PROBLEMS,
    MAX_TEXT,
    MAX_TRAITS,
    clean_text,
    normalise_traits,
)

CONTRACT = "0x" + "c" * 40
SECONDS = 2.0  # per token, on a shared 2-core machine; honest tokens take under 1 ms
PEAK_MIB = 2  # Python allocations reading one parsed token, whatever its size
MARKS = "\u0301\u0316"  # two combining marks of different classes: NFC must reorder them
NO_RULES = Partitioning({}, {}, ())
EMPTY = "collection: name is empty once cleaned, the contract address is used"
CUT = f"collection: name cut to {MAX_COLLECTION} characters"


def _bytes(metadata: Any) -> bytes:
    if isinstance(metadata, bytes):
        return metadata
    return json.dumps(metadata, ensure_ascii=False).encode()


def _row(collection: str = "Cats") -> ManifestRow:
    return ManifestRow(collection, CONTRACT, "1", metadata_key="blobs/m", image_key="blobs/i")


def _record(metadata: Any, collection: str = "Cats") -> TokenRecord:
    """The token's row, built within the time bound."""
    data = _bytes(metadata)
    started = time.monotonic()
    record = token_record(_row(collection), data)
    assert time.monotonic() - started < SECONDS
    return record


def _values(record: TokenRecord) -> list[tuple[str, str]]:
    return [(t.trait_type, t.value) for t in record.traits]


@pytest.mark.parametrize(
    ("attributes", "problem"),
    [
        ({"Hat": "Red", "Eyes": ["Blue", {"x": 1}]}, "attributes[1][1]: value is an object"),
        ("Red hat", "attributes: not a list or object"),
        (42, "attributes: not a list or object"),
        (True, "attributes: not a list or object"),
        ([[["Hat", "Red"]]], "attributes[0]: item is a list"),
    ],
)
def test_attributes_of_any_shape_leave_a_problem(attributes: Any, problem: str) -> None:
    record = _record({"attributes": attributes})
    assert problem in record.problems


def test_null_or_empty_attributes_are_no_traits_and_no_problem() -> None:
    empties: tuple[Any, ...] = (None, [], {}, "", "none")
    for empty in empties:
        record = _record({"attributes": empty})
        assert (record.traits, record.problems) == ((), ())


def test_trait_types_and_values_of_every_json_type() -> None:
    odd: list[Any] = [{"a": 1}, [1, [2]], True, None, 10**300, 1e400, "NaN", -0.0, 2**63]
    attributes = [{"trait_type": v, "value": "Red"} for v in odd]
    attributes += [{"trait_type": "Hat", "value": v} for v in odd]
    record = _record({"attributes": attributes})
    kept = _values(record)
    # Scalars become text; containers, null and unwritable numbers leave a problem.
    assert ("true", "Red") in kept and ("Hat", "true") in kept
    assert ("NaN", "Red") in kept and ("Hat", "NaN") in kept
    assert ("Hat", "-0.0") in kept and ("Hat", str(2**63)) in kept
    assert ("Hat", str(10**300)) not in kept
    assert ("", "Red") in kept  # an unusable trait type: the value alone
    assert "attributes[0]: trait_type is an object" in record.problems
    assert any("not finite or too long" in p for p in record.problems)
    assert len(kept) < len(attributes) + 2


def test_nan_and_infinity_literals_are_dropped() -> None:
    record = _record(b'{"attributes": [{"trait_type": "Hat", "value": NaN}, '
                     b'{"trait_type": "Eyes", "value": -Infinity}]}')  # fmt: skip
    assert record.traits == ()
    assert len(record.problems) == 2


def test_a_hundred_thousand_attributes_keep_the_first_hundred() -> None:
    attributes = [{"trait_type": f"T{i}", "value": "v"} for i in range(100_000)]
    record = _record({"attributes": attributes})
    assert len(record.traits) == MAX_TRAITS
    assert f"attributes: over {MAX_TRAITS} traits, kept the first {MAX_TRAITS}" in record.problems


def test_a_hundred_thousand_unusable_attributes_are_read_up_to_a_bound() -> None:
    record = _record({"attributes": [{"trait_type": "T", "value": None}] * 100_000})
    assert record.traits == ()
    assert record.problems[-2:] == (
        f"{MAX_ITEMS - MAX_PROBLEMS} more problems not listed",
        f"attributes: over {MAX_ITEMS} items and elements, read the first",
    )
    values = _record({"traits": {"Hat": [None] * 100_000, "Eyes": "Blue"}})
    assert values.traits == ()  # the budget ran out inside the first value
    assert values.problems[-1] == f"traits: over {MAX_ITEMS} items and elements, read the first"


@pytest.mark.parametrize(
    "metadata",
    [
        {"attributes": [{"trait_type": f"T{i}", "value": "v" * 20} for i in range(100_000)]},
        {"attributes": [{"trait_type": "T", "value": None}] * 100_000},
        {"attributes": {"Hat": ["Red " * 100] * 10_000}},
        {"name": "a" + MARKS * 1_000_000, "description": MARKS * 1_000_000},
    ],
)
def test_four_megabytes_of_metadata_take_bounded_memory(metadata: dict[str, Any]) -> None:
    """Beyond the parsed JSON (Python's own, linear in the capped metadata), reading a
    token allocates a bounded amount whatever the metadata holds."""
    assert 3 * 2**20 < len(_bytes(metadata)) <= 2 * 4 * 2**20
    bounded_normalize("NFC", "warm \u0301", 10)  # its table is built once per process
    tracemalloc.start()
    try:
        found = normalise_traits(metadata)
        name = _field(metadata, "name", MAX_NAME, [])
        description = _field(metadata, "description", MAX_DESCRIPTION, [])
        peak = tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()
    assert peak < PEAK_MIB, peak
    assert len(found.traits) <= MAX_TRAITS and len(found.problems) <= MAX_PROBLEMS + 3
    assert len(name or "") <= MAX_NAME and len(description or "") <= MAX_DESCRIPTION


def test_megabyte_trait_values_are_cut() -> None:
    huge = "Red " * 250_000
    record = _record({"attributes": [{"trait_type": huge, "value": huge}, {"Hat": "x"}]})
    assert [len(t.trait_type) for t in record.traits] == [MAX_TEXT - 1]  # cut, then stripped
    assert record.traits[0].value == record.traits[0].trait_type
    assert "attributes[0]: value cut to 256 characters" in record.problems


def test_duplicate_trait_types_are_kept_in_order() -> None:
    record = _record({"attributes": [{"trait_type": "Hat", "value": v} for v in "ABA"]})
    assert _values(record) == [("Hat", "A"), ("Hat", "B"), ("Hat", "A")]


@pytest.mark.parametrize("field", ["name", "description"])
def test_megabytes_of_combining_marks_are_cut_before_normalising(field: str) -> None:
    """4 MB of marks of alternating classes: unbounded NFC would sort them for minutes."""
    record = _record({field: "a" + MARKS * 1_000_000})
    text = getattr(record, field)
    # "a" and one run of marks, cut to the stream-safe limit (NFC joins "a" and U+0301).
    assert text == unicodedata.normalize("NFC", "a" + MARKS * (MAX_NON_STARTERS // 2))
    assert f"{field}: cut to {MAX_NAME if field == 'name' else MAX_DESCRIPTION} characters" in (
        record.problems
    )


def test_json_nested_ten_thousand_deep_is_a_problem() -> None:
    deep = b'{"attributes": ' + b"[" * 10_000 + b"]" * 10_000 + b"}"
    record = _record(deep)
    assert record.traits == ()
    assert [p.split(":")[0] for p in record.problems] == ["metadata"]


def test_attributes_nested_deep_but_parseable_are_dropped() -> None:
    record = _record({"attributes": [{"trait_type": "Hat", "value": [[[[["Red"]]]]]}]})
    assert record.traits == ()
    assert "attributes[0][0]: value is a list" in record.problems


@pytest.mark.parametrize(
    ("raw", "shown", "problem"),
    [
        ("", CONTRACT, EMPTY),
        (" \t\n ", CONTRACT, EMPTY),
        ("\x00\x07Cats\u200b\x1b", "Cats", None),
        ("x" * 1_000_000, "x" * MAX_COLLECTION, CUT),
        ("Cafe\u0301  Cats", "Caf\u00e9 Cats", None),
        ("\ud800Cats", "?Cats", None),
    ],
)  # fmt: skip
def test_collection_names_are_cleaned_and_never_empty(
    raw: str, shown: str, problem: str | None
) -> None:
    record = _record({"name": "n"}, collection=raw)
    assert record.collection == shown
    assert [p for p in record.problems if p.startswith("collection")] == (
        [problem] if problem else []
    )


def test_names_that_differ_only_by_normalisation_are_one_name() -> None:
    nfd, nfc = unicodedata.normalize("NFD", "Pokémon Café"), "Pokémon Café"
    assert nfd != nfc
    assert collection_name(nfd, CONTRACT) == collection_name(nfc, CONTRACT) == (nfc, None)
    # Case is kept: "Cats" and "CATS" are two names (the tables build picks one per contract).
    assert collection_name("CATS", CONTRACT)[0] != collection_name("Cats", CONTRACT)[0]


def _timed(function: Callable[[], object]) -> float:
    started = time.monotonic()
    function()
    return time.monotonic() - started


def test_text_cleaning_and_name_keys_cost_is_bounded_by_their_caps() -> None:
    marks = "a" + MARKS * 2_000_000
    assert _timed(lambda: clean_text(marks)) < 0.5
    assert _timed(lambda: split_for(marks, NO_RULES)) < 0.5
    assert split_for(marks, NO_RULES) == hashed_split(marks)


def test_bounded_normalize_agrees_with_unicodedata_on_stream_safe_text() -> None:
    rng = random.Random(13)
    alphabet = "aeAE\u0301\u0316\u0327\u0308\u1100\u1161\uac00\u00e9\uff26\u212b\u0344 ﬁ"
    for _ in range(2000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
        for form in ("NFC", "NFKC"):
            assert bounded_normalize(form, text, 1000) == unicodedata.normalize(form, text)


def test_bounded_normalize_cuts_long_runs_of_marks_and_long_text() -> None:
    run = "o" + "\u0301" * 100 + "k"
    assert bounded_normalize("NFC", run, 1000) == unicodedata.normalize(
        "NFC", "o" + "\u0301" * MAX_NON_STARTERS + "k"
    )
    assert bounded_normalize("NFKC", "ﬁ" * 10, 4) == "fi" * 4


def test_ids_and_contracts_are_cut_but_stay_malformed() -> None:
    row = ManifestRow("Cats", "0x" + "f" * 10_000_000, "9" * 10_000_000, status="failed")
    record = token_record(row, None)
    assert (len(record.contract), len(record.token_id)) == (MAX_ID, MAX_ID)
