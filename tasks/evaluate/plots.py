"""PNG plots of results, for files in S3 and Prefect artifacts (matplotlib, no display).

Collection names in plots are attacker-controlled strings: they are drawn as
plain text (``usetex`` off, ``$`` escaped so mathtext never parses them) and cut.
Figures are built as ``matplotlib.figure.Figure`` objects, never through pyplot's
global registry, so plots drawn on concurrent worker threads neither share state
nor leak figures.
"""

from __future__ import annotations

import io
import math
import warnings
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from matplotlib.figure import Figure

from tasks.evaluate.cvi import CviRow
from tasks.evaluate.retrieval import PoolResult

MAX_COLLECTION_LINES = 12  # per panel; the rest are in the table artifact
MAX_LABEL = 40
MAX_TITLE = 120
DPI = 100
MAX_BARS = 40  # the MAX_BARS // 2 highest and lowest CVI; the rest are in the table
BAR_INCHES = 0.3
MIN_HEIGHT_INCHES = 3.0
MAX_HEIGHT_INCHES = 1.8 + BAR_INCHES * MAX_BARS
BARS_WIDTH_INCHES = 13.0
CONTRACT_CHARS = 8
MAX_POINT_LABELS = 30
MIN_DOT, MAX_DOT = 15.0, 400.0  # dot areas in points^2
RHO = "\N{GREEK SMALL LETTER RHO}"
PARTS = (
    ("image_dispersion", "image dispersion", "tab:blue"),
    ("text_dispersion", "text dispersion", "tab:orange"),
    ("matching_margin", "matching margin", "tab:green"),
)


@dataclass(frozen=True)
class CviPoint:
    """One collection's CVI beside its measured within-collection top-1 accuracy."""

    collection: str
    cvi: float
    top1: float
    pairs: int


def label(text: str) -> str:
    """A collection name safe to draw: no mathtext, bounded length."""
    cut = text if len(text) <= MAX_LABEL else text[: MAX_LABEL - 1] + "…"
    return cut.replace("$", r"\$")


def _title(text: str) -> str:
    return text[:MAX_TITLE].replace("$", r"\$")


def _png(fig: Figure) -> bytes:
    """Lay out and encode ``fig`` as PNG bytes."""
    out = io.BytesIO()
    with warnings.catch_warnings():
        # Emoji and rare scripts in names have no glyph in the font: drawn as boxes.
        warnings.filterwarnings("ignore", message="Glyph .* missing", category=UserWarning)
        fig.tight_layout()
        fig.savefig(out, format="png", dpi=DPI)
    return out.getvalue()


def topk_plot(results: Mapping[str, PoolResult], title: str) -> bytes:
    """Top-K accuracy against K, one panel per pool: every query (micro), the mean over
    collections (macro), and the largest collections as thin lines."""
    pools = list(results)
    fig = Figure(figsize=(6 * len(pools), 4.5))
    axes = fig.subplots(1, len(pools), squeeze=False)
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
    fig.suptitle(_title(title))
    return _png(fig)


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def select_bars(rows: Sequence[CviRow]) -> tuple[list[CviRow], int]:
    """The rows to draw, highest CVI first, and how many were left out.

    Beyond MAX_BARS, the MAX_BARS // 2 highest and lowest CVI are kept: the ends
    are what a reader compares. Rows without a CVI come last, where room is left.
    """
    ranked = sorted((r for r in rows if _finite(r.cvi) is not None), key=lambda r: -(r.cvi or 0.0))
    if len(ranked) > MAX_BARS:
        half = MAX_BARS // 2
        ranked = ranked[:half] + ranked[-(MAX_BARS - half) :]
    without = [r for r in rows if _finite(r.cvi) is None]
    kept = ranked + without[: MAX_BARS - len(ranked)]
    return kept, len(rows) - len(kept)


def bar_labels(rows: Sequence[CviRow]) -> list[str]:
    """``label(collection)``, with a contract prefix where one name has several contracts.

    The prefix is CONTRACT_CHARS long, longer only if that is needed to tell them apart.
    """
    contracts: defaultdict[str, set[str]] = defaultdict(set)
    for r in rows:
        contracts[r.collection].add(r.contract)
    width: dict[str, int] = {}
    for name, group in contracts.items():
        if len(group) > 1:
            longest = max(len(c) for c in group)
            width[name] = next(
                n
                for n in range(CONTRACT_CHARS, longest + 1)
                if len({c[:n] for c in group}) == len(group)
            )
    return [
        label(r.collection)
        + (f" · {label(r.contract[: width[r.collection]])}" if r.collection in width else "")
        for r in rows
    ]


def bars_height(bars: int) -> float:
    """Figure height in inches: grows with the bars, bounded both ways."""
    return min(MAX_HEIGHT_INCHES, max(MIN_HEIGHT_INCHES, 1.8 + BAR_INCHES * bars))


def cvi_bars(rows: Sequence[CviRow], title: str) -> bytes:
    """CVI per collection as horizontal bars, highest on top, and beside it the three
    parts it is made of, so a reader sees which part makes a collection hard."""
    kept, left_out = select_bars(rows)
    fig = Figure(figsize=(BARS_WIDTH_INCHES, bars_height(len(kept))))
    ax_cvi, ax_parts = fig.subplots(1, 2, sharey=True, gridspec_kw={"width_ratios": [1, 1.4]})
    ys = list(range(len(kept)))
    drawn = [(y, r.cvi) for y, r in zip(ys, kept, strict=True) if _finite(r.cvi) is not None]
    bars = ax_cvi.barh([y for y, _ in drawn], [v or 0.0 for _, v in drawn], color="tab:purple")
    ax_cvi.bar_label(bars, fmt="%.3f", fontsize=7, padding=2)
    for y, r in zip(ys, kept, strict=True):
        if _finite(r.cvi) is None:
            ax_cvi.text(0, y, f" n={r.pairs}", va="center", fontsize=7, color="0.4")
    step = 0.8 / len(PARTS)
    for i, (field, name, colour) in enumerate(PARTS):
        values = [(y, _finite(getattr(r, field))) for y, r in zip(ys, kept, strict=True)]
        present = [(y, v) for y, v in values if v is not None]
        ax_parts.barh(
            [y + (i - 1) * step for y, _ in present],
            [v for _, v in present],
            height=step,
            color=colour,
            label=name,
        )
    ax_cvi.set_yticks(ys, bar_labels(kept), fontsize=8)
    ax_cvi.set_ylim(len(kept) - 0.5, -0.5)  # highest CVI on top
    for ax in (ax_cvi, ax_parts):
        ax.axvline(0, color="k", lw=0.8)
        ax.grid(axis="x", alpha=0.3)
        if left_out:
            ax.axhline(MAX_BARS // 2 - 0.5, color="0.3", ls="--", lw=0.8)
    ax_cvi.set_xlabel("CVI")
    ax_parts.set_xlabel("value of the part")
    ax_cvi.margins(x=0.15)
    ax_parts.legend(
        loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=len(PARTS), fontsize=8, frameon=False
    )
    shown = f"{len(kept)} collections"
    if left_out:
        shown = (
            f"{MAX_BARS // 2} highest and {len(kept) - MAX_BARS // 2} lowest CVI of "
            f"{len(rows)} collections; {left_out} left out"
        )
    elif not kept:
        shown = "no collections"
    fig.suptitle(f"{_title(title)}\n{shown}", fontsize=11)
    return _png(fig)


def dot_area(pairs: int) -> float:
    """Dot area for a collection of ``pairs`` pairs: grows with sqrt(pairs), bounded."""
    return min(MAX_DOT, max(MIN_DOT, 6.0 * math.sqrt(max(pairs, 0))))


def rho_text(rho: float | None, collections: int) -> str:
    """How the rank correlation is stated on the scatter plot."""
    over = f"over {collections} collection{'' if collections == 1 else 's'}"
    if rho is None or not math.isfinite(rho):
        return f"Spearman {RHO} undefined {over}"
    return f"Spearman {RHO} = {rho:.2f} {over}"


def cvi_scatter(points: Sequence[CviPoint], rho: float | None, title: str) -> bytes:
    """CVI against within-collection top-1 accuracy, one dot per collection (area by
    pairs): if CVI ranks difficulty, the dots rise from left to right."""
    shown = [p for p in points if math.isfinite(p.cvi) and math.isfinite(p.top1)]
    fig = Figure(figsize=(8, 6))
    ax = fig.subplots()
    ax.scatter(
        [p.cvi for p in shown],
        [p.top1 for p in shown],
        s=[dot_area(p.pairs) for p in shown],
        alpha=0.6,
        edgecolors="k",
        linewidths=0.5,
        color="tab:purple",
    )
    labelled = sorted(shown, key=lambda p: -p.pairs)[:MAX_POINT_LABELS]
    middle = (min(p.cvi for p in shown) + max(p.cvi for p in shown)) / 2 if shown else 0.0
    for p in labelled:
        right_half = p.cvi > middle  # names of right-hand dots run to the left
        note = ax.annotate(
            label(p.collection),
            (p.cvi, p.top1),
            xytext=(-5 if right_half else 5, 3),
            textcoords="offset points",
            ha="right" if right_half else "left",
            fontsize=7,
        )
        note.set_in_layout(False)  # long names must not squeeze the axes
    ax.set_ylim(-0.03, 1.03)
    ax.margins(x=0.1)
    ax.set_xlabel("CVI")
    ax.set_ylabel("within-collection top-1 accuracy (text to image)")
    ax.grid(alpha=0.3)
    notes = [rho_text(rho, len(points)), "dot area grows with pairs"]
    if len(shown) > MAX_POINT_LABELS:
        notes.append(f"names on the {MAX_POINT_LABELS} largest")
    if len(shown) < len(points):
        notes.append(f"{len(points) - len(shown)} without a value not drawn")
    ax.set_title("; ".join(notes), fontsize=9)
    fig.suptitle(_title(title))
    return _png(fig)
