"""Tile-level timing of GEMMs and fused attention on a GPU: waves of thread blocks over the SMs.

A GPU runs a kernel as a grid of tiles dealt out to its SMs in waves, like a print shop with a fixed number of
presses: a job of 133 sheets on 132 presses takes two rounds, not 1.008. For a GEMM the library picks a tile
shape and a split of K; we model the common choices and take the fastest, as cuBLAS's heuristics and
autotuners aim to. Per candidate (tile tm × tn, split-K s):
    tiles    = ⌈m/tm⌉·⌈n/tn⌉·s,  waves = ⌈tiles / SMs⌉
    mainloop = 2·tm·tn·⌈k/s⌉ / (peak/SMs · E.tensor · shape_eff(tm, tn)),  at least ⌈⌈k/s⌉/(BK·stages)⌉ round
               trips to the level serving A and B (the pipeline keeps `stages` K-blocks in flight: Little's law)
    epilogue = tm·tn·(output or fp32 partial bytes) / (B_L2 · E.l2 / SMs) + one L2 round trip (not overlapped)
    L2       = tiles · (tm + tn)·⌈k/s⌉·a / (B_L2 · E.l2)          (every tile streams its A and B panels)
    HBM      = (m·k + k·n + m·n)·a (+ fp32 partials for s > 1) / (B_HBM · E.hbm)
    time     = max(waves · (mainloop + epilogue), L2, HBM)
               (+ for s > 1 the reduction kernel: a launch, a round trip, reading the partials and writing C)
shape_eff < 1 for tiles smaller than 128×256: fewer FLOPs per byte of shared memory and fewer warps to hide
latency.

Flash attention is tiled as the FlashAttention generation the device runs (``efficiency.attention_kernel``,
:class:`FlashKernel`): FA3 (Hopper) packs the GQA group into 128-row (192 for head_dim ≤ 96) query tiles and
overlaps the softmax with the matmuls; FA2 (Ampere, and the default) runs one 64-row CTA per query head and
exponentiates between the matmuls. Decode is split over the KV cache by FlashAttention's own ``num_splits``
heuristic (:func:`num_splits_heuristic`, :func:`decode_grid`); the split's combine kernel, and FA2's Q/O
regrouping copies, are extra kernels of the call.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

# (tm, tn) tile shapes offered to the heuristic: CUTLASS/cuBLAS Hopper and Ampere defaults.
GEMM_TILES = ((128, 256), (256, 128), (128, 128), (64, 256), (128, 64), (64, 128), (64, 64))
SPLIT_K = (1, 2, 4, 8)
REFERENCE_TILE = 128 * 256
SPLIT_K_REDUCE_S = 1.5e-6  # the extra reduction kernel of split-K, when the caller gives no launch cost
ATTN_BLOCK_Q = 128
# GEMM mainloop: K steps of 64 elements, 4 pipeline stages of A and B panels in shared memory (CUTLASS Hopper
# defaults); a 128x256 bf16 tile then needs 4·(128+256)·64·2 B = 192 KiB: one tile per SM.
GEMM_BLOCK_K = 64
GEMM_STAGES = 4


def shape_efficiency(tm: int, tn: int) -> float:
    """Fraction of the per-SM peak a tile of tm×tn sustains relative to 128×256 (mild: ^0.15 of the area)."""
    return min(1.0, tm * tn / REFERENCE_TILE) ** 0.15


def gemm_pipeline_time(ks: Any, latency: float) -> Any:
    """Least time of one tile's K loop when memory latency, not bandwidth, paces it: the mainloop keeps
    ``GEMM_STAGES`` K-blocks of ``GEMM_BLOCK_K`` in flight (Little's law per CTA), so ⌈ks/BK⌉ blocks take
    ⌈⌈ks/BK⌉ / stages⌉ round trips to the level serving the operands."""
    return np.ceil(np.ceil(np.asarray(ks, dtype=float) / GEMM_BLOCK_K) / GEMM_STAGES) * latency


def gemm_epilogue_time(tm: int, tn: int, o_bytes: float, port_bw: float, latency: Any) -> Any:
    """Time of one tile's epilogue, after its last MMA: its tm×tn results (fp32 partials under split-K) leave
    through the SM's share of the L2 bandwidth, and the kernel is not done until the last stores land (one
    round trip). A non-persistent GEMM kernel does not overlap it with the mainloop, so every wave pays it."""
    return tm * tn * o_bytes / port_bw + np.asarray(latency, dtype=float)


def gemm_time(m: Any, n: Any, k: Any, *, a_bytes: float, w_bytes: float, o_bytes: float, sms: int,
              peak: float, l2_bw: float, hbm_bw: Any, hbm_bytes: Any,
              latency: Any = 0.0, store_latency: float = 0.0,
              reduce_s: float = SPLIT_K_REDUCE_S) -> tuple[Any, Any, Any, Any]:
    """Best (time, compute_s, l2_s, l2_bytes) over tile shapes and split-K for GEMMs of shape m×n×k.

    ``peak``, ``l2_bw`` and ``hbm_bw`` are attainable rates (efficiency applied). ``hbm_bytes`` is the op's
    main-memory traffic (0 when it is cache resident). ``latency``: round trip to the level serving the
    operands; each wave of tiles then takes at least :func:`gemm_pipeline_time` for its mainloop, then
    :func:`gemm_epilogue_time` (``store_latency``: the round trip of a store to L2). Split-K (s > 1) adds its
    reduction kernel after the GEMM's: ``reduce_s`` (a launch and a round trip) plus reading the m·n fp32
    partials of every split and writing C from main memory, as the event engine's tail.
    Arrays broadcast.
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
            pipe = waves * gemm_pipeline_time(ks, latency)
            epi = waves * gemm_epilogue_time(tm, tn, 4.0 if s > 1 else o_bytes, l2_bw / sms, store_latency)
            # split-K's reduction is a second kernel, after the first: it reads the partials and writes C
            reduce = reduce_s + (partials + m * n * o_bytes) / hbm_bw if s > 1 else 0.0
            t = np.maximum(np.maximum(np.maximum(compute, pipe) + epi, l2b / l2_bw), hbm) + reduce
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
                       cta_bw: float, ctas: Any = None) -> Any:
    """Time to stream a decode attention's cache when each CTA sustains at most ``cta_bw`` (Little's law: the
    bytes it keeps in flight over the memory latency). With few sequences the KV split (``ctas``: the grid of
    :func:`decode_grid`, tiles × splits; default ⌈SMs / tiles⌉ splits, at most 128 and one per 128 keys) leaves
    about one CTA per SM, so the cache streams at CTAs · cta_bw, below the memory's bandwidth; at most two CTAs
    per SM stream at once. 0 for prefill, or when ``cta_bw`` is 0 (no such limit)."""
    if not cta_bw:
        return 0.0 * np.asarray(kv_bytes, dtype=float)
    if ctas is None:
        tiles = np.maximum(np.asarray(batch, dtype=float) * kv_heads, 1)
        splits = np.clip(np.ceil(sms / tiles), 1, np.minimum(128, np.maximum(np.ceil(np.asarray(kv_len) / 128), 1)))
        ctas = tiles * splits
    ctas = np.minimum(np.maximum(ctas, 1), 2 * sms)
    return np.where(np.asarray(q_len) == 1, kv_bytes / (ctas * cta_bw), 0.0)


@dataclass(frozen=True)
class FlashKernel:
    """How a FlashAttention generation tiles a (paged, variable-length) attention call, as vLLM calls it.

    ``fa2``: FlashAttention-2 (Ampere and later; vLLM's paged call always runs its split-KV kernel,
    ``run_mha_fwd_splitkv_dispatch``: kBlockM = 64 query rows, kBlockN = 256/128/64 keys for head_dim ≤ 64/≤ 128/
    larger, 128 threads so the split heuristic counts 2 CTAs per SM). Prefill has one CTA per (sequence, query
    head, 64 rows): the GQA group's heads do not share a CTA. A decode call (one query per sequence) with
    heads > kv_heads moves the group into the query rows (``seqlenq_ngroups_swapped``): one CTA per (sequence,
    KV head, split); that reshape of Q and of the output is a copy kernel each way unless it is a view (one
    sequence or one KV head); only then is the cache split, and each split call adds the combine kernel. The
    matmuls and the softmax's exponentials run one after the other in a warp.

    ``fa3``: FlashAttention-3 (Hopper): the group's heads packed into the query rows of one CTA (PackGQA,
    always on for a paged varlen call), kBlockM = 192 for head_dim ≤ 96 else 128, kBlockN 128 (≤ 128),
    96 (≤ 192), 80 (larger) for a paged cache; the split heuristic counts one CTA per SM and never splits 4 or
    fewer key blocks (flash_api.cpp/heuristics.h of each). Its two consumer warpgroups take turns (ping-pong):
    one exponentiates while the other's matmuls run, so the softmax hides under the tensor cores' time.
    """

    name: str
    pack_gqa: bool
    split_ctas_per_sm: int
    min_blocks_to_split: int
    overlap_softmax: bool  # FA3's ping-pong warpgroups hide the exponentials under the other group's matmuls

    def block_q(self, head_dim: Any) -> Any:
        if self.name == "fa2":
            return 64.0 + 0.0 * np.asarray(head_dim, dtype=float)
        return np.where(np.asarray(head_dim) <= 96, 192.0, 128.0)

    def block_kv(self, head_dim: Any) -> Any:
        d = np.asarray(head_dim, dtype=float)
        if self.name == "fa2":
            return np.where(d <= 64, 256.0, np.where(d <= 128, 128.0, 64.0))
        return np.where(d <= 128, 128.0, np.where(d <= 192, 96.0, 80.0))


FLASH_KERNELS = {"fa2": FlashKernel("fa2", False, 2, 0, False), "fa3": FlashKernel("fa3", True, 1, 4, True)}
MAX_SPLITS = 128


def flash_kernel(name: str | None) -> FlashKernel:
    return FLASH_KERNELS[name or "fa2"]


def num_splits_heuristic(tiles: Any, n_blocks: Any, slots: float, min_blocks: float = 0) -> Any:
    """FlashAttention's ``num_splits_heuristic``: no split when the tiles fill 80% of the slots (or the cache has
    at most ``min_blocks`` key blocks); else the fewest splits whose wave efficiency (waves / ⌈waves⌉) is
    within 85% of the best over the eligible splits (those that change the blocks per split), at most
    min(128, slots, key blocks)."""
    tiles = np.asarray(tiles, dtype=float)
    n_blocks = np.maximum(np.asarray(n_blocks, dtype=float), 1.0)
    tiles, n_blocks = np.broadcast_arrays(tiles, n_blocks)
    s = np.arange(1, MAX_SPLITS + 1, dtype=float).reshape((-1,) + (1,) * tiles.ndim)
    limit = np.minimum(min(MAX_SPLITS, slots), n_blocks)
    prev = np.ceil(n_blocks / np.maximum(s - 1, 1))
    eligible = ((s == 1) | (np.ceil(n_blocks / s) != prev)) & (s <= limit)
    waves = tiles * s / slots
    eff = np.where(eligible, waves / np.maximum(np.ceil(waves), 1), 0.0)
    ok = eligible & (eff >= 0.85 * eff.max(axis=0))
    first = np.argmax(ok, axis=0) + 1.0
    return np.where((tiles >= 0.8 * slots) | (n_blocks <= min_blocks), 1.0, first)


def softmax_overlap(matmul_s: Any, exp_s: Any, kernel: FlashKernel | None) -> Any:
    """Time of an attention mainloop's matmuls and exponentials: overlapped (the longer of the two) under
    FA3's ping-pong schedule, one after the other under FA2, where each warp exponentiates between its two
    matmuls."""
    if kernel is not None and kernel.overlap_softmax:
        return np.maximum(matmul_s, exp_s)
    return matmul_s + exp_s


def decode_grid(batch: Any, heads: Any, kv_heads: Any, kv_len: Any, head_dim: Any, *, sms: int,
                kernel: FlashKernel) -> tuple[Any, Any, Any]:
    """(tiles, splits, extra kernels) of a decode attention call (one query per sequence) under ``kernel``.

    tiles = CTAs before the KV split: batch·kv_heads·⌈group/kBlockM⌉ when the group shares a CTA (FA3 PackGQA,
    FA2's swap when heads > kv_heads), else batch·heads (FA2 on multi-head attention, which is never split).
    Extra kernels: the split-KV combine when splits > 1, and FA2's two copies of the swap when batch > 1 and
    kv_heads > 1 (see :class:`FlashKernel`)."""
    batch = np.asarray(batch, dtype=float)
    heads = np.asarray(heads, dtype=float)
    kv_heads = np.asarray(kv_heads, dtype=float)
    group = heads / np.maximum(kv_heads, 1)
    packed = np.full(np.broadcast(group).shape, True) if kernel.pack_gqa else group > 1
    rows = 64.0 if kernel.name == "fa2" else kernel.block_q(head_dim)
    tiles = np.where(packed, batch * kv_heads * np.ceil(group / rows), batch * heads)
    n_blocks = np.ceil(np.asarray(kv_len, dtype=float) / kernel.block_kv(head_dim))
    splits = num_splits_heuristic(tiles, n_blocks, kernel.split_ctas_per_sm * sms, kernel.min_blocks_to_split)
    if kernel.name == "fa2":  # FA2 splits only a swapped (grouped) decode call
        splits = np.where(packed, splits, 1.0)
        copies = np.where(packed & (batch > 1) & (kv_heads > 1), 2.0, 0.0)
    else:
        copies = 0.0
    return tiles, splits, copies + (splits > 1)


def attention_compute_time(batch: Any, q_len: Any, heads: Any, kv_heads: Any, flops: Any, *, sms: int,
                           peak: float, exps: Any = 0.0, exp_per_s: float = float("inf"),
                           tile_s: float = 0.0, head_dim: Any = 128, kernel: FlashKernel | None = None,
                           decode_tiles: Any = None, prefill_tile_s: float | None = None) -> Any:
    """Compute time of fused attention with wave quantisation and the softmax's exponentials.

    Prefill (q_len > 1): one tile per query block of ``kernel`` (FA3: the GQA group's queries packed, kBlockM
    rows per (batch, KV head); FA2: 64 rows per (batch, query head); no kernel: 128 packed rows), waves over
    the SMs; each tile pays ``prefill_tile_s`` (default ``tile_s``: loading Q, the rescale and writing O,
    latency a tile cannot hide) on top of its two matmuls on the tensor cores and its exponentials on the
    special-function units (:func:`softmax_overlap`: overlapped under FA3, one after the other otherwise).
    Decode (q_len = 1, flash-decoding): the KV length is split so the grid fills the SMs, so the work spreads
    evenly; but each of the ``decode_tiles`` (default batch × kv_heads) takes at least ``tile_s`` (a chain of
    dependent memory round trips), so a grid of many small tiles takes ⌈tiles / SMs⌉ · tile_s at least.
    """
    batch = np.asarray(batch, dtype=float)
    q_len = np.asarray(q_len, dtype=float)
    work = softmax_overlap(flops / peak, exps / exp_per_s, kernel)  # whole-GPU time of matmuls and exponentials
    bq = ATTN_BLOCK_Q if kernel is None else kernel.block_q(head_dim)
    if kernel is None or kernel.pack_gqa:
        prefill_tiles = batch * kv_heads * np.ceil(q_len * heads / kv_heads / bq)
    else:
        prefill_tiles = batch * heads * np.ceil(q_len / bq)
    waves = np.ceil(prefill_tiles / sms)
    prefill = waves * (work * sms / np.maximum(prefill_tiles, 1) + (tile_s if prefill_tile_s is None else prefill_tile_s))
    if decode_tiles is None:
        decode_tiles = batch * kv_heads
    chain = np.ceil(decode_tiles / sms) * tile_s
    decode = np.maximum(work, chain)
    return np.where(q_len > 1, prefill, decode)
