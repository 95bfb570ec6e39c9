"""Bounded JSON: the nesting and size caps hold before json.loads can recurse."""

from __future__ import annotations

import json
import time

import pytest

from tasks.core.json_bounded import MAX_DEPTH, JSONLimitError, check_depth, loads_bounded


def nested(depth: int, inner: str = "1") -> str:
    return (
        '{"a":[' * (depth // 2)
        + "[" * (depth % 2)
        + inner
        + "]" * (depth % 2)
        + "]}" * (depth // 2)
    )


def test_honest_documents_parse_as_json_loads_does() -> None:
    doc = {"name": "Bird #1", "attributes": [{"trait_type": "Eyes", "value": '[{}]\\"'}]}
    text = json.dumps(doc)
    assert loads_bounded(text, max_bytes=1000) == doc
    assert loads_bounded(b"\xef\xbb\xbf" + text.encode(), max_bytes=1000) == doc
    assert loads_bounded(nested(MAX_DEPTH), max_bytes=10_000) == json.loads(nested(MAX_DEPTH))


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 1_000, 100_000])
def test_deeper_than_the_cap_is_refused_before_parsing(depth: int) -> None:
    with pytest.raises(JSONLimitError, match="deeper"):
        loads_bounded(nested(depth), max_bytes=10**7)


def test_brackets_inside_strings_do_not_count() -> None:
    text = json.dumps(["[" * 10_000, "{" * 10_000, '\\"[[[', "]]]"])
    assert loads_bounded(text, max_bytes=10**6)[0] == "[" * 10_000
    check_depth('{"a": "\\\\"}', 1)  # an escaped backslash closes the string


@pytest.mark.parametrize(
    "text",
    ["[" * 100_000, "]" * 10 + "[" * 10, '["unterminated' + "[" * 1000, "{" + "[" * 100_000 + "}"],
)
def test_unbalanced_brackets_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        loads_bounded(text, max_bytes=10**7)


def test_size_cap_is_checked_first() -> None:
    with pytest.raises(JSONLimitError, match="over 10"):
        loads_bounded(b"[" + b"1," * 10 + b"1]", max_bytes=10)


def test_the_scan_is_linear_on_hostile_text() -> None:
    # Escaped quotes in an unterminated string make a backtracking scan quadratic.
    hostile = ['"' + '\\"' * 1_000_000, '["' + '\\"\\' * 700_000, "[[]" * 700_000, '"a",' * 500_000]
    for text in hostile:
        started = time.process_time()
        with pytest.raises(ValueError):
            loads_bounded(text, max_bytes=10**7)
        assert time.process_time() - started < 3.0
