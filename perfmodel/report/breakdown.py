"""Latency breakdown section: where the time of a step goes, by op class, and what it adds up to end to end."""
from __future__ import annotations

import pandas as pd

from perfmodel.report import plots
from perfmodel.report.context import Context
from perfmodel.report.document import Figure, Section, Table, fmt
from perfmodel.report.measures import per_step_by_class
from perfmodel.report.style import OP_CLASSES


def build(ctx: Context) -> Section:
    """Stacked step time by op class per (configuration, device), with latency, tokens/s, energy per token and cost
    per million tokens of the whole request."""
    rows, per_step, totals = [], {}, {}
    for device in ctx.devices:
        for method in ctx.review.methods:
            pred = ctx.predict_method(device, method)
            s, c = pred.summary, pred.summary["context"]
            classes = per_step_by_class(pred)
            label = f"{method.label} · {device.name}"
            per_step[label] = {cls: v * 1e3 for cls, v in classes.items()}
            totals[label] = {"latency_s": s["latency_s"], "tokens_per_s": s["tokens_per_s"]}
            rows.append({"configuration": method.label, "hardware": device.name, "model": c["model"],
                         "batch": c["batch"], "prompt_len": c["prompt_len"], "gen_len": c["gen_len"],
                         "steps": s["steps"], **{f"{cls}_time_per_step_s": v for cls, v in classes.items()},
                         "time_per_step_s": s["time_per_step_s"], "prefill_s": s["prefill_s"],
                         "latency_s": s["latency_s"], "tokens_per_s": s["tokens_per_s"], "bound": s["bound"],
                         "power_w": s["power_w"], "energy_per_token_j": s["energy_per_token_j"],
                         "cost_per_million_tokens_usd": s["cost_per_million_tokens_usd"]})
    table = pd.DataFrame(rows)
    fig = plots.breakdown(pd.DataFrame.from_dict(per_step, orient="index")[list(OP_CLASSES)],
                          pd.DataFrame.from_dict(totals, orient="index"))
    fastest = table.loc[table["latency_s"].idxmin()]
    busiest = table.loc[table["tokens_per_s"].idxmax()]
    paragraphs = [
        "Step time is the generation time divided by the number of steps (decode steps for ARM; denoising and "
        "cache-commit passes for diffusion methods); the classes add up to it. End-to-end latency adds the prefill.",
        f"Lowest latency: {fastest.configuration} on {fastest.hardware}, {fmt(fastest['latency_s'])} s for "
        f"{fmt(fastest.gen_len)} tokens per sequence; highest throughput: {busiest.configuration} on "
        f"{busiest.hardware}, {fmt(busiest['tokens_per_s'])} tokens/s.",
        *_economics(table),
    ]
    figure = Figure("breakdown", "Time per step by op class (top), end-to-end latency and throughput (bottom) of "
                    "each method on each device, at the scenarios' own batch and lengths.",
                    plots.to_png(fig, ctx.review.dpi))
    return Section("breakdown", "Latency breakdown", paragraphs, [figure],
                   [Table("breakdown", "Time per step by op class, latency, throughput, energy and cost", table,
                          columns=tuple(c for c in table.columns if c not in ("batch", "prompt_len", "gen_len")))])


def _economics(table: pd.DataFrame) -> list[str]:
    """Sentences on energy per token and cost per million tokens (perfmodel/power.py), where the specs give them."""
    out = []
    energy = table[table.energy_per_token_j.notna()]
    if len(energy):
        low = energy.loc[energy.energy_per_token_j.astype(float).idxmin()]
        out.append(f"Energy per generated token (power model of perfmodel/power.py: idle power plus utilisation-"
                   f"weighted dynamic power, capped at the TDP) is lowest for {low.configuration} on {low.hardware}: "
                   f"{fmt(low.energy_per_token_j)} J at {fmt(low.power_w)} W per GPU.")
    priced = table[table.cost_per_million_tokens_usd.notna()]
    unpriced = sorted(set(table.hardware) - set(priced.hardware))
    if len(priced):
        low = priced.loc[priced.cost_per_million_tokens_usd.astype(float).idxmin()]
        out.append(f"Rental cost per million generated tokens (the spec's cited price_per_hour_usd) is lowest for "
                   f"{low.configuration} on {low.hardware}: {fmt(low.cost_per_million_tokens_usd)} USD.")
    if unpriced:
        out.append(f"{', '.join(unpriced)} {'has' if len(unpriced) == 1 else 'have'} no cited price, so no cost "
                   f"is reported for {'it' if len(unpriced) == 1 else 'them'}.")
    return out
