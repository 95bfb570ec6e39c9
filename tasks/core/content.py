"""Check the bytes a token points at before they are stored.

Metadata must be a JSON object; images are identified by their magic bytes, not
by what a server or the metadata claims. Raster images are opened with Pillow
restricted to common formats, with its decompression-bomb limit turned into an
error. SVG is recognised and stored as text; it is never rendered or executed.
"""

from __future__ import annotations

import io
import json
import warnings
from dataclasses import dataclass
from typing import Any

from PIL import Image, UnidentifiedImageError

from tasks.core.errors import ItemError

# Formats Pillow may open: the image formats NFT collections actually use.
# Restricting the plugin list keeps rarely-audited decoders away from token data.
PILLOW_FORMATS = ("PNG", "JPEG", "GIF", "WEBP", "BMP")
_MIME_BY_FORMAT = {
    "PNG": "image/png",
    "JPEG": "image/jpeg",
    "MPO": "image/jpeg",  # multi-picture JPEG (phone cameras): Pillow reports it apart
    "GIF": "image/gif",
    "WEBP": "image/webp",
    "BMP": "image/bmp",
}
# Keys that hold the image in the metadata standards collections follow.
_IMAGE_KEYS = ("image", "image_url", "imageUrl", "image_uri")
# What may precede an SVG's root element: (start, end) markers of each prolog item.
_PROLOG = ((b"<?xml", b"?>"), (b"<!--", b"-->"))
_SVG_HEAD_BYTES = 4096


@dataclass(frozen=True)
class ImageInfo:
    mime: str
    width: int | None
    height: int | None


def parse_metadata(data: bytes) -> dict[str, Any]:
    """Decode token metadata; anything but a JSON object is a bad_json error."""
    try:
        value = json.loads(data.decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise ItemError("bad_json", f"metadata is not valid UTF-8 JSON: {str(e)[:120]}") from e
    if not isinstance(value, dict):
        raise ItemError("bad_json", f"metadata is a JSON {type(value).__name__}, not an object")
    return value


def image_reference(metadata: dict[str, Any]) -> str | bytes:
    """The metadata's image: a URI string, or inline SVG bytes from `image_data`."""
    for key in _IMAGE_KEYS:
        value = metadata.get(key)
        if isinstance(value, str) and value.strip():
            # Some collections put SVG markup itself where a URI belongs.
            data = value.encode("utf-8", "surrogatepass")
            return data if is_svg(data) else value.strip()
    inline = metadata.get("image_data")
    if isinstance(inline, str) and inline.strip():
        data = inline.encode("utf-8", "surrogatepass")
        return data if is_svg(data) else inline.strip()
    raise ItemError("no_image", "metadata has no image, image_url or image_data string")


def is_svg(data: bytes) -> bool:
    """True when the root element is <svg>, after an optional XML prolog.

    A linear scan of the head only: nothing is parsed, so entity tricks never run.
    """
    head = data[:_SVG_HEAD_BYTES].removeprefix(b"\xef\xbb\xbf")
    pos = _skip_space(head, 0)
    while pos < len(head):
        end = _prolog_item_end(head, pos)
        if end is None:
            break
        pos = _skip_space(head, end)
    tag = head[pos : pos + 5].lower()
    return tag[:4] == b"<svg" and tag[4:5] in (b" ", b"\t", b"\r", b"\n", b"/", b">")


def _prolog_item_end(head: bytes, pos: int) -> int | None:
    """Where an XML declaration, comment or DOCTYPE starting at pos ends; None if none does."""
    for start, end in _PROLOG:
        if head.startswith(start, pos):
            found = head.find(end, pos + len(start))
            return None if found < 0 else found + len(end)
    if head[pos : pos + 9].upper() == b"<!DOCTYPE":
        close = head.find(b">", pos)
        bracket = head.find(b"[", pos)
        if 0 <= bracket < close:  # an internal subset: [ ... ] then >
            subset_end = head.find(b"]", bracket)
            close = -1 if subset_end < 0 else head.find(b">", subset_end)
        return None if close < 0 else close + 1
    return None


def _skip_space(head: bytes, pos: int) -> int:
    while pos < len(head) and head[pos : pos + 1].isspace():
        pos += 1
    return pos


def inspect_image(data: bytes) -> ImageInfo:
    """Identify and validate image bytes; bad_image for anything not a safe, decodable image."""
    if not data:
        raise ItemError("bad_image", "image is empty")
    if is_svg(data):
        return ImageInfo("image/svg+xml", None, None)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=PILLOW_FORMATS) as im:
                fmt = im.format or ""
                width, height = im.size
                im.verify()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ItemError("bad_image", f"image exceeds the pixel limit: {e}") from e
    except UnidentifiedImageError as e:
        raise ItemError("bad_image", f"not a supported image ({_magic(data)})") from e
    except (OSError, SyntaxError, ValueError) as e:
        raise ItemError("bad_image", f"corrupt image: {str(e)[:120]}") from e
    return ImageInfo(_MIME_BY_FORMAT[fmt], width, height)


def _magic(data: bytes) -> str:
    """A short, safe description of unknown leading bytes for error messages."""
    return "starts with " + data[:12].hex()
