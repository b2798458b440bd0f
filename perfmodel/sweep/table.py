"""Sweep tables: the rows of evaluated chunks, as columns, bound into one DataFrame ordered by point number.

Like collating printed signatures into a book: each chunk arrives as a bundle of columns (its point numbers,
the values that are the same on every row of the chunk, and the per-point arrays), and the binder lays every
column out once, in page (point) order, without building a table per chunk first.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import pandas as pd

from perfmodel.aggregate import METRICS

BOUND_PREFIX = "bound_fraction_"
CONTEXT = ("batch", "prompt_len", "gen_len")
ENTRIES = ("hardware", "model", "scenario", "method", "engine")


@dataclass(frozen=True)
class Labels:
    """A text column as codes into ``labels`` (the bound of every point, say)."""

    codes: np.ndarray
    labels: tuple[str, ...]


@dataclass
class ChunkRows:
    """One chunk's rows: point numbers and columns. A column is an array with a value per row, a :class:`Labels`,
    or a single value shared by every row (a str, a number or a bool)."""

    points: np.ndarray
    columns: dict[str, Any] = field(default_factory=dict)


def _strings(codes: np.ndarray, labels: Sequence[str]) -> pd.api.extensions.ExtensionArray:
    """A pandas ``str`` column (the dtype pandas infers for text) from codes into labels; with Arrow storage
    through an Arrow dictionary, without a Python object per row."""
    dtype = pd.StringDtype(na_value=np.nan)
    if dtype.storage == "pyarrow":
        import pyarrow as pa  # the [parquet] extra; pandas stores its text columns in Arrow when it is installed

        dictionary = pa.DictionaryArray.from_arrays(pa.array(np.asarray(codes, dtype=np.int32)),
                                                    pa.array(list(labels), type=pa.large_string()))
        return pd.array(dictionary.cast(pa.large_string()), dtype=dtype)
    return pd.array(np.array(list(labels), dtype=object)[codes], dtype=dtype)


def _text_column(parts: Sequence[ChunkRows], name: str, order: np.ndarray | None) -> Any:
    labels: dict[str, int] = {}
    codes = []
    for p in parts:
        v = p.columns[name]
        if isinstance(v, Labels):
            remap = np.array([labels.setdefault(label, len(labels)) for label in v.labels], dtype=np.int32)
            codes.append(remap[v.codes])
        else:
            codes.append(np.full(len(p.points), labels.setdefault(v, len(labels)), dtype=np.int32))
    all_codes = np.concatenate(codes)
    return _strings(all_codes if order is None else all_codes[order], list(labels))


def _pieces(parts: Sequence[ChunkRows], name: str) -> list[Any]:
    """Each chunk's values of a column that is not text: an array, or one value for every row."""
    out = []
    for p in parts:
        v = p.columns.get(name)
        if v is None:  # a bound share this chunk's ops never reach
            v = 0.0
        elif isinstance(v, Labels):
            v = np.array(v.labels, dtype=object)[v.codes]
        elif isinstance(v, str):
            v = np.full(len(p.points), v, dtype=object)
        out.append(v)
    return out


def _fill(out: np.ndarray, parts: Sequence[ChunkRows], pieces: Sequence[Any], order: np.ndarray | None) -> None:
    """Write each chunk's values into ``out`` (a row of the table's float block), in point order."""
    if order is None:
        start = 0
        for p, v in zip(parts, pieces):
            stop = start + len(p.points)
            out[start:stop] = v
            start = stop
        return
    np.take(np.concatenate([np.broadcast_to(np.asarray(v, dtype=float), len(p.points))
                            for p, v in zip(parts, pieces)]), order, out=out)


def column_order(names: Sequence[str], parameters: Sequence[str]) -> list[str]:
    """Columns of a sweep table: point, entries, parameters (grid order), context, the rest, metrics, bound
    shares (sorted)."""
    fractions = sorted(c for c in names if c.startswith(BOUND_PREFIX))
    lead = ["point", *ENTRIES, *parameters]
    lead += [c for c in CONTEXT if c not in lead]
    rest = [c for c in names if c not in lead and c not in METRICS and c not in fractions]
    return [c for c in lead if c in names] + rest + [c for c in METRICS if c in names] + fractions


def bind(parts: Sequence[ChunkRows], parameters: Sequence[str]) -> pd.DataFrame:
    """One DataFrame of every chunk's rows, ordered by point number, columns by :func:`column_order`."""
    points = np.concatenate([p.points for p in parts]) if parts else np.zeros(0, dtype=np.int64)
    n = len(points)
    order = None
    if n and not np.all(points[1:] > points[:-1]):
        order = np.full(n, -1, dtype=np.intp)
        if points.min() >= 0 and points.max() < n:  # a permutation of 0..n-1: the row of point p is order[p]
            order[points] = np.arange(n)
        if order.min() < 0:
            order = np.argsort(points, kind="stable")
    names: dict[str, None] = {"point": None}
    for p in parts:
        names.update(dict.fromkeys(p.columns))
    cols: dict[str, Any] = {"point": points if order is None else points[order]}
    floats: dict[str, list[Any]] = {}
    for name in column_order(list(names), parameters):
        if name == "point":
            continue
        present = [p.columns[name] for p in parts if name in p.columns]
        if len(present) == len(parts) and all(isinstance(v, (str, Labels)) for v in present):
            cols[name] = _text_column(parts, name, order)
            continue
        pieces = _pieces(parts, name)
        dtype = np.result_type(*(v.dtype if isinstance(v, np.ndarray) else np.asarray(v).dtype for v in pieces))
        if dtype == np.float64:  # filled below, as rows of one block
            cols[name] = None
            floats[name] = pieces
            continue
        full = [v if isinstance(v, np.ndarray) else np.full(len(p.points), v) for p, v in zip(parts, pieces)]
        out = np.concatenate(full) if len(full) > 1 else full[0]
        cols[name] = out if order is None else out[order]
    # The float columns as rows of one array: one allocation (large enough for the kernel's huge pages) instead
    # of one per column.
    block = np.empty((len(floats), n))
    for row, (name, pieces) in zip(block, floats.items()):
        _fill(row, parts, pieces, order)
        cols[name] = row
    return pd.DataFrame(cols, copy=False)
