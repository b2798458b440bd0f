"""Capacity section: the largest batch that fits each device per prompt length, and devices needed for a target.

"Fits" is the Prediction's own verdict: weights + cache + activations (``summary["memory"]["total_bytes"]``)
against the device's main-memory capacity. Memory grows with the batch, so the largest batch is found by a
bracketing search between 1 and the review's ``max_batch``.
"""
from __future__ import annotations

import math

import pandas as pd

from perfmodel.report import plots
from perfmodel.report.context import Context, Device
from perfmodel.report.document import Figure, Section, Table, fmt, wide
from perfmodel.report.review import MethodEntry


def largest_batch(ctx: Context, device: Device, method: MethodEntry, prompt_len: int, max_batch: int) -> int:
    """The largest batch in [1, max_batch] whose prediction fits the device (0 if batch 1 does not fit).

    Memory is close to affine in the batch (fixed weights, per-sequence cache and activations), so the search
    first probes where the line through batch 1 and 2 meets the capacity, and the batch after it; a bisection
    over whatever bracket remains makes the answer exact without relying on that shape.
    """
    def probe(batch: int) -> tuple[bool, float, float]:
        mem = ctx.predict_method(device, method, {"batch": batch, "prompt_len": prompt_len}).summary["memory"]
        return bool(mem["fits"]), mem["total_bytes"], mem["capacity_bytes"]

    fits, total_1, capacity = probe(1)
    if not fits:
        return 0
    lo, hi = 1, max_batch + 1  # invariant: lo fits; hi does not, or lies past the search range
    if max_batch >= 2:
        fits, total_2, _ = probe(2)
        lo, hi = (2, hi) if fits else (lo, 2)
        if fits and total_2 > total_1:
            guess = 1 + int((capacity - total_1) // (total_2 - total_1))
            for batch in (guess, guess + 1):
                if lo < batch < hi:
                    lo, hi = (batch, hi) if probe(batch)[0] else (lo, batch)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if probe(mid)[0] else (lo, mid)
    return lo


def build(ctx: Context) -> Section:
    """Largest batch and tokens held per (device, method, prompt), and devices needed for the target load."""
    cap = ctx.review.capacity
    rows, target_rows = [], []
    for device in ctx.devices:
        for method in ctx.review.methods:
            for length in cap.context:
                within = ctx.within_context(ctx.predict_method(device, method, {"batch": 1, "prompt_len": length}))
                batch = largest_batch(ctx, device, method, length, cap.max_batch) if within else 0
                row = {"hardware": device.name, "configuration": method.label, "prompt_len": length,
                       "max_batch": batch, "tokens_held": 0, "memory_total_bytes": float("nan"),
                       "memory_capacity_bytes": device.hardware.memory_capacity_bytes,
                       "search_capped": batch == cap.max_batch, "within_context": within}
                if batch:
                    pred = ctx.predict_method(device, method, {"batch": batch, "prompt_len": length})
                    c, mem = pred.summary["context"], pred.summary["memory"]
                    row.update({"tokens_held": batch * (c["prompt_len"] + c["gen_len"]),
                                "memory_total_bytes": mem["total_bytes"], "memory_capacity_bytes": mem["capacity_bytes"]})
                rows.append(row)
            pred = ctx.predict_method(device, method, {"batch": cap.target_batch, "prompt_len": cap.target_context})
            mem = pred.summary["memory"]
            target_rows.append({"hardware": device.name, "configuration": method.label, "batch": cap.target_batch,
                                "within_context": ctx.within_context(pred),
                                "prompt_len": cap.target_context, "memory_weights_bytes": mem["weights_bytes"],
                                "memory_cache_bytes": mem["cache_bytes"],
                                "memory_activation_bytes": mem["activation_bytes"],
                                "memory_total_bytes": mem["total_bytes"],
                                "memory_capacity_bytes": mem["capacity_bytes"],
                                "gpus": math.ceil(mem["total_bytes"] / mem["capacity_bytes"])})
    frame, target = pd.DataFrame(rows), pd.DataFrame(target_rows)
    shown = frame[frame["max_batch"] > 0]
    fig = plots.lines(
        [plots.Panel("largest batch that fits", shown, "max_batch", "largest batch (sequences)"),
         plots.Panel("tokens held at that batch", shown, "tokens_held", "tokens (batch × sequence)")],
        "prompt_len", "prompt length (tokens)", "configuration", ctx.method_styles, "hardware", ctx.device_linestyles)
    paragraphs = [
        f"Largest batch found by a bracketing search up to {fmt(cap.max_batch)} (a capped search is flagged in the table); "
        f"prompts whose batch 1 does not fit, or that exceed the model's longest context, are left out of the "
        f"plot (a batch of 0 in the table). Devices needed for the target of "
        f"{fmt(cap.target_batch)} sequences with {fmt(cap.target_context)}-token prompts is the memory-only lower "
        f"bound ⌈total bytes / capacity⌉: it assumes weights, cache and activations split evenly over the devices "
        f"(tensor parallelism) and ignores communication buffers.",
    ]
    for device in ctx.devices:
        need = target[target.hardware == device.name]
        paragraphs.append(f"On {device.name}: " + "; ".join(
            f"{r.configuration} needs {fmt(r['gpus'])} ({fmt(r['memory_total_bytes'])} B)"
            + ("" if r["within_context"] else ", beyond the model's context")
            for _, r in need.iterrows()) + ".")
    figure = Figure("capacity", "Largest batch that fits each device (left) and the tokens it holds (right) against "
                    "prompt length.", plots.to_png(fig, ctx.review.dpi))
    return Section("capacity", "Capacity", paragraphs, [figure],
                   [Table("capacity_batch_summary", "Largest batch that fits, and the tokens it holds",
                          wide(frame, ["hardware", "configuration"], "prompt_len", ["max_batch", "tokens_held"])),
                    Table("capacity_batch", "Every searched point", frame, shown=0),
                    Table("capacity_target", "Devices needed for the target load", target)])
