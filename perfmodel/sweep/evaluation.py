"""Evaluating one sweep chunk: a table with one row per point, the same numbers ``perfmodel.api.predict`` gives.

Analytic engine: the chunk's numeric wheels become broadcastable arrays (wheel i varies along axis i), one
``build`` turns them into ops whose fields carry only the axes they depend on (a decode GEMM's bytes vary with
the batch only; attention over the cache varies with batch, prompt and answer length), and the ops are timed in
blocks of equal shape, so that a quantity independent of a wheel is never computed once per value of that
wheel. The blocks are totalled per point by :func:`perfmodel.aggregate.aggregate`, the function
``predict`` uses. Event engine: ``predict(..., engine="event")`` point by point.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any, Mapping

import numpy as np
import pandas as pd

from perfmodel.aggregate import METRICS, Aggregates, OpBlock, aggregate
from perfmodel.api import predict
from perfmodel.engines.analytic import COMPUTE, OVERHEAD, time_ops
from perfmodel.sweep.grid import Chunk, column_of
from perfmodel.workload import build, from_specs

# Numeric scenario fields and the workload parameter each one sets (see perfmodel.workload.params.from_specs).
PARAM_OF = {
    "batch": "batch", "prompt_len": "prompt_len", "gen_len": "gen_len", "steps": "steps",
    "block_size": "block_size", "steps_per_block": "block_steps", "kv_cache.bits": "bits",
    "kv_cache.group_size": "group_size", "kv_cache.scale_bytes": "scale_bytes",
    "kv_cache.residual_window": "residual_window", "attention.token_budget": "token_budget",
    "attention.centroid_ratio": "centroid_ratio", "tensor_parallel": "tp",
}
CONTEXT = ("batch", "prompt_len", "gen_len")
BOUND_PREFIX = "bound_fraction_"


def workload_params(base, scenario, arrays: Mapping[str, np.ndarray]):
    """The workload parameters of a scenario with some numeric fields replaced by arrays.

    Mirrors ``from_specs``: ``steps`` defaults to ``gen_len`` and ``block_steps`` to
    ⌈block_size / tokens_per_step⌉ when the scenario leaves them empty.
    """
    changes = {PARAM_OF[k]: v for k, v in arrays.items() if k in PARAM_OF}
    if "steps" not in arrays and scenario.steps is None and "gen_len" in arrays:
        changes["steps"] = arrays["gen_len"]
    if "steps_per_block" not in arrays and scenario.steps_per_block is None and (
            "block_size" in arrays or "tokens_per_step" in arrays):
        size = arrays.get("block_size", scenario.block_size)
        per_step = arrays.get("tokens_per_step", scenario.tokens_per_step)
        changes["block_steps"] = np.ceil(np.asarray(size, dtype=float) / per_step)
    return base.replace(**changes)


def _fields(op) -> list[Any]:
    """Every value of an op the engine reads (the count is not one: it only multiplies the time)."""
    return [op.flops, op.vector_flops, op.read_bytes, op.write_bytes, op.l2_bytes, op.reuse_bytes,
            *(v for _, v in sorted(op.shape.items()))]


def _op_shape(op) -> tuple[int, ...]:
    return np.broadcast_shapes(*(v.shape for v in _fields(op) if isinstance(v, np.ndarray)))


def _full(op_list, shape: tuple[int, ...]):
    """The ops with the first op's (and first collective's) fields broadcast to ``shape``, so that every field the
    engine stacks has the block's full shape (adding 0.0 leaves each value unchanged)."""
    if not shape:
        return list(op_list)
    zero = np.zeros(shape)
    out = list(op_list)
    first = out[0]
    out[0] = replace(first, flops=first.flops + zero, vector_flops=first.vector_flops + zero,
                     read_bytes=first.read_bytes + zero, l2_bytes=first.l2_bytes + zero,
                     reuse_bytes=first.reuse_bytes + zero)
    for i, op in enumerate(out):
        if op.kind == "allreduce":
            out[i] = replace(op, shape={**op.shape, "devices": op.shape.get("devices", 1) + zero})
            break
    return out


DEDUP_MAX_ELEMENTS = 4096


def _signature(op, shape: tuple[int, ...]) -> Any:
    """Everything the engine reads from an op, hashable; ``None`` for ops too large to be worth comparing.

    Ops with equal signatures (a decode step's GEMMs in every segment of the answer) take equal times.
    """
    if int(np.prod(shape, dtype=np.int64)) > DEDUP_MAX_ELEMENTS:
        return None
    parts = [(v.shape, v.tobytes()) if isinstance(v, np.ndarray) else v for v in _fields(op)]
    sig = (op.name, op.phase, op.kind, op.dtype, op.unit, tuple(sorted(op.shape)), tuple(parts))
    try:
        hash(sig)
    except TypeError:  # a field of a kind this comparison does not know: time the op on its own
        return None
    return sig


def _unique_ops(op_list) -> list[tuple[Any, list]]:
    """Ops grouped into (representative, [count of every op equal to it]), in order of first appearance."""
    out: list[tuple[Any, list]] = []
    seen: dict[Any, int] = {}
    for op in op_list:
        sig = _signature(op, _op_shape(op))
        if sig is not None and sig in seen:
            out[seen[sig]][1].append(op.count)
            continue
        if sig is not None:
            seen[sig] = len(out)
        out.append((op, [op.count]))
    return out


def timed_blocks(op_list, hw, gen_phases: set[str], timer) -> tuple[list[OpBlock], list[str]]:
    """Time the ops in blocks of equal broadcast shape, each distinct op once (equal ops add their counts).

    Returns the blocks and every bound name they can carry.
    """
    by_shape: dict[tuple[int, ...], list] = {}
    for op, counts in _unique_ops(op_list):
        by_shape.setdefault(_op_shape(op), []).append((op, counts))
    blocks, names = [], {COMPUTE, OVERHEAD}
    main = hw.main_memory
    for shape, members in by_shape.items():
        ops = [op for op, _ in members]
        full = (len(ops), *shape)
        times = timer(_full(ops, shape), hw)
        names.update(times.level_time)
        counts = np.broadcast_shapes(shape, *(np.shape(c) for _, cs in members for c in cs))
        total_counts = [sum(np.asarray(c, dtype=float) for c in cs) for _, cs in members]
        main_bytes = times.level_bytes.get(main)
        blocks.append(OpBlock(
            generation=np.array([op.phase in gen_phases for op in ops], dtype=bool),
            count=np.stack([np.broadcast_to(c, counts) for c in total_counts]),
            time=np.broadcast_to(times.time, full),
            flops=np.stack([np.broadcast_to(np.asarray(op.flops, dtype=float), shape) for op in ops]),
            main_bytes=np.zeros(full) if main_bytes is None else np.broadcast_to(main_bytes, full),
            bound=np.broadcast_to(times.bound, full),
        ))
    return blocks, sorted(names)


def _analytic(chunk: Chunk) -> pd.DataFrame:
    g = chunk.group
    shape = chunk.shape
    k = len(shape)
    arrays = {}
    for i, (key, values) in enumerate(chunk.axis_values()):
        arrays[key] = np.asarray(values, dtype=float).reshape([-1 if j == i else 1 for j in range(k)])
    structure, base = from_specs(g.model, g.scenario)
    params = workload_params(base, g.scenario, arrays)
    wl = build(structure, params)
    gen_phases = {ps.phase for ps in wl.passes if ps.generation}
    blocks, names = timed_blocks(wl.ops, g.hardware, gen_phases, time_ops)
    steps = sum((ps.count for ps in wl.passes if ps.generation), 0.0)
    agg = aggregate(blocks, shape=shape, steps=steps, batch=params.batch, gen_len=params.gen_len,
                    weights_bytes=wl.weights_bytes, cache_bytes=wl.cache_bytes,
                    activation_bytes=wl.activation_bytes, capacity_bytes=g.hardware.memory_capacity_bytes,
                    categories=names)
    return _frame(chunk, arrays, agg, "analytic")


def _frame(chunk: Chunk, arrays: Mapping[str, np.ndarray], agg: Aggregates, engine: str) -> pd.DataFrame:
    g = chunk.group
    shape = chunk.shape
    n = chunk.size
    cols: dict[str, Any] = {"point": chunk.points()}
    for key in ("hardware", "model", "scenario"):
        cols[key] = np.full(n, g.entries[key], dtype=object)
    cols["method"] = np.full(n, g.scenario.method, dtype=object)
    cols["engine"] = np.full(n, engine, dtype=object)
    for key, value in g.constants.items():
        cols[column_of(key)] = np.full(n, value, dtype=object if isinstance(value, str) else None)
    for (key, values) in chunk.axis_values():
        cols[column_of(key)] = np.broadcast_to(arrays[key], shape).ravel().astype(np.asarray(values).dtype)
    for key in CONTEXT:
        if key not in cols:
            cols[key] = np.full(n, getattr(g.scenario, key))
    for key in METRICS:
        cols[key] = np.ravel(agg.columns[key])
    decode = np.ravel(agg.columns["decode_s"])
    with np.errstate(divide="ignore", invalid="ignore"):
        for name, t in agg.bound_time.items():
            present = np.ravel(agg.bound_present[name])
            cols[BOUND_PREFIX + name] = np.where(present & (decode != 0), np.ravel(t) / decode, 0.0)
    return pd.DataFrame(cols)


def summary_row(summary: Mapping[str, Any]) -> dict[str, Any]:
    """One table row from a ``predict`` summary: the metric columns, memory flattened, bound fractions spread."""
    row = {k: summary[k] for k in METRICS if not k.startswith("memory_")}
    for k, v in summary["memory"].items():
        row[f"memory_{k}"] = v
    for k, v in summary["bound_fractions"].items():
        row[BOUND_PREFIX + k] = v
    return row


def _per_point(chunk: Chunk, engine: str) -> pd.DataFrame:
    g = chunk.group
    numeric = {ax.key for ax in g.numeric}
    rows = []
    for point, overrides in chunk.overrides():
        # The group's specs already carry its hardware, model and structural scenario values: workers need no
        # files, only the numeric values of the point.
        p = predict(g.hardware, g.model, g.scenario, {k: v for k, v in overrides.items() if k in numeric},
                    engine=engine)
        row = {"point": point, **g.entries, "method": g.scenario.method, "engine": engine,
               **{column_of(k): v for k, v in overrides.items()}}
        for key in CONTEXT:
            row.setdefault(key, p.summary["context"][key])
        row.update(summary_row(p.summary))
        rows.append(row)
    df = pd.DataFrame(rows)
    fraction_cols = [c for c in df.columns if c.startswith(BOUND_PREFIX)]
    df[fraction_cols] = df[fraction_cols].fillna(0.0)
    return df


def evaluate_chunk(chunk: Chunk, engine: str = "analytic") -> pd.DataFrame:
    """The rows of one chunk: context columns, one column per grid parameter, then the metrics."""
    if engine == "analytic":
        return _analytic(chunk)
    if engine == "event":
        return _per_point(chunk, engine)
    raise ValueError(f"engine {engine!r}: expected 'analytic' or 'event'")
