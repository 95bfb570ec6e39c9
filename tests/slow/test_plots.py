"""Result plots render as PNG whatever the collections are called."""

from __future__ import annotations

import io
import math
import warnings

import matplotlib.pyplot as plt
import numpy as np
import torch
from PIL import Image

from tasks.evaluate.cvi import CviRow
from tasks.evaluate.plots import (
    BARS_WIDTH_INCHES,
    DPI,
    MAX_BARS,
    MAX_DOT,
    MAX_HEIGHT_INCHES,
    MAX_LABEL,
    MIN_DOT,
    MIN_HEIGHT_INCHES,
    CviPoint,
    bar_labels,
    bars_height,
    cvi_bars,
    cvi_scatter,
    dot_area,
    label,
    rho_text,
    select_bars,
    topk_plot,
)
from tasks.evaluate.retrieval import evaluate


def test_a_topk_plot_is_a_png_with_a_panel_per_pool() -> None:
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(60, 16, generator=generator)
    texts = images + 0.8 * torch.randn(60, 16, generator=generator)
    # Names that would break mathtext or a layout if drawn as they are.
    names = ["$\\frac{1}{0}$ apes", "x" * 500, "Ωμέγα 🐸"] * 20
    results = evaluate(images, texts, names)
    png = topk_plot(results, "model $on$ data")
    with Image.open(io.BytesIO(png)) as im:
        assert im.format == "PNG"
        assert im.width > 2 * im.height * 0.9  # two pools side by side


def test_labels_are_cut_and_never_parsed_as_math() -> None:
    assert label("$x$") == r"\$x\$"
    assert len(label("y" * 500)) == MAX_LABEL
    assert label("Moonbirds") == "Moonbirds"


HOSTILE = ["$\\frac{1}{0}$ apes", "x" * 500, "Ωμέγα 🐸", ""]


def _row(name: str, contract: str, cvi: float | None, pairs: int = 50) -> CviRow:
    margin = None if pairs == 1 else 0.2
    return CviRow("collection", name, contract, None, pairs, 0.6, 0.4, margin, cvi)


def _size(png: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(png)) as im:
        assert im.format == "PNG"
        return im.size


def _purple_pixels(png: bytes) -> int:
    with Image.open(io.BytesIO(png)) as im:
        rgb = np.asarray(im.convert("RGB")).astype(int)
    return int((np.abs(rgb - BAR_RGB).sum(axis=2) < 30).sum())


BAR_RGB = np.array([0x94, 0x67, 0xBD])  # tab:purple, the CVI bars and the dots


def test_cvi_bars_draw_hostile_names_without_warnings_or_leaks() -> None:
    rows = [_row(name, f"0x{i:02d}{'a' * 38}", 0.1 * i) for i, name in enumerate(HOSTILE)]
    rows += [_row("Twins", "0xaaaa1111", 0.3), _row("Twins", "0xbbbb2222", -0.1)]
    rows += [_row("Lonely", "0xcccc", None, pairs=1)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no glyph, layout or mathtext warning escapes
        png = cvi_bars(rows, "CVI on $demo$ " + "t" * 300)
    assert _size(png) == (BARS_WIDTH_INCHES * DPI, round(bars_height(len(rows)) * DPI))
    assert plt.get_fignums() == []


def test_a_collection_without_cvi_keeps_its_label_but_has_no_bar() -> None:
    with_cvi = cvi_bars([_row("A", "0x1", 0.9), _row("B", "0x2", 0.9)], "t")
    single = cvi_bars([_row("A", "0x1", 0.9), _row("B", "0x2", None, pairs=1)], "t")
    assert _size(single) == _size(with_cvi)  # B still has its row
    assert _purple_pixels(single) < 0.7 * _purple_pixels(with_cvi)


def test_bar_height_grows_with_collections_and_is_bounded() -> None:
    one = _size(cvi_bars([_row("Only", "0x1", 0.5)], "one"))
    ten = _size(cvi_bars([_row(f"c{i}", f"0x{i}", i / 10) for i in range(10)], "ten"))
    many = [_row(f"c{i} {HOSTILE[i % 4]}", f"0x{i}", (i * 37 % 100) / 100) for i in range(100)]
    hundred = _size(cvi_bars(many, "hundred"))
    assert one[1] == MIN_HEIGHT_INCHES * DPI
    assert one[1] < ten[1] < hundred[1] <= MAX_HEIGHT_INCHES * DPI
    assert one[0] == ten[0] == hundred[0]


def test_beyond_max_bars_the_highest_and_lowest_cvi_are_kept() -> None:
    rows = [_row(f"c{i}", f"0x{i}", i / 100) for i in range(100)]
    rows += [_row("single", "0xs", None, pairs=1)]
    kept, left_out = select_bars(rows)
    values = [r.cvi for r in kept]
    half = MAX_BARS // 2
    assert len(kept) == MAX_BARS and left_out == 101 - MAX_BARS
    assert values[:half] == [i / 100 for i in range(99, 99 - half, -1)]
    assert values[half:] == [i / 100 for i in range(half - 1, -1, -1)]
    few, none_left = select_bars([rows[-1], rows[3], _row("nan", "0xn", math.nan), rows[7]])
    assert [r.collection for r in few] == ["c7", "c3", "single", "nan"] and none_left == 0


def test_one_name_with_several_contracts_gets_a_contract_suffix() -> None:
    rows = [
        _row("Apes", "0x1234567890", 0.1),
        _row("Apes", "0x9876543210", 0.2),
        _row("Cats", "0xcafe000001", 0.3),
        _row("Cats", "0xcafe000002", 0.4),  # same first 8 characters
        _row("$x$", "0x5", 0.5),
    ]
    labels = bar_labels(rows)
    assert labels[:2] == ["Apes · 0x123456", "Apes · 0x987654"]
    assert labels[2] != labels[3] and labels[2].startswith("Cats · 0xcafe00")
    assert labels[4] == r"\$x\$"


def test_cvi_scatter_renders_hostile_points_and_states_rho() -> None:
    points = [CviPoint(name, 0.1 * i, 0.2 * i, 10**i) for i, name in enumerate(HOSTILE)]
    points += [CviPoint("Twins", 0.3, 0.5, 1), CviPoint("Twins", 0.3, 0.5, 1)]
    points += [CviPoint("broken", math.nan, 0.5, 3)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sizes = {
            _size(cvi_scatter(points, 0.83, "CVI $vs$ top-1")),
            _size(cvi_scatter(points[:1], None, "one")),
            _size(cvi_scatter([], None, "none")),
        }
    many = [
        CviPoint(f"c{i} {HOSTILE[i % 4]}", i / 100, (i * 37 % 100) / 100, i) for i in range(100)
    ]
    sizes.add(_size(cvi_scatter(many, -0.05, "many")))
    assert sizes == {(800, 600)}  # a fixed size whatever the points
    rho = "\N{GREEK SMALL LETTER RHO}"
    assert rho_text(0.8312, 7) == f"Spearman {rho} = 0.83 over 7 collections"
    assert rho_text(None, 1) == f"Spearman {rho} undefined over 1 collection"
    assert rho_text(math.nan, 2) == f"Spearman {rho} undefined over 2 collections"


def test_dot_area_grows_with_pairs_within_bounds() -> None:
    areas = [dot_area(n) for n in (0, 1, 100, 1000, 10**6)]
    assert areas == sorted(areas)
    assert areas[0] == MIN_DOT and areas[-1] == MAX_DOT
    assert MIN_DOT < areas[2] < MAX_DOT
