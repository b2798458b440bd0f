"""Sparse attention section: attention time and bytes per decode step against token budget and context length.

Squeezed and Multipole attention read centroids plus the keys and values of the selected clusters instead of the
whole cache, and pay for the lookup, the top-k selection and the irregular gathers. The attention-class ops
(attention, centroid lookup, top-k, gather) of a step are summed and compared with dense attention.
"""
from __future__ import annotations

import pandas as pd

from perfmodel.report import plots
from perfmodel.report.context import Context, Device
from perfmodel.report.document import Figure, Section, Table, fmt, wide
from perfmodel.report.measures import attention_per_step
from perfmodel.report.style import series_styles

BYTES = "attention_hbm_bytes_per_step"
TIME = "attention_time_per_step_s"


def _row(ctx: Context, device: Device, scenario: str, overrides: dict) -> dict:
    sp = ctx.review.sparse
    pred = ctx.predict(device, sp.model, scenario, {"batch": sp.batch, **overrides})
    level = device.hardware.main_memory
    seconds, nbytes = attention_per_step(pred, level)
    sc = ctx.scenario(scenario, overrides)
    budget = sc.attention.token_budget if sc.attention.kind != "dense" else 1.0
    return {"hardware": device.name, "scenario": scenario, "attention.kind": sc.attention.kind,
            "attention.token_budget": budget, "prompt_len": pred.summary["context"]["prompt_len"], TIME: seconds,
            BYTES: nbytes, "time_per_step_s": pred.summary["time_per_step_s"],
            "memory_fits": pred.summary["memory"]["fits"], "within_context": ctx.within_context(pred)}


def build(ctx: Context) -> Section:
    """Attention time and bytes against token budget (at one context) and against context (at one budget)."""
    sp = ctx.review.sparse
    at = sp.at_context or max(sp.context)
    budget_rows, ctx_rows, dense = [], [], {}
    for device in ctx.devices:
        for length in sorted(set(sp.context) | {at}):
            dense[(device.name, length)] = _row(ctx, device, sp.baseline, {"prompt_len": length})
        for scenario in sp.scenarios:
            for budget in sp.token_budget:
                budget_rows.append(_row(ctx, device, scenario,
                                        {"prompt_len": at, "attention.token_budget": budget}))
            for length in sp.context:
                ctx_rows.append(_row(ctx, device, scenario,
                                     {"prompt_len": length, "attention.token_budget": sp.at_budget}))
    by_budget, by_context = pd.DataFrame(budget_rows), pd.DataFrame(ctx_rows)
    dense_rows = pd.DataFrame(list(dense.values()))
    by_context_all = pd.concat([dense_rows[dense_rows.prompt_len.isin(sp.context)], by_context], ignore_index=True)
    level = ctx.devices[0].hardware.main_memory.upper()
    styles = series_styles([sp.baseline, *sp.scenarios])
    sparse_styles = {s: styles[s] for s in sp.scenarios}
    ls = ctx.device_linestyles

    def dense_lines(col: str) -> tuple:
        return tuple((dense[(d.name, at)][col], f"{sp.baseline} (dense) · {d.name}", ls[d.name])
                     for d in ctx.devices)

    fig_budget = plots.lines(
        [plots.Panel("attention time", by_budget, TIME, "attention time per step (s)",
                     hlines=dense_lines(TIME)),
         plots.Panel(f"attention {level} traffic", by_budget[by_budget.hardware == ctx.devices[0].name], BYTES,
                     f"attention {level} bytes per step (B)",
                     hlines=((dense[(ctx.devices[0].name, at)][BYTES], f"{sp.baseline} (dense)", "-"),))],
        "attention.token_budget", "token budget (fraction attended exactly)", "scenario", sparse_styles,
        "hardware", ls)
    fig_context = plots.lines(
        [plots.Panel("attention time", by_context_all, TIME, "attention time per step (s)"),
         plots.Panel(f"attention {level} traffic", by_context_all[by_context_all.hardware == ctx.devices[0].name],
                     BYTES, f"attention {level} bytes per step (B)")],
        "prompt_len", "prompt length (tokens)", "scenario", styles, "hardware", ls)
    sentences = []
    for device in ctx.devices:
        d = dense[(device.name, at)]
        for scenario in sp.scenarios:
            row = by_budget[(by_budget.hardware == device.name) & (by_budget.scenario == scenario)
                            & (by_budget["attention.token_budget"] == min(sp.token_budget))].iloc[0]
            sentences.append(
                f"On {device.name} at a {fmt(at)}-token prompt, {scenario} with a "
                f"{fmt(row['attention.token_budget'])} budget reads {fmt(row[BYTES])} B per step for attention "
                f"against {fmt(d[BYTES])} B dense, and takes {fmt(row[TIME])} s against {fmt(d[TIME])} s.")
    dpi = ctx.review.dpi
    figures = [
        Figure("sparse-budget", f"Attention time (left) and {level} traffic (right; the same on every device) per "
               f"decode step against the token budget at a {fmt(at)}-token prompt, batch {fmt(sp.batch)}; "
               f"horizontal lines: dense attention.", plots.to_png(fig_budget, dpi)),
        Figure("sparse-context", f"Attention time and {level} traffic per decode step against prompt length at a "
               f"{fmt(sp.at_budget)} token budget, with dense attention for comparison.",
               plots.to_png(fig_context, dpi)),
    ]
    paragraphs = [f"Model {sp.model}, batch {fmt(sp.batch)}. Attention here is every attention-class op of a step: "
                  f"exact attention, centroid lookup and attention, top-k and gathers.", *sentences]
    values = [TIME, BYTES]
    keys = ["hardware", "scenario"]
    tables = [Table("sparse_budget_summary", f"Attention time and traffic per step against token budget at a "
                    f"{fmt(at)}-token prompt", wide(by_budget, keys, "attention.token_budget", values)),
              Table("sparse_context_summary", f"Attention time and traffic per step against prompt length at a "
                    f"{fmt(sp.at_budget)} budget (dense: every key)",
                    wide(by_context_all, keys, "prompt_len", values)),
              Table("sparse_budget", "Every point of the budget sweep", by_budget, shown=0),
              Table("sparse_context", "Every point of the prompt-length sweep", by_context_all, shown=0)]
    return Section("sparse", "Sparse attention", paragraphs, figures, tables)
