"""Standardise stored images for exports: decode, rasterise SVG, resize, encode.

Token images are attacker-controlled. Rasters open with Pillow restricted to
the formats ingest accepted, and are refused from their header, before any pixel
is decoded, when over the export's pixel budget. SVG is checked by a safe parser
(``tasks/core/svg_check.py``: no DTD, entities or outside references, bounded
size and cost, canvas from its attributes) and then rasterised only in a
sandboxed child process (``tasks/export/svg_sandbox.py``). Every failure is an
ItemError for that token, never an exception that stops an export.
"""

from __future__ import annotations

import io
import math
import warnings

from PIL import Image, ImageSequence

from tasks.core.content import PILLOW_FORMATS
from tasks.core.errors import ItemError
from tasks.core.svg_check import check_svg
from tasks.export.svg_sandbox import SvgSandbox, default_sandbox

SVG_MIME = "image/svg+xml"
PNG_MIME = "image/png"
SVG_SIZE = 1024  # pixels of an SVG's longer side when rasterised
# Pixels of an SVG raster at most (2048 x 2048): a larger ask is rendered smaller.
MAX_SVG_PIXELS = 2048 * 2048
# The export's pixel budget for a raster, checked from its header: 40 megapixels
# (a 6,300 x 6,300 image) decode to at most 160 MB of RGBA, about twice that while
# converting, a quarter of what Pillow's bomb limit (89 megapixels) lets through.
# Samples are a few hundred pixels a side: larger art gains nothing.
MAX_PIXELS = 40_000_000


def decode(
    data: bytes,
    mime: str,
    svg_shortest_side: int | None = None,
    sandbox: SvgSandbox | None = None,
) -> Image.Image:
    """The image as RGB or RGBA pixels (first frame of animations).

    An SVG is rasterised with its longer side SVG_SIZE pixels, or, given
    ``svg_shortest_side``, straight at the size a resize would make of it: a vector
    needs no larger raster, and rendering one costs its pixel count. It renders in
    ``sandbox``, by default the process-wide one; safe to call from many threads.
    """
    if mime == SVG_MIME:
        return _open_raster(rasterise_svg(data, svg_shortest_side, sandbox))
    return _open_raster(data)


def rasterise_svg(
    data: bytes, shortest_side: int | None = None, sandbox: SvgSandbox | None = None
) -> bytes:
    """PNG bytes of a checked SVG, rendered in the sandbox at the size ``decode`` says."""
    info = check_svg(data)
    width, height = svg_pixels(info.aspect, shortest_side)
    return (sandbox or default_sandbox()).render(info.text, width, height)


def svg_pixels(aspect: float, shortest_side: int | None = None) -> tuple[int, int]:
    """Raster size for a canvas of this aspect: longer side SVG_SIZE, or shorter side
    ``shortest_side``, within MAX_SVG_PIXELS."""
    ratio = max(aspect, 1 / aspect)
    if shortest_side is None:
        longer = SVG_SIZE
        shorter = max(1, round(longer / ratio))
    else:
        shorter = shortest_side
        longer = max(1, round(shorter * ratio))
    if longer * shorter > MAX_SVG_PIXELS:
        shorter = max(1, math.floor(math.sqrt(MAX_SVG_PIXELS / ratio)))
        longer = max(1, round(shorter * ratio))
    return (longer, shorter) if aspect >= 1 else (shorter, longer)


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
                width, height = im.size  # from the header: no pixel is decoded yet
                if width * height > MAX_PIXELS:
                    raise ItemError(
                        "bad_image",
                        f"image of {width}x{height} is over the export's budget of "
                        f"{MAX_PIXELS:,} pixels",
                    )
                frame = next(iter(ImageSequence.Iterator(im)))
                mode = "RGBA" if _has_alpha(frame) else "RGB"
                return frame.convert(mode)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ItemError("bad_image", f"image exceeds the pixel limit: {e}") from e
    except (OSError, SyntaxError, ValueError, StopIteration) as e:
        raise ItemError("bad_image", f"image cannot be decoded: {str(e)[:120]}") from e


def _has_alpha(frame: Image.Image) -> bool:
    return frame.mode in ("RGBA", "LA", "PA") or "transparency" in frame.info
