"""CPU terms of the analytic engine: how a CPU's matmul and attention kernels fall short of the vector peak.

A GPU loses time to waves of tiles (tiling.py); a CPU loses it inside each core, in three ways this module
models, each with a number that ``perfmodel calibrate --device cpu`` measures by a microbenchmark:

- **One row.** A one-row matmul (a GEMV) runs a dot-product kernel whose own rate (``efficiency.gemv_flops_per_s``,
  per dtype, measured on weights in cache) may sit below the memory's (a bf16 GEMV converts every weight to
  fp32). A core issues the loads of what it streams and the arithmetic from one instruction stream: with few rows
  every weight it loads is used a few times and the loads do not hide behind the work, with many the blocked
  kernel prefetches them under its arithmetic. On a CPU with a calibrated GEMV rate the part of the stream left
  exposed is m½/(m + m½) (Hockney's m½ again): t = work + stream · m½/(m + m½), about the sum for one row.
- **Few rows.** A CPU matmul microkernel keeps an mr×nr block of C in registers and reuses every weight it
  loads once per row of the block. With m rows (m < mr, or m not much larger), the loads are amortised over few
  FMAs and the rate falls as Hockney's half-performance law for vector machines:
      rate(m) = peak · m / (m + m½)       ⇔   t = 2·n·k·(m + m½) / peak
  with m½ (``efficiency.gemm_half_rows``, per dtype) measured from a skinny matmul against a square one. One row
  (m = 1) of a plain matmul is a GEMV: libraries run a separate dot-product kernel, streamed from memory, and no
  such penalty applies; a batched matmul has no such special case.
- **Exponentials.** A softmax's exponentials are a vectorised polynomial on the FMA units, tens of
  instructions per vector: ``efficiency.exps_per_s`` (``torch.exp`` over a cached buffer), by default the fp32
  vector rate / 64.
- **Blocks of attention.** Decode attention (one query per sequence) runs as two batched matmuls whose rows are
  the query heads sharing a KV head (g = heads / kv_heads): a skinny matmul of g rows, one row for MHA. Prefill runs PyTorch's
  CPU flash-attention kernel, which tiles queries in blocks of 32, 64 or 256 rows (query length < 192, < 768,
  ≥ 768) and keys in blocks of 512, and computes whole key blocks: under a causal mask every query block also
  computes the masked part of the key block the diagonal crosses. Work counts the pairs computed, at the rate
  of a matmul with the query block's rows.

Three more costs of eager PyTorch on a CPU:

- **Small ops on one core.** Elementwise and reduction loops are split into chunks of at least 32768 elements
  (``at::internal::GRAIN_SIZE``), one per thread: an op of fewer elements runs on one core, at that core's share
  of the compute and of every level's bandwidth.
- **Exponentials of activations.** SiLU, GELU, sigmoid and softmax elementwise ops take one exponential per
  element at the same rate.
- **First touch.** An output larger than the C allocator's mmap threshold (glibc: at most 32 MiB) is new pages
  from the kernel on every call; each takes a page fault and is zeroed before the op writes it:
  ``write_bytes / efficiency.page_fault_bytes_per_s`` on top of the op's time, for ops marked as writing a fresh
  allocation (``shape['fresh_output']``: the measurement table's eager kernels; a serving engine reuses its
  buffers, so the workloads' op lists mark none).

Everything broadcasts over a sweep grid, like the rest of the analytic engine.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from perfmodel.ops import Op
from perfmodel.specs.hardware import Hardware

#: PyTorch's CPU flash attention: query block rows by query length, and the key block
FLASH_Q_SPLITS = ((768, 256), (192, 64), (0, 32))
FLASH_KV_SPLIT = 512
#: elementwise variants with one exponential per element
EXP_VARIANTS = frozenset({"silu", "silu_mul", "gelu", "sigmoid", "softmax"})
#: glibc malloc's largest mmap threshold on 64-bit (DEFAULT_MMAP_THRESHOLD_MAX): larger blocks are always mapped
MMAP_THRESHOLD_BYTES = 32 * 2 ** 20
#: at::internal::GRAIN_SIZE: the fewest elements PyTorch gives one thread of a parallel CPU loop
GRAIN_SIZE = 32768
#: default exponentials per fp32 vector FLOP/s: a vectorised exp costs about 32 FMA-equivalent instructions
DEFAULT_EXP_COST_FLOPS = 64.0


def matmul_rate(op: Op, hw: Hardware) -> float:
    """Attainable matmul FLOP/s of ``op``'s dtype: the tensor peak × the dtype's ``efficiency.tensor_fraction``
    where the dtype has a matrix-instruction peak (bf16 dot products), else the vector peak × ``efficiency.vector``
    (fp32 FMAs): the two rates calibration measures with square matmuls."""
    eff = hw.efficiency
    if op.dtype in hw.compute.tensor_flops:
        return hw.compute.tensor_flops[op.dtype] * eff.tensor_fraction(op.dtype)
    return hw.compute.peak_flops(op.dtype, "vector") * eff.vector


def exp_rate(hw: Hardware) -> float:
    """Exponentials per second on the whole CPU (``efficiency.exps_per_s``, else the fp32 vector rate / 64)."""
    if hw.efficiency.exps_per_s:
        return hw.efficiency.exps_per_s
    return hw.compute.peak_flops("fp32", "vector") * hw.efficiency.vector / DEFAULT_EXP_COST_FLOPS


def row_factor(rows: Any, half_rows: float, gemv: bool = True) -> Any:
    """Work multiplier of a matmul with ``rows`` rows: (rows + m½) / rows; 1 for one row of a plain matmul (a
    GEMV) when ``gemv``."""
    rows = np.maximum(np.asarray(rows, dtype=float), 1.0)
    factor = (rows + half_rows) / rows
    return np.where(rows > 1, factor, 1.0) if gemv else factor


def flash_q_split(q_len: Any) -> Any:
    """Query block rows of PyTorch's CPU flash attention for a query length (never more than the queries)."""
    q_len = np.asarray(q_len, dtype=float)
    split = np.select([q_len >= lo for lo, _ in FLASH_Q_SPLITS], [s for _, s in FLASH_Q_SPLITS])
    return np.minimum(split, q_len)


def flash_pairs(q_len: Any, kv_len: Any, mask: str) -> Any:
    """(query, key) pairs the CPU flash kernel computes, per (batch, head): whole key blocks of 512 (fewer at the
    end of the sequence) up to the last key each query block sees. The queries are the last q_len positions of a
    kv_len-long sequence; without a causal mask every query block sees every key."""
    q_len = np.asarray(q_len, dtype=float)
    kv_len = np.asarray(kv_len, dtype=float)
    if mask != "causal":
        return q_len * kv_len
    qs = flash_q_split(q_len)
    offset = kv_len - q_len
    blocks = np.ceil(q_len / np.maximum(qs, 1))
    total = np.zeros(np.broadcast_shapes(q_len.shape, kv_len.shape))
    for j in range(int(np.max(blocks)) if blocks.size else 0):
        rows = np.clip(q_len - j * qs, 0, qs)
        seen = offset + np.minimum((j + 1) * qs, q_len)  # keys visible to the block's last row
        keys = np.minimum(np.ceil(seen / FLASH_KV_SPLIT) * FLASH_KV_SPLIT, kv_len)
        total = total + np.where(j < blocks, rows * keys, 0.0)
    return total


def pointwise_elements(op: Op) -> Any:
    """Elements of an elementwise or norm op (tokens × width); None for any other op."""
    if op.kind not in ("elementwise", "norm") or "tokens" not in op.shape:
        return None
    return np.asarray(op.shape["tokens"], dtype=float) * np.asarray(op.shape["width"], dtype=float)


def threads_used(elements: Any, units: int) -> Any:
    """Threads a PyTorch CPU elementwise or reduction kernel runs on: its loop is split in chunks of at least
    ``GRAIN_SIZE`` elements, one per thread (at::parallel_for), so a small op runs on one core."""
    return np.clip(np.floor(np.asarray(elements, dtype=float) / GRAIN_SIZE), 1, units)


def compute_times(op_list: Sequence[Op], hw: Hardware, compute: np.ndarray, overhead: np.ndarray,
                  level_time: dict[str, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Replace the compute term of CPU matmuls and attention (see the module docstring), add exponentials and
    fixed costs, and slow elementwise and norm ops that run on fewer threads than the CPU has (their compute and
    ``level_time``, updated in place, × cores / threads); returns (compute, overhead) with the shape of the
    inputs (n_ops, *grid)."""
    eff = hw.efficiency
    exps_per_s = exp_rate(hw)
    compute = compute.copy()
    overhead = overhead.copy()
    for i, op in enumerate(op_list):
        if op.shape.get("fresh_output") and eff.page_fault_bytes_per_s:
            written = np.asarray(op.write_bytes, dtype=float)
            overhead[i] = overhead[i] + np.where(written > MMAP_THRESHOLD_BYTES,
                                                 written / eff.page_fault_bytes_per_s, 0.0)
        elements = pointwise_elements(op)
        if elements is not None:
            if op.kind == "elementwise" and op.shape.get("variant") in EXP_VARIANTS:
                compute[i] = compute[i] + elements / exps_per_s
            slow = hw.compute.units / threads_used(elements, hw.compute.units)
            compute[i] = compute[i] * slow
            for name in (level_time or {}):
                level_time[name][i] = level_time[name][i] * slow
            continue
        if op.kind not in ("gemm", "attention"):
            continue
        rate = matmul_rate(op, hw)
        half = eff.half_rows(op.dtype)
        vec = np.asarray(op.vector_flops, dtype=float) / (hw.compute.peak_flops(op.dtype, "vector") * eff.vector)
        sh = op.shape
        if op.kind == "gemm":
            matmul = np.asarray(op.flops, dtype=float) / rate * row_factor(sh["m"], half)
            gemv = eff.gemv_flops_per_s.get(op.dtype)
            if gemv:
                # A core issues the loads of the operands it streams and the arithmetic on them from one
                # instruction stream: the matmul's work (a one-row matmul at the GEMV kernel's own rate, measured
                # on cached weights) and its stream from the level serving it add up.
                stream = np.maximum.reduce([np.asarray(level_time[name][i], dtype=float)
                                            for name in (level_time or {})] or [np.zeros(1)])
                own = np.asarray(op.flops, dtype=float) / gemv
                rows = np.maximum(np.asarray(sh["m"], dtype=float), 1.0)
                serial = half / (rows + half) if half else np.where(rows <= 1, 1.0, 0.0)
                matmul = np.where(rows <= 1, np.maximum(matmul, own), matmul) + serial * stream
            compute[i] = matmul + vec
            continue
        batch, heads, d = (np.asarray(sh[k], dtype=float) for k in ("batch", "heads", "head_dim"))
        q_len, kv_len = np.asarray(sh["q_len"], dtype=float), np.asarray(sh["kv_len"], dtype=float)
        group = heads / np.asarray(sh["kv_heads"], dtype=float)
        exact_pairs = np.asarray(op.flops, dtype=float) / (4.0 * batch * heads * d)
        pairs = np.where(q_len > 1, flash_pairs(q_len, kv_len, sh.get("mask", "causal")), exact_pairs)
        rows = np.where(q_len > 1, flash_q_split(q_len), group)
        matmul = 4.0 * batch * heads * d * pairs / rate * row_factor(rows, half, gemv=False)
        compute[i] = matmul + batch * heads * pairs / exps_per_s + vec
        overhead[i] = overhead[i] + np.where(q_len > 1, eff.prefill_attention_overhead_s, eff.attention_overhead_s)
    return compute, overhead


def adjust_kernel(kernel: Any, op: Op, hw: Hardware) -> Any:
    """The event engine's kernel of ``op`` with this module's CPU terms, so that both engines charge the same
    work: every tile's compute scaled so that the kernel's total equals :func:`compute_times`' compute term
    (the same work spread over the same tiles), and the fixed costs it adds (attention overheads, first touch)
    appended to the kernel's tail. Kernels of a GPU, or of ops this module leaves alone, come back unchanged."""
    from dataclasses import replace

    elements = pointwise_elements(op)
    touched = op.kind in ("gemm", "attention") or op.shape.get("fresh_output") or elements is not None
    if hw.kind != "cpu" or not touched:
        return kernel
    eff = hw.efficiency
    unit_eff = eff.tensor_fraction(op.dtype) if op.unit == "tensor" else eff.vector
    plain = (float(op.flops) / (hw.compute.peak_flops(op.dtype, op.unit) * unit_eff)
             + float(op.vector_flops) / (hw.compute.peak_flops(op.dtype, "vector") * eff.vector))
    compute, extra = compute_times([op], hw, np.array([plain]), np.zeros(1), {})
    if elements is not None:
        threads = int(threads_used(float(elements), hw.compute.units))
        if threads < hw.compute.units:  # one tile per thread the loop really runs on (see compute_times)
            from perfmodel.engines.event_gpu import TileClass

            per_tile = {lvl: b / threads for lvl, b in kernel.total_bytes().items()}
            tiles = (TileClass(threads, float(compute[0]), per_tile),)
            return replace(kernel, tiles=tiles, occupancy=1, tail_s=kernel.tail_s + float(extra[0]))
    total = kernel.total_compute_s() / hw.compute.units
    scale = float(compute[0]) / total if total > 0 else 1.0
    tiles = tuple(replace(c, compute_s=c.compute_s * scale) for c in kernel.tiles) if total > 0 else kernel.tiles
    return replace(kernel, tiles=tiles, tail_s=kernel.tail_s + float(extra[0]))
