"""From ops to kernels: the tiling policy of each op kind, and the GPU config read from a hardware spec.

Picture a caterer splitting an order among cooks: a GEMM is cut into output tiles (each cook makes one tray,
fetching the rows and columns it needs), attention into query blocks or slices of the KV cache, and a plain
elementwise job into equal portions. The policy fixes how many portions there are, how much work and traffic
each carries and how many fit on one SM at once; the SimPy model (:mod:`perfmodel.engines.event_gpu`) then
runs them.

Nothing here decides what a kernel costs: the serving level and bytes per level
(:func:`perfmodel.engines.analytic.serving_level`), the GEMM tile shape, split-K and occupancy and the attention
grid and KV split (:mod:`perfmodel.engines.tiling`), the all-reduce (:mod:`perfmodel.collectives`) and the
efficiency block are the analytic engine's, so both agree on large regular ops. What differs is the timing:
tiles run in waves and share bandwidth as they go.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from perfmodel import collectives
from perfmodel.engines import analytic, tiling
from perfmodel.engines.event_gpu import GpuConfig, Kernel, TileClass
from perfmodel.ops import Op
from perfmodel.specs.hardware import Hardware

LINK = "link"
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
    if any(name in hw.interconnect for name in collectives.LINKS):
        model = collectives.AllReduceModel.from_hardware(hw)
        bandwidth[LINK] = model.link_bandwidth_bytes_per_s * model.efficiency
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
    serve = int(analytic.serving_level(reuse, levels))
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
    """The GEMM of :func:`tiling.gemm_plan` (tile shape, split-K and occupancy chosen once, for both engines) as
    tiles: each computes 2·tm·tn·⌈k/s⌉ FLOPs at the per-SM peak × shape efficiency (tensor-core tiles compute
    whole, so edges are padded), streams its A and B panels (tm·a + tn·w)·⌈k/s⌉ plus its share of C through the
    first cache and its share of the unique bytes (+ an fp32 partial tm·tn·4 when s > 1) from main memory; its
    mainloop takes at least the latency-paced time (``tile_floor_s``) and its epilogue follows serially.
    Split-K's reduction pass is the kernel's tail. Pin ``shapes`` and ``splits`` to one each to see a fixed
    kernel's waves. On a CPU (no tile shapes to choose) the work is spread evenly over one tile per core
    (perfmodel/engines/cpu.py sets the rate).
    """
    sh = op.shape
    m, n, k = (_scalar(op, f"shape[{d!r}]", sh[d]) for d in ("m", "n", "k"))
    if m * n <= 0:  # no output tiles: whatever the op still reads streams like a copy
        return streaming_kernel(op, hw)
    srv = serving(op, hw)
    levels = analytic.cache_levels(hw)
    first, main = levels[0].name, levels[-1].name
    sms = hw.compute.units
    vec_sm_s = _vector_s(op, hw) * sms
    if hw.kind != "gpu" or len(levels) < 2:
        tiles = sms
        cls = TileClass(tiles, (_scalar(op, "flops", op.flops) / _compute_rate(op, hw)) * sms / tiles
                        + vec_sm_s / tiles, _split(srv.level_bytes, 1.0 / tiles))
        return Kernel(op.name, (cls,), 1, srv.latency_s, 0.0, f"{tiles} tiles, one per {hw.compute.unit_name}")
    eff = hw.efficiency
    config = gpu_config(hw)
    plan = tiling.gemm_plan(m, n, k, a_bytes=float(sh["a_bytes"]), w_bytes=float(sh["w_bytes"]),
                            o_bytes=float(sh["o_bytes"]), sms=sms, peak=analytic.tensor_rate(op, hw),
                            l2_bw=config.bandwidth_bytes_per_s[first], hbm_bw=config.bandwidth_bytes_per_s[main],
                            hbm_bytes=srv.level_bytes.get(main, 0.0) if srv.level_bytes.get(main) else 0.0,
                            latency=srv.latency_s, store_latency=levels[0].latency,
                            reduce_s=eff.launch_s + levels[0].latency, smem_bytes=analytic.smem_per_sm(hw),
                            shapes=shapes, splits=splits,
                            sharing=tiling.operand_sharing(hw.compute.architecture, hw.compute.sm_version))
    tiles = int(plan.tiles)
    total = dict(srv.level_bytes)
    total[first] = max(total[first], float(plan.l2_bytes))
    if plan.split > 1:  # fp32 partials written by the tiles, read back and summed by the reduction pass
        total[main] = total.get(main, 0.0) + float(plan.partial_bytes)
    cls = TileClass(tiles, float(plan.tile_compute_s) + vec_sm_s / tiles, _split(total, 1.0 / tiles),
                    float(plan.tile_epilogue_s), float(plan.tile_floor_s))
    return Kernel(op.name, (cls,), int(plan.occupancy), srv.latency_s, float(plan.reduce_s), plan.label)


def attention_kernel(op: Op, hw: Hardware) -> Kernel:
    """Flash attention as tiles of :func:`tiling.attention_plan` (the grid of the device's FlashAttention
    generation, ``efficiency.attention_kernel``, with its KV split; the analytic engine reads the same plan).

    One class of CTAs per query block j of a (sequence, head) unit: per_block · splits CTAs, each visiting its
    split's share of the keys block j sees (under a causal mask the last query of block j sits at position
    kv − q + min((j+1)·rows, q), so blocks differ; they run longest first, as FlashAttention schedules them).
    Work (matmul FLOPs at the attention tensor peak, softmax exponentials at the special-function rate,
    overlapped with the matmuls under FA3, dequantisation on the vector units) and bytes are shared among CTAs in
    proportion to the keys each visits. A call with several queries per sequence pays the prefill tile time
    serially per CTA; a decode CTA is bounded from below by ``attention_tile_s`` (its dependent loads). Every CTA
    streams at most ``attention_cta_bytes_per_s`` (Little's law, scaled to the serving level's latency). The
    fixed cost beyond the launch (cache write, metadata, the extra kernels of the plan) is the kernel's tail.
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
    if gpu:
        plan, work, kernel = analytic.attention_terms(op, hw)
    else:  # a CPU: its own rates are applied afterwards (perfmodel/engines/cpu.py); here only the grid
        plan = tiling.attention_plan(b, q, kv, heads, kvh, d, sms=sms, kernel=None)
        work, kernel = _scalar(op, "flops", op.flops) / _compute_rate(op, hw), None
    work_sm_s = (float(work) + _vector_s(op, hw)) * sms
    blocks, per_block, splits = int(plan.blocks), int(plan.per_block), float(plan.splits)
    rows = float(plan.rows) / (heads / kvh if bool(plan.packed) else 1.0)  # query positions per block
    if q > 1 and sh.get("mask", "causal") != "bidirectional":
        keys = [max(1.0, min(kv, kv - q + min((j + 1) * rows, q))) for j in range(blocks)]
    else:
        keys = [kv] * blocks
    weights = sorted(keys, reverse=True)
    tile_s = analytic.attention_tile_s(hw)
    decode = bool(plan.decode)
    serial = 0.0 if decode else (tile_s if eff.prefill_attention_tile_s is None else eff.prefill_attention_tile_s)
    cta_bw = analytic.cta_bandwidth(hw, srv.latency_s) if gpu else 0.0
    count = int(per_block * splits)
    total_w = sum(weights) * count
    classes = []
    for wj in weights:
        share = wj / total_w
        stream = _scalar(op, "read_bytes", op.read_bytes) * share / cta_bw if cta_bw else 0.0
        floor = max(tile_s, stream) if decode else stream
        classes.append(TileClass(count, work_sm_s * share, _split(srv.level_bytes, share), serial, floor))
    tail = float(analytic.attention_fixed_s(plan, hw)) if gpu else (
        eff.attention_overhead_s if decode else eff.prefill_attention_overhead_s)
    name = kernel.name if kernel is not None else "flash"
    label = (f"{name}: {blocks} blocks of {float(plan.rows):g} query rows x {per_block} "
             f"({'sequence, kv head' if bool(plan.packed) else 'sequence, head'}) x {splits:g} KV splits, "
             f"{float(plan.extra):g} extra kernels")
    return Kernel(op.name, tuple(classes), int(plan.occupancy), srv.latency_s, tail, label)


def row_kernel(op: Op, hw: Hardware) -> Kernel | None:
    """A row kernel (one block per token: norms, activations, rotary; :func:`tiling.row_threads`) as tiles of one
    row each, as many resident per SM as its threads allow, each at least the calibrated block time
    (``efficiency.row_kernel_s``); None where the op is not one or the device has no block time."""
    block_s = hw.efficiency.row_kernel_s
    threads = tiling.row_threads(op.kind, op.shape.get("variant", ""), op.shape.get("width", 1))
    if hw.kind != "gpu" or not block_s or threads is None or "tokens" not in op.shape:
        return None
    rows = max(1, int(math.ceil(_scalar(op, "shape['tokens']", op.shape["tokens"]))))
    sm = tiling.sm_version(hw.compute.architecture, hw.compute.sm_version)
    resident = int(tiling.row_blocks_per_sm(float(threads), sm))
    srv = serving(op, hw)
    work_sm_s = (_scalar(op, "flops", op.flops) / _compute_rate(op, hw) + _vector_s(op, hw)) * hw.compute.units
    cls = TileClass(rows, work_sm_s / rows, _split(srv.level_bytes, 1.0 / rows), 0.0, block_s)
    return Kernel(op.name, (cls,), resident, srv.latency_s, 0.0,
                  f"{rows} rows, one block of {float(threads):g} threads each, {resident} per SM")


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
    """An all-reduce as :class:`perfmodel.collectives.AllReduceModel` times it (the analytic engine's rule): the
    ring bytes, stretched by the small-message ramp, through the link at the collective efficiency (the LINK
    level of :func:`gpu_config`), after one link latency per GPU."""
    model = collectives.AllReduceModel.from_hardware(hw)
    devices = _scalar(op, "shape['devices']", op.shape.get("devices", 1))
    link_bytes = _scalar(op, "bytes", op.bytes)
    size = float(collectives.message_bytes(link_bytes, devices))
    ramp = float(model.ramp(size)) if devices > 1 else 1.0
    cls = TileClass(1, 0.0, {LINK: link_bytes * ramp})
    return Kernel(op.name, (cls,), 1, 0.0, float(model.latency_time(devices)), f"ring over {devices:g} devices")


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
            return row_kernel(op, hw) or streaming_kernel(op, hw)
