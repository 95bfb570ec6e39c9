"""Result plots render as PNG whatever the collections are called."""

from __future__ import annotations

import io

import torch
from PIL import Image

from tasks.plots import MAX_LABEL, label, topk_plot
from tasks.retrieval import evaluate


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
