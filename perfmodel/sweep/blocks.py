"""A chunk's ops as blocks to time: each distinct op once, ops of equal grid shape stacked, stacks cut to a size
the processor's caches hold, and each stack timed once per hardware variant.

Like sorting a warehouse's orders before picking: identical orders are merged (their quantities added), orders
for the same aisle are grouped, a group is cut into cartloads, and a cartload already picked for one customer
is not picked again for the next (two models with the same attention shapes, two scenarios with the same
GEMMs). None of this changes a number: every op is timed by :func:`perfmodel.engines.analytic.time_stack`,
the function ``predict`` uses, and equal ops get equal times.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Sequence

import numpy as np

from perfmodel.engines.analytic import StackTimes, time_stack
from perfmodel.engines.stack import OpStack, broadcast_shape, stack_ops

# Ops whose fields hold at most this many values are compared value by value to merge equal ones.
DEDUP_MAX_ELEMENTS = 4096
# Values per stack (ops × grid points): arrays of this many float64 (512 KiB) stay in a core's L2 cache and in
# memory the allocator reuses; on arrays a few times larger NumPy ran 2-3x slower per value (2-core machine).
SLAB_ELEMENTS = 65_536


def _fields(op) -> list[Any]:
    """Every value of an op the engine reads (the count is not one: it only multiplies the time)."""
    return [op.flops, op.vector_flops, op.read_bytes, op.write_bytes, op.l2_bytes, op.reuse_bytes,
            *(v for _, v in sorted(op.shape.items()))]


def _shape(values: list[Any]) -> tuple[int, ...]:
    return broadcast_shape(v.shape for v in values if isinstance(v, np.ndarray))


def _shape_and_signature(op) -> tuple[tuple[int, ...], Any]:
    """The op's grid shape, and everything the engine reads from it, hashable: ``None`` for ops too large to be
    worth comparing. Ops with equal signatures (a decode step's GEMMs in every segment of the answer) take equal
    times."""
    values = _fields(op)
    shape = _shape(values)
    if math.prod(shape) > DEDUP_MAX_ELEMENTS:
        return shape, None
    parts = tuple((v.shape, v.tobytes()) if isinstance(v, np.ndarray) else v for v in values)
    sig = (op.name, op.phase, op.kind, op.dtype, op.unit, tuple(sorted(op.shape)), parts)
    try:
        hash(sig)
    except TypeError:  # a field of a kind this comparison does not know: time the op on its own
        return shape, None
    return shape, sig


@dataclass(frozen=True)
class Block:
    """Distinct ops stacked over one grid shape, with what the totals need besides their times: whether each
    belongs to the generation passes and the count of each (equal ops' counts added), shape (n, *S)."""

    stack: OpStack
    generation: np.ndarray
    count: np.ndarray
    # The block's FLOP and byte totals (perfmodel.aggregate.Totals.add) and padded views, kept by the arrays they
    # come from: another hardware variant reading the same arrays reuses them.
    totals: dict = field(default_factory=dict, compare=False, repr=False)
    _views: dict = field(default_factory=dict, compare=False, repr=False)

    def padded(self, a: np.ndarray, ndim: int) -> np.ndarray:
        """``a`` (n, *S) with S padded on the left to ``ndim`` axes; the same view for the same array."""
        hit = self._views.get((id(a), ndim))
        if hit is None or hit[0] is not a:
            missing = ndim - (a.ndim - 1)
            view = a.reshape(a.shape[:1] + (1,) * missing + a.shape[1:]) if missing > 0 else a
            hit = self._views[id(a), ndim] = (a, view)
        return hit[1]


def _kind(op) -> str:
    """The engine's treatment of an op: a GEMM plan, an attention plan, or the roofline alone. Stacks hold one
    treatment each, so that a GEMM stack is shared by every scenario running the same GEMMs."""
    if op.unit == "tensor" and op.kind in ("gemm", "attention"):
        return op.kind
    return "other"


def _groups(op_list: Sequence[Any], ndim: int | None) -> list[tuple[tuple[int, ...], list[tuple[Any, list]]]]:
    """Distinct ops (equal ones' counts listed together) grouped by grid shape and :func:`_kind`, in order of
    first appearance. An op made for every span of a stacked pass (:mod:`perfmodel.sweep.workload`: its count has
    ``ndim`` + 1 axes) whose values do not depend on the span runs its spans' counts together."""
    by_shape: dict[tuple[tuple[int, ...], str], list[tuple[Any, list]]] = {}
    seen: dict[Any, list] = {}
    for op in op_list:
        shape, sig = _shape_and_signature(op)
        count = op.count
        if ndim is not None and np.ndim(count) > ndim and len(shape) <= ndim:
            count = np.asarray(count, dtype=float).sum(axis=0)
        if sig is not None and sig in seen:
            seen[sig].append(count)
            continue
        counts = [count]
        if sig is not None:
            seen[sig] = counts
        by_shape.setdefault((shape, _kind(op)), []).append((op, counts))
    return [(shape, members) for (shape, _), members in by_shape.items()]


def blocks(op_list: Sequence[Any], gen_phases: set[str], ndim: int | None = None) -> list[Block]:
    """The blocks of a workload's ops: distinct ops, grouped by grid shape, each group cut into stacks of at most
    :data:`SLAB_ELEMENTS` values. ``ndim``: the number of grid axes of a stacked workload's parameters (an op's
    count with one more axis is counted per span)."""
    out = []
    for shape, members in _groups(op_list, ndim):
        per_op = max(1, int(np.prod(shape, dtype=np.int64)))
        if per_op > SLAB_ELEMENTS and shape[0] > 1:  # an op too large for the caches: cut along its first axis
            pieces = -(-per_op // SLAB_ELEMENTS)
            rows = -(-shape[0] // pieces)
            members = [piece for op, counts in members for piece in _cut(op, _total(counts), shape, rows)]
            shape = (min(rows, shape[0]), *shape[1:])
            per_op = max(1, int(np.prod(shape, dtype=np.int64)))
        step = max(1, SLAB_ELEMENTS // per_op)
        for start in range(0, len(members), step):
            part = members[start:start + step]
            ops = [op for op, _ in part]
            totals = [_total(counts) for _, counts in part]
            count_shape = np.broadcast_shapes(*(np.shape(c) for c in totals))
            count_shape = (1,) * (len(shape) - len(count_shape)) + count_shape
            out.append(Block(stack_ops(ops),
                             np.array([op.phase in gen_phases for op in ops], dtype=bool),
                             np.stack([np.broadcast_to(c, count_shape) for c in totals])))
    return out


def _total(counts: list) -> np.ndarray:
    """The count of equal ops together."""
    return sum(np.asarray(c, dtype=float) for c in counts) if len(counts) > 1 else np.asarray(counts[0], dtype=float)


def _cut(op, count: np.ndarray, shape: tuple[int, ...], rows: int) -> list[tuple[Any, list]]:
    """``op`` (grid ``shape``) cut into ops of at most ``rows`` along the grid's first axis, each with its part of
    ``count``: every value that varies along that axis is sliced (views), the others are kept."""
    def part(v: Any, sl: slice, ndim: int) -> Any:
        axis = np.ndim(v) - ndim  # the grid's first axis, counted from the right as broadcasting aligns
        if axis < 0 or np.shape(v)[axis] == 1:
            return v
        return np.asarray(v)[(slice(None),) * axis + (sl,)]

    out = []
    for start in range(0, shape[0], rows):
        sl = slice(start, start + rows)
        fields = {f: part(getattr(op, f), sl, len(shape))
                  for f in ("flops", "vector_flops", "read_bytes", "write_bytes", "l2_bytes", "reuse_bytes")}
        piece = replace(op, shape={k: part(v, sl, len(shape)) for k, v in op.shape.items()}, **fields)
        out.append((piece, [part(count, sl, len(shape))]))
    return out


def _same(a: Any, b: Any) -> bool:
    return a is b or (np.shape(a) == np.shape(b) and np.array_equal(a, b))


def _same_stack(a: OpStack, b: OpStack) -> bool:
    """Whether two stacks take equal times on any GPU: the same op kinds, dtypes and units, the same columns and
    the same plan groups (a CPU's terms read more of each op, see :meth:`Timings.time`)."""
    if a.grid != b.grid or len(a.gemms) != len(b.gemms) or len(a.attention) != len(b.attention):
        return False
    if (a.row_kernels is None) != (b.row_kernels is None) or (a.allreduce is None) != (b.allreduce is None):
        return False
    if any((x.kind, x.dtype, x.unit) != (y.kind, y.dtype, y.unit) for x, y in zip(a.ops, b.ops)):
        return False
    groups = list(zip(a.gemms, b.gemms)) + list(zip(a.attention, b.attention))
    groups += [(a.row_kernels, b.row_kernels)] if a.row_kernels is not None else []
    groups += [(a.allreduce, b.allreduce)] if a.allreduce is not None else []
    for x, y in groups:  # the shape columns first: small, and where stacks of different scenarios differ
        if x.dtype != y.dtype or x.widths != y.widths or not _same(x.rows, y.rows) or x.columns.keys() != \
                y.columns.keys() or not all(_same(x.columns[k], y.columns[k]) for k in x.columns):
            return False
    cols = ("tensor", "reuse_bytes", "vector_flops", "flops", "bytes", "read_bytes", "l2_bytes")
    return all(_same(getattr(a, c), getattr(b, c)) for c in cols)


def _ends(a: np.ndarray) -> tuple[Any, ...]:
    """The first and last values of a column: equal stacks have equal ones (a cheap key before comparing)."""
    flat = a.reshape(-1)
    return (a.shape, flat[0].item(), flat[-1].item()) if flat.size else (a.shape,)


class Timings:
    """Times of the stacks a sweep has timed, per hardware spec: a stack equal to one timed before on the same
    GPU (:func:`_same_stack`) takes its times instead of being timed again. The most recent
    :data:`TIMED_STACKS` stacks are kept."""

    def __init__(self) -> None:
        self._done: dict[tuple[int, Any], list[tuple[Any, OpStack, StackTimes]]] = {}
        self._order: list[tuple[int, Any]] = []

    def time(self, stack: OpStack, hw) -> StackTimes:
        if hw.kind != "gpu":
            return time_stack(stack, hw)
        key = (id(hw), (stack.size, stack.grid, tuple(op.kind for op in stack.ops), _ends(stack.flops),
                        _ends(stack.bytes), _ends(stack.vector_flops)))
        candidates = self._done.setdefault(key, [])
        for spec, other, times in candidates:
            if spec is hw and _same_stack(stack, other):
                return times
        times = time_stack(stack, hw)
        candidates.append((hw, stack, times))
        self._order.append(key)
        if len(self._order) > TIMED_STACKS:  # forget the oldest
            oldest = self._order.pop(0)
            self._done[oldest].pop(0)
            if not self._done[oldest]:
                del self._done[oldest]
        return times


TIMED_STACKS = 256
