"""Importer for Nsight Compute CSV exports (``ncu --csv --page raw`` or ``--page details``).

ncu knows kernels, not op shapes, so the caller supplies them, either

- one shape for every kernel (``op``, ``dtype``, ``hardware`` and the shape columns as keyword arguments, the
  CLI's ``--op gemm --m 4096 --n 4096 --k 4096 --dtype bf16 --hardware h100-sxm``), optionally restricted to
  the kernels whose name matches ``kernel`` (a regular expression, searched), or
- a shapes CSV (``shapes=``, the CLI's ``--shapes``) with a ``kernel`` column of regular expressions and any of
  the table's columns (``op, dtype, hardware, variant, m, n, k, batch, q_len, kv_len, heads, kv_heads,
  head_dim, causal``); each kernel takes the first row whose pattern its name matches, blank cells fall back
  to the keyword arguments, and kernels that match no row are left out.

Both export layouts are read:

- raw (wide): one row per kernel, one column per metric, the second line holding the units; the time is the
  ``gpu__time_duration.sum`` column.
- details (long): one row per kernel and metric with ``Metric Name, Metric Unit, Metric Value``; the time is
  ``gpu__time_duration.sum`` when collected (``--metrics gpu__time_duration.sum``) else the ``Duration`` row
  of the speed-of-light section.

Units ``nsecond``, ``usecond``, ``msecond``, ``second`` (and ``ns``, ``us``, ``ms``, ``s``) become seconds;
thousands separators in values are dropped. Lines before the header (``==PROF==`` messages, program output) are
skipped. Each row's ``source`` is ``ncu/<file>:<kernel name> id=<ID>``. Note that ncu serialises kernels and
by default flushes caches and locks clocks to base, so its times are cold-cache, base-clock times.
"""
from __future__ import annotations

import csv
import io
import os
import re
from pathlib import Path
from typing import Any

import pandas as pd

DATASET = "ncu"
TIME_METRICS = ("gpu__time_duration.sum", "Duration")
UNITS_PER_S = {"nsecond": 1e9, "ns": 1e9, "usecond": 1e6, "us": 1e6, "msecond": 1e3, "ms": 1e3,
               "second": 1.0, "s": 1.0}
NAME_COLUMNS = ("Kernel Name", "Function Name", "Name")
ROW_FIELDS = ("op", "dtype", "hardware", "variant", "m", "n", "k", "batch", "q_len", "kv_len", "heads",
              "kv_heads", "head_dim", "causal")


def _rows(path: Path) -> list[list[str]]:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise ValueError(f"{path}: cannot read ({exc})") from exc
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.lstrip().startswith(('"ID"', "ID,"))), None)
    if start is None:
        raise ValueError(f"{path}: not an Nsight Compute CSV export, expected a header line starting with "
                         "\"ID\" (ncu --csv --page raw or --page details)")
    return [r for r in csv.reader(io.StringIO("\n".join(lines[start:]))) if r]


def _seconds(value: str, unit: str, path: Path, where: str) -> float:
    per_s = UNITS_PER_S.get(unit.strip())
    if per_s is None:
        raise ValueError(f"{path}: {where}: unit {unit!r}, expected one of {', '.join(UNITS_PER_S)}")
    try:
        return float(value.replace(",", "").strip()) / per_s
    except ValueError:  # "n/a" or blank: the kernel's row is dropped and counted, as in every importer
        return float("nan")


def read_kernels(path: str | os.PathLike) -> pd.DataFrame:
    """Kernel times of an ncu CSV: columns ``id``, ``kernel``, ``time_s``, one row per profiled kernel."""
    path = Path(path)
    rows = _rows(path)
    header, body = rows[0], rows[1:]
    col = {name: i for i, name in enumerate(header)}
    name_col = next((c for c in NAME_COLUMNS if c in col), None)
    if name_col is None:
        raise ValueError(f"{path}: missing column 'Kernel Name', expected an ncu CSV with a kernel name column")
    out: list[dict[str, Any]] = []
    if "Metric Name" in col:
        for c in ("Metric Unit", "Metric Value"):
            if c not in col:
                raise ValueError(f"{path}: missing column '{c}', expected the ncu --page details layout")
        best: dict[str, tuple[int, dict[str, Any]]] = {}
        for line, r in enumerate(body, start=2):
            metric = r[col["Metric Name"]] if len(r) > col["Metric Name"] else ""
            if metric not in TIME_METRICS:
                continue
            rank = TIME_METRICS.index(metric)
            kid = r[col["ID"]]
            t = _seconds(r[col["Metric Value"]], r[col["Metric Unit"]], path, f"line {line}, metric {metric}")
            if kid not in best or rank < best[kid][0]:
                best[kid] = (rank, {"id": kid, "kernel": r[col[name_col]], "time_s": t})
        out = [rec for _, rec in best.values()]
    elif "gpu__time_duration.sum" in col:
        i = col["gpu__time_duration.sum"]
        unit = ""
        if body and body[0][col["ID"]].strip() == "":
            unit, body = body[0][i], body[1:]
        for line, r in enumerate(body, start=3 if unit else 2):
            out.append({"id": r[col["ID"]], "kernel": r[col[name_col]],
                        "time_s": _seconds(r[i], unit or "nsecond", path, f"line {line}, gpu__time_duration.sum")})
    else:
        raise ValueError(f"{path}: missing column 'gpu__time_duration.sum' (raw page) or 'Metric Name' (details "
                         "page), expected an export of ncu --metrics gpu__time_duration.sum --csv")
    if not out:
        raise ValueError(f"{path}: no kernel with a {' or '.join(TIME_METRICS)} metric")
    return pd.DataFrame(out, columns=["id", "kernel", "time_s"])


def _read_shapes(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise ValueError(f"{path}: no such file, expected a shapes CSV with a 'kernel' column of regexes")
    try:
        shapes = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise ValueError(f"{path}: not a readable CSV file ({exc})") from exc
    if "kernel" not in shapes.columns:
        raise ValueError(f"{path}: missing column 'kernel', expected a regular expression per row plus any of "
                         f"{', '.join(ROW_FIELDS)}")
    unknown = [c for c in shapes.columns if c != "kernel" and c not in ROW_FIELDS]
    if unknown:
        raise ValueError(f"{path}: unknown column '{unknown[0]}', expected kernel and any of {', '.join(ROW_FIELDS)}")
    for i, pattern in enumerate(shapes["kernel"]):
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"{path}: column 'kernel', row {i + 2}: bad regular expression {pattern!r} "
                             f"({exc})") from None
    return shapes


def import_path(path: str | os.PathLike, *, shapes: str | os.PathLike | None = None, kernel: str | None = None,
                **fields: Any) -> pd.DataFrame:
    """Rows of the measurement table for the kernels of one ncu CSV, with shapes as described above."""
    from perfmodel.validation.importers import keep_valid

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such file, expected an Nsight Compute CSV export")
    unknown = [k for k in fields if k not in ROW_FIELDS]
    if unknown:
        raise ValueError(f"ncu import: unknown field {unknown[0]!r}, expected any of {', '.join(ROW_FIELDS)}")
    defaults = {k: v for k, v in fields.items() if v is not None}
    kernels = read_kernels(path)
    if kernel is not None:
        try:
            kernels = kernels[kernels["kernel"].str.contains(kernel, regex=True)]
        except re.error as exc:
            raise ValueError(f"ncu import: bad kernel regular expression {kernel!r} ({exc})") from None
        if kernels.empty:
            raise ValueError(f"{path}: no kernel name matches {kernel!r}")
    table = _read_shapes(Path(shapes)) if shapes is not None else None
    if table is None and "op" not in defaults:
        raise ValueError(f"{path}: ncu exports carry no op shapes; give the op and its shape (--op gemm --m M "
                         "--n N --k K ...) or a --shapes CSV mapping kernel-name regexes to shapes")
    records = []
    for rec in kernels.itertuples(index=False):
        row = dict(defaults)
        if table is not None:
            match = next((r for _, r in table.iterrows() if re.search(r["kernel"], rec.kernel)), None)
            if match is None:
                continue
            row.update({k: v for k, v in match.items() if k != "kernel" and str(v).strip() != ""})
        row.update(measured_s=rec.time_s, source=f"{DATASET}/{path.name}:{rec.kernel} id={rec.id}")
        records.append(row)
    if not records:
        raise ValueError(f"{path}: no kernel matched a pattern of {shapes}, expected at least one match")
    for req in ("hardware", "dtype"):
        if any(req not in r for r in records):
            raise ValueError(f"{path}: no {req} for some kernels; give --{req} or a '{req}' column in the shapes CSV")
    return keep_valid(pd.DataFrame(records), path)
