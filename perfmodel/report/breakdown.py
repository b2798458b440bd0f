"""Latency breakdown section: where the time of a step goes, by op class, and what it adds up to end to end."""
from __future__ import annotations

import pandas as pd

from perfmodel.report import plots
from perfmodel.report.context import Context
from perfmodel.report.document import Figure, Section, Table, fmt
from perfmodel.report.measures import per_step_by_class
from perfmodel.report.style import OP_CLASSES


def build(ctx: Context) -> Section:
    """Stacked step time by op class per (method, device), with latency and tokens/s of the whole request."""
    rows, per_step, totals = [], {}, {}
    for device in ctx.devices:
        for method in ctx.review.methods:
            pred = ctx.predict_method(device, method)
            s, c = pred.summary, pred.summary["context"]
            classes = per_step_by_class(pred)
            label = f"{method.label} · {device.name}"
            per_step[label] = {cls: v * 1e3 for cls, v in classes.items()}
            totals[label] = {"latency_s": s["latency_s"], "tokens_per_s": s["tokens_per_s"]}
            rows.append({"method": method.label, "device": device.name, "model": c["model"], "batch": c["batch"],
                         "prompt": c["prompt_len"], "generated": c["gen_len"], "steps": s["steps"],
                         **{f"{cls} (ms)": v * 1e3 for cls, v in classes.items()},
                         "step (ms)": s["time_per_step_s"] * 1e3, "prefill (ms)": s["prefill_s"] * 1e3,
                         "latency (ms)": s["latency_s"] * 1e3, "tokens/s": s["tokens_per_s"],
                         "bound": s["bound"]})
    table = pd.DataFrame(rows)
    fig = plots.breakdown(pd.DataFrame.from_dict(per_step, orient="index")[list(OP_CLASSES)],
                          pd.DataFrame.from_dict(totals, orient="index"))
    fastest = table.loc[table["latency (ms)"].idxmin()]
    busiest = table.loc[table["tokens/s"].idxmax()]
    paragraphs = [
        "Step time is the generation time divided by the number of steps (decode steps for ARM; denoising and "
        "cache-commit passes for diffusion methods); the classes add up to it. End-to-end latency adds the prefill.",
        f"Lowest latency: {fastest.method} on {fastest.device}, {fmt(fastest['latency (ms)'])} ms for "
        f"{fmt(fastest.generated)} tokens per sequence; highest throughput: {busiest.method} on {busiest.device}, "
        f"{fmt(busiest['tokens/s'])} tokens/s.",
    ]
    figure = Figure("breakdown", "Time per step by op class (top), end-to-end latency and throughput (bottom) of "
                    "each method on each device, at the scenarios' own batch and lengths.",
                    plots.to_png(fig, ctx.review.dpi))
    return Section("breakdown", "Latency breakdown", paragraphs, [figure],
                   [Table("breakdown", "Time per step by op class (ms), latency and throughput", table,
                          columns=tuple(c for c in table.columns if c not in ("batch", "prompt", "generated")))])
