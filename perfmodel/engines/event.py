"""The event engine: the op list run through a SimPy model of the GPU, tile by tile.

Where the analytic engine is a delivery estimate from the slowest depot's throughput, this one runs the
depots: each op becomes a kernel, its tiles queue for SM slots in waves, and every wave's loads share L2 and
HBM with whatever else is in flight. So it shows what a roofline cannot: the half-empty last wave of a GEMM,
the launch gaps between small kernels, two streams fighting over the same bandwidth.

    time_ops(op_list, hw)                -> EventOpTimes, the analytic engine's OpTimes plus ``extras``
    simulate_ops(op_list, hw, streams)   -> Timeline of the ops run back to back on streams
    chrome_trace(op_list, hw, path)      -> a chrome://tracing / Perfetto JSON of kernels and tile groups
    simulate(kernels, config, streams)   -> Timeline, for hand-built kernels on a hand-built GPU (tests)

Per op, ``time`` is the simulated span from launch to the end of the kernel's tail with the op alone on the
GPU. ``compute`` and ``level_time`` are the same ideal terms as the analytic engine (work over the whole GPU's
attainable rate); ``overhead`` = time − max(those) is everything else: launch, pipeline fill, waves, tails. The
bound is the largest term, or ``launch`` when the overhead exceeds them all (the analytic engine's rule).

Coarsening, so that a whole decode step runs in well under a second: ops with ``count`` > 1 and ops repeated
across segments are simulated once per distinct kernel (the count multiplies downstream); within a kernel,
tiles dispatched together run as one weighted group (exact for identical tiles). ``extras['notes']`` says
what was done.
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
from perfmodel.engines.event_tiling import LINK, gpu_config, kernel_for
from perfmodel.ops import Op
from perfmodel.specs.hardware import Hardware

__all__ = ["EventOpTimes", "GpuConfig", "GroupSpan", "Kernel", "KernelSpan", "TileClass", "Timeline",
           "chrome_trace", "gpu_config", "kernel_for", "kernels_for", "simulate", "simulate_ops", "time_ops"]

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


def _key(kernel: Kernel) -> Kernel:
    return replace(kernel, name="")


def time_ops(op_list: Sequence[Op], hw: Hardware) -> EventOpTimes:
    """Time every op on ``hw`` by simulating its kernel alone on the GPU (one point: op fields must be scalars)."""
    config = gpu_config(hw)
    kernels = [_kernel(op, hw) for op in op_list]
    spans: dict[Kernel, KernelSpan] = {}
    for k in kernels:
        if _key(k) not in spans:
            spans[_key(k)] = simulate([k], config).kernels[0]
    has_link = any(LINK in k.total_bytes() for k in kernels)
    level_names = [name for name in config.bandwidth_bytes_per_s if name != LINK or has_link]
    n = len(op_list)
    time = np.array([spans[_key(k)].duration for k in kernels])
    compute = np.array([k.total_compute_s() / config.sms for k in kernels])
    if hw.kind == "gpu" and hw.efficiency.energy_per_flop_j and n:
        # The power limiter's slow-down of long tensor-core kernels (the analytic engine's rule, charged to compute)
        is_tensor = np.array([op.unit == "tensor" and op.kind in ("gemm", "attention") for op in op_list])
        flops = np.array([float(np.asarray(op.flops)) for op in op_list])
        stretch = np.where(is_tensor, tiling.power_stretch(flops, time, hw.efficiency.energy_per_flop_j,
                                                            hw.power.tdp_w if hw.power else None,
                                                            hw.efficiency.power_window_s), 1.0)
        compute = compute + time * (stretch - 1.0)
        time = time * stretch
    level_bytes = {name: np.array([k.total_bytes().get(name, 0.0) for k in kernels]) for name in level_names}
    level_time = {name: level_bytes[name] / config.bandwidth_bytes_per_s[name] for name in level_names}
    terms = np.stack([compute, *level_time.values()]) if n else np.zeros((1 + len(level_names), 0))
    busy = terms.max(axis=0)
    overhead = time - busy
    bound = np.array([COMPUTE, *level_names], dtype=object)[terms.argmax(axis=0)]
    bound = np.where(overhead > busy, OVERHEAD, bound)
    main = [name for name in level_names if name != LINK][-1]

    safe = np.where(time > 0, time, np.inf)
    groups = sum(span.groups for span in spans.values())
    tiles = sum(span.tiles for span in spans.values())
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
                  f"coarsening: {n} ops -> {len(spans)} distinct kernels, each simulated once (count and repeated "
                  f"segments multiply the time); identical tiles dispatched together run as one weighted group "
                  f"({groups} groups for {tiles} tiles)"],
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
