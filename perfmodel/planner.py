"""Capacity planning: the cheapest configuration of each device that meets a latency or throughput target.

Like booking a table for a party: for each restaurant (device) try the smallest tables first (fewest GPUs:
tensor parallelism tp ∈ {1, 2, 4, 8}), with every seating plan (batch size, KV-cache format), and keep the
first that holds everyone (memory) and serves fast enough (target). Every configuration is predicted through
the vectorised sweep, so a plan over the whole catalog takes seconds; each rejected configuration keeps the
reason it failed.

Metrics of a configuration (one model replica on ``tp`` GPUs, ``batch`` sequences decoded together):
- TPOT (time per output token of one sequence): ARM emits one token per sequence per decode pass, so TPOT =
  time per pass; diffusion methods emit ``gen_len`` tokens over all their passes, so TPOT = decode time /
  gen_len.
- TTFT (time to first token): prefill, plus for diffusion methods the passes until the first finished block
  (block-wise methods: one block's share of the decode time; vanilla DLM: all of it, the answer is final only
  at the end).
- tokens/s per user = 1 / TPOT; throughput = batch · gen_len / latency per replica; a throughput target is met
  with ⌈target / throughput⌉ replicas, so GPUs = tp · replicas.
- memory per GPU (weights and caches split over tp) must fit the device and the optional budget.
Cheapest = fewest GPUs, then lowest price per hour (when the spec has ``price_per_hour_usd``), then the highest
throughput. ``rank_by`` puts another figure first: cost per million tokens, energy per token (both from
perfmodel/power.py; an option without the figure ranks last), throughput or TPOT.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from perfmodel.api import load_specs, split_overrides
from perfmodel.errors import SpecError
from perfmodel.specs.hardware import hardware_names, load_hardware
from perfmodel.specs.scenario import DEFAULT_BITS, load_scenario
from perfmodel.sweep import evaluate, grid_from_dict
from perfmodel.sweep.grid import get_path, resolve_value

TP_CHOICES = (1, 2, 4, 8)
BATCH_CHOICES = (1, 2, 4, 8, 16, 32, 64, 128, 256)
CACHE_CHOICES = ("fp16", "int8", "int4")
BLOCKWISE = ("block-dlm", "fast-dllm-prefix", "fast-dllm-dual")


@dataclass(frozen=True)
class Target:
    """What the deployment must achieve; ``None`` leaves a metric free (at least one must be set)."""

    tpot_s: float | None = None
    ttft_s: float | None = None
    tokens_per_s_per_user: float | None = None
    throughput_tokens_per_s: float | None = None
    memory_budget_bytes: float | None = None

    def __post_init__(self):
        for name in ("tpot_s", "ttft_s", "tokens_per_s_per_user", "throughput_tokens_per_s", "memory_budget_bytes"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, (int, float)) and value > 0 and math.isfinite(value)):
                raise ValueError(f"target {name} = {value!r}: expected a positive number")
        if all(getattr(self, n) is None for n in ("tpot_s", "ttft_s", "tokens_per_s_per_user",
                                                 "throughput_tokens_per_s")):
            raise ValueError("target: expected at least one of tpot_s, ttft_s, tokens_per_s_per_user, "
                             "throughput_tokens_per_s")


@dataclass(frozen=True)
class Option:
    """One configuration of one device, predicted, with whether it meets the target and why not."""

    hardware: str
    tp: int
    batch: int
    cache: str
    replicas: int
    gpus: int
    tpot_s: float
    ttft_s: float
    tokens_per_s_per_user: float
    throughput_tokens_per_s: float
    memory_per_gpu_bytes: float
    memory_limit_bytes: float
    price_per_hour_usd: float | None
    bound: str
    ok: bool
    reason: str
    power_w: float | None = None
    energy_per_token_j: float | None = None
    cost_per_million_tokens_usd: float | None = None

    def sort_key(self, rank_by: str = "gpus") -> tuple:
        """Best first by ``rank_by`` (:data:`RANK_BY`), then fewest GPUs, lowest price, highest throughput;
        a missing figure (no price, no TDP) ranks last."""
        price = self.price_per_hour_usd if self.price_per_hour_usd is not None else math.inf
        cheapest = (self.gpus, price, -self.throughput_tokens_per_s)
        first = {"gpus": (), "cost": (_or_inf(self.cost_per_million_tokens_usd),),
                 "energy": (_or_inf(self.energy_per_token_j),), "throughput": (-self.throughput_tokens_per_s,),
                 "tpot": (self.tpot_s,)}[rank_by]
        return (*first, *cheapest)

    def record(self) -> dict[str, Any]:
        """The option as a row of the output vocabulary (perfmodel/schema.py, ``PLAN_ROW``)."""
        from perfmodel.schema import PLAN_ROW, record

        return record({"hardware": self.hardware, "gpus": self.gpus, "tensor_parallel": self.tp,
                       "replicas": self.replicas, "batch": self.batch, "kv_cache.format": self.cache,
                       "tpot_s": self.tpot_s, "ttft_s": self.ttft_s, "tokens_per_s": self.throughput_tokens_per_s,
                       "tokens_per_s_per_user": self.tokens_per_s_per_user,
                       "memory_total_bytes": self.memory_per_gpu_bytes, "memory_limit_bytes": self.memory_limit_bytes,
                       "bound": self.bound, "power_w": self.power_w, "energy_per_token_j": self.energy_per_token_j,
                       "price_per_hour_usd": self.price_per_hour_usd,
                       "cost_per_million_tokens_usd": self.cost_per_million_tokens_usd, "ok": self.ok,
                       "reason": self.reason}, PLAN_ROW)


#: what ``plan`` can rank the options that meet the target by (``--rank-by``)
RANK_BY = ("gpus", "cost", "energy", "throughput", "tpot")


def _or_inf(value: float | None) -> float:
    return math.inf if value is None or not math.isfinite(value) else value


@dataclass(frozen=True)
class HardwarePlan:
    """The answer for one device: the cheapest option meeting the target (or None), and every option tried."""

    hardware: str
    best: Option | None
    options: list[Option] = field(default_factory=list)
    notes: dict[int, str] = field(default_factory=dict)  # per tp: why it was not chosen

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the best option, the per-tp notes and every option, as rows of the output vocabulary."""
        return {"hardware": self.hardware, "best": self.best.record() if self.best else None,
                "why_not": {str(tp): note for tp, note in self.notes.items()},
                "options": [o.record() for o in self.options]}


def planning_hardware() -> list[str]:
    """Catalog devices to plan on: every entry that is not a CPU."""
    return [name for name in hardware_names() if load_hardware(name).kind != "cpu"]


def _first_token_share(scenario) -> float:
    """Share of the decode time spent before the first token is final (see the module docstring)."""
    if scenario.method == "arm":
        return 0.0
    if scenario.method in BLOCKWISE or scenario.semi_autoregressive:
        return 1.0 / math.ceil(scenario.gen_len / scenario.block_size)
    return 1.0


def _gb(x: float) -> str:
    return f"{x / 1e9:,.1f} GB"


def _judge(row: Mapping[str, Any], target: Target, limit: float) -> tuple[bool, str]:
    if row["memory"] > limit:
        return False, f"out of memory: needs {_gb(row['memory'])} per GPU > {_gb(limit)}"
    if target.tpot_s is not None and row["tpot_s"] > target.tpot_s:
        return False, f"too slow: TPOT {row['tpot_s'] * 1e3:,.1f} ms > {target.tpot_s * 1e3:g} ms"
    if target.ttft_s is not None and row["ttft_s"] > target.ttft_s:
        return False, f"too slow: TTFT {row['ttft_s'] * 1e3:,.1f} ms > {target.ttft_s * 1e3:g} ms"
    if target.tokens_per_s_per_user is not None and row["per_user"] < target.tokens_per_s_per_user:
        return False, (f"too slow: {row['per_user']:,.1f} tokens/s per user < "
                       f"{target.tokens_per_s_per_user:g}")
    return True, "meets the target"


def _predict_table(hardware: str, model: str, scenario: str, cache: str, tps: Sequence[int],
                   batches: Sequence[int], overrides: Mapping[str, Any]) -> pd.DataFrame:
    """Predictions of every (tp, batch) for one device and cache format; tp values the device cannot run
    (no interconnect) come back with an ``error`` column."""
    frames = []
    for group in ([t for t in tps if t == 1], [t for t in tps if t > 1]):
        if not group:
            continue
        params = {**{k: [v] for k, v in overrides.items()}, "kv_cache.format": [cache],
                  "kv_cache.bits": [DEFAULT_BITS[cache]], "tensor_parallel": list(group), "batch": list(batches)}
        grid = grid_from_dict({"hardware": [hardware], "models": [model], "scenarios": [scenario],
                               "parameters": params}, source="--set")
        try:
            frames.append(evaluate(grid))
        except SpecError:
            raise
        except ValueError as exc:  # e.g. tp > 1 on a device whose spec lists no interconnect
            frames.append(pd.DataFrame({"tensor_parallel": [t for t in group for _ in batches],
                                        "batch": [b for _ in group for b in batches], "error": str(exc)}))
    return pd.concat(frames, ignore_index=True)


def plan(model: str, scenario: str, target: Target, *, hardware: Sequence[str] | None = None,
         tps: Sequence[int] = TP_CHOICES, batches: Sequence[int] = BATCH_CHOICES,
         caches: Sequence[str] = CACHE_CHOICES, overrides: Mapping[str, Any] | None = None,
         rank_by: str = "gpus") -> list[HardwarePlan]:
    """For each device, the best (tp, batch, cache) meeting ``target``, with every option's verdict.

    ``overrides`` are dotted ``predict --set`` keys applied to every configuration (``hardware.…`` keys change
    every device; "xF" multiplies the spec's value, e.g. ``{"hardware.memory.hbm.bandwidth_bytes_per_s": "x2"}``).
    ``rank_by`` (:data:`RANK_BY`) chooses what "best" means: fewest GPUs (the cheapest deployment, default), the
    lowest cost per million tokens or energy per token, the highest throughput or the lowest TPOT.
    The result lists devices with a feasible option first, best first.
    """
    if rank_by not in RANK_BY:
        raise ValueError(f"rank_by {rank_by!r}: expected one of {', '.join(RANK_BY)}")

    overrides = dict(overrides or {})
    for key in ("tensor_parallel", "batch", "kv_cache.format", "kv_cache.bits"):
        if key in overrides or f"scenario.{key}" in overrides:
            raise ValueError(f"override {key!r}: the planner chooses it; give the choices instead")
    for name, values in (("tp", tps), ("batch", batches)):
        if not values or any(not isinstance(v, (int, np.integer)) or v < 1 for v in values):
            raise ValueError(f"{name} choices {list(values)!r}: expected positive integers")
    unknown = [c for c in caches if c not in DEFAULT_BITS]
    if not caches or unknown:
        raise ValueError(f"cache choices {list(caches)!r}: expected formats among {', '.join(DEFAULT_BITS)}")
    names = list(hardware) if hardware is not None else planning_hardware()
    share = _first_token_share(_scenario_with(scenario, overrides))
    plans = []
    for hw_name in names:
        hw, m, _ = load_specs(hw_name, model, scenario, overrides)
        if hw.kind == "cpu":
            continue
        options: list[Option] = []
        for cache in caches:
            df = _predict_table(hw_name, model, scenario, cache, tps, batches, overrides)
            options += _options(df, hw_name, hw, cache, target, share, m.dtype)
        plans.append(_choose(hw_name, options, rank_by))
    return sorted(plans, key=lambda p: (p.best is None, p.best.sort_key(rank_by) if p.best else (), p.hardware))


def _scenario_with(scenario: str, overrides: Mapping[str, Any]):
    """The scenario with the scenario keys of ``overrides`` applied ("xF" multipliers resolved)."""
    base = load_scenario(scenario)
    dumped = base.model_dump(mode="json")
    _, _, sc_o = split_overrides(overrides)
    return load_scenario(base, {k: resolve_value(v, get_path(dumped, k), "--set", k, f"scenario {scenario}")
                                for k, v in sc_o.items()})


def _options(df: pd.DataFrame, hw_name: str, hw, cache: str, target: Target, share: float,
             dtype: str = "bf16") -> list[Option]:
    from perfmodel.power import economics

    out = []
    for row in df.to_dict(orient="records"):
        tp, batch = int(row["tensor_parallel"]), int(row["batch"])
        if isinstance(row.get("error"), str):
            out.append(Option(hw_name, tp, batch, cache, 0, tp, math.nan, math.nan, math.nan, math.nan, math.nan,
                              math.nan, None, "none", False, f"cannot run: {row['error']}"))
            continue
        gen_len = float(row["gen_len"])
        tpot = row["time_per_step_s"] if row["method"] == "arm" else row["decode_s"] / gen_len
        ttft = row["prefill_s"] + share * row["decode_s"]
        per_user = 1.0 / tpot if tpot > 0 else math.inf
        capacity = float(row["memory_capacity_bytes"])
        limit = min(capacity, target.memory_budget_bytes) if target.memory_budget_bytes else capacity
        metrics = {"memory": float(row["memory_total_bytes"]), "tpot_s": tpot, "ttft_s": ttft, "per_user": per_user}
        ok, reason = _judge(metrics, target, limit)
        throughput = float(row["tokens_per_s"])
        replicas = 1
        if target.throughput_tokens_per_s is not None and throughput > 0:
            replicas = max(1, math.ceil(target.throughput_tokens_per_s / throughput - 1e-9))
        price = hw.price_per_hour_usd * tp * replicas if hw.price_per_hour_usd else None
        money = economics(hw, flops=row["flops"], main_bytes=row["hbm_bytes"], latency_s=row["latency_s"],
                          tokens_per_s=throughput, gpus=tp, dtype=dtype)
        out.append(Option(hw_name, tp, batch, cache, replicas, tp * replicas, float(tpot), float(ttft),
                          float(per_user), throughput * replicas, metrics["memory"], limit, price,
                          str(row["bound"]), ok, reason, money["power_w"], money["energy_per_token_j"],
                          money["cost_per_million_tokens_usd"]))
    return out


def _choose(hw_name: str, options: list[Option], rank_by: str = "gpus") -> HardwarePlan:
    def key(o: Option) -> tuple:
        return o.sort_key(rank_by)

    feasible = sorted((o for o in options if o.ok), key=key)
    best = feasible[0] if feasible else None
    notes = {}
    for tp in sorted({o.tp for o in options}):
        mine = [o for o in options if o.tp == tp]
        if best is not None and best.tp == tp:
            continue
        if any(o.ok for o in mine):
            top = min((o for o in mine if o.ok), key=key)
            notes[tp] = (f"feasible but ranked lower by {rank_by}: {top.gpus} GPUs at batch {top.batch} "
                         f"({top.cache})")
            continue
        broken = [o for o in mine if o.reason.startswith("cannot run")]
        fitting = [o for o in mine if not o.reason.startswith(("out of memory", "cannot run"))]
        if broken and len(broken) == len(mine):
            notes[tp] = broken[0].reason
        elif not fitting:
            least = min(mine, key=lambda o: o.memory_per_gpu_bytes)
            notes[tp] = (f"out of memory at every batch and cache: at least {_gb(least.memory_per_gpu_bytes)} per "
                         f"GPU (batch {least.batch}, {least.cache}) > {_gb(least.memory_limit_bytes)}")
        else:
            fastest = min(fitting, key=lambda o: (o.tpot_s, o.ttft_s))
            notes[tp] = f"{fastest.reason} even at its fastest (batch {fastest.batch}, {fastest.cache})"
    return HardwarePlan(hw_name, best, options, notes)


def plans_frame(plans: Sequence[HardwarePlan]) -> pd.DataFrame:
    """One row per device: the chosen configuration as a row of the output vocabulary (``PLAN_ROW`` without
    ``ok`` and ``reason``; empty where none meets the target)."""
    from perfmodel.schema import PLAN_ROW

    names = [n for n in PLAN_ROW if n not in ("ok", "reason")]
    rows = [{n: p.best.record()[n] for n in names} if p.best else {"hardware": p.hardware} for p in plans]
    return pd.DataFrame(rows, columns=names)
