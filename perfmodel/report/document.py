"""The report as data: sections of paragraphs, figures and tables, before any HTML or Markdown is written.

A section is a page of the review handout: a title, a few sentences whose numbers are computed from the
predictions, the plots, and the tables of the numbers behind them. The HTML and Markdown writers only lay these
out, and :func:`fmt` is the one place a number becomes text, so that both outputs show the same digits.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from numbers import Integral, Real
from typing import Any

import numpy as np
import pandas as pd

from perfmodel.files import slug


@dataclass(frozen=True)
class Table:
    """A table of a section: written whole to ``tables/<name>.csv``; ``shown`` rows appear in the documents
    (None: all of them; 0: only a link to the CSV), and of the columns only ``columns`` where given."""

    name: str
    title: str
    frame: pd.DataFrame
    shown: int | None = None
    columns: tuple[str, ...] | None = None

    @property
    def csv_path(self) -> str:
        return f"tables/{slug(self.name)}.csv"

    def visible(self) -> pd.DataFrame:
        """The rows and columns the documents show."""
        frame = self.frame if self.columns is None else self.frame[list(self.columns)]
        return frame if self.shown is None else frame.head(self.shown)


@dataclass(frozen=True)
class Figure:
    """A rendered plot: PNG bytes and the caption shown under it."""

    name: str
    caption: str
    png: bytes

    @property
    def png_path(self) -> str:
        return f"figures/{slug(self.name)}.png"


@dataclass(frozen=True)
class Section:
    """One section of the report."""

    key: str
    title: str
    paragraphs: list[str] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)


def fmt(value: Any) -> str:
    """A number as the report prints it: integers whole, other values to 4 significant digits.

    Values between 1e-3 and 1e6 in fixed notation without trailing zeros (0.007375, 0.1, 135.2, 18930), others
    in scientific notation (9.894e+14); booleans as yes/no; missing values as a dash.
    """
    if value is None:
        return "–"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if bool(value) else "no"
    if isinstance(value, Integral):
        return str(int(value))
    if isinstance(value, Real):
        x = float(value)
        if math.isnan(x):
            return "–"
        if math.isinf(x):
            return "∞" if x > 0 else "−∞"
        if x == 0:
            return "0"
        if x.is_integer() and abs(x) < 1e6:
            return str(int(x))
        if 1e-3 <= abs(x) < 1e6:
            decimals = max(0, 3 - math.floor(math.log10(abs(x))))
            text = f"{x:.{decimals}f}"
            return text.rstrip("0").rstrip(".") if "." in text else text
        return f"{x:.3e}"
    return str(value)


def wide(frame: pd.DataFrame, keys: list[str], axis: str, axis_label: str, values: dict[str, str],
         keep: pd.Series | None = None) -> pd.DataFrame:
    """A long sweep table made short: one row per ``keys`` combination, one column per (value, swept point).

    ``values`` maps a column of ``frame`` to its label in the headers ("latency (s)" → "latency (s), batch 4");
    rows where ``keep`` is False are shown as missing (e.g. points that do not fit the device).
    """
    shown = frame if keep is None else frame[keep]
    points = list(dict.fromkeys(frame[axis]))
    out = []
    for key, _ in frame.groupby(keys, sort=False):
        key = key if isinstance(key, tuple) else (key,)
        mine = shown[(shown[keys] == pd.Series(key, index=keys)).all(axis=1)].set_index(axis)
        row = dict(zip(keys, key))
        for col, label in values.items():
            for point in points:
                row[f"{label}, {axis_label} {fmt(point)}"] = mine[col].get(point, float("nan"))
        out.append(row)
    return pd.DataFrame(out)
