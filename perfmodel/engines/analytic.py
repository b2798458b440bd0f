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
        out.append(Level(name, hw.level_capacity_bytes(name),
                         lvl.bandwidth_bytes_per_s * hw.efficiency.memory_fraction(name), lvl.latency_s or 0.0))
    return out


def _tiled(op_list, hw, levels, shape, compute, overhead, level_time, level_bytes, per_op):
    """Replace the compute (and L2) terms of GEMMs and attention by their tile-wave versions (see tiling.py):
    GEMMs with their latency-paced mainloop, epilogue and split-K reduction kernel; attention with the grid of
    the device's FlashAttention generation (``efficiency.attention_kernel``), its split-KV heuristic and extra
    kernels, the attention mainloop's own tensor efficiency and the prefill tile time when calibrated."""
    from perfmodel.engines import tiling

    eff = hw.efficiency
    sms = hw.compute.units
    l2, main = levels[0], levels[-1]
    compute = compute.copy()
    overhead = overhead.copy()
    tile_s = eff.attention_tile_s
    if tile_s is None:
        tile_s = tiling.DECODE_DEPENDENT_LOADS * main.latency
    for i, op in enumerate(op_list):
        if op.unit != "tensor" or op.kind not in ("gemm", "attention"):
            continue
        peak = hw.compute.peak_flops(op.dtype, "tensor") * (
            eff.tensor if op.kind == "gemm" or eff.attention_tensor is None else eff.attention_tensor)
        vec = np.asarray(op.vector_flops, dtype=float) / (hw.compute.peak_flops(op.dtype, "vector") * eff.vector)
        if op.kind == "gemm":
            sh = op.shape
            hbm_b = level_bytes[main.name][i]
            t, c, l2t, l2b = tiling.gemm_time(sh["m"], sh["n"], sh["k"], a_bytes=sh["a_bytes"], w_bytes=sh["w_bytes"],
                                              o_bytes=sh["o_bytes"], sms=sms, peak=peak, l2_bw=l2.bandwidth,
                                              hbm_bw=main.bandwidth, hbm_bytes=hbm_b,
                                              latency=np.where(hbm_b > 0, main.latency, l2.latency),
                                              store_latency=l2.latency, reduce_s=eff.launch_s + l2.latency)
            c = c + vec
            l2_time = np.maximum(l2t, level_time[l2.name][i] if l2.name != main.name else 0.0)
            level_time[l2.name][i] = l2_time
            level_bytes[l2.name][i] = np.maximum(l2b, level_bytes[l2.name][i])
            compute[i] = c
            busy = np.maximum.reduce([c, l2_time, level_time[main.name][i]])
            overhead[i] = overhead[i] + np.maximum(t + vec - busy, 0.0)
        else:
            sh = op.shape
            pairs = op.flops / (4.0 * sh["batch"] * sh["heads"] * sh["head_dim"])
            exps = tiling.softmax_exps(sh["batch"], sh["heads"], pairs)
            rate = tiling.exp_rate(hw.compute.peak_flops("fp32", "vector") * eff.vector)
            kernel = tiling.flash_kernel(eff.attention_kernel)
            tiles, splits, extra = tiling.decode_grid(sh["batch"], sh["heads"], sh["kv_heads"], sh["kv_len"],
                                                      sh["head_dim"], sms=sms, kernel=kernel)
            c = tiling.attention_compute_time(sh["batch"], sh["q_len"], sh["heads"], sh["kv_heads"], op.flops,
                                              sms=sms, peak=peak, exps=exps, exp_per_s=rate, tile_s=tile_s,
                                              head_dim=sh["head_dim"], kernel=kernel, decode_tiles=tiles,
                                              prefill_tile_s=eff.prefill_attention_tile_s)
            compute[i] = c + vec
            # Each CTA's stream is latency-bound (Little's law): the calibrated per-CTA bandwidth holds for
            # main memory and scales with latency for a nearer level serving the cache.
            cta_bw = eff.attention_cta_bytes_per_s or 0.0
            for lvl in (main, l2):
                served = (level_bytes[lvl.name][i] > 0) if lvl is main else (level_bytes[main.name][i] == 0)
                scale = (main.latency / lvl.latency) if (lvl.latency and main.latency) else 1.0
                stream = tiling.decode_stream_time(sh["batch"], sh["q_len"], sh["kv_heads"], sh["kv_len"],
                                                   op.read_bytes, sms=sms, cta_bw=cta_bw * scale,
                                                   ctas=tiles * splits)
                level_time[lvl.name][i] = np.where(served, np.maximum(level_time[lvl.name][i], stream),
                                                   level_time[lvl.name][i])
                if l2 is main:
                    break
            q_len = np.asarray(sh["q_len"], dtype=float)
            # Decode calls that launch more kernels (split-KV combine, FA2's Q/O regrouping copies) pay a launch
            # and a main-memory round trip for each, as any small kernel does here.
            extra_s = extra * (eff.launch_s + main.latency)
            overhead[i] = overhead[i] + np.where(q_len > 1, eff.prefill_attention_overhead_s,
                                                 eff.attention_overhead_s + extra_s)
    return compute, overhead


def _allreduce_time(link_bytes, devices, link, default_efficiency: float):
    """All-reduce time on a link (perfmodel/collectives.py derives it and checks it against NCCL):
    p·ℓ (NCCL's low-latency protocol overlaps the ring steps: about one link latency per GPU) + the ring bytes
    over the link at the collective efficiency, slowed for small messages by (1 + √(S½/S)).
    Here ``link_bytes`` = 2(p−1)/p·S, so S = link_bytes·p / (2(p−1))."""
    p = np.maximum(devices, 1)
    message = link_bytes * p / np.maximum(2.0 * (p - 1), 1e-30)
    eta = link.collective_efficiency or default_efficiency
    ramp = 1.0 + np.sqrt(link.collective_half_size_bytes / np.maximum(message, 1.0))
    return np.where(p > 1, p * (link.latency_s or 0.0) + link_bytes / (link.bandwidth_bytes_per_s * eta) * ramp, 0.0)


def _link(hw: Hardware):
    for name in ("nvlink", "xgmi", "infinity_fabric", "pcie"):
        if name in hw.interconnect:
            return hw.interconnect[name]
    return None


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
    # Serving level index: the nearest level whose capacity holds the reuse footprint (main memory otherwise).
    serve = np.full(shape, len(levels) - 1)
    for i in reversed(range(len(levels) - 1)):
        serve = np.where(reuse <= levels[i].capacity, i, serve)
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

    if hw.kind == "gpu" and len(levels) >= 2:
        compute, overhead = _tiled(op_list, hw, levels, shape, compute, overhead, level_time, level_bytes, per_op)
    elif hw.kind == "cpu":
        from perfmodel.engines import cpu  # few-row matmuls, exponentials, flash blocks (cpu.py)

        compute, overhead = cpu.compute_times(op_list, hw, compute, overhead, level_time)

    # Collectives run on the interconnect instead: bytes over the link + one link latency per ring step.
    is_comm = per_op([op.kind == "allreduce" for op in op_list]).astype(bool)
    if is_comm.any():
        link = _link(hw)
        if link is None:
            raise ValueError(f"hardware {hw.name!r}: an all-reduce needs an `interconnect` entry (nvlink, xgmi or pcie)")
        devices = _stack([op.shape.get("devices", 1) for op in op_list], shape[1:])
        comm = _allreduce_time(nbytes, devices, link, eff.memory_fraction(hw.main_memory))
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
    bound_idx = terms.argmax(axis=0)
    bound = np.array(names, dtype=object)[bound_idx]
    bound = np.where(overhead > busy, OVERHEAD, bound)
    main = levels[-1].name
    return OpTimes(time, compute, level_time, level_bytes, overhead, bound, level_bytes[main])
