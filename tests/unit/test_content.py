"""Unit tests of the checks on metadata and image bytes (no services)."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from tasks.core.content import ImageInfo, image_reference, inspect_image, is_svg, parse_metadata
from tasks.core.errors import ItemError
from tasks.core.settings import Settings
from tasks.ingest.uris import DataLocation, resolve_uri


def png(size: tuple[int, int], mode: str = "RGB") -> bytes:
    out = io.BytesIO()
    Image.new(mode, size).save(out, format="PNG")
    return out.getvalue()


def kind(error: pytest.ExceptionInfo[ItemError]) -> str:
    return error.value.kind


def test_metadata_must_be_a_json_object() -> None:
    assert parse_metadata(b'\xef\xbb\xbf{"name": "x"}') == {"name": "x"}
    for bad in (b"[1, 2]", b'"text"', b"{", b"\xff\xfe", b"[" * 100_000):
        with pytest.raises(ItemError) as e:
            parse_metadata(bad)
        assert kind(e) == "bad_json"


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [
        ({"image": " ipfs://Qm/1.png "}, "ipfs://Qm/1.png"),
        ({"image_url": "https://x.example/1.png"}, "https://x.example/1.png"),
        ({"image": "", "imageUrl": "ar://abc"}, "ar://abc"),
        (
            {"image_data": "<svg xmlns='http://www.w3.org/2000/svg'/>"},
            b"<svg xmlns='http://www.w3.org/2000/svg'/>",
        ),
        ({"image": "<?xml version='1.0'?><svg/>"}, b"<?xml version='1.0'?><svg/>"),
        ({"image_data": "<!DOCTYPE svg><!-- c --><svg/>"}, b"<!DOCTYPE svg><!-- c --><svg/>"),
    ],
)
def test_image_reference_forms(metadata: dict[str, object], expected: str | bytes) -> None:
    assert image_reference(metadata) == expected


@pytest.mark.parametrize(
    "metadata", [{}, {"image": None}, {"image": {"uri": "x"}}, {"image": "  "}]
)
def test_no_image(metadata: dict[str, object]) -> None:
    with pytest.raises(ItemError) as e:
        image_reference(metadata)
    assert kind(e) == "no_image"


def test_raster_images_are_identified_by_their_bytes() -> None:
    assert inspect_image(png((42, 42), "P")) == ImageInfo("image/png", 42, 42)
    out = io.BytesIO()
    Image.new("RGB", (3, 5)).save(out, format="GIF")
    assert inspect_image(out.getvalue()) == ImageInfo("image/gif", 3, 5)


def test_svg_is_recognised_then_checked_without_expanding_entities() -> None:
    # An entity bomb would explode if expanded: it is recognised as SVG, then refused.
    bomb = b'<?xml version="1.0"?><!DOCTYPE svg [<!ENTITY a "aaaa">]><svg>&a;&a;</svg>'
    assert is_svg(b"<svg/>") and not is_svg(b"<html><svg/></html>") and is_svg(bomb)
    with pytest.raises(ItemError) as e:
        inspect_image(bomb)
    assert kind(e) == "bad_svg"
    good = b'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 10 10"><rect width="5"/></svg>'
    assert inspect_image(good).mime == "image/svg+xml"
    # Heads that make a backtracking matcher take forever: a linear scan says no at once.
    for head in (b"<!-- -->" * 512, b"<!--" * 1024, b"<!DOCTYPE x [" + b"]" * 4000, b"<svgx>"):
        assert not is_svg(head)
    assert is_svg(b"<!-- -->" * 200 + b"\n<svg>")


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"<html><body>not an image</body></html>",
        png((10, 10))[:40],  # truncated
        b"\x00\x00\x00\x18ftypmp42",  # a video
    ],
)
def test_bad_images(data: bytes) -> None:
    with pytest.raises(ItemError) as e:
        inspect_image(data)
    assert kind(e) == "bad_image"


def test_decompression_bomb_is_refused() -> None:
    limit = Image.MAX_IMAGE_PIXELS
    assert limit is not None  # the limit is on
    side = int(limit**0.5) + 100  # just over it
    bomb = png((side, side), "1")
    assert len(bomb) < 2_000_000  # small on the wire, huge in memory
    with pytest.raises(ItemError) as e:
        inspect_image(bomb)
    assert kind(e) == "bad_image" and "pixel limit" in str(e.value)


def test_token_uri_that_is_the_json_itself() -> None:
    where = resolve_uri(' {"name": "x", "image": "ipfs://Qm/{id}"} ', 7, Settings())
    assert where == DataLocation(b'{"name": "x", "image": "ipfs://Qm/{id}"}', "application/json")
    with pytest.raises(ItemError) as e:
        resolve_uri("{" + "x" * 100, 7, Settings(max_metadata_bytes=50))
    assert kind(e) == "too_large"


def test_lone_surrogates_from_json_are_refused_not_crashing() -> None:
    metadata = parse_metadata(b'{"image": "https://x.example/\\ud800.png"}')
    reference = image_reference(metadata)
    assert isinstance(reference, str)
    with pytest.raises(ItemError) as e:
        resolve_uri(reference, 1, Settings())
    assert kind(e) == "bad_uri"
