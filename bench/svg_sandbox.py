"""What the SVG check and sandbox cost per SVG on Loot's 1,000 bags; prints JSON.

Renders every bag at the export's size (shorter side 256) four ways, taking turns
on each bag, in this one process and run: resvg in-process as the export used to
(a 64-pixel probe for the aspect ratio, then the render), resvg in-process once at
the known size, the check alone, and the way the export does now (check, then a
render in the sandbox's reused child). Timings are wall-clock on this machine.

    python -m bench.svg_sandbox [--count 1000] [--side 256]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import resvg_py

from infra.demo_chain import read_loot_uris
from tasks.core.svg_check import check_svg
from tasks.export.images import svg_pixels
from tasks.export.svg_sandbox import SvgSandbox

LOOT_ARCHIVE = Path(__file__).parents[1] / "infra" / "demo" / "loot.tar.gz"


def loot_svgs(count: int) -> list[bytes]:
    """The first ``count`` Loot bags' SVG bytes, from the demo archive."""
    found = []
    for uri in read_loot_uris(LOOT_ARCHIVE, count):
        metadata = json.loads(base64.b64decode(uri.split(",", 1)[1]))
        found.append(base64.b64decode(metadata["image"].split(",", 1)[1]))
    return found


def _in_process(text: str, width: int) -> bytes:
    """One render as the worker does it, without the sandbox."""
    return bytes(
        resvg_py.svg_to_bytes(
            svg_string=text,
            width=width,
            dpi=96.0,
            font_family="DejaVu Sans",
            serif_family="DejaVu Serif",
            sans_serif_family="DejaVu Sans",
            monospace_family="DejaVu Sans Mono",
        )
    )


def _timed(svgs: list[bytes], ways: dict[str, Callable[[bytes], object]]) -> dict[str, Any]:
    """Seconds and milliseconds per SVG of each way, taking turns per SVG so that a
    change in the machine's load falls on every way alike."""
    spent = dict.fromkeys(ways, 0.0)
    for data in svgs:
        for name, render in ways.items():
            started = time.perf_counter()
            render(data)
            spent[name] += time.perf_counter() - started
    return {
        name: {"seconds": round(s, 3), "ms_per_svg": round(1000 * s / len(svgs), 3)}
        for name, s in spent.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--side", type=int, default=256)
    args = parser.parse_args()
    svgs = loot_svgs(args.count)
    side: int = args.side

    def old(data: bytes) -> object:
        text = data.decode()
        _in_process(text, 64)  # the removed probe render
        return _in_process(text, side)

    def sandboxed(data: bytes) -> object:
        info = check_svg(data)
        width, height = svg_pixels(info.aspect, side)
        return sandbox.render(info.text, width, height)

    sandbox = SvgSandbox()
    started = time.perf_counter()
    sandbox.render(svgs[0].decode(), side, side)  # starts the child
    start_ms = 1000 * (time.perf_counter() - started)
    try:
        ways: dict[str, Callable[[bytes], object]] = {
            "in_process_probe_and_render": old,
            "in_process_render": lambda d: _in_process(d.decode(), side),
            "check_only": check_svg,
            "check_and_sandbox": sandboxed,
        }
        runs = _timed(svgs, ways)
    finally:
        sandbox.close()
    runs["child_start_ms"] = round(start_ms, 1)
    base = runs["in_process_render"]["ms_per_svg"]
    runs["sandbox_overhead_ms_per_svg"] = round(runs["check_and_sandbox"]["ms_per_svg"] - base, 3)
    doc = {
        "svgs": len(svgs),
        "side": side,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        **runs,
    }
    print(json.dumps(doc, indent=2))


if __name__ == "__main__":
    main()
