"""SVG at the export: documents built to crash, hang or exhaust the rasteriser.

Each goes through ``images.decode`` as the WebDataset export calls it (rasterised
at a shortest side of 256 pixels). A hostile document must end in bad_svg
(refused by the parser before rendering), render_crashed or render_timeout (the
sandbox caught it) or bad_image, and never take the calling process down; honest
ones must render at the size asked. Bounds follow the sandbox's: 15 s of wall
clock per render, 1 GiB of address space.
"""

# Case tables: one case a line reads better than wrapped calls.
# ruff: noqa: E501

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

from PIL import Image

from tasks.export import images
from tests.data.hostile.case import Case, Env, refused
from tests.data.hostile.images import png
from tests.data.hostile.ingesting import untouched

HOSTILE = refused("bad_svg", "render_crashed", "render_timeout", "bad_image")
SVG = "image/svg+xml"
NS = 'xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink"'


def doc(body: str, attrs: str = 'width="100" height="100"', prolog: str = "") -> bytes:
    return f"{prolog}<svg {NS} {attrs}>{body}</svg>".encode()


LOOT = doc(
    "<style>.base { fill: white; font-family: serif; font-size: 14px; }</style>"
    '<rect width="100%" height="100%" fill="black" />'
    + "".join(f'<text x="10" y="{20 * (i + 1)}" class="base">Item {i}</text>' for i in range(8)),
    'preserveAspectRatio="xMinYMin meet" viewBox="0 0 350 350"',
)


def _nest(tag: str, depth: int, inner: str = '<rect width="1" height="1"/>') -> bytes:
    return doc(f"<{tag}>" * depth + inner + f"</{tag}>" * depth)


def _clip_chain(count: int) -> bytes:
    defs = "".join(
        f'<clipPath id="c{i}" clip-path="url(#c{i + 1})"><rect width="90" height="90"/></clipPath>'
        for i in range(count)
    )
    return doc(f'<defs>{defs}<clipPath id="c{count}"><rect width="9" height="9"/></clipPath></defs>'
               '<rect width="100" height="100" clip-path="url(#c0)"/>')  # fmt: skip


def _laughs(levels: int, fan: int) -> bytes:
    ents = '<!ENTITY e0 "lol">' + "".join(
        f'<!ENTITY e{i} "{f"&e{i - 1};" * fan}">' for i in range(1, levels)
    )
    return doc(f"<text>&e{levels - 1};</text>", prolog=f"<!DOCTYPE svg [{ents}]>")


def _entity_refs(count: int) -> bytes:
    prolog = f'<!DOCTYPE svg [<!ENTITY big "{"x" * 4000}">]>'
    return doc(f"<text y='20'>{'&big;' * count}</text>", prolog=prolog)


def _filter(primitive: str) -> bytes:
    return doc(
        f'<filter id="f">{primitive}</filter><rect width="100" height="100" filter="url(#f)"/>'
    )


def _filter_chain(count: int) -> bytes:
    filters = "".join(
        f'<filter id="f{i}"><feGaussianBlur stdDeviation="2"/></filter>' for i in range(count)
    )
    groups = "".join(f'<g filter="url(#f{i})">' for i in range(count))
    return doc(filters + groups + '<rect width="100" height="100"/>' + "</g>" * count)


def _use_bomb(levels: int, fan: int) -> bytes:
    defs = '<g id="u0"><rect width="1" height="1"/></g>' + "".join(
        f'<g id="u{i}">' + f'<use xlink:href="#u{i - 1}"/>' * fan + "</g>" for i in range(1, levels)
    )
    return doc(f'<defs>{defs}</defs><use xlink:href="#u{levels - 1}"/>')


def _path(segments: int) -> bytes:
    d = "M0 0" + " L1 1 L2 0" * (segments // 2)
    return doc(f'<path d="{d}" stroke="black"/>')


def _embedded(raster: bytes, mime: str = "image/png") -> bytes:
    data = base64.b64encode(raster).decode()
    return doc(f'<image width="100" height="100" href="data:{mime};base64,{data}"/>')


def _href(env: Env, form: str) -> bytes:
    url = form.replace("SENTINEL", f"http://127.0.0.1:{env.sentinel.port}/x.png")
    return doc(f'<image width="100" height="100" xlink:href="{url}"/>')


# name -> document (bytes), or a function of the environment for ones aiming at the sentinel.
HOSTILE_DOCS: dict[str, Callable[[], bytes]] = {
    "300 nested g": lambda: _nest("g", 300),
    "10,000 nested g": lambda: _nest("g", 10_000),
    "300 nested svg": lambda: _nest("svg", 300),
    "300 nested a": lambda: _nest("a", 300),
    "300 chained clip-paths": lambda: _clip_chain(300),
    "canvas 1 x 1e8": lambda: doc("<rect width='1' height='1'/>", 'width="1" height="100000000"'),
    "viewBox 1 x 1e8": lambda: doc("<rect/>", 'viewBox="0 0 1 100000000"'),
    "width 1e400": lambda: doc("<rect/>", 'width="1e400" height="1"'),
    "negative size": lambda: doc("<rect/>", 'width="-100" height="-100"'),
    "aspect 100:1": lambda: doc("<rect/>", 'width="10000" height="100"'),
    "billion laughs": lambda: _laughs(10, 10),
    "one entity referenced 3,000 times": lambda: _entity_refs(3000),
    "external entity": lambda: doc("<text>&x;</text>",
                                   prolog='<!DOCTYPE svg [<!ENTITY x SYSTEM "file:///etc/passwd">]>'),
    "parameter entity": lambda: doc("", prolog='<!DOCTYPE svg [<!ENTITY % p SYSTEM "file:///etc/passwd"> %p;]>'),
    "blur stdDeviation 1e6": lambda: _filter('<feGaussianBlur stdDeviation="1000000"/>'),
    "turbulence of 1e6 octaves": lambda: _filter('<feTurbulence baseFrequency="0.9" numOctaves="1000000"/>'),
    "morphology radius 1e6": lambda: _filter('<feMorphology radius="1000000"/>'),
    "convolve matrix order 30": lambda: _filter('<feConvolveMatrix order="30" kernelMatrix="' + "1 " * 900 + '"/>'),
    "filter region 1e6 boxes": lambda: doc('<filter id="f" x="-500000" y="-500000" width="1000000" height="1000000"><feFlood/></filter><rect width="9" height="9" filter="url(#f)"/>'),
    "1,000 chained filters": lambda: _filter_chain(1000),
    "filter of 10,000 primitives": lambda: _filter('<feOffset dx="1"/>' * 10_000),
    "100,000 glyphs": lambda: doc(f"<text y='50'>{'W' * 100_000}</text>"),
    "1,000,000 path segments": lambda: _path(1_000_000),
    "200,000 rects": lambda: doc('<rect width="1" height="1"/>' * 200_000),
    "use bomb 10 x 10": lambda: _use_bomb(10, 10),
    "use of itself": lambda: doc('<g id="a"><use xlink:href="#a"/></g>'),
    "pattern of itself": lambda: doc('<pattern id="p" width="1" height="1"><rect width="1" height="1" fill="url(#p)"/></pattern><rect width="9" height="9" fill="url(#p)"/>'),
    "marker of itself": lambda: doc('<marker id="m"><path d="M0 0L1 1" marker-start="url(#m)"/></marker><path d="M0 0L9 9" marker-start="url(#m)"/>'),
    "mask chain of 300": lambda: doc("".join(f'<mask id="m{i}" mask="url(#m{i + 1})"><rect width="9" height="9" fill="white"/></mask>' for i in range(300)) + '<rect width="9" height="9" mask="url(#m0)"/>'),
    "gradient of 100,000 stops": lambda: doc('<linearGradient id="g">' + '<stop offset="0.5"/>' * 100_000 + '</linearGradient><rect width="9" height="9" fill="url(#g)"/>'),
    "image href file:": lambda: doc('<image width="9" height="9" href="file:///etc/passwd"/>'),
    "image href absolute path": lambda: doc('<image width="9" height="9" href="/etc/passwd"/>'),
    "image href with entity-encoded scheme": lambda: doc('<image width="9" height="9" href="&#102;ile:///etc/passwd"/>'),
    "image href with leading newline": lambda: doc('<image width="9" height="9" href="&#10;file:///etc/passwd"/>'),
    "css import": lambda: doc('<style>@import url("file:///etc/passwd");</style><rect/>'),
    "css url in a style attribute": lambda: doc('<rect width="9" height="9" style="fill: url(file:///etc/x#a)"/>'),
    "xml-stylesheet instruction": lambda: doc("<rect/>", prolog='<?xml-stylesheet href="file:///etc/passwd"?>'),
    "xinclude": lambda: doc('<xi:include xmlns:xi="http://www.w3.org/2001/XInclude" href="file:///etc/passwd" parse="text"/>'),
    "script": lambda: doc("<script>while(1){}</script><rect/>"),
    "foreignObject": lambda: doc('<foreignObject width="9" height="9"><div xmlns="http://www.w3.org/1999/xhtml">x</div></foreignObject>'),
    "embedded png bomb": lambda: _embedded(png(100_000, 100_000, idat=b"x\x9c\x03\x00\x00\x00\x00\x01")),
    "embedded svg bomb": lambda: _embedded(_nest("g", 300), "image/svg+xml"),
    "invalid utf-8": lambda: doc("<text>\xff</text>").replace(b"\xc3\xbf", b"\xff"),
    "utf-16": lambda: doc("<rect/>").decode().encode("utf-16"),
    "unclosed tags": lambda: b"<svg " + NS.encode() + b"><g><g><rect>",
    "10,000 attributes": lambda: doc("<rect " + " ".join(f'a{i}="1"' for i in range(10_000)) + "/>"),
    "an attribute of 9 MB": lambda: doc(f'<rect data-x="{"x" * (9 << 20)}"/>'),
}  # fmt: skip
# Odd but harmless once bounded: refused, or rendered at the size asked within the bounds.
ODD_DOCS: dict[str, Callable[[], bytes]] = {
    "canvas 1e6 x 1e6": lambda: doc("<rect/>", 'width="1000000" height="1000000"'),
    "viewBox of zeros": lambda: doc("<rect/>", 'viewBox="0 0 0 0"'),
    "viewBox NaN": lambda: doc("<rect/>", 'viewBox="0 0 NaN NaN"'),
    "font-size 1e9": lambda: doc('<text font-size="1000000000" y="9">W</text>'),
    "stroke-width 1e9 dashed": lambda: doc('<path d="M0 0L100 100" stroke="black" stroke-width="1e9" stroke-dasharray="0.0001"/>'),
    "dash array of 0.0001 on a long path": lambda: doc('<path d="M0 0L100000 100000" stroke="black" stroke-dasharray="0.0001"/>'),
    "transform scale 1e30": lambda: doc('<rect width="9" height="9" transform="scale(1e30)"/>'),
}  # fmt: skip
BENIGN: dict[str, Callable[[], bytes]] = {
    # Illustrator's and Inkscape's header: an external DTD that is never read.
    "doctype with a public id": lambda: doc(
        "<rect width='9' height='9'/>",
        prolog='<!DOCTYPE svg PUBLIC "-//W3C//DTD SVG 1.1//EN" "http://www.w3.org/Graphics/SVG/1.1/DTD/svg11.dtd">',
    ),
    "loot-like text": lambda: LOOT,
    "byte order mark and declaration": lambda: (
        b"\xef\xbb\xbf<?xml version='1.0'?>" + doc("<rect/>")
    ),
    "onload attribute": lambda: doc('<rect width="9" height="9" onload="alert(1)"/>'),
    "a 1x1 canvas": lambda: doc('<rect width="1" height="1"/>', 'width="1" height="1"'),
    "a blur of 2": lambda: _filter('<feGaussianBlur stdDeviation="2"/>'),
}


def _decode(env: Env, data: bytes) -> Image.Image:
    with untouched(env):
        return images.decode(data, SVG, svg_shortest_side=256)


def _aimed(form: str) -> Callable[[Env, Any], Image.Image]:
    def run(env: Env, data: Any) -> Image.Image:
        with untouched(env):
            return images.decode(_href(env, form), SVG, svg_shortest_side=256)

    return run


def _rendered(image: Image.Image) -> str | None:
    return None if min(image.size) == 256 else f"size {image.size}, shortest side not 256"


def _sequence(env: Env, data: list[bytes]) -> list[str]:
    out = []
    for item in data:
        try:
            out.append(str(min(images.decode(item, SVG, svg_shortest_side=256).size)))
        except Exception as e:
            out.append(getattr(e, "kind", type(e).__name__))
    return out


def _batch_check(result: list[str]) -> str | None:
    good = result[0::2]
    bad = result[1::2]
    if good != ["256"] * len(good) or any(k not in HOSTILE for k in bad):
        return f"outcomes {result}"
    return None


def cases() -> list[Case]:
    # The first render starts the sandbox; a benign document pays for it.
    found = [Case(f"benign: {name}", _decode, check=_rendered, make=make, time_s=20.0,
                  memory_mb=1100) for name, make in BENIGN.items()]  # fmt: skip
    found += [Case(f"hostile: {name}", _decode, HOSTILE, make=make, time_s=16.0, memory_mb=1100)
              for name, make in HOSTILE_DOCS.items()]  # fmt: skip
    found += [Case(f"odd: {name}", _decode, HOSTILE, check=_rendered, make=make, time_s=16.0,
                   memory_mb=1100) for name, make in ODD_DOCS.items()]  # fmt: skip
    for form in ("SENTINEL", " SENTINEL", "\nSENTINEL", "//127.0.0.1:1/x.png"):
        found.append(Case(f"hostile: image href {form[:20]!r}", _aimed(form), HOSTILE,
                          time_s=16.0))  # fmt: skip
    found.append(
        Case("batch: crashers between honest documents", _sequence, check=_batch_check,
             make=lambda: [LOOT, _nest("g", 300), LOOT, doc("<rect/>", 'width="1" height="100000000"'),
                           LOOT, _clip_chain(300), LOOT], time_s=40.0, memory_mb=1100)
    )  # fmt: skip
    return found
