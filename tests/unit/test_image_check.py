"""Ingest's image check decodes the first frame: cut and corrupt images are bad_image."""

from __future__ import annotations

import io
import random
import struct
import time
import tracemalloc
import zlib

import pytest
from PIL import Image, ImageFile

from tasks.core.content import ImageInfo, inspect_image, pixel_count
from tasks.core.errors import ItemError


def encoded(
    fmt: str, size: tuple[int, int] = (64, 48), options: dict[str, bool | int] | None = None
) -> bytes:
    out = io.BytesIO()
    Image.effect_noise(size, 60).convert("RGB").save(out, format=fmt, **(options or {}))
    return out.getvalue()


def chunk(kind: bytes, body: bytes) -> bytes:
    """A PNG chunk with a correct CRC."""
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_with_idat(idat: bytes, width: int = 64, height: int = 48) -> bytes:
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )


def rows(width: int, height: int) -> bytes:
    return (b"\0" + bytes(3 * width)) * height  # filter byte 0, then black pixels


def bad_kind(data: bytes) -> str:
    with pytest.raises(ItemError) as e:
        inspect_image(data)
    return e.value.kind


@pytest.mark.parametrize(
    ("fmt", "options", "mime"),
    [
        ("PNG", {}, "image/png"),
        ("PNG", {"interlace": 1}, "image/png"),  # Adam7: rows counted per pass
        ("JPEG", {"quality": 90}, "image/jpeg"),
        ("JPEG", {"progressive": True}, "image/jpeg"),
        ("GIF", {}, "image/gif"),
        ("WEBP", {}, "image/webp"),
        ("BMP", {}, "image/bmp"),
    ],
)
def test_whole_images_pass(fmt: str, options: dict[str, bool | int], mime: str) -> None:
    assert inspect_image(encoded(fmt, options=options)) == ImageInfo(mime, 64, 48)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF", "WEBP"])
@pytest.mark.parametrize("keep", [0.5, 0.9])
def test_images_cut_short_are_bad(fmt: str, keep: float) -> None:
    data = encoded(fmt, size=(256, 256))
    assert bad_kind(data[: int(len(data) * keep)]) == "bad_image"


def test_a_jpeg_without_its_end_marker_is_bad() -> None:
    data = encoded("JPEG", size=(256, 256))
    assert bad_kind(data[:-300]) == "bad_image"


def test_a_png_of_garbage_data_with_valid_crcs_is_bad() -> None:
    assert bad_kind(png_with_idat(random.Random(1).randbytes(5000))) == "bad_image"


def test_a_png_whose_data_ends_early_or_runs_over_is_bad() -> None:
    assert inspect_image(png_with_idat(zlib.compress(rows(64, 48)))).mime == "image/png"
    # A well-formed zlib stream of half the rows: Pillow alone paints the rest black.
    assert bad_kind(png_with_idat(zlib.compress(rows(64, 24)))) == "bad_image"
    assert bad_kind(png_with_idat(zlib.compress(rows(64, 96)))) == "bad_image"


def test_the_pixel_limit_applies_before_any_pixel_is_decoded() -> None:
    # Over Pillow's limit: refused from the header, so memory stays near the file size.
    side = int(Image.MAX_IMAGE_PIXELS**0.5) + 100  # type: ignore[operator]
    header = struct.pack(">IIBBBBB", side, side, 8, 6, 0, 0, 0)
    bomb = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")
    tracemalloc.start()
    try:
        assert bad_kind(bomb) == "bad_image"
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


def test_a_big_jpeg_is_checked_at_reduced_scale() -> None:
    data = encoded("JPEG", size=(1024, 1024))
    started = time.process_time()
    assert inspect_image(data) == ImageInfo("image/jpeg", 1024, 1024)
    assert time.process_time() - started < 2.0


def test_a_process_that_loads_truncated_images_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(RuntimeError, match="LOAD_TRUNCATED_IMAGES"):
        inspect_image(encoded("PNG"))


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "WEBP", "BMP"])
def test_pixel_count_reads_the_header_as_pillow_does(fmt: str) -> None:
    assert pixel_count(encoded(fmt, (37, 11))) == 37 * 11


def test_pixel_count_of_a_png_claiming_a_huge_size_is_that_size() -> None:
    """A bomb's header is believed here, so its check goes off the event loop."""
    bomb = png_with_idat(zlib.compress(rows(1, 1)), width=60_000, height=60_000)
    assert pixel_count(bomb) == 60_000 * 60_000
    assert pixel_count(b"\x89PNG\r\n\x1a\n" + b"\0" * 8) == 0  # no IHDR: Pillow says nothing
