"""How series look: colour, marker shape and line style, chosen so that a greyscale print still tells them apart.

Each compared series gets a colour from the Okabe–Ito palette (safe for colour-blind readers) *and* its own marker
shape; each device gets its own line style; each op class in a stacked bar gets its own hatch. Colour is never the
only cue.
"""
from __future__ import annotations

from dataclasses import dataclass

# Okabe & Ito, "Color Universal Design" (2008): eight colours distinguishable under common colour-vision deficiencies.
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
LINESTYLES = ("-", "--", ":", "-.")
HATCHES = ("", "///", "...", "xxx", "\\\\\\", "+++")

# Op classes of the latency breakdown, and the op kinds each one gathers.
OP_CLASSES: dict[str, tuple[str, ...]] = {
    "gemm": ("gemm",),
    "attention": ("attention", "centroid_lookup", "topk", "gather"),
    "norm_elementwise": ("norm", "elementwise"),
    "other": ("embedding", "quantize", "dequantize", "allreduce"),
}


def op_class(kind: str) -> str:
    """The breakdown class of an op kind; kinds not listed fall under 'other'."""
    for name, kinds in OP_CLASSES.items():
        if kind in kinds:
            return name
    return "other"


@dataclass(frozen=True)
class SeriesStyle:
    """Colour and marker of one series."""

    color: str
    marker: str


def series_style(index: int) -> SeriesStyle:
    """The style of the ``index``-th series of a plot (cycles after eight)."""
    return SeriesStyle(PALETTE[index % len(PALETTE)], MARKERS[index % len(MARKERS)])


def series_styles(labels: list[str]) -> dict[str, SeriesStyle]:
    """Styles for labels in order: the same label keeps the same style across every plot that uses this map."""
    return {label: series_style(i) for i, label in enumerate(dict.fromkeys(labels))}


def line_styles(labels: list[str]) -> dict[str, str]:
    """A line style per label (devices), in order."""
    return {label: LINESTYLES[i % len(LINESTYLES)] for i, label in enumerate(dict.fromkeys(labels))}
