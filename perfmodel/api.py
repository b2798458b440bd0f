"""Python API: the same entry points as the CLI, returning Prediction objects."""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import pandas as pd

from perfmodel import ops as opmod
from perfmodel.aggregate import OpBlock, aggregate
from perfmodel.engines import analytic
from perfmodel.ops import Op
from perfmodel.power import economics
from perfmodel.prediction import Prediction
from perfmodel.specs.hardware import Hardware, load_hardware
from perfmodel.specs.model import Model, load_model
from perfmodel.specs.sanity import prompt_findings, warn_findings
from perfmodel.specs.scenario import Scenario, load_scenario
from perfmodel.workload import Workload, build_workload

ENGINES = ("analytic", "event")


def split_overrides(overrides: Mapping[str, Any] | None) -> tuple[dict, dict, dict]:
    """Route dotted ``--set`` keys: ``hardware.…`` and ``model.…`` to those specs, the rest to the scenario."""
    hw, model, scenario = {}, {}, {}
    for key, value in (overrides or {}).items():
        if key.startswith("hardware."):
            hw[key[len("hardware."):]] = value
        elif key.startswith("model."):
            model[key[len("model."):]] = value
        else:
            scenario[key[len("scenario."):] if key.startswith("scenario.") else key] = value
    return hw, model, scenario


def load_specs(hardware: str | Hardware, model: str | Model, scenario: str | Scenario,
               overrides: Mapping[str, Any] | None = None) -> tuple[Hardware, Model, Scenario]:
    """The three specs of a prediction with dotted ``--set`` overrides applied; an "xF" value is F times the
    spec's own value (defaults included), as in ``plan --set`` and sweep grids."""
    hw_o, model_o, sc_o = split_overrides(overrides)
    return (_load(load_hardware, hardware, hw_o, "hardware", {"resolve_efficiency": False}),
            _load(load_model, model, model_o, "model"), _load(load_scenario, scenario, sc_o, "scenario"))


def _load(loader, name, overrides: dict, kind: str, raw: dict | None = None):
    """``loader(name, overrides)`` with "xF" values resolved against the spec loaded without them."""
    from perfmodel.specs.base import multiplier, resolve_multipliers

    if any(multiplier(v) is not None for v in overrides.values()):
        base = loader(name, **(raw or {}))
        overrides = resolve_multipliers(base.model_dump(mode="json"), overrides, f"{kind} {base.name} (--set)")
    return loader(name, overrides)


def _engine(engine: str):
    if engine == "analytic":
        return analytic.time_ops
    if engine == "event":
        from perfmodel.engines import event  # SimPy: imported only for this engine
        return event.time_ops
    raise ValueError(f"engine {engine!r}: expected one of {', '.join(ENGINES)}")


def op_frame(op_list: list[Op], times, hw: Hardware) -> pd.DataFrame:
    """One row per op: identity, per-instance work, time, bound and bytes per level."""
    flops = np.array([float(op.flops) for op in op_list])
    nbytes = np.array([float(op.bytes) for op in op_list])
    count = np.array([float(op.count) for op in op_list])
    df = pd.DataFrame({
        "name": [op.name for op in op_list],
        "kind": [op.kind for op in op_list],
        "phase": [op.phase for op in op_list],
        "count": count,
        "flops": flops,
        "bytes": nbytes,
        "arithmetic_intensity": flops / np.where(nbytes > 0, nbytes, np.nan),
        "time_s": np.asarray(times.time, dtype=float),
        "compute_s": np.asarray(times.compute, dtype=float),
        "overhead_s": np.asarray(times.overhead, dtype=float),
        "bound": np.asarray(times.bound, dtype=object),
    })
    for level, values in times.level_bytes.items():
        df[f"bytes_{level}"] = np.asarray(values, dtype=float)
    df["total_time_s"] = df.time_s * df["count"]
    df["shape"] = [dict(op.shape) for op in op_list]
    return df[df["count"] > 0].reset_index(drop=True)


def summarize(df: pd.DataFrame, wl: Workload, hw: Hardware, main_level: str) -> dict[str, Any]:
    """Aggregates of one prediction from its op frame; the sweep totals its grids with the same function
    (:func:`perfmodel.aggregate.aggregate`)."""
    gen_phases = {ps.phase for ps in wl.passes if ps.generation}
    main_col = f"bytes_{main_level}"
    block = OpBlock(
        generation=df.phase.isin(gen_phases).to_numpy(dtype=bool),
        count=df["count"].to_numpy(dtype=float),
        time=df.time_s.to_numpy(dtype=float),
        flops=df.flops.to_numpy(dtype=float),
        main_bytes=df[main_col].to_numpy(dtype=float) if main_col in df else np.zeros(len(df)),
        bound=df.bound.to_numpy(dtype=object),
    )
    p = wl.params
    steps = float(sum(float(ps.count) for ps in wl.passes if ps.generation))
    agg = aggregate([block], shape=(), steps=steps, batch=p.batch, gen_len=p.gen_len,
                    weights_bytes=wl.weights_bytes, cache_bytes=wl.cache_bytes,
                    activation_bytes=wl.activation_bytes, capacity_bytes=hw.memory_capacity_bytes)
    c = {k: v[()] for k, v in agg.columns.items()}
    return {
        "latency_s": float(c["latency_s"]),
        "prefill_s": float(c["prefill_s"]),
        "decode_s": float(c["decode_s"]),
        "tokens_per_s": float(c["tokens_per_s"]),
        "time_per_step_s": float(c["time_per_step_s"]),
        "steps": float(c["steps"]),
        "flops": float(c["flops"]),
        "hbm_bytes": float(c["hbm_bytes"]),
        "arithmetic_intensity": float(c["arithmetic_intensity"]),
        "bound": str(c["bound"]),
        "bound_fractions": agg.bound_fractions(),
        "memory": {
            "weights_bytes": float(c["memory_weights_bytes"]),
            "cache_bytes": float(c["memory_cache_bytes"]),
            "activation_bytes": float(c["memory_activation_bytes"]),
            "total_bytes": float(c["memory_total_bytes"]),
            "capacity_bytes": float(c["memory_capacity_bytes"]),
            "fits": bool(c["memory_fits"]),
        },
    }


def predict(hardware: str | Hardware = "h100-sxm", model: str | Model = "llama-3.1-8b",
            scenario: str | Scenario = "arm", overrides: Mapping[str, Any] | None = None,
            engine: str = "analytic") -> Prediction:
    """Predict one (hardware, model, scenario) with optional dotted overrides (``hardware.memory.hbm…``,
    ``model.…``, or scenario keys such as ``batch`` and ``kv_cache.bits``)."""
    hw, m, sc = load_specs(hardware, model, scenario, overrides)
    warn_findings(prompt_findings(m, sc), f"model {m.name} with scenario {sc.name}")
    timer = _engine(engine)
    wl = build_workload(m, sc)
    times = timer(wl.ops, hw)
    df = op_frame(wl.ops, times, hw)
    summary = summarize(df, wl, hw, hw.main_memory)
    summary["context"] = {"hardware": hw.name, "model": m.name, "scenario": sc.name, "method": sc.method,
                          "engine": engine, "batch": sc.batch, "prompt_len": sc.prompt_len, "gen_len": sc.gen_len,
                          "tensor_parallel": sc.tensor_parallel}
    summary.update(economics(hw, flops=summary["flops"], main_bytes=summary["hbm_bytes"],
                             latency_s=summary["latency_s"], tokens_per_s=summary["tokens_per_s"],
                             gpus=sc.tensor_parallel, dtype=m.dtype))
    extras = getattr(times, "extras", None) or {}
    return Prediction(df, summary, dict(extras))


def make_op(kind: str, **shape: Any) -> Op:
    """A single op from its kind and shape, as ``perfmodel op`` takes them."""
    dtype = shape.pop("dtype", "bf16")
    match kind:
        case "gemm":
            return opmod.gemm("gemm", shape["m"], shape["n"], shape["k"], dtype)
        case "attention":
            mask = shape.get("mask", "causal")
            return opmod.attention("attention", shape["batch"], shape["q_len"], shape["kv_len"], shape["heads"],
                                   shape["kv_heads"], shape["head_dim"], mask=mask, dtype=dtype)
    raise ValueError(f"op kind {kind!r}: expected 'gemm' or 'attention'")


def predict_op(op: Op, hardware: str | Hardware = "h100-sxm", engine: str = "analytic",
               overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Time one op: time_s, flops, bytes, arithmetic_intensity, bound (and per-level bytes)."""
    hw_o, _, _ = split_overrides(overrides)
    hw = load_hardware(hardware, hw_o)
    times = _engine(engine)([op], hw)
    out = {
        "kind": op.kind, "shape": dict(op.shape), "dtype": op.dtype, "hardware": hw.name, "engine": engine,
        "time_s": float(np.asarray(times.time)[0]), "flops": float(op.flops), "bytes": float(op.bytes),
        "arithmetic_intensity": float(op.arithmetic_intensity), "bound": str(np.asarray(times.bound)[0]),
        "compute_s": float(np.asarray(times.compute)[0]),
        "level_bytes": {k: float(np.asarray(v)[0]) for k, v in times.level_bytes.items()},
    }
    out.update(getattr(times, "extras", None) or {})
    return out
