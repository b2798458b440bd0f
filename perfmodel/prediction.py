"""The Prediction: one DataFrame of ops with their times, plus the aggregates everything downstream reads."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

OP_COLUMNS = ["name", "kind", "phase", "count", "flops", "bytes", "arithmetic_intensity", "time_s", "bound"]


@dataclass
class Prediction:
    """Result of a prediction.

    ``ops``: one row per op group (name, phase, shape segment) with per-instance ``flops``, ``bytes``,
    ``time_s`` and ``total_time_s`` = time_s × count, the bound, and bytes per memory level (``bytes_<level>``).
    ``summary``: latency_s, prefill_s, decode_s, tokens_per_s, steps, flops, hbm_bytes, arithmetic_intensity,
    bound, memory {...}, power_w, energy_per_token_j, price_per_hour_usd, cost_per_million_tokens_usd
    (perfmodel/power.py), and context (hardware, model, scenario, engine, batch, lengths, tensor_parallel).
    :meth:`record` flattens it into the output vocabulary (perfmodel/schema.py) that every command prints.
    """

    ops: pd.DataFrame
    summary: dict[str, Any]
    extras: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, key: str) -> Any:
        return self.summary[key]

    def op_table(self) -> pd.DataFrame:
        """Ops aggregated per (name, phase): counts and totals summed, intensity from the totals."""
        df = self.ops
        if df.empty:
            return df
        g = df.assign(total_flops=df.flops * df["count"], total_bytes=df["bytes"] * df["count"])
        agg = g.groupby(["name", "phase"], sort=False).agg(
            kind=("kind", "first"), count=("count", "sum"), total_flops=("total_flops", "sum"),
            total_bytes=("total_bytes", "sum"), time_s=("total_time_s", "sum"))
        # The bound of the group is the bound of its most time-consuming segment.
        idx = g.groupby(["name", "phase"], sort=False)["total_time_s"].idxmax()
        agg["bound"] = g.loc[idx.values, "bound"].values
        agg = agg.reset_index()
        cnt = agg["count"].where(agg["count"] > 0, 1)
        agg["flops"] = agg.total_flops / cnt
        agg["bytes"] = agg.total_bytes / cnt
        agg["arithmetic_intensity"] = agg.total_flops / agg.total_bytes.where(agg.total_bytes > 0, np.nan)
        return agg[OP_COLUMNS].sort_values("time_s", ascending=False, kind="stable").reset_index(drop=True)

    def record(self) -> dict[str, Any]:
        """The summary as one flat row of the output vocabulary (perfmodel/schema.py), in its order."""
        from perfmodel import schema

        s = self.summary
        flat = {**s.get("context", {}), **{k: v for k, v in s.items() if k not in ("context", "memory")},
                **{f"memory_{k}": v for k, v in s["memory"].items()},
                **{f"bound_fraction_{k}": v for k, v in s.get("bound_fractions", {}).items()}}
        names = []
        for name in schema.SUMMARY:
            if name == "bound_fraction_<resource>":
                names += [f"bound_fraction_{k}" for k in s.get("bound_fractions", {})]
            else:
                names.append(name)
        return schema.record(flat, names)

    def op_rows(self, top: int | None = None) -> list[dict[str, Any]]:
        """The op table (:meth:`op_table`, ``top`` rows) as rows of the output vocabulary: ``total_time_s`` is the
        op's time over all its instances, ``latency_share`` its share of the latency."""
        from perfmodel import schema

        ops = self.op_table()
        if top is not None:
            ops = ops.head(top)
        latency = self.summary["latency_s"]
        rows = []
        for r in ops.itertuples():
            rows.append(schema.record({
                "op": r.name, "phase": r.phase, "kind": r.kind, "count": r.count, "flops": r.flops,
                "bytes": r.bytes, "arithmetic_intensity": r.arithmetic_intensity, "total_time_s": r.time_s,
                "latency_share": r.time_s / latency if latency else 0.0, "bound": r.bound}, schema.OP_ROW))
        return rows

    def to_dict(self) -> dict[str, Any]:
        """What ``perfmodel predict --json`` prints: :meth:`record`, the ``ops`` (:meth:`op_rows`) and, from the
        event engine, its per-op details under ``engine_details``."""
        out = self.record()
        out["ops"] = self.op_rows()
        if self.extras:
            out["engine_details"] = dict(self.extras)
        return out
