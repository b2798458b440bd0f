"""Tile-level timing of GEMMs and fused attention on a GPU: waves of thread blocks over the SMs.

A GPU runs a kernel as a grid of tiles dealt out to its SMs in waves, like a print shop with a fixed number of
presses: a job of 133 sheets on 132 presses takes two rounds, not 1.008. For a GEMM the library picks a tile
shape and a split of K; we model the common choices and take the fastest, as cuBLAS's heuristics and
autotuners aim to. Per candidate (tile tm × tn, split-K s):
    tiles   = ⌈m/tm⌉·⌈n/tn⌉·s,  waves = ⌈tiles / SMs⌉
    compute = waves · 2·tm·tn·⌈k/s⌉ / (peak/SMs · E.tensor · shape_eff(tm, tn))
    L2      = tiles · (tm + tn)·⌈k/s⌉·a / (B_L2 · E.l2)          (every tile streams its A and B panels)
    HBM     = (m·k + k·n + m·n)·a (+ fp32 partials for s > 1) / (B_HBM · E.hbm)
    time    = max(compute, L2, HBM) (+ one reduction launch for s > 1)
shape_eff < 1 for tiles smaller than 128×256: fewer FLOPs per byte of shared memory and fewer warps to hide
latency. Flash attention is tiled the same way: one tile per (batch, head, 128-query block) for prefill, and
split-KV tiles for decode (flash-decoding).
"""
from __future__ import annotations

from typing import Any

import numpy as np

# (tm, tn) tile shapes offered to the heuristic: CUTLASS/cuBLAS Hopper and Ampere defaults.
GEMM_TILES = ((128, 256), (256, 128), (128, 128), (64, 256), (128, 64), (64, 128), (64, 64))
SPLIT_K = (1, 2, 4, 8)
REFERENCE_TILE = 128 * 256
SPLIT_K_REDUCE_S = 1.5e-6  # the extra reduction kernel of split-K
ATTN_BLOCK_Q = 128


def shape_efficiency(tm: int, tn: int) -> float:
    """Fraction of the per-SM peak a tile of tm×tn sustains relative to 128×256 (mild: ^0.15 of the area)."""
    return min(1.0, tm * tn / REFERENCE_TILE) ** 0.15


def gemm_time(m: Any, n: Any, k: Any, *, a_bytes: float, w_bytes: float, o_bytes: float, sms: int,
              peak: float, l2_bw: float, hbm_bw: Any, hbm_bytes: Any) -> tuple[Any, Any, Any, Any]:
    """Best (time, compute_s, l2_s, l2_bytes) over tile shapes and split-K for GEMMs of shape m×n×k.

    ``peak``, ``l2_bw`` and ``hbm_bw`` are attainable rates (efficiency applied). ``hbm_bytes`` is the op's
    main-memory traffic (0 when it is cache resident). Arrays broadcast.
    """
    m = np.asarray(m, dtype=float)
    n = np.asarray(n, dtype=float)
    k = np.asarray(k, dtype=float)
    best = best_c = best_l2 = best_l2b = None
    per_sm = peak / sms
    for tm, tn in GEMM_TILES:
        eff = shape_efficiency(tm, tn)
        for s in SPLIT_K:
            tiles = np.ceil(m / tm) * np.ceil(n / tn) * s
            waves = np.ceil(tiles / sms)
            ks = np.ceil(k / s)
            compute = waves * 2.0 * tm * tn * ks / (per_sm * eff)
            l2b = tiles * (tm * a_bytes + tn * w_bytes) * ks + m * n * o_bytes
            partials = m * n * 4.0 * s if s > 1 else 0.0
            hbm = (hbm_bytes + partials) / hbm_bw
            t = np.maximum(np.maximum(compute, l2b / l2_bw), hbm) + (SPLIT_K_REDUCE_S if s > 1 else 0.0)
            if best is None:
                best, best_c, best_l2, best_l2b = t, compute, l2b / l2_bw, l2b
            else:
                better = t < best
                best = np.where(better, t, best)
                best_c = np.where(better, compute, best_c)
                best_l2 = np.where(better, l2b / l2_bw, best_l2)
                best_l2b = np.where(better, l2b, best_l2b)
    return best, best_c, best_l2, best_l2b


# Dependent memory round trips of one decode tile (query, page table, first K/V block, output): a tile cannot
# finish faster than that chain, so a grid of many tiny tiles costs ⌈tiles / SMs⌉ chains. Calibration may
# replace the chain by a measured tile time (efficiency.attention_tile_s).
DECODE_DEPENDENT_LOADS = 4


def softmax_exps(batch: Any, heads: Any, pairs: Any) -> Any:
    """Exponentials of an attention: one per (query, key) pair and head."""
    return batch * heads * pairs


def exp_rate(vector_fp32_flops: float) -> float:
    """Exponentials per second: the special-function units issue 16 per clock per SM, against 128 FP32 lanes
    (2 FLOPs each per FMA) on Ampere/Hopper SMs (CUDA C Programming Guide, arithmetic instruction
    throughput table): fp32 vector FLOP/s / 16."""
    return vector_fp32_flops / 16.0


def decode_stream_time(batch: Any, q_len: Any, kv_heads: Any, kv_len: Any, kv_bytes: Any, *, sms: int,
                       cta_bw: float) -> Any:
    """Time to stream a decode attention's cache when each CTA sustains at most ``cta_bw`` (Little's law: the
    bytes it keeps in flight over the memory latency). With few sequences the KV split that fills the SMs
    (⌈SMs / tiles⌉ splits, at most 128 and one per 128 keys) leaves one CTA per SM, so the cache streams at
    CTAs · cta_bw, below the memory's bandwidth. 0 for prefill, or when ``cta_bw`` is 0 (no such limit)."""
    if not cta_bw:
        return 0.0 * np.asarray(kv_bytes, dtype=float)
    tiles = np.maximum(np.asarray(batch, dtype=float) * kv_heads, 1)
    splits = np.clip(np.ceil(sms / tiles), 1, np.minimum(128, np.maximum(np.ceil(np.asarray(kv_len) / 128), 1)))
    ctas = np.minimum(tiles * splits, 2 * sms)
    return np.where(np.asarray(q_len) == 1, kv_bytes / (ctas * cta_bw), 0.0)


def attention_compute_time(batch: Any, q_len: Any, heads: Any, kv_heads: Any, flops: Any, *, sms: int,
                           peak: float, exps: Any = 0.0, exp_per_s: float = float("inf"),
                           tile_s: float = 0.0) -> Any:
    """Compute time of fused attention with wave quantisation and the softmax's exponentials.

    Prefill (q_len > 1): one tile per (batch, KV head, 128 rows of the GQA group's queries packed together),
    waves over the SMs; each tile pays ``tile_s`` (loading Q, the rescale and writing O: latency a tile cannot
    hide) on top of its two matmuls on the tensor cores and its exponentials on the special-function units, one
    after the other (the overlap FlashAttention-3 achieves is partial; this is the conservative end). Decode (q_len = 1,
    flash-decoding): the KV length is split so the grid fills the SMs, so the work spreads evenly; but each of
    the batch × kv_heads tiles takes at least ``tile_s`` (a chain of dependent memory round trips), so a grid
    of many small tiles takes ⌈tiles / SMs⌉ · tile_s at least.
    """
    batch = np.asarray(batch, dtype=float)
    q_len = np.asarray(q_len, dtype=float)
    work = flops / peak + exps / exp_per_s  # whole-GPU time of the matmuls and exponentials
    prefill_tiles = batch * kv_heads * np.ceil(q_len * heads / kv_heads / ATTN_BLOCK_Q)
    waves = np.ceil(prefill_tiles / sms)
    prefill = waves * (work * sms / np.maximum(prefill_tiles, 1) + tile_s)
    decode_tiles = batch * kv_heads
    chain = np.ceil(decode_tiles / sms) * tile_s
    decode = np.maximum(work, chain)
    return np.where(q_len > 1, prefill, decode)
