"""The aggregates of a prediction (latency, prefill and decode time, throughput, bound, memory), over any grid.

Think of a till that totals a basket: every op brings its time, count, FLOPs and main-memory bytes, tagged with
whether it belongs to the generation passes and which resource bounds it; the till adds them up per point of the
grid. :func:`perfmodel.api.summarize` calls it with one basket of scalars (grid shape ``()``); the sweep calls it
with several baskets of arrays whose shapes broadcast to the grid of a chunk. One function for both, so a sweep
point and a single prediction agree by construction.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np

NO_BOUND = "none"
# The per-point columns of :class:`Aggregates`: a prediction's summary (memory flattened) and a sweep table's
# metric columns.
METRICS = ("latency_s", "prefill_s", "decode_s", "tokens_per_s", "time_per_step_s", "steps", "flops", "hbm_bytes",
           "arithmetic_intensity", "bound", "memory_weights_bytes", "memory_cache_bytes", "memory_activation_bytes",
           "memory_total_bytes", "memory_capacity_bytes", "memory_fits")


@dataclass(frozen=True)
class OpBlock:
    """Ops sharing one grid shape ``S``: per-op arrays of shape ``(n_ops, *S)`` (``generation`` is ``(n_ops,)``).

    ``time`` is the time of one instance, ``count`` how many instances run, ``flops`` the FLOPs of one instance,
    ``main_bytes`` its bytes at the main memory level, ``bound`` the name of its bounding resource (strings), or,
    when ``bound_names`` is given, the index of that name in ``bound_names``. Arrays may keep a length-1 axis
    where they do not vary (they broadcast to ``(n_ops, *S)``).
    """

    generation: np.ndarray
    count: np.ndarray
    time: np.ndarray
    flops: np.ndarray
    main_bytes: np.ndarray
    bound: np.ndarray
    bound_names: Sequence[str] | None = None


@dataclass(frozen=True)
class Aggregates:
    """Per-point aggregates, each an array of the grid shape.

    ``columns`` holds latency_s, prefill_s, decode_s, tokens_per_s, time_per_step_s, steps, flops, hbm_bytes,
    arithmetic_intensity, bound and the memory_* fields; ``bound_time[k]`` is the generation time bounded by
    resource ``k`` and ``bound_present[k]`` whether any generation op with a non-zero count is bounded by it.
    ``bound_code`` is the bound as an index into ``bound_labels`` (the categories, then "none").
    """

    columns: dict[str, np.ndarray]
    bound_time: dict[str, np.ndarray]
    bound_present: dict[str, np.ndarray]
    bound_code: np.ndarray | None = None
    bound_labels: tuple[str, ...] = ()

    def bound_fractions(self, index: Any = ()) -> dict[str, float]:
        """``{resource: share of decode time}`` at one grid point, over the resources present there."""
        decode = float(self.columns["decode_s"][index])
        if not decode:
            return {}
        return {k: float(self.bound_time[k][index] / decode) for k in self.bound_time
                if bool(self.bound_present[k][index])}


def first_largest(terms: Sequence[np.ndarray]) -> np.ndarray:
    """Index of the largest of equal-shape ``terms`` at every point, the first of equal ones: what
    ``np.stack(terms).argmax(axis=0)`` gives, without the strided reduction that makes argmax over a leading
    axis slow."""
    best = terms[0]
    if any(np.isnan(t).any() for t in terms):  # argmax takes the first NaN as the largest
        return np.stack(terms).argmax(axis=0)
    code = np.zeros(np.shape(best), dtype=np.intp)
    for j, term in enumerate(terms[1:], 1):
        larger = term > best
        if larger.any():
            np.copyto(code, j, where=larger)
            best = np.maximum(best, term)
    return code


@functools.lru_cache(maxsize=256)
def _codes_of(bound_names: tuple[str, ...], categories: tuple[str, ...]) -> tuple[tuple[int, tuple[int, ...]], ...]:
    """(index in ``categories``, codes in ``bound_names`` naming it) of every category some code names."""
    out = []
    for i, name in enumerate(categories):
        codes = tuple(c for c, label in enumerate(bound_names) if str(label) == name)
        if codes:
            out.append((i, codes))
    return tuple(out)


def _bound_masks(blk: OpBlock, categories: Sequence[str]) -> list[tuple[int, np.ndarray]]:
    """(index in ``categories``, mask of the ops it bounds) of every category bounding some op of a block."""
    out = []
    if blk.bound_names is not None:
        codes = np.asarray(blk.bound)
        for i, named in _codes_of(tuple(blk.bound_names), tuple(categories)):
            mask = codes == named[0]
            for c in named[1:]:
                mask |= codes == c
            if mask.any():
                out.append((i, mask))
        return out
    names = np.asarray(blk.bound, dtype=object)
    for i, name in enumerate(categories):
        mask = names == name
        if mask.any():
            out.append((i, mask))
    return out


def _products_positive(time: Any, count: np.ndarray, runs: np.ndarray) -> bool:
    """Whether time · count is positive (no zero, no underflow, no NaN) for every op that runs (count > 0) and
    zero for the others (count = 0, finite time): then an op that runs is one whose product is positive."""
    time = np.asarray(time, dtype=float)
    least = time.min(initial=np.inf)
    if not least > 0 or not np.isfinite(time.max(initial=0.0)) or count.min(initial=0.0) < 0:
        return False
    smallest_count = count.min(where=runs, initial=np.inf)
    return bool(least * smallest_count > 1e-300) if np.isfinite(smallest_count) else True


def _totals(per_op: Any, count: np.ndarray, gen: np.ndarray, every: bool, axes: Any, known: dict | None,
            name: str) -> tuple[Any, Any]:
    """(Σ value·count over all ops, over the generation ops) of one block, taken from ``known`` when it holds
    them for this very array (and kept there)."""
    if known is not None and name in known and known[name][0] is per_op:
        return known[name][1]
    values = np.asarray(per_op, dtype=float) * count
    total = values.sum(axis=axes)
    out = (total, total if every else values[gen].sum(axis=axes) if gen.any() else None)
    if known is not None:
        known[name] = (per_op, out)
    return out


class Totals:
    """The till: per-point running totals of op blocks over a grid of shape ``shape`` (:func:`aggregate`), added
    block by block so that each block is totalled while its arrays are still in the processor's caches."""

    def __init__(self, shape: Sequence[int], categories: Sequence[str]):
        self.shape = tuple(shape)
        self.categories = sorted(set(categories))
        zeros = np.zeros(self.shape)
        self.prefill, self.decode, self.flops, self.main, self.gen_flops, self.gen_bytes = (
            zeros.copy() for _ in range(6))
        self.cat_time = np.zeros((len(self.categories), *self.shape))
        self.cat_present = np.zeros((len(self.categories), *self.shape), dtype=bool)

    def add(self, blk: OpBlock, known: dict | None = None) -> None:
        """Add one block's ops. Arrays with more axes than ``(n_ops, *shape)`` (a stacked workload's span axis,
        see :mod:`perfmodel.sweep.workload`) are summed over those leading axes as over the ops. ``known``: a
        dict kept with the block, in which its FLOP and byte totals are kept by the arrays they come from (a block
        totalled again, on another hardware variant, with the same FLOPs and bytes, reuses them)."""
        gen = np.asarray(blk.generation, dtype=bool)
        every = bool(gen.all())
        count = np.asarray(blk.count, dtype=float)
        total = np.asarray(blk.time, dtype=float) * count
        lead = max(1, total.ndim - len(self.shape))
        axes: Any = 0 if lead == 1 else tuple(range(lead))
        if not every:
            self.prefill += total[~gen].sum(axis=axes)
        work_sum, gen_work = _totals(blk.flops, count, gen, every, axes, known, "flops")
        moved_sum, gen_moved = _totals(blk.main_bytes, count, gen, every, axes, known, "main_bytes")
        self.flops += work_sum
        self.main += moved_sum
        if not gen.any():
            return
        g_total = total if every else total[gen]
        self.decode += g_total.sum(axis=axes)
        self.gen_flops += gen_work
        self.gen_bytes += gen_moved
        g_count = count if every else count[gen]
        g_runs = g_count > 0
        positive = g_total.ndim > 1 and _products_positive(blk.time if every else np.asarray(blk.time)[gen],
                                                           g_count, g_runs)
        for i, mask in _bound_masks(blk, self.categories):
            g_mask = mask if every else mask[gen]
            if g_total.ndim == 1:  # one op per row (a prediction): the plain sum, whose order NumPy picks
                self.cat_time[i] += np.where(g_mask, g_total, 0.0).sum(axis=0)
                self.cat_present[i] |= (g_mask & g_runs).any(axis=0)
                continue
            # Σ over the category's ops in op order at every point, without a masked copy of the block
            part = np.add.reduce(g_total, axis=axes, where=g_mask, initial=0.0)
            self.cat_time[i] += part
            if positive:  # every op that runs adds a positive time: the category is present where its sum is
                self.cat_present[i] |= part > 0
            else:
                self.cat_present[i] |= np.logical_or.reduce(np.broadcast_to(g_mask, g_total.shape), axis=axes,
                                                            where=g_runs, initial=False)

    def result(self, *, steps: Any, batch: Any, gen_len: Any, weights_bytes: Any, cache_bytes: Any,
               activation_bytes: Any, capacity_bytes: float) -> Aggregates:
        """The aggregates of everything added (see :func:`aggregate`)."""
        shape, categories = self.shape, self.categories
        decode, gen_flops, gen_bytes = self.decode, self.gen_flops, self.gen_bytes
        latency = self.prefill + decode
        steps = np.broadcast_to(np.asarray(steps, dtype=float), shape)
        with np.errstate(divide="ignore", invalid="ignore"):
            tokens = np.where(latency > 0, np.asarray(batch, dtype=float) * gen_len / latency, np.inf)
            per_step = np.where(steps != 0, decode / steps, 0.0)
            intensity = np.where(gen_bytes > 0, gen_flops / gen_bytes, np.inf)
        bound_time = {k: self.cat_time[i] for i, k in enumerate(categories)}
        bound_present = {k: self.cat_present[i] for i, k in enumerate(categories)}
        labels = (*categories, NO_BOUND)
        if categories:
            code = first_largest([np.where(bound_present[k], bound_time[k], -np.inf) for k in categories])
            code = np.where(self.cat_present.any(axis=0), code, len(categories))
        else:
            code = np.zeros(shape, dtype=np.intp)
        bound = np.array(labels, dtype=object)[code]
        weights = np.broadcast_to(np.asarray(weights_bytes, dtype=float), shape)
        cache = np.broadcast_to(np.asarray(cache_bytes, dtype=float), shape)
        activations = np.broadcast_to(np.asarray(activation_bytes, dtype=float), shape)
        total_mem = weights + cache + activations
        columns = {
            "latency_s": latency,
            "prefill_s": self.prefill,
            "decode_s": decode,
            "tokens_per_s": np.broadcast_to(tokens, shape),
            "time_per_step_s": np.broadcast_to(per_step, shape),
            "steps": steps,
            "flops": self.flops,
            "hbm_bytes": self.main,
            "arithmetic_intensity": intensity,
            "bound": np.asarray(bound, dtype=object),
            "memory_weights_bytes": weights,
            "memory_cache_bytes": cache,
            "memory_activation_bytes": activations,
            "memory_total_bytes": total_mem,
            "memory_capacity_bytes": np.full(shape, float(capacity_bytes)),
            "memory_fits": total_mem <= capacity_bytes,
        }
        assert tuple(columns) == METRICS
        return Aggregates(columns, bound_time, bound_present, code, labels)


def aggregate(blocks: Iterable[OpBlock], *, shape: Sequence[int], steps: Any, batch: Any, gen_len: Any,
              weights_bytes: Any, cache_bytes: Any, activation_bytes: Any, capacity_bytes: float,
              categories: Sequence[str] | None = None) -> Aggregates:
    """Total the op blocks into per-point aggregates of grid shape ``shape``.

    - prefill_s / decode_s: Σ time·count over the non-generation / generation ops; latency_s is their sum.
    - tokens_per_s = batch · gen_len / latency_s (inf for a zero latency); time_per_step_s = decode_s / steps
      (0 without generation steps), ``steps`` being the number of generation passes.
    - flops and hbm_bytes: Σ per-instance value · count over all ops; arithmetic_intensity = generation FLOPs /
      generation main-memory bytes (inf without bytes).
    - bound: the resource bounding the largest share of generation time, among those bounding at least one
      generation op that runs (ties go to the alphabetically first, as a sorted group-by does); "none" without any.
    - memory: weights + cache + activations against the device capacity.
    ``categories`` lists the possible bound names (default: those found in the blocks).
    """
    blocks = list(blocks)
    if categories is None:
        found: set[str] = set()
        for blk in blocks:
            gen = np.asarray(blk.generation, dtype=bool)
            bound = np.asarray(blk.bound)[gen].ravel()
            if blk.bound_names is not None:
                found.update(str(blk.bound_names[i]) for i in np.unique(bound))
            else:
                found.update(str(b) for b in np.asarray(bound, dtype=object))
        categories = sorted(found)
    totals = Totals(shape, categories)
    for blk in blocks:
        totals.add(blk)
    return totals.result(steps=steps, batch=batch, gen_len=gen_len, weights_bytes=weights_bytes,
                         cache_bytes=cache_bytes, activation_bytes=activation_bytes, capacity_bytes=capacity_bytes)
