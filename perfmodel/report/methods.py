"""Method comparison section: ARM vs vanilla DLM vs block-wise diffusion over batch, context and denoising steps.

Latency and throughput of every compared configuration as the batch and the prompt grow, then the latency of each
diffusion method against its number of denoising steps, with the step count below which it beats the ARM
reference marked. A diffusion method's latency is affine in its step count (prefill and cache commits are fixed,
every step costs the same), so the crossover is read off a straight-line fit through the swept points.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from perfmodel.report import plots
from perfmodel.report.context import Context, Device
from perfmodel.report.document import Figure, Section, Table, fmt, wide
from perfmodel.report.review import MethodEntry

BLOCK_METHODS = ("block-dlm", "fast-dllm-prefix", "fast-dllm-dual")
VALUES = ["latency_s", "tokens_per_s"]


def _row(ctx: Context, device: Device, method: MethodEntry, overrides: dict) -> dict:
    pred = ctx.predict_method(device, method, overrides)
    s, c = pred.summary, pred.summary["context"]
    return {"hardware": device.name, "configuration": method.label, "batch": c["batch"],
            "prompt_len": c["prompt_len"], "gen_len": c["gen_len"], "steps": s["steps"], "latency_s": s["latency_s"],
            "tokens_per_s": s["tokens_per_s"], "time_per_step_s": s["time_per_step_s"],
            "memory_total_bytes": s["memory"]["total_bytes"], "memory_fits": s["memory"]["fits"],
            "within_context": ctx.within_context(pred), "bound": s["bound"],
            "energy_per_token_j": s["energy_per_token_j"], "cost_per_million_tokens_usd": s["cost_per_million_tokens_usd"]}


def _sweep(ctx: Context, key: str, values: list[int]) -> pd.DataFrame:
    return pd.DataFrame([_row(ctx, d, m, {key: v}) for d in ctx.devices for m in ctx.review.methods for v in values])


def _usable(frame: pd.DataFrame) -> pd.Series:
    """Points shown: they fit the device's memory and the model's context."""
    return frame.memory_fits & frame.within_context


def _sweep_figure(ctx: Context, frame: pd.DataFrame, x: str, xlabel: str):
    fits = frame[_usable(frame)]
    panels = [plots.Panel("latency", fits, "latency_s", "end-to-end latency (s)"),
              plots.Panel("throughput", fits, "tokens_per_s", "throughput (tokens/s)")]
    return plots.lines(panels, x, xlabel, "configuration", ctx.method_styles, "hardware", ctx.device_linestyles)


def steps_overrides(kind: str, steps: int, gen_len: int, block_size: int) -> tuple[dict, int]:
    """Overrides that give a diffusion method about ``steps`` denoising steps, and the steps it then runs.

    Vanilla DLM: ``steps`` directly. Block-wise methods: ``steps_per_block`` = steps × block / gen_len (at least 1)
    over ⌈gen_len / block⌉ blocks.
    """
    if kind in BLOCK_METHODS:
        blocks = math.ceil(gen_len / block_size)
        per_block = max(1, round(steps / blocks))
        return {"steps_per_block": per_block}, per_block * blocks
    return {"steps": steps}, steps


def _crossover(steps: np.ndarray, latency: np.ndarray, reference: float) -> tuple[float, float, float]:
    """(steps at which the affine fit of latency meets ``reference`` (nan if never at ≥ 1 step), intercept (s),
    slope (s per step))."""
    slope, intercept = np.polyfit(steps, latency, 1)
    intercept = round(float(intercept), 9)  # to the nanosecond: below that it is rounding residue of the fit
    if slope <= 0:
        return float("nan"), float(intercept), float(slope)
    cross = (reference - intercept) / slope
    return (float(cross) if cross >= 1 else float("nan")), float(intercept), float(slope)


def _steps_part(ctx: Context) -> tuple[list[str], Figure | None, list[Table]]:
    diffusion = [m for m in ctx.review.methods if ctx.method_kind(m) != "arm"]
    arm = next((m for m in ctx.review.methods if ctx.method_kind(m) == "arm"), None)
    if not diffusion:
        return ["No diffusion method is compared, so there is no denoising-steps sweep."], None, []
    rows, cross_rows, panels, sentences = [], [], [], []
    for device in ctx.devices:
        reference = ctx.predict_method(device, arm).summary["latency_s"] if arm else None
        dev_rows, marks, extra = [], [], []
        for method in diffusion:
            sc = ctx.scenario(method.scenario, method.set)
            seen = set()
            for requested in ctx.review.sweeps.steps:
                overrides, actual = steps_overrides(sc.method, requested, sc.gen_len, sc.block_size)
                if actual in seen:
                    continue
                seen.add(actual)
                row = _row(ctx, device, method, overrides)
                row["denoising_steps"] = actual
                dev_rows.append(row)
            if reference is None:
                continue
            mine = pd.DataFrame([r for r in dev_rows if r["configuration"] == method.label])
            if len(mine) < 2:
                sentences.append(f"{method.label}: the steps sweep gives fewer than two distinct step counts, so "
                                 f"there is no crossover to find.")
                continue
            cross, intercept, slope = _crossover(mine["denoising_steps"].to_numpy(float),
                                                 mine["latency_s"].to_numpy(float), reference)
            cross_rows.append({"hardware": device.name, "configuration": method.label, "reference": arm.label,
                               "reference_latency_s": reference, "fixed_latency_s": intercept,
                               "latency_per_denoising_step_s": slope, "crossover_steps": cross,
                               "tokens_per_step": sc.gen_len / cross})
            if not math.isnan(cross):
                marks.append((cross, reference, f"{method.label}: {fmt(cross)}"))
                extra.append(cross)
                sentences.append(f"On {device.name}, {method.label} is faster than {arm.label} below "
                                 f"{fmt(cross)} denoising steps ({fmt(sc.gen_len / cross)} tokens per step).")
            else:
                sentences.append(f"On {device.name}, {method.label} is slower than {arm.label} at any step count "
                                 f"(fixed cost {fmt(intercept)} s against {fmt(reference)} s).")
        rows += dev_rows
        hlines = ((reference, f"{arm.label} latency", "--"),) if reference is not None else ()
        panels.append(plots.Panel(device.name, pd.DataFrame(dev_rows), "latency_s", "end-to-end latency (s)",
                                  hlines=hlines, marks=tuple(marks), extra_x=tuple(extra)))
    diff_styles = {m.label: ctx.method_styles[m.label] for m in diffusion}
    fig = plots.lines(panels, "denoising_steps", "denoising steps per answer", "configuration", diff_styles)
    caption = ("Latency of each diffusion method against its number of denoising steps"
               + (f"; the dashed line is {arm.label} and the star marks the crossover." if arm else "."))
    tables = [Table("methods_steps", "Latency against denoising steps", pd.DataFrame(rows), shown=0)]
    if cross_rows:
        tables.insert(0, Table("methods_crossover", f"Crossover against {arm.label}", pd.DataFrame(cross_rows)))
    return sentences, Figure("methods-steps", caption, plots.to_png(fig, ctx.review.dpi)), tables


def build(ctx: Context) -> Section:
    """Batch and context sweeps of every method, and the denoising-steps sweep with its crossover."""
    sweeps = ctx.review.sweeps
    batch = _sweep(ctx, "batch", sweeps.batch)
    context = _sweep(ctx, "prompt_len", sweeps.context)
    figures = [
        Figure("methods-batch", "Latency and throughput against batch size (log-log); points that do not fit the "
               "device's memory are left out (a dash in the table).",
               plots.to_png(_sweep_figure(ctx, batch, "batch", "batch (sequences)"), ctx.review.dpi)),
        Figure("methods-context", "Latency and throughput against prompt length (log-log); points that do not "
               "fit are left out.",
               plots.to_png(_sweep_figure(ctx, context, "prompt_len", "prompt length (tokens)"), ctx.review.dpi)),
    ]
    steps_text, steps_fig, steps_tables = _steps_part(ctx)
    if steps_fig is not None:
        figures.append(steps_fig)
    top = batch[_usable(batch)].sort_values("tokens_per_s", ascending=False).head(1)
    paragraphs = ["Each method runs its own model and scenario; only the swept field changes."]
    if len(top):
        best = top.iloc[0]
        paragraphs.append(f"The highest throughput in the batch sweep is {best.configuration} on {best.hardware} at "
                          f"batch {fmt(best.batch)}: {fmt(best['tokens_per_s'])} tokens/s.")
    paragraphs += steps_text
    big = max(sweeps.context)
    at_big = context[(context.prompt_len == big) & _usable(context)]
    if len(at_big):
        quick = at_big.loc[at_big["latency_s"].idxmin()]
        paragraphs.append(f"At a {fmt(big)}-token prompt the lowest latency is {quick.configuration} on "
                          f"{quick.hardware}: {fmt(quick['latency_s'])} s.")
    keys = ["hardware", "configuration"]
    out = pd.concat([batch, context])
    out = out[~out.within_context]
    if len(out):
        paragraphs.append(
            f"Points beyond a model's longest context are left out ({', '.join(dict.fromkeys(out.configuration))}: "
            + "; ".join(f"{m} supports {fmt(n)} tokens" for m, n in ctx.beyond_context.items())
            + "); the model was not trained for them, so its cost there answers no real question.")
    tables = [Table("methods_batch_summary", "Latency and throughput against batch size (dash: does not fit the "
                    "memory or the model's context)", wide(batch, keys, "batch", VALUES, _usable(batch))),
              Table("methods_context_summary", "Latency and throughput against prompt length (dash: does not fit "
                    "the memory or the model's context)", wide(context, keys, "prompt_len", VALUES,
                                                               _usable(context))),
              Table("methods_batch", "Every point of the batch sweep", batch, shown=0),
              Table("methods_context", "Every point of the prompt-length sweep", context, shown=0), *steps_tables]
    return Section("methods", "ARM vs DLM vs block-wise diffusion", paragraphs, figures, tables)
