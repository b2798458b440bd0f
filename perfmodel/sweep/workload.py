"""A chunk's workload with its repeated passes stacked: one op per kernel instead of one per segment.

A method's schedule repeats a pass many times with a growing context: ARM's decode runs in
:data:`perfmodel.workload.passes.SEGMENTS` spans, block-wise diffusion in as many denoising (and commit) spans.
:func:`perfmodel.workload.build` makes each span's ops separately; here the spans of one phase become a single
pass whose fields carry one more leading axis, the span, and :func:`perfmodel.workload.layers.pass_ops` (plain
arithmetic on those fields) makes each op once for every span at the same time. A GEMM that does not depend on
the context keeps no span axis, only its count does: it is timed once, where separately it would have been built
sixteen times and then found equal. Totals add over the span axis as over the ops
(:class:`perfmodel.aggregate.Totals`). The memory footprint and the number of generation steps come from the
passes as built, unstacked.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Sequence

import numpy as np

from perfmodel.ops import Op
from perfmodel.workload import memory
from perfmodel.workload.layers import pass_ops
from perfmodel.workload.params import Params, Structure
from perfmodel.workload.passes import Pass, build_passes

FIELDS = ("tokens", "context", "cached", "logits", "append", "count")


@dataclass(frozen=True)
class StackedWorkload:
    """The ops of the stacked passes, the passes as built, and the memory footprint."""

    passes: list[Pass]
    ops: list[Op]
    weights_bytes: Any
    cache_bytes: Any
    activation_bytes: Any


def _field(values: Sequence[Any], ndim: int, always: bool = False) -> Any:
    """One field over the spans: the value itself when every span has it (unless ``always``), else the spans'
    values stacked along a new first axis (each value's grid axes padded to ``ndim``)."""
    first = values[0]
    if not always and (all(v is first for v in values) or all(np.ndim(v) == 0 and v == first for v in values)):
        return first
    arrays = [np.asarray(v, dtype=float) for v in values]
    arrays = [a.reshape((1,) * (ndim - a.ndim) + a.shape) for a in arrays]
    shape = np.broadcast_shapes(*(a.shape for a in arrays))
    return np.stack([np.broadcast_to(a, shape) for a in arrays])


def stack_passes(passes: Sequence[Pass], ndim: int) -> list[Pass]:
    """The passes with every group of one phase, mask and generation flag stacked into one pass (first-seen
    order); a group of one pass is kept as it is. ``ndim``: the number of grid axes of the parameters. A stacked
    pass's count always has the span axis (``ndim`` + 1 axes, even where all spans run equally often), so that
    each of its ops is counted once per span."""
    groups: dict[tuple[str, str, bool], list[Pass]] = {}
    for ps in passes:
        groups.setdefault((ps.phase, ps.mask, ps.generation), []).append(ps)
    out = []
    for members in groups.values():
        if len(members) == 1:
            out.append(members[0])
            continue
        out.append(replace(members[0], **{f: _field([getattr(ps, f) for ps in members], ndim, f == "count")
                                          for f in FIELDS}))
    return out


def build_stacked(structure: Structure, params: Params, ndim: int) -> StackedWorkload:
    """The workload of ``structure`` and ``params`` (arrays of ``ndim`` grid axes) with its passes stacked."""
    passes = build_passes(structure, params)
    op_list = [op for ps in stack_passes(passes, ndim) for op in pass_ops(structure, params, ps)]
    return StackedWorkload(passes, op_list, memory.weight_bytes(structure, params),
                           memory.cache_bytes(structure, params),
                           memory.activation_bytes(structure, params, passes))
