"""A list of ops as columns: every field the analytic engine reads, stacked over the ops.

Like a spreadsheet made from a pile of forms: one row per op, one column per field, so that a formula is
written once per column instead of once per form. A column keeps only the grid axes its values vary along
(a decode GEMM's bytes vary with the batch, attention over the cache with batch and context): it has shape
``(n_ops, *S)`` with ``S`` broadcastable to the grid of the block, and broadcasting does the rest.

Ops the engine plans the same way are indexed together: tensor-core GEMMs of equal dtype and operand widths
(:func:`perfmodel.engines.tiling.gemm_plan` takes the widths as numbers), tensor-core attention calls of equal
dtype, row kernels (:func:`perfmodel.engines.tiling.row_threads`) and all-reduces, each with the shape columns
its plan reads. A stack depends on the ops only, not on the hardware: a sweep builds it once per workload and
times it on every hardware variant (:func:`perfmodel.engines.analytic.time_stack`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from perfmodel.engines import tiling
from perfmodel.ops import Op

ATTENTION_FIELDS = ("batch", "q_len", "kv_len", "heads", "kv_heads", "head_dim", "pairs")


def broadcast_shape(shapes: Any) -> tuple[int, ...]:
    """``np.broadcast_shapes`` of ``shapes``, without its cost where they are all equal (or equal but for
    scalars)."""
    distinct = set(shapes)
    distinct.discard(())
    if len(distinct) <= 1:
        return distinct.pop() if distinct else ()
    return np.broadcast_shapes(*distinct)


def column(values: Sequence[Any], ndim: int) -> np.ndarray:
    """``values`` (numbers or arrays, one per op) stacked into a float array of shape ``(len(values), *S)``: ``S``
    is the broadcast shape of the values, left-padded with ones to ``ndim`` axes."""
    arrays = [np.asarray(v, dtype=float) for v in values]
    shape = broadcast_shape(a.shape for a in arrays)
    shape = (1,) * (ndim - len(shape)) + shape
    if not any(a.ndim for a in arrays):
        return np.array([a.item() for a in arrays], dtype=float).reshape((len(arrays),) + shape)
    if len(arrays) == 1:  # one op: a view with the op axis in front
        return arrays[0].reshape(shape)[None]
    return np.stack([a if a.shape == shape else np.broadcast_to(a, shape) for a in arrays])


@dataclass(frozen=True)
class KindGroup:
    """Rows of ops that one vectorised plan call times: their indices and the shape columns the plan reads."""

    rows: np.ndarray
    dtype: str
    columns: Mapping[str, np.ndarray]
    widths: tuple[float, float, float] = (0.0, 0.0, 0.0)  # GEMM a, w, o bytes per element


@dataclass(frozen=True)
class OpStack:
    """The ops of one block as columns over the grid ``grid`` (the broadcast shape of every field)."""

    ops: tuple[Op, ...]
    grid: tuple[int, ...]
    flops: np.ndarray
    vector_flops: np.ndarray
    bytes: np.ndarray          # read + write, per op as ``Op.bytes`` adds them
    read_bytes: np.ndarray
    l2_bytes: np.ndarray
    reuse_bytes: np.ndarray
    tensor: np.ndarray         # (n,) bool: tensor-unit GEMM or attention (planned, and power-limited)
    gemms: tuple[KindGroup, ...]
    attention: tuple[KindGroup, ...]
    row_kernels: KindGroup | None
    allreduce: KindGroup | None
    # Results the engine derived from these columns, by every number of the device they depend on (see
    # perfmodel.engines.analytic._attention): a stack timed on several hardware variants computes them once.
    memo: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def size(self) -> int:
        return len(self.ops)

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of a per-op result: ``(n_ops, *grid)``."""
        return (len(self.ops), *self.grid)


def _rows(idx: list[int]) -> np.ndarray:
    return np.asarray(idx, dtype=np.intp)


def stack_ops(op_list: Sequence[Op]) -> OpStack:
    """The columns of ``op_list`` (fields may be numbers or arrays over a sweep grid)."""
    ops = tuple(op_list)
    fields = {"flops": [op.flops for op in ops], "vector_flops": [op.vector_flops for op in ops],
              "read_bytes": [op.read_bytes for op in ops], "write_bytes": [op.write_bytes for op in ops],
              "l2_bytes": [op.l2_bytes for op in ops], "reuse_bytes": [op.reuse_bytes for op in ops]}
    grid = broadcast_shape(np.shape(v) for vs in fields.values() for v in vs)
    ndim = len(grid)
    cols = {name: column(vs, ndim) for name, vs in fields.items()}
    cols["bytes"] = cols["read_bytes"] + cols.pop("write_bytes")  # each op's read + write, as Op.bytes adds them
    tensor = np.array([op.unit == "tensor" and op.kind in ("gemm", "attention") for op in ops], dtype=bool)

    gemm_keys: dict[Any, list[int]] = {}
    attn_keys: dict[str, list[int]] = {}
    row_idx, row_threads, row_passes, comm_idx = [], [], [], []
    for i, op in enumerate(ops):
        sh = op.shape
        if tensor[i] and op.kind == "gemm":
            widths = (sh["a_bytes"], sh["w_bytes"], sh["o_bytes"])
            # gemm_plan takes the operand widths as numbers: an op whose widths vary over the grid is planned alone
            key = (op.dtype, *(float(w) for w in widths)) if all(np.ndim(w) == 0 for w in widths) else ("op", i)
            gemm_keys.setdefault(key, []).append(i)
        elif tensor[i]:
            attn_keys.setdefault(op.dtype, []).append(i)
        if op.kind == "allreduce":
            comm_idx.append(i)
        threads = tiling.row_threads(op.kind, sh.get("variant", ""), sh.get("width", 1))
        if threads is not None and "tokens" in sh:
            row_idx.append(i)
            row_threads.append(threads)
            row_passes.append(tiling.row_passes(op.kind, sh.get("variant", ""), sh.get("width", 1), threads))

    gemms = []
    for key, idx in gemm_keys.items():
        first = ops[idx[0]].shape
        gemms.append(KindGroup(_rows(idx), ops[idx[0]].dtype,
                               {d: column([ops[i].shape[d] for i in idx], ndim) for d in ("m", "n", "k")},
                               (first["a_bytes"], first["w_bytes"], first["o_bytes"])))
    attention = tuple(
        KindGroup(_rows(idx), dtype, {d: column([ops[i].shape[d] for i in idx], ndim) for d in ATTENTION_FIELDS})
        for dtype, idx in attn_keys.items())
    rows = None
    if row_idx:
        rows = KindGroup(_rows(row_idx), "", {"tokens": column([ops[i].shape["tokens"] for i in row_idx], ndim),
                                              "width": column([ops[i].shape.get("width", 1) for i in row_idx], ndim),
                                              "threads": column(row_threads, ndim),
                                              "passes": column(row_passes, ndim)})
    comm = None
    if comm_idx:
        comm = KindGroup(_rows(comm_idx), "", {"devices": column([ops[i].shape.get("devices", 1) for i in comm_idx],
                                                                 ndim)})
    return OpStack(ops, tuple(grid), cols["flops"], cols["vector_flops"], cols["bytes"], cols["read_bytes"],
                   cols["l2_bytes"], cols["reuse_bytes"], tensor, tuple(gemms), attention, rows, comm)
