"""KV quantisation and XQuant section: cache bytes per token and decode step time against context and bits.

Quantising the KV cache trades a little dequantisation work for fewer bytes read per step; XQuant trades more:
it caches the (quantised) layer input X and recomputes K = X·Wk and V = X·Wv every step. Whether those extra FLOPs
pay depends on the device's FLOP/byte ratio, so every curve is drawn for every device of the review.
"""
from __future__ import annotations

import pandas as pd

from perfmodel.report import plots
from perfmodel.report.context import Context, Device
from perfmodel.report.document import Figure, Section, Table, fmt, wide
from perfmodel.report.measures import cache_bytes_per_token
from perfmodel.report.style import series_styles


def _row(ctx: Context, device: Device, scenario: str, overrides: dict, baseline_ms: float | None) -> dict:
    q = ctx.review.quantisation
    pred = ctx.predict(device, q.model, scenario, {"batch": q.batch, **overrides})
    s, c = pred.summary, pred.summary["context"]
    cache = ctx.scenario(scenario, overrides).kv_cache
    step_ms = s["time_per_step_s"] * 1e3
    return {"device": device.name, "scenario": scenario, "cache": cache.format, "bits": cache.effective_bits,
            "batch": c["batch"], "prompt": c["prompt_len"], "cache per token (kB)": cache_bytes_per_token(pred) / 1e3,
            "cache (GB)": s["memory"]["cache_bytes"] / 1e9, "step (ms)": step_ms,
            "speedup vs baseline": (baseline_ms / step_ms) if baseline_ms else 1.0,
            "fits": s["memory"]["fits"]}


def _sweeps(ctx: Context) -> tuple[pd.DataFrame, pd.DataFrame, dict[tuple[str, int], float]]:
    q = ctx.review.quantisation
    at = q.at_context or max(q.context)
    rows, bit_rows, base = [], [], {}
    for device in ctx.devices:
        for length in sorted(set(q.context) | {at}):
            base[(device.name, length)] = _row(ctx, device, q.baseline, {"prompt_len": length}, None)["step (ms)"]
        for scenario in [q.baseline, *q.scenarios]:
            for length in q.context:
                rows.append(_row(ctx, device, scenario, {"prompt_len": length}, base[(device.name, length)]))
        for scenario in q.bits_scenarios:
            for bits in q.bits:
                bit_rows.append(_row(ctx, device, scenario, {"prompt_len": at, "kv_cache.bits": bits},
                                     base[(device.name, at)]))
    return pd.DataFrame(rows), pd.DataFrame(bit_rows), base


def _pays(ctx: Context, frame: pd.DataFrame) -> list[str]:
    """Per device and quantised scenario: the prompts at which it beats the baseline step, or its best speedup."""
    q = ctx.review.quantisation
    out = []
    for device in ctx.devices:
        hw = device.hardware
        parts = []
        for scenario in q.scenarios:
            sub = frame[(frame.device == device.name) & (frame.scenario == scenario)]
            wins = sub[sub["speedup vs baseline"] > 1]
            if len(wins):
                parts.append(f"{scenario} is faster from a {fmt(wins.prompt.min())}-token prompt "
                             f"(×{fmt(wins['speedup vs baseline'].max())} at best)")
            else:
                best = sub.loc[sub["speedup vs baseline"].idxmax()]
                parts.append(f"{scenario} is never faster (best ×{fmt(best['speedup vs baseline'])} at "
                             f"{fmt(best.prompt)} tokens)")
        out.append(f"On {device.name} (ridge {fmt(hw.ridge_point(ctx.review.dtype))} FLOP/byte), against "
                   f"{q.baseline} at batch {fmt(q.batch)}: " + "; ".join(parts) + ".")
    return out


def build(ctx: Context) -> Section:
    """Memory per token and step time against bits and context, and the speedup over the fp16 cache."""
    q = ctx.review.quantisation
    frame, bits, base = _sweeps(ctx)
    at = q.at_context or max(q.context)
    styles = series_styles([q.baseline, *q.scenarios, *q.bits_scenarios])
    bit_styles = {s: styles[s] for s in q.bits_scenarios}
    first = ctx.devices[0].name
    base_mem = frame[(frame.scenario == q.baseline) & (frame.device == first)]["cache per token (kB)"].iloc[0]
    ls = ctx.device_linestyles
    base_lines = tuple((base[(d.name, at)], f"{q.baseline} · {d.name}", ls[d.name]) for d in ctx.devices)
    fig_bits = plots.lines(
        [plots.Panel("cache per token (all layers)", bits[bits.device == first], "cache per token (kB)",
                     "cache bytes per token (kB)", hlines=((base_mem, f"{q.baseline}", "--"),)),
         plots.Panel(f"decode step at a {fmt(at)}-token prompt", bits, "step (ms)", "time per decode step (ms)",
                     hlines=base_lines)],
        "bits", "bits per cached element", "scenario", bit_styles, "device", ls)
    fig_ctx = plots.lines(
        [plots.Panel(d.name, frame[frame.device == d.name], "step (ms)", "time per decode step (ms)")
         for d in ctx.devices],
        "prompt", "prompt length (tokens)", "scenario", {s: styles[s] for s in [q.baseline, *q.scenarios]})
    fig_speed = plots.lines(
        [plots.Panel("speedup over the full-precision cache", frame[frame.scenario != q.baseline],
                     "speedup vs baseline", f"step-time speedup over {q.baseline} (×)", logy=False,
                     hlines=((1.0, "break-even", "-"),))],
        "prompt", "prompt length (tokens)", "scenario", {s: styles[s] for s in q.scenarios}, "device", ls)
    dpi = ctx.review.dpi
    figures = [
        Figure("quant-bits", f"Cache bytes per token (left; the same on every device) and decode step time at a "
               f"{fmt(at)}-token prompt (right) against bits per element; horizontal lines: {q.baseline}.",
               plots.to_png(fig_bits, dpi)),
        Figure("quant-context", f"Decode step time against prompt length at batch {fmt(q.batch)}, one panel per "
               f"device.", plots.to_png(fig_ctx, dpi)),
        Figure("quant-speedup", f"Step-time speedup of each quantised cache over {q.baseline}: above 1 the "
               f"smaller cache pays for its dequantisation or rematerialisation.", plots.to_png(fig_speed, dpi)),
    ]
    paragraphs = [f"Model {q.model}, batch {fmt(q.batch)}; cache bytes per token count every layer's cache for "
                  f"one token of one sequence, including quantisation scales and the full-precision window.",
                  *_pays(ctx, frame)]
    longest = frame[frame.prompt == max(q.context)]
    tables = [Table("quant_longest", f"At the longest prompt ({fmt(max(q.context))} tokens)", longest),
              Table("quant_bits_summary", f"Cache per token (kB) and decode step (ms) against bits at a {fmt(at)}-token "
                    f"prompt", wide(bits, ["device", "scenario"], "bits", "bits",
                                    {"cache per token (kB)": "kB/token", "step (ms)": "step ms"})),
              Table("quant_bits", "Every point of the bits sweep", bits, shown=0),
              Table("quant_context", "Against prompt length", frame, shown=0)]
    return Section("quantisation", "XQuant and KV-cache quantisation", paragraphs, figures, tables)
