"""Metadata JSON: malformed, deep, huge, oddly typed, and text built to be slow.

Two places read it: ingest (``parse_metadata``, then ``image_reference`` and
``resolve_uri`` on what it names), which must refuse with bad_json, no_image or a
URI kind; and the tables stage (``token_record``), which must never raise and
must keep names, descriptions and traits within their caps, fast, however the
text was built (Unicode normalisation included). Time bounds are seconds for inputs
of megabytes: a loaded 2-core machine stays under them, a quadratic pass does not.
"""

# Case tables: one case a line reads better than wrapped calls.
# ruff: noqa: E501

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from tasks.core.content import image_reference, parse_metadata
from tasks.ingest.manifest import ManifestRow
from tasks.ingest.uris import Location, resolve_uri
from tasks.tables.tokens import MAX_DESCRIPTION, MAX_NAME, TokenRecord, token_record
from tasks.tables.traits import MAX_TEXT, MAX_TRAITS
from tests.data.hostile.case import Case, Env, refused
from tests.data.hostile.ingesting import CONTRACT, MAX_IMAGE, settings

BAD_JSON = refused("bad_json")
Make = Callable[[], bytes]


def _j(value: Any) -> Make:
    return lambda: json.dumps(value).encode()


def _meta(**fields: Any) -> Make:
    return _j({"name": "token", **fields})


CID = "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"

# Bytes ingest must refuse as metadata.
NOT_METADATA: dict[str, Make] = {
    "100,000 open brackets": lambda: b"[" * 100_000,
    "100,000 nested objects": lambda: b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
    "1,000,000 nested arrays closed": lambda: b"[" * 1_000_000 + b"]" * 1_000_000,
    "object 1,000 deep under a key": lambda: b'{"x":' + b"[" * 1000 + b"]" * 1000 + b"}",
    "top-level array": _j([{"image": "x"}]),
    "top-level string": _j("http://example.com/x.png"),
    "top-level number": lambda: b"1",
    "top-level null": lambda: b"null",
    "empty": lambda: b"",
    "whitespace": lambda: b" \n\t ",
    "byte order mark only": lambda: b"\xef\xbb\xbf",
    "utf-16 with bom": lambda: '{"name": "x"}'.encode("utf-16"),
    "utf-32": lambda: '{"name": "x"}'.encode("utf-32"),
    "invalid utf-8": lambda: b'{"name": "\xff\xfe"}',
    "overlong utf-8 slash": lambda: b'{"name": "\xc0\xaf"}',
    "utf-8 encoded surrogate": lambda: b'{"name": "\xed\xa0\x80"}',
    "trailing garbage": lambda: b'{"name": "x"} trailing',
    "two objects": lambda: b"{}{}",
    "unterminated string": lambda: b'{"name": "x',
    "raw control character in a string": lambda: b'{"name": "a\x01b"}',
    "single quotes": lambda: b"{'name': 'x'}",
    "comment": lambda: b'{"name": "x" /* c */}',
    "unbalanced closers": lambda: b'{"a": "]]]]"}]]]]',
    "brackets hidden in strings then deep": lambda: b'{"a": "[[[[", "b":' + b"[" * 5000 + b"]" * 5000 + b"}",
}  # fmt: skip
# JSON that is an object but stretches the parser: refused, or parsed within bounds.
STRETCHED: dict[str, Make] = {
    "NaN and Infinity literals": lambda: b'{"a": NaN, "b": Infinity, "c": -Infinity}',
    "1e999999": lambda: b'{"a": 1e999999}',
    "an integer of 100,000 digits": lambda: b'{"a": ' + b"9" * 100_000 + b"}",
    "4 MB of whitespace": lambda: b" " * (4 << 20) + b"{}",
    "200,000 keys": lambda: json.dumps({f"k{i}": i for i in range(200_000)}).encode(),
    "one key repeated 200,000 times": lambda: b"{" + b'"a": 1,' * 200_000 + b'"a": 2}',
    "a key of 3 MB": lambda: b'{"' + b"k" * (3 << 20) + b'": 1}',
    "a string of 3 MB of escapes": lambda: b'{"a": "' + b"\\u0000" * (500_000) + b'"}',
    "depth 64": lambda: b'{"a":' + b"[" * 63 + b"]" * 63 + b"}",
}


def _location(env: Env, data: bytes) -> Location | bytes:
    """Ingest's reading of metadata: parse, find the image, resolve its URI."""
    ref = image_reference(parse_metadata(data))
    if isinstance(ref, bytes):
        return ref
    return resolve_uri(ref, 1, settings(), max_data_bytes=MAX_IMAGE)


def _parsed(env: Env, data: bytes) -> dict[str, Any]:
    return parse_metadata(data)


def _any(result: Any) -> str | None:
    return None


# Image references ingest must refuse, and the kind.
IMAGES: dict[str, tuple[Any, frozenset[str]]] = {
    "image is a number": (123, refused("no_image")),
    "image is a list": (["http://example.com/x.png"], refused("no_image")),
    "image is an object": ({"url": "http://example.com/x.png"}, refused("no_image")),
    "image is null": (None, refused("no_image")),
    "image is true": (True, refused("no_image")),
    "image is empty": ("", refused("no_image")),
    "image is blank": (" \t\n ", refused("no_image")),
    "image is javascript:": ("javascript:alert(1)", refused("unsupported_uri")),
    "image is file:": ("file:///etc/passwd", refused("unsupported_uri")),
    "image is a 6 MB data: URI": ("data:image/png;base64," + "A" * (8 << 20), refused("too_large")),
    "image is a 6 MB percent data: URI": (
        "data:image/png," + "%41" * (6 << 20),
        refused("too_large"),
    ),
    "image is data: with bad base64": ("data:image/png;base64,@@@@", refused("bad_uri")),
    "image is ipfs:// only": ("ipfs://", refused("bad_uri")),
    "image is a malformed CID": ("ipfs://Qm123", refused("bad_uri")),
    "image climbs out of its CID": (f"ipfs://{CID}/../../etc/passwd", refused("bad_uri")),
    "image has an encoded slash": (f"ipfs://{CID}/a%2Fb", refused("bad_uri")),
    "image has a NUL in its path": (f"ipfs://{CID}/a%00b", refused("bad_uri")),
    "image is a short ar:// id": ("ar://short", refused("bad_uri")),
    "image URI of 9,000 chars": ("http://example.com/" + "a" * 9000, refused("bad_uri")),
    "image URI with a control character": ("http://example.com/\x07.png", refused("bad_uri")),
    "image URI is a lone surrogate": ("\ud800", refused("bad_uri")),
    "image URI with a lone surrogate": ("http://example.com/\udfff.png", refused("bad_uri")),
    "image is a scheme only": ("http:", refused("bad_uri")),
    "image is a bare word": ("image.png", refused("bad_uri")),
    "image has credentials": ("http://user:pw@example.com/x.png", refused("bad_uri")),
    "image_data is not svg": (None, refused("bad_uri", "no_image")),
}


def _image_case(name: str, value: Any) -> Make:
    if name == "image_data is not svg":
        return _meta(image_data="<html><script>alert(1)</script></html>")
    return _meta(image=value)


def _row(token_id: str = "1") -> ManifestRow:
    return ManifestRow("Hostile", CONTRACT, token_id, metadata_key="blobs/m", image_key="blobs/i",
                       mime="image/png")  # fmt: skip


def _record(env: Env, data: bytes) -> TokenRecord:
    return token_record(_row(), data)


def _bounded_record(record: TokenRecord) -> str | None:
    """What the tables stage promises whatever the metadata held."""
    problems = []
    if record.name is not None and len(record.name) > MAX_NAME:
        problems.append(f"name of {len(record.name)} chars")
    if record.description is not None and len(record.description) > MAX_DESCRIPTION:
        problems.append(f"description of {len(record.description)} chars")
    if len(record.traits) > MAX_TRAITS:
        problems.append(f"{len(record.traits)} traits")
    for trait in record.traits:
        for text in (trait.trait_type, trait.value, trait.display_type or ""):
            if len(text) > MAX_TEXT:
                problems.append(f"a trait text of {len(text)} chars")
    if len(record.problems) > 21 or any(len(p) > 1000 for p in record.problems):
        problems.append(
            f"{len(record.problems)} problems, longest {max(map(len, record.problems))}"
        )
    texts = [record.name or "", record.description or ""] + [t.value for t in record.traits]
    if any("\x00" in t or "\u202e" in t for t in texts):
        problems.append("control or bidi-override characters kept")
    return "; ".join(problems) or None


def _attrs(value: Any) -> Make:
    return _meta(attributes=value)


def _deep_list(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = [value]
    return value


# Metadata the tables stage must turn into a bounded record, fast.
RECORDS: dict[str, Make] = {
    "4 MB description of combining marks": _meta(description="a" + "\u0301" * (2 << 20)),
    "4 MB name of combining marks": _j({"name": "a" + "\u0301" * (2 << 20)}),
    "description of 500,000 U+FDFA": _meta(description="\ufdfa" * 500_000),
    "description of 1,000,000 U+0344 (decomposes)": _meta(description="\u0344" * 1_000_000),
    "description of 1,000,000 hangul jamo": _meta(description="\u1100\u1161" * 500_000),
    "combining marks in every trait value": _attrs(
        [{"trait_type": "t" + str(i), "value": "v" + "\u0301" * 100_000} for i in range(40)]
    ),
    "control, format and bidi characters": _meta(
        description="a\x00b\x1b[31mc\u202ed\u200be\u2066f\ufeff" * 1000
    ),
    "NUL bytes in a trait": _attrs([{"trait_type": "a\x00b", "value": "c\x00d"}]),
    "lone surrogates everywhere": lambda: (
        b'{"name": "\\ud800", "description": "\\udfff", '
        b'"attributes": [{"trait_type": "\\ud800", "value": "\\udc00"}]}'
    ),
    "200,000 attributes": _attrs([{"trait_type": f"t{i}", "value": i} for i in range(200_000)]),
    "attributes as an object of 200,000 keys": _attrs({f"t{i}": i for i in range(200_000)}),
    "attributes as a string": _attrs("Background: Blue"),
    "attributes as a number": _attrs(42),
    "attributes nested 60 deep": _attrs(_deep_list(60)),
    "a trait value of 1 MB": _attrs([{"trait_type": "big", "value": "x" * (1 << 20)}]),
    "a trait type of 1 MB": _attrs([{"trait_type": "t" * (1 << 20), "value": "v"}]),
    "values of every JSON type": _attrs(
        [
            {"trait_type": f"t{i}", "value": v}
            for i, v in enumerate(
                [
                    None,
                    True,
                    False,
                    0,
                    -0.0,
                    1.5,
                    10**300,
                    -(10**300),
                    1e308,
                    "",
                    [],
                    {},
                    [1, [2]],
                    {"a": {"b": 1}},
                    "null",
                    "None",
                    "N/A",
                    "-",
                ]
            )
        ]
    ),
    "trait types of every JSON type": _attrs(
        [{"trait_type": t, "value": "v"} for t in [None, 1, 2.5, True, [], {}, ["a"], {"a": 1}]]
    ),
    "display types of every kind": _attrs(
        [
            {"trait_type": "t", "value": 1, "display_type": d}
            for d in ["number", "boost_percentage", "date", None, 5, "x" * 10_000, ["date"]]
        ]
    ),
    "huge numbers in numeric display types": _attrs(
        [
            {"trait_type": "n", "value": 10**250, "display_type": "number"},
            {"trait_type": "d", "value": 2**63, "display_type": "date"},
            {"trait_type": "p", "value": -1e308, "display_type": "boost_percentage"},
        ]
    ),
    "NaN and Infinity values": lambda: (
        b'{"attributes": [{"trait_type": "a", "value": NaN}, '
        b'{"trait_type": "b", "value": Infinity}, {"trait_type": "c", "value": -Infinity}]}'
    ),
    "traits and features and attributes together": _j(
        {
            "attributes": [{"trait_type": "a", "value": 1}] * 80,
            "traits": [{"trait_type": "b", "value": 2}] * 80,
            "features": {"c": 3},
        }
    ),
    "name is an object": _j({"name": {"first": "a"}, "description": ["b"]}),
    "name of 10 MB": _j({"name": "n" * (10 << 20)}),
    "zero-width joiner flood": _meta(description="\u200d" * (2 << 20)),
    "emoji flags and modifiers flood": _meta(
        description="\U0001f1fa\U0001f1f8\U0001f3fd" * 300_000
    ),
    "right-to-left override name": _j({"name": "\u202egnp.exe"}),
    "not metadata at all": lambda: b"\x00\x01\x02",
    "deep metadata": lambda: b"[" * 200_000,
}


def cases() -> list[Case]:
    found: list[Case] = []
    for name, make in NOT_METADATA.items():
        found.append(Case(f"ingest: {name}", _location, BAD_JSON, make=make, time_s=3.0))
    for name, make in STRETCHED.items():
        found.append(Case(f"ingest: {name}", _parsed, BAD_JSON, check=_any, make=make,
                          time_s=3.0, memory_mb=192))  # fmt: skip
    for name, (value, kinds) in IMAGES.items():
        found.append(Case(f"ingest: {name}", _location, kinds, make=_image_case(name, value),
                          memory_mb=160))  # fmt: skip
    found += [
        Case("ingest: inline svg image", _location, check=_svg_bytes,
             make=_meta(image='<svg xmlns="http://www.w3.org/2000/svg"/>')),
        Case("ingest: {id} substitution", _location, check=_any,
             make=_meta(image="https://example.com/{id}.png")),
    ]  # fmt: skip
    for name, make in {**RECORDS, **NOT_METADATA, **STRETCHED}.items():
        found.append(Case(f"tables: {name}", _record, check=_bounded_record, make=make,
                          time_s=3.0, memory_mb=256))  # fmt: skip
    return found


def _svg_bytes(result: Any) -> str | None:
    return None if isinstance(result, bytes) and result.startswith(b"<svg") else "not inline SVG"
