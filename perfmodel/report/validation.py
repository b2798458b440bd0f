"""Validation section: the model against measured kernel times, by op kind.

The review lists measurement tables (CSV or Parquet, one row per measured op: ``hardware, op, dtype``, the op
kind's shape columns, ``measured_s, source``). Where ``perfmodel.validation`` is installed the report reads them
with its ``table.read_table`` and predicts them with ``compare.predict_table`` (the same path as ``perfmodel
validate``: benchmark reuse reconstructed per source, companion kernels included); a row whose hardware is a
device of the review is predicted with that device's spec. Without it, each gemm or attention row is predicted
here with ``perfmodel.api.predict_op(make_op(kind, **shape), hardware)``. Errors are absolute percentage errors
|predicted − measured| / measured, summarised per (device, op kind) by their median and 90th percentile, with the
Spearman rank correlation (do bigger kernels get bigger predictions?).
"""
from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path
from types import ModuleType

import numpy as np
import pandas as pd

from perfmodel.errors import SpecError
from perfmodel.report import plots
from perfmodel.report.context import Context
from perfmodel.report.document import Figure, Section, Table, fmt
from perfmodel.report.style import series_styles

REQUIRED = ("hardware", "op", "dtype", "measured_s")
SHAPE_COLUMNS = {"gemm": ("m", "n", "k"), "attention": ("batch", "q_len", "kv_len", "heads", "kv_heads", "head_dim")}
DTYPE_ALIASES = {"bfloat16": "bf16", "float16": "fp16", "half": "fp16", "float32": "fp32", "float": "fp32",
                 "float8": "fp8", "float8_e4m3fn": "fp8"}


def _module(name: str) -> ModuleType | None:
    """An optional module of the package (``perfmodel.validation.*``), or None where it is not installed."""
    parent = name.rsplit(".", 1)[0]
    if importlib.util.find_spec(parent) is None or importlib.util.find_spec(name) is None:
        return None
    return importlib.import_module(name)


def read_table(path: Path) -> pd.DataFrame:
    """A measurement table from CSV or Parquet, checked (by ``perfmodel.validation.table`` where installed)."""
    table_module = _module("perfmodel.validation.table")
    if table_module is not None and hasattr(table_module, "read_table"):
        return table_module.read_table(path).assign(table=path.name)
    if not path.is_file():
        raise SpecError(str(path), "<file>", str(path), "an existing CSV or Parquet measurement table")
    frame = pd.read_parquet(path) if path.suffix in (".parquet", ".pq") else pd.read_csv(path)
    missing = [c for c in REQUIRED if c not in frame.columns]
    if missing:
        raise SpecError(str(path), "<columns>", missing, f"columns {', '.join(REQUIRED)} and the shape columns "
                                                         f"of each op kind")
    return frame.assign(table=path.name)


def _predict(ctx: Context, table: pd.DataFrame) -> tuple[pd.DataFrame, list[str], str]:
    """(rows with predicted_s, notes on skipped rows, what predicted them)."""
    compare = _module("perfmodel.validation.compare")
    if compare is None or not hasattr(compare, "predict_table"):
        rows, skipped = _predict_rows(ctx, table)
        return rows, skipped, "perfmodel.api.predict_op"
    devices = {d.name: d.hardware for d in ctx.devices}
    parts = [compare.predict_table(sub, devices.get(name), ctx.review.engine)
             for name, sub in table.groupby("hardware", sort=False)]
    return pd.concat(parts, ignore_index=True), [], "perfmodel.validation.compare.predict_table"


def _predict_rows(ctx: Context, table: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Predict each row with ``predict_op``; rows that cannot be predicted are dropped with a reason."""
    from perfmodel.api import make_op, predict_op
    from perfmodel.specs.hardware import load_hardware

    devices = {d.name: d.hardware for d in ctx.devices}
    skipped: dict[str, int] = {}
    predicted = []
    for row in table.itertuples(index=False):
        kind = str(row.op)
        try:
            hw = devices.get(row.hardware) or devices.setdefault(row.hardware, load_hardware(row.hardware))
            shape = {c: int(getattr(row, c)) for c in SHAPE_COLUMNS[kind]}
            if kind == "attention":
                shape["mask"] = "causal" if bool(getattr(row, "causal", True)) else "bidirectional"
            dtype = DTYPE_ALIASES.get(str(row.dtype), str(row.dtype))
            predicted.append(predict_op(make_op(kind, dtype=dtype, **shape), hw, ctx.review.engine)["time_s"])
        except (KeyError, ValueError, AttributeError) as exc:
            reason = f"{kind} on {row.hardware}: {str(exc).splitlines()[0][:120]}"
            skipped[reason] = skipped.get(reason, 0) + 1
            predicted.append(np.nan)
    out = table.assign(predicted_s=predicted)
    return out[out.predicted_s.notna()], [f"{n} row(s) skipped ({reason})" for reason, n in skipped.items()]


def error_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Median and p90 absolute percentage error and Spearman rank correlation per (device, op kind)."""
    out = []
    for (hardware, kind), g in rows.groupby(["hardware", "kind"], sort=True):
        ape = (g.predicted_s - g.measured_s).abs() / g.measured_s * 100
        rho = g.measured_s.rank().corr(g.predicted_s.rank()) if len(g) > 1 else float("nan")
        out.append({"hardware": hardware, "kind": kind, "rows": len(g), "median_ape_pct": float(ape.median()),
                    "p90_ape_pct": float(ape.quantile(0.9)), "spearman": float(rho),
                    "predicted_over_measured": float((g.predicted_s / g.measured_s).median())})
    return pd.DataFrame(out)


def build(ctx: Context) -> Section:
    """Error table by op kind and the predicted-vs-measured scatter, or a note that no tables were given."""
    paths = [Path(p) if Path(p).is_absolute() else ctx.base_dir / p for p in ctx.review.validation]
    if not paths:
        return Section("validation", "Validation", ["No measurement tables are listed under 'validation' in the "
                                                    "review file, so the model is not checked against measurements "
                                                    "in this report."])
    table = pd.concat([read_table(p) for p in paths], ignore_index=True)
    rows, notes, method = _predict(ctx, table)
    rows = rows.assign(kind=rows.op.astype(str))
    errors = error_table(rows)
    paragraphs = [f"{fmt(len(rows))} measured ops from {', '.join(p.name for p in paths)}, predicted with "
                  f"{method} ({ctx.review.engine} engine).", *notes]
    for _, e in errors.iterrows():
        paragraphs.append(f"{e['kind']} on {e.hardware}: median error {fmt(e['median_ape_pct'])} %, p90 "
                          f"{fmt(e['p90_ape_pct'])} %, rank correlation {fmt(e['spearman'])} over {fmt(e.rows)} ops.")
    figures = []
    if len(rows):
        fig = plots.validation_scatter(rows, series_styles(sorted(rows.kind.unique())))
        figures.append(Figure("validation", "Predicted against measured time per op (log-log); the solid line is "
                              "perfect agreement, the dotted lines a factor of two.", plots.to_png(fig, ctx.review.dpi)))
    keep = [c for c in ("hardware", "op", "dtype", *dict.fromkeys(c for cols in SHAPE_COLUMNS.values() for c in cols),
                        "causal", "variant", "measured_s", "predicted_s", "bound", "source", "table") if c in rows.columns]
    return Section("validation", "Validation", paragraphs, figures,
                   [Table("validation_errors", "Error by op kind", errors),
                    Table("validation_rows", "Every predicted row", rows[keep], shown=0)])
