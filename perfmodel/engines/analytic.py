"""The analytic engine: a hierarchical roofline over the op list.

Picture each op as a delivery job: the FLOPs are work for the compute units, the bytes are parcels moved
through a chain of depots (main memory → L2 → on-chip). Each depot has its own throughput; the job takes as
long as its slowest stage, plus a fixed cost to dispatch the job (kernel launch) and to receive the first
parcel (the serving level's latency).

Per op, with E the efficiency block of the hardware spec:
    t_compute = flops / (peak[dtype, unit] · E.unit) + vector_flops / (peak[dtype, vector] · E.vector)
    t_level   = traffic(level) / (bandwidth(level) · E.memory[level])      for every memory level
    t         = max(t_compute, max_level t_level) + E.launch_s + latency(serving level)
Which level serves the op's operands follows its reuse footprint (``Op.reuse_bytes``) against each level's
capacity: the nearest level that holds it. The unique bytes cross every level from the serving one up to the
first cache; the on-chip tile re-reads (``Op.l2_bytes``) load that first cache (L2 on a GPU, L1 on a CPU).
Everything is NumPy: op fields may be arrays over a sweep grid and the result broadcasts.

The ops are timed as one stack of columns (:mod:`perfmodel.engines.stack`, :func:`time_stack`): each formula
runs once over every op, and each kernel plan (:mod:`perfmodel.engines.tiling`) once over every GEMM or attention
call of a dtype, where the arithmetic is the same, element by element, as op by op.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from perfmodel import collectives
from perfmodel.engines.stack import OpStack, stack_ops
from perfmodel.ops import Op
from perfmodel.specs.hardware import Hardware

OVERHEAD = "launch"
COMPUTE = "compute"


@dataclass(frozen=True)
class Level:
    name: str
    capacity: float
    bandwidth: float  # attainable: peak × efficiency
    latency: float


def cache_levels(hw: Hardware) -> list[Level]:
    """Levels that hold data between kernels, nearest first; on a GPU the per-SM scratchpad is not one."""
    known = _LEVELS.get(id(hw))
    if known is not None and known[0] is hw:  # a spec is frozen: its levels never change
        return list(known[1])
    out = []
    for name, lvl in hw.memory.items():
        if hw.kind == "gpu" and lvl.per_unit:
            continue
        out.append(Level(name, hw.shared_capacity_bytes(name),
                         lvl.bandwidth_bytes_per_s * hw.efficiency.memory_fraction(name), lvl.latency_s or 0.0))
    if len(_LEVELS) >= 64:
        _LEVELS.clear()
    _LEVELS[id(hw)] = (hw, tuple(out))
    return out


# The levels of the hardware specs timed last, by identity (each entry keeps its spec, so that its id stays its own).
_LEVELS: dict[int, tuple[Hardware, tuple[Level, ...]]] = {}


def serving_level(reuse: Any, levels: Sequence[Level]) -> Any:
    """Index of the level that serves an op's operands: the nearest whose capacity holds its reuse footprint
    (``Op.reuse_bytes``), main memory otherwise."""
    reuse = np.asarray(reuse, dtype=float)
    serve = np.full(reuse.shape, len(levels) - 1)
    for i in reversed(range(len(levels) - 1)):
        serve = np.where(reuse <= levels[i].capacity, i, serve)
    return serve


class _Terms:
    """The roofline terms of a stack while the kernel plans refine them: ``compute``, ``overhead`` and
    ``exact`` (a GEMM's time, summed once), ``time:<level>`` and ``bytes:<level>``, each of shape
    (n_ops, *S) with S broadcastable to the grid. A term is copied to its full shape only when some of its rows
    are replaced; replacing every row swaps the array."""

    def __init__(self, shape: tuple[int, ...], arrays: dict[str, Any]):
        self.shape = shape
        self.arrays = arrays
        self.owned: set[str] = set()

    def __getitem__(self, name: str) -> np.ndarray:
        return self.arrays[name]

    def rows(self, name: str, rows: np.ndarray | None) -> np.ndarray:
        """The term at ``rows`` (None: every row)."""
        a = self.arrays[name]
        return a if rows is None else a[rows]

    def put(self, name: str, rows: np.ndarray | None, value: Any) -> None:
        """Replace the term at ``rows`` (None: every row) by ``value``."""
        if rows is None:
            self.arrays[name] = np.asarray(value, dtype=float)
            self.owned.discard(name)
            return
        if name not in self.owned:
            self.arrays[name] = _full(self.arrays[name], self.shape)
            self.owned.add(name)
        self.arrays[name][rows] = value


def _full(value: Any, shape: tuple[int, ...]) -> np.ndarray:
    """A writable float array of ``shape`` holding ``value`` broadcast."""
    out = np.empty(shape)
    out[...] = value
    return out


def _each(stack: OpStack, rows: np.ndarray) -> np.ndarray | None:
    """``rows``, or None when they are every row of the stack (the terms are then swapped, not copied)."""
    return None if len(rows) == stack.size else rows


def _gemms(stack: OpStack, hw: Hardware, levels: Sequence[Level], t: _Terms) -> None:
    """Replace the compute (and L2) terms of tensor-core GEMMs by the closed form of their kernel plans
    (:func:`perfmodel.engines.tiling.gemm_plan`, the plans the event engine simulates): tile shape, split-K,
    occupancy, latency-paced mainloop, epilogue and split-K reduction kernel. One plan call per group of equal
    dtype and operand widths (:class:`perfmodel.engines.stack.KindGroup`)."""
    from perfmodel.engines import tiling

    eff = hw.efficiency
    l2, main = levels[0], levels[-1]
    smem = smem_per_sm(hw)
    sharing = tiling.operand_sharing(hw.compute.architecture, hw.compute.sm_version)
    for g in stack.gemms:
        r = _each(stack, g.rows)
        vec = stack.vector_flops[g.rows] / (hw.compute.peak_flops(g.dtype, "vector") * eff.vector)
        hbm_b = t.rows(f"bytes:{main.name}", r)
        a, w, o = g.widths
        from_main = hbm_b > 0
        latency = main.latency if from_main.all() else l2.latency if not from_main.any() else \
            np.where(from_main, main.latency, l2.latency)
        plan = tiling.gemm_plan(g.columns["m"], g.columns["n"], g.columns["k"], a_bytes=a, w_bytes=w, o_bytes=o,
                                sms=hw.compute.units, peak=tensor_rate_of("gemm", g.dtype, hw),
                                l2_bw=l2.bandwidth, hbm_bw=main.bandwidth, hbm_bytes=hbm_b,
                                latency=latency, store_latency=l2.latency,
                                reduce_s=eff.launch_s + l2.latency, smem_bytes=smem, sharing=sharing,
                                dispatch=tiling.library_dispatch(g.dtype, hw.compute.architecture,
                                                                 hw.compute.sm_version))
        c = plan.compute_s + vec
        l2_time = np.maximum(plan.l2_s, t.rows(f"time:{l2.name}", r) if l2.name != main.name else 0.0)
        t.put(f"time:{l2.name}", r, l2_time)
        t.put(f"bytes:{l2.name}", r, np.maximum(plan.l2_bytes, t.rows(f"bytes:{l2.name}", r)))
        t.put("compute", r, c)
        busy = np.maximum(np.maximum(c, l2_time), t.rows(f"time:{main.name}", r))
        overhead = t.rows("overhead", r)
        t.put("exact", r, np.maximum(plan.time + vec, busy) + overhead)
        t.put("overhead", r, overhead + np.maximum(plan.time + vec - busy, 0.0))


def _attention(stack: OpStack, hw: Hardware, levels: Sequence[Level], t: _Terms) -> None:
    """Replace the compute term of tensor-core attention by its kernel plan: the grid of the device's
    FlashAttention generation (``efficiency.attention_kernel``), its split-KV heuristic and extra kernels, the
    attention mainloop's own tensor efficiency and the prefill tile time when calibrated. Each CTA's stream is
    latency-bound (Little's law): the calibrated per-CTA bandwidth holds for main memory and scales with
    latency for a nearer level serving the cache (:func:`perfmodel.engines.tiling.stream_floor`).

    The plan, the compute term, the fixed cost and the stream floors depend on the stack and on a few numbers of
    the device (:func:`attention_rates`, the tile times, :func:`_fixed_costs`, the CTA bandwidths), not on its
    memory bandwidths: the stack keeps them by those numbers, and a hardware variant that differs only in
    bandwidth (a sweep's what-if) reuses them."""
    from perfmodel.engines import tiling

    if not stack.attention:
        return
    eff = hw.efficiency
    l2, main = levels[0], levels[-1]
    tile_s, prefill_tile_s = attention_tile_s(hw), eff.prefill_attention_tile_s
    fixed_costs = _fixed_costs(hw)
    for i, g in enumerate(stack.attention):
        r = _each(stack, g.rows)
        rates = attention_rates(g.dtype, hw)
        sms = rates[0]
        key = ("attention", i, rates[0], getattr(rates[1], "name", None), *rates[2:], tile_s, prefill_tile_s,
               fixed_costs)
        if key not in stack.memo:
            plan, work = _plan_and_work(g.columns, stack.flops[g.rows], *rates)
            c = tiling.attention_compute_time(plan, work, sms=sms, tile_s=tile_s, prefill_tile_s=prefill_tile_s)
            stack.memo[key] = (plan, c, _fixed_s(plan, *fixed_costs))
        plan, c, fixed = stack.memo[key]
        vflops = stack.vector_flops[g.rows]
        # (adding a zero vector term changes no value)
        t.put("compute", r, c + vflops / (hw.compute.peak_flops(g.dtype, "vector") * eff.vector) if vflops.any()
              else c)
        main_bytes = t.rows(f"bytes:{main.name}", r)
        by_main = main_bytes > 0
        for lvl in (main, l2):
            served = by_main if lvl is main else (main_bytes == 0)
            if served.any():  # the floor of a level that serves none of these calls changes nothing
                cta_bw = cta_bandwidth(hw, lvl.latency)
                if (key, cta_bw) not in stack.memo:
                    stack.memo[key, cta_bw] = tiling.stream_floor(stack.read_bytes[g.rows], plan.ctas,
                                                                  plan.occupancy, sms, cta_bw,
                                                                  waves=plan.waves(sms))
                stream = stack.memo[key, cta_bw]
                current = t.rows(f"time:{lvl.name}", r)
                floor = np.maximum(current, stream)
                t.put(f"time:{lvl.name}", r, floor if served.all() else np.where(served, floor, current))
            if l2 is main or by_main.all():
                break
        t.put("overhead", r, t.rows("overhead", r) + fixed)


def _row_kernels(stack: OpStack, hw: Hardware, t: _Terms) -> None:
    """The chain of waves of a row kernel (one block per token: norms, activations, rotary) or embedding lookup
    (tiling.row_grid) as a floor on the op's busy time, where the device has a calibrated pass time."""
    from perfmodel.engines import tiling

    pass_s = hw.efficiency.row_kernel_s
    g = stack.row_kernels
    if not pass_s or g is None:
        return
    sm = tiling.sm_version(hw.compute.architecture, hw.compute.sm_version)
    cache_s = row_cache_latency(hw)
    stream_bw = row_stream_bandwidth(hw)
    key = ("row kernels", hw.compute.units, sm, pass_s, cache_s, stream_bw)  # every number of the device it reads
    if key not in stack.memo:
        c = g.columns
        stack.memo[key] = tiling.row_kernel_time(c["tokens"], c["width"], c["threads"], c["passes"],
                                                 sms=hw.compute.units, sm=sm, pass_s=pass_s, cache_s=cache_s,
                                                 nbytes=stack.bytes[g.rows], stream_bw=stream_bw)
    chain = stack.memo[key]
    r = _each(stack, g.rows)
    # a chain of round trips is latency: what it adds beyond the busiest term is charged with the fixed costs
    busy = t.rows("compute", r)
    for name in [k for k in t.arrays if k.startswith("time:")]:
        busy = np.maximum(busy, t.rows(name, r))
    t.put("overhead", r, t.rows("overhead", r) + np.maximum(chain - busy, 0.0))


def row_stream_bandwidth(hw: Hardware) -> float | None:
    """Main-memory bandwidth row kernels reach when every SM is full (``efficiency.row_kernel_bandwidth``), or
    None (passes never slowed by the load)."""
    f = hw.efficiency.row_kernel_bandwidth
    return f * hw.main_bandwidth_bytes_per_s if f else None


def row_cache_latency(hw: Hardware) -> float:
    """Round trip to the first cache between kernels (L2), for the id an embedding lookup reads each pass."""
    for lvl in cache_levels(hw):
        return lvl.latency
    return 0.0


def _allreduce(stack: OpStack, hw: Hardware, t: _Terms, level_names: Sequence[str]) -> None:
    """Collectives run on the interconnect instead (perfmodel/collectives.py: one link latency per GPU + the ring
    bytes at the collective efficiency, slowed on small messages): their only busy term is the ``link`` level."""
    g = stack.allreduce
    r = _each(stack, g.rows)
    devices = g.columns["devices"]
    model = collectives.AllReduceModel.from_hardware(hw)
    link_bytes = stack.bytes[g.rows]
    size = collectives.message_bytes(link_bytes, devices)
    comm = np.where(devices > 1, model.latency_time(devices) + model.stream_time(size, devices), 0.0)
    for name in level_names:
        t.put(f"time:{name}", r, 0.0)
        t.put(f"bytes:{name}", r, 0.0)
    t.arrays["time:link"] = t.arrays["bytes:link"] = np.zeros((stack.size,) + (1,) * len(stack.grid))
    t.put("time:link", r, comm)
    t.put("bytes:link", r, link_bytes)
    t.put("compute", r, 0.0)
    t.put("overhead", r, hw.efficiency.launch_s)


def smem_per_sm(hw: Hardware) -> float | None:
    """Shared memory of one SM (the nearest level when it is per unit), for kernel occupancy; None otherwise."""
    nearest = next(iter(hw.memory.values()))
    return nearest.capacity_bytes if nearest.per_unit else None


def tensor_rate(op: Op, hw: Hardware) -> float:
    """Attainable tensor FLOP/s of a GEMM or (``efficiency.attention_tensor``) an attention mainloop."""
    return tensor_rate_of(op.kind, op.dtype, hw)


def tensor_rate_of(kind: str, dtype: str, hw: Hardware) -> float:
    """:func:`tensor_rate` of an op of ``kind`` and ``dtype``."""
    eff = hw.efficiency
    frac = eff.tensor_fraction(dtype) if kind == "gemm" or eff.attention_tensor is None else eff.attention_tensor
    return hw.compute.peak_flops(dtype, "tensor") * frac


def attention_tile_s(hw: Hardware) -> float:
    """Serial time of one attention tile: the calibrated ``efficiency.attention_tile_s``, else
    ``tiling.DECODE_DEPENDENT_LOADS`` main-memory round trips."""
    from perfmodel.engines import tiling

    tile_s = hw.efficiency.attention_tile_s
    if tile_s is None:
        tile_s = tiling.DECODE_DEPENDENT_LOADS * cache_levels(hw)[-1].latency
    return tile_s


def cta_bandwidth(hw: Hardware, latency: float) -> float:
    """Bandwidth one attention CTA sustains from a level of ``latency``: the calibrated
    ``efficiency.attention_cta_bytes_per_s`` holds for main memory; the same bytes in flight over a shorter round
    trip stream proportionally faster (Little's law). 0: no such limit."""
    cta_bw = hw.efficiency.attention_cta_bytes_per_s or 0.0
    main_latency = cache_levels(hw)[-1].latency
    if cta_bw and latency and main_latency:
        cta_bw *= main_latency / latency
    return cta_bw


def attention_terms(op: Op, hw: Hardware):
    """(plan, whole-GPU work seconds, FlashKernel) of an attention op on a GPU: the grid of the device's
    FlashAttention generation and the mainloop's matmuls and exponentials (``op.shape['pairs']`` of them per
    head), at the attention tensor rate and the special-function rate."""
    return attention_terms_of(op.shape, op.flops, op.dtype, hw)


def attention_terms_of(shape: Mapping[str, Any], flops: Any, dtype: str, hw: Hardware):
    """:func:`attention_terms` from the shape fields (batch, q_len, kv_len, heads, kv_heads, head_dim, pairs), the
    FLOPs and the dtype of one or many attention calls (arrays broadcast)."""
    rates = attention_rates(dtype, hw)
    return (*_plan_and_work(shape, flops, *rates), rates[1])


def attention_rates(dtype: str, hw: Hardware) -> tuple[int, Any, float, float]:
    """(SMs, FlashKernel or None, attention tensor FLOP/s, softmax scores/s): what an attention call's plan and
    work read from the device."""
    from perfmodel.engines import tiling

    kernel = tiling.flash_kernel(hw.efficiency.attention_kernel) if hw.kind == "gpu" else None
    clock = hw.compute.boost_clock_hz or hw.compute.clock_hz
    rate = tiling.softmax_rate(hw.compute.units, clock, hw.compute.peak_flops("fp32", "vector"),
                               tiling.sm_version(hw.compute.architecture, hw.compute.sm_version))
    return hw.compute.units, kernel, tensor_rate_of("attention", dtype, hw), rate


def _plan_and_work(shape: Mapping[str, Any], flops: Any, sms: int, kernel: Any, peak: float, rate: float):
    from perfmodel.engines import tiling

    sh = shape
    plan = tiling.attention_plan(sh["batch"], sh["q_len"], sh["kv_len"], sh["heads"], sh["kv_heads"],
                                 sh["head_dim"], sms=sms, kernel=kernel)
    exps = tiling.softmax_exps(sh["batch"], sh["heads"], sh["pairs"])
    work = tiling.attention_work(np.asarray(flops, dtype=float), exps, peak=peak, exp_per_s=rate, kernel=kernel)
    return plan, work


def attention_fixed_s(plan, hw: Hardware):
    """Fixed cost of an attention call beyond one launch: the calibrated per-call overhead (prefill or decode)
    plus, for each extra kernel (split-KV combine, FA2's regrouping copies), a launch and a main-memory round
    trip, as any small kernel pays here."""
    return _fixed_s(plan, *_fixed_costs(hw))


def _fixed_costs(hw: Hardware) -> tuple[float, float, float, float]:
    eff = hw.efficiency
    return eff.launch_s, cache_levels(hw)[-1].latency, eff.attention_overhead_s, eff.prefill_attention_overhead_s


def _fixed_s(plan, launch_s: float, main_latency: float, decode_s: float, prefill_s: float):
    extra_s = plan.extra * (launch_s + main_latency)
    return np.where(plan.decode, decode_s, prefill_s) + extra_s


@dataclass
class OpTimes:
    """Per-op results, each an array of shape (n_ops, *grid)."""

    time: np.ndarray
    compute: np.ndarray
    level_time: dict[str, np.ndarray]
    level_bytes: dict[str, np.ndarray]
    overhead: np.ndarray
    bound: np.ndarray  # strings
    main_bytes: np.ndarray


@dataclass
class StackTimes:
    """:class:`OpTimes` of an :class:`~perfmodel.engines.stack.OpStack`, with the bound as an index into
    ``bound_names`` (compute, each level, link when there are all-reduces, then launch) instead of strings.
    Arrays broadcast to (n_ops, *grid) and may be smaller (a term constant along a grid axis keeps it at 1)."""

    shape: tuple[int, ...]
    time: np.ndarray
    compute: np.ndarray
    level_time: dict[str, np.ndarray]
    level_bytes: dict[str, np.ndarray]
    overhead: np.ndarray
    bound_code: np.ndarray
    bound_names: tuple[str, ...]
    main_level: str

    @property
    def main_bytes(self) -> np.ndarray:
        """Bytes at the main memory level."""
        return self.level_bytes[self.main_level]

    def op_times(self) -> OpTimes:
        """The results as :class:`OpTimes`: full-shape arrays, the bound as names."""
        def full(a):
            return np.array(np.broadcast_to(a, self.shape), dtype=float)

        bound = np.array(self.bound_names, dtype=object)[np.broadcast_to(self.bound_code, self.shape)]
        level_bytes = {k: full(v) for k, v in self.level_bytes.items()}
        return OpTimes(full(self.time), full(self.compute), {k: full(v) for k, v in self.level_time.items()},
                       level_bytes, full(self.overhead), bound, level_bytes[self.main_level])


def time_ops(op_list: Sequence[Op], hw: Hardware) -> OpTimes:
    """Time every op on ``hw``; fields broadcast over any sweep-grid shape."""
    return time_stack(stack_ops(op_list), hw).op_times()


def _largest(terms: Sequence[Any]) -> Any:
    """Elementwise maximum of terms of broadcastable shapes."""
    out = terms[0]
    for term in terms[1:]:
        out = np.maximum(out, term)
    return out


def _bound_code(terms: Sequence[np.ndarray], busy: np.ndarray) -> np.ndarray:
    """Index of the largest term, the first of equal ones (what ``np.stack(terms).argmax(axis=0)`` gives, without
    the strided reduction that makes argmax over a leading axis slow): the first term equal to ``busy``, their
    maximum."""
    if np.isnan(busy.max(initial=0.0)):  # argmax takes the first NaN as the largest
        return np.stack(np.broadcast_arrays(*terms)).argmax(axis=0).astype(np.int8)
    code = np.zeros(busy.shape, dtype=np.int8)
    below = np.ones(busy.shape, dtype=bool)  # every term so far is smaller than the largest
    for term in terms[:-1]:
        below &= term != busy
        code += below
    return code


def time_stack(stack: OpStack, hw: Hardware) -> StackTimes:
    """Time the ops of ``stack`` on ``hw`` (:func:`time_ops` on its columns); results broadcast to
    (n_ops, *grid)."""
    eff = hw.efficiency
    shape = stack.shape
    lead = (stack.size,) + (1,) * len(stack.grid)
    levels = cache_levels(hw)
    planned = hw.kind == "gpu" and len(levels) >= 2
    compute: Any = 0.0
    if not planned or len(stack.gemms) + len(stack.attention) == 0 or \
            sum(len(g.rows) for g in (*stack.gemms, *stack.attention)) < stack.size:
        # every op's generic compute term (the kernel plans below replace it for GEMMs and attention)
        rates = {}
        for op in stack.ops:
            if (op.dtype, op.unit) not in rates:
                rates[op.dtype, op.unit] = (hw.compute.peak_flops(op.dtype, op.unit) * (
                    eff.tensor_fraction(op.dtype) if op.unit == "tensor" else eff.vector),
                    hw.compute.peak_flops(op.dtype, "vector")
                    * eff.vector)
        peak = np.array([rates[op.dtype, op.unit] for op in stack.ops]).reshape((stack.size, 2) + lead[1:])
        compute = stack.flops / peak[:, 0] + stack.vector_flops / peak[:, 1]
    serve = serving_level(stack.reuse_bytes, levels)
    arrays: dict[str, Any] = {"compute": compute}
    for i, lvl in enumerate(levels):
        traffic = stack.bytes if i <= serve.min() else np.where(i <= serve, stack.bytes, 0.0)
        if i == 0:
            traffic = np.maximum(traffic, stack.l2_bytes)
        arrays[f"bytes:{lvl.name}"] = traffic
        arrays[f"time:{lvl.name}"] = traffic / lvl.bandwidth
    latency = np.array([lvl.latency for lvl in levels], dtype=float)[serve] if levels else 0.0
    arrays["overhead"] = np.broadcast_to(eff.launch_s + latency, lead) if np.ndim(latency) == 0 else \
        eff.launch_s + latency
    arrays["exact"] = np.full(lead, np.nan)
    t = _Terms(shape, arrays)

    if planned:
        _gemms(stack, hw, levels, t)
        _attention(stack, hw, levels, t)
        _row_kernels(stack, hw, t)
    elif hw.kind == "cpu":
        from perfmodel.engines import cpu  # few-row matmuls, exponentials, flash blocks (cpu.py)

        level_time = {lvl.name: _full(t[f"time:{lvl.name}"], shape) for lvl in levels}
        compute, overhead = cpu.compute_times(list(stack.ops), hw, _full(t["compute"], shape),
                                              _full(t["overhead"], shape), level_time)
        t.put("compute", None, compute)
        t.put("overhead", None, overhead)
        for name, value in level_time.items():
            t.put(f"time:{name}", None, value)
    names = [lvl.name for lvl in levels]
    if stack.allreduce is not None:
        _allreduce(stack, hw, t, names)
        names.append("link")

    level_time = {name: t[f"time:{name}"] for name in names}
    level_bytes = {name: t[f"bytes:{name}"] for name in names}
    compute, overhead = t["compute"], t["overhead"]
    busy = _largest([compute, *level_time.values()])
    time = np.add(busy, overhead, out=np.empty(shape))
    if planned and stack.gemms:
        r = np.concatenate([g.rows for g in stack.gemms])
        exact = np.broadcast_to(t["exact"], shape)[r]
        time[r] = np.where(np.isnan(exact), time[r], exact)
    tdp_w = hw.power.tdp_w if hw.power else None
    if hw.kind == "gpu" and eff.energy_per_flop_j and stack.tensor.any():
        # The power limiter slows long tensor-core kernels to the TDP (tiling.power_stretch): charged to compute.
        from perfmodel.engines import tiling

        rows = np.flatnonzero(stack.tensor)
        r = _each(stack, rows)
        tt = time if r is None else time[rows]
        flops = stack.flops if r is None else stack.flops[rows]
        if eff.energy_per_flop_dtype:  # a dtype whose FLOPs cost another energy (fp8): its FLOPs weighted
            key = ("energy weights", eff.energy_per_flop_j, tuple(sorted(eff.energy_per_flop_dtype.items())))
            if key not in stack.memo:  # the tensor rows' dtypes are the stack's: once per stack and energies
                stack.memo[key] = tiling.energy_weights([stack.ops[i].dtype for i in rows], eff)
            flops = flops * stack.memo[key].reshape((len(rows),) + (1,) * (np.ndim(flops) - 1))
        excess = tiling.power_excess(flops, tt, eff.energy_per_flop_j, tdp_w)
        if excess is not None:  # else the stretch is 1 for every kernel
            stretch = tiling.stretch_of(excess, tt, eff.power_window_s)
            c = t.rows("compute", r) + tt * (stretch - 1.0)
            t.put("compute", r, c)
            time[rows] = tt * stretch
            compute = t["compute"]
            busy = _largest([compute, *level_time.values()])
    code = _bound_code([compute, *level_time.values()], np.broadcast_to(busy, shape))
    np.copyto(code, len(names) + 1, where=overhead > busy)
    return StackTimes(shape, time, compute, level_time, level_bytes, overhead, code,
                      (COMPUTE, *names, OVERHEAD), levels[-1].name)
