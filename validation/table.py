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
place (the columns must match the existing header); a Parquet file cannot be appended in place, so it is read,
extended and rewritten atomically — a crash mid-write leaves the previous complete file.
"""
from __future__ import annotations

import csv
import math
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

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


def _to_string(col: pd.Series) -> pd.Series:
    out = col.astype("string").str.strip()
    return out.mask(out == "", pd.NA)


def _to_int(col: pd.Series, name: str, where: str) -> pd.Series:
    if pd.api.types.is_numeric_dtype(col):
        given = col.notna()
        num = pd.to_numeric(col, errors="coerce")
    else:
        text = col.astype("string").str.strip()
        given = (text.notna() & (text != "")).fillna(False)
        num = pd.to_numeric(text.where(given), errors="coerce")
    bad = given & num.isna()
    if bad.any():
        raise ValueError(f"{where}: column '{name}': non-numeric value(s) at row(s) {_first_rows(bad)}, "
                         "expected positive integers or empty")
    num = num.astype("Float64")
    frac = num.notna() & ((num % 1) != 0).fillna(False)
    if frac.any():
        raise ValueError(f"{where}: column '{name}': non-integer value(s) at row(s) {_first_rows(frac)}, "
                         "expected positive integers or empty")
    small = (num < 1).fillna(False)
    if small.any():
        raise ValueError(f"{where}: column '{name}': value(s) < 1 at row(s) {_first_rows(small)}, "
                         "expected positive integers or empty")
    return num.round().astype("Int64")


def _to_bool(col: pd.Series, where: str) -> pd.Series:
    if pd.api.types.is_bool_dtype(col):
        return col.astype("boolean")
    text = col.astype("string").str.strip().str.lower()
    out = pd.Series(pd.NA, index=col.index, dtype="boolean")
    out[text.isin(_TRUE).fillna(False)] = True
    out[text.isin(_FALSE).fillna(False)] = False
    bad = (text.notna() & (text != "")).fillna(False) & out.isna()
    if bad.any():
        raise ValueError(f"{where}: column 'causal': unreadable value(s) at row(s) {_first_rows(bad)}, "
                         "expected true/false or empty")
    return out


def normalize(df: pd.DataFrame, where: str = "measurement table") -> pd.DataFrame:
    """Check and coerce a table to the standard schema; returns a new frame with a fresh index.

    ``hardware, op, dtype, measured_s, source`` are required; a missing shape column, ``causal`` or
    ``variant`` is added empty. Every row must fill the shape columns its op kind needs (``SHAPE_COLUMNS``).
    Raises ``ValueError`` naming ``where`` (e.g. the file), the column and what was expected.
    """
    if not isinstance(df, pd.DataFrame):
        raise ValueError(f"{where}: expected a pandas DataFrame, got {type(df).__name__}")
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise ValueError(f"{where}: missing column '{missing[0]}'"
                         + (f" (and {', '.join(repr(c) for c in missing[1:])})" if len(missing) > 1 else "")
                         + f"; expected columns {', '.join(COLUMNS)} (+ optional {VARIANT})")
    out = df.reset_index(drop=True).copy()
    for c in ALL_COLUMNS:
        if c not in out.columns:
            out[c] = pd.Series(pd.NA, index=out.index, dtype=object)

    for c in STRING_COLUMNS:
        out[c] = _to_string(out[c])
    for c in ("hardware", "source"):
        empty = out[c].isna()
        if empty.any():
            raise ValueError(f"{where}: column '{c}' is empty at row(s) {_first_rows(empty)}, expected a string")
    out["op"] = out["op"].str.lower()
    bad = ~out["op"].isin(OPS).fillna(False)
    if bad.any():
        found = out.loc[bad, "op"].iloc[0]
        raise ValueError(f"{where}: column 'op': got {found!r} at row(s) {_first_rows(bad)}, "
                         f"expected one of {', '.join(OPS)}")
    dt = out["dtype"].str.lower().map(lambda v: DTYPE_ALIASES.get(v, v) if isinstance(v, str) else v)
    out["dtype"] = dt.astype("string")
    bad = ~out["dtype"].isin(DTYPES).fillna(False)
    if bad.any():
        found = df["dtype"].reset_index(drop=True)[bad].iloc[0]
        raise ValueError(f"{where}: column 'dtype': got {found!r} at row(s) {_first_rows(bad)}, "
                         f"expected one of {', '.join(DTYPES)}")
    out[VARIANT] = out[VARIANT].fillna("")

    for c in INT_COLUMNS:
        out[c] = _to_int(out[c], c, where)
    out["causal"] = _to_bool(out["causal"], where)

    t = pd.to_numeric(out["measured_s"].astype("string").str.strip()
                      if not pd.api.types.is_numeric_dtype(out["measured_s"]) else out["measured_s"],
                      errors="coerce").astype("float64")
    bad = ~(np.isfinite(t.to_numpy()) & (t.to_numpy() > 0))
    if bad.any():
        mask = pd.Series(bad, index=out.index)
        found = df["measured_s"].reset_index(drop=True)[mask].iloc[0]
        raise ValueError(f"{where}: column 'measured_s': got {found!r} at row(s) {_first_rows(mask)}, "
                         "expected a finite time in seconds > 0")
    out["measured_s"] = t

    for op, cols in SHAPE_COLUMNS.items():
        rows = out["op"] == op
        if not rows.any():
            continue
        for c in cols:
            empty = rows & out[c].isna()
            if empty.any():
                raise ValueError(f"{where}: column '{c}' is empty in {int(empty.sum())} {op} row(s) "
                                 f"(first at row(s) {_first_rows(empty)}); {op} rows need {', '.join(cols)}")

    extras = [c for c in out.columns if c not in ALL_COLUMNS]
    return out[list(ALL_COLUMNS) + extras]


def table_format(path: str | os.PathLike) -> str:
    """``"csv"`` or ``"parquet"`` from the file suffix; ``ValueError`` for anything else."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in CSV_SUFFIXES:
        return "csv"
    if suffix in PARQUET_SUFFIXES:
        return "parquet"
    raise ValueError(f"{path}: unknown table format {suffix or '(no suffix)'!r}, expected .csv or .parquet")


def read_table(path: str | os.PathLike) -> pd.DataFrame:
    """Read and normalize a measurement table (CSV or Parquet by suffix)."""
    path = Path(path)
    kind = table_format(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such file, expected a measurement table (.csv or .parquet)")
    try:
        if kind == "csv":
            df = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
        else:
            df = pd.read_parquet(path)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise ValueError(f"{path}: not a readable {kind} table ({exc})") from exc
    if kind == "csv" and df.empty and len(df.columns) == 0:
        raise ValueError(f"{path}: empty file, expected a CSV header with columns {', '.join(COLUMNS)}")
    return normalize(df, where=str(path))


def _atomic_write(df: pd.DataFrame, path: Path, kind: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        if kind == "csv":
            df.to_csv(tmp, index=False)
        else:
            df.to_parquet(tmp, index=False)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


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
    after checking that their columns equal the file's header. Parquet: read, extend, rewrite atomically.
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
    with path.open("rb") as fh:
        fh.seek(-1, os.SEEK_END)
        needs_newline = fh.read(1) not in (b"\n", b"\r")
    with path.open("a", newline="") as fh:
        if needs_newline:
            fh.write("\n")
        new[header].to_csv(fh, index=False, header=False)
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
