"""Decoding for exports: an SVG is checked and rasterised at the size the export asks
for; rasters keep within the pixel budget."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from tasks.core.errors import ItemError
from tasks.export import images

SVG = (
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w} {h}">'
    '<rect width="100%" height="100%" fill="black"/>'
    '<circle cx="{cx}" cy="{cy}" r="{r}" fill="white"/>'
    '<text x="5" y="20" fill="white" font-family="serif" font-size="14">Bag</text></svg>'
)


def svg(w: int, h: int) -> bytes:
    return SVG.format(w=w, h=h, cx=w // 2, cy=h // 2, r=min(w, h) // 3).encode()


@pytest.mark.parametrize(
    ("w", "h", "side", "size"),
    [(350, 350, 64, (64, 64)), (350, 350, 256, (256, 256)), (400, 200, 64, (128, 64)),
     (200, 400, 100, (100, 200))],
)  # fmt: skip
def test_svg_is_rendered_at_the_requested_shortest_side(
    w: int, h: int, side: int, size: tuple[int, int]
) -> None:
    image = images.decode(svg(w, h), images.SVG_MIME, svg_shortest_side=side)
    assert image.size == size
    assert images.resize_shortest(image, side).size == size


def test_rendering_small_looks_like_rendering_large_and_resizing() -> None:
    """The shortcut changes the cost, not the picture: mean difference under 4 of 255."""
    data = svg(350, 350)
    direct = images.decode(data, images.SVG_MIME, svg_shortest_side=64)
    large = images.decode(data, images.SVG_MIME)
    assert large.size == (images.SVG_SIZE, images.SVG_SIZE)
    resized = images.resize_shortest(large, 64)
    a = np.asarray(direct.convert("RGB"), dtype=np.float64)
    b = np.asarray(resized.convert("RGB"), dtype=np.float64)
    assert a.shape == b.shape and np.abs(a - b).mean() < 4
    assert a.max() > 200 and a.min() < 50  # the circle and the backdrop are both there


@pytest.mark.parametrize(
    ("aspect", "side", "size"),
    [(1.0, None, (1024, 1024)), (2.0, None, (1024, 512)), (0.5, 256, (256, 512)),
     (16.0, 1024, (8192, 512)), (1 / 16, 4096, (512, 8192))],
)  # fmt: skip
def test_svg_raster_size_keeps_the_aspect_within_the_pixel_cap(
    aspect: float, side: int | None, size: tuple[int, int]
) -> None:
    found = images.svg_pixels(aspect, side)
    assert found == size
    assert found[0] * found[1] <= images.MAX_SVG_PIXELS


@pytest.mark.parametrize(
    "data",
    [
        b'<!DOCTYPE svg [<!ENTITY a "AAAA">]><svg xmlns="http://www.w3.org/2000/svg"/>',
        b'<svg xmlns="http://www.w3.org/2000/svg" width="1" height="100000000"/>',
        b'<svg xmlns="http://www.w3.org/2000/svg">' + b"<g>" * 300 + b"</g>" * 300 + b"</svg>",
        b'<svg xmlns="http://www.w3.org/2000/svg"><image href="/etc/passwd"/></svg>',
    ],
)
def test_hostile_svg_is_refused_before_any_rendering(data: bytes) -> None:
    with pytest.raises(ItemError) as refused:
        images.decode(data, images.SVG_MIME, svg_shortest_side=64)
    assert refused.value.kind == "bad_svg"


def test_svg_in_millimetres_renders_at_its_aspect() -> None:
    data = b'<svg xmlns="http://www.w3.org/2000/svg" width="30mm" height="10mm"/>'
    assert images.decode(data, images.SVG_MIME, svg_shortest_side=32).size == (96, 32)


def test_raster_over_the_pixel_budget_is_refused_from_its_header() -> None:
    """48 megapixels: under Pillow's bomb limit (89), over the export's budget (40)."""
    out = io.BytesIO()
    Image.new("1", (8000, 6000)).save(out, format="PNG")
    assert (Image.MAX_IMAGE_PIXELS or 0) > 8000 * 6000 > images.MAX_PIXELS
    with pytest.raises(ItemError, match="over the export's budget") as refused:
        images.decode(out.getvalue(), "image/png")
    assert refused.value.kind == "bad_image"
    with pytest.raises(ItemError, match="over the export's budget"):
        images.to_png(out.getvalue(), "image/png")
