"""Predictions for the end-to-end suite's rows: whole steps and whole runs, like for like.

The marking scheme of the time trial: each row names the model and scenario it ran (``spec``) and the phase
it timed. :func:`perfmodel.predict` on the row's hardware spec gives every op of the workload with its time and
count; a step row is compared with the predicted time of all passes of its phase divided by their number (the
measurement is the mean step of that phase over the run), a run row with the predicted time of every pass.
Beside each prediction: the phase's work per step (``flops``, ``bytes``), the bound of its largest op, and the
ops that take most of the predicted step (``top_ops``), which says where an error comes from.
"""
from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd

from perfmodel.specs.hardware import Hardware, load_hardware

E2E_OPS = ("step", "run")


def _specs(spec: str):
    from perfmodel.specs.base import validate
    from perfmodel.specs.model import Model
    from perfmodel.specs.scenario import Scenario

    try:
        data = json.loads(spec)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"e2e row: column 'spec' is not JSON ({exc}); expected the model and scenario as run") from None
    if not isinstance(data, dict) or set(data) != {"model", "scenario"}:
        raise ValueError("e2e row: column 'spec': expected a JSON object with keys 'model' and 'scenario'")
    return validate(Model, data["model"], "e2e row spec.model"), validate(Scenario, data["scenario"],
                                                                          "e2e row spec.scenario")


def _top(df: pd.DataFrame, n: int = 4) -> str:
    share = df.groupby("name")["total_time_s"].sum().sort_values(ascending=False)
    total = float(share.sum()) or 1.0
    return ", ".join(f"{name} {100 * t / total:.0f}%" for name, t in share.head(n).items())


def phase_predictions(hw: Hardware, spec: str, engine: str = "analytic") -> dict[str, dict[str, Any]]:
    """{phase: {time_s, flops, bytes, bound, top_ops} per step} and {"": the whole run} for one spec."""
    from perfmodel.api import predict
    from perfmodel.workload import build_workload

    model, scenario = _specs(spec)
    pred = predict(hw, model, scenario, engine=engine)
    wl = build_workload(model, scenario)
    counts: dict[str, float] = {}
    for ps in wl.passes:
        counts[ps.phase] = counts.get(ps.phase, 0.0) + float(ps.count)
    df = pred.ops.assign(total_flops=pred.ops.flops * pred.ops["count"],
                         total_bytes=pred.ops["bytes"] * pred.ops["count"])
    out: dict[str, dict[str, Any]] = {}
    for phase, g in list(df.groupby("phase", sort=False)) + [("", df)]:
        n = counts.get(phase, 0.0) if phase else 1.0
        if n <= 0:
            continue
        biggest = g.loc[g.total_time_s.idxmax()]
        out[phase] = {"time_s": float(g.total_time_s.sum()) / n, "flops": float(g.total_flops.sum()) / n,
                      "bytes": float(g.total_bytes.sum()) / n, "bound": str(biggest["bound"]), "top_ops": _top(g)}
    return out


def predict_e2e(table: pd.DataFrame, hardware: str | Hardware | None = None, engine: str = "analytic",
                overrides: dict[str, Any] | None = None) -> pd.DataFrame:
    """``table`` (step and run rows) with ``predicted_s``, ``bound``, ``flops``, ``bytes``, ``top_ops`` and
    ``predicted_hardware``; rows use their own hardware unless ``hardware`` overrides it."""
    for col in ("spec", "phase"):
        if col not in table:
            raise ValueError(f"e2e rows: missing column {col!r}; expected the columns perfmodel measure --suite e2e "
                             "writes (scenario, model, layers, phase, steps, spec)")
    hw_cache: dict[str, Hardware] = {}
    pred_cache: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
    res = table.copy()
    cols: dict[str, list] = {k: [] for k in ("predicted_s", "bound", "flops", "bytes", "top_ops", "predicted_hardware")}
    for _, row in table.iterrows():
        hw_name = hardware if hardware is not None else row["hardware"]
        hw_key = hw_name if isinstance(hw_name, str) else hw_name.name
        if hw_key not in hw_cache:
            hw_cache[hw_key] = hw_name if isinstance(hw_name, Hardware) else load_hardware(hw_name, overrides)
        hw = hw_cache[hw_key]
        key = (hw_key, str(row["spec"]))
        if key not in pred_cache:
            pred_cache[key] = phase_predictions(hw, str(row["spec"]), engine)
        phase = "" if row["op"] == "run" else str(row["phase"])
        p = pred_cache[key].get(phase)
        if p is None:
            raise ValueError(f"e2e row: phase {phase!r} of {row.get('scenario')} has no passes in the workload; "
                             f"expected one of {', '.join(k for k in pred_cache[key] if k)}")
        for k in ("flops", "bytes", "bound", "top_ops"):
            cols[k].append(p[k])
        cols["predicted_s"].append(p["time_s"])
        cols["predicted_hardware"].append(hw.name)
    for k, v in cols.items():
        res[k] = v
    return res


def is_e2e(table: pd.DataFrame) -> np.ndarray:
    return table["op"].isin(E2E_OPS).to_numpy(dtype=bool)
