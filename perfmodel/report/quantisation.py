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


def _row(ctx: Context, device: Device, scenario: str, overrides: dict, baseline_s: float | None) -> dict:
    q = ctx.review.quantisation
    pred = ctx.predict(device, q.model, scenario, {"batch": q.batch, **overrides})
    s, c = pred.summary, pred.summary["context"]
    cache = ctx.scenario(scenario, overrides).kv_cache
    step_s = s["time_per_step_s"]
    return {"hardware": device.name, "scenario": scenario, "kv_cache.format": cache.format,
            "kv_cache.bits": cache.effective_bits, "batch": c["batch"], "prompt_len": c["prompt_len"],
            "cache_bytes_per_token": cache_bytes_per_token(pred), "memory_cache_bytes": s["memory"]["cache_bytes"],
            "time_per_step_s": step_s, "speedup": (baseline_s / step_s) if baseline_s else 1.0,
            "memory_fits": s["memory"]["fits"], "within_context": ctx.within_context(pred),
            "energy_per_token_j": s["energy_per_token_j"]}


def _sweeps(ctx: Context) -> tuple[pd.DataFrame, pd.DataFrame, dict[tuple[str, int], float]]:
    q = ctx.review.quantisation
    at = q.at_context or max(q.context)
    rows, bit_rows, base = [], [], {}
    for device in ctx.devices:
        for length in sorted(set(q.context) | {at}):
            base[(device.name, length)] = _row(ctx, device, q.baseline, {"prompt_len": length}, None)["time_per_step_s"]
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
            sub = frame[(frame.hardware == device.name) & (frame.scenario == scenario)]
            wins = sub[sub["speedup"] > 1]
            if len(wins):
                parts.append(f"{scenario} is faster from a {fmt(wins.prompt_len.min())}-token prompt "
                             f"(×{fmt(wins['speedup'].max())} at best)")
            else:
                best = sub.loc[sub["speedup"].idxmax()]
                parts.append(f"{scenario} is never faster (best ×{fmt(best['speedup'])} at "
                             f"{fmt(best.prompt_len)} tokens)")
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
    base_mem = frame[(frame.scenario == q.baseline) & (frame.hardware == first)]["cache_bytes_per_token"].iloc[0]
    ls = ctx.device_linestyles
    base_lines = tuple((base[(d.name, at)], f"{q.baseline} · {d.name}", ls[d.name]) for d in ctx.devices)
    fig_bits = plots.lines(
        [plots.Panel("cache per token (all layers)", bits[bits.hardware == first], "cache_bytes_per_token",
                     "cache bytes per token (B)", hlines=((base_mem, f"{q.baseline}", "--"),)),
         plots.Panel(f"decode step at a {fmt(at)}-token prompt", bits, "time_per_step_s", "time per decode step (s)",
                     hlines=base_lines)],
        "kv_cache.bits", "bits per cached element", "scenario", bit_styles, "hardware", ls)
    fig_ctx = plots.lines(
        [plots.Panel(d.name, frame[frame.hardware == d.name], "time_per_step_s", "time per decode step (s)")
         for d in ctx.devices],
        "prompt_len", "prompt length (tokens)", "scenario", {s: styles[s] for s in [q.baseline, *q.scenarios]})
    fig_speed = plots.lines(
        [plots.Panel("speedup over the full-precision cache", frame[frame.scenario != q.baseline],
                     "speedup", f"step-time speedup over {q.baseline} (×)", logy=False,
                     hlines=((1.0, "break-even", "-"),))],
        "prompt_len", "prompt length (tokens)", "scenario", {s: styles[s] for s in q.scenarios}, "hardware", ls)
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
    longest = frame[frame.prompt_len == max(q.context)]
    tables = [Table("quant_longest", f"At the longest prompt ({fmt(max(q.context))} tokens)", longest),
              Table("quant_bits_summary", f"Cache bytes per token and decode step time against bits at a "
                    f"{fmt(at)}-token prompt", wide(bits, ["hardware", "scenario"], "kv_cache.bits",
                                                    ["cache_bytes_per_token", "time_per_step_s"])),
              Table("quant_bits", "Every point of the bits sweep", bits, shown=0),
              Table("quant_context", "Against prompt length", frame, shown=0)]
    return Section("quantisation", "XQuant and KV-cache quantisation", paragraphs, figures, tables)
