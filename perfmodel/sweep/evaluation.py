"""Evaluating one sweep chunk: a table with one row per point, the same numbers ``perfmodel.api.predict`` gives.

Analytic engine: the chunk's numeric wheels become broadcastable arrays (wheel i varies along axis i), and one
build (:mod:`perfmodel.sweep.workload`, the repeated passes of a phase stacked along one more axis) turns them
into ops whose fields carry only the axes they depend on (a decode GEMM's bytes vary with the batch only;
attention over the cache varies with span, batch, prompt and answer length). The ops are timed in stacks of equal
shape (:mod:`perfmodel.sweep.blocks`), so that a quantity independent of a wheel is never computed once per value
of that wheel, and each stack is totalled per point as soon as it is timed by :class:`perfmodel.aggregate.Totals`,
the till ``predict`` uses. What chunks of one sweep share (a workload on several hardware variants, a stack equal
to one already timed) is kept in a :class:`Memo`. Event engine: ``predict(..., engine="event")`` point by point.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import pandas as pd

from perfmodel.aggregate import METRICS, Aggregates, OpBlock, Totals
from perfmodel.api import predict
from perfmodel.engines.analytic import COMPUTE, OVERHEAD, cache_levels
from perfmodel.sweep.blocks import Block, Timings, blocks
from perfmodel.sweep.grid import Chunk, column_of
from perfmodel.sweep.table import BOUND_PREFIX, CONTEXT, ChunkRows, Labels, bind
from perfmodel.sweep.workload import build_stacked
from perfmodel.workload import from_specs

# Numeric scenario fields and the workload parameter each one sets (see perfmodel.workload.params.from_specs).
PARAM_OF = {
    "batch": "batch", "prompt_len": "prompt_len", "gen_len": "gen_len", "steps": "steps",
    "block_size": "block_size", "steps_per_block": "block_steps", "kv_cache.bits": "bits",
    "kv_cache.group_size": "group_size", "kv_cache.scale_bytes": "scale_bytes",
    "kv_cache.residual_window": "residual_window", "attention.token_budget": "token_budget",
    "attention.centroid_ratio": "centroid_ratio", "tensor_parallel": "tp",
}


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


class Memo:
    """What chunks of one sweep share: workloads built once per (model, scenario, chunk values), whatever the
    hardware, and stacks of ops timed once per hardware spec (:class:`perfmodel.sweep.blocks.Timings`). Only the
    most recent :data:`MEMO_WORKLOADS` workloads are kept (a grid's hardware variants of one model and scenario
    come one after the other), so that a long sweep does not hold every chunk's arrays."""

    def __init__(self) -> None:
        self.timings = Timings()
        self._prepared: dict[Any, tuple[Any, Prepared]] = {}

    def prepared(self, chunk: Chunk) -> "Prepared":
        g = chunk.group
        key = (id(g.model), id(g.scenario), tuple((k, tuple(v)) for k, v in chunk.axis_values()))
        hit = self._prepared.pop(key, None)
        if hit is None or hit[0][0] is not g.model or hit[0][1] is not g.scenario:
            hit = ((g.model, g.scenario), prepare(chunk))
        self._prepared[key] = hit  # now the most recent
        while len(self._prepared) > MEMO_WORKLOADS:
            del self._prepared[next(iter(self._prepared))]
        return hit[1]


MEMO_WORKLOADS = 8


@dataclass(frozen=True)
class Prepared:
    """A chunk's workload ready to time: its blocks and what the totals need beside them."""

    arrays: Mapping[str, np.ndarray]
    params: Any
    workload: Any
    blocks: tuple[Block, ...]
    steps: Any


def prepare(chunk: Chunk) -> Prepared:
    """Build the workload of a chunk over its numeric wheels (wheel i varies along axis i) and cut its ops into
    blocks (:func:`perfmodel.sweep.blocks.blocks`)."""
    g = chunk.group
    k = len(chunk.shape)
    arrays = {}
    for i, (key, values) in enumerate(chunk.axis_values()):
        arrays[key] = np.asarray(values, dtype=float).reshape([-1 if j == i else 1 for j in range(k)])
    structure, base = from_specs(g.model, g.scenario)
    params = workload_params(base, g.scenario, arrays)
    wl = build_stacked(structure, params, k)
    gen_phases = {ps.phase for ps in wl.passes if ps.generation}
    steps = sum((ps.count for ps in wl.passes if ps.generation), 0.0)
    return Prepared(arrays, params, wl, tuple(blocks(wl.ops, gen_phases, k)), steps)


def _left_pad(a: np.ndarray, ndim: int) -> np.ndarray:
    """A per-op array (n, *S) with S padded on the left to ``ndim`` axes."""
    missing = ndim - (a.ndim - 1)
    return a.reshape(a.shape[:1] + (1,) * missing + a.shape[1:]) if missing > 0 else a


def chunk_rows(chunk: Chunk, memo: Memo | None = None) -> ChunkRows:
    """The rows of one chunk on the analytic engine, as columns: each block is timed and at once totalled."""
    memo = memo or Memo()
    g = chunk.group
    prep = memo.prepared(chunk)
    hw = g.hardware
    names = {COMPUTE, OVERHEAD, *(lvl.name for lvl in cache_levels(hw))}
    if any(blk.stack.allreduce is not None for blk in prep.blocks):
        names.add("link")
    totals = Totals(chunk.shape, sorted(names))
    for blk in prep.blocks:
        times = memo.timings.time(blk.stack, hw)
        ndim = max(len(blk.stack.grid), blk.count.ndim - 1)
        totals.add(OpBlock(
            generation=blk.generation, count=_left_pad(blk.count, ndim), time=_left_pad(times.time, ndim),
            flops=blk.padded(blk.stack.flops, ndim), main_bytes=blk.padded(times.main_bytes, ndim),
            bound=_left_pad(times.bound_code, ndim), bound_names=times.bound_names), blk.totals)
    wl, params = prep.workload, prep.params
    agg = totals.result(steps=prep.steps, batch=params.batch, gen_len=params.gen_len,
                        weights_bytes=wl.weights_bytes, cache_bytes=wl.cache_bytes,
                        activation_bytes=wl.activation_bytes, capacity_bytes=hw.memory_capacity_bytes)
    return _rows(chunk, prep.arrays, agg, "analytic")


def _rows(chunk: Chunk, arrays: Mapping[str, np.ndarray], agg: Aggregates, engine: str) -> ChunkRows:
    g = chunk.group
    shape = chunk.shape
    cols: dict[str, Any] = {key: g.entries[key] for key in ("hardware", "model", "scenario")}
    cols["method"] = g.scenario.method
    cols["engine"] = engine
    for key, value in g.constants.items():
        cols[column_of(key)] = value
    for key, values in chunk.axis_values():
        cols[column_of(key)] = np.broadcast_to(arrays[key], shape).ravel().astype(np.asarray(values).dtype)
    for key in CONTEXT:
        if key not in cols:
            cols[key] = getattr(g.scenario, key)
    for key in METRICS:
        if key == "bound":
            cols[key] = Labels(np.ravel(agg.bound_code), agg.bound_labels)
        else:
            cols[key] = np.ravel(np.broadcast_to(agg.columns[key], shape))
    decode = np.ravel(agg.columns["decode_s"])
    with np.errstate(divide="ignore", invalid="ignore"):
        for name, t in agg.bound_time.items():
            present = np.ravel(agg.bound_present[name])
            cols[BOUND_PREFIX + name] = np.where(present & (decode != 0), np.ravel(t) / decode, 0.0)
    return ChunkRows(chunk.points(), cols)


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


def evaluate_chunk(chunk: Chunk, engine: str = "analytic", memo: Memo | None = None) -> pd.DataFrame:
    """The rows of one chunk: context columns, one column per grid parameter, then the metrics."""
    if engine == "analytic":
        return bind([chunk_rows(chunk, memo)], [column_of(ax.key) for ax in chunk.group.numeric])
    if engine == "event":
        return _per_point(chunk, engine)
    raise ValueError(f"engine {engine!r}: expected 'analytic' or 'event'")
