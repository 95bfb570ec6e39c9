"""The SVG check: hostile documents are refused with bad_svg, real token art passes."""

from __future__ import annotations

import base64
import io
import json
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image

from infra.demo_chain import read_loot_uris
from tasks.core import svg_check
from tasks.core.errors import ItemError
from tasks.core.svg_check import check_svg

LOOT_ARCHIVE = Path(__file__).parents[2] / "infra" / "demo" / "loot.tar.gz"
NS = 'xmlns="http://www.w3.org/2000/svg"'
XLINK = 'xmlns:xlink="http://www.w3.org/1999/xlink"'


def doc(body: str, root: str = 'viewBox="0 0 350 350"', defs: str = "") -> bytes:
    return f"<svg {NS} {XLINK} {root}><defs>{defs}</defs>{body}</svg>".encode()


def png_uri(width: int, height: int) -> str:
    out = io.BytesIO()
    Image.new("L", (width, height)).save(out, format="PNG")
    return "data:image/png;base64," + base64.b64encode(out.getvalue()).decode()


def png_header_uri(width: int, height: int) -> str:
    """A PNG that claims a size in its header and has no pixels: what a bomb looks like."""
    ihdr = b"IHDR" + struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    chunk = struct.pack(">I", 13) + ihdr + struct.pack(">I", zlib.crc32(ihdr))
    return "data:image/png;base64," + base64.b64encode(b"\x89PNG\r\n\x1a\n" + chunk).decode()


def filtered(primitive: str, region: str = "") -> bytes:
    return doc(
        '<rect width="9" height="9" filter="url(#f)"/>',
        defs=f'<filter id="f" {region}>{primitive}</filter>',
    )


def nested_uses(levels: int) -> bytes:
    """Each group draws the one before twice: 2**levels rects from a few hundred bytes."""
    groups = "".join(
        f'<g id="u{i}"><use href="#u{i - 1}"/><use href="#u{i - 1}" x="1"/></g>'
        for i in range(1, levels)
    )
    return doc(
        f'<use href="#u{levels - 1}"/>', defs='<rect id="u0" width="1" height="1"/>' + groups
    )


def clip_chain(length: int) -> bytes:
    clips = '<clipPath id="c0"><rect width="9" height="9"/></clipPath>' + "".join(
        f'<clipPath id="c{i}" clip-path="url(#c{i - 1})"><rect width="9" height="9"/></clipPath>'
        for i in range(1, length)
    )
    return doc(f'<rect width="9" height="9" clip-path="url(#c{length - 1})"/>', defs=clips)


HOSTILE = {
    "internal DTD subset": (
        b'<!DOCTYPE svg PUBLIC "-//W3C//DTD SVG 1.1//EN" "x.dtd" [<!ATTLIST svg a CDATA "b">]>'
        b"<svg " + NS.encode() + b"/>",
        "DTD",
    ),
    "entity of an external DTD": (
        b'<!DOCTYPE svg PUBLIC "-//W3C//DTD SVG 1.1//EN" "x.dtd"><svg '
        + NS.encode()
        + b"><text>&nbsp;</text></svg>",
        "entity",
    ),
    "entity bomb": (
        b'<!DOCTYPE svg [<!ENTITY a "'
        + b"A" * 1000
        + b'">]><svg '
        + NS.encode()
        + b"><text>"
        + b"&a;" * 3000
        + b"</text></svg>",
        "DTD",
    ),
    "undeclared entity": (f"<svg {NS}><text>&lol;</text></svg>".encode(), "well-formed"),
    "stylesheet instruction": (
        f'<?xml version="1.0"?><?xml-stylesheet href="http://x/a.css"?><svg {NS}/>'.encode(),
        "processing instruction",
    ),
    "not svg root": (b'<html xmlns="http://www.w3.org/1999/xhtml"/>', "root element"),
    "no namespace": (b"<svg/>", "root element"),
    "not xml": (b"<svg " + NS.encode() + b"><g></svg>", "well-formed"),
    "not utf-8": ("<svg><text>\u00e9</text></svg>".encode("latin-1"), "UTF-8"),
    "too many bytes": (doc(" " * svg_check.MAX_SVG_BYTES), "bytes"),
    "http href": (
        doc('<image href="http://169.254.169.254/x.png" width="9" height="9"/>'),
        "href",
    ),
    "file xlink href": (
        doc('<image xlink:href="file:///etc/passwd" width="9" height="9"/>'),
        "href",
    ),
    "relative href": (doc('<use href="other.svg#a"/>'), "href"),
    "other prefix for xlink": (
        b"<svg "
        + NS.encode()
        + b' xmlns:q="http://www.w3.org/1999/xlink"><image q:href="/etc/x"/></svg>',
        "href",
    ),
    "nested svg data uri": (doc('<image href="data:image/svg+xml;base64,PHN2Zy8+"/>'), "href"),
    "embedded bomb": (doc(f'<image href="{png_uri(5000, 4000)}"/>'), "pixel limit"),
    "embedded header bomb": (
        doc(f'<image href="{png_header_uri(100_000, 100_000)}"/>'),
        "embedded",
    ),
    "embedded garbage": (doc('<image href="data:image/png;base64,AAAA"/>'), "embedded image"),
    "url to file": (doc('<rect width="9" height="9" fill="url(file:///etc/passwd)"/>'), "url()"),
    "url in style attribute": (doc("<rect style=\"fill:url( 'https://x/y#p' )\"/>"), "url()"),
    "css escape": (doc('<rect style="fill:u\\72l(http://x)"/>'), "escape"),
    "import": (doc('<style>@import "https://x/a.css";</style>'), "@import"),
    "font face": (doc("<style>@font-face{font-family:x;src:url(#f)}</style>"), "@font-face"),
    "style url outside": (doc("<style>rect{fill:url(http://x/p.png)}</style>"), "url()"),
    "style references a mask": (
        doc('<rect width="9" height="9"/>', defs='<mask id="m"/><style>rect{mask:url(#m)}</style>'),
        "gradient",
    ),
    "script": (doc("<script>alert(1)</script>"), "<script>"),
    "foreign object": (doc("<foreignObject><p/></foreignObject>"), "<foreignObject>"),
    "300 nested groups": (doc("<g>" * 300 + "</g>" * 300), "nests"),
    "deep nested svg": (doc("<svg>" * 100 + "</svg>" * 100), "nests"),
    "nesting through uses": (
        doc(
            '<use href="#d"/>',
            defs='<g id="a">'
            + "<g>" * 40
            + "</g>" * 40
            + '</g><g id="d">'
            + "<g>" * 40
            + '<use href="#a"/>'
            + "</g>" * 40
            + "</g>",
        ),
        "nesting",
    ),
    "clip-path chain": (clip_chain(50), "chain"),
    "reference cycle": (
        doc(
            '<use href="#a"/>', defs='<g id="a"><use href="#b"/></g><g id="b"><use href="#a"/></g>'
        ),
        "cycle",
    ),
    "use bomb": (nested_uses(20), "elements"),
    "too many elements": (doc("<g/>" * (svg_check.MAX_ELEMENTS + 1)), "elements"),
    "too many attributes": (
        doc("<g " + " ".join(f'a{i}="1"' for i in range(70)) + "/>"),
        "attributes",
    ),
    "long attribute": (doc(f'<g class="{"a" * 70_000}"/>'), "characters"),
    "100,000 glyphs": (doc("<text>" + "W" * 100_000 + "</text>"), "text"),
    "text multiplied by uses": (
        doc(
            "".join('<use href="#t"/>' for _ in range(20)), defs=f'<text id="t">{"W" * 900}</text>'
        ),
        "text",
    ),
    "huge style sheet": (doc("<style>" + "a{}" * 30_000 + "</style>"), "style"),
    "million-segment path": (doc('<path d="M0 0' + " L1 1" * 250_000 + '"/>'), "path data"),
    "polyline points": (doc('<polyline points="' + "1,1 " * 250_000 + '"/>'), "path data"),
    "big blur": (filtered('<feGaussianBlur stdDeviation="100000"/>'), "stdDeviation"),
    "drop shadow": (filtered('<feDropShadow stdDeviation="1 1e9"/>'), "stdDeviation"),
    "turbulence octaves": (
        filtered('<feTurbulence baseFrequency="0.05" numOctaves="100"/>'),
        "numOctaves",
    ),
    "morphology radius": (filtered('<feMorphology operator="dilate" radius="100"/>'), "radius"),
    "convolve order": (filtered('<feConvolveMatrix order="30" kernelMatrix="1"/>'), "order"),
    "nan parameter": (filtered('<feGaussianBlur stdDeviation="1e999"/>'), "stdDeviation"),
    "long filter chain": (filtered('<feGaussianBlur stdDeviation="5"/>' * 32), "primitives"),
    "many filters": (doc("".join(f'<filter id="f{i}"/>' for i in range(40))), "filters"),
    "filter run many times": (
        doc(
            '<rect width="9" height="9" filter="url(#f)"/>' * 20,
            defs='<filter id="f">' + "<feOffset/>" * 4 + "</filter>",
        ),
        "filter primitive runs",
    ),
    "huge filter region": (
        filtered('<feGaussianBlur stdDeviation="5"/>', 'x="-1000%" width="2100%"'),
        "region",
    ),
    "huge user-space filter region": (
        filtered("<feFlood/>", 'filterUnits="userSpaceOnUse" width="100000"'),
        "region",
    ),
    "primitive units": (
        filtered("<feFlood/>", 'primitiveUnits="objectBoundingBox"'),
        "primitiveUnits",
    ),
    "tiny dashes": (doc('<path d="M0 0L350 350" stroke="red" stroke-dasharray="0.0001"/>'), "dash"),
    "tiny dashes in style": (doc('<path style="stroke-dasharray: 1e-5 1e-5"/>'), "dash"),
    "tiny dashes in a sheet": (doc("<style>path{stroke-dasharray:.00001}</style>"), "dash"),
    "canvas 1x1e8": (doc("", root='width="1" height="100000000"'), "height"),
    "canvas 1x1e6 aspect": (doc("", root='width="1" height="1000000"'), "aspect"),
    "viewBox sliver": (doc("", root='viewBox="0 0 1e-9 5"'), "aspect"),
    "zero width": (doc("", root='width="0" height="10"'), "width"),
    "negative height": (doc("", root='width="10" height="-10mm"'), "height"),
    "infinite width": (doc("", root='width="1e999" viewBox="0 0 1 1"'), "width"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_svg_is_refused_with_a_reason(name: str) -> None:
    data, reason = HOSTILE[name]
    with pytest.raises(ItemError) as refused:
        check_svg(data)
    assert refused.value.kind == "bad_svg"
    assert reason in refused.value.message


def _loot_svgs() -> list[bytes]:
    found = []
    for uri in read_loot_uris(LOOT_ARCHIVE, 1000):
        metadata = json.loads(base64.b64decode(uri.split(",", 1)[1]))
        found.append(base64.b64decode(metadata["image"].split(",", 1)[1]))
    return found


def test_every_loot_bag_passes() -> None:
    svgs = _loot_svgs()
    assert len(svgs) == 1000
    for data in svgs:
        info = check_svg(data)
        assert (info.width, info.height) == (350, 350)
        assert info.text == data.decode()


def _pixel_art(side: int) -> bytes:
    """Nouns, Blitmap, Chain Runners: a rect per pixel, colours from a style sheet."""
    style = "".join(f".c{i}{{fill:#{i * 40:06x}}}" for i in range(16))
    rects = "".join(
        f'<rect class="c{(x * y) % 16}" x="{x}" y="{y}" width="1" height="1"/>'
        for x in range(side)
        for y in range(side)
    )
    return doc(
        f"<style>{style}</style>{rects}",
        root=f'viewBox="0 0 {side} {side}" shape-rendering="crispEdges"',
    )


GOOD = {
    "nouns 32x32": (_pixel_art(32), (32.0, 32.0)),
    # How Illustrator and Inkscape begin a file: an external DTD that is never read.
    "illustrator doctype": (
        b'<?xml version="1.0"?>\n<!DOCTYPE svg PUBLIC "-//W3C//DTD SVG 1.1//EN" '
        b'"http://www.w3.org/Graphics/SVG/1.1/DTD/svg11.dtd">\n<svg '
        + NS.encode()
        + b' width="20" height="10"><rect width="5" height="5"/></svg>',
        (20.0, 10.0),
    ),
    "on-chain 64x64": (_pixel_art(64), (64.0, 64.0)),
    "generative paths": (
        doc(
            '<rect width="100%" height="100%" fill="url(#bg)"/><g filter="url(#glow)">'
            + "".join(
                f'<path d="M{i} 0 C {i * 3} 90, {i * 2} 200, {350 - i} 350" stroke="#fa0"/>'
                for i in range(300)
            )
            + '</g><use href="#star" x="40"/><use xlink:href="#star" x="80"/>',
            root='width="2400" height="2400" viewBox="0 0 350 350"',
            defs='<linearGradient id="bg"><stop offset="0" stop-color="#000"/>'
            '<stop offset="1" stop-color="#024"/></linearGradient>'
            '<filter id="glow" x="-50%" y="-50%" width="200%" height="200%">'
            '<feGaussianBlur stdDeviation="4" result="b"/><feTurbulence numOctaves="4"/>'
            '<feMerge><feMergeNode in="b"/><feMergeNode in="SourceGraphic"/></feMerge></filter>'
            '<path id="star" d="M10 0 L13 7 L20 7 L14 12 L16 20 L10 15 L4 20 L6 12 L0 7 L7 7Z"/>',
        ),
        (2400.0, 2400.0),
    ),
    "style sheet gradient": (
        doc(
            '<rect class="a" width="9" height="9"/>',
            defs='<style>.a{fill:url("#g")}</style><radialGradient id="g"/>',
        ),
        (350.0, 350.0),
    ),
    "embedded raster with xml declaration": (
        b'<?xml version="1.0" encoding="UTF-8"?>\n<!-- made by hand -->'
        + doc(
            f'<image href="{png_uri(64, 64)}" width="350" height="350"/>',
            root='width="35mm" height="70mm"',
        ),
        (35 * 96 / 25.4, 70 * 96 / 25.4),
    ),
    "built-in entities and character references": (
        doc("<text>Tom &amp; Jerry &lt;3 &#x2665; &#9829;</text>", root='width="200" height="100"'),
        (200.0, 100.0),
    ),
    "dashed and solid strokes": (
        doc('<path d="M0 0L9 9" stroke-dasharray="4 2"/><path d="M0 0" stroke-dasharray="0"/>'),
        (350.0, 350.0),
    ),
    "no size at all": (f"<svg {NS}/>".encode(), (100.0, 100.0)),
    "percent of the viewBox": (doc("", root='width="50%" viewBox="0 0 400 200"'), (200.0, 200.0)),
    "unreadable width is ignored": (doc("", root='width="auto" height="2in"'), (100.0, 192.0)),
}


@pytest.mark.parametrize("name", sorted(GOOD))
def test_real_looking_art_passes_with_its_canvas(name: str) -> None:
    data, size = GOOD[name]
    info = check_svg(data)
    assert (info.width, info.height) == pytest.approx(size)


def test_limits_count_references_not_bytes() -> None:
    """Uses of a group count its elements each time: 200 pass, 300 (under 20 KB) do not."""

    def uses(count: int) -> bytes:
        return doc('<use href="#a"/>' * count, defs='<g id="a">' + "<rect/>" * 400 + "</g>")

    check_svg(uses(200))  # about 80,000 elements as rendered
    with pytest.raises(ItemError, match="elements"):
        check_svg(uses(300))
    check_svg(nested_uses(svg_check.MAX_REF_CHAIN))
    with pytest.raises(ItemError, match="chain"):
        check_svg(nested_uses(svg_check.MAX_REF_CHAIN + 1))


def test_markers_count_once_per_vertex() -> None:
    """A marker of 100 elements on a path of 2,000 vertices draws 200,000 elements."""
    marker = '<marker id="m">' + "<rect/>" * 100 + "</marker>"
    path = "M0 0" + " L1 1" * 2000
    with pytest.raises(ItemError, match="elements"):
        check_svg(doc(f'<path d="{path}" marker-mid="url(#m)"/>', defs=marker))
    with pytest.raises(ItemError, match="elements"):
        check_svg(doc(f'<path d="{path}" style="fill:red; marker-mid:url(#m)"/>', defs=marker))
    check_svg(doc(f'<path d="{path}" fill="url(#m)"/>', defs=marker))  # a paint draws once
    check_svg(doc('<path d="M0 0 L1 1 L2 2" marker-mid="url(#m)"/>', defs=marker))


def test_a_reference_to_the_root_is_a_cycle() -> None:
    with pytest.raises(ItemError, match="cycle"):
        check_svg(f'<svg {NS} id="r"><use href="#r"/></svg>'.encode())
