"""Figures of the report: each function takes tables of numbers and returns a matplotlib Figure; :func:`to_png`
renders one and lets it go.

matplotlib is imported inside the functions (the CLI starts without it), and figures are built with the
object-oriented ``matplotlib.figure.Figure`` rather than pyplot: rendering to PNG then needs no GUI backend and
never touches the global pyplot state of a notebook that happens to call the report builder, and a figure is
released as soon as :func:`to_png` drops its last reference (there is no pyplot registry to close it in).
"""
from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from perfmodel.report.document import fmt
from perfmodel.report.style import HATCHES, SeriesStyle

if TYPE_CHECKING:
    from matplotlib.figure import Figure

WIDTH_IN = 7.6  # figure width: fits an A4/Letter page with margins at 100 %


def _figure(ncols: int, height_in: float = 3.3, width_in: float = WIDTH_IN):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in), layout="constrained")
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, list(axes)


def to_png(fig: "Figure", dpi: int) -> bytes:
    """Render a figure to a compact PNG (a 256-colour palette, no dithering: lines and text stay sharp)."""
    from PIL import Image

    raw = io.BytesIO()
    fig.savefig(raw, format="png", dpi=dpi, metadata={"Software": None})
    fig.clear()
    raw.seek(0)
    with Image.open(raw) as img:
        pal = img.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    out = io.BytesIO()
    pal.save(out, format="PNG", optimize=True)
    return out.getvalue()


def _tidy_log_y(ax) -> None:
    """Plain tick labels (1, 2, 5, 10, 20, ...) on a log y axis spanning less than about three decades."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    lo, hi = ax.get_ylim()
    if lo > 0 and np.log10(hi / lo) < 2.5:
        ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: fmt(v)))
    ax.yaxis.set_minor_formatter(NullFormatter())


def _ticks_at(ax, values) -> None:
    """Log x axis ticks at the swept values themselves (up to ten of them), labelled plainly."""
    from matplotlib.ticker import NullLocator

    values = sorted({float(v) for v in values if v > 0})
    if 0 < len(values) <= 10:
        ax.set_xticks(values, [fmt(v) for v in values])
        ax.xaxis.set_minor_locator(NullLocator())


@dataclass(frozen=True)
class Roof:
    """A sloped roof of the roofline: a memory level and its bandwidth (B/s)."""

    label: str
    bandwidth: float


def roofline(title: str, peak_flops: float, peak_label: str, roofs: list[Roof], points: pd.DataFrame,
             styles: dict[str, SeriesStyle]) -> "Figure":
    """Roofline chart: compute roof, one sloped roof per memory level with its ridge point, and one marker per op.

    ``points`` has columns x (FLOP/byte), y (FLOP/s) and series (a key of ``styles``).
    """
    fig, (ax,) = _figure(1, height_in=4.2)
    lo_x = max(min(points.x.min(), 1.0) / 3, 1e-3) if len(points) else 0.1
    hi_x = max([peak_flops / r.bandwidth for r in roofs] + [points.x.max() if len(points) else 1.0]) * 4
    xs = np.geomspace(lo_x, hi_x, 256)
    for i, roof in enumerate(roofs):
        ridge = peak_flops / roof.bandwidth
        ls = ("-", "--", ":")[i % 3]
        ax.plot(xs, np.minimum(peak_flops, roof.bandwidth * xs), color="0.25", linestyle=ls, linewidth=1.2,
                label=f"{roof.label} roof ({roof.bandwidth / 1e12:.3g} TB/s), ridge {ridge:.3g} FLOP/B")
        ax.axvline(ridge, color="0.55", linestyle=ls, linewidth=0.8)
        ax.annotate(f"{roof.label} ridge {ridge:.3g}", (ridge, 0.03), xycoords=("data", "axes fraction"),
                    textcoords="offset points", xytext=(-9, 0), rotation=90, fontsize=7, color="0.3")
    ax.axhline(peak_flops, color="0.25", linewidth=0.6)
    ax.annotate(peak_label, (lo_x, peak_flops), textcoords="offset points", xytext=(3, 3), fontsize=7, color="0.3")
    for label, style in styles.items():
        rows = points[points.series == label]
        if rows.empty:
            continue
        ax.scatter(rows.x, rows.y, s=30, marker=style.marker, facecolor=style.color, edgecolor="black",
                   linewidth=0.5, alpha=0.85, label=label, zorder=3)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(lo_x, hi_x)
    low_y = points.y[points.y > 0].min() if len(points) else peak_flops / 1e4
    ax.set_ylim(max(low_y / 3, peak_flops / 1e7), peak_flops * 2.5)
    ax.set_xlabel("arithmetic intensity (FLOP/byte of main-memory traffic)")
    ax.set_ylabel("achieved throughput (FLOP/s)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="major", color="0.9", linewidth=0.5)
    # Nothing can sit above the roofs: the upper left corner is free for the legend.
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(0.0, 0.94), framealpha=0.9)
    return fig


def breakdown(per_step: pd.DataFrame, totals: pd.DataFrame) -> "Figure":
    """Stacked bars of step time by op class (ms), beside end-to-end latency (s) and throughput (tokens/s).

    ``per_step``: index = configuration labels, columns = op classes (ms per step). ``totals``: same index,
    columns latency_s and tokens_per_s.
    """
    from matplotlib.figure import Figure

    labels = list(per_step.index)
    fig = Figure(figsize=(WIDTH_IN, 2.9 + 0.45 * len(labels)), layout="constrained")
    axes = fig.subplot_mosaic([["step", "step"], ["latency", "tokens"]], height_ratios=[1.25, 1])
    y = np.arange(len(labels))
    left = np.zeros(len(labels))
    for i, cls in enumerate(per_step.columns):
        vals = per_step[cls].to_numpy(dtype=float)
        axes["step"].barh(y, vals, left=left, color=f"{0.95 - 0.22 * (i % 4):.2f}", edgecolor="black",
                          linewidth=0.5, hatch=HATCHES[i % len(HATCHES)], label=cls)
        left += vals
    axes["step"].set_xlabel("time per step (ms)")
    axes["step"].legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncols=len(per_step.columns), fontsize=7,
                        frameon=False)
    for key, col, xlabel in (("latency", "latency_s", "end-to-end latency (s)"),
                             ("tokens", "tokens_per_s", "throughput (tokens/s)")):
        axes[key].barh(y, totals[col].to_numpy(dtype=float), color="0.75", edgecolor="black", linewidth=0.5)
        axes[key].set_xlabel(xlabel)
    for key, ax in axes.items():
        ax.set_yticks(y, labels if key != "tokens" else [""] * len(labels), fontsize=7)
        ax.invert_yaxis()
        ax.grid(True, axis="x", color="0.9", linewidth=0.5)
        ax.set_axisbelow(True)
    return fig


@dataclass(frozen=True)
class Panel:
    """One axes of a line figure: its rows, which column is y, its labels, reference lines and marked points."""

    title: str
    rows: pd.DataFrame
    y: str
    ylabel: str
    logy: bool = True
    hlines: tuple[tuple[float, str, str], ...] = ()  # (y, label, linestyle)
    marks: tuple[tuple[float, float, str], ...] = ()  # (x, y, label)
    extra_x: tuple[float, ...] = field(default=())  # x values the axis must include (marked points)


def lines(panels: list[Panel], x: str, xlabel: str, series: str, styles: dict[str, SeriesStyle],
          linestyle_by: str | None = None, linestyles: dict[str, str] | None = None, logx: bool = True,
          height_in: float = 3.3) -> "Figure":
    """Panels of lines: colour and marker by ``series``, line style by ``linestyle_by`` (e.g. the device).

    One legend below the panels lists the series (colour + marker) and the line styles separately.
    """
    from matplotlib.lines import Line2D

    fig, axes = _figure(len(panels), height_in=height_in)
    linestyles = linestyles or {}
    for ax, panel in zip(axes, panels):
        rows = panel.rows.sort_values(x)
        groups = [(None, rows)] if linestyle_by is None else list(rows.groupby(linestyle_by, sort=False))
        for ls_key, sub in groups:
            for label, style in styles.items():
                line = sub[sub[series] == label]
                if line.empty:
                    continue
                ax.plot(line[x], line[panel.y], color=style.color, marker=style.marker, markersize=5,
                        markeredgecolor="black", markeredgewidth=0.4, linewidth=1.3,
                        linestyle=linestyles.get(ls_key, "-"))
        for value, label, ls in panel.hlines:
            ax.axhline(value, color="0.35", linestyle=ls, linewidth=1.0)
            ax.annotate(label, (0.01, value), xycoords=("axes fraction", "data"), textcoords="offset points",
                        xytext=(0, 2), fontsize=6.5, color="0.25")
        for mx, my, label in panel.marks:
            ax.plot([mx], [my], marker="*", markersize=11, color="white", markeredgecolor="black", zorder=4)
            ax.axvline(mx, color="0.5", linestyle=":", linewidth=0.8)
            ax.annotate(label, (mx, my), textcoords="offset points", xytext=(4, -11), fontsize=6.5)
        if logx:
            ax.set_xscale("log")
            _ticks_at(ax, rows[x])
        if panel.logy:
            ax.set_yscale("log")
        if panel.hlines:  # keep the reference lines in view
            refs = [value for value, _, _ in panel.hlines]
            lo, hi = ax.get_ylim()
            pad = 1.25 if panel.logy else 1.05
            ax.set_ylim(min(lo, min(refs) / pad), max(hi, max(refs) * pad))
        if panel.logy:
            _tidy_log_y(ax)
        if panel.extra_x:
            lo, hi = ax.get_xlim()
            ax.set_xlim(min(lo, min(panel.extra_x) / 1.3), max(hi, max(panel.extra_x) * 1.3))
        ax.set_xlabel(xlabel)
        ax.set_ylabel(panel.ylabel)
        ax.set_title(panel.title, fontsize=9)
        ax.grid(True, which="major", color="0.9", linewidth=0.5)
    handles = [Line2D([], [], color=s.color, marker=s.marker, markeredgecolor="black", markeredgewidth=0.4,
                      linestyle="-", label=label) for label, s in styles.items()]
    handles += [Line2D([], [], color="black", linestyle=ls, label=label) for label, ls in linestyles.items()]
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 4), fontsize=7, frameon=False)
    return fig


def validation_scatter(rows: pd.DataFrame, styles: dict[str, SeriesStyle]) -> "Figure":
    """Predicted against measured time per op (log-log), the y = x line and the factor-of-two band."""
    fig, (ax,) = _figure(1, height_in=4.0, width_in=5.2)
    lo = float(min(rows.measured_s.min(), rows.predicted_s.min())) / 2
    hi = float(max(rows.measured_s.max(), rows.predicted_s.max())) * 2
    ref = np.array([lo, hi])
    ax.plot(ref, ref, color="0.2", linewidth=1.0, label="predicted = measured")
    ax.plot(ref, ref * 2, color="0.5", linestyle=":", linewidth=0.9, label="×2 / ÷2")
    ax.plot(ref, ref / 2, color="0.5", linestyle=":", linewidth=0.9)
    for label, style in styles.items():
        sub = rows[rows.kind == label]
        ax.scatter(sub.measured_s, sub.predicted_s, marker=style.marker, s=22, facecolor=style.color,
                   edgecolor="black", linewidth=0.4, alpha=0.85, label=label, zorder=3)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_xlabel("measured time (s)")
    ax.set_ylabel("predicted time (s)")
    ax.grid(True, which="major", color="0.9", linewidth=0.5)
    ax.legend(fontsize=7, loc="upper left", framealpha=0.9)
    return fig
