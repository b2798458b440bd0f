"""Timelines of whole generation steps: the event engine's simulation written as a Chrome / Perfetto trace.

A trace is the flight recorder of a step: every kernel the step launches, layer after layer, in launch order on its
stream, the tile groups each kernel dispatches onto the SMs, and how many bytes are in flight at each memory level
at every instant. It is built from the event engine (:func:`perfmodel.engines.event.simulate_ops` and
:func:`~perfmodel.engines.event.trace_events`), which simulates the kernels of the step back to back:

- the step's ops come from the workload builder (``pass_ops`` of the generation pass the step belongs to); an op
  that runs once per layer is launched once per layer, in the layer's order (a tensor-parallel step's two
  all-reduces per layer run together at the end of the layer's ops, where the op list puts them). A step of a
  growing-context method (ARM decode) is evaluated at the mean context of the span of steps it belongs to, as in
  every prediction (``perfmodel/workload/passes.py``).
- pid 0 holds the kernels, one thread per stream (``thread_name`` "stream N"); pid 1 the tile groups on the SMs
  (rows assigned greedily); pid 2 the counters ``bytes in flight`` (bytes of the tile groups resident at each level)
  and ``bandwidth`` (those bytes over each group's span, summed), one series per memory level.
- Timestamps are in microseconds; events are sorted by time (metadata first). The file is a JSON object with
  ``traceEvents`` (https://ui.perfetto.dev and chrome://tracing open it), written atomically.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

from perfmodel.ops import Op

US = 1e6


@dataclass(frozen=True)
class TraceSummary:
    """What a trace holds: events written, kernels launched, steps traced and the simulated time (s)."""

    events: int
    kernels: int
    steps: int
    seconds: float


def generation_steps(wl) -> list[Any]:
    """The generation passes of a workload expanded to one entry per step, in order (each a Pass of count 1).

    A pass group of ``count`` steps contributes ``count`` entries (rounded, at least one where count > 0)."""
    steps = []
    for ps in wl.passes:
        count = float(ps.count)
        if ps.generation and count > 0:
            steps += [replace(ps, count=1)] * max(1, round(count))
    return steps


def step_kernels(wl, steps: Sequence[Any]) -> tuple[list[Op], list[dict[str, Any]]]:
    """Every kernel the given steps launch, in launch order, with its step, layer and phase (as trace args)."""
    from perfmodel.workload.layers import pass_ops

    layers = int(wl.params.layers)
    kernels: list[Op] = []
    info: list[dict[str, Any]] = []
    for index, ps in steps:
        op_list = pass_ops(wl.structure, wl.params, ps)
        is_layer = [op.name.startswith("layer.") for op in op_list]
        first = is_layer.index(True) if any(is_layer) else len(op_list)
        last = len(is_layer) - is_layer[::-1].index(True) if any(is_layer) else first
        body = op_list[first:last]
        sequence = [(op, None) for op in op_list[:first]]
        for layer in range(layers):
            for op in body:
                per_layer = max(1, round(float(op.count) / layers))
                sequence += [(op, layer)] * per_layer
        sequence += [(op, None) for op in op_list[last:]]
        for op, layer in sequence:
            kernels.append(op.with_count(1))
            info.append({"step": index, "phase": ps.phase, "kind": op.kind,
                         **({"layer": layer} if layer is not None else {})})
    return kernels, info


def _counters(timeline, kernels_by_name: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Counter events: bytes in flight and bandwidth per memory level, stepping at every tile group's start and end."""
    changes: dict[float, dict[str, list[float]]] = {}
    levels: set[str] = set()
    for g in timeline.groups:
        kernel = kernels_by_name.get(g.kernel)
        if kernel is None:
            continue
        per_tile = _tile_bytes(kernel, g.first)
        span = g.finished - g.started
        for level, amount in per_tile.items():
            moved = amount * g.count
            if moved <= 0:
                continue
            levels.add(level)
            rate = moved / span if span > 0 else 0.0
            for t, sign in ((g.started, 1.0), (g.finished, -1.0)):
                slot = changes.setdefault(t, {}).setdefault(level, [0.0, 0.0])
                slot[0] += sign * moved
                slot[1] += sign * rate
    events = []
    in_flight = {level: 0.0 for level in sorted(levels)}
    rate = dict(in_flight)
    for t in sorted(changes):
        for level, (d_bytes, d_rate) in changes[t].items():
            in_flight[level] = max(0.0, in_flight[level] + d_bytes)
            rate[level] = max(0.0, rate[level] + d_rate)
        events.append({"name": "bytes in flight", "ph": "C", "ts": t * US, "pid": 2, "tid": 0,
                       "args": {level: _clean(v) for level, v in in_flight.items()}})
        events.append({"name": "bandwidth (B/s)", "ph": "C", "ts": t * US, "pid": 2, "tid": 0,
                       "args": {level: _clean(v) for level, v in rate.items()}})
    return events


def _clean(value: float) -> float:
    return round(value, 3) if abs(value) >= 1e-3 else 0.0


def _tile_bytes(kernel, tile: int) -> dict[str, float]:
    """Bytes per level of one tile of the tile class that holds tile index ``tile``."""
    seen = 0
    for cls in kernel.tiles:
        if tile < seen + cls.count:
            return dict(cls.bytes)
        seen += cls.count
    return {}


def _metadata(streams: Sequence[int], levels_title: str) -> list[dict[str, Any]]:
    meta = [{"name": "process_name", "ph": "M", "ts": 0, "pid": 0, "tid": 0, "args": {"name": "kernels"}},
            {"name": "process_name", "ph": "M", "ts": 0, "pid": 1, "tid": 0, "args": {"name": "SM tile groups"}},
            {"name": "process_name", "ph": "M", "ts": 0, "pid": 2, "tid": 0, "args": {"name": levels_title}}]
    meta += [{"name": "thread_name", "ph": "M", "ts": 0, "pid": 0, "tid": s, "args": {"name": f"stream {s}"}}
             for s in sorted(set(streams))]
    return meta


def build_trace(kernels: Sequence[Op], info: Sequence[Mapping[str, Any]], hw, streams: Sequence[int] | None = None
                ) -> tuple[dict[str, Any], float]:
    """The trace of ``kernels`` (launch order, ``streams[i]`` for kernel i, default stream 0) simulated on ``hw``:
    (the JSON document, simulated seconds)."""
    from perfmodel.engines import event

    streams = list(streams) if streams is not None else [0] * len(kernels)
    timeline = event.simulate_ops(kernels, hw, streams)
    events = event.trace_events(timeline)
    by_stream: dict[int, list[Mapping[str, Any]]] = {}
    for args, s in zip(info, streams):
        by_stream.setdefault(s, []).append(args)
    seen: dict[int, int] = {}
    for e in events:
        if e["pid"] == 0 and not e["name"].startswith("launch "):
            i = seen.get(e["tid"], 0)
            seen[e["tid"]] = i + 1
            e["args"] = {**by_stream[e["tid"]][i], **e.get("args", {})}
    names = {op.name: k for op, k in zip(kernels, event.kernels_for(kernels, hw))}
    events += _counters(timeline, names)
    events.sort(key=lambda e: e["ts"])
    document = {"traceEvents": _metadata(streams, "memory traffic") + events, "displayTimeUnit": "ns",
                "otherData": {"hardware": hw.name, "kernels": len(kernels), "simulated_s": timeline.end,
                              "made_by": "perfmodel predict --trace (event engine)"}}
    return document, timeline.end


def write_trace(path: str | Path, hardware, model, scenario, overrides: Mapping[str, Any] | None = None,
                steps: tuple[int, int] | None = None) -> TraceSummary:
    """Simulate generation steps ``steps`` = (first, last) (0-based, last = -1 for the final step; default the
    middle step) of a prediction and write the trace to ``path`` atomically."""
    from perfmodel.api import load_specs
    from perfmodel.errors import SpecError
    from perfmodel.files import write_atomic
    from perfmodel.workload import build_workload

    hw, m, sc = load_specs(hardware, model, scenario, overrides)
    wl = build_workload(m, sc)
    all_steps = generation_steps(wl)
    if not all_steps:
        all_steps = [replace(ps, count=1) for ps in wl.passes]
    n = len(all_steps)
    first, last = steps if steps is not None else (n // 2, n // 2)
    last = n - 1 if last == -1 else last
    if not 0 <= first <= last < n:
        raise SpecError("command line", "--trace-steps", f"{first}:{last}",
                        f"generation steps within 0:{n - 1} ({n} steps in this scenario)")
    kernels, info = step_kernels(wl, [(i, all_steps[i]) for i in range(first, last + 1)])
    document, seconds = build_trace(kernels, info, hw)
    write_atomic(path, json.dumps(document, allow_nan=False))
    return TraceSummary(len(document["traceEvents"]), len(kernels), last - first + 1,
                        seconds if math.isfinite(seconds) else 0.0)
