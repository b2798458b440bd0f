"""The aggregates of a prediction (latency, prefill and decode time, throughput, bound, memory), over any grid.

Think of a till that totals a basket: every op brings its time, count, FLOPs and main-memory bytes, tagged with
whether it belongs to the generation passes and which resource bounds it; the till adds them up per point of the
grid. :func:`perfmodel.api.summarize` calls it with one basket of scalars (grid shape ``()``); the sweep calls it
with several baskets of arrays whose shapes broadcast to the grid of a chunk. One function for both, so a sweep
point and a single prediction agree by construction.
"""
from __future__ import annotations

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
    ``main_bytes`` its bytes at the main memory level, ``bound`` the name of its bounding resource (strings).
    """

    generation: np.ndarray
    count: np.ndarray
    time: np.ndarray
    flops: np.ndarray
    main_bytes: np.ndarray
    bound: np.ndarray


@dataclass(frozen=True)
class Aggregates:
    """Per-point aggregates, each an array of the grid shape.

    ``columns`` holds latency_s, prefill_s, decode_s, tokens_per_s, time_per_step_s, steps, flops, hbm_bytes,
    arithmetic_intensity, bound and the memory_* fields; ``bound_time[k]`` is the generation time bounded by
    resource ``k`` and ``bound_present[k]`` whether any generation op with a non-zero count is bounded by it.
    """

    columns: dict[str, np.ndarray]
    bound_time: dict[str, np.ndarray]
    bound_present: dict[str, np.ndarray]

    def bound_fractions(self, index: Any = ()) -> dict[str, float]:
        """``{resource: share of decode time}`` at one grid point, over the resources present there."""
        decode = float(self.columns["decode_s"][index])
        if not decode:
            return {}
        return {k: float(self.bound_time[k][index] / decode) for k in self.bound_time
                if bool(self.bound_present[k][index])}


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
    shape = tuple(shape)
    blocks = list(blocks)
    if categories is None:
        found: set[str] = set()
        for blk in blocks:
            gen = np.asarray(blk.generation, dtype=bool)
            found.update(str(b) for b in np.asarray(blk.bound, dtype=object)[gen].ravel())
        categories = sorted(found)
    categories = sorted(set(categories))
    zeros = np.zeros(shape)
    prefill, decode, flops, main, gen_flops, gen_bytes = (zeros.copy() for _ in range(6))
    cat_time = {k: zeros.copy() for k in categories}
    cat_present = {k: np.zeros(shape, dtype=bool) for k in categories}
    for blk in blocks:
        gen = np.asarray(blk.generation, dtype=bool)
        count = np.asarray(blk.count, dtype=float)
        total = np.asarray(blk.time, dtype=float) * count
        work = np.asarray(blk.flops, dtype=float) * count
        moved = np.asarray(blk.main_bytes, dtype=float) * count
        prefill += total[~gen].sum(axis=0)
        decode += total[gen].sum(axis=0)
        flops += work.sum(axis=0)
        main += moved.sum(axis=0)
        if not gen.any():
            continue
        gen_flops += work[gen].sum(axis=0)
        gen_bytes += moved[gen].sum(axis=0)
        g_total, g_runs = total[gen], count[gen] > 0
        g_bound = np.asarray(blk.bound, dtype=object)[gen]
        for k in categories:
            mask = g_bound == k
            cat_time[k] += np.where(mask, g_total, 0.0).sum(axis=0)
            cat_present[k] |= (mask & g_runs).any(axis=0)

    latency = prefill + decode
    steps = np.broadcast_to(np.asarray(steps, dtype=float), shape)
    with np.errstate(divide="ignore", invalid="ignore"):
        tokens = np.where(latency > 0, np.asarray(batch, dtype=float) * gen_len / latency, np.inf)
        per_step = np.where(steps != 0, decode / steps, 0.0)
        intensity = np.where(gen_bytes > 0, gen_flops / gen_bytes, np.inf)
    if categories:
        stacked = np.stack([np.where(cat_present[k], cat_time[k], -np.inf) for k in categories])
        names = np.array(categories, dtype=object)[stacked.argmax(axis=0)]
        any_present = np.logical_or.reduce([cat_present[k] for k in categories])
        bound = np.where(any_present, names, NO_BOUND)
    else:
        bound = np.full(shape, NO_BOUND, dtype=object)
    weights = np.broadcast_to(np.asarray(weights_bytes, dtype=float), shape)
    cache = np.broadcast_to(np.asarray(cache_bytes, dtype=float), shape)
    activations = np.broadcast_to(np.asarray(activation_bytes, dtype=float), shape)
    total_mem = weights + cache + activations
    columns = {
        "latency_s": latency,
        "prefill_s": prefill,
        "decode_s": decode,
        "tokens_per_s": np.broadcast_to(tokens, shape),
        "time_per_step_s": np.broadcast_to(per_step, shape),
        "steps": steps,
        "flops": flops,
        "hbm_bytes": main,
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
    return Aggregates(columns, cat_time, cat_present)
