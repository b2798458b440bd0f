"""The report as data: sections of paragraphs, figures and tables, before any HTML or Markdown is written.

A section is a page of the review handout: a title, a few sentences whose numbers are computed from the
predictions, the plots, and the tables of the numbers behind them. The HTML and Markdown writers only lay these
out, and :func:`fmt` (the output vocabulary's, perfmodel/schema.py) is the one place a number becomes text, so that
both outputs and every CLI table show the same digits. Table columns are fields of that vocabulary.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from perfmodel.files import slug
from perfmodel.schema import fmt

__all__ = ["Table", "Figure", "Section", "fmt", "wide"]


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


def wide(frame: pd.DataFrame, keys: list[str], axis: str, values: list[str], keep: pd.Series | None = None
         ) -> pd.DataFrame:
    """A long sweep table made short: one row per ``keys`` combination, one column per (value, swept point).

    Each column of ``values`` becomes one column per point of ``axis``, headed ``<field>, <axis>=<point>``
    (``latency_s, batch=4``: the field keeps its name from the output vocabulary); rows where ``keep`` is False
    are shown as missing (e.g. points that do not fit the device).
    """
    shown = frame if keep is None else frame[keep]
    points = list(dict.fromkeys(frame[axis]))
    out = []
    for key, _ in frame.groupby(keys, sort=False):
        key = key if isinstance(key, tuple) else (key,)
        mine = shown[(shown[keys] == pd.Series(key, index=keys)).all(axis=1)].set_index(axis)
        row = dict(zip(keys, key))
        for col in values:
            for point in points:
                row[f"{col}, {axis}={fmt(point)}"] = mine[col].get(point, float("nan"))
        out.append(row)
    return pd.DataFrame(out)
