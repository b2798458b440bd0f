"""Model against measurement: predict every row of a measurement table and report the error.

Like marking an exam against the answer key: each measured row is a question, the model answers it from the
hardware spec alone, and the report gives the error per op kind (median and p90 absolute percentage error,
Spearman rank correlation) plus the rows it got most wrong.

Which memory level serves a measured op depends on how the benchmark reused its buffers, so each row's
reuse footprint is reconstructed from its ``source``:
- ``rot=N`` in the source (perfmodel's own runner): the inputs rotate among N copies: reuse = N × op bytes.
- aiconfigurator GEMM rows: the collector rotates 6 weight copies (its README) and reuses one activation and
  one output buffer: reuse = 6 × weight bytes + the activation and output bytes.
- aiconfigurator attention rows: the collector replays the same call over the same KV cache, so the call's own
  bytes are all it touches between two uses (reuse = 1 × op bytes): a cache that fits the L2's capacity for data
  the whole GPU reads (``MemoryLevel.partitions``) is served from L2, as the L40S rows show (up to 2.5 TB/s from
  a 96 MB L2 against 864 GB/s of GDDR6).
- anything else (whole-model profiles: vidur, LLMServingSim, LLMCompass, ncu): cold, served by main memory.

Profiler-timed rows (vidur, LLMServingSim, ncu, perfmodel's ``:profiler`` rows) are kernel durations: the launch
cost (``efficiency.launch_s``, fit on CUDA-graph replays, where it also covers the gap between kernels) is left
out of their prediction, once per kernel, down to the shortest kernel a profiler shows (``kernel_floor_s``).

An aiconfigurator fp8 GEMM row times vLLM's fp8 linear layer with a static activation scale: a quantisation
kernel of its bf16 input, then the fp8 GEMM writing bf16 (both predicted).

aiconfigurator's attention timings are of vLLM's whole attention call, which also writes the new tokens' keys
and values into the paged cache (``reshape_and_cache_flash``); such rows are predicted as that cache write
(an elementwise copy of q_len tokens' K and V, its own kernel) followed by the attention kernel.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from perfmodel import ops
from perfmodel.api import _engine
from perfmodel.engines import analytic
from perfmodel.ops import Op
from perfmodel.specs.hardware import Hardware, load_hardware
from perfmodel.specs.model import bytes_per_element

_ROT = re.compile(r"rot=(\d+)")


#: Datasets timed by a profiler (kernel durations, launch gaps left out): vidur and LLMServingSim (torch profiler),
#: Nsight Compute exports; perfmodel's own profiler rows end in ":profiler".
KERNEL_TIMED = ("vidur", "llmservingsim", "ncu")


def kernel_timed_source(source: str) -> bool:
    """Whether a row's time is a profiler's kernel duration (no launch gap) rather than a wall-clock or CUDA-graph
    replay time per call."""
    return source.startswith(KERNEL_TIMED) or source.endswith(":profiler")


def kernel_durations(times, row: list[Op], hw: Hardware, n: int) -> np.ndarray:
    """What a profiler reports for a row's kernels: each kernel's time without the gap before it, at least the
    shortest kernel the profiler shows (``efficiency.kernel_floor_s``), summed.

    The launch cost (``launch_s``, fit on CUDA-graph replays) is the gap between kernels plus the kernel's own
    start and drain. A GEMM's or an attention call's start and drain (prologue, the epilogue's last stores) are
    part of its profiled duration, about the shortest duration a profiler shows, so the gap is what remains:
    launch_s − kernel_floor_s. A row or elementwise kernel's own start and drain are in its block chain
    (``row_kernel_s``) or its floor, so its whole launch cost is gap."""
    per_kernel = np.asarray(times.time, dtype=float).reshape(len(row), -1)
    per_kernel = np.broadcast_to(per_kernel, (len(row), n))
    eff = hw.efficiency
    tiled = np.array([op.kind in ("gemm", "attention") for op in row]).reshape(-1, 1)
    gap = np.where(tiled, max(eff.launch_s - eff.kernel_floor_s, 0.0), eff.launch_s)
    return np.maximum(per_kernel - gap, eff.kernel_floor_s).sum(axis=0)


def reuse_factor(source: str, op: str) -> float:
    """How many op-footprints are touched between two uses of the same inputs (inf = cold)."""
    m = _ROT.search(source or "")
    if m:
        return float(m.group(1))
    if (source or "").startswith("aiconfigurator"):
        return 6.0 if op == "gemm" else 1.0
    return math.inf


def _num(df: pd.DataFrame, col: str) -> np.ndarray:
    return pd.to_numeric(df[col], errors="coerce").to_numpy(dtype=float)


def row_ops(df: pd.DataFrame) -> list[Op]:
    """Vectorised ops for the rows of one (op, dtype, variant) group: Ops whose fields are arrays, the measured
    op first (plus any companion kernel the measurement includes); a row's prediction is their sum."""
    kind = df["op"].iloc[0]
    dtype = df["dtype"].iloc[0]
    variant = df["variant"].iloc[0] if "variant" in df else ""
    variant = "" if variant is None or (isinstance(variant, float) and math.isnan(variant)) else str(variant)
    if kind == "gemm":
        # fp8 GEMMs (vLLM's scaled_mm) write bf16 outputs
        op = ops.gemm("gemm", _num(df, "m"), _num(df, "n"), _num(df, "k"), dtype,
                      out_dtype="bf16" if dtype == "fp8" else None)
    elif kind == "attention":
        causal = df["causal"].astype("boolean").fillna(True).to_numpy(dtype=bool)
        q, kv = _num(df, "q_len"), _num(df, "kv_len")
        args = (_num(df, "batch"), q, kv, _num(df, "heads"), _num(df, "kv_heads"), _num(df, "head_dim"))
        causal_op = ops.attention("attention", *args, mask="causal", dtype=dtype)
        bidir_op = ops.attention("attention", *args, mask="bidirectional", dtype=dtype)
        op = replace(causal_op, flops=np.where(causal, causal_op.flops, bidir_op.flops),
                     l2_bytes=np.where(causal, causal_op.l2_bytes, bidir_op.l2_bytes))
    elif kind == "norm":
        op = ops.norm("norm", _num(df, "m"), _num(df, "n"), dtype)
    elif kind == "embedding":
        op = ops.embedding("embedding", _num(df, "m"), _num(df, "n"), dtype)
    elif kind == "elementwise":
        inputs, flops = {"add": (2, 1), "silu_mul": (2, 5), "rope": (1, 3), "gelu": (1, 8),
                         "softmax": (1, 5)}.get(variant, (1, 1))
        op = ops.elementwise("elementwise", _num(df, "m"), _num(df, "n"), dtype, inputs=inputs, outputs=1,
                             flops_per_element=flops, variant=variant)
    else:
        raise ValueError(f"measurement row op {kind!r}: expected gemm, attention, norm, elementwise or embedding")
    factor = np.array([reuse_factor(s, kind) for s in df["source"].astype(str)])
    if kind == "gemm":
        weights = op.shape["k"] * op.shape["n"] * op.shape["w_bytes"]
        rotated = np.array([s.startswith("aiconfigurator") for s in df["source"].astype(str)])
        op = replace(op, reuse_bytes=np.where(rotated, factor * weights + (op.bytes - weights), factor * op.bytes))
    else:
        op = replace(op, reuse_bytes=factor * op.bytes)
    source = str(df["source"].iloc[0])
    if source.startswith("perfmodel-measure"):
        return eager_kernels(op, kind, variant, dtype, device=source.split(":")[1], factor=factor)
    if kind == "gemm" and dtype == "fp8" and df["source"].astype(str).str.startswith("aiconfigurator").all():
        # vLLM's fp8 linear with a static activation scale quantises its bf16 input first (scaled_fp8_quant,
        # its own kernel): m·k bf16 read, m·k fp8 written
        quant = ops.elementwise("input_quant", _num(df, "m"), _num(df, "k"), "bf16", inputs=1, outputs=0.5,
                                flops_per_element=2, variant="quant")
        return [op, replace(quant, reuse_bytes=op.reuse_bytes)]
    if kind == "attention" and df["source"].astype(str).str.startswith("aiconfigurator").all():
        tokens = _num(df, "batch") * _num(df, "q_len")
        write = ops.elementwise("kv_cache_write", tokens, 2 * _num(df, "kv_heads") * _num(df, "head_dim"), dtype,
                                inputs=1, outputs=1, flops_per_element=0, variant="copy")
        return [op, write]
    return [op]


def eager_kernels(op: Op, kind: str, variant: str, dtype: str, *, device: str, factor: Any) -> list[Op]:
    """The kernels eager PyTorch runs for one row of ``perfmodel measure`` (validation/measure.py), as ops.

    ``F.linear`` and attention allocate their outputs (``fresh_output``: on a CPU, first touch of new pages
    when large, perfmodel/engines/cpu.py). ``silu_mul`` is two kernels, SiLU into a fresh temporary and
    ``mul(out=)``; ``add`` writes into its ``out=`` buffer. ``F.rms_norm`` on a CPU is composite: square into a
    temporary, a row sum, two small ops on the per-row scale, the scaling into a temporary, the weight into the
    output (bf16 inputs are upcast to fp32 first and the result cast back); on CUDA it is one fused kernel.
    """
    tokens, width = op.shape.get("tokens"), op.shape.get("width")

    def ew(name, inputs, outputs, flops, var="", fresh=True, dt=dtype, cols=None):
        e = ops.elementwise(name, tokens, width if cols is None else cols, dt,
                            inputs=inputs, outputs=outputs, flops_per_element=flops, variant=var)
        e = replace(e, reuse_bytes=factor * e.bytes)
        return replace(e, shape={**e.shape, "fresh_output": fresh})

    if kind in ("gemm", "attention"):
        return [replace(op, shape={**op.shape, "fresh_output": True})]
    if kind == "elementwise" and variant == "silu_mul":
        return [ew("silu", 1, 1, 4, "silu"), ew("mul", 2, 1, 1, fresh=False)]
    if kind == "elementwise":
        return [replace(op, shape={**op.shape, "fresh_output": variant != "add"})]
    if kind == "norm" and device == "cpu":
        kernels = []
        inner = "fp32" if dtype in ("bf16", "fp16") else dtype
        if inner != dtype:
            kernels.append(ew("upcast", 0.5, 1, 0, dt=inner))  # reads bf16, writes fp32
        kernels += [ew("square", 1, 1, 1, dt=inner),
                    ew("row_sum", 1, 0, 1, dt=inner, fresh=False),
                    ew("eps_add", 1, 1, 1, dt=inner, cols=1), ew("rsqrt", 1, 1, 1, dt=inner, cols=1),
                    ew("scale", 1, 1, 1, dt=inner), ew("weight", 1, 1, 1, dt=inner)]
        if inner != dtype:
            kernels.append(ew("downcast", 1, 0.5, 0, dt=inner))
        return kernels
    return [op]


def predict_table(table: pd.DataFrame, hardware: str | Hardware | None = None, engine: str = "analytic",
                  overrides: dict[str, Any] | None = None) -> pd.DataFrame:
    """The table with ``predicted_s``, ``ape_pct`` (|pred/meas − 1|·100), ``bound`` and ``flops``/``bytes``.

    Rows are predicted with their own ``hardware`` (catalog name or path) unless ``hardware`` overrides it. The
    event engine, the slower one, shows its progress (per group of rows) on a table of 200 rows or more.
    """
    from tqdm import tqdm
    from perfmodel.validation.e2e_predict import is_e2e, predict_e2e

    timer = _row_timer(engine)
    out = []
    keys = ["hardware", "op", "dtype"] + (["variant"] if "variant" in table else [])
    table = table.reset_index(drop=True)
    whole = is_e2e(table)
    if whole.any():  # whole steps and runs: predicted from the workload they ran (validation/e2e_predict.py)
        out.append(predict_e2e(table[whole], hardware, engine, overrides))
        table = table[~whole]
    groups = table.assign(variant=table["variant"].fillna("") if "variant" in table else "").groupby(
        keys, sort=False, dropna=False)
    cache: dict[str, Hardware] = {}
    progress = tqdm(total=len(table), desc=f"{engine} engine", unit="row", leave=False,
                    disable=engine == "analytic" or len(table) < 200)
    for key, df in groups:
        hw_name = hardware if hardware is not None else key[0]
        hw_key = hw_name if isinstance(hw_name, str) else hw_name.name
        if hw_key not in cache:
            cache[hw_key] = load_hardware(hw_name, overrides) if not isinstance(hw_name, Hardware) else hw_name
        hw = cache[hw_key]
        row = row_ops(df)
        op = row[0]
        res = df.copy()
        times = timer(row, hw)
        res["predicted_s"] = np.asarray(times.time, dtype=float).reshape(len(row), -1).sum(axis=0)
        res["bound"] = np.asarray(times.bound, dtype=object).reshape(len(row), -1)[0]
        # A profiler's kernel durations leave out the gap between kernels that the launch cost includes
        kernel_timed = np.array([kernel_timed_source(str(x)) for x in df["source"]])
        if kernel_timed.any():
            res["predicted_s"] = np.where(kernel_timed, kernel_durations(times, row, hw, len(df)), res["predicted_s"])
        res["flops"] = np.broadcast_to(np.asarray(op.flops, dtype=float), (len(df),))
        res["bytes"] = np.broadcast_to(np.asarray(op.bytes, dtype=float), (len(df),))
        res["predicted_hardware"] = hw.name
        out.append(res)
        progress.update(len(df))
    progress.close()
    res = pd.concat(out).sort_index() if out else table.assign(predicted_s=np.nan, bound=None, flops=np.nan,
                                                               bytes=np.nan, predicted_hardware=None)
    res["ape_pct"] = (res.predicted_s / res.measured_s - 1).abs() * 100
    return res


def _row_timer(engine: str):
    """The engine's timer for ops whose fields are arrays over a table's rows: the analytic engine broadcasts
    them, the event engine times each row's kernels (:func:`perfmodel.engines.event.time_points`)."""
    if engine == "event":
        from perfmodel.engines import event  # SimPy: only for this engine

        return event.time_points
    return _engine(engine)


def allreduce_engine_time(message_bytes: Any, devices: Any, hw: Hardware, dtype: str = "fp16") -> np.ndarray:
    """The analytic engine's time for measured all-reduces (``message_bytes`` over ``devices`` GPUs, one op per
    row), to set beside :class:`perfmodel.collectives.AllReduceModel` fitted on the same rows."""
    s = np.atleast_1d(np.asarray(message_bytes, dtype=float))
    p = np.broadcast_to(np.asarray(devices, dtype=float), s.shape)
    op = ops.allreduce("allreduce", s / bytes_per_element(dtype), p, dtype)
    return np.asarray(analytic.time_ops([op], hw).time, dtype=float).reshape(s.shape)


@dataclass(frozen=True)
class ErrorStats:
    n: int
    median_ape_pct: float
    p90_ape_pct: float
    spearman: float

    def to_dict(self) -> dict[str, Any]:
        return {"rows": self.n, "median_ape_pct": self.median_ape_pct, "p90_ape_pct": self.p90_ape_pct,
                "spearman": self.spearman}


def error_stats(df: pd.DataFrame) -> ErrorStats:
    n = len(df)
    if n == 0:
        return ErrorStats(0, float("nan"), float("nan"), float("nan"))
    ape = df.ape_pct.to_numpy()
    # Spearman's rho: the Pearson correlation of the ranks (ties share their average rank, as in scipy's spearmanr)
    rho = float(df.predicted_s.rank().corr(df.measured_s.rank())) if n > 2 else float("nan")
    return ErrorStats(n, float(np.median(ape)), float(np.percentile(ape, 90)), rho)


def summarize_errors(pred: pd.DataFrame) -> dict[str, Any]:
    """{'overall': stats, 'by_op': {op: stats}, 'by_hardware': {hw: {op: stats}}} with the JSON keys of the CLI;
    with end-to-end rows also 'by_method': {scenario: stats of its step rows} and 'by_method_run' (run rows)."""
    out = {
        "overall": error_stats(pred).to_dict(),
        "by_op": {op: error_stats(g).to_dict() for op, g in pred.groupby("op", sort=True)},
        "by_hardware": {hw: {op: error_stats(g).to_dict() for op, g in h.groupby("op", sort=True)}
                        for hw, h in pred.groupby("predicted_hardware", sort=True)},
    }
    if "scenario" in pred:
        # Step rows timed from CUDA graph replays (timing "graphs") are a method's second figure, kept apart.
        timing = pred["timing"].fillna("eager") if "timing" in pred else pd.Series("eager", index=pred.index)
        method = pred["scenario"].astype(str).where(timing == "eager", pred["scenario"].astype(str) + " (graphs)")
        for key, op in (("by_method", "step"), ("by_method_run", "run")):
            rows = pred.op == op
            if rows.any():
                out[key] = {m: error_stats(g).to_dict() for m, g in pred[rows].groupby(method[rows], sort=True)}
    return out


def worst_rows(pred: pd.DataFrame, n: int = 10) -> pd.DataFrame:
    return pred.sort_values("ape_pct", ascending=False).head(n)


def scatter_figure(pred: pd.DataFrame, title: str = ""):
    """Predicted vs measured (log-log), one marker shape per op kind; returns the Figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 5.5))
    markers = ["o", "s", "^", "D", "v", "x"]
    for i, (op, g) in enumerate(pred.groupby("op", sort=True)):
        ax.scatter(g.measured_s * 1e6, g.predicted_s * 1e6, s=6, alpha=0.5, marker=markers[i % len(markers)],
                   label=f"{op} (n={len(g)})", color=f"C{i}")
    lo = float(min(pred.measured_s.min(), pred.predicted_s.min()) * 1e6)
    hi = float(max(pred.measured_s.max(), pred.predicted_s.max()) * 1e6)
    ax.plot([lo, hi], [lo, hi], "k-", lw=0.8, label="exact")
    ax.plot([lo, hi], [lo * 1.25, hi * 1.25], "k:", lw=0.6, label="±25%")
    ax.plot([lo, hi], [lo / 1.25, hi / 1.25], "k:", lw=0.6)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("measured time (µs)")
    ax.set_ylabel("predicted time (µs)")
    ax.set_title(title or "predicted vs measured")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def save_figure(fig, path) -> None:
    """Write ``fig`` as a PNG at ``path`` (atomically) and close it."""
    import matplotlib.pyplot as plt

    from perfmodel.files import write_atomic

    write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)
