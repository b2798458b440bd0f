"""Fitting a GPU's efficiency block from microbenchmark-like rows of a public measurement table.

The efficiency block (achievable fraction of the tensor peak, of L2 and HBM bandwidth, and the fixed
per-kernel cost) is a property of the device and its software stack, not of any one shape. It is fit on a
few named subsets that behave like microbenchmarks, each dominated by one term, and the error is then
reported on every other row:

- ``gemm_large``: GEMMs with m, n, k ≥ 4096 — compute (and L2) bound: the tensor efficiency.
- ``gemv_stream``: GEMMs with m ≤ 4 and n·k ≥ 2²⁶ (≥ 128 MiB of bf16 weights) — HBM streaming.
- ``gemm_tiny``: GEMMs with m, n, k ≤ 64 — nothing to do but launch: the fixed per-kernel cost.
- ``gemm_square``: the square sweep m = n = k (the classic GEMM microbenchmark) — from launch-bound through
  latency-paced to compute-bound, one shape family.
- ``gemv_square``: the GEMV sweep m = 1, n = k (the classic bandwidth microbenchmark) — from launch-bound through
  cache-resident and latency-paced to streaming.
- ``attn_decode_long``: decode attention (q_len 1) with batch·kv_len ≥ 2²⁰ tokens — HBM streaming of a cache.
- ``attn_decode_tiny``: decode attention with batch ≤ 4 and kv_len ≤ 16 — the fixed cost of an attention call.
- ``attn_decode_single``: decode attention of one sequence over ≥ 32768 keys — one CTA per SM streaming the
  cache: the bandwidth a single attention CTA sustains.
- ``attn_prefill_tiny``: prefill attention of ≤ 16 tokens and batch ≤ 4 — the fixed cost of a prefill call.
- ``attn_decode_wide``: decode attention with kv_len ≤ 16 and batch·kv_heads ≥ 4096 tiles — the serial time of
  one decode tile (nothing to stream, only many tiles to schedule).
- ``attn_prefill_wide``: prefill attention of ≤ 32 tokens per sequence and batch ≥ 128 — thousands of tiles each
  with almost no work: the serial time of one prefill tile (``prefill_attention_tile_s``).
- ``attn_prefill_long``: prefill attention of one sequence of ≥ 8192 tokens — the flash-attention mainloop at
  full occupancy: the fraction of the tensor peak it sustains (``attention_tensor``).

A CPU measured by ``perfmodel measure`` is fit the same way on its own subsets: ``cpu_matmul_large`` (m, n,
k ≥ 1024: compute), ``cpu_gemv_stream`` (m = 1, n·k ≥ 2²⁴: streaming from DRAM), ``cpu_tiny`` (1-row ops on
≤ 4096 columns: the fixed cost) and ``cpu_attn_decode_short`` (decode attention over ≤ 128 keys).

The fit minimises the squared log error of the analytic engine (scipy ``least_squares``, bounded), which weights
every row equally whatever its duration; on a GPU in two stages: the GEMM and device terms on the GEMM subsets,
then the attention terms on the attention subsets with the former held.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from perfmodel.specs.hardware import Hardware, load_hardware

SUBSETS: dict[str, Callable[[pd.DataFrame], pd.Series]] = {
    "gemm_large": lambda t: (t.op == "gemm") & (t.m >= 4096) & (t.n >= 4096) & (t.k >= 4096),
    "gemv_stream": lambda t: (t.op == "gemm") & (t.m <= 4) & (t.n.astype(float) * t.k >= 2**26),
    "gemm_tiny": lambda t: (t.op == "gemm") & (t.m <= 64) & (t.n <= 64) & (t.k <= 64),
    "gemm_square": lambda t: (t.op == "gemm") & (t.m == t.n) & (t.n == t.k),
    "gemv_square": lambda t: (t.op == "gemm") & (t.m == 1) & (t.n == t.k),
    "attn_decode_long": lambda t: (t.op == "attention") & (t.q_len == 1)
    & (t.batch.astype(float) * t.kv_len >= 2**20),
    "attn_decode_tiny": lambda t: (t.op == "attention") & (t.q_len == 1) & (t.batch <= 4) & (t.kv_len <= 16),
    "attn_decode_single": lambda t: (t.op == "attention") & (t.q_len == 1) & (t.batch == 1) & (t.kv_len >= 32768),
    "attn_prefill_tiny": lambda t: (t.op == "attention") & (t.q_len > 1) & (t.q_len <= 16) & (t.batch <= 4),
    "attn_decode_wide": lambda t: (t.op == "attention") & (t.q_len == 1) & (t.kv_len <= 16)
    & (t.batch.astype(float) * t.kv_heads >= 4096),
    "attn_prefill_wide": lambda t: (t.op == "attention") & (t.q_len > 1) & (t.q_len <= 32) & (t.batch >= 128),
    "attn_prefill_long": lambda t: (t.op == "attention") & (t.q_len >= 8192) & (t.batch == 1),
}

# A CPU's calibration subsets, from perfmodel's own measurement runner (``perfmodel measure --device cpu``).
CPU_SUBSETS: dict[str, Callable[[pd.DataFrame], pd.Series]] = {
    "cpu_matmul_large": lambda t: (t.op == "gemm") & (t.m >= 1024) & (t.n >= 1024) & (t.k >= 1024),
    "cpu_gemv_stream": lambda t: (t.op == "gemm") & (t.m == 1) & (t.n.astype(float) * t.k >= 2**24),
    "cpu_tiny": lambda t: (t.op.isin(["gemm", "elementwise"])) & (t.m == 1) & (t.n <= 4096)
    & (t.k.isna() | (t.k <= 256)),
    "cpu_attn_decode_short": lambda t: (t.op == "attention") & (t.q_len == 1) & (t.kv_len <= 128),
}


@dataclass(frozen=True)
class Param:
    """One fitted number of the efficiency block: how to read it, write it, and its bounds."""

    name: str
    get: Callable[[Hardware], float]
    set: Callable[[Hardware, dict, float], None]
    low: float
    high: float
    scale: float


def _cache_levels(hw: Hardware) -> list[str]:
    return [lv for lv in hw.memory if not (hw.kind == "gpu" and hw.memory[lv].per_unit)]


def _eff(field: str, low: float, high: float, scale: float, default: Callable[[Hardware], float] | None = None) -> Param:
    def get(hw: Hardware) -> float:
        value = getattr(hw.efficiency, field)
        if value is None and default is not None:
            return default(hw)
        return max(float(value), 1e-7) if high < 1 else float(value)

    def put(hw: Hardware, upd: dict, v: float) -> None:
        upd[field] = v

    return Param(field, get, put, low, high, scale)


def _mem(name: str, levels: Callable[[Hardware], list[str]]) -> Param:
    def get(hw: Hardware) -> float:
        return hw.efficiency.memory_fraction(levels(hw)[0])

    def put(hw: Hardware, upd: dict, v: float) -> None:
        mem = dict(upd.get("memory", hw.efficiency.memory))
        for lv in levels(hw):
            mem[lv] = v
        upd["memory"] = mem

    return Param(name, get, put, 0.05, 1.0, 0.1)


GPU_PARAMS = (
    _eff("tensor", 0.2, 1.0, 0.1),
    _mem("l2", lambda hw: _cache_levels(hw)[:1]),
    _mem("hbm", lambda hw: [hw.main_memory]),
    _eff("launch_s", 0.0, 50e-6, 1e-6),
    _eff("attention_overhead_s", 0.0, 50e-6, 1e-6),
    _eff("attention_tile_s", 0.0, 50e-6, 1e-6, default=lambda hw: 4 * (hw.memory[hw.main_memory].latency_s or 5e-7)),
    _eff("prefill_attention_overhead_s", 0.0, 50e-6, 1e-6),
    _eff("attention_cta_bytes_per_s", 1e9, 500e9, 1e9, default=lambda hw: 50e9),
    _eff("prefill_attention_tile_s", 0.0, 50e-6, 1e-6,
         default=lambda hw: hw.efficiency.attention_tile_s or 4 * (hw.memory[hw.main_memory].latency_s or 5e-7)),
    _eff("attention_tensor", 0.2, 1.0, 0.1, default=lambda hw: hw.efficiency.tensor),
    _eff("energy_per_flop_j", 0.05e-12, 20e-12, 0.1e-12, default=lambda hw: 0.5e-12),
    _eff("power_window_s", 0.05e-3, 10e-3, 0.1e-3),
)
CPU_PARAMS = (
    _eff("tensor", 0.05, 1.0, 0.1),
    _eff("vector", 0.05, 1.0, 0.1),
    _mem("memory", lambda hw: list(hw.memory)),
    _eff("launch_s", 0.0, 50e-6, 1e-6),
    _eff("attention_overhead_s", 0.0, 500e-6, 1e-6),
)
PARAMS = tuple(p.name for p in GPU_PARAMS)
#: The GPU terms fit on the attention subsets (the others on the GEMM subsets, first).
ATTENTION_PARAMS = ("attention_overhead_s", "attention_tile_s", "prefill_attention_overhead_s",
                    "attention_cta_bytes_per_s", "prefill_attention_tile_s", "attention_tensor")


def subsets_for(hw: Hardware) -> dict[str, Callable[[pd.DataFrame], pd.Series]]:
    return CPU_SUBSETS if hw.kind == "cpu" else SUBSETS


def calibration_mask(table: pd.DataFrame, subsets: dict[str, Callable[[pd.DataFrame], pd.Series]] | None = None,
                     ) -> pd.Series:
    """Rows that belong to the named calibration subsets (the GPU ones and the CPU ones unless given)."""
    mask = pd.Series(False, index=table.index)
    for fn in (subsets or {**SUBSETS, **CPU_SUBSETS}).values():
        mask |= fn(table).fillna(False).astype(bool)
    return mask


def held_out_mask(table: pd.DataFrame) -> pd.Series:
    """Rows outside the calibration subsets of their own device's kind (GPU or CPU subsets)."""
    mask = pd.Series(True, index=table.index)
    for name, rows in table.groupby("hardware", sort=False):
        hw = load_hardware(str(name))
        mask.loc[rows.index] = ~calibration_mask(rows, subsets_for(hw))
    return mask


def _with_efficiency(hw: Hardware, params, x: np.ndarray, note: str) -> Hardware:
    from perfmodel.transfer import attention_kernel, figures

    upd: dict[str, Any] = {"note": note, "calibrated_for": figures(hw), "attention_kernel": attention_kernel(hw)}
    for p, v in zip(params, x):
        p.set(hw, upd, float(v))
    return hw.model_copy(update={"efficiency": hw.efficiency.model_copy(update=upd)})


def _rows_of(table: pd.DataFrame, hw: Hardware, given: str | Hardware) -> pd.DataFrame:
    names = {hw.name}
    if isinstance(given, str):
        names |= {given, str(Path(given).resolve())}
    return table[table.hardware.astype(str).isin(names)]


def fit_efficiency(table: pd.DataFrame, hardware: str | Hardware, engine: str = "analytic") -> tuple[Hardware, dict[str, Any]]:
    """Fit the efficiency block of one device on its calibration subsets; return the updated spec and a report.

    GPUs fit the tensor efficiency, L2 and main-memory fractions and the fixed costs; CPUs fit the tensor and
    vector efficiencies, one memory fraction shared by every level, and the fixed costs.
    """
    from scipy.optimize import least_squares

    from perfmodel.validation.compare import predict_table

    hw = hardware if isinstance(hardware, Hardware) else load_hardware(hardware)
    subsets = subsets_for(hw)
    params = CPU_PARAMS if hw.kind == "cpu" else GPU_PARAMS
    mine = _rows_of(table, hw, hardware)
    rows = mine[calibration_mask(mine, subsets)]
    if rows.empty:
        raise ValueError(f"no calibration rows for hardware {hw.name!r} in the table (subsets: {', '.join(subsets)})")
    counts = {k: int(fn(rows).fillna(False).sum()) for k, fn in subsets.items()}
    note = (f"fit on {len(rows)} rows ({', '.join(f'{k}: {v}' for k, v in counts.items())}) of "
            f"{', '.join(sorted(set(str(s).split(':')[0] for s in rows.source)))} by validation/fit.py")

    x = np.array([min(max(p.get(hw), p.low), p.high) for p in params])
    # GPUs in two stages: the GEMM terms on the GEMM subsets, then the attention terms on the attention subsets
    # with the GEMM terms held (an attention call pays the same launch): each term is fit where it dominates, and
    # neither kind of kernel can trade its error against the other's.
    stages = [(list(range(len(params))), rows)]
    if hw.kind == "gpu":
        attention = np.array([p.name in ATTENTION_PARAMS for p in params])
        is_attention = (rows.op == "attention").to_numpy()
        stages = [(list(np.flatnonzero(~attention)), rows[~is_attention]),
                  (list(np.flatnonzero(attention)), rows[is_attention])]
    for free, stage_rows in stages:
        if stage_rows.empty or not free:
            continue

        def residuals(xf, free=free, stage_rows=stage_rows):
            full = x.copy()
            full[free] = xf
            pred = predict_table(stage_rows, _with_efficiency(hw, params, full, note), engine)
            return np.log(pred.predicted_s.to_numpy() / pred.measured_s.to_numpy())

        res = least_squares(residuals, x[free], bounds=([params[i].low for i in free], [params[i].high for i in free]),
                            x_scale=[params[i].scale for i in free], diff_step=1e-3)
        x[free] = res.x
    fitted = _with_efficiency(hw, params, x, note)
    pred = predict_table(rows, fitted, engine)
    err = np.log(pred.predicted_s.to_numpy() / pred.measured_s.to_numpy())
    report = {"hardware": hw.name, "rows": int(len(rows)), "subsets": counts,
              "efficiency": {p.name: float(v) for p, v in zip(params, x)},
              "rms_log_error": float(np.sqrt(np.mean(err ** 2)))}
    return fitted, report


def _row_kernel(t: pd.DataFrame) -> pd.Series:
    return (t.op == "norm") | ((t.op == "elementwise") & t.variant.isin(["silu_mul", "rope"]))


def _fit_log_error(rows: pd.DataFrame, spec_of: Callable[[np.ndarray], Hardware], x0: list[float],
                   bounds: tuple[list[float], list[float]], scale: list[float]) -> Any:
    """Least squares of the analytic engine's log error on ``rows`` over the parameters ``spec_of`` turns into a
    spec (scipy's result: ``x`` and the residuals ``fun``)."""
    from scipy.optimize import least_squares

    from perfmodel.validation.compare import predict_table

    def residuals(x):
        pred = predict_table(rows, spec_of(x))
        return np.log(np.maximum(pred.predicted_s.to_numpy(), 1e-9) / pred.measured_s.to_numpy())

    return least_squares(residuals, np.array(x0), bounds=bounds, x_scale=scale, diff_step=1e-3)


#: Row kernels (one block per token: norms, activations, rotary) at both ends of their load: in one wave (every
#: block at once, the time one block's passes) and at 3,584 rows or more (many full waves, each pass paced by the
#: bandwidth such kernels reach); the pass time ``row_kernel_s`` and that bandwidth ``row_kernel_bandwidth`` are fit
#: on both together. Tiny adds give the shortest kernel a
#: profiler reports (``kernel_floor_s``). From a profiler's per-kernel timings (vidur's rows); embedding lookups
#: are never fit (their passes are timed by the same round trip).
ROW_SUBSETS: dict[str, Callable[[pd.DataFrame], pd.Series]] = {
    "row_one_wave": lambda t: _row_kernel(t) & (t.m <= 64),
    "row_full_load": lambda t: _row_kernel(t) & (t.m >= 3584),
    "profiled_tiny": lambda t: (t.op == "elementwise") & (t.variant == "add") & (t.m <= 16),
}


def fit_row_kernels(table: pd.DataFrame, hardware: Hardware) -> tuple[Hardware, dict[str, Any]]:
    """Fit ``efficiency.row_kernel_s``, ``row_kernel_bandwidth`` and ``kernel_floor_s`` of ``hardware`` on the
    profiled one-wave and full-load row-kernel rows and tiny adds of ``table`` (its own device's), the rest of the
    block held; returns the updated spec and a report."""
    mine = _rows_of(table, hardware, hardware)
    rows = mine[calibration_mask(mine, ROW_SUBSETS)]
    if rows.empty:
        raise ValueError(f"no row-kernel calibration rows for {hardware.name!r} (subsets {', '.join(ROW_SUBSETS)})")

    def with_block(x) -> Hardware:
        return hardware.model_copy(update={"efficiency": hardware.efficiency.model_copy(
            update={"row_kernel_s": float(x[0]), "kernel_floor_s": float(x[1]), "row_kernel_bandwidth": float(x[2])})})

    res = _fit_log_error(rows, with_block, [1e-6, 1e-6, 0.6], ([1e-8, 0.0, 0.05], [50e-6, 20e-6, 1.0]),
                         [1e-6, 1e-6, 0.1])
    return with_block(res.x), {"hardware": hardware.name, "rows": int(len(rows)), "row_kernel_s": float(res.x[0]),
                               "kernel_floor_s": float(res.x[1]), "row_kernel_bandwidth": float(res.x[2]),
                               "rms_log_error": float(np.sqrt(np.mean(res.fun ** 2)))}


#: GEMMs of another dtype than the block's (fp8 scaled_mm) are fit on the same microbenchmark-like shapes: the large
#: GEMMs (compute bound and long enough for the power limiter) and the square sweep (launch bound to compute bound).
DTYPE_GEMM_SUBSETS = ("gemm_large", "gemm_square")


def fit_dtype_gemms(table: pd.DataFrame, hardware: Hardware, dtype: str) -> tuple[Hardware, dict[str, Any]]:
    """Fit the fraction of ``dtype``'s tensor peak its GEMM kernels reach (``tensor_dtype``) and the energy of its
    FLOPs (``energy_per_flop_dtype``, where the block has a bf16 energy) on the ``dtype`` GEMM rows of ``table``
    in :data:`DTYPE_GEMM_SUBSETS`, the rest of the block held; returns the updated spec and a report."""
    mine = _rows_of(table, hardware, hardware)
    mine = mine[(mine.op == "gemm") & (mine.dtype == dtype)]
    rows = mine[calibration_mask(mine, {k: SUBSETS[k] for k in DTYPE_GEMM_SUBSETS})]
    if rows.empty:
        raise ValueError(f"no {dtype} GEMM calibration rows for {hardware.name!r}")
    eff = hardware.efficiency
    energy = eff.energy_per_flop_j

    def with_block(x) -> Hardware:
        update: dict[str, Any] = {"tensor_dtype": {**eff.tensor_dtype, dtype: float(x[0])}}
        if energy:
            update["energy_per_flop_dtype"] = {**eff.energy_per_flop_dtype, dtype: float(x[1]) * energy}
        return hardware.model_copy(update={"efficiency": eff.model_copy(update=update)})

    res = _fit_log_error(rows, with_block, [eff.tensor, 1.0], ([0.05, 0.1], [1.0, 2.0]), [0.1, 0.1])
    return with_block(res.x), {"hardware": hardware.name, "dtype": dtype, "rows": int(len(rows)),
                               "tensor": float(res.x[0]), "energy_ratio": float(res.x[1]) if energy else None,
                               "rms_log_error": float(np.sqrt(np.mean(res.fun ** 2)))}


def efficiency_block(hw: Hardware, report: dict[str, Any]) -> str:
    """The fitted efficiency block of ``hw`` as YAML text for its catalog file: the fitted numbers (a term with no
    rows to fit it is left out, so that the transfer rule's or the schema's default applies), the attention
    kernel family, the figures it was fit for and the note."""
    import yaml

    e = report["efficiency"]
    eff = hw.efficiency
    counts = report["subsets"]
    cache = [k for k, m in hw.memory.items() if not (hw.kind == "gpu" and m.per_unit)][0]
    block: dict[str, Any] = {"attention_kernel": eff.attention_kernel, "tensor": round(e["tensor"], 3),
                             "memory": {cache: round(e["l2"], 3), hw.main_memory: round(e["hbm"], 3)}}
    for name in ("launch_s", "attention_overhead_s", "attention_tile_s", "prefill_attention_overhead_s"):
        block[name] = float(f"{e[name]:.4g}") if e[name] >= 1e-12 else 0.0  # below a picosecond: the bound, 0
    optional = {"attention_cta_bytes_per_s": "attn_decode_single", "prefill_attention_tile_s": "attn_prefill_wide",
                "attention_tensor": "attn_prefill_long", "energy_per_flop_j": "gemm_large",
                "power_window_s": "gemm_large"}
    for name, subset in optional.items():
        if counts.get(subset):
            block[name] = float(f"{e[name]:.4g}")
    if eff.row_kernel_s and report.get("row_kernels"):  # fitted here; otherwise the transfer rule completes it
        block["row_kernel_s"] = float(f"{eff.row_kernel_s:.4g}")
        if eff.row_kernel_bandwidth:
            block["row_kernel_bandwidth"] = round(eff.row_kernel_bandwidth, 3)
        block["kernel_floor_s"] = float(f"{eff.kernel_floor_s:.4g}") if eff.kernel_floor_s >= 1e-12 else 0.0
    if eff.tensor_dtype and report.get("dtype_gemms"):  # fitted here on that dtype's own rows
        block["tensor_dtype"] = {k: round(v, 3) for k, v in eff.tensor_dtype.items()}
        if eff.energy_per_flop_dtype:
            block["energy_per_flop_dtype"] = {k: float(f"{v:.4g}") for k, v in eff.energy_per_flop_dtype.items()}
    block["calibrated_for"] = {k: float(f"{v:.6g}") for k, v in (eff.calibrated_for or {}).items()}
    block["note"] = eff.note
    return yaml.safe_dump({"efficiency": block}, sort_keys=False, width=10_000)


def write_efficiency(path: str | Path, hw: Hardware, report: dict[str, Any]) -> None:
    """Replace the ``efficiency:`` block of the hardware YAML at ``path`` (the rest of the file, comments included,
    is kept) by :func:`efficiency_block`."""
    import re

    text = Path(path).read_text(encoding="utf-8")
    block = efficiency_block(hw, report)
    if re.search(r"^efficiency:\n(?:  .*\n?)*", text, flags=re.M):
        text = re.sub(r"^efficiency:\n(?:  .*\n?)*", block, text, count=1, flags=re.M)
    else:
        text = text.rstrip("\n") + "\n" + block
    Path(path).write_text(text, encoding="utf-8")
