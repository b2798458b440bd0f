"""The event engine: the op list run through a SimPy model of the GPU, tile by tile.

Where the analytic engine is a delivery estimate from the slowest depot's throughput, this one runs the
depots: each op becomes a kernel, its tiles queue for SM slots in waves, and every wave's loads share L2 and
HBM with whatever else is in flight. So it shows what a roofline cannot: the half-empty last wave of a GEMM,
the launch gaps between small kernels, two streams fighting over the same bandwidth.

    time_ops(op_list, hw)                -> EventOpTimes, the analytic engine's OpTimes plus ``extras``
    time_points(op_list, hw)             -> the same for ops whose fields are arrays of points (table rows)
    simulate_ops(op_list, hw, streams)   -> Timeline of the ops run back to back on streams
    chrome_trace(op_list, hw, path)      -> a chrome://tracing / Perfetto JSON of kernels and tile groups
    simulate(kernels, config, streams)   -> Timeline, for hand-built kernels on a hand-built GPU (tests)

Per op, ``time`` is the simulated span from launch to the end of the kernel's tail with the op alone on the
GPU. ``compute`` and ``level_time`` are the same ideal terms as the analytic engine (work over the whole GPU's
attainable rate); ``overhead`` = time − max(those) is everything else: launch, pipeline fill, waves, tails. The
bound is the largest term, or ``launch`` when the overhead exceeds them all (the analytic engine's rule).

Coarsening, so that a whole decode step runs in well under a second: ops with ``count`` > 1 and ops repeated
across segments are timed once per distinct kernel (the count multiplies downstream); a kernel alone on the GPU
is timed in closed form where that is exactly the simulated time (:mod:`perfmodel.engines.event_lone`: one
class of tiles in waves, or tiles whose times no other tile can change), and simulated otherwise; within a
simulated kernel, tiles dispatched together run as one weighted group (exact for identical tiles).
``extras['notes']`` says what was done.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from perfmodel.engines.analytic import COMPUTE, OVERHEAD, OpTimes
from perfmodel.engines.event_gpu import (GpuConfig, GroupSpan, Kernel, KernelSpan, TileClass, Timeline,
                                         simulate)
from perfmodel.engines import tiling
from perfmodel.engines.cpu import adjust_kernel
from perfmodel.engines.event_lone import exact_time
from perfmodel.engines.event_tiling import LINK, gpu_config, kernel_for, point_kernels, points
from perfmodel.ops import Op, point
from perfmodel.specs.hardware import Hardware

__all__ = ["EventOpTimes", "GpuConfig", "GroupSpan", "Kernel", "KernelSpan", "TileClass", "Timeline",
           "chrome_trace", "gpu_config", "kernel_for", "kernels_for", "simulate", "simulate_ops", "time_ops",
           "time_points"]

MODEL_NOTES = (
    "bandwidth: processor sharing; k concurrent transfers at a level each get min(bandwidth/k, SM port)",
    "tile time = max(compute, transfer per level), loads double-buffered under compute; the first wave's tiles "
    "also pay the serving level's latency (pipeline fill), later waves' fill overlaps the previous tile's drain",
)


@dataclass
class EventOpTimes(OpTimes):
    """OpTimes plus ``extras``: per-op lists (tiles, waves, occupancy, tiling, fixed_s, achieved bandwidth and
    utilisation per level, SM utilisation) and ``notes`` on the model and its coarsening."""

    extras: dict[str, Any] = field(default_factory=dict)


def _kernel(op: Op, hw: Hardware) -> Kernel:
    """The op's kernel (event_tiling.kernel_for), with a CPU's own terms (perfmodel/engines/cpu.py)."""
    return adjust_kernel(kernel_for(op, hw), op, hw)


def _kernels(op: Op, hw: Hardware) -> list[Kernel]:
    """The kernel of each point of ``op`` (event_tiling.point_kernels), with a CPU's own terms."""
    kernels = point_kernels(op, hw)
    if hw.kind == "gpu":  # adjust_kernel leaves a GPU's kernels as they are
        return kernels
    return [adjust_kernel(k, point(op, i), hw) for i, k in enumerate(kernels)]


def _key(kernel: Kernel) -> tuple:
    """What the timing of a kernel depends on (everything but its name and label)."""
    return kernel.tiles, kernel.occupancy, kernel.latency_s, kernel.tail_s


@dataclass
class _Span:
    """How a distinct kernel was timed: its duration, and the groups and tiles of its simulation (0 when its
    time came in closed form)."""

    duration: float
    groups: int = 0
    tiles: int = 0


def _lone_time(kernel: Kernel, config: GpuConfig) -> _Span:
    """Time of ``kernel`` alone on the GPU: the closed form where it is exact (event_lone.exact_time), else the
    simulation."""
    closed = exact_time(kernel, config)
    if closed is not None:
        return _Span(closed)
    span = simulate([kernel], config).kernels[0]
    return _Span(span.duration, span.groups, span.tiles)


def time_ops(op_list: Sequence[Op], hw: Hardware) -> EventOpTimes:
    """Time every op on ``hw`` as its kernel alone on the GPU (one point: op fields must be scalars). Ops that
    differ only in name, phase or count (a layer's GEMMs in every layer and segment) share one kernel."""
    built: dict[tuple, Kernel] = {}
    kernels = []
    for op in op_list:
        key = _op_key(op)
        if key is None:
            kernels.append(_kernel(op, hw))
            continue
        if key not in built:
            built[key] = _kernel(op, hw)
        kernels.append(built[key])
    flops = np.array([float(np.asarray(op.flops)) for op in op_list])
    weights = tiling.energy_weights([op.dtype for op in op_list], hw.efficiency)
    if weights is not None:  # a dtype whose FLOPs cost another energy (fp8)
        flops = flops * weights
    return _times(kernels, hw, flops, np.array([_is_tensor(op) for op in op_list], dtype=bool))


def _is_tensor(op: Op) -> bool:
    return op.unit == "tensor" and op.kind in ("gemm", "attention")


def _op_key(op: Op) -> tuple | None:
    """Everything of an op its kernel depends on, hashable; None when a field is not a plain value."""
    key = (op.kind, op.dtype, op.unit, tuple(sorted(op.shape.items())), op.flops, op.read_bytes, op.write_bytes,
           op.l2_bytes, op.reuse_bytes, op.vector_flops)
    try:
        hash(key)
    except TypeError:  # an array field: kernel_for says why it cannot be timed
        return None
    return key


def time_points(op_list: Sequence[Op], hw: Hardware) -> EventOpTimes:
    """Time ops whose fields are arrays of n points (the rows of a measurement table; see
    :func:`perfmodel.engines.event_tiling.points`): arrays of shape (len(op_list), n), point by point what
    :func:`time_ops` gives; ``extras`` lists run over the ops, then the points."""
    counts = [points(op) for op in op_list]
    n = max(counts, default=1)
    if set(counts) - {1, n}:
        raise ValueError(f"ops of {sorted(set(counts))} points: time_points needs every op to have the same number "
                         f"of points (or one)")
    kernels = [k for op in op_list for k in (_kernels(op, hw) * (n if points(op) == 1 else 1))]
    flops = np.concatenate([np.broadcast_to(np.asarray(op.flops, dtype=float).reshape(-1), (n,)) for op in op_list]
                           ) if op_list else np.zeros(0)
    is_tensor = np.repeat(np.array([_is_tensor(op) for op in op_list], dtype=bool), n)
    weights = tiling.energy_weights([op.dtype for op in op_list], hw.efficiency)
    if weights is not None:
        flops = flops * np.repeat(weights, n)
    times = _times(kernels, hw, flops, is_tensor)
    shape = (len(op_list), n)
    return replace(times, time=times.time.reshape(shape), compute=times.compute.reshape(shape),
                   level_time={k: v.reshape(shape) for k, v in times.level_time.items()},
                   level_bytes={k: v.reshape(shape) for k, v in times.level_bytes.items()},
                   overhead=times.overhead.reshape(shape), bound=times.bound.reshape(shape),
                   main_bytes=times.main_bytes.reshape(shape))


def _times(kernels: list[Kernel], hw: Hardware, flops: np.ndarray, is_tensor: np.ndarray) -> EventOpTimes:
    """Each kernel timed alone (each distinct one once), with the analytic engine's terms beside it; ``flops`` and
    ``is_tensor`` (a tensor-core GEMM or attention) of each kernel's op, for the power limiter."""
    config = gpu_config(hw)
    spans: dict[tuple, _Span] = {}
    for k in kernels:
        key = _key(k)
        if key not in spans:
            spans[key] = _lone_time(k, config)
    has_link = any(LINK in k.total_bytes() for k in kernels)
    level_names = [name for name in config.bandwidth_bytes_per_s if name != LINK or has_link]
    n = len(kernels)
    time = np.array([spans[_key(k)].duration for k in kernels])
    compute = np.array([k.total_compute_s() / config.sms for k in kernels])
    if hw.kind == "gpu" and hw.efficiency.energy_per_flop_j and n:
        # The power limiter's slow-down of long tensor-core kernels (the analytic engine's rule, charged to compute)
        stretch = np.where(is_tensor, tiling.power_stretch(flops, time, hw.efficiency.energy_per_flop_j,
                                                            hw.power.tdp_w if hw.power else None,
                                                            hw.efficiency.power_window_s), 1.0)
        compute = compute + time * (stretch - 1.0)
        time = time * stretch
    totals = [k.total_bytes() for k in kernels]
    level_bytes = {name: np.array([t.get(name, 0.0) for t in totals]) for name in level_names}
    level_time = {name: level_bytes[name] / config.bandwidth_bytes_per_s[name] for name in level_names}
    terms = np.stack([compute, *level_time.values()]) if n else np.zeros((1 + len(level_names), 0))
    busy = terms.max(axis=0)
    overhead = time - busy
    bound = np.array([COMPUTE, *level_names], dtype=object)[terms.argmax(axis=0)]
    bound = np.where(overhead > busy, OVERHEAD, bound)
    main = [name for name in level_names if name != LINK][-1]

    safe = np.where(time > 0, time, np.inf)
    simulated = [span for span in spans.values() if span.tiles]
    groups = sum(span.groups for span in simulated)
    tiles = sum(span.tiles for span in simulated)
    extras = {
        "tiles": [k.tile_count for k in kernels],
        "waves": [_waves(k, config) for k in kernels],
        "occupancy": [k.occupancy for k in kernels],
        "tiling": [k.label for k in kernels],
        "fixed_s": [config.launch_s + k.latency_s + k.tail_s for k in kernels],
        "achieved_bandwidth_bytes_per_s": {name: (level_bytes[name] / safe).tolist() for name in level_names},
        "bandwidth_utilisation": {name: (level_time[name] / safe).tolist() for name in level_names},
        "sm_utilisation": (compute / safe).tolist(),
        "notes": [*MODEL_NOTES,
                  f"coarsening: {n} ops -> {len(spans)} distinct kernels, each timed once (count and repeated "
                  f"segments multiply the time); {len(spans) - len(simulated)} in closed form (a lone kernel's "
                  f"waves or list schedule, exactly the simulated time), {len(simulated)} simulated, where "
                  f"identical tiles dispatched together run as one weighted group ({groups} groups for {tiles} "
                  f"tiles)"],
    }
    return EventOpTimes(time, compute, level_time, level_bytes, overhead, bound, level_bytes[main], extras)


def _waves(kernel: Kernel, config: GpuConfig) -> int:
    """Full-GPU waves of the grid: ⌈tiles / (SMs × occupancy)⌉."""
    return -(-kernel.tile_count // (config.sms * kernel.occupancy))


def kernels_for(op_list: Sequence[Op], hw: Hardware) -> list[Kernel]:
    """The kernel of each op as the simulation runs it (for traces that need the tiles' bytes)."""
    return [_kernel(op, hw) for op in op_list]


def simulate_ops(op_list: Sequence[Op], hw: Hardware, streams: Sequence[int] | None = None,
                 coarsen: bool = True) -> Timeline:
    """Run one instance of each op, in order per stream (``streams[i]`` for op i, default all on stream 0)."""
    return simulate(kernels_for(op_list, hw), gpu_config(hw), streams, coarsen)


def trace_events(timeline: Timeline) -> list[dict[str, Any]]:
    """Chrome-trace "X" events (µs): kernels on pid 0 (one row per stream, launch delay separate), tile groups
    on pid 1 (greedy rows so that overlapping groups never share one)."""
    us = 1e6
    events = []
    for k in timeline.kernels:
        if k.started > k.launched:
            events.append({"name": f"launch {k.name}", "ph": "X", "ts": k.launched * us,
                           "dur": (k.started - k.launched) * us, "pid": 0, "tid": k.stream})
        events.append({"name": k.name, "ph": "X", "ts": k.started * us, "dur": (k.finished - k.started) * us,
                       "pid": 0, "tid": k.stream, "args": {"tiles": k.tiles, "groups": k.groups}})
    rows: list[float] = []  # when each row frees up
    for g in sorted(timeline.groups, key=lambda g: (g.started, g.kernel, g.first)):
        row = next((i for i, free in enumerate(rows) if free <= g.started), len(rows))
        if row == len(rows):
            rows.append(0.0)
        rows[row] = g.finished
        events.append({"name": g.kernel, "ph": "X", "ts": g.started * us, "dur": (g.finished - g.started) * us,
                       "pid": 1, "tid": row, "args": {"first_tile": g.first, "tiles": g.count}})
    return events


def chrome_trace(op_list: Sequence[Op], hw: Hardware, path: str | Path, streams: Sequence[int] | None = None,
                 coarsen: bool = True) -> list[dict[str, Any]]:
    """Simulate one instance of each op and write the trace to ``path`` (open it in Perfetto or
    chrome://tracing); returns the events."""
    from perfmodel.files import write_atomic

    events = trace_events(simulate_ops(op_list, hw, streams, coarsen))
    write_atomic(path, json.dumps(events))
    return events
