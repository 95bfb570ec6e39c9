"""Check the bytes a token points at before they are stored.

Metadata must be a JSON object, nested at most json_bounded.MAX_DEPTH deep; images
are identified by their magic bytes, not by what a server or the metadata claims.
Raster images are opened with Pillow restricted to common formats, with its
decompression-bomb limit turned into an error before any pixel is decoded, and
then their first frame is decoded: Pillow's ``verify()`` alone passes a JPEG cut
short and a PNG whose compressed data is garbage. SVG must pass svg_check (no DTD,
entities or outside references, bounded size and cost) and is stored as text;
it is never rendered here.
"""

from __future__ import annotations

import io
import struct
import threading
import warnings
import zlib
from dataclasses import dataclass
from typing import Any

from PIL import Image, ImageFile, UnidentifiedImageError

from tasks.core.errors import ItemError
from tasks.core.json_bounded import loads_bounded
from tasks.core.svg_check import check_svg

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
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Metadata arrives within settings.max_metadata_bytes; this only bounds other callers.
MAX_METADATA_BYTES = 64 * 1024 * 1024
# One decode at a time per process: its memory is one image's pixels (at most
# Pillow's MAX_IMAGE_PIXELS x 4 bytes, about 360 MB), however many threads ingest.
_DECODE_LOCK = threading.Lock()


@dataclass(frozen=True)
class ImageInfo:
    mime: str
    width: int | None
    height: int | None


def parse_metadata(data: bytes) -> dict[str, Any]:
    """Decode token metadata; anything but a JSON object is a bad_json error."""
    try:
        value = loads_bounded(data, max_bytes=MAX_METADATA_BYTES)
    except ValueError as e:  # JSONLimitError, UnicodeDecodeError, JSONDecodeError
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
        # Refused here already, so a collection's bad SVGs show in its ingest summary;
        # the export checks again and renders only in its sandbox.
        check_svg(data)
        return ImageInfo("image/svg+xml", None, None)  # a vector has no pixel size
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        raise RuntimeError("PIL.ImageFile.LOAD_TRUNCATED_IMAGES is set: cut images would pass")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            # open() reads the header only and applies the pixel limit.
            with Image.open(io.BytesIO(data), formats=PILLOW_FORMATS) as im:
                fmt = im.format or ""
                width, height = im.size
                _decode_first_frame(im)
            if fmt == "PNG":
                _check_png_data(data)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ItemError("bad_image", f"image exceeds the pixel limit: {e}") from e
    except UnidentifiedImageError as e:
        raise ItemError("bad_image", f"not a supported image ({_magic(data)})") from e
    except (OSError, SyntaxError, ValueError, struct.error) as e:
        raise ItemError("bad_image", f"corrupt image: {str(e)[:120]}") from e
    return ImageInfo(_MIME_BY_FORMAT[fmt], width, height)


def pixel_count(data: bytes) -> int:
    """Width x height from the header alone (0 for SVG or bytes Pillow cannot identify).

    About 20 us: lets a caller decode small images in place and send big ones to
    a worker thread, whose hand-over costs more than decoding a small image.
    """
    if not data or is_svg(data):
        return 0
    if data.startswith(_PNG_SIGNATURE) and data[12:16] == b"IHDR" and len(data) >= 24:
        width, height = struct.unpack(">II", data[16:24])  # most tokens: no Pillow needed
        return int(width) * int(height)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=PILLOW_FORMATS) as im:
                width, height = im.size
    except Image.DecompressionBombError:
        return 2 * (Image.MAX_IMAGE_PIXELS or 0) + 1
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        return 0
    return int(width * height)


def _decode_first_frame(im: Image.Image) -> None:
    """Decode every byte of the first frame, so truncated or corrupt data raises.

    A JPEG is decoded at 1/8 scale (libjpeg still reads and entropy-decodes the
    whole scan, which is what catches damage) for 1/64 of the memory and less time.
    """
    if im.format in ("JPEG", "MPO"):
        im.draft(im.mode, (max(1, im.width // 8), max(1, im.height // 8)))
    with _DECODE_LOCK:
        im.load()


# Channels per PNG colour type, and the Adam7 passes (x0, y0, dx, dy).
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
_ADAM7 = (
    (0, 0, 8, 8),
    (4, 0, 8, 8),
    (0, 4, 4, 8),
    (2, 0, 4, 4),
    (0, 2, 2, 4),
    (1, 0, 2, 2),
    (0, 1, 1, 2),
)
_INFLATE_STEP = 1 << 20


def _check_png_data(data: bytes) -> None:
    """Raise ValueError unless the IDAT stream inflates to exactly the image's rows.

    Pillow leaves the missing rows black when a well-formed zlib stream ends early,
    and ignores what follows a full one; this inflates once more, counting bytes
    in 1 MiB steps, so memory stays bounded.
    """
    if data[12:16] != b"IHDR":
        raise ValueError("PNG does not start with its IHDR chunk")
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", data[16:29])
    bits = depth * _PNG_CHANNELS.get(colour, 0)
    passes = _ADAM7 if interlace else ((0, 0, 1, 1),)
    expected = 0
    for x0, y0, dx, dy in passes:
        columns, rows = -(-(width - x0) // dx), -(-(height - y0) // dy)
        if columns > 0 and rows > 0:
            expected += rows * (1 + (columns * bits + 7) // 8)
    inflater = zlib.decompressobj()
    produced = 0
    view = memoryview(data)
    pos = 8
    while pos + 8 <= len(data) and not inflater.eof and produced <= expected:
        length, kind = struct.unpack(">I4s", view[pos : pos + 8])
        if kind == b"IDAT":
            pending: bytes | memoryview = view[pos + 8 : pos + 8 + length]
            while pending and produced <= expected:
                produced += len(inflater.decompress(pending, _INFLATE_STEP))
                pending = inflater.unconsumed_tail
        pos += 12 + length
    if produced != expected or not inflater.eof:
        raise ValueError(f"PNG image data inflates to {produced} bytes, not {expected}")


def _magic(data: bytes) -> str:
    """A short, safe description of unknown leading bytes for error messages."""
    return "starts with " + data[:12].hex()
