"""From ops to kernels: the tiling policy of each op kind, and the GPU config read from a hardware spec.

Picture a caterer splitting an order among cooks: a GEMM is cut into output tiles (each cook makes one tray,
fetching the rows and columns it needs), attention into query blocks or slices of the KV cache, and a plain
elementwise job into equal portions. The policy fixes how many portions there are, how much work and traffic
each carries and how many fit on one SM at once; the SimPy model (:mod:`perfmodel.engines.event_gpu`) then
runs them.

Totals match the analytic engine (:mod:`perfmodel.engines.analytic`) by construction, so that both agree on
large regular ops: the same serving level (``Op.reuse_bytes`` against each cache's capacity), the same bytes
per level, the same efficiency block, the same GEMM tile shapes and splits and attention tiles
(:mod:`perfmodel.engines.tiling`). What differs is the timing: tiles run in waves and share bandwidth as they
go, and a GEMM's grid is the one that runs fastest on this model rather than on the roofline's estimate.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from perfmodel.engines import analytic, tiling
from perfmodel.engines.event_gpu import MAX_OCCUPANCY, GpuConfig, Kernel, TileClass
from perfmodel.ops import Op
from perfmodel.specs.hardware import Hardware
from perfmodel.specs.model import bytes_per_element

LINK = "link"
# GEMM mainloop (tiling.py): K steps of 64 elements, 4 pipeline stages of A and B panels in shared memory
# (CUTLASS Hopper defaults); a 128x256 bf16 tile then needs 4·(128+256)·64·2 B = 192 KiB: one tile per SM.
GEMM_BLOCK_K = tiling.GEMM_BLOCK_K
GEMM_STAGES = tiling.GEMM_STAGES
# Flash attention on a device without a FlashAttention generation (a CPU): K/V blocks of 128 keys,
# double-buffered, beside a 128-row query block; the cache split so the grid fills the cores, not finer than
# 256 keys.
ATTN_BLOCK_KV_PREFILL = 128
ATTN_STAGES = 2
DECODE_MIN_KEYS_PER_SPLIT = 256
# Elementwise-like kernels: 256-thread blocks, at most 2048 threads per SM -> 8 resident; each block streams a
# fixed chunk of the op's minimal traffic.
CHUNK_BYTES = 64 * 1024
STREAMING_OCCUPANCY = 8


@dataclass(frozen=True)
class Serving:
    """Where an op's bytes come from: total bytes per level and the serving level's latency."""

    level_bytes: dict[str, float]
    latency_s: float


def gpu_config(hw: Hardware) -> GpuConfig:
    """The event engine's view of ``hw``: SMs, attainable bandwidth per shared level, the SM port, launch cost.

    The per-tile ceiling on every level is the per-SM share of the nearest per-unit level (shared memory /
    L1): data cannot land in an SM faster than its own scratchpad takes it.
    """
    levels = analytic.cache_levels(hw)
    eff = hw.efficiency
    bandwidth = {lvl.name: lvl.bandwidth for lvl in levels}
    port = {}
    nearest_name, nearest = next(iter(hw.memory.items()))
    if nearest.per_unit:
        per_sm = nearest.bandwidth_bytes_per_s * eff.memory_fraction(nearest_name) / hw.compute.units
        port = {lvl.name: per_sm for lvl in levels}
    link = analytic._link(hw)
    if link is not None:
        bandwidth[LINK] = link.bandwidth_bytes_per_s * eff.memory_fraction(hw.main_memory)
    return GpuConfig(hw.compute.units, bandwidth, port, eff.launch_s)


def _scalar(op: Op, name: str, value) -> float:
    arr = np.asarray(value, dtype=float)
    if arr.size != 1:
        raise ValueError(f"op {op.name!r}: {name} is an array of shape {arr.shape}; the event engine times one "
                         f"point at a time (predict each point, or let the sweep do so)")
    return float(arr.reshape(()))


def serving(op: Op, hw: Hardware) -> Serving:
    """Bytes per cache level and first-load latency, by the analytic engine's rule: unique bytes cross every level
    from the nearest one holding ``op.reuse_bytes`` up to the first cache; the first cache also carries the
    tiles' re-reads (``op.l2_bytes``)."""
    levels = analytic.cache_levels(hw)
    reuse = _scalar(op, "reuse_bytes", op.reuse_bytes)
    unique = _scalar(op, "bytes", op.bytes)
    serve = next((i for i, lvl in enumerate(levels[:-1]) if reuse <= lvl.capacity), len(levels) - 1)
    out = {}
    for i, lvl in enumerate(levels[:serve + 1]):
        out[lvl.name] = max(unique, _scalar(op, "l2_bytes", op.l2_bytes)) if i == 0 else unique
    return Serving(out, levels[serve].latency)


def _compute_rate(op: Op, hw: Hardware, unit: str | None = None) -> float:
    """Attainable FLOP/s of the whole GPU for ``op`` on ``unit`` (default: the op's own)."""
    unit = unit or op.unit
    eff = hw.efficiency
    return hw.compute.peak_flops(op.dtype, unit) * (eff.tensor if unit == "tensor" else eff.vector)


def _vector_s(op: Op, hw: Hardware) -> float:
    """GPU-seconds of the op's extra vector work (dequantisation inside the kernel)."""
    return _scalar(op, "vector_flops", op.vector_flops) / _compute_rate(op, hw, "vector")


def _occupancy(footprint: float, hw: Hardware) -> int:
    smem = next(iter(hw.memory.values()))
    if not smem.per_unit or footprint <= 0:
        return 1
    return int(min(MAX_OCCUPANCY, max(1, smem.capacity_bytes // footprint)))


def _split(total: dict[str, float], share: float) -> dict[str, float]:
    return {level: amount * share for level, amount in total.items()}


# ---------------------------------------------------------------------------------------------------------------
def lone_kernel_time(kernel: Kernel, config: GpuConfig) -> float:
    """Time of ``kernel`` alone on the GPU, in closed form: what :func:`event_gpu.simulate` returns for it.

    Alone, a grid of identical tiles runs in identical waves of w = min(tiles left, SMs × occupancy) tiles, and
    in a wave every tile gets min(1, SMs/w) of an SM and min(port, bandwidth/w) of each level, so a wave takes
    serial + max(floor, compute · max(1, w/SMs), bytes_level / min(port, bandwidth_level / w)); the first wave
    adds the fill.
    """
    slots = config.sms * kernel.occupancy
    total = config.launch_s + kernel.tail_s + (kernel.latency_s if kernel.tiles else 0.0)
    for cls in kernel.tiles:  # each class dispatched after the previous: exact for one class, close for more
        full, rest = divmod(cls.count, slots)
        for w, waves in ((slots, full), (rest, 1 if rest else 0)):
            if not waves:
                continue
            t = max(cls.min_s, cls.compute_s * max(1.0, w / config.sms))
            for level, amount in cls.bytes:
                share = config.bandwidth_bytes_per_s[level] / w
                t = max(t, amount / min(share, config.tile_bandwidth_bytes_per_s.get(level, math.inf)))
            total += waves * (cls.serial_s + t)
    return total


def gemm_kernel(op: Op, hw: Hardware, shapes=tiling.GEMM_TILES, splits=tiling.SPLIT_K) -> Kernel:
    """Output tiles tm×tn over m×n, K split s ways: of the CUTLASS/cuBLAS tile shapes ``shapes`` and splits
    ``splits`` (those of :mod:`perfmodel.engines.tiling` by default), the grid this GPU runs fastest, as an
    autotuner picks it (:func:`lone_kernel_time`). Pin one shape and split to see a fixed kernel's waves.

    Per tile: 2·tm·tn·⌈k/s⌉ FLOPs at the per-SM peak × shape efficiency (tensor-core tiles compute whole, so
    edges are padded; on a CPU a tile computes only its real elements); through the first cache its A and B
    panels (tm·a + tn·w)·⌈k/s⌉ plus its share of C; from main memory its share of the unique bytes (+ an fp32
    partial tm·tn·4 when s > 1). On a GPU the mainloop takes at least its latency-paced time
    (``tiling.gemm_pipeline_time``, the tile's floor) and the epilogue (``tiling.gemm_epilogue_time``) follows
    it serially. Split-K's reduction pass is the kernel's tail: a launch and an L2 round trip on a GPU
    (``tiling.SPLIT_K_REDUCE_S`` elsewhere) plus reading the m·n·4·s bytes of partials and writing C from main
    memory.
    """
    sh = op.shape
    m, n, k = (_scalar(op, f"shape[{d!r}]", sh[d]) for d in ("m", "n", "k"))
    if m * n <= 0:  # no output tiles: whatever the op still reads streams like a copy
        return streaming_kernel(op, hw)
    a, w, o = (float(sh[d]) for d in ("a_bytes", "w_bytes", "o_bytes"))
    sms = hw.compute.units
    per_sm = _compute_rate(op, hw) / sms
    padded = hw.kind == "gpu"
    srv = serving(op, hw)
    levels = analytic.cache_levels(hw)
    first, main = levels[0].name, levels[-1].name
    config = gpu_config(hw)
    vec_sm_s = _vector_s(op, hw) * sms
    load_latency = srv.latency_s
    store_latency = levels[0].latency if padded and len(levels) >= 2 else 0.0
    l2_port = config.bandwidth_bytes_per_s[first] / sms
    best = None
    for tm, tn in shapes:
        for s in splits:
            tiles = math.ceil(m / tm) * math.ceil(n / tn) * s
            ks = math.ceil(k / s)
            if padded:
                tile_c = 2.0 * tm * tn * ks / (per_sm * tiling.shape_efficiency(tm, tn))
            else:
                tile_c = 2.0 * m * n * k / (tiles * per_sm)
            total = dict(srv.level_bytes)
            total[first] = max(total[first], tiles * (tm * a + tn * w) * ks + m * n * o)
            reduce_s = 0.0
            if s > 1:  # fp32 partials written by the tiles, read back and summed by the reduction pass
                partials = m * n * 4.0 * s
                total[main] = total.get(main, 0.0) + partials
                reduce_launch = (hw.efficiency.launch_s + levels[0].latency) if padded and len(levels) >= 2 \
                    else tiling.SPLIT_K_REDUCE_S
                reduce_s = reduce_launch + (partials + m * n * o) / config.bandwidth_bytes_per_s[main]
            if padded and len(levels) >= 2:
                floor = float(tiling.gemm_pipeline_time(ks, load_latency))
                epilogue = float(tiling.gemm_epilogue_time(tm, tn, 4.0 if s > 1 else o, l2_port, store_latency))
            else:
                floor = epilogue = 0.0
            cls = TileClass(tiles, tile_c + vec_sm_s / tiles, _split(total, 1.0 / tiles), epilogue, floor)
            kernel = Kernel(op.name, (cls,), _occupancy(GEMM_STAGES * (tm * a + tn * w) * GEMM_BLOCK_K, hw),
                            srv.latency_s, reduce_s, f"{tm}x{tn} tiles, split-K {s}")
            t = lone_kernel_time(kernel, config)
            if best is None or t < best[0]:
                best = (t, kernel)
    if best is None:
        raise ValueError(f"op {op.name!r}: no GEMM tile shape to choose from (shapes={shapes!r}, splits={splits!r})")
    return best[1]


def attention_tile_s(hw: Hardware) -> float:
    """Serial time of one attention tile: the calibrated ``efficiency.attention_tile_s``, else
    ``tiling.DECODE_DEPENDENT_LOADS`` main-memory round trips (the analytic engine's rule)."""
    tile_s = hw.efficiency.attention_tile_s
    if tile_s is None:
        tile_s = tiling.DECODE_DEPENDENT_LOADS * analytic.cache_levels(hw)[-1].latency
    return tile_s


def attention_kernel(op: Op, hw: Hardware) -> Kernel:
    """Flash attention, tiled as the analytic engine counts it (:func:`tiling.attention_compute_time`).

    The grid is that of the device's FlashAttention generation (``efficiency.attention_kernel``,
    :class:`tiling.FlashKernel`). Prefill (q_len > 1): FA3 one tile per (batch, KV head, kBlockM rows of the GQA
    group's queries packed together), FA2 one per (batch, query head, 64 query rows), each paying the prefill
    tile time serially (loading Q, rescaling, writing O). A causal block sees only the keys up to its last
    query, so tiles differ; they run longest first, as FlashAttention schedules them. Decode (q_len = 1,
    flash-decoding): one tile per CTA of :func:`tiling.decode_grid` (tiles × FlashAttention's KV splits); a
    tile's dependent loads bound it from below by ``attention_tile_s`` and its stream by its share of the cache
    over the bandwidth one CTA sustains (``attention_cta_bytes_per_s``, Little's law) (``min_s``, occupancy 1
    as calibrated). Work (matmul FLOPs at the attention tensor peak, softmax exponentials at the
    special-function rate, overlapped with the matmuls under FA3, dequantisation on the vector units) and bytes
    are shared among tiles in proportion to the keys each visits. The fixed cost beyond the launch (cache
    write, metadata) is the kernel's tail, plus a launch and a round trip for each extra kernel of a decode
    call (split-KV combine, FA2's regrouping copies).
    """
    sh = op.shape
    b, q, kv = (_scalar(op, f"shape[{d!r}]", sh[d]) for d in ("batch", "q_len", "kv_len"))
    heads, kvh, d = (_scalar(op, f"shape[{x!r}]", sh[x]) for x in ("heads", "kv_heads", "head_dim"))
    if b * q * kv * heads * kvh <= 0:  # no query or no key: nothing to tile, the reads stream like a copy
        return streaming_kernel(op, hw)
    eff = hw.efficiency
    sms = hw.compute.units
    srv = serving(op, hw)
    gpu = hw.kind == "gpu"
    flash = tiling.flash_kernel(eff.attention_kernel) if gpu else None
    flops = _scalar(op, "flops", op.flops)
    pairs = flops / (4.0 * b * heads * d)
    exps = tiling.softmax_exps(b, heads, pairs)
    exp_rate = tiling.exp_rate(hw.compute.peak_flops("fp32", "vector") * eff.vector)
    rate = hw.compute.peak_flops(op.dtype, "tensor") * (eff.attention_tensor or eff.tensor) \
        if gpu and op.unit == "tensor" else _compute_rate(op, hw)
    work_sm_s = (float(tiling.softmax_overlap(flops / rate, exps / exp_rate, flash)) + _vector_s(op, hw)) * sms
    tile_s = attention_tile_s(hw)
    if not gpu:
        return _plain_attention_kernel(op, hw, srv, work_sm_s, tile_s)
    if q > 1:
        group = heads / kvh
        bq = float(flash.block_q(d))
        if flash.pack_gqa:
            blocks, per_block, rows = math.ceil(q * group / bq), int(b * kvh), bq / group
        else:
            blocks, per_block, rows = math.ceil(q / bq), int(b * heads), bq
        if sh.get("mask", "causal") == "bidirectional":
            keys = [kv] * blocks
        else:  # the last query of block j sits at position kv − q + min((j+1)·rows, q)
            keys = [max(1.0, min(kv, kv - q + min((j + 1) * rows, q))) for j in range(blocks)]
        weights = sorted(keys, reverse=True)
        prefill_tile = eff.prefill_attention_tile_s
        # One tile per SM at a time, as the analytic engine counts the waves and as the prefill tile time is
        # calibrated (FA3's warp-specialised CTAs and FA2's hdim-128 kernel each hold most of an SM).
        occupancy = 1
        serial = tile_s if prefill_tile is None else prefill_tile
        floors = [0.0] * len(weights)
        tail = eff.prefill_attention_overhead_s
        label = (f"{flash.name}: {blocks} blocks of {bq:g} query rows x {per_block} "
                 f"(batch, {'kv head' if flash.pack_gqa else 'head'})")
    else:
        tiles, splits, extra = (float(x) for x in tiling.decode_grid(b, heads, kvh, kv, d, sms=sms, kernel=flash))
        weights, per_block = [kv / splits], int(tiles * splits)
        occupancy, serial = 1, 0.0
        main = analytic.cache_levels(hw)[-1]
        cta_bw = eff.attention_cta_bytes_per_s or 0.0
        if cta_bw and srv.latency_s and main.latency:
            cta_bw *= main.latency / srv.latency_s  # a nearer level serving the cache: a shorter round trip
        stream = _scalar(op, "read_bytes", op.read_bytes) / per_block / cta_bw if cta_bw else 0.0
        floors = [max(tile_s, stream)]
        tail = eff.attention_overhead_s + extra * (eff.launch_s + main.latency)
        label = f"{flash.name} split-KV: {tiles:g} tiles x {splits:g} splits, {extra:g} extra kernels"
    total_w = sum(weights) * per_block
    classes = [TileClass(per_block, work_sm_s * wj / total_w, _split(srv.level_bytes, wj / total_w), serial, floor)
               for wj, floor in zip(weights, floors)]
    return Kernel(op.name, tuple(classes), occupancy, srv.latency_s, tail, label)


def _plain_attention_kernel(op: Op, hw: Hardware, srv: Serving, work_sm_s: float, tile_s: float) -> Kernel:
    """Attention tiles on a device without a FlashAttention generation (a CPU): prefill in blocks of 128 rows
    of the GQA group's queries packed together, occupancy from their footprint; decode split so the grid fills
    the cores (⌈units / (batch·kv_heads)⌉ splits, none finer than 256 keys), each tile at least ``tile_s``."""
    sh = op.shape
    eff = hw.efficiency
    b, q, kv = (_scalar(op, f"shape[{d!r}]", sh[d]) for d in ("batch", "q_len", "kv_len"))
    heads, kvh, d = (_scalar(op, f"shape[{x!r}]", sh[x]) for x in ("heads", "kv_heads", "head_dim"))
    if q > 1:
        group = heads / kvh
        blocks = math.ceil(q * group / tiling.ATTN_BLOCK_Q)
        per_block = int(b * kvh)
        rows = tiling.ATTN_BLOCK_Q / group  # query positions per block
        if sh.get("mask", "causal") == "bidirectional":
            keys = [kv] * blocks
        else:  # the last query of block j sits at position kv − q + min((j+1)·rows, q)
            keys = [max(1.0, min(kv, kv - q + min((j + 1) * rows, q))) for j in range(blocks)]
        weights = sorted(keys, reverse=True)
        a, kv_b = bytes_per_element(op.dtype), float(sh.get("kv_bits", 16)) / 8.0
        footprint = tiling.ATTN_BLOCK_Q * d * a + ATTN_STAGES * 2 * ATTN_BLOCK_KV_PREFILL * d * kv_b
        occupancy, serial, floor = _occupancy(footprint, hw), tile_s, 0.0
        tail = eff.prefill_attention_overhead_s
        label = f"{blocks} blocks of {tiling.ATTN_BLOCK_Q} query rows x {per_block} (batch, kv head)"
    else:
        per_head = int(b * kvh)
        splits = max(1, min(math.ceil(hw.compute.units / per_head), math.ceil(kv / DECODE_MIN_KEYS_PER_SPLIT)))
        weights, per_block = [kv / splits], per_head * splits
        occupancy, serial, floor = 1, 0.0, tile_s
        tail = eff.attention_overhead_s
        label = f"split-KV: {per_head} (batch, kv head) x {splits} splits"
    total_w = sum(weights) * per_block
    classes = [TileClass(per_block, work_sm_s * wj / total_w, _split(srv.level_bytes, wj / total_w), serial, floor)
               for wj in weights]
    return Kernel(op.name, tuple(classes), occupancy, srv.latency_s, tail, label)


def streaming_kernel(op: Op, hw: Hardware) -> Kernel:
    """Elementwise, norm, embedding, (de)quantise, gather, top-k, centroid scores: equal chunks of the op's
    minimal traffic, ``CHUNK_BYTES`` each, ``STREAMING_OCCUPANCY`` blocks resident per SM."""
    srv = serving(op, hw)
    unique = _scalar(op, "bytes", op.bytes)
    tiles = max(1, math.ceil(unique / CHUNK_BYTES))
    work_sm_s = (_scalar(op, "flops", op.flops) / _compute_rate(op, hw) + _vector_s(op, hw)) * hw.compute.units
    cls = TileClass(tiles, work_sm_s / tiles, _split(srv.level_bytes, 1.0 / tiles))
    return Kernel(op.name, (cls,), STREAMING_OCCUPANCY, srv.latency_s, 0.0,
                  f"{tiles} chunks of {CHUNK_BYTES // 1024} KiB")


def allreduce_kernel(op: Op, hw: Hardware) -> Kernel:
    """A ring all-reduce: its link bytes through the interconnect, plus one link latency per ring step
    (2·(p−1)), as in the analytic engine."""
    link = analytic._link(hw)
    if link is None:
        raise ValueError(f"hardware {hw.name!r}: an all-reduce needs an `interconnect` entry (nvlink, xgmi or pcie)")
    devices = _scalar(op, "shape['devices']", op.shape.get("devices", 1))
    steps = 2 * max(devices - 1, 0) * (link.latency_s or 0.0)
    cls = TileClass(1, 0.0, {LINK: _scalar(op, "bytes", op.bytes)})
    return Kernel(op.name, (cls,), 1, 0.0, steps, f"ring over {devices:g} devices")


def kernel_for(op: Op, hw: Hardware) -> Kernel:
    """The kernel that runs ``op`` on ``hw``."""
    match op.kind:
        case "gemm":
            return gemm_kernel(op, hw)
        case "attention":
            return attention_kernel(op, hw)
        case "allreduce":
            return allreduce_kernel(op, hw)
        case _:
            return streaming_kernel(op, hw)
