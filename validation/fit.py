"""Fitting a GPU's efficiency block from microbenchmark-like rows of a public measurement table.

The efficiency block (achievable fraction of the tensor peak, of L2 and HBM bandwidth, and the fixed
per-kernel cost) is a property of the device and its software stack, not of any one shape. It is fit on a
few named subsets that behave like microbenchmarks, each dominated by one term, and the error is then
reported on every other row:

- ``gemm_large``: GEMMs with m, n, k ≥ 4096 — compute (and L2) bound: the tensor efficiency.
- ``gemv_stream``: GEMMs with m ≤ 4 and n·k ≥ 2²⁶ (≥ 128 MiB of bf16 weights) — HBM streaming.
- ``gemm_tiny``: GEMMs with m, n, k ≤ 64 — nothing to do but launch: the fixed per-kernel cost.
- ``attn_decode_long``: decode attention (q_len 1) with batch·kv_len ≥ 2²⁰ tokens — HBM streaming of a cache.
- ``attn_decode_tiny``: decode attention with batch ≤ 4 and kv_len ≤ 16 — the fixed cost of an attention call.
- ``attn_prefill_tiny``: prefill attention of ≤ 16 tokens and batch ≤ 4 — the fixed cost of a prefill call.
- ``attn_decode_wide``: decode attention with kv_len ≤ 16 and batch·kv_heads ≥ 4096 tiles — the serial time of
  one decode tile (nothing to stream, only many tiles to schedule).

The fit minimises the squared log error of the analytic engine on the union of the subsets (scipy
``least_squares``, bounded), which weights every row equally whatever its duration.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import pandas as pd

from perfmodel.specs.hardware import Hardware, load_hardware

SUBSETS: dict[str, Callable[[pd.DataFrame], pd.Series]] = {
    "gemm_large": lambda t: (t.op == "gemm") & (t.m >= 4096) & (t.n >= 4096) & (t.k >= 4096),
    "gemv_stream": lambda t: (t.op == "gemm") & (t.m <= 4) & (t.n.astype(float) * t.k >= 2**26),
    "gemm_tiny": lambda t: (t.op == "gemm") & (t.m <= 64) & (t.n <= 64) & (t.k <= 64),
    "attn_decode_long": lambda t: (t.op == "attention") & (t.q_len == 1)
    & (t.batch.astype(float) * t.kv_len >= 2**20),
    "attn_decode_tiny": lambda t: (t.op == "attention") & (t.q_len == 1) & (t.batch <= 4) & (t.kv_len <= 16),
    "attn_prefill_tiny": lambda t: (t.op == "attention") & (t.q_len > 1) & (t.q_len <= 16) & (t.batch <= 4),
    "attn_decode_wide": lambda t: (t.op == "attention") & (t.q_len == 1) & (t.kv_len <= 16)
    & (t.batch.astype(float) * t.kv_heads >= 4096),
}

PARAMS = ("tensor", "l2", "hbm", "launch_s", "attention_overhead_s", "attention_tile_s",
          "prefill_attention_overhead_s")


def calibration_mask(table: pd.DataFrame, subsets: tuple[str, ...] = tuple(SUBSETS)) -> pd.Series:
    """Rows that belong to the named calibration subsets."""
    mask = pd.Series(False, index=table.index)
    for name in subsets:
        mask |= SUBSETS[name](table).fillna(False).astype(bool)
    return mask


def _with_efficiency(hw: Hardware, x: np.ndarray, note: str) -> Hardware:
    tensor, l2, hbm, launch, attn, tile, prefill = (float(v) for v in x)
    mem = dict(hw.efficiency.memory)
    levels = list(hw.memory)
    cache = [lv for lv in levels if not (hw.kind == "gpu" and hw.memory[lv].per_unit)]
    mem[cache[0]] = l2
    mem[hw.main_memory] = hbm
    eff = hw.efficiency.model_copy(update={"tensor": tensor, "memory": mem, "launch_s": launch, "attention_overhead_s": attn,
                                          "attention_tile_s": tile, "prefill_attention_overhead_s": prefill,
                                          "note": note})
    return hw.model_copy(update={"efficiency": eff})


def fit_efficiency(table: pd.DataFrame, hardware: str | Hardware, engine: str = "analytic") -> tuple[Hardware, dict[str, Any]]:
    """Fit tensor, L2 and HBM efficiencies and launch_s for one device; return the updated spec and a report."""
    from scipy.optimize import least_squares

    from perfmodel.validation.compare import predict_table

    hw = hardware if isinstance(hardware, Hardware) else load_hardware(hardware)
    rows = table[(table.hardware == hw.name) & calibration_mask(table)]
    if rows.empty:
        raise ValueError(f"no calibration rows for hardware {hw.name!r} in the table (subsets: {', '.join(SUBSETS)})")
    note = (f"fit on {len(rows)} rows ({', '.join(f'{k}: {int(SUBSETS[k](rows).sum())}' for k in SUBSETS)}) of "
            f"{', '.join(sorted(set(s.split(':')[0] for s in rows.source)))} by validation/fit.py")

    def residuals(x):
        pred = predict_table(rows, _with_efficiency(hw, x, note), engine)
        return np.log(pred.predicted_s.to_numpy() / pred.measured_s.to_numpy())

    cache = [lv for lv in hw.memory if not (hw.kind == "gpu" and hw.memory[lv].per_unit)]
    x0 = np.array([hw.efficiency.tensor, hw.efficiency.memory_fraction(cache[0]),
                   hw.efficiency.memory_fraction(hw.main_memory), max(hw.efficiency.launch_s, 1e-7),
                   max(hw.efficiency.attention_overhead_s, 1e-7),
                   hw.efficiency.attention_tile_s or 4 * (hw.memory[hw.main_memory].latency_s or 5e-7),
                   max(hw.efficiency.prefill_attention_overhead_s, 1e-7)])
    res = least_squares(residuals, x0, bounds=([0.2, 0.1, 0.2] + [0.0] * 4, [1.0, 1.0, 1.0] + [50e-6] * 4),
                        x_scale=[0.1, 0.1, 0.1] + [1e-6] * 4, diff_step=1e-3)
    fitted = _with_efficiency(hw, res.x, note)
    report = {"hardware": hw.name, "rows": int(len(rows)),
              "subsets": {k: int(SUBSETS[k](rows).sum()) for k in SUBSETS},
              "efficiency": dict(zip(PARAMS, (float(v) for v in res.x))),
              "rms_log_error": float(np.sqrt(np.mean(res.fun ** 2)))}
    return fitted, report
