"""Refuse hostile SVG before any renderer sees it, and read its canvas size.

A token's SVG is attacker-controlled, and a rasteriser given a hostile one
crashes (deep nesting overflows its stack), allocates gigabytes (a huge canvas,
entity expansion) or runs for minutes (blurs over huge regions, morphology,
turbulence, millions of path segments). ``check_svg`` reads the document once
with expat, without recursion, and refuses with ``ItemError("bad_svg")``:

- anything but well-formed UTF-8 XML whose root is an SVG ``<svg>``;
- an internal DTD subset (an external DOCTYPE is never read), any entity other than
  XML's five and character references, any
  processing instruction (the XML declaration is not one);
- outside references: ``href`` other than ``#fragment`` or a ``data:`` PNG,
  JPEG, GIF or WebP; ``url()`` other than ``url(#fragment)``; ``@import`` and
  ``@font-face``; CSS escapes; ``<script>`` and ``<foreignObject>``;
- documents over the limits below, counted as rendered: a ``<use>`` or
  ``url(#id)`` reference renders its target again, so a target's elements, text,
  path data and filter work count once per reference, and nesting continues
  through references.

The canvas (``width``, ``height``, ``viewBox`` of the root, with units, as resvg
reads them) is decided here, so the renderer is told the pixel size to allocate
instead of trusting the document. What passes still renders in a sandbox
(``tasks/export/svg_sandbox.py``): these limits make its limits rarely needed.
"""

from __future__ import annotations

import base64
import binascii
import io
import math
import re
import warnings
from dataclasses import dataclass, field
from xml.parsers import expat

from PIL import Image

from tasks.core.errors import ItemError

SVG_NS = "http://www.w3.org/2000/svg"

# Limits. Loot's bags (600-800 bytes, 10 elements, under 400 characters of text)
# and pixel-art collections (a rect per pixel: 24x24 to 64x64) pass them many
# times over; times are resvg's at 1,024 pixels on one core.
MAX_SVG_BYTES = 8 * 1024 * 1024  # embedded rasters make the largest honest SVGs
MAX_DEPTH = 48  # element nesting; resvg overflows its stack near 300
MAX_RENDER_DEPTH = 64  # nesting continued through references
MAX_REF_CHAIN = 8  # references through references (clip-path chains: 50 took 2 s)
MAX_ELEMENTS = 50_000  # in the document
MAX_RENDERED_ELEMENTS = 100_000  # counted as rendered (100,000 rects: 2.6 s)
MAX_ATTRIBUTES = 64  # on one element
MAX_ATTRIBUTE_CHARS = 65_536  # one value, except d, points and href (the byte cap bounds those)
MAX_TEXT_CHARS = 10_000  # characters in text elements, as rendered (20,000 took 1.3 s)
MAX_STYLE_CHARS = 65_536  # all <style> sheets together
MAX_PATH_NUMBERS = 400_000  # numbers in d and points, as rendered (about 200,000 segments)
MAX_FILTERS = 32  # <filter> elements
MAX_FILTER_PRIMITIVES = 16  # primitives in one filter
MAX_FILTER_RUNS = 64  # primitives as rendered: each reference runs its filter again
MAX_OCTAVES = 6  # feTurbulence numOctaves: about 0.2 s each over a 1,024-pixel canvas
MAX_CONVOLVE_ORDER = 5  # feConvolveMatrix order (order 30 took 11 s)
MAX_MORPHOLOGY_RADIUS = 1 / 256  # of the canvas' longer side (4 pixels at 1,024: under 1 s)
MAX_BLUR = 1.0  # stdDeviation, of the canvas' longer side: a wider blur is a flat colour
MAX_FILTER_REGION = 5.0  # a filter region's width or height, in bounding boxes (or canvases)
MIN_FILTER_OFFSET = -2.0  # a filter region's x or y, likewise (the default is -0.1)
MIN_DASHES = 1 / 10_000  # a stroke-dasharray's sum, of the canvas' longer side
MAX_EMBEDDED_PIXELS = 16_000_000  # one data: raster inside the SVG
MAX_ASPECT = 16.0  # longer side over shorter: further is an attack or a banner
MAX_CANVAS_SIDE = 1_000_000.0  # user units; the renderer is given its pixel size apart

_XLINK_NS = "http://www.w3.org/1999/xlink"
_REFUSED_ELEMENTS = frozenset({"script", "foreignObject"})
_TEXT_ELEMENTS = frozenset({"text"})
_GRADIENTS = frozenset({"linearGradient", "radialGradient"})
_RASTER_DATA = re.compile(r"data:image/(png|jpeg|jpg|gif|webp)\s*;\s*base64\s*,", re.IGNORECASE)
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_LENGTH = re.compile(
    r"\s*([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)(px|in|cm|mm|pt|pc|em|ex|%)?\s*"
)
# CSS pixels per unit at 96 dpi, as resvg reads them (1em = 16px, its default font size).
_UNITS = {None: 1.0, "px": 1.0, "in": 96.0, "cm": 96 / 2.54, "mm": 96 / 25.4, "pt": 4 / 3,
          "pc": 16.0, "em": 16.0, "ex": 8.0}  # fmt: skip
_URL = re.compile(r"url\(", re.IGNORECASE)
_DASHES = re.compile(r"stroke-dasharray\s*:\s*([^;}]*)", re.IGNORECASE)
_CAP = 10**15  # counts saturate here: a reference bomb must not build huge integers

# Indexes into a node's cost vector.
_ELEMENTS, _TEXT, _PATH, _FILTER_RUNS = range(4)


@dataclass(frozen=True)
class SvgInfo:
    """A checked document: its text and canvas size in CSS pixels (user units)."""

    text: str
    width: float
    height: float

    @property
    def aspect(self) -> float:
        return self.width / self.height


def check_svg(data: bytes) -> SvgInfo:
    """The document's text and canvas size, or ItemError("bad_svg") saying why not."""
    if len(data) > MAX_SVG_BYTES:
        raise _refuse(f"SVG is {len(data):,} bytes, over the limit of {MAX_SVG_BYTES:,}")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise _refuse("SVG is not UTF-8") from e
    checker = _Checker()
    parser = expat.ParserCreate(encoding="utf-8", namespace_separator=" ")
    checker.attach(parser)
    try:
        parser.Parse(data, True)
    except expat.ExpatError as e:
        raise _refuse(f"SVG is not well-formed XML: {e}") from e
    width, height = checker.finish()
    return SvgInfo(text, width, height)


def _refuse(message: str) -> ItemError:
    return ItemError("bad_svg", message)


@dataclass
class _Node:
    """The root, or an element with an id (what references point at)."""

    tag: str
    depth: int
    cost: list[int] = field(default_factory=lambda: [0, 0, 0, 0])
    height: int = 0  # deepest element inside, relative to this one
    # (relative depth, target, times): an int target is an id'd element inside, a
    # str a reference, drawn ``times`` times (a marker: once per vertex).
    edges: list[tuple[int, int | str, int]] = field(default_factory=list)


@dataclass
class _Open:
    """An element being parsed."""

    tag: str
    owner: int  # the node its content counts against
    in_text: bool
    primitives: int = 0  # filter primitives so far, for a <filter>


class _Checker:
    """Expat handlers that count as they go and refuse as soon as a limit is passed."""

    def __init__(self) -> None:
        self.nodes: list[_Node] = []
        self.ids: dict[str, list[int]] = {}
        self.open: list[_Open] = []
        self.elements = self.text = self.path = self.style = self.filters = 0
        self.style_refs: set[str] = set()
        self.style_chars: list[str] | None = None  # the <style> being read
        self.canvas: tuple[float, float] | None = None

    def attach(self, parser: expat.XMLParserType) -> None:
        parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
        parser.StartElementHandler = self.start
        parser.EndElementHandler = self.end
        parser.CharacterDataHandler = self.chars
        parser.StartDoctypeDeclHandler = self.doctype
        parser.EntityDeclHandler = self.entity
        parser.UnparsedEntityDeclHandler = self.entity
        parser.ExternalEntityRefHandler = self.entity
        parser.SkippedEntityHandler = self.entity
        parser.ProcessingInstructionHandler = self.instruction

    def doctype(self, _name: str, _system: str | None, _public: str | None, subset: int) -> None:
        # Illustrator and Inkscape write <!DOCTYPE svg PUBLIC ... "svg11.dtd">: an external
        # DTD that nothing here reads (no entity is defined by it, and any entity
        # reference is refused). An internal subset is where entities are declared.
        if subset:
            raise _refuse("SVG has an internal DTD subset (<!DOCTYPE [...]>): not accepted")

    def entity(self, *_: object) -> int:
        raise _refuse("SVG declares or references an entity: not accepted")

    def instruction(self, target: str, _data: str) -> None:
        raise _refuse(f"SVG has a processing instruction <?{target[:40]}?>: not accepted")

    def start(self, name: str, attrs: dict[str, str]) -> None:
        ns, _, tag = name.rpartition(" ")
        depth = len(self.open)
        if depth >= MAX_DEPTH:
            raise _refuse(f"SVG nests elements over {MAX_DEPTH} deep")
        self.elements += 1
        if self.elements > MAX_ELEMENTS:
            raise _refuse(f"SVG has over {MAX_ELEMENTS:,} elements")
        if len(attrs) > MAX_ATTRIBUTES:
            raise _refuse(f"<{tag[:40]}> has over {MAX_ATTRIBUTES} attributes")
        if tag in _REFUSED_ELEMENTS:
            raise _refuse(f"SVG has a <{tag}> element: not accepted")
        if depth == 0:
            if (ns, tag) != (SVG_NS, "svg"):
                raise _refuse("the root element is not an SVG <svg>")
            self.canvas = _canvas(attrs)
            self.nodes.append(_Node("svg", 0))
            if attrs.get("id"):
                self.ids[attrs["id"]] = [0]  # a reference to the root is a cycle
        parent = self.open[-1] if self.open else None
        owner = parent.owner if parent else 0
        element_id = attrs.get("id", "")
        if element_id and depth > 0:
            self.nodes.append(_Node(tag, depth))
            index = len(self.nodes) - 1
            self.ids.setdefault(element_id, []).append(index)
            self.nodes[owner].edges.append((depth - self.nodes[owner].depth, index, 1))
            owner = index
        node = self.nodes[owner]
        relative = depth - node.depth
        node.cost[_ELEMENTS] += 1
        node.height = max(node.height, relative)
        refs: list[tuple[str, bool]] = []
        numbers = sum(self.attribute(node, key, value, refs) for key, value in attrs.items())
        for target, is_marker in refs:
            # A marker is drawn at each vertex: at most one per two numbers of path data.
            node.edges.append((relative + 1, target, numbers // 2 + 1 if is_marker else 1))
        if tag.startswith("fe") and parent is not None and parent.tag == "filter":
            parent.primitives += 1
            if parent.primitives > MAX_FILTER_PRIMITIVES:
                raise _refuse(f"a filter has over {MAX_FILTER_PRIMITIVES} primitives")
            node.cost[_FILTER_RUNS] += 1
            self.primitive(tag, attrs)
        elif tag == "filter":
            self.filters += 1
            if self.filters > MAX_FILTERS:
                raise _refuse(f"SVG has over {MAX_FILTERS} filters")
            self.filter_region(attrs)
        elif tag == "style":
            self.style_chars = []
        in_text = (parent is not None and parent.in_text) or tag in _TEXT_ELEMENTS
        self.open.append(_Open(tag, owner, in_text))

    def attribute(self, node: _Node, key: str, value: str, refs: list[tuple[str, bool]]) -> int:
        """Numbers of path data in the attribute; its references go to ``refs`` (id,
        whether a marker), after checking its length; outside references are refused."""
        ns, _, name = key.rpartition(" ")
        if name in ("d", "points"):
            numbers = 0
            for numbers, _ in enumerate(_NUMBER.finditer(value), start=1):
                if self.path + numbers > MAX_PATH_NUMBERS:  # stop counting: bounded work
                    raise _refuse(f"SVG has over {MAX_PATH_NUMBERS:,} numbers of path data")
            node.cost[_PATH] += numbers
            self.path += numbers
            return numbers
        if name == "href" and ns in ("", _XLINK_NS):
            target = _href_target(value)
            if target:
                refs.append((target, False))
            return 0
        if len(value) > MAX_ATTRIBUTE_CHARS:
            raise _refuse(f"attribute {name[:40]} is over {MAX_ATTRIBUTE_CHARS:,} characters")
        if name == "stroke-dasharray":
            self.dashes(value)
        if name != "style":
            refs.extend((t, name.startswith("marker")) for t in _url_targets(value))
            return 0
        if "\\" in value:
            raise _refuse("a style attribute has a CSS escape: not accepted")
        for match in _DASHES.finditer(value):
            self.dashes(match[1])
        for declaration in value.split(";"):
            prop, _, text = declaration.partition(":")
            refs.extend((t, prop.strip().startswith("marker")) for t in _url_targets(text))
        return 0

    def primitive(self, tag: str, attrs: dict[str, str]) -> None:
        """Refuse the filter parameters whose cost grows without bound."""
        side = max(self.canvas or (1.0, 1.0))
        checks = {
            "feGaussianBlur": ("stdDeviation", MAX_BLUR * side),
            "feDropShadow": ("stdDeviation", MAX_BLUR * side),
            "feMorphology": ("radius", MAX_MORPHOLOGY_RADIUS * side),
            "feTurbulence": ("numOctaves", MAX_OCTAVES),
            "feConvolveMatrix": ("order", MAX_CONVOLVE_ORDER),
        }
        if tag not in checks:
            return
        attr, limit = checks[tag]
        for match in _NUMBER.finditer(attrs.get(attr, "")):
            number = float(match[0])
            if not (math.isfinite(number) and abs(number) <= limit):
                raise _refuse(f"<{tag}> {attr} {match[0][:20]} is over the limit of {limit:.4g}")

    def filter_region(self, attrs: dict[str, str]) -> None:
        """Refuse a filter whose region, or whose primitive units, multiply its cost."""
        if attrs.get("primitiveUnits", "").strip() == "objectBoundingBox":
            raise _refuse("a filter's primitiveUnits is objectBoundingBox: not accepted")
        in_boxes = attrs.get("filterUnits", "").strip() != "userSpaceOnUse"
        width, height = self.canvas or (1.0, 1.0)
        for attr, unit in (("x", width), ("y", height), ("width", width), ("height", height)):
            match = _LENGTH.fullmatch(attrs.get(attr, ""))
            if match is None:
                continue
            number = float(match[1]) / (100 if match[2] == "%" else 1)
            if not in_boxes and match[2] != "%":
                number = number * _UNITS.get(match[2], 1.0) / unit
            if attr in ("x", "y"):
                ok = MIN_FILTER_OFFSET <= number <= MAX_FILTER_REGION
            else:
                ok = number <= MAX_FILTER_REGION
            if not (ok and math.isfinite(number)):
                raise _refuse(f"a filter region's {attr} {match[0][:20]!r} is out of range")

    def chars(self, data: str) -> None:
        if self.style_chars is not None:
            self.style += len(data)
            if self.style > MAX_STYLE_CHARS:
                raise _refuse(f"SVG has over {MAX_STYLE_CHARS:,} characters of style sheets")
            self.style_chars.append(data)
        if self.open and self.open[-1].in_text:
            self.text += len(data)
            if self.text > MAX_TEXT_CHARS:
                raise _refuse(f"SVG has over {MAX_TEXT_CHARS:,} characters of text")
            self.nodes[self.open[-1].owner].cost[_TEXT] += len(data)

    def end(self, _name: str) -> None:
        closed = self.open.pop()
        if closed.tag == "style" and self.style_chars is not None:
            self.style_sheet("".join(self.style_chars))
            self.style_chars = None

    def style_sheet(self, sheet: str) -> None:
        lowered = sheet.lower()
        for refused in ("\\", "@import", "@font-face"):
            if refused in lowered:
                raise _refuse(f"a style sheet has {refused}: not accepted")
        self.style_refs.update(_url_targets(sheet))
        for match in _DASHES.finditer(sheet):
            self.dashes(match[1])

    def dashes(self, value: str) -> None:
        """Refuse dashes so short that a stroke becomes millions of them."""
        total = sum(abs(float(n)) for n in _NUMBER.findall(value))
        limit = MIN_DASHES * max(self.canvas or (1.0, 1.0))
        if 0 < total < limit:  # all zeros draw a solid line
            raise _refuse(f"a stroke-dasharray sums to under {limit:.3g}")

    def finish(self) -> tuple[float, float]:
        """The canvas, once the references the whole document makes are within limits."""
        if self.canvas is None:
            raise _refuse("SVG has no root element")
        for target in self.style_refs:
            tags = {self.nodes[i].tag for i in self.ids.get(target, [])}
            if tags - _GRADIENTS:
                # A style rule applies to any number of elements: only cheap paints.
                raise _refuse("a style sheet references something other than a gradient")
        cost, height, chain = _resolve(self.nodes, self.ids)
        limits = (
            (cost[_ELEMENTS], MAX_RENDERED_ELEMENTS, "elements"),
            (cost[_TEXT], MAX_TEXT_CHARS, "characters of text"),
            (cost[_PATH], MAX_PATH_NUMBERS, "numbers of path data"),
            (cost[_FILTER_RUNS], MAX_FILTER_RUNS, "filter primitive runs"),
            (height, MAX_RENDER_DEPTH, "levels of nesting"),
            (chain, MAX_REF_CHAIN, "references in a chain"),
        )
        for found, limit, what in limits:
            if found > limit:
                raise _refuse(f"SVG renders over {limit:,} {what} once references are followed")
        return self.canvas


def _resolve(nodes: list[_Node], ids: dict[str, list[int]]) -> tuple[list[int], int, int]:
    """The root's cost, nesting depth and reference chain with every reference followed.

    Iterative post-order over the node graph; a reference back into an element
    being resolved is a cycle and refused.
    """
    state = [0] * len(nodes)  # 0 new, 1 in progress, 2 done
    cost: list[list[int]] = [[] for _ in nodes]
    height = [0] * len(nodes)
    chain = [0] * len(nodes)

    def targets(target: int | str) -> list[int]:
        return [target] if isinstance(target, int) else ids.get(target, [])

    todo: list[tuple[int, bool]] = [(0, False)]
    while todo:
        index, children_done = todo.pop()
        node = nodes[index]
        if children_done:
            total, deepest, longest = list(node.cost), node.height, 0
            for relative, target, times in node.edges:
                for j in targets(target):
                    total = [min(_CAP, a + b * times) for a, b in zip(total, cost[j], strict=True)]
                    deepest = max(deepest, relative + height[j])
                    longest = max(longest, chain[j] + isinstance(target, str))
            cost[index], height[index], chain[index] = total, deepest, longest
            state[index] = 2
            continue
        if state[index] == 2:
            continue
        if state[index] == 1:
            raise _refuse("SVG references form a cycle")
        state[index] = 1
        todo.append((index, True))
        for _, target, _ in node.edges:
            for j in targets(target):
                if state[j] == 1:
                    raise _refuse("SVG references form a cycle")
                if state[j] == 0:
                    todo.append((j, False))
    return cost[0], height[0], chain[0]


def _href_target(value: str) -> str:
    """The id an href points at ("" for an embedded raster), or a refusal."""
    value = value.strip()
    if not value:
        return ""
    if value.startswith("#"):
        return value[1:]
    match = _RASTER_DATA.match(value)
    if match is None:
        raise _refuse("an href names something other than #fragment or a data: raster")
    _check_embedded(value[match.end() :])
    return ""


def _check_embedded(payload: str) -> None:
    """Refuse an embedded raster that does not open or is over its pixel limit."""
    try:
        raw = base64.b64decode("".join(payload.split()), validate=True)
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            formats = ("PNG", "JPEG", "GIF", "WEBP")
            with Image.open(io.BytesIO(raw), formats=formats) as im:
                width, height = im.size
    except (
        binascii.Error,
        ValueError,
        OSError,
        Image.DecompressionBombError,
        Image.DecompressionBombWarning,
    ) as e:
        raise _refuse(f"an embedded image cannot be read: {str(e)[:80]}") from e
    if width * height > MAX_EMBEDDED_PIXELS:
        raise _refuse(f"an embedded image of {width}x{height} is over the pixel limit")


def _url_targets(value: str) -> list[str]:
    """The ids that each url(...) in a value points at; anything else is refused."""
    found: list[str] = []
    if "(" not in value:
        return found
    for match in _URL.finditer(value):
        rest = value[match.end() :].lstrip()
        quote = rest[:1] if rest[:1] in ("'", '"') else ""
        rest = rest[len(quote) :]
        end = rest.find(quote or ")")
        target = rest[:end].strip() if end >= 0 else ""
        if not target.startswith("#"):
            raise _refuse("a url() names something other than #fragment")
        found.append(target[1:])
    return found


def _canvas(attrs: dict[str, str]) -> tuple[float, float]:
    """The root's size in user units, as resvg decides it, within the canvas limits.

    A missing or unreadable width or height is 100%; a percentage is of the
    viewBox, or of resvg's default 100x100 without one.
    """
    box = _view_box(attrs.get("viewBox", ""))
    sides = []
    for attr, default in (
        ("width", box[0] if box else 100.0),
        ("height", box[1] if box else 100.0),
    ):
        match = _LENGTH.fullmatch(attrs.get(attr, ""))
        if match is None:
            side = default
        elif match[2] == "%":
            side = default * float(match[1]) / 100
        else:
            side = float(match[1]) * _UNITS[match[2]]
        if not (math.isfinite(side) and 0 < side <= MAX_CANVAS_SIDE):
            raise _refuse(f"SVG {attr} {attrs.get(attr, '')[:20]!r} is not a usable size")
        sides.append(side)
    width, height = sides
    aspect = max(width / height, height / width)
    if aspect > MAX_ASPECT:
        raise _refuse(f"SVG aspect ratio {aspect:.3g}:1 is over {MAX_ASPECT:g}:1")
    return width, height


def _view_box(value: str) -> tuple[float, float] | None:
    """A viewBox's width and height; None when absent or unusable (resvg ignores it)."""
    numbers = value.replace(",", " ").split()
    try:
        parsed = [float(n) for n in numbers]
    except ValueError:
        return None
    if len(parsed) != 4 or not all(math.isfinite(n) for n in parsed):
        return None
    width, height = parsed[2], parsed[3]
    return (width, height) if width > 0 and height > 0 else None
