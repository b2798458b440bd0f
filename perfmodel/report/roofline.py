"""Roofline section: the ops of one step of each method placed under each device's compute and memory roofs.

Each op is a point at (FLOPs / bytes moved, FLOPs / predicted time). An op left of a ridge point can at best run at
that level's bandwidth × its intensity; right of it, at the compute peak. ARM decode (GEMV-like, intensity ≈ batch),
a vanilla DLM step (intensity ≈ sequence length) and a cached block-wise step (≈ block × batch) fall in different
regions: that is the first thing a reviewer should see.
"""
from __future__ import annotations

import pandas as pd

from perfmodel.report import plots
from perfmodel.report.context import Context, Device
from perfmodel.report.document import Figure, Section, Table, fmt
from perfmodel.report.measures import main_phase, step_ops, step_work


def _roofs(device: Device) -> list[plots.Roof]:
    """Sloped roofs from main memory inwards; per-SM scratchpads are left out (they hold no data between kernels)."""
    hw = device.hardware
    levels = [name for name, lvl in hw.memory.items() if not lvl.per_unit]
    return [plots.Roof(name.upper(), hw.memory[name].bandwidth_bytes_per_s) for name in reversed(levels)]


def build(ctx: Context) -> Section:
    """The roofline section: a chart per device, ridge points, the per-step summary and (CSV) every op."""
    dtype = ctx.review.dtype
    figures, ridge_rows, step_rows, op_rows = [], [], [], []
    sentences = []
    for device in ctx.devices:
        hw = device.hardware
        peak = hw.compute.peak_flops(dtype)
        roofs = _roofs(device)
        for roof in roofs:
            ridge_rows.append({"hardware": device.name, "dtype": dtype, "peak_flops": peak,
                               "level": roof.label.lower(), "bandwidth_bytes_per_s": roof.bandwidth,
                               "ridge_point": hw.ridge_point(dtype, roof.label.lower())})
        points = []
        placed = []
        for method in ctx.review.methods:
            pred = ctx.predict_method(device, method)
            ops = step_ops(pred)
            shown = ops[(ops.flops > 0) & (ops.time_s > 0) & (ops.arithmetic_intensity > 0)]
            for _, op in shown.iterrows():
                achieved = op.flops / op.time_s
                points.append({"x": op.arithmetic_intensity, "y": achieved, "series": method.label})
                op_rows.append({"hardware": device.name, "configuration": method.label, "phase": op.phase,
                                "op": op["name"], "kind": op.kind, "flops": op.flops, "bytes": op["bytes"],
                                "arithmetic_intensity": op.arithmetic_intensity, "time_s": op.time_s,
                                "achieved_flops_per_s": achieved, "bound": op.bound})
            flops, nbytes = step_work(pred, hw.main_memory)
            step_s = pred.summary["time_per_step_s"]
            intensity = flops / nbytes if nbytes > 0 else float("inf")
            step_rows.append({"hardware": device.name, "configuration": method.label, "phase": main_phase(pred),
                              "ops": len(shown), "flops_per_step": flops, "hbm_bytes_per_step": nbytes,
                              "arithmetic_intensity": intensity, "time_per_step_s": step_s,
                              "achieved_flops_per_s": flops / step_s if step_s else float("nan"),
                              "peak_fraction": flops / step_s / peak if step_s else float("nan"),
                              "bound": pred.summary["bound"]})
            placed.append(f"{method.label} {fmt(intensity)}")
        ridge = hw.ridge_point(dtype)
        sentences.append(f"On {device.name} the {hw.main_memory.upper()} ridge point is {fmt(ridge)} FLOP/byte; "
                         f"the step intensities are " + ", ".join(placed) + " FLOP/byte.")
        figures.append(Figure(
            f"roofline-{device.name}",
            f"Roofline of {device.name} ({dtype} tensor peak, datasheet bandwidths) with the ops of one step of "
            f"each method (the middle step of the main generation phase); ops with no FLOPs are left out.",
            plots.to_png(plots.roofline(f"{device.name}: ops of one step", peak, f"{dtype} peak "
                                        f"{fmt(peak / 1e12)} TFLOP/s", roofs, pd.DataFrame(points),
                                        ctx.method_styles), ctx.review.dpi)))
    paragraphs = [
        "Each marker is one op of one step (x: FLOPs per byte moved; y: FLOPs per predicted second). The sloped "
        "lines are the memory roofs and the flat line the compute peak; an op cannot rise above the lowest roof "
        "over its intensity. Markers far below the roofs are launch- or latency-bound small kernels.",
        *sentences,
    ]
    tables = [Table("roofline_ridges", "Roofs and ridge points", pd.DataFrame(ridge_rows)),
              Table("roofline_steps", "One step of each method: work, intensity and achieved throughput",
                    pd.DataFrame(step_rows)),
              Table("roofline_ops", "Every plotted op", pd.DataFrame(op_rows), shown=0)]
    return Section("roofline", "Roofline", paragraphs, figures, tables)
