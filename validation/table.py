"""The measurement table: one row per measured op, the common format of every importer and of the local runner.

Columns, in this order (see ``COLUMNS``)::

    hardware, op, dtype, m, n, k, batch, q_len, kv_len, heads, kv_heads, head_dim, causal, measured_s, source

followed by the extra column ``variant`` and then any further columns a writer chose to keep (they are carried
through unchanged, after the standard ones).

- ``hardware``: catalog name of the device (``h100-sxm``, ``a100-sxm-80gb``, ...).
- ``op``: ``gemm``, ``attention``, ``norm`` (rmsnorm / layernorm), ``elementwise`` (activation, rope, residual
  add, softmax, gelu) or ``embedding``.
- ``dtype``: ``bf16``, ``fp16``, ``fp8`` or ``fp32`` (common spellings such as ``bfloat16`` or ``torch.float16``
  are accepted by :func:`normalize` and rewritten).
- shape columns (nullable ``Int64``; empty where the op kind does not use them):
  gemm ``m, n, k`` (C[m,n] = A[m,k]·B[k,n]); attention ``batch, q_len, kv_len, heads, kv_heads, head_dim`` and
  ``causal`` (nullable boolean) — decode attention is ``q_len`` = 1 and ``kv_len`` = the keys attended over;
  norm, elementwise and embedding rows use ``m`` = rows (tokens) and ``n`` = width (columns).
- ``measured_s``: measured time of one call in seconds, finite and > 0.
- ``source``: where the number comes from (dataset / file : kernel source and notes).
- ``variant``: for norm / elementwise / embedding rows the operation (``rmsnorm``, ``layernorm``, ``silu_mul``,
  ``rope``, ``add``, ``gelu``, ``softmax``, ``embedding``); empty for gemm and attention.

Whole decoding steps and runs (``perfmodel measure --suite e2e``, :mod:`perfmodel.validation.e2e`) are rows with
``op`` = ``step`` (``variant`` = the phase: prefill, decode, denoise, commit, refresh) or ``run``, no shape
columns, and further columns naming what ran (``scenario``, ``model``, ``layers``, ``phase``, ``steps``,
``spec``) and its spread (``q1_s``, ``q3_s``, ``repeats``).

Files are CSV or Parquet, chosen by the suffix (``.csv``, ``.parquet`` / ``.pq``). :func:`write_table` replaces
a file atomically (temporary file in the same folder, then rename). :func:`append_rows` is for a runner that
writes as it measures: a CSV gets its header only when the file is new or empty and later rows are appended in
place (the columns must match the existing header) and a last line cut off by a crash is detected, left out
when reading and replaced when appending, so a resumed runner measures that row again; a Parquet file cannot be
appended in place, so it is read, extended and rewritten atomically — a crash mid-write leaves the previous
complete file.
"""
from __future__ import annotations

import csv
import math
import os
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from perfmodel.errors import describe
from perfmodel.shapes import COUNT_EXPECTED, bad_counts, bad_heads

COLUMNS: tuple[str, ...] = (
    "hardware", "op", "dtype", "m", "n", "k", "batch", "q_len", "kv_len", "heads", "kv_heads", "head_dim",
    "causal", "measured_s", "source",
)
VARIANT = "variant"
ALL_COLUMNS: tuple[str, ...] = COLUMNS + (VARIANT,)
INT_COLUMNS: tuple[str, ...] = ("m", "n", "k", "batch", "q_len", "kv_len", "heads", "kv_heads", "head_dim")
STRING_COLUMNS: tuple[str, ...] = ("hardware", "op", "dtype", "source", VARIANT)
REQUIRED: tuple[str, ...] = ("hardware", "op", "dtype", "measured_s", "source")

OPS: tuple[str, ...] = ("gemm", "attention", "norm", "elementwise", "embedding", "step", "run")
DTYPES: tuple[str, ...] = ("bf16", "fp16", "fp8", "fp32")
#: shape columns that must be filled for each op kind
SHAPE_COLUMNS: dict[str, tuple[str, ...]] = {
    "gemm": ("m", "n", "k"),
    "attention": ("batch", "q_len", "kv_len", "heads", "kv_heads", "head_dim", "causal"),
    "norm": ("m", "n"),
    "elementwise": ("m", "n"),
    "embedding": ("m", "n"),
}
DTYPE_ALIASES: dict[str, str] = {
    "bfloat16": "bf16", "torch.bfloat16": "bf16", "bf16": "bf16",
    "float16": "fp16", "half": "fp16", "torch.float16": "fp16", "torch.half": "fp16", "fp16": "fp16",
    "float32": "fp32", "float": "fp32", "torch.float32": "fp32", "torch.float": "fp32", "fp32": "fp32",
    "fp8": "fp8", "float8": "fp8", "fp8_e4m3": "fp8", "float8_e4m3fn": "fp8", "torch.float8_e4m3fn": "fp8",
    "fp8_e5m2": "fp8", "float8_e5m2": "fp8", "torch.float8_e5m2": "fp8",
}
_TRUE = {"true", "1", "yes", "y", "t"}
_FALSE = {"false", "0", "no", "n", "f"}
CSV_SUFFIXES = (".csv",)
PARQUET_SUFFIXES = (".parquet", ".pq")


def empty_table() -> pd.DataFrame:
    """A table with every standard column, the right dtypes and no rows."""
    return normalize(pd.DataFrame({c: pd.Series([], dtype=object) for c in ALL_COLUMNS}))


def _first_rows(mask: pd.Series, limit: int = 3) -> str:
    idx = list(mask[mask].index[:limit])
    return ", ".join(str(i) for i in idx)


@dataclass(frozen=True)
class RowProblem:
    """Rows of a table that break one rule: the column, what is wrong, what was expected and which rows."""

    column: str
    problem: str
    expected: str
    rows: pd.Series  # boolean mask over the table's rows
    examples: pd.Series  # the values as given, for the message

    @property
    def count(self) -> int:
        return int(self.rows.sum())

    def text(self) -> str:
        first = self.rows[self.rows].index[0]
        example = self.examples.get(first) if first in self.examples.index else None
        got = "" if example is None or (isinstance(example, float) and math.isnan(example)) or example is pd.NA \
            else f", got {describe(example)}"
        n = self.count
        return (f"column '{self.column}' {self.problem} in {n} row{'s' if n != 1 else ''} (first at row(s) "
                f"{_first_rows(self.rows)}{got}), expected {self.expected}")


def describe_problems(problems: list[RowProblem], total: int, verb: str = "invalid") -> str:
    """'N of M rows <verb>: ' and each broken rule with the count of rows that break it."""
    bad = pd.concat([p.rows for p in problems], axis=1).any(axis=1) if problems else pd.Series([], dtype=bool)
    return (f"{int(bad.sum())} of {total} row{'s' if total != 1 else ''} {verb}: "
            + "; ".join(p.text() for p in problems))


def _to_string(col: pd.Series) -> pd.Series:
    out = col.astype("string").str.strip()
    return out.mask(out == "", pd.NA)


def _numbers(col: pd.Series) -> tuple[pd.Series, pd.Series]:
    """(float64 values with NaN where absent or unreadable, mask of the cells that were given but unreadable)."""
    if pd.api.types.is_bool_dtype(col):
        col = col.astype("Int64")
    if pd.api.types.is_numeric_dtype(col):
        num = pd.to_numeric(col, errors="coerce").astype("Float64")
        given = col.notna()
    else:
        text = col.astype("string").str.strip()
        given = (text.notna() & (text != "")).fillna(False)
        num = pd.to_numeric(text.where(given), errors="coerce").astype("Float64")
    num = num.astype("float64")
    return num, (given & pd.Series(np.isnan(num.to_numpy()), index=col.index)).astype(bool)


def _to_int(col: pd.Series, name: str, problems: list[RowProblem]) -> pd.Series:
    num, unreadable = _numbers(col)
    if unreadable.any():
        problems.append(RowProblem(name, "is not a number", COUNT_EXPECTED + " or empty", unreadable, col))
    bad = pd.Series(bad_counts(num.to_numpy()), index=col.index)
    if bad.any():
        problems.append(RowProblem(name, "is not a valid size", COUNT_EXPECTED + " or empty", bad, col))
    return num.where(~bad).round().astype("Int64")


def _to_bool(col: pd.Series, problems: list[RowProblem]) -> pd.Series:
    if pd.api.types.is_bool_dtype(col):
        return col.astype("boolean")
    text = col.astype("string").str.strip().str.lower()
    out = pd.Series(pd.NA, index=col.index, dtype="boolean")
    out[text.isin(_TRUE).fillna(False)] = True
    out[text.isin(_FALSE).fillna(False)] = False
    bad = ((text.notna() & (text != "")).fillna(False) & out.isna()).astype(bool)
    if bad.any():
        problems.append(RowProblem("causal", "is unreadable", "true/false or empty", bad, col))
    return out


def _to_seconds(col: pd.Series, problems: list[RowProblem]) -> pd.Series:
    """The time column as float64; every row without a finite positive time is a problem (the NaN rule: the
    same for every table and importer)."""
    num, unreadable = _numbers(col)
    t = num.to_numpy()
    absent = pd.Series(np.isnan(t), index=col.index) & ~unreadable
    for mask, problem in ((absent, "is empty (no time)"), (unreadable, "is not a number"),
                          (pd.Series(np.isinf(t), index=col.index), "is infinite"),
                          (pd.Series(t <= 0, index=col.index), "is zero or negative")):
        if mask.any():
            problems.append(RowProblem("measured_s", problem, "a finite time in seconds > 0", mask.astype(bool), col))
    return num


def check_rows(df: pd.DataFrame, where: str = "measurement table") -> tuple[pd.DataFrame, list[RowProblem]]:
    """The table coerced to the standard schema (a new frame with a fresh index, every row kept) and the rules
    its rows break (empty when every row is valid).

    ``hardware, op, dtype, measured_s, source`` are required columns (a missing one is a ``ValueError``); a
    missing shape column, ``causal`` or ``variant`` is added empty. The rules: strings not empty; ``op`` and
    ``dtype`` known; sizes whole numbers from 1 to 2**31 - 1 (:mod:`perfmodel.shapes`, the rule specs follow);
    ``measured_s`` finite and > 0; every row fills the shape columns of its op kind (``SHAPE_COLUMNS``); attention
    heads a multiple of kv_heads.
    """
    if not isinstance(df, pd.DataFrame):
        raise ValueError(f"{where}: expected a pandas DataFrame, got {type(df).__name__}")
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise ValueError(f"{where}: missing column '{missing[0]}'"
                         + (f" (and {', '.join(repr(c) for c in missing[1:])})" if len(missing) > 1 else "")
                         + f"; expected columns {', '.join(COLUMNS)} (+ optional {VARIANT})")
    given = df.reset_index(drop=True)
    out = given.copy()
    problems: list[RowProblem] = []
    for c in ALL_COLUMNS:
        if c not in out.columns:
            out[c] = pd.Series(pd.NA, index=out.index, dtype=object)

    for c in STRING_COLUMNS:
        out[c] = _to_string(out[c])
    for c in ("hardware", "source"):
        empty = out[c].isna().astype(bool)
        if empty.any():
            problems.append(RowProblem(c, "is empty", "a string", empty, out[c]))
    out["op"] = out["op"].str.lower()
    bad = (~out["op"].isin(OPS)).fillna(True).astype(bool)
    if bad.any():
        problems.append(RowProblem("op", "names an unknown op", f"one of {', '.join(OPS)}", bad, given["op"]))
    dt = out["dtype"].str.lower().map(lambda v: DTYPE_ALIASES.get(v, v) if isinstance(v, str) else v)
    out["dtype"] = dt.astype("string")
    bad = (~out["dtype"].isin(DTYPES)).fillna(True).astype(bool)
    if bad.any():
        problems.append(RowProblem("dtype", "names an unknown dtype", f"one of {', '.join(DTYPES)}", bad,
                                   given["dtype"]))
    out[VARIANT] = out[VARIANT].fillna("")

    for c in INT_COLUMNS:
        out[c] = _to_int(out[c], c, problems)
    out["causal"] = _to_bool(out["causal"], problems)
    out["measured_s"] = _to_seconds(given["measured_s"], problems)

    flagged: dict[str, pd.Series] = {}  # cells already reported are not reported again as empty
    for p in problems:
        flagged[p.column] = flagged[p.column] | p.rows if p.column in flagged else p.rows
    for op, cols in SHAPE_COLUMNS.items():
        rows = (out["op"] == op).fillna(False).astype(bool)
        if not rows.any():
            continue
        for c in cols:
            empty = rows & out[c].isna().astype(bool)
            if c in flagged:
                empty &= ~flagged[c]
            if empty.any():
                problems.append(RowProblem(c, f"is empty in {op} rows", f"a value ({op} rows need {', '.join(cols)})",
                                           empty, out[c]))
    uneven = pd.Series(bad_heads(out["heads"].astype("Float64").to_numpy(dtype=float, na_value=np.nan),
                                 out["kv_heads"].astype("Float64").to_numpy(dtype=float, na_value=np.nan)),
                       index=out.index)
    if uneven.any():
        problems.append(RowProblem("kv_heads", "does not divide heads", "a divisor of the query heads (each KV "
                                   "head serves the same number of query heads)", uneven,
                                   given.get("kv_heads", out["kv_heads"])))

    extras = [c for c in out.columns if c not in ALL_COLUMNS]
    return out[list(ALL_COLUMNS) + extras], problems


def normalize(df: pd.DataFrame, where: str = "measurement table") -> pd.DataFrame:
    """Check and coerce a table to the standard schema; returns a new frame with a fresh index.

    Raises ``ValueError`` naming ``where`` (e.g. the file) and, for every rule some rows break (see
    :func:`check_rows`), the column, how many rows, the first of them and what was expected.
    """
    out, problems = check_rows(df, where)
    if problems:
        raise ValueError(f"{where}: " + describe_problems(problems, len(out)))
    return out


def valid_rows(df: pd.DataFrame, where: str = "measurement table") -> tuple[pd.DataFrame, str | None]:
    """The rows of ``df`` that obey every rule, normalized, and a message counting the dropped rows by reason
    (None when no row was dropped). Importers use it: a public dataset's failed runs are left out, not fatal."""
    out, problems = check_rows(df, where)
    if not problems:
        return out, None
    bad = pd.concat([p.rows for p in problems], axis=1).any(axis=1)
    kept = out[~bad].reset_index(drop=True)
    return kept, f"{where}: " + describe_problems(problems, len(out), "dropped")


def table_format(path: str | os.PathLike) -> str:
    """``"csv"`` or ``"parquet"`` from the file suffix; ``ValueError`` for anything else."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in CSV_SUFFIXES:
        return "csv"
    if suffix in PARQUET_SUFFIXES:
        return "parquet"
    raise ValueError(f"{path}: unknown table format {suffix or '(no suffix)'!r}, expected .csv or .parquet")


class TornLine(UserWarning):
    """The last line of a CSV table was cut off (a crash while a row was being appended); it was left out."""


def _torn_tail(path: Path) -> int | None:
    """Byte offset where a torn last line of the CSV at ``path`` starts, or None when the file ends cleanly.

    Rows are appended whole, each ending in a newline, so a last line without one was cut off by a crash unless
    it is a complete row (the same number of fields as the header: a hand-written file may lack the final
    newline). A cut inside the last field cannot be told from a complete row by its fields, so
    :func:`append_rows` writes each batch of rows in one system call.
    """
    size = path.stat().st_size
    if size == 0:
        return None
    with path.open("rb") as fh:
        fh.seek(-1, os.SEEK_END)
        if fh.read(1) in (b"\n", b"\r"):
            return None
        fh.seek(0)
        data = fh.read()
    start = max(data.rfind(b"\n"), data.rfind(b"\r")) + 1
    if start == 0:  # a header without a newline: complete if it parses as a header
        return None
    header = next(csv.reader([data[:data.find(b"\n")].decode("utf-8", "replace").rstrip("\r")]), [])
    try:
        last = next(csv.reader([data[start:].decode("utf-8")]), [])
    except (UnicodeDecodeError, csv.Error):
        return start
    return None if len(last) == len(header) else start


def read_table(path: str | os.PathLike) -> pd.DataFrame:
    """Read and normalize a measurement table (CSV or Parquet by suffix).

    A CSV whose last line was cut off by a crash (see :func:`append_rows`) is read without it, with a
    :class:`TornLine` warning, so that a resumed measurement measures that row again.
    """
    path = Path(path)
    kind = table_format(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such file, expected a measurement table (.csv or .parquet)")
    try:
        if kind == "csv":
            torn = _torn_tail(path)
            if torn is None:
                df = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
            else:
                warnings.warn(TornLine(f"{path}: the last line is incomplete (cut off at byte {torn}); "
                                       "it is left out"), stacklevel=2)
                import io

                with path.open("rb") as fh:
                    head = fh.read(torn)
                df = pd.read_csv(io.BytesIO(head), dtype=str, keep_default_na=False, na_values=[""])
        else:
            df = pd.read_parquet(path)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise ValueError(f"{path}: not a readable {kind} table ({exc})") from exc
    if kind == "csv" and df.empty and len(df.columns) == 0:
        raise ValueError(f"{path}: empty file, expected a CSV header with columns {', '.join(COLUMNS)}")
    return normalize(df, where=str(path))


def _atomic_write(df: pd.DataFrame, path: Path, kind: str) -> None:
    from perfmodel.files import write_atomic

    if kind == "csv":
        write_atomic(path, lambda tmp: df.to_csv(tmp, index=False))
    else:
        write_atomic(path, lambda tmp: df.to_parquet(tmp, index=False))


def write_table(df: pd.DataFrame, path: str | os.PathLike) -> pd.DataFrame:
    """Normalize ``df`` and write it (CSV or Parquet by suffix), replacing the file atomically; returns it."""
    path = Path(path)
    kind = table_format(path)
    table = normalize(df, where=str(path))
    _atomic_write(table, path, kind)
    return table


def _rows_frame(rows: pd.DataFrame | Mapping[str, Any] | Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    if isinstance(rows, pd.DataFrame):
        return rows
    if isinstance(rows, Mapping):
        return pd.DataFrame([dict(rows)])
    return pd.DataFrame([dict(r) for r in rows])


def append_rows(path: str | os.PathLike,
                rows: pd.DataFrame | Mapping[str, Any] | Iterable[Mapping[str, Any]]) -> int:
    """Append measured rows (a DataFrame, one dict or an iterable of dicts) to a table file; returns the count.

    CSV: the header is written only when the file is new or empty; otherwise the rows are appended in place
    after checking that their columns equal the file's header, in one ``write`` call; a last line cut off by an
    earlier crash is removed first (:class:`TornLine`). Parquet: read, extend, rewrite atomically.
    """
    path = Path(path)
    kind = table_format(path)
    new = normalize(_rows_frame(rows), where=f"rows for {path}")
    if new.empty:
        return 0
    exists = path.is_file() and path.stat().st_size > 0
    if kind == "parquet":
        table = pd.concat([read_table(path), new], ignore_index=True) if exists else new
        _atomic_write(normalize(table, where=str(path)), path, kind)
        return len(new)
    if not exists:
        _atomic_write(new, path, kind)
        return len(new)
    with path.open("r", newline="") as fh:
        header = next(csv.reader(fh), [])
    if set(header) != set(new.columns) or len(header) != len(new.columns):
        raise ValueError(f"{path}: existing header has columns {', '.join(header)}; "
                         f"the new rows have {', '.join(new.columns)}, expected the same columns")
    torn = _torn_tail(path)
    if torn is not None:  # a row cut off by a crash: drop it (it was never complete, so never counted as done)
        warnings.warn(TornLine(f"{path}: the last line is incomplete (cut off at byte {torn}); it is replaced"),
                      stacklevel=2)
        os.truncate(path, torn)
    with path.open("rb") as fh:
        fh.seek(-1, os.SEEK_END)
        needs_newline = fh.read(1) not in (b"\n", b"\r")
    text = ("\n" if needs_newline else "") + new[header].to_csv(index=False, header=False, lineterminator="\n")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        data = text.encode("utf-8")
        while data:  # one write for the whole batch; a short write (a full disk) continues where it stopped
            data = data[os.write(fd, data):]
    finally:
        os.close(fd)
    return len(new)


def summarize(df: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows per (hardware, op, dtype, variant), with the median and range of ``measured_s``."""
    if df.empty:
        return []
    keys = ["hardware", "op", "dtype", VARIANT]
    g = df.groupby(keys, sort=True, dropna=False)["measured_s"]
    out = []
    for key, s in g:
        rec = dict(zip(keys, key))
        rec.update(rows=int(s.size), min_s=float(s.min()), median_s=float(s.median()), max_s=float(s.max()))
        out.append({k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in rec.items()})
    return out
