"""What a GPU kernel launches for an op: tile shapes, grids, splits, occupancy and per-tile work. Both engines
read these plans; they differ only in how they schedule the tiles, never in what a tile costs.

A GPU runs a kernel as a grid of tiles dealt out to its SMs in waves, like a print shop with a fixed number of
presses: a job of 133 sheets on 132 presses takes two rounds, not 1.008. The analytic engine
(:mod:`perfmodel.engines.analytic`) sums the waves in closed form (:func:`waves_time`); the event engine
(:mod:`perfmodel.engines.event_tiling`) turns the same plan into SimPy tiles that share bandwidth as they run.

**GEMM** (:func:`gemm_plan`). The library picks a tile shape and a split of K; we offer the common CUTLASS /
cuBLAS choices and take the fastest by the closed form below, as cuBLAS's heuristics and autotuners aim to.
Per candidate (tile tm × tn, split-K s, r = CTAs resident per SM from the shared-memory footprint of its
pipeline, :func:`gemm_occupancy`):
    tiles    = ⌈m/tm⌉·⌈n/tn⌉·s,    slots = SMs·r
    mainloop = 2·tm·tn·⌈k/s⌉ / (peak/SMs · shape_eff(tm, tn))      (one SM's time for one tile)
               at least ⌈⌈k/s⌉/(BK·stages)⌉ round trips to the level serving A and B (Little's law per CTA;
               BK: 128 bytes of the wider operand, 64 bf16 or 128 fp8 elements)
    epilogue = tm·tn·(output or fp32 partial bytes) / (B_L2 / SMs) + one L2 round trip (not overlapped)
    waves    = Σ over waves of w tiles: epilogue + max(floor, mainloop·max(1, w/SMs))     (:func:`waves_time`)
    L2       = tiles · (tm·a + tn·w)·⌈k/s⌉ + m·n·o  bytes          HBM = unique bytes (+ fp32 partials)
    time     = max(waves, L2 / B_L2, HBM / B_HBM) (+ for s > 1 the reduction kernel: a launch, a round trip,
               reading the partials and writing C)
shape_eff < 1 for tiles smaller than 128×256: fewer FLOPs per byte of shared memory and fewer warps to hide
latency.

**Attention** (:func:`attention_plan`) is tiled as the FlashAttention generation the device runs
(``efficiency.attention_kernel``, :class:`FlashKernel`): FA3 (Hopper) packs the GQA group into 128-row (192 for
head_dim ≤ 96) query tiles and overlaps the softmax with the matmuls; FA2 (Ampere, Ada, and the default) runs
one 64-row CTA per query head and exponentiates between the matmuls. The KV cache is split by FlashAttention's
own ``num_splits`` heuristic (:func:`num_splits_heuristic`): FA3 applies it to every call (so a block-diffusion
step or a speculative verify pass with 1 < q_len < kv_len is split too), FA2 as vLLM calls it only to a decode
call whose GQA group it regroups into the query rows. The split's combine kernel, and FA2's Q/O regrouping
copies, are extra kernels of the call.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np

# FlashAttention's split-KV heuristic and the power limiter have modules of their own; both engines reach them here.
from perfmodel.engines.splits import num_splits_heuristic  # noqa: F401
from perfmodel.engines.throttle import energy_weights, power_excess, power_stretch, stretch_of  # noqa: F401

# (tm, tn) tile shapes offered to the heuristic: CUTLASS/cuBLAS Hopper and Ampere defaults.
GEMM_TILES = ((128, 256), (256, 128), (128, 128), (64, 256), (128, 64), (64, 128), (64, 64))
SPLIT_K = (1, 2, 4, 8)
REFERENCE_TILE = 128 * 256
SPLIT_K_REDUCE_S = 1.5e-6  # the extra reduction kernel of split-K, when the caller gives no launch cost
ATTN_BLOCK_Q = 128
# GEMM mainloop: K steps of 128 bytes of the wider operand (64 bf16 elements, 128 fp8 ones: the 128-byte shared-
# memory swizzle CUTLASS's Hopper and Blackwell tile shapes are built on), 4 pipeline stages of A and B panels in
# shared memory (CUTLASS Hopper defaults); a 128x256 tile then needs 4·(128+256)·128 B = 192 KiB: one tile per SM.
GEMM_BLOCK_K_BYTES = 128
GEMM_BLOCK_K = 64  # elements of a 16-bit operand
GEMM_STAGES = 4
GEMM_MIN_STAGES = 2  # a double-buffered mainloop, the fewest CUTLASS builds
MAX_OCCUPANCY = 16


#: The SM version of each architecture name, for specs that give no ``compute.sm_version``.
DEFAULT_SM = {"ampere": 80, "ada": 89, "hopper": 90, "blackwell": 100, "blackwell-ultra": 103}
# Operand sharing inside a thread-block cluster, per SM version (CUTLASS's kernel schedules): on Hopper (sm_90)
# GEMMs run in 2x1 clusters whose TMA multicast loads each B panel once for the two CTAs; on datacenter Blackwell
# (sm_100, sm_103) a CTA pair runs one 2-SM MMA (tcgen05 cta_group::2) over a 256-row tile, each CTA loading half
# of the shared operand, inside clusters that multicast the other: both operands reach L2 once per two CTAs.
# Ampere, Ada and the GB202 graphics SM (sm_8x, sm_120: mma.sync, no 2-SM MMA) load their own panels.
# Values: (A panels, B panels) loaded per CTA, as fractions.
GEMM_OPERAND_SHARING = {90: (1.0, 0.5), 100: (0.5, 0.5), 103: (0.5, 0.5)}


def sm_version(architecture: str | None, sm: int | None = None) -> int | None:
    """The SM version that picks a device's kernels: its spec's ``compute.sm_version``, else its architecture's."""
    return sm if sm else DEFAULT_SM.get(architecture or "")


def operand_sharing(architecture: str | None, sm: int | None = None) -> tuple[float, float]:
    """(A, B) panel fractions one CTA loads through L2 (:data:`GEMM_OPERAND_SHARING`)."""
    return GEMM_OPERAND_SHARING.get(sm_version(architecture, sm) or 0, (1.0, 1.0))


def shape_efficiency(tm: int, tn: int) -> float:
    """Fraction of the per-SM peak a tile of tm×tn sustains relative to 128×256 (mild: ^0.15 of the area)."""
    return min(1.0, tm * tn / REFERENCE_TILE) ** 0.15


def gemm_block_k(a_bytes: float, w_bytes: float) -> float:
    """Elements of K per mainloop step: ``GEMM_BLOCK_K_BYTES`` of the wider operand."""
    return GEMM_BLOCK_K_BYTES / max(a_bytes, w_bytes)


def gemm_stages(tm: int, tn: int, a_bytes: float, w_bytes: float, smem_bytes: float | None) -> int:
    """Pipeline stages of one CTA: ``GEMM_STAGES`` K-blocks of A and B panels ((tm·a + tn·w)·BK bytes each), fewer
    where one SM's shared memory cannot hold them (as CUTLASS's automatic stage count does), 0 where not even
    ``GEMM_MIN_STAGES`` fit (no such kernel); ``GEMM_STAGES`` without a per-SM scratchpad."""
    stage = (tm * a_bytes + tn * w_bytes) * gemm_block_k(a_bytes, w_bytes)
    if not smem_bytes or stage <= 0:
        return GEMM_STAGES
    n = int(min(GEMM_STAGES, smem_bytes // stage))
    return n if n >= GEMM_MIN_STAGES else 0


def gemm_occupancy(tm: int, tn: int, a_bytes: float, w_bytes: float, smem_bytes: float | None) -> int:
    """GEMM CTAs resident per SM: the shared memory one SM has over one CTA's pipeline buffers (its
    :func:`gemm_stages` K-blocks of A and B panels); 1 without a per-SM scratchpad."""
    stages = gemm_stages(tm, tn, a_bytes, w_bytes, smem_bytes)
    footprint = stages * (tm * a_bytes + tn * w_bytes) * gemm_block_k(a_bytes, w_bytes)
    if not smem_bytes or footprint <= 0:
        return 1
    return int(min(MAX_OCCUPANCY, max(1, smem_bytes // footprint)))


def gemm_pipeline_time(ks: Any, latency: float, block_k: float = GEMM_BLOCK_K, stages: Any = GEMM_STAGES) -> Any:
    """Least time of one tile's K loop when memory latency, not bandwidth, paces it: the mainloop keeps
    ``stages`` K-blocks of ``block_k`` elements in flight (Little's law per CTA), so ⌈ks/BK⌉ blocks take
    ⌈⌈ks/BK⌉ / stages⌉ round trips to the level serving the operands."""
    return np.ceil(np.ceil(np.asarray(ks, dtype=float) / block_k) / np.maximum(stages, 1)) * latency


def gemm_epilogue_time(tm: int, tn: int, o_bytes: float, port_bw: float, latency: Any) -> Any:
    """Time of one tile's epilogue, after its last MMA: its tm×tn results (fp32 partials under split-K) leave
    through the SM's share of the L2 bandwidth, and the kernel is not done until the last stores land (one
    round trip). A non-persistent GEMM kernel does not overlap it with the mainloop, so every wave pays it."""
    return tm * tn * o_bytes / port_bw + np.asarray(latency, dtype=float)


def wave_split(count: Any, slots: Any) -> tuple[Any, Any]:
    """(full waves, blocks of the last, partial wave: 0 when there is none) of ``count`` blocks dealt out
    ``slots`` at a time."""
    count = np.asarray(count, dtype=float)
    full = np.floor(count / slots)
    return full, count - full * slots


def waves_time(tiles: Any, sms: int, occupancy: Any, compute_s: Any, floor_s: Any = 0.0,
               serial_s: Any = 0.0) -> tuple[Any, Any]:
    """(time, compute part) of a grid of identical tiles run alone in waves, bandwidth aside.

    A wave of w tiles (at most SMs·occupancy) gives each tile min(1, SMs/w) of an SM, so it takes
    serial + max(floor, compute·max(1, w/SMs)); the full waves and the last, partial one are summed. This is
    the event engine's per-wave rule (:func:`perfmodel.engines.event_tiling.lone_kernel_time`) without its
    bandwidth terms, which the analytic engine takes as separate roofline terms.
    """
    slots = sms * np.asarray(occupancy, dtype=float)
    full, rest = wave_split(tiles, slots)
    stretch_full = np.maximum(1.0, slots / sms)
    stretch_rest = np.maximum(1.0, rest / sms)
    c_full, c_rest = compute_s * stretch_full, compute_s * stretch_rest
    time = full * (serial_s + np.maximum(floor_s, c_full)) + np.where(
        rest > 0, serial_s + np.maximum(floor_s, c_rest), 0.0)
    return time, full * c_full + np.where(rest > 0, c_rest, 0.0)


@dataclass(frozen=True)
class GemmPlan:
    """The GEMM kernel chosen for an op (every field broadcasts over a sweep grid).

    ``tile_compute_s``: one SM's time for one tile's MMAs; ``tile_floor_s``: the latency-paced K loop;
    ``tile_epilogue_s``: the serial epilogue; ``l2_bytes``: the tiles' panel traffic through L2 plus C;
    ``partial_bytes``: fp32 partials of split-K written and read back through main memory; ``reduce_s``: the
    reduction kernel after the GEMM's (0 without split-K). ``time``, ``compute_s``, ``l2_s``: the analytic
    engine's closed form (see the module docstring).
    """

    tm: Any
    tn: Any
    split: Any
    tiles: Any
    occupancy: Any
    tile_compute_s: Any
    tile_floor_s: Any
    tile_epilogue_s: Any
    l2_bytes: Any
    partial_bytes: Any
    reduce_s: Any
    time: Any
    compute_s: Any
    l2_s: Any

    @property
    def label(self) -> str:
        return f"{int(self.tm)}x{int(self.tn)} tiles, split-K {int(self.split)}"


@functools.lru_cache(maxsize=256)
def _gemm_candidates(shapes: tuple, splits: tuple, a_bytes: float, w_bytes: float, smem_bytes: float | None):
    """(tm, tn, split, shape efficiency, occupancy, pipeline stages) of every candidate kernel, as read-only
    arrays (None: no candidate)."""
    cands = [(tm, tn, s) for tm, tn in shapes for s in splits]
    if not cands:
        return None
    out = (np.array([c[0] for c in cands], dtype=float), np.array([c[1] for c in cands], dtype=float),
           np.array([c[2] for c in cands], dtype=float), np.array([shape_efficiency(c[0], c[1]) for c in cands]),
           np.array([gemm_occupancy(c[0], c[1], a_bytes, w_bytes, smem_bytes) for c in cands], dtype=float),
           np.array([gemm_stages(c[0], c[1], a_bytes, w_bytes, smem_bytes) for c in cands], dtype=float))
    for a in out:
        a.flags.writeable = False
    return out


def gemm_plan(m: Any, n: Any, k: Any, *, a_bytes: float, w_bytes: float, o_bytes: float, sms: int,
              peak: float, l2_bw: float, hbm_bw: Any, hbm_bytes: Any, latency: Any = 0.0,
              store_latency: float = 0.0, reduce_s: float = SPLIT_K_REDUCE_S,
              smem_bytes: float | None = None, shapes=GEMM_TILES, splits=SPLIT_K,
              sharing: tuple[float, float] = (1.0, 1.0), dispatch: Any = None) -> GemmPlan:
    """The fastest tile shape and split-K for GEMMs of shape m×n×k (arrays broadcast), or, with ``dispatch``
    (a function of (m, n, k) giving each GEMM's (tm, tn) arrays, :func:`library_dispatch`), the tile the library's
    own dispatch table picks, without split-K.

    ``peak``, ``l2_bw`` and ``hbm_bw`` are attainable rates (efficiency applied). ``hbm_bytes`` is the op's
    main-memory traffic (0 when it is cache resident). ``latency``: round trip to the level serving the
    operands (the K loop's pace, :func:`gemm_pipeline_time`); ``store_latency``: the round trip of a store to L2
    (:func:`gemm_epilogue_time`); ``reduce_s``: the fixed cost of split-K's reduction kernel (a launch and a round
    trip); ``smem_bytes``: shared memory per SM (:func:`gemm_occupancy`). ``shapes`` and ``splits`` are the
    candidates (pin one of each to see a fixed kernel's waves). ``sharing``: the fractions of the A and B panels
    one CTA loads through L2 when a cluster shares them (:func:`operand_sharing`).
    """
    m = np.asarray(m, dtype=float)
    n = np.asarray(n, dtype=float)
    k = np.asarray(k, dtype=float)
    shape = np.broadcast_shapes(m.shape, n.shape, k.shape, np.shape(hbm_bytes), np.shape(latency),
                                np.shape(hbm_bw))
    fixed = None
    if dispatch is not None:
        tm_d, tn_d = (np.broadcast_to(np.asarray(v, dtype=float), shape) for v in dispatch(m, n, k))
        keys, inverse = np.unique(tm_d.ravel() * 65536.0 + tn_d.ravel(), return_inverse=True)  # tile edges < 65536
        shapes = tuple((int(key // 65536), int(key % 65536)) for key in keys)
        splits = (1,)
        fixed = inverse.reshape(shape).astype(np.intp)
    try:
        consts = _gemm_candidates(tuple(shapes), tuple(splits), a_bytes, w_bytes, smem_bytes)
    except TypeError:  # operand widths given as arrays: not cached
        consts = _gemm_candidates.__wrapped__(tuple(shapes), tuple(splits), a_bytes, w_bytes, smem_bytes)
    if consts is None:
        raise ValueError(f"GEMM plan: no tile shape to choose from (shapes={shapes!r}, splits={splits!r})")
    # Every candidate at once, along a leading axis (the candidates' constants are columns of shape (C, 1, ...)).
    n_cands = len(consts[0])
    col = (-1,) + (1,) * len(shape)
    tm, tn, s, eff, occ, stages = (c.reshape(col) for c in consts)
    split = s > 1
    tiles = np.ceil(m / tm) * np.ceil(n / tn) * s
    ks = np.ceil(k / s)
    tile_c = 2.0 * tm * tn * ks / (peak / sms * eff)
    floor = gemm_pipeline_time(ks, latency, gemm_block_k(a_bytes, w_bytes), stages)
    epi = tm * tn * np.where(split, 4.0, o_bytes) / (l2_bw / sms) + np.asarray(store_latency, dtype=float)
    waves, compute = waves_time(tiles, sms, occ, tile_c, floor, epi)
    l2b = tiles * (tm * a_bytes * sharing[0] + tn * w_bytes * sharing[1]) * ks + m * n * o_bytes
    partials = np.where(split, m * n * 4.0 * s, 0.0)
    hbm = (hbm_bytes + partials) / hbm_bw
    # split-K's reduction is a second kernel, after the first: it reads the partials and writes C
    red = np.where(split, reduce_s + (partials + m * n * o_bytes) / hbm_bw, 0.0)
    t = np.maximum(np.maximum(waves, l2b / l2_bw), hbm) + red
    t = np.broadcast_to(np.where(stages > 0, t, np.inf), (n_cands,) + shape)  # a tile whose pipeline does not fit
    # the dispatched kernel, else the first fastest (as a strict "<" scan over the candidates picks it)
    pick = fixed if fixed is not None else np.argmin(t, axis=0)

    def chosen(v: Any) -> Any:
        v = np.asarray(v, dtype=float)
        if v.size == n_cands:  # a constant of each candidate
            return v.reshape(-1)[pick]
        v = np.broadcast_to(v, (n_cands,) + shape)
        return np.take_along_axis(v, pick[None], axis=0)[0]

    return GemmPlan(tm=chosen(tm), tn=chosen(tn), split=chosen(s), tiles=chosen(tiles), occupancy=chosen(occ),
                    tile_compute_s=chosen(tile_c), tile_floor_s=chosen(floor), tile_epilogue_s=chosen(epi),
                    l2_bytes=chosen(l2b), partial_bytes=chosen(partials), reduce_s=chosen(red), time=chosen(t),
                    compute_s=chosen(compute), l2_s=chosen(l2b / l2_bw))


def _next_pow2(x: Any) -> Any:
    return 2.0 ** np.ceil(np.log2(np.maximum(np.asarray(x, dtype=float), 1.0)))


def _scaled_mm_sm100(m: Any, n: Any, k: Any) -> tuple[Any, Any]:
    """vLLM's fp8 scaled_mm on sm_100/103 (csrc/.../c3x/scaled_mm_sm100_fp8_dispatch.cuh), per-CTA (tm, tn): m ≤ 16
    swaps A and B, a 128×32 tile over (n, m); m ≤ 64 a swapped 128×64 (64×64 unswapped when m = 64 and k < 4096);
    larger m 128×128 (m > 256: a 256×128 tile on a CTA pair, 128×128 each)."""
    tm = np.where(m <= 16, 32.0, np.where(m <= 64, 64.0, 128.0))
    tn = np.where(m <= 16, 128.0, np.where(m <= 64, np.where((m == 64) & (k < 4096), 64.0, 128.0), 128.0))
    return tm, tn


def _scaled_mm_sm90(m: Any, n: Any, k: Any) -> tuple[Any, Any]:
    """vLLM's fp8 scaled_mm on sm_90 (csrc/.../c3x/scaled_mm_sm90_fp8_dispatch.cuh), per-CTA (tm, tn): m ≤ 16, and
    m ≤ 64 with n ≤ 1280, a swapped 64×16 tile over (n, m); m ≤ 64 a swapped 64×64; m ≤ 128 64×128; larger 128×128."""
    small = (m <= 16) | ((m <= 64) & (n <= 1280))
    tm = np.where(small, 16.0, np.where(m <= 64, 64.0, np.where(m <= 128, 64.0, 128.0)))
    tn = np.where(small, 64.0, np.where(m <= 64, 64.0, 128.0))
    return tm, tn


def _scaled_mm_sm89(m: Any, n: Any, k: Any) -> tuple[Any, Any]:
    """vLLM's fp8 scaled_mm on sm_89 (csrc/.../scaled_mm_c2x_sm89_fp8_dispatch.cuh): buckets of next_pow_2(m)
    (at least 16), each choosing its CTA tile by next_pow_2(n)."""
    mp, np2 = np.maximum(16.0, _next_pow2(m)), _next_pow2(n)
    tm = np.select([mp <= 16, mp <= 32, mp <= 64, mp <= 128, mp <= 256],
                   [np.where(np2 <= 24576, 16.0, 32.0), 32.0, 64.0, np.where(np2 <= 8192, 64.0, 128.0),
                    np.where(np2 <= 4096, 64.0, 128.0)],
                   np.where((np2 > 4096) & (np2 <= 8192), 256.0, 128.0))
    tn = np.select([mp <= 16, mp <= 32, mp <= 64, mp <= 128, mp <= 256],
                   [np.where((np2 > 8192) & (np2 <= 24576), 128.0, 64.0),
                    np.where((np2 > 8192) & (np2 <= 16384), 128.0, 64.0),
                    np.where((np2 > 8196) & (np2 <= 16384), 128.0, 64.0),
                    np.where(np2 <= 16384, 128.0, 64.0), 128.0], 128.0)
    return tm, tn


def _scaled_mm_sm120(m: Any, n: Any, k: Any) -> tuple[Any, Any]:
    """vLLM's fp8 scaled_mm on sm_120 (csrc/.../c3x/scaled_mm_sm120_fp8_dispatch.cuh), no swap: m ≤ 16 a 16×64
    tile, m ≤ 32 32×64, m ≤ 256 64×64, larger 128×128."""
    tm = np.where(m <= 16, 16.0, np.where(m <= 32, 32.0, np.where(m <= 256, 64.0, 128.0)))
    return tm, np.where(m <= 256, 64.0, 128.0)


#: GEMM kernels chosen by a library's own dispatch table rather than by the fastest candidate: (dtype, SM version)
#: -> (m, n, k) -> per-CTA (tm, tn). vLLM runs fp8 linears (per-tensor scales) through CUTLASS scaled_mm.
LIBRARY_DISPATCH = {("fp8", 89): _scaled_mm_sm89, ("fp8", 90): _scaled_mm_sm90, ("fp8", 100): _scaled_mm_sm100,
                    ("fp8", 103): _scaled_mm_sm100, ("fp8", 120): _scaled_mm_sm120}


def library_dispatch(dtype: str, architecture: str | None, sm: int | None = None) -> Any:
    """The dispatch table (:data:`LIBRARY_DISPATCH`) of ``dtype`` GEMMs on this SM version, or None."""
    return LIBRARY_DISPATCH.get((dtype, sm_version(architecture, sm) or 0))


def gemm_time(m: Any, n: Any, k: Any, **kw: Any) -> tuple[Any, Any, Any, Any]:
    """(time, compute_s, l2_s, l2_bytes) of :func:`gemm_plan`."""
    plan = gemm_plan(m, n, k, **kw)
    return plan.time, plan.compute_s, plan.l2_s, plan.l2_bytes


# Dependent memory round trips of one decode tile (query, page table, first K/V block, output): a tile cannot
# finish faster than that chain, so a grid of many tiny tiles costs ⌈tiles / slots⌉ chains. Calibration may
# replace the chain by a measured tile time (efficiency.attention_tile_s).
DECODE_DEPENDENT_LOADS = 4


def softmax_exps(batch: Any, heads: Any, pairs: Any) -> Any:
    """Exponentials of an attention: one per (query, key) pair and head."""
    return batch * heads * pairs


#: Exponentials per clock per SM of the special-function units (CUDA C Programming Guide, arithmetic instruction
#: throughput: 16 for compute capability 8.x-10.0 and 12.0); Blackwell Ultra (sm_103) doubles them (NVIDIA's
#: "Inside Blackwell Ultra": 10.7 tera-exponentials per second against B200's 5).
SFU_EXPS_PER_CLOCK = {103: 32}
SFU_DEFAULT_EXPS_PER_CLOCK = 16
#: FP32 operations per score besides its exponential in an online softmax: the running max, the scale-and-subtract
#: FMA, the row sum and the conversion of P to bf16 for the second matmul.
SOFTMAX_FP32_OPS = 4


def softmax_rate(units: int, clock_hz: float, vector_fp32_flops: float, sm: int | None = None) -> float:
    """Scores per second an online softmax gets through on the whole GPU: one exponential each on the
    special-function units (:data:`SFU_EXPS_PER_CLOCK` per SM per clock) and :data:`SOFTMAX_FP32_OPS` FP32
    operations on the FMA units (at the fp32 vector peak), one after the other in a warp."""
    sfu = units * clock_hz * SFU_EXPS_PER_CLOCK.get(sm or 0, SFU_DEFAULT_EXPS_PER_CLOCK)
    return 1.0 / (1.0 / sfu + SOFTMAX_FP32_OPS / vector_fp32_flops)


def exp_rate(vector_fp32_flops: float) -> float:
    """Exponentials per second of a device without a special-function-unit figure: fp32 vector FLOP/s / 16 (the
    SFUs issue 16 per clock per SM against 128 FP32 lanes of 2 FLOPs on Ampere/Hopper SMs)."""
    return vector_fp32_flops / 16.0


@dataclass(frozen=True)
class FlashKernel:
    """How a fused-attention kernel family tiles a (paged, variable-length) attention call, as vLLM calls it.

    ``fa2``: FlashAttention-2 (Ampere and later; vLLM's paged call always runs its split-KV kernel,
    ``run_mha_fwd_splitkv_dispatch``: kBlockM = 64 query rows, kBlockN = 256/128/64 keys for head_dim ≤ 64/≤ 128/
    larger, 128 threads so the split heuristic counts 2 CTAs per SM). One CTA per (sequence, query head, 64
    rows): the GQA group's heads do not share a CTA. A decode call (one query per sequence) with heads > kv_heads
    moves the group into the query rows (``seqlenq_ngroups_swapped``): one CTA per (sequence, KV head, split);
    that reshape of Q and of the output is a copy kernel each way unless it is a view (one sequence or one KV
    head); only then is the cache split (``mha_varlen_fwd``: "only apply split-k for decoding"), and each split
    call adds the combine kernel. The matmuls and the softmax's exponentials run one after the other in a warp.

    ``fa3``: FlashAttention-3 (Hopper): the group's heads packed into the query rows of one CTA (PackGQA,
    always on for a paged varlen call), kBlockM = 192 for head_dim ≤ 96 else 128, kBlockN 128 (≤ 128),
    96 (≤ 192), 80 (larger) for a paged cache; the split heuristic runs on every call, counts one CTA per SM and
    never splits 4 or fewer key blocks (flash_api.cpp/heuristics.h of each; the model applies it to calls of one
    query block per (sequence, KV head), see :meth:`splits`). Its two consumer warpgroups take
    turns (ping-pong): one exponentiates while the other's matmuls run, so the softmax hides under the tensor
    cores' time.

    ``trtllm``: TensorRT-LLM's Blackwell kernels as FlashInfer calls them (trtllmGenKernels/fmha/fmhaKernels.h):
    a decode ("generation") CTA takes a group of query heads sharing a KV head, at most 8 (groups ≤ 8), 16
    (≤ 16) or 32 (larger groups, the other kernel type); the cache is split in ``numCtasPerSeqKv`` = min(key
    blocks of 128, max(1, ⌊SMs / CTAs⌋)) pieces reduced inside the kernel (through cluster shared memory or
    global memory, no combine kernel), else a persistent scheduler walks the tiles. A prefill ("context") CTA
    takes 128 query rows of one head and is never split. Softmax warps run beside the MMA warps (overlapped).
    """

    name: str
    split_ctas_per_sm: int
    min_blocks_to_split: int
    overlap_softmax: bool  # the exponentials hide under the matmuls (FA3 ping-pong, TensorRT-LLM warp roles)

    def packed(self, decode: Any, group: Any) -> Any:
        """Whether the group's query heads share a CTA."""
        if self.name == "fa3":
            return np.full(np.broadcast(decode, group).shape, True)
        if self.name == "trtllm":
            return np.asarray(decode) & np.full(np.shape(group), True)
        return np.asarray(decode) & (np.asarray(group) > 1)

    def rows(self, head_dim: Any, group: Any, decode: Any) -> Any:
        """Query rows of one CTA (packed heads count as rows)."""
        group = np.asarray(group, dtype=float)
        if self.name == "fa3":
            return self.block_q(head_dim) + 0.0 * group
        if self.name == "trtllm":
            cap = np.where(group <= 8, 8.0, np.where(group <= 16, 16.0, 32.0))
            return np.where(decode, np.minimum(group, cap), 128.0)
        return 64.0 + 0.0 * group

    def block_q(self, head_dim: Any) -> Any:
        if self.name == "fa3":
            return np.where(np.asarray(head_dim) <= 96, 192.0, 128.0)
        return 64.0 + 0.0 * np.asarray(head_dim, dtype=float) if self.name == "fa2" \
            else 128.0 + 0.0 * np.asarray(head_dim, dtype=float)

    def block_kv(self, head_dim: Any) -> Any:
        d = np.asarray(head_dim, dtype=float)
        if self.name == "fa2":
            return np.where(d <= 64, 256.0, np.where(d <= 128, 128.0, 64.0))
        if self.name == "fa3":
            return np.where(d <= 128, 128.0, np.where(d <= 192, 96.0, 80.0))
        return 128.0 + 0.0 * d

    def splits(self, tiles: Any, n_blocks: Any, sms: int, decode: Any, packed: Any, blocks: Any = 1) -> Any:
        """KV splits of a call with ``tiles`` CTAs over ``n_blocks`` key blocks (``blocks``: query blocks per
        unit). FA3's heuristic runs on every call; the model applies it where the queries fill one block per
        (sequence, KV head): a decode step, a speculative verify pass, a block-diffusion step. A longer prefill
        keeps one CTA per query block, as the heuristic leaves it once the query blocks fill the SMs."""
        if self.name == "trtllm":
            fill = np.maximum(1.0, np.floor(sms / np.maximum(np.asarray(tiles, dtype=float), 1.0)))
            return np.where(decode, np.minimum(np.maximum(n_blocks, 1.0), fill), 1.0)
        s = num_splits_heuristic(tiles, n_blocks, self.split_ctas_per_sm * sms, self.min_blocks_to_split)
        if self.name == "fa3":  # split a call whose queries fill one block per unit (decode, verify, diffusion step)
            one = np.asarray(blocks) <= 1
            return np.broadcast_to(s, np.broadcast_shapes(one.shape, np.shape(s))) if one.all() else \
                np.where(one, s, 1.0)
        return np.where(np.asarray(decode) & np.asarray(packed), s, 1.0)  # FA2: only a regrouped decode call

    def extra_kernels(self, batch: Any, kv_heads: Any, splits: Any, decode: Any, packed: Any) -> Any:
        """Kernels the call launches beside the attention kernel: FA2's two regrouping copies (a decode call
        regrouped when neither the batch nor the KV heads is 1) and FlashAttention's split-KV combine."""
        if self.name == "trtllm":
            return 0.0 * np.asarray(splits, dtype=float)
        copies = np.where(np.asarray(decode) & np.asarray(packed) & (np.asarray(batch) > 1)
                          & (np.asarray(kv_heads) > 1), 2.0, 0.0) if self.name == "fa2" else 0.0
        return copies + (np.asarray(splits) > 1)


FLASH_KERNELS = {"fa2": FlashKernel("fa2", 2, 0, False), "fa3": FlashKernel("fa3", 1, 4, True),
                 "trtllm": FlashKernel("trtllm", 1, 0, True)}
PLAIN_MIN_KEYS_PER_SPLIT = 256


def flash_kernel(name: str | None) -> FlashKernel:
    return FLASH_KERNELS[name or "fa2"]


def softmax_overlap(matmul_s: Any, exp_s: Any, kernel: FlashKernel | None) -> Any:
    """Time of an attention mainloop's matmuls and exponentials: overlapped (the longer of the two) under
    FA3's ping-pong schedule, one after the other under FA2, where each warp exponentiates between its two
    matmuls."""
    if kernel is not None and kernel.overlap_softmax:
        return np.maximum(matmul_s, exp_s)
    return matmul_s + exp_s


@dataclass(frozen=True)
class AttentionPlan:
    """The grid of one flash-attention call (every field broadcasts over a sweep grid).

    ``tiles``: CTAs before the KV split, ``splits``: the split, ``ctas`` = tiles·splits; ``rows``: query rows
    of one tile; ``blocks``: query blocks per ``per_block`` unit (a (sequence, KV head) pair when the group is
    packed, a (sequence, query head) otherwise), so tiles = per_block·blocks; ``packed``: the group's heads share
    a tile; ``occupancy``: CTAs resident per SM (decode: as FlashAttention's split heuristic counts them;
    prefill: one, as the prefill tile time is calibrated); ``extra``: extra kernels of the call (split-KV
    combine, FA2's regrouping copies); ``decode``: one query per sequence.
    """

    tiles: Any
    splits: Any
    rows: Any
    blocks: Any
    per_block: Any
    packed: Any
    occupancy: Any
    extra: Any
    decode: Any

    @functools.cached_property
    def ctas(self) -> Any:
        return self.tiles * self.splits

    def waves(self, sms: int) -> Any:
        """⌈max(ctas, 1) / (SMs·occupancy)⌉: the waves the call's CTAs run in (computed once per SM count)."""
        done = self.__dict__.setdefault("_waves", {})
        if sms not in done:
            done[sms] = np.ceil(np.maximum(self.ctas, 1.0) / (sms * np.asarray(self.occupancy, dtype=float)))
        return done[sms]


def attention_plan(batch: Any, q_len: Any, kv_len: Any, heads: Any, kv_heads: Any, head_dim: Any, *, sms: int,
                   kernel: FlashKernel | None) -> AttentionPlan:
    """The grid ``kernel`` launches for an attention call (``kernel`` None: a device without a FlashAttention
    generation, a CPU: 128-row blocks of the packed group, a decode call split so that the grid fills the units
    but no split finer than 256 keys).

    tiles = per_block·⌈rows of queries / rows per CTA⌉ where the rows are the group's queries packed together
    (FA3; FA2's decode regrouping; TensorRT-LLM's decode) or one head's queries; splits and extra kernels by the
    family's own rules (:class:`FlashKernel`)."""
    batch = np.asarray(batch, dtype=float)
    q_len = np.asarray(q_len, dtype=float)
    heads = np.asarray(heads, dtype=float)
    kv_heads = np.asarray(kv_heads, dtype=float)
    group = heads / np.maximum(kv_heads, 1)
    decode = q_len == 1
    if kernel is None:
        rows = ATTN_BLOCK_Q + 0.0 * group
        packed = np.full(np.broadcast(group, q_len).shape, True)
    else:
        rows = kernel.rows(head_dim, group, decode)
        packed = kernel.packed(decode, group)
    blocks = np.where(packed, np.ceil(q_len * group / rows), np.ceil(q_len / rows))
    per_block = np.where(packed, batch * kv_heads, batch * heads)
    tiles = per_block * blocks
    if kernel is None:  # decode split so that the grid fills the units, no split finer than 256 keys
        fill = np.clip(np.ceil(sms / np.maximum(tiles, 1)), 1,
                       np.maximum(np.ceil(np.asarray(kv_len, dtype=float) / PLAIN_MIN_KEYS_PER_SPLIT), 1))
        splits = np.where(decode, fill, 1.0)
        extra = 0.0 * splits
        occupancy = 1.0
    else:
        n_blocks = np.ceil(np.asarray(kv_len, dtype=float) / kernel.block_kv(head_dim))
        splits = kernel.splits(tiles, n_blocks, sms, decode, packed, blocks)
        extra = kernel.extra_kernels(batch, kv_heads, splits, decode, packed)
        occupancy = np.where(decode, float(kernel.split_ctas_per_sm), 1.0)
    return AttentionPlan(tiles, splits, rows, blocks, per_block, packed, occupancy, extra, decode)


def decode_grid(batch: Any, heads: Any, kv_heads: Any, kv_len: Any, head_dim: Any, *, sms: int,
                kernel: FlashKernel) -> tuple[Any, Any, Any]:
    """(tiles, splits, extra kernels) of a decode attention call (one query per sequence): :func:`attention_plan`
    with q_len = 1."""
    plan = attention_plan(batch, 1, kv_len, heads, kv_heads, head_dim, sms=sms, kernel=kernel)
    return plan.tiles, plan.splits, plan.extra


def stream_floor(read_bytes: Any, ctas: Any, occupancy: Any, sms: int, cta_bw: float, waves: Any = None) -> Any:
    """Least time to stream an attention call's cache when each CTA sustains at most ``cta_bw`` (Little's
    law: the bytes it keeps in flight over the memory latency): the CTAs run in ⌈ctas / (SMs·occupancy)⌉ waves,
    each streaming its share read_bytes / ctas. With few sequences the grid holds few CTAs, and the cache
    streams at CTAs·cta_bw, below the memory's bandwidth. 0 when ``cta_bw`` is 0 (no such limit). ``waves``:
    those waves when already known (:meth:`AttentionPlan.waves`)."""
    if not cta_bw:
        return 0.0 * np.asarray(read_bytes, dtype=float)
    ctas = np.maximum(np.asarray(ctas, dtype=float), 1.0)
    if waves is None:
        waves = np.ceil(ctas / (sms * np.asarray(occupancy, dtype=float)))
    return waves * np.asarray(read_bytes, dtype=float) / (ctas * cta_bw)


def attention_work(flops: Any, exps: Any, *, peak: float, exp_per_s: float, kernel: FlashKernel | None) -> Any:
    """Whole-GPU seconds of an attention call's matmuls (at ``peak``) and exponentials (at ``exp_per_s``),
    overlapped or not as the generation schedules them (:func:`softmax_overlap`)."""
    return softmax_overlap(flops / peak, exps / exp_per_s, kernel)


def attention_compute_time(plan: AttentionPlan, work: Any, *, sms: int, tile_s: float = 0.0,
                           prefill_tile_s: float | None = None) -> Any:
    """Compute time of a fused attention call with wave quantisation (bandwidth aside).

    The ``work`` (whole-GPU seconds, :func:`attention_work`) spreads evenly over the plan's CTAs. A call with
    several queries per sequence pays ``prefill_tile_s`` (default ``tile_s``: loading Q, the rescale and
    writing O, latency a tile cannot hide) serially in every wave, beside its share of the work. A decode CTA
    (flash-decoding) overlaps everything with its stream, but cannot finish faster than ``tile_s`` (a chain of
    dependent memory round trips), so a grid of many small CTAs takes ⌈CTAs / slots⌉ · tile_s at least.
    """
    ctas = np.maximum(plan.ctas, 1.0)
    is_decode = np.asarray(plan.decode)
    shape = np.broadcast_shapes(is_decode.shape, ctas.shape, np.shape(work))
    if not is_decode.all():
        serial = tile_s if prefill_tile_s is None else prefill_tile_s
        per_cta = work * sms / ctas
        prefill, _ = waves_time(ctas, sms, 1.0, per_cta, 0.0, serial)
        if not is_decode.any():
            return np.broadcast_to(prefill, shape)
    chain = plan.waves(sms) * tile_s
    decode = np.maximum(work, chain)
    if is_decode.all():
        return np.broadcast_to(decode, shape)
    return np.where(is_decode, decode, prefill)


# Row kernels: the serving stack's norm, activation, rotary and fp8 input-quantisation kernels launch one thread
# block per token (row): vLLM's rms_norm, silu_and_mul and scaled_fp8_quant take min(width, 1024) threads, its
# rotary embedding min(rotated pairs, 512).
# Resident blocks per SM follow from the threads an SM holds (CUDA C Programming Guide, compute capabilities:
# 2048 on sm_80/90/100/103, 1536 on sm_86/89/120) and a limit on blocks per SM. A block's threads loop over the
# row with a stride of the block size; every pass of the loop loads, computes and stores through pointers the
# compiler does not run ahead of, so a pass costs a memory round trip (vidur's profiles of one token on an H100:
# SiLU·mul 1,376 -> 11,008 wide, 2 -> 11 passes, 1 -> 6-7 us): ``efficiency.row_kernel_s``. A block takes
# ⌈per-row elements / threads⌉ passes, the rotary kernel one more (the token's position addresses its cos/sin
# row), and a grid of many rows ⌈rows / resident blocks⌉ waves of blocks. With every SM full, one element per
# thread per pass keeps too few bytes in flight to cover the memory's latency (Little's law), and the requests
# queue: a pass then takes the resident blocks' bytes at the bandwidth such kernels reach
# (``efficiency.row_kernel_bandwidth``, a fraction of main memory's; vidur: a full-load SiLU·mul on an H100 runs
# at 58% of HBM bandwidth) when that is longer than the round trip.
# Embedding lookups run PyTorch's index_select (F.embedding; aten/src/ATen/native/cuda/Indexing.cu,
# index_select_out_cuda_impl). Above 16 ids, indexSelectLargeIndex: a grid-stride loop over the output's elements
# on min(⌈elements / 128⌉, 8 · SMs) blocks of 128 threads, one element per thread per pass. With 16 ids or fewer,
# indexSelectSmallIndex: min(⌈row / 128⌉, 8 · SMs) blocks span one table row, and every thread walks the ids one
# after another, a grid-stride pass over the row for each. Either way a pass reads an id (a cache hit) and then
# the table element it addresses: a round trip to the cache and one to main memory.
ROW_KERNEL_VARIANTS = {"silu_mul": 1024, "silu": 1024, "gelu": 1024, "rope": 512, "quant": 256}
# vLLM's static fp8 quantisation (csrc/quantization/w8a8/fp8/common.cu, scaled_fp8_quant_kernel_strided) launches
# 256 threads per token whatever the width and converts through vectorize_with_alignment<16>: 16 elements per thread
# per pass of its loop.
ROW_FIXED_BLOCK = ("quant",)
ROW_VECTOR = {"quant": 16}
ROW_SETUP_PASSES = {"rope": 1.0}
THREADS_PER_SM = {86: 1536, 89: 1536, 120: 1536}
DEFAULT_THREADS_PER_SM = 2048
MAX_BLOCKS_PER_SM = 16  # the hardware allows 32; the event engine's SMs hold at most 16 tiles each
GATHER_THREADS = 128
GATHER_BLOCKS_PER_SM = 8
GATHER_SMALL_INDEX = 16  # index_select_out_cuda_impl: "numIndices <= 16"


def row_threads(kind: str, variant: str, width: Any) -> Any:
    """Threads of one block of a row kernel (``None``: not a row kernel): norms min(width, 1024); SiLU·mul and
    other activations min(width, 1024); rotary embedding min(width / 2, 512) (one thread per rotated pair); fp8
    input quantisation 256 (16 elements per thread per pass); embedding lookups 128 (a grid-stride loop,
    :func:`row_grid`)."""
    width = np.asarray(width, dtype=float)
    if kind == "norm":
        return np.minimum(width, 1024.0)
    if kind == "embedding":
        return np.full(width.shape, float(GATHER_THREADS))
    cap = ROW_KERNEL_VARIANTS.get(variant)
    if kind != "elementwise" or cap is None:
        return None
    if variant in ROW_FIXED_BLOCK:
        return np.full(width.shape, float(cap))
    return np.minimum(np.maximum(_row_elements(variant, width), 1.0), float(cap))


def _row_elements(variant: str, width: Any) -> Any:
    """Steps one row's threads loop over: rotated pairs for the rotary kernel, vectors of ``ROW_VECTOR`` elements
    for a vectorised kernel, the width otherwise."""
    width = width / 2.0 if variant == "rope" else width
    return np.ceil(width / ROW_VECTOR[variant]) if variant in ROW_VECTOR else width


def row_passes(kind: str, variant: str, width: Any, threads: Any) -> Any:
    """Passes of one block's loop over its row (see above); for an embedding lookup 0 (its passes depend on the
    grid, :func:`row_grid`)."""
    width = np.asarray(width, dtype=float)
    if kind == "embedding":
        return np.zeros(width.shape)
    per_row = np.maximum(_row_elements(variant, width), 1.0)
    return np.ceil(per_row / np.asarray(threads, dtype=float)) + ROW_SETUP_PASSES.get(variant, 0.0)


def row_blocks_per_sm(threads: Any, sm: int | None) -> Any:
    """Blocks of ``threads`` resident on one SM."""
    per_sm = THREADS_PER_SM.get(sm or 0, DEFAULT_THREADS_PER_SM)
    warps = np.ceil(np.maximum(np.asarray(threads, dtype=float), 1.0) / 32.0) * 32.0
    return np.clip(np.floor(per_sm / warps), 1.0, MAX_BLOCKS_PER_SM)


def row_grid(tokens: Any, width: Any, threads: Any, passes: Any, *, sms: int, sm: int | None, pass_s: float,
             cache_s: float, nbytes: Any = 0.0, stream_bw: float | None = None) -> tuple[Any, Any, Any, Any]:
    """Blocks, resident blocks per SM, one block's time in a full wave and in the last, partial wave (equal when
    there is none) of a row kernel (``passes`` > 0: a block per token, ``passes`` round trips) or an embedding
    lookup (``passes`` 0: the grid-stride gather, each pass a round trip plus the cache round trip ``cache_s`` of
    its id). A round trip takes ``pass_s``, or, when a wave's blocks' bytes of one pass (the op's ``nbytes`` spread
    over its blocks' passes) take longer at ``stream_bw``, that: a partial wave moves only its own blocks' bytes."""
    tokens = np.ceil(np.maximum(np.asarray(tokens, dtype=float), 1.0))
    elements = tokens * np.asarray(width, dtype=float)
    threads = np.asarray(threads, dtype=float)
    passes = np.asarray(passes, dtype=float)
    gather = passes <= 0
    small = tokens <= GATHER_SMALL_INDEX  # indexSelectSmallIndex: the blocks span one row, the ids walked in turn
    span = np.where(small, np.asarray(width, dtype=float) + 0.0 * elements, elements)
    gather_blocks = np.minimum(np.ceil(span / GATHER_THREADS), GATHER_BLOCKS_PER_SM * sms)
    gather_passes = np.ceil(span / (np.maximum(gather_blocks, 1.0) * GATHER_THREADS)) * np.where(small, tokens, 1.0)
    blocks = np.where(gather, np.maximum(gather_blocks, 1.0), tokens)
    per_sm = row_blocks_per_sm(threads, sm)
    n_passes = np.maximum(np.where(gather, gather_passes, passes), 1.0)
    slots = sms * per_sm
    rest = wave_split(blocks, slots)[1]
    wave_blocks = (np.minimum(blocks, slots), np.where(rest > 0, rest, np.minimum(blocks, slots)))
    out = []
    for in_wave in wave_blocks:
        trip = pass_s
        if stream_bw:
            trip = np.maximum(pass_s, in_wave * np.asarray(nbytes, dtype=float) / (blocks * n_passes) / stream_bw)
        out.append(np.where(gather, gather_passes * (trip + cache_s), passes * trip))
    return blocks, per_sm, out[0], out[1]


def row_kernel_time(tokens: Any, width: Any, threads: Any, passes: Any, *, sms: int, sm: int | None,
                    pass_s: float, cache_s: float, nbytes: Any = 0.0, stream_bw: float | None = None) -> Any:
    """Least time of a row kernel or embedding lookup: its full waves of resident blocks and the last, partial one,
    each one block's passes (:func:`row_grid`)."""
    blocks, per_sm, block_s, last_s = row_grid(tokens, width, threads, passes, sms=sms, sm=sm, pass_s=pass_s,
                                               cache_s=cache_s, nbytes=nbytes, stream_bw=stream_bw)
    full, rest = wave_split(blocks, sms * per_sm)
    return full * block_s + np.where(rest > 0, last_s, 0.0)
