"""The analytic engine: a hierarchical roofline over the op list.

Picture each op as a delivery job: the FLOPs are work for the compute units, the bytes are parcels moved
through a chain of depots (main memory → L2 → on-chip). Each depot has its own throughput; the job takes as
long as its slowest stage, plus a fixed cost to dispatch the job (kernel launch) and to receive the first
parcel (the serving level's latency).

Per op, with E the efficiency block of the hardware spec:
    t_compute = flops / (peak[dtype, unit] · E.unit) + vector_flops / (peak[dtype, vector] · E.vector)
    t_level   = traffic(level) / (bandwidth(level) · E.memory[level])      for every memory level
    t         = max(t_compute, max_level t_level) + E.launch_s + latency(serving level)
Which level serves the op's operands follows its reuse footprint (``Op.reuse_bytes``) against each level's
capacity: the nearest level that holds it. The unique bytes cross every level from the serving one up to the
first cache; the on-chip tile re-reads (``Op.l2_bytes``) load that first cache (L2 on a GPU, L1 on a CPU).
Everything is NumPy: op fields may be arrays over a sweep grid and the result broadcasts.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from perfmodel import collectives
from perfmodel.ops import Op
from perfmodel.specs.hardware import Hardware

OVERHEAD = "launch"
COMPUTE = "compute"


@dataclass(frozen=True)
class Level:
    name: str
    capacity: float
    bandwidth: float  # attainable: peak × efficiency
    latency: float


def cache_levels(hw: Hardware) -> list[Level]:
    """Levels that hold data between kernels, nearest first; on a GPU the per-SM scratchpad is not one."""
    out = []
    for name, lvl in hw.memory.items():
        if hw.kind == "gpu" and lvl.per_unit:
            continue
        out.append(Level(name, hw.shared_capacity_bytes(name),
                         lvl.bandwidth_bytes_per_s * hw.efficiency.memory_fraction(name), lvl.latency_s or 0.0))
    return out


def serving_level(reuse: Any, levels: Sequence[Level]) -> Any:
    """Index of the level that serves an op's operands: the nearest whose capacity holds its reuse footprint
    (``Op.reuse_bytes``), main memory otherwise."""
    reuse = np.asarray(reuse, dtype=float)
    serve = np.full(reuse.shape, len(levels) - 1)
    for i in reversed(range(len(levels) - 1)):
        serve = np.where(reuse <= levels[i].capacity, i, serve)
    return serve


def _tiled(op_list, hw, levels, shape, compute, overhead, level_time, level_bytes, per_op):
    """Replace the compute (and L2) terms of GEMMs and attention by the closed form of their kernel plans
    (:mod:`perfmodel.engines.tiling`, the plans the event engine simulates): GEMMs with their tile shape,
    split-K, occupancy, latency-paced mainloop, epilogue and split-K reduction kernel; attention with the grid of
    the device's FlashAttention generation (``efficiency.attention_kernel``), its split-KV heuristic and extra
    kernels, the attention mainloop's own tensor efficiency and the prefill tile time when calibrated."""
    from perfmodel.engines import tiling

    eff = hw.efficiency
    sms = hw.compute.units
    l2, main = levels[0], levels[-1]
    compute = compute.copy()
    overhead = overhead.copy()
    exact = np.full(shape, np.nan)  # a GEMM's time, summed once (busy + overhead would round it differently)
    smem = smem_per_sm(hw)
    for i, op in enumerate(op_list):
        if op.unit != "tensor" or op.kind not in ("gemm", "attention"):
            continue
        vec = np.asarray(op.vector_flops, dtype=float) / (hw.compute.peak_flops(op.dtype, "vector") * eff.vector)
        sh = op.shape
        if op.kind == "gemm":
            hbm_b = level_bytes[main.name][i]
            plan = tiling.gemm_plan(sh["m"], sh["n"], sh["k"], a_bytes=sh["a_bytes"], w_bytes=sh["w_bytes"],
                                    o_bytes=sh["o_bytes"], sms=sms, peak=tensor_rate(op, hw), l2_bw=l2.bandwidth,
                                    hbm_bw=main.bandwidth, hbm_bytes=hbm_b,
                                    latency=np.where(hbm_b > 0, main.latency, l2.latency),
                                    store_latency=l2.latency, reduce_s=eff.launch_s + l2.latency, smem_bytes=smem,
                                    sharing=tiling.operand_sharing(hw.compute.architecture, hw.compute.sm_version))
            c = plan.compute_s + vec
            l2_time = np.maximum(plan.l2_s, level_time[l2.name][i] if l2.name != main.name else 0.0)
            level_time[l2.name][i] = l2_time
            level_bytes[l2.name][i] = np.maximum(plan.l2_bytes, level_bytes[l2.name][i])
            compute[i] = c
            busy = np.maximum.reduce([c, l2_time, level_time[main.name][i]])
            exact[i] = np.maximum(plan.time + vec, busy) + overhead[i]
            overhead[i] = overhead[i] + np.maximum(plan.time + vec - busy, 0.0)
        else:
            plan, work, kernel = attention_terms(op, hw)
            c = tiling.attention_compute_time(plan, work, sms=sms, tile_s=attention_tile_s(hw),
                                              prefill_tile_s=eff.prefill_attention_tile_s)
            compute[i] = c + vec
            # Each CTA's stream is latency-bound (Little's law): the calibrated per-CTA bandwidth holds for
            # main memory and scales with latency for a nearer level serving the cache.
            for lvl in (main, l2):
                served = (level_bytes[lvl.name][i] > 0) if lvl is main else (level_bytes[main.name][i] == 0)
                stream = tiling.stream_floor(op.read_bytes, plan.ctas, plan.occupancy, sms,
                                             cta_bandwidth(hw, lvl.latency))
                level_time[lvl.name][i] = np.where(served, np.maximum(level_time[lvl.name][i], stream),
                                                   level_time[lvl.name][i])
                if l2 is main:
                    break
            overhead[i] = overhead[i] + attention_fixed_s(plan, hw)
    return compute, overhead, exact


def _row_kernels(op_list, hw, compute):
    """The chain of waves of a row kernel (one block per token: norms, activations, rotary; tiling.py) as a floor
    on the op's compute term, where the device has a calibrated block time."""
    from perfmodel.engines import tiling

    block_s = hw.efficiency.row_kernel_s
    if not block_s:
        return compute
    sm = tiling.sm_version(hw.compute.architecture, hw.compute.sm_version)
    compute = compute.copy()
    for i, op in enumerate(op_list):
        threads = tiling.row_threads(op.kind, op.shape.get("variant", ""), op.shape.get("width", 1))
        if threads is None or "tokens" not in op.shape:
            continue
        chain = tiling.row_kernel_time(op.shape["tokens"], threads, sms=hw.compute.units, sm=sm, block_s=block_s)
        compute[i] = np.maximum(compute[i], chain)
    return compute


def smem_per_sm(hw: Hardware) -> float | None:
    """Shared memory of one SM (the nearest level when it is per unit), for kernel occupancy; None otherwise."""
    nearest = next(iter(hw.memory.values()))
    return nearest.capacity_bytes if nearest.per_unit else None


def tensor_rate(op: Op, hw: Hardware) -> float:
    """Attainable tensor FLOP/s of a GEMM or (``efficiency.attention_tensor``) an attention mainloop."""
    eff = hw.efficiency
    frac = eff.tensor if op.kind == "gemm" or eff.attention_tensor is None else eff.attention_tensor
    return hw.compute.peak_flops(op.dtype, "tensor") * frac


def attention_tile_s(hw: Hardware) -> float:
    """Serial time of one attention tile: the calibrated ``efficiency.attention_tile_s``, else
    ``tiling.DECODE_DEPENDENT_LOADS`` main-memory round trips."""
    from perfmodel.engines import tiling

    tile_s = hw.efficiency.attention_tile_s
    if tile_s is None:
        tile_s = tiling.DECODE_DEPENDENT_LOADS * cache_levels(hw)[-1].latency
    return tile_s


def cta_bandwidth(hw: Hardware, latency: float) -> float:
    """Bandwidth one attention CTA sustains from a level of ``latency``: the calibrated
    ``efficiency.attention_cta_bytes_per_s`` holds for main memory; the same bytes in flight over a shorter round
    trip stream proportionally faster (Little's law). 0: no such limit."""
    cta_bw = hw.efficiency.attention_cta_bytes_per_s or 0.0
    main_latency = cache_levels(hw)[-1].latency
    if cta_bw and latency and main_latency:
        cta_bw *= main_latency / latency
    return cta_bw


def attention_terms(op: Op, hw: Hardware):
    """(plan, whole-GPU work seconds, FlashKernel) of an attention op on a GPU: the grid of the device's
    FlashAttention generation and the mainloop's matmuls and exponentials (``op.shape['pairs']`` of them per
    head), at the attention tensor rate and the special-function rate."""
    from perfmodel.engines import tiling

    sh = op.shape
    kernel = tiling.flash_kernel(hw.efficiency.attention_kernel) if hw.kind == "gpu" else None
    plan = tiling.attention_plan(sh["batch"], sh["q_len"], sh["kv_len"], sh["heads"], sh["kv_heads"],
                                 sh["head_dim"], sms=hw.compute.units, kernel=kernel)
    exps = tiling.softmax_exps(sh["batch"], sh["heads"], sh["pairs"])
    clock = hw.compute.boost_clock_hz or hw.compute.clock_hz
    rate = tiling.softmax_rate(hw.compute.units, clock, hw.compute.peak_flops("fp32", "vector"),
                               tiling.sm_version(hw.compute.architecture, hw.compute.sm_version))
    work = tiling.attention_work(np.asarray(op.flops, dtype=float), exps, peak=tensor_rate(op, hw),
                                 exp_per_s=rate, kernel=kernel)
    return plan, work, kernel


def attention_fixed_s(plan, hw: Hardware):
    """Fixed cost of an attention call beyond one launch: the calibrated per-call overhead (prefill or decode)
    plus, for each extra kernel (split-KV combine, FA2's regrouping copies), a launch and a main-memory round
    trip, as any small kernel pays here."""
    eff = hw.efficiency
    extra_s = plan.extra * (eff.launch_s + cache_levels(hw)[-1].latency)
    return np.where(plan.decode, eff.attention_overhead_s, eff.prefill_attention_overhead_s) + extra_s


@dataclass
class OpTimes:
    """Per-op results, each an array of shape (n_ops, *grid)."""

    time: np.ndarray
    compute: np.ndarray
    level_time: dict[str, np.ndarray]
    level_bytes: dict[str, np.ndarray]
    overhead: np.ndarray
    bound: np.ndarray  # strings
    main_bytes: np.ndarray


def _stack(values: Sequence[Any], grid: tuple[int, ...]) -> np.ndarray:
    return np.stack([np.broadcast_to(np.asarray(v, dtype=float), grid) for v in values])


def time_ops(op_list: Sequence[Op], hw: Hardware) -> OpTimes:
    """Time every op on ``hw``; fields broadcast over any sweep-grid shape."""
    eff = hw.efficiency
    fields = [[op.flops for op in op_list], [op.vector_flops for op in op_list],
              [op.read_bytes + op.write_bytes for op in op_list], [op.l2_bytes for op in op_list],
              [op.reuse_bytes for op in op_list]]
    flat = [np.asarray(v, dtype=float) for f in fields for v in f]
    grid = np.broadcast_shapes(*(a.shape for a in flat))
    flops, vflops, nbytes, l2, reuse = (np.stack([np.broadcast_to(np.asarray(v, dtype=float), grid) for v in f])
                                        for f in fields)
    shape = flops.shape

    def per_op(values):
        return np.broadcast_to(np.asarray(values, dtype=float).reshape((-1,) + (1,) * (len(shape) - 1)), shape)

    peak = per_op([hw.compute.peak_flops(op.dtype, op.unit) * (eff.tensor if op.unit == "tensor" else eff.vector)
                   for op in op_list])
    vpeak = per_op([hw.compute.peak_flops(op.dtype, "vector") * eff.vector for op in op_list])
    compute = flops / peak + vflops / vpeak

    levels = cache_levels(hw)
    serve = serving_level(reuse, levels)
    level_bytes: dict[str, np.ndarray] = {}
    level_time: dict[str, np.ndarray] = {}
    compute = np.array(compute, dtype=float)
    for i, lvl in enumerate(levels):
        traffic = np.where(i <= serve, nbytes, 0.0)
        if i == 0:
            traffic = np.maximum(traffic, l2)
        level_bytes[lvl.name] = traffic
        level_time[lvl.name] = traffic / lvl.bandwidth
    latency = np.choose(serve, [np.full(shape, lvl.latency) for lvl in levels]) if levels else np.zeros(shape)
    overhead = eff.launch_s + latency
    exact = None

    if hw.kind == "gpu" and len(levels) >= 2:
        compute, overhead, exact = _tiled(op_list, hw, levels, shape, compute, overhead, level_time, level_bytes,
                                          per_op)
        compute = _row_kernels(op_list, hw, compute)
    elif hw.kind == "cpu":
        from perfmodel.engines import cpu  # few-row matmuls, exponentials, flash blocks (cpu.py)

        compute, overhead = cpu.compute_times(op_list, hw, compute, overhead, level_time)

    # Collectives run on the interconnect instead (perfmodel/collectives.py: one link latency per GPU + the ring
    # bytes at the collective efficiency, slowed on small messages).
    is_comm = per_op([op.kind == "allreduce" for op in op_list]).astype(bool)
    if is_comm.any():
        devices = _stack([op.shape.get("devices", 1) for op in op_list], shape[1:])
        model = collectives.AllReduceModel.from_hardware(hw)
        size = collectives.message_bytes(nbytes, devices)
        comm = np.where(devices > 1, model.latency_time(devices) + model.stream_time(size, devices), 0.0)
        level_time["link"] = np.where(is_comm, comm, 0.0)
        level_bytes["link"] = np.where(is_comm, nbytes, 0.0)
        for name in list(level_time):
            if name != "link":
                level_time[name] = np.where(is_comm, 0.0, level_time[name])
                level_bytes[name] = np.where(is_comm, 0.0, level_bytes[name])
        compute = np.where(is_comm, 0.0, compute)
        overhead = np.where(is_comm, eff.launch_s, overhead)

    names = [COMPUTE, *level_time]
    terms = np.stack([compute, *level_time.values()])
    busy = terms.max(axis=0)
    time = busy + overhead
    if exact is not None:
        time = np.where(np.isnan(exact), time, exact)
    if hw.kind == "gpu" and eff.energy_per_flop_j:
        # The power limiter slows long tensor-core kernels to the TDP (tiling.power_stretch): charged to compute.
        from perfmodel.engines import tiling

        is_tensor = per_op([op.unit == "tensor" and op.kind in ("gemm", "attention") for op in op_list]) > 0
        stretch = np.where(is_tensor, tiling.power_stretch(flops, time, eff.energy_per_flop_j,
                                                            hw.power.tdp_w if hw.power else None,
                                                            eff.power_window_s), 1.0)
        compute = compute + time * (stretch - 1.0)
        time = time * stretch
        terms = np.stack([compute, *level_time.values()])
        busy = terms.max(axis=0)
    bound_idx = terms.argmax(axis=0)
    bound = np.array(names, dtype=object)[bound_idx]
    bound = np.where(overhead > busy, OVERHEAD, bound)
    main = levels[-1].name
    return OpTimes(time, compute, level_time, level_bytes, overhead, bound, level_bytes[main])
