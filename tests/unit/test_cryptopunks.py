"""Unit tests of the CryptoPunks adapter: attribute strings, the metadata it builds, and
hostile data-contract replies, read back through the token pipeline's own parsers."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from eth_abi.abi import encode

from tasks.core.content import image_reference, inspect_image, parse_metadata
from tasks.core.errors import ItemError
from tasks.core.settings import Settings
from tasks.ingest.chain import MAX_STRING_BYTES
from tasks.ingest.cryptopunks import (
    MAX_ACCESSORIES,
    MAX_ATTRIBUTE_BYTES,
    MAX_ENTRY_CHARS,
    punk_attributes,
    punk_token_uri,
)
from tasks.ingest.uris import DataLocation, resolve_uri
from tasks.tables.traits import is_visual, normalise_traits

SETTINGS = Settings()


def real_shaped_svg(rects: int = 300) -> str:
    """A punk SVG as CryptoPunksData writes it: one 1x1 rect per pixel, #rrggbbaa fills."""
    body = "".join(
        f'<rect x="{n % 24}" y="{n // 24 % 24}" width="1" height="1" '
        f'shape-rendering="crispEdges" fill="#{n * 2654435761 % 2**24:06x}ff"/>'
        for n in range(rects)
    )
    return f'<svg xmlns="http://www.w3.org/2000/svg" version="1.2" viewBox="0 0 24 24">{body}</svg>'


def abi_string(text: str | bytes) -> str:
    """An eth_call reply carrying one ABI string (bytes for invalid UTF-8)."""
    raw = text.encode() if isinstance(text, str) else text
    return "0x" + encode(["bytes"], [raw]).hex()


def svg_reply(svg: str | None = None) -> str:
    return abi_string("data:image/svg+xml;utf8," + (svg or real_shaped_svg()))


def metadata_of(uri: str | ItemError) -> dict[str, Any]:
    """The metadata the token pipeline reads from a punk's URI."""
    assert isinstance(uri, str), uri
    where = resolve_uri(uri, 0, SETTINGS)
    assert isinstance(where, DataLocation) and where.mime == "application/json"
    return parse_metadata(where.data)


def image_of(metadata: dict[str, Any]) -> bytes:
    reference = image_reference(metadata)
    assert isinstance(reference, str)
    where = resolve_uri(reference, 0, SETTINGS, max_data_bytes=SETTINGS.max_image_bytes)
    assert isinstance(where, DataLocation) and where.mime == "image/svg+xml"
    return where.data


def pairs(attributes: list[dict[str, str]]) -> list[tuple[str, str]]:
    return [(a["trait_type"], a["value"]) for a in attributes]


# Attribute strings.


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "Male 2, Earring, Mohawk Dark",
            [("Type", "Male"), ("Skin Tone", "2"), ("Accessory", "Earring"),
             ("Accessory", "Mohawk Dark")],
        ),
        (
            "Female 1, Wild Hair, Green Eye Shadow",
            [("Type", "Female"), ("Skin Tone", "1"), ("Accessory", "Wild Hair"),
             ("Accessory", "Green Eye Shadow")],
        ),
        ("Alien, Cap Forward, Pipe",
         [("Type", "Alien"), ("Accessory", "Cap Forward"), ("Accessory", "Pipe")]),
        ("Zombie", [("Type", "Zombie")]),
        ("Ape,3D Glasses", [("Type", "Ape"), ("Accessory", "3D Glasses")]),
    ],
)  # fmt: skip
def test_real_attribute_strings(text: str, expected: list[tuple[str, str]]) -> None:
    assert pairs(punk_attributes(text)) == expected


def test_hostile_attribute_strings_are_bounded_and_printable() -> None:
    many = "Male 1, " + ", ".join(f"Thing {n}" for n in range(1000))
    assert len(punk_attributes(many)) == 2 + MAX_ACCESSORIES
    long = punk_attributes("Ape, " + "x" * 10_000)
    assert long[1]["value"] == "x" * MAX_ENTRY_CHARS
    # Terminal escapes, bidi overrides, NULs and newlines are dropped, runs of spaces
    # collapse, empty entries vanish; the type entry may be empty too.
    hostile = punk_attributes("\x1b[2J\u202e, ,,Ear\x00ring\n,  Big   \tBeard  ,\u200b")
    assert pairs(hostile) == [("Type", "[2J"), ("Accessory", "Earring"), ("Accessory", "Big Beard")]
    assert pairs(punk_attributes(", Pipe")) == [("Accessory", "Pipe")]
    assert punk_attributes("") == []
    for trait in punk_attributes("\u0085Alien\u2028 7, \ud800Pipe"):
        assert trait["value"].isprintable()


# The metadata a punk gets.


def test_metadata_shape_and_image_pass_the_pipeline() -> None:
    svg = real_shaped_svg()
    uri = punk_token_uri(7, svg_reply(svg), abi_string("Male 2, Earring, Mohawk Dark"))
    assert isinstance(uri, str) and uri.startswith("data:application/json;base64,")
    metadata = metadata_of(uri)
    assert set(metadata) == {"name", "image", "attributes"}
    assert metadata["name"] == "CryptoPunk #7"
    assert metadata["image"].startswith("data:image/svg+xml;base64,")
    image = image_of(metadata)
    assert image == svg.encode()
    assert inspect_image(image).mime == "image/svg+xml"  # check_svg passes a real shape
    assert pairs(metadata["attributes"]) == [
        ("Type", "Male"),
        ("Skin Tone", "2"),
        ("Accessory", "Earring"),
        ("Accessory", "Mohawk Dark"),
    ]
    # The tables stage reads the same traits back.
    traits = normalise_traits(metadata)
    assert traits.problems == ()
    assert [(t.trait_type, t.value) for t in traits.traits] == pairs(metadata["attributes"])
    assert all(is_visual(t) for t in traits.traits if t.trait_type != "Skin Tone")


def test_base64_svg_data_uri_is_accepted() -> None:
    svg = real_shaped_svg(3)
    reply = abi_string("DATA:image/svg+xml;base64," + base64.b64encode(svg.encode()).decode())
    assert image_of(metadata_of(punk_token_uri(0, reply, abi_string("Ape")))) == svg.encode()


def test_an_svg_with_a_script_reaches_the_pipeline_check() -> None:
    hostile = '<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'
    image = image_of(metadata_of(punk_token_uri(1, svg_reply(hostile), abi_string("Ape"))))
    with pytest.raises(ItemError) as refused:
        inspect_image(image)
    assert refused.value.kind == "bad_svg"


# Hostile replies: an ItemError for that punk, never an exception.


@pytest.mark.parametrize(
    ("svg", "kind"),
    [
        (abi_string("https://evil.example/punk.svg"), "bad_uri"),
        (abi_string("data:image/png;base64,iVBORw0KGgo="), "bad_uri"),
        (abi_string("data:image/svg+xml;base64,not base64!"), "bad_uri"),
        (abi_string("data:image/svg+xml;utf8,<html><body>hi</body></html>"), "bad_image"),
        (abi_string("data:image/svg+xml;utf8,"), "bad_image"),
        (abi_string(b"data:image/svg+xml;utf8,<svg \xff>"), "bad_uri"),
        (abi_string("data:image/svg+xml," + "x" * MAX_STRING_BYTES), "too_large"),
        ("0x1234", "rpc_error"),
        ("0x", "rpc_error"),
        ("0x" + "ff" * 96, "rpc_error"),  # a length word far past the reply
        (ItemError("not_minted", "call reverted: punk index out of range"), "not_minted"),
    ],
)
def test_bad_svg_replies_fail_the_punk(svg: str | ItemError, kind: str) -> None:
    uri = punk_token_uri(3, svg, abi_string("Ape"))
    assert isinstance(uri, ItemError) and uri.kind == kind
    if kind == "rpc_error":
        assert not uri.retryable  # the same answer would come back


@pytest.mark.parametrize(
    ("attributes", "kind"),
    [
        (abi_string("A" * (MAX_ATTRIBUTE_BYTES + 1)), "too_large"),
        (abi_string(b"Male 1, \xc3\x28"), "bad_json"),
        ("0xdead", "rpc_error"),
        (ItemError("rpc_error", "eth_call failed: busy"), "rpc_error"),
    ],
)
def test_bad_attribute_replies_fail_the_punk(attributes: str | ItemError, kind: str) -> None:
    uri = punk_token_uri(3, svg_reply(), attributes)
    assert isinstance(uri, ItemError) and uri.kind == kind


def test_the_svg_error_comes_first_and_stays_short() -> None:
    uri = punk_token_uri(3, abi_string("javascript:" + "x" * 100_000), abi_string(b"\xff"))
    assert isinstance(uri, ItemError) and uri.kind == "bad_uri"
    assert len(uri.message) < 200


def test_metadata_json_is_plain_ascii() -> None:
    uri = punk_token_uri(9, svg_reply(), abi_string("Fem\u00e4le 3, \u6f22\u5b57"))
    assert isinstance(uri, str)
    raw = base64.b64decode(uri.split(",", 1)[1])
    assert raw.isascii()
    assert pairs(json.loads(raw)["attributes"]) == [
        ("Type", "Fem\u00e4le"),
        ("Skin Tone", "3"),
        ("Accessory", "\u6f22\u5b57"),
    ]
