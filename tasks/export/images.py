"""Standardise stored images for exports: decode, rasterise SVG, resize, encode.

Token images are attacker-controlled. Rasters open with Pillow restricted to
the formats ingest accepted, with its pixel limit as an error. SVG is rendered
by resvg (no scripts, no network), but only when it names no external resource:
resvg would read local files an ``href`` points at. Every failure is an
ItemError for that token, never an exception that stops an export.
"""

from __future__ import annotations

import io
import re
import warnings

import resvg_py
from PIL import Image, ImageSequence

from tasks.core.content import PILLOW_FORMATS
from tasks.core.errors import ItemError

SVG_MIME = "image/svg+xml"
PNG_MIME = "image/png"
SVG_SIZE = 1024  # pixels of an SVG's longer side when rasterised
# An SVG this far from square is an attack or a banner, not a token image.
MAX_SVG_ASPECT = 16.0
MAX_SVG_BYTES = 8 * 1024 * 1024
# href / xlink:href values other than "#fragment" and data: URIs name outside resources.
_EXTERNAL_HREF = re.compile(rb"""href\s*=\s*["']\s*(?!#|data:)""", re.IGNORECASE)


def decode(data: bytes, mime: str, svg_shortest_side: int | None = None) -> Image.Image:
    """The image as RGB or RGBA pixels (first frame of animations).

    An SVG is rasterised with its longer side SVG_SIZE pixels, or, given
    ``svg_shortest_side``, straight at the size a resize would make of it: a vector
    needs no larger raster, and rendering one costs its pixel count.
    """
    if mime == SVG_MIME:
        return _open_raster(_rasterise_svg(data, SVG_SIZE, svg_shortest_side))
    return _open_raster(data)


def to_png(data: bytes, mime: str) -> bytes:
    """PNG bytes for the image; PNGs are returned unchanged, byte for byte."""
    if mime == PNG_MIME:
        decode(data, mime)  # still refuse what ingest would have refused
        return data
    return encode(decode(data, mime), "png")


def resize_shortest(image: Image.Image, side: int) -> Image.Image:
    """Scale so the shorter side is ``side`` pixels, keeping the aspect ratio.

    Enlarging uses nearest-neighbour so pixel art (most PFP collections) stays
    sharp; shrinking uses Lanczos.
    """
    if side < 1:
        raise ValueError(f"side must be at least 1, not {side}")
    width, height = image.size
    scale = side / min(width, height)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    if size == image.size:
        return image
    method = Image.Resampling.NEAREST if scale > 1 else Image.Resampling.LANCZOS
    return image.resize(size, method)


def encode(image: Image.Image, fmt: str) -> bytes:
    """PNG (lossless) or JPEG (quality 95, no alpha) bytes."""
    out = io.BytesIO()
    if fmt == "png":
        image.save(out, format="PNG", optimize=False, compress_level=6)
    elif fmt in ("jpg", "jpeg"):
        image.convert("RGB").save(out, format="JPEG", quality=95)
    else:
        raise ValueError(f"unknown image format {fmt!r}: use png or jpg")
    return out.getvalue()


def _open_raster(data: bytes) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=PILLOW_FORMATS) as im:
                frame = next(iter(ImageSequence.Iterator(im)))
                mode = "RGBA" if _has_alpha(frame) else "RGB"
                return frame.convert(mode)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ItemError("bad_image", f"image exceeds the pixel limit: {e}") from e
    except (OSError, SyntaxError, ValueError, StopIteration) as e:
        raise ItemError("bad_image", f"image cannot be decoded: {str(e)[:120]}") from e


def _has_alpha(frame: Image.Image) -> bool:
    return frame.mode in ("RGBA", "LA", "PA") or "transparency" in frame.info


def _rasterise_svg(data: bytes, size: int, shortest: int | None = None) -> bytes:
    """PNG bytes of an SVG whose longer side is ``size`` pixels (or shorter side
    ``shortest`` pixels, when given)."""
    if len(data) > MAX_SVG_BYTES:
        raise ItemError("bad_image", f"SVG is over {MAX_SVG_BYTES} bytes")
    if _EXTERNAL_HREF.search(data):
        raise ItemError("bad_image", "SVG references an external resource; not rendered")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ItemError("bad_image", "SVG is not UTF-8") from e
    # A thumbnail first gives the aspect ratio without trusting the SVG's declared
    # size, which could ask for billions of pixels.
    probe = _render(text, width=64, height=None)
    with Image.open(io.BytesIO(probe), formats=("PNG",)) as im:
        w, h = im.size
    aspect = w / h
    if not 1 / MAX_SVG_ASPECT <= aspect <= MAX_SVG_ASPECT:
        raise ItemError("bad_image", f"SVG aspect ratio {aspect:.3g} is out of range")
    if shortest is not None:
        size = round(shortest * max(aspect, 1 / aspect))
    if aspect >= 1:
        target = (size, max(1, round(size / aspect)))
    else:
        target = (max(1, round(size * aspect)), size)
    if target == (w, h):  # the thumbnail is already what was asked for
        return probe
    return _render(text, width=target[0], height=target[1])


def _render(text: str, width: int, height: int | None) -> bytes:
    try:
        return bytes(
            resvg_py.svg_to_bytes(
                svg_string=text,
                width=width,
                height=height,
                # resvg's default fonts are absent on Debian: text would not render.
                font_family="DejaVu Sans",
                serif_family="DejaVu Serif",
                sans_serif_family="DejaVu Sans",
                monospace_family="DejaVu Sans Mono",
            )
        )
    except (ValueError, RuntimeError, OverflowError) as e:
        raise ItemError("bad_image", f"SVG cannot be rendered: {str(e)[:120]}") from e
