"""Raster images: truncated, corrupt, bombs, lying headers and formats that must not open.

Each input goes through both places that read image bytes: ingest's check
(``inspect_image``: it must refuse what cannot be decoded) and the export's
decoder (``images.decode``: a refusal, never a crash, within the memory bound).
Inputs are drawn with Pillow or written chunk by chunk (PNG) at run time.
"""

from __future__ import annotations

import io
import random
import struct
import zlib
from collections.abc import Callable
from typing import Any

from PIL import Image

from tasks.core.content import ImageInfo, inspect_image
from tasks.export import images
from tests.data.hostile.case import Case, Env, refused
from tests.data.hostile.ingesting import RowsCheck, ingest_tokens, settings
from tests.data.hostile.servers import response

BAD = refused("bad_image")
Make = Callable[[], bytes]


def drawn(fmt: str, size: tuple[int, int] = (64, 64), mode: str = "RGB", **save: Any) -> bytes:
    """A noisy image (noise keeps compressed data long, so cuts land inside it)."""
    rng = random.Random(7)
    per_pixel = len(Image.new(mode, (1, 1)).tobytes())
    pixels = rng.randbytes(size[0] * size[1] * per_pixel)
    out = io.BytesIO()
    Image.frombytes(mode, size, pixels).save(out, format=fmt, **save)
    return out.getvalue()


def chunk(kind: bytes, data: bytes) -> bytes:
    """A PNG chunk with a correct CRC."""
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png(width: int, height: int, idat: bytes | None = None, extra: bytes = b"") -> bytes:
    """A greyscale PNG of zeros (or the IDAT given), written chunk by chunk."""
    if idat is None:
        packer = zlib.compressobj(9)
        row = bytes(width + 1)
        idat = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + extra + chunk(b"IDAT", idat)
        + chunk(b"IEND", b"")
    )  # fmt: skip


def _const(data: bytes) -> Make:
    return lambda: data


def _cut(make: Make, fraction: float) -> Make:
    return lambda: (data := make())[: int(len(data) * fraction)]


def _text_bomb(kind: bytes) -> bytes:
    inflated = zlib.compress(bytes(64 << 20), 9)
    if kind == b"zTXt":
        return png(8, 8, extra=chunk(b"zTXt", b"k\x00\x00" + inflated))
    return png(8, 8, extra=chunk(b"iCCP", b"p\x00\x00" + inflated))


def _jpeg_dims(width: int, height: int) -> bytes:
    """A real JPEG with its frame header (SOF0) rewritten to claim another size."""
    data = bytearray(drawn("JPEG", (16, 16)))
    sof = data.find(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def _gif_screen(width: int, height: int) -> bytes:
    data = bytearray(drawn("GIF", (4, 4), mode="L"))
    data[6:10] = struct.pack("<HH", width, height)
    return bytes(data)


def _bmp_dims(width: int, height: int) -> bytes:
    data = bytearray(drawn("BMP", (4, 4)))
    data[18:26] = struct.pack("<ii", width, height)
    return bytes(data)


def _webp_riff_lie() -> bytes:
    data = bytearray(drawn("WEBP", (16, 16)))
    data[4:8] = struct.pack("<I", 0xFFFFFFF0)
    return bytes(data)


def _garbage_idat() -> bytes:
    return png(64, 64, idat=random.Random(3).randbytes(4000))


def _bad_crc() -> bytes:
    data = bytearray(png(8, 8))
    data[29] ^= 0xFF  # the IHDR CRC
    return bytes(data)


def _frames(fmt: str, count: int) -> bytes:
    frames = [Image.new("L", (2, 2), i % 256) for i in range(count)]
    out = io.BytesIO()
    frames[0].save(out, format=fmt, save_all=True, append_images=frames[1:])
    return out.getvalue()


FOREIGN = {
    "tiff": b"II*\x00\x08\x00\x00\x00" + bytes(64),
    "ico": b"\x00\x00\x01\x00\x01\x00\x10\x10" + bytes(64),
    "psd": b"8BPS\x00\x01" + bytes(64),
    "eps": b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n",
    "pdf": b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF",
    "jpeg2000": b"\x00\x00\x00\x0cjP  \r\n\x87\n" + bytes(64),
    "avif": b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1" + bytes(64),
    "pcx": b"\x0a\x05\x01\x08" + bytes(124),
    "html": b"<html><img src=x onerror=alert(1)></html>",
    "zip": b"PK\x03\x04" + bytes(64),
}

# Inputs both stages must refuse.
BAD_INPUTS: dict[str, Make] = {
    "empty": lambda: b"",
    "one byte": lambda: b"\x89",
    "random kilobyte": lambda: random.Random(1).randbytes(1024),
    "png signature only": lambda: b"\x89PNG\r\n\x1a\n",
    "png with garbage IDAT and valid CRCs": _garbage_idat,
    "png with a bad IHDR CRC": _bad_crc,
    "png 100000 x 100000": lambda: png(100_000, 100_000, idat=zlib.compress(b"\0" * 1000)),
    "png 1 x 100000000": lambda: png(1, 100_000_000, idat=zlib.compress(b"\0" * 1000)),
    "png with IHDR only": lambda: png(8, 8)[:33],
    "jpeg claiming 65535 x 65535": lambda: _jpeg_dims(65535, 65535),
    "jpeg claiming 0 x 0": lambda: _jpeg_dims(0, 0),
    "gif screen 65535 x 65535": lambda: _gif_screen(65535, 65535),
    "bmp 2**31-1 high": lambda: _bmp_dims(4, 2**31 - 1),
    "bmp negative width": lambda: _bmp_dims(-4, 4),
    "bmp 0 x 0": lambda: _bmp_dims(0, 0),
    "webp riff size lie": _webp_riff_lie,
    **{f"{name} magic": _const(data) for name, data in FOREIGN.items()},
}


def _whole(fmt: str) -> Make:
    return lambda: drawn(fmt, mode="L" if fmt == "GIF" else "RGB")


for _fmt in ("PNG", "JPEG", "GIF", "WEBP", "BMP"):
    BAD_INPUTS[f"{_fmt.lower()} cut at 60%"] = _cut(_whole(_fmt), 0.6)
    BAD_INPUTS[f"{_fmt.lower()} cut at 95%"] = _cut(_whole(_fmt), 0.95)

# Inputs that are fine images, some odd: both stages must take them at this size.
GOOD_INPUTS: dict[str, tuple[Make, tuple[int, int]]] = {
    "png rgb": (lambda: drawn("PNG"), (64, 64)),
    "png 16-bit grey": (lambda: drawn("PNG", mode="I;16"), (64, 64)),
    "jpeg cmyk": (lambda: drawn("JPEG", mode="CMYK"), (64, 64)),
    "jpeg progressive": (lambda: drawn("JPEG", progressive=True), (64, 64)),
    "gif of 3000 frames": (lambda: _frames("GIF", 3000), (2, 2)),
    "apng of 3000 frames": (lambda: _frames("PNG", 3000), (2, 2)),
    "webp lossless": (lambda: drawn("WEBP", lossless=True), (64, 64)),
    "bmp": (lambda: drawn("BMP"), (64, 64)),
    "png with a zip appended": (lambda: drawn("PNG") + b"PK\x03\x04" + bytes(100), (64, 64)),
    "png with data after IEND": (lambda: drawn("PNG") + chunk(b"IDAT", b"junk"), (64, 64)),
}
# Bombs inside metadata chunks: refused, or ignored within the memory bound.
SIDE_BOMBS: dict[str, Make] = {
    "png zTXt inflating to 64 MiB": lambda: _text_bomb(b"zTXt"),
    "png iCCP inflating to 64 MiB": lambda: _text_bomb(b"iCCP"),
    "png with 20000 tEXt chunks": lambda: png(8, 8, extra=chunk(b"tEXt", b"k\x00v" * 10) * 20000),
}


def _big() -> bytes:
    return png(9400, 9400)


def _ingest(env: Env, data: bytes) -> ImageInfo:
    return inspect_image(data)


def _export(env: Env, data: bytes) -> Image.Image:
    return images.decode(data, "image/png")


def _size_is(size: tuple[int, int]) -> Callable[[Any], str | None]:
    def check(result: Any) -> str | None:
        got = (result.width, result.height) if isinstance(result, ImageInfo) else result.size
        return None if got == size else f"size {got}, not {size}"

    return check


def _any_ok(result: Any) -> str | None:
    return None


def _export_sequence(env: Env, data: list[bytes]) -> list[str]:
    """An export shard's loop: each image decoded in turn; what became of each."""
    out = []
    for item in data:
        try:
            out.append("x".join(map(str, images.decode(item, "image/png").size)))
        except Exception as e:
            out.append(getattr(e, "kind", type(e).__name__))
    return out


def _sequence() -> list[bytes]:
    return [drawn("PNG"), png(100_000, 100_000, idat=zlib.compress(b"\0" * 1000)), drawn("GIF"),
            _cut(lambda: drawn("JPEG"), 0.6)(), drawn("WEBP")]  # fmt: skip


def _ingest_batch(env: Env, data: list[bytes]) -> Any:
    uris = {}
    for i, body in enumerate(data):
        url = env.origin.serve(f"/images/batch/{i}", response(200, body))
        uris[i] = 'data:application/json,{"image":"' + url + '"}'
    return ingest_tokens(uris, settings([env.origin.host_port]))


def cases() -> list[Case]:
    found: list[Case] = []
    for name, make in BAD_INPUTS.items():
        found.append(Case(f"ingest: {name}", _ingest, BAD, make=make))
        found.append(Case(f"export: {name}", _export, BAD, make=make, memory_mb=256))
    for name, (make, size) in GOOD_INPUTS.items():
        found.append(Case(f"ingest: {name}", _ingest, check=_size_is(size), make=make))
        found.append(Case(f"export: {name}", _export, check=_size_is(size), make=make))
    for name, make in SIDE_BOMBS.items():
        found.append(Case(f"ingest: {name}", _ingest, BAD, check=_any_ok, make=make, memory_mb=64))
        found.append(Case(f"export: {name}", _export, BAD, check=_any_ok, make=make, memory_mb=64))
    # Under Pillow's bomb limit (89.5 MP): the export's own pixel budget must refuse it.
    big = _big
    found.append(Case("ingest: png of 88 megapixels", _ingest, BAD, check=_any_ok, make=big,
                      time_s=5.0, memory_mb=256))  # fmt: skip
    found.append(Case("export: png of 88 megapixels", _export, BAD, make=big, memory_mb=256))
    found.append(
        Case("export: to_png of a gif", lambda env, data: images.to_png(data, "image/gif"),
             check=lambda r: None if r.startswith(b"\x89PNG") else "not a PNG",
             make=lambda: drawn("GIF", mode="L"))
    )  # fmt: skip
    found.append(
        Case("export: to_png of a png bomb", lambda env, data: images.to_png(data, "image/png"),
             BAD, make=lambda: png(100_000, 100_000, idat=zlib.compress(b"\0" * 1000)))
    )  # fmt: skip
    found.append(
        Case("export batch: bombs and cuts among good images", _export_sequence,
             check=lambda r: None if r == ["64x64", "bad_image", "64x64", "bad_image", "64x64"]
             else f"outcomes {r}", make=_sequence, memory_mb=256)
    )  # fmt: skip
    found.append(
        Case("ingest batch: a cut jpeg and a bomb among good images", _ingest_batch,
             check=RowsCheck({0: "ok", 1: "bad_image", 2: "ok", 3: "bad_image", 4: "ok"}),
             make=_sequence, time_s=3.0)
    )  # fmt: skip
    return found
