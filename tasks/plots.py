"""PNG plots of results, for files in S3 and Prefect artifacts (matplotlib, no display).

Collection names in plots are attacker-controlled strings: they are drawn as
plain text (``usetex`` off, ``$`` escaped so mathtext never parses them) and cut.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Mapping

import matplotlib

matplotlib.use("Agg")  # before pyplot: no display on workers

import matplotlib.pyplot as plt

from tasks.retrieval import PoolResult

MAX_COLLECTION_LINES = 12  # per panel; the rest are in the table artifact
MAX_LABEL = 40


def label(text: str) -> str:
    """A collection name safe to draw: no mathtext, bounded length."""
    cut = text if len(text) <= MAX_LABEL else text[: MAX_LABEL - 1] + "…"
    return cut.replace("$", r"\$")


def topk_plot(results: Mapping[str, PoolResult], title: str) -> bytes:
    """Top-K accuracy against K, one panel per pool: every query (micro), the mean over
    collections (macro), and the largest collections as thin lines."""
    pools = list(results)
    fig, axes = plt.subplots(1, len(pools), figsize=(6 * len(pools), 4.5), squeeze=False)
    for ax, pool in zip(axes[0], pools, strict=True):
        result = results[pool]
        ks = list(result.ks)
        biggest = sorted(result.collections, key=lambda c: -c.queries)[:MAX_COLLECTION_LINES]
        for c in biggest:
            ax.plot(ks, [c.accuracy(k) for k in ks], lw=0.8, alpha=0.6, label=label(c.collection))
        ax.plot(ks, [result.micro(k) for k in ks], "k-o", lw=2, label="all queries")
        ax.plot(ks, [result.macro(k) for k in ks], "k--s", lw=2, label="mean of collections")
        ax.set_xscale("log")
        ax.set_xticks(ks, [str(k) for k in ks])
        ax.set_ylim(0, 1)
        ax.set_xlabel("K")
        ax.set_ylabel("top-K accuracy (text to image)")
        ax.set_title(f"{pool}: {result.total.queries} queries")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    fig.suptitle(title[:120].replace("$", r"\$"))
    out = io.BytesIO()
    with warnings.catch_warnings():
        # Emoji and rare scripts in names have no glyph in the font: drawn as boxes.
        warnings.filterwarnings("ignore", message="Glyph .* missing", category=UserWarning)
        fig.tight_layout()
        fig.savefig(out, format="png", dpi=100)
    plt.close(fig)
    return out.getvalue()
