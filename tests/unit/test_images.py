"""Decoding for exports: an SVG is rasterised at the size the export asks for."""

from __future__ import annotations

import numpy as np
import pytest

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
