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
from dataclasses import dataclass, fields

import numpy as np

from perfmodel import collectives
from perfmodel.engines import analytic, tiling
from perfmodel.engines.event_gpu import GpuConfig, Kernel, TileClass
from perfmodel.engines.event_lone import lone_kernel_time  # noqa: F401  (its home now; kept importable here)
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


@dataclass(frozen=True)
class _Servings:
    """:class:`Serving` of every point of an op: bytes per level (0 beyond the serving level) and latency."""

    serve: np.ndarray
    level_bytes: dict[str, np.ndarray]
    latency_s: np.ndarray

    def at(self, i: int) -> Serving:
        return Serving({name: float(b[i]) for name, b in list(self.level_bytes.items())[:int(self.serve[i]) + 1]},
                       float(self.latency_s[i]))


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


def _fields(op: Op) -> list[tuple[str, object]]:
    """Every value of an op the kernels read, named as errors name them."""
    return [*((f"shape[{k!r}]", v) for k, v in op.shape.items()), ("flops", op.flops),
            ("read_bytes", op.read_bytes), ("write_bytes", op.write_bytes), ("l2_bytes", op.l2_bytes),
            ("reuse_bytes", op.reuse_bytes), ("vector_flops", op.vector_flops)]


def points(op: Op) -> int:
    """How many points an op describes: 1 when every field is a scalar, n when some are arrays of n values (one
    per row of a measurement table)."""
    n = 1
    for name, value in _fields(op):
        if isinstance(value, np.ndarray) and value.size != 1:
            if value.ndim != 1 or n not in (1, value.size):
                raise ValueError(f"op {op.name!r}: {name} has shape {value.shape}; the event engine times a list of "
                                 f"points (1-D arrays of one length), not a sweep grid")
            n = value.size
    return n


def _scalar(op: Op, name: str, value) -> float:
    arr = np.asarray(value, dtype=float)
    if arr.size != 1:
        raise ValueError(f"op {op.name!r}: {name} is an array of shape {arr.shape}; the event engine times one "
                         f"point at a time (predict each point, or let the sweep do so)")
    return float(arr.reshape(()))


def _values(op: Op, name: str, value) -> np.ndarray:
    """A field over the op's points (a scalar repeated)."""
    return np.broadcast_to(np.asarray(value, dtype=float).reshape(-1), (points(op),))


def _servings(op: Op, hw: Hardware) -> _Servings:
    """Bytes per cache level and first-load latency of every point, by the analytic engine's rule: unique bytes
    cross every level from the nearest one holding ``op.reuse_bytes`` up to the first cache; the first cache also
    carries the tiles' re-reads (``op.l2_bytes``)."""
    levels = analytic.cache_levels(hw)
    reuse = _values(op, "reuse_bytes", op.reuse_bytes)
    unique = _values(op, "bytes", op.bytes)
    serve = analytic.serving_level(reuse, levels).astype(int)
    out = {}
    for i, lvl in enumerate(levels):
        moved = np.maximum(unique, _values(op, "l2_bytes", op.l2_bytes)) if i == 0 else unique
        out[lvl.name] = np.where(i <= serve, moved, 0.0)
    return _Servings(serve, out, np.array([lvl.latency for lvl in levels])[serve])


def serving(op: Op, hw: Hardware) -> Serving:
    """Bytes per cache level and first-load latency of a one-point op (see :func:`_servings`)."""
    for name in ("reuse_bytes", "bytes", "l2_bytes"):
        _scalar(op, name, getattr(op, name))
    return _servings(op, hw).at(0)


def _compute_rate(op: Op, hw: Hardware, unit: str | None = None) -> float:
    """Attainable FLOP/s of the whole GPU for ``op`` on ``unit`` (default: the op's own)."""
    unit = unit or op.unit
    eff = hw.efficiency
    fraction = eff.tensor_fraction(op.dtype) if unit == "tensor" else eff.vector
    return hw.compute.peak_flops(op.dtype, unit) * fraction


def _vector_s(op: Op, hw: Hardware) -> np.ndarray:
    """GPU-seconds of the op's extra vector work (dequantisation inside the kernel), per point."""
    return _values(op, "vector_flops", op.vector_flops) / _compute_rate(op, hw, "vector")


def _split(total: dict[str, float], share: float) -> dict[str, float]:
    return {level: amount * share for level, amount in total.items()}


def _point(op: Op) -> Op:
    """``op``, checked to be one point (an array field is an error naming it)."""
    for name, value in _fields(op):
        if not isinstance(value, str):
            _scalar(op, name, value)
    return op


def _each(plan, n: int) -> list:
    """A plan whose fields broadcast over ``n`` points (a GemmPlan, an AttentionPlan) as one plan of Python
    scalars per point."""
    cols = {f.name: np.broadcast_to(np.asarray(getattr(plan, f.name)), (n,)).tolist() for f in fields(plan)}
    return [type(plan)(**{name: col[i] for name, col in cols.items()}) for i in range(n)]


# ---------------------------------------------------------------------------------------------------------------
def gemm_kernel(op: Op, hw: Hardware, shapes=tiling.GEMM_TILES, splits=tiling.SPLIT_K) -> Kernel:
    """The kernel of a one-point GEMM (:func:`gemm_kernels`)."""
    return gemm_kernels(_point(op), hw, shapes, splits)[0]


def gemm_kernels(op: Op, hw: Hardware, shapes=tiling.GEMM_TILES, splits=tiling.SPLIT_K) -> list[Kernel]:
    """The GEMM of :func:`tiling.gemm_plan` (tile shape, split-K and occupancy chosen once, for both engines) as
    tiles, one kernel per point: each tile computes 2·tm·tn·⌈k/s⌉ FLOPs at the per-SM peak × shape efficiency
    (tensor-core tiles compute whole, so edges are padded), streams its A and B panels (tm·a + tn·w)·⌈k/s⌉ plus
    its share of C through the first cache and its share of the unique bytes (+ an fp32 partial tm·tn·4 when
    s > 1) from main memory; its mainloop takes at least the latency-paced time (``tile_floor_s``) and its
    epilogue follows serially. Split-K's reduction pass is the kernel's tail. Pin ``shapes`` and ``splits`` to
    one each to see a fixed kernel's waves. On a CPU (no tile shapes to choose) the work is spread evenly over
    one tile per core (perfmodel/engines/cpu.py sets the rate).
    """
    sh = op.shape
    m, n, k = (_values(op, f"shape[{d!r}]", sh[d]) for d in ("m", "n", "k"))
    empty = m * n <= 0  # no output tiles: whatever the op still reads streams like a copy
    copies = streaming_kernels(op, hw) if empty.any() else []
    srv = _servings(op, hw)
    levels = analytic.cache_levels(hw)
    first, main = levels[0].name, levels[-1].name
    sms = hw.compute.units
    vec_sm_s = _vector_s(op, hw) * sms
    if hw.kind != "gpu" or len(levels) < 2:
        tiles = sms
        work = _values(op, "flops", op.flops) / _compute_rate(op, hw)
        out = []
        for i in range(points(op)):
            if empty[i]:
                out.append(copies[i])
                continue
            cls = TileClass(tiles, float(work[i]) * sms / tiles + float(vec_sm_s[i]) / tiles,
                            _split(srv.at(i).level_bytes, 1.0 / tiles))
            out.append(Kernel(op.name, (cls,), 1, float(srv.latency_s[i]), 0.0,
                              f"{tiles} tiles, one per {hw.compute.unit_name}"))
        return out
    eff = hw.efficiency
    config = gpu_config(hw)
    plan = tiling.gemm_plan(m, n, k, a_bytes=float(sh["a_bytes"]), w_bytes=float(sh["w_bytes"]),
                            o_bytes=float(sh["o_bytes"]), sms=sms, peak=analytic.tensor_rate(op, hw),
                            l2_bw=config.bandwidth_bytes_per_s[first], hbm_bw=config.bandwidth_bytes_per_s[main],
                            hbm_bytes=srv.level_bytes[main], latency=srv.latency_s,
                            store_latency=levels[0].latency, reduce_s=eff.launch_s + levels[0].latency,
                            smem_bytes=analytic.smem_per_sm(hw), shapes=shapes, splits=splits,
                            sharing=tiling.operand_sharing(hw.compute.architecture, hw.compute.sm_version),
                            dispatch=tiling.library_dispatch(op.dtype, hw.compute.architecture,
                                                             hw.compute.sm_version))
    out = []
    for i, (pi, vec) in enumerate(zip(_each(plan, len(m)), vec_sm_s.tolist())):
        if empty[i]:
            out.append(copies[i])
            continue
        tiles = int(pi.tiles)
        total = srv.at(i).level_bytes
        total[first] = max(total[first], float(pi.l2_bytes))
        if pi.split > 1:  # fp32 partials written by the tiles, read back and summed by the reduction pass
            total[main] = total.get(main, 0.0) + float(pi.partial_bytes)
        cls = TileClass(tiles, float(pi.tile_compute_s) + vec / tiles, _split(total, 1.0 / tiles),
                        float(pi.tile_epilogue_s), float(pi.tile_floor_s))
        out.append(Kernel(op.name, (cls,), int(pi.occupancy), float(srv.latency_s[i]), float(pi.reduce_s),
                          pi.label))
    return out


def attention_kernel(op: Op, hw: Hardware) -> Kernel:
    """The kernel of a one-point attention call (:func:`attention_kernels`)."""
    return attention_kernels(_point(op), hw)[0]


def attention_kernels(op: Op, hw: Hardware) -> list[Kernel]:
    """Flash attention as tiles of :func:`tiling.attention_plan` (the grid of the device's FlashAttention
    generation, ``efficiency.attention_kernel``, with its KV split; the analytic engine reads the same plan),
    one kernel per point.

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
    b, q, kv = (_values(op, f"shape[{d!r}]", sh[d]) for d in ("batch", "q_len", "kv_len"))
    heads, kvh, d = (_values(op, f"shape[{x!r}]", sh[x]) for x in ("heads", "kv_heads", "head_dim"))
    empty = b * q * kv * heads * kvh <= 0  # no query or no key: nothing to tile, the reads stream like a copy
    copies = streaming_kernels(op, hw) if empty.any() else []
    eff = hw.efficiency
    sms = hw.compute.units
    srv = _servings(op, hw)
    gpu = hw.kind == "gpu"
    with np.errstate(divide="ignore", invalid="ignore"):
        if gpu:
            plan, work, kernel = analytic.attention_terms(op, hw)
        else:  # a CPU: its own rates are applied afterwards (perfmodel/engines/cpu.py); here only the grid
            plan = tiling.attention_plan(b, q, kv, heads, kvh, d, sms=sms, kernel=None)
            work, kernel = _values(op, "flops", op.flops) / _compute_rate(op, hw), None
        tail = analytic.attention_fixed_s(plan, hw) if gpu else np.where(
            plan.decode, eff.attention_overhead_s, eff.prefill_attention_overhead_s).astype(float)
    n = points(op)
    work_sm_s = ((np.broadcast_to(work, (n,)) + _vector_s(op, hw)) * sms).tolist()
    tail = np.broadcast_to(tail, (n,)).tolist()
    read = _values(op, "read_bytes", op.read_bytes).tolist()
    q, kv, heads, kvh = (x.tolist() for x in (q, kv, heads, kvh))
    tile_s = analytic.attention_tile_s(hw)
    cta_bws: dict[float, float] = {}
    name = kernel.name if kernel is not None else "flash"
    out = []
    for i, pi in enumerate(_each(plan, n)):
        if empty[i]:
            out.append(copies[i])
            continue
        blocks, per_block, splits = int(pi.blocks), int(pi.per_block), float(pi.splits)
        rows = float(pi.rows) / (heads[i] / kvh[i] if bool(pi.packed) else 1.0)  # query positions per block
        if q[i] > 1 and sh.get("mask", "causal") != "bidirectional":
            keys = [max(1.0, min(kv[i], kv[i] - q[i] + min((j + 1) * rows, q[i]))) for j in range(blocks)]
        else:
            keys = [kv[i]] * blocks
        weights = sorted(keys, reverse=True)
        decode = bool(pi.decode)
        serial = 0.0 if decode else (tile_s if eff.prefill_attention_tile_s is None else eff.prefill_attention_tile_s)
        latency = float(srv.latency_s[i])
        if latency not in cta_bws:
            cta_bws[latency] = analytic.cta_bandwidth(hw, latency) if gpu else 0.0
        cta_bw = cta_bws[latency]
        count = int(per_block * splits)
        total_w = sum(weights) * count
        level_bytes = srv.at(i).level_bytes
        classes = []
        for wj in weights:
            share = wj / total_w
            stream = read[i] * share / cta_bw if cta_bw else 0.0
            floor = max(tile_s, stream) if decode else stream
            classes.append(TileClass(count, work_sm_s[i] * share, _split(level_bytes, share), serial, floor))
        label = (f"{name}: {blocks} blocks of {float(pi.rows):g} query rows x {per_block} "
                 f"({'sequence, kv head' if bool(pi.packed) else 'sequence, head'}) x {splits:g} KV splits, "
                 f"{float(pi.extra):g} extra kernels")
        out.append(Kernel(op.name, tuple(classes), int(pi.occupancy), latency, tail[i], label))
    return out


def row_kernel(op: Op, hw: Hardware) -> Kernel | None:
    """The kernel of a one-point row kernel (:func:`row_kernels`); None where the op is not one."""
    kernels = row_kernels(_point(op), hw)
    return kernels[0] if kernels is not None else None


def row_kernels(op: Op, hw: Hardware) -> list[Kernel] | None:
    """A row kernel (one block per token: norms, activations, rotary) or embedding lookup (a grid-stride gather)
    as tiles of one block each, as many resident per SM as their threads allow, each at least its chain of passes
    (:func:`tiling.row_grid`, ``efficiency.row_kernel_s`` per pass), one kernel per point; None where the op is not
    one or the device has no pass time."""
    pass_s = hw.efficiency.row_kernel_s
    variant = op.shape.get("variant", "")
    width = op.shape.get("width", 1)
    threads = tiling.row_threads(op.kind, variant, width)
    if hw.kind != "gpu" or not pass_s or threads is None or "tokens" not in op.shape:
        return None
    n = points(op)
    sm = tiling.sm_version(hw.compute.architecture, hw.compute.sm_version)
    tokens = _values(op, "shape['tokens']", op.shape["tokens"])
    widths = _values(op, "shape['width']", width)
    threads = tiling.row_threads(op.kind, variant, widths)
    passes = tiling.row_passes(op.kind, variant, widths, threads)
    blocks, resident, block_s, last_s = (np.broadcast_to(a, (n,)) for a in tiling.row_grid(
        tokens, widths, threads, passes, sms=hw.compute.units, sm=sm, pass_s=pass_s,
        cache_s=analytic.row_cache_latency(hw), nbytes=_values(op, "bytes", op.bytes),
        stream_bw=analytic.row_stream_bandwidth(hw)))
    threads = np.broadcast_to(threads, (n,))
    srv = _servings(op, hw)
    work_sm_s = (_values(op, "flops", op.flops) / _compute_rate(op, hw) + _vector_s(op, hw)) * hw.compute.units
    out = []
    for i, (b, t, per_sm, chain, last, work) in enumerate(zip(blocks.tolist(), threads.tolist(), resident.tolist(),
                                                              block_s.tolist(), last_s.tolist(), work_sm_s.tolist())):
        b, per_sm = int(b), int(per_sm)
        what = "rows" if op.kind != "embedding" else "blocks of a grid-stride gather"
        # the full waves' blocks first, then the last, partial wave's (its blocks share the bandwidth among fewer)
        rest = int(tiling.wave_split(b, hw.compute.units * per_sm)[1])
        level_bytes = _split(srv.at(i).level_bytes, 1.0 / b)
        classes = tuple(TileClass(c, work / b, level_bytes, 0.0, floor)
                        for c, floor in ((b - rest, chain), (rest, last)) if c > 0)
        out.append(Kernel(op.name, classes, per_sm, float(srv.latency_s[i]), 0.0,
                          f"{b} {what}, one block of {t:g} threads each, {per_sm} per SM"))
    return out


def streaming_kernel(op: Op, hw: Hardware) -> Kernel:
    """The kernel of a one-point streaming op (:func:`streaming_kernels`)."""
    return streaming_kernels(_point(op), hw)[0]


def streaming_kernels(op: Op, hw: Hardware) -> list[Kernel]:
    """Elementwise, norm, embedding, (de)quantise, gather, top-k, centroid scores: equal chunks of the op's
    minimal traffic, ``CHUNK_BYTES`` each, ``STREAMING_OCCUPANCY`` blocks resident per SM; one kernel per
    point."""
    srv = _servings(op, hw)
    unique = _values(op, "bytes", op.bytes)
    work_sm_s = (_values(op, "flops", op.flops) / _compute_rate(op, hw) + _vector_s(op, hw)) * hw.compute.units
    out = []
    for i in range(points(op)):
        tiles = max(1, math.ceil(float(unique[i]) / CHUNK_BYTES))
        cls = TileClass(tiles, float(work_sm_s[i]) / tiles, _split(srv.at(i).level_bytes, 1.0 / tiles))
        out.append(Kernel(op.name, (cls,), STREAMING_OCCUPANCY, float(srv.latency_s[i]), 0.0,
                          f"{tiles} chunks of {CHUNK_BYTES // 1024} KiB"))
    return out


def allreduce_kernel(op: Op, hw: Hardware) -> Kernel:
    """The kernel of a one-point all-reduce (:func:`allreduce_kernels`)."""
    return allreduce_kernels(_point(op), hw)[0]


def allreduce_kernels(op: Op, hw: Hardware) -> list[Kernel]:
    """An all-reduce as :class:`perfmodel.collectives.AllReduceModel` times it (the analytic engine's rule): the
    ring bytes, stretched by the small-message ramp, through the link at the collective efficiency (the LINK
    level of :func:`gpu_config`), after one link latency per GPU; one kernel per point."""
    model = collectives.AllReduceModel.from_hardware(hw)
    devices = _values(op, "shape['devices']", op.shape.get("devices", 1))
    link_bytes = _values(op, "bytes", op.bytes)
    size = collectives.message_bytes(link_bytes, devices)
    ramp = np.where(devices > 1, model.ramp(size), 1.0)
    latency = model.latency_time(devices)
    out = []
    for i in range(points(op)):
        cls = TileClass(1, 0.0, {LINK: float(link_bytes[i]) * float(ramp[i])})
        out.append(Kernel(op.name, (cls,), 1, 0.0, float(latency[i]), f"ring over {float(devices[i]):g} devices"))
    return out


def point_kernels(op: Op, hw: Hardware) -> list[Kernel]:
    """The kernels that run ``op`` on ``hw``, one per point (:func:`points`)."""
    match op.kind:
        case "gemm":
            return gemm_kernels(op, hw)
        case "attention":
            return attention_kernels(op, hw)
        case "allreduce":
            return allreduce_kernels(op, hw)
        case _:
            return row_kernels(op, hw) or streaming_kernels(op, hw)


def kernel_for(op: Op, hw: Hardware) -> Kernel:
    """The kernel that runs ``op`` (one point) on ``hw``."""
    return point_kernels(_point(op), hw)[0]
