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
    bound, memory {...}, and context (hardware, model, scenario, engine).
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

    def to_dict(self) -> dict[str, Any]:
        out = dict(self.summary)
        ops = self.op_table()
        out["ops"] = ops.replace({np.nan: None}).to_dict(orient="records")
        out.update(self.extras)
        return out
