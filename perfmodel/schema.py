"""The output vocabulary: one name, one unit and one way of rounding for every quantity any command prints.

Think of it as the legend of a map series: every sheet (predict, compare, plan, sweep, report, the catalogs) draws
a quantity with the same symbol, so a reader who learnt ``time_per_step_s`` on one sheet finds it under that name
on every other. Each :class:`Quantity` has a name with its unit in it (SI base units, as everywhere inside the
package: seconds, bytes, FLOP, watts, joules; prices in US dollars), a kind (a number, a count, text or a yes/no
flag) and a one-line description. Tables and documents round through :func:`fmt`, the one place a number becomes
text; JSON carries full precision through :func:`json_value` (counts as integers, NaN and infinity as null).

:data:`COMMANDS` lists, per command, the fields it prints, in the order it prints them; ``docs/fields.md`` is
generated from this module by ``python docs/make_fields.py`` and a test checks that it is up to date. Some fields
come in families whose names are built from a stem (:data:`FAMILIES`): ``bound_fraction_<resource>``,
``<class>_time_per_step_s``, ``bytes_<level>``, ``efficiency.<field>`` and the ``--set`` keys a sweep varies.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any, Iterable, Literal, Mapping

Kind = Literal["number", "count", "text", "flag"]


@dataclass(frozen=True)
class Quantity:
    """One output field: its name (unit included), unit, kind and description."""

    name: str
    unit: str
    kind: Kind
    description: str


def _q(name: str, unit: str, description: str, kind: Kind = "number") -> Quantity:
    return Quantity(name, unit, kind, description)


_TEXT = [
    _q("hardware", "", "device name (catalog name, the `name` of a hardware YAML, or a derived device)", "text"),
    _q("model", "", "model name (catalog name or the `name` of a model YAML)", "text"),
    _q("scenario", "", "scenario name (catalog name or the `name` of a scenario YAML)", "text"),
    _q("method", "", "decoding method of the scenario (arm, dlm, block-dlm, ...)", "text"),
    _q("engine", "", "timing engine: analytic or event", "text"),
    _q("configuration", "", "label of a compared configuration of a review file (model + scenario + overrides)",
       "text"),
    _q("reference", "", "configuration a crossover is measured against", "text"),
    _q("dtype", "", "data type (bf16, fp16, fp8, fp32, ...)", "text"),
    _q("level", "", "memory level (l2, hbm, dram, ...)", "text"),
    _q("phase", "", "phase of an op: prefill, decode, denoise, ... (a step of the method)", "text"),
    _q("op", "", "op name (dotted, e.g. layer.attn.qkv_proj) or, in measurement tables, the op kind", "text"),
    _q("kind", "", "op kind (gemm, attention, norm, ...) or, for spec files, the spec kind", "text"),
    _q("shape", "", "shape parameters of one op (gemm: m, n, k; attention: batch, q_len, kv_len, heads, kv_heads, "
                    "head_dim, mask)", "text"),
    _q("variant", "", "variant of a norm or elementwise op (rmsnorm, silu_mul, ...)", "text"),
    _q("bound", "", "resource that bounds the time: compute, a memory level, launch (overhead), interconnect", "text"),
    _q("kv_cache.format", "", "KV-cache format (fp16, bf16, fp8, int8, int4): the scenario field", "text"),
    _q("attention.kind", "", "attention variant (dense, squeezed, multipole): the scenario field", "text"),
    _q("reason", "", "why a planned configuration meets the target or is rejected", "text"),
    _q("name", "", "catalog entry or spec name", "text"),
    _q("vendor", "", "device manufacturer", "text"),
    _q("unit_name", "", "what a compute unit is called (SM, CU, core)", "text"),
    _q("attention_mask", "", "causal or bidirectional (the model field)", "text"),
    _q("description", "", "one line describing a catalog entry", "text"),
    _q("file", "", "spec file a report read", "text"),
    _q("sha256", "", "first 12 hex digits of a file's SHA-256", "text"),
    _q("overrides", "", "dotted overrides applied to a spec", "text"),
    _q("key", "", "key of a spec's `sources` mapping", "text"),
    _q("source", "", "citation (document, URL) or the source of a measured row", "text"),
    _q("table", "", "measurement table a row was read from", "text"),
    _q("note", "", "how an efficiency block was obtained", "text"),
    _q("engine_details", "", "event engine only: per-op tiles, waves, occupancy, achieved bandwidth and "
                             "utilisation, and notes on the simulation (keys as perfmodel/engines/event.py names "
                             "them)", "text"),
]
_FLAGS = [
    _q("memory_fits", "", "weights + cache + activations fit the device's main memory", "flag"),
    _q("within_context", "", "prompt + generated tokens fit the model's max_position_embeddings (report: a "
                             "point beyond is left out)", "flag"),
    _q("ok", "", "the planned configuration meets every target", "flag"),
    _q("search_capped", "", "the largest-batch search stopped at the review's max_batch", "flag"),
    _q("causal", "", "causal attention mask (measurement tables)", "flag"),
]
_COUNTS = [
    _q("point", "", "index of a grid point, in grid order (sweep)", "count"),
    _q("batch", "sequences", "sequences decoded together", "count"),
    _q("prompt_len", "tokens", "prompt length per sequence", "count"),
    _q("gen_len", "tokens", "generated tokens per sequence", "count"),
    _q("steps", "passes", "generation passes (decode steps for ARM; denoising and cache-commit passes for "
                          "diffusion methods)", "count"),
    _q("denoising_steps", "passes", "denoising steps a diffusion method runs (cache-commit passes not counted)",
       "count"),
    _q("crossover_steps", "passes", "denoising steps below which a diffusion method beats the reference latency "
                                    "(straight-line fit)", "number"),
    _q("tensor_parallel", "GPUs", "GPUs one model replica is split across", "count"),
    _q("replicas", "replicas", "model replicas needed for a throughput target", "count"),
    _q("gpus", "GPUs", "GPUs in total (tensor_parallel x replicas), or devices needed by memory alone", "count"),
    _q("count", "instances", "instances of an op in the run", "count"),
    _q("ops", "ops", "ops counted (e.g. plotted in a roofline)", "count"),
    _q("rows", "rows", "measured rows", "count"),
    _q("max_batch", "sequences", "largest batch that fits the device", "count"),
    _q("tokens_held", "tokens", "tokens held in memory at max_batch: batch x (prompt_len + gen_len)", "count"),
    _q("kv_cache.bits", "bits", "bits per cached element (the scenario field; effective bits of the format)",
       "number"),
    _q("compute_units", "units", "SMs, CUs or CPU cores", "count"),
    _q("parameters", "parameters", "model parameters (embedding, blocks, final norm, LM head)", "count"),
    _q("num_hidden_layers", "layers", "transformer blocks (the model field)", "count"),
    _q("hidden_size", "elements", "model width (the model field)", "count"),
    _q("num_attention_heads", "heads", "query heads (the model field)", "count"),
    _q("num_key_value_heads", "heads", "key/value heads (the model field)", "count"),
    _q("intermediate_size", "elements", "MLP inner width (the model field)", "count"),
    _q("vocab_size", "tokens", "vocabulary size (the model field)", "count"),
    _q("m", "rows", "GEMM rows (measurement tables)", "count"),
    _q("n", "columns", "GEMM columns (measurement tables)", "count"),
    _q("k", "elements", "GEMM reduction length (measurement tables)", "count"),
    _q("q_len", "tokens", "query tokens per sequence of an attention call", "count"),
    _q("kv_len", "tokens", "keys per sequence of an attention call", "count"),
    _q("heads", "heads", "query heads of an attention call", "count"),
    _q("kv_heads", "heads", "key/value heads of an attention call", "count"),
    _q("head_dim", "elements", "head width of an attention call", "count"),
]
_TIMES = [
    _q("latency_s", "s", "end-to-end time of the request: prefill + generation"),
    _q("prefill_s", "s", "time of the prefill (the passes before generation)"),
    _q("decode_s", "s", "time of the generation passes"),
    _q("time_per_step_s", "s", "generation time per pass: decode_s / steps"),
    _q("tpot_s", "s", "time per output token of one sequence (ARM: one pass; diffusion: decode_s / gen_len)"),
    _q("ttft_s", "s", "time to first token: prefill, plus the passes until the first block is final"),
    _q("time_s", "s", "time of one instance of an op"),
    _q("total_time_s", "s", "time of an op over all its instances (time_s x count)"),
    _q("compute_s", "s", "compute term of an op: FLOPs over the attainable FLOP rate"),
    _q("measured_s", "s", "measured time of a kernel"),
    _q("predicted_s", "s", "predicted time of a measured kernel"),
    _q("min_s", "s", "shortest measured time of a group of rows"),
    _q("median_s", "s", "median measured time of a group of rows"),
    _q("max_s", "s", "longest measured time of a group of rows"),
    _q("reference_latency_s", "s", "latency of the reference configuration"),
    _q("latency_per_denoising_step_s", "s", "latency added by one more denoising step (slope of the "
                                            "straight-line fit)"),
    _q("fixed_latency_s", "s", "latency at zero denoising steps (intercept of the straight-line fit)"),
    _q("attention_time_per_step_s", "s", "time per generation pass of the attention-class ops (attention, "
                                         "centroid lookup, top-k, gathers)"),
]
_RATES = [
    _q("tokens_per_s", "tokens/s", "generated tokens per second of the whole batch (of every replica, in plan)"),
    _q("tokens_per_s_per_user", "tokens/s", "generated tokens per second of one sequence: 1 / tpot_s"),
    _q("achieved_flops_per_s", "FLOP/s", "FLOPs over predicted time"),
    _q("peak_flops", "FLOP/s", "dense tensor peak of the dtype (bf16 in listings)"),
    _q("measured_flops_per_s", "FLOP/s", "matmul rate measured by calibration"),
    _q("bandwidth_bytes_per_s", "B/s", "datasheet bandwidth of a memory level (main memory in listings)"),
    _q("measured_bandwidth_bytes_per_s", "B/s", "read bandwidth measured by calibration"),
]
_WORK = [
    _q("flops", "FLOP", "FLOPs: of the whole run (per GPU) in summaries and sweeps, of one instance in op rows"),
    _q("bytes", "B", "bytes read and written by one instance of an op"),
    _q("hbm_bytes", "B", "main-memory (HBM or DRAM) bytes of the whole run, per GPU"),
    _q("flops_per_step", "FLOP", "FLOPs per generation pass"),
    _q("hbm_bytes_per_step", "B", "main-memory bytes per generation pass"),
    _q("attention_hbm_bytes_per_step", "B", "main-memory bytes per generation pass of the attention-class ops"),
]
_RATIOS = [
    _q("arithmetic_intensity", "FLOP/B", "FLOPs per main-memory byte (generation passes in summaries)"),
    _q("ridge_point", "FLOP/B", "intensity at which the roofline turns from memory- to compute-bound"),
    _q("peak_fraction", "fraction", "achieved FLOP rate over the dtype's peak"),
    _q("latency_share", "fraction", "share of the latency spent in an op"),
    _q("speedup", "x", "time per step of the baseline over this configuration's"),
    _q("tokens_per_step", "tokens", "tokens finalised per denoising step at the crossover: gen_len / "
                                    "crossover_steps"),
    _q("ape_pct", "%", "absolute percentage error |predicted - measured| / measured"),
    _q("median_ape_pct", "%", "median absolute percentage error"),
    _q("p90_ape_pct", "%", "90th percentile of the absolute percentage error"),
    _q("spearman", "", "Spearman rank correlation of predicted and measured times"),
    _q("predicted_over_measured", "x", "median of predicted / measured"),
    _q("efficiency", "fraction", "achievable fraction of a peak (calibration)"),
    _q("attention.token_budget", "fraction", "fraction of the keys attended exactly (the scenario field)"),
]
_MEMORY = [
    _q("memory_weights_bytes", "B", "weights per GPU"),
    _q("memory_cache_bytes", "B", "KV (or X) cache per GPU"),
    _q("memory_activation_bytes", "B", "live activations per GPU"),
    _q("memory_total_bytes", "B", "weights + cache + activations per GPU"),
    _q("memory_capacity_bytes", "B", "main-memory capacity of one device"),
    _q("memory_limit_bytes", "B", "usable memory per GPU: the capacity or the plan's --memory-budget-gb"),
    _q("cache_bytes_per_token", "B", "cache bytes per cached token of one sequence, all layers"),
    _q("kv_bytes_per_token", "B", "bf16 KV-cache bytes per token, all layers (model listings)"),
    _q("capacity_bytes", "B", "capacity of a memory level (all units)"),
]
_ENERGY = [
    _q("tdp_w", "W", "datasheet thermal design power: the power model's cap"),
    _q("idle_w", "W", "idle board power of the power model (perfmodel/power.py)"),
    _q("power_w", "W", "mean board power per GPU over the run (perfmodel/power.py); empty without a tdp_w"),
    _q("energy_per_token_j", "J", "energy per generated token over all GPUs of a replica, prefill included: "
                                  "power_w x tensor_parallel / tokens_per_s"),
    _q("price_per_hour_usd", "USD/h", "rental price per GPU-hour (spec field, cited) times the GPUs used; empty "
                                      "where the spec has no price"),
    _q("cost_per_million_tokens_usd", "USD", "rental cost of a million generated tokens: price_per_hour_usd x "
                                             "tensor_parallel / 3600 / tokens_per_s x 1e6; empty without a price"),
]

QUANTITIES: dict[str, Quantity] = {q.name: q for q in
                                   [*_TEXT, *_FLAGS, *_COUNTS, *_TIMES, *_RATES, *_WORK, *_RATIOS, *_MEMORY, *_ENERGY]}

#: name pattern -> (unit, kind, description) of fields whose names are built from a stem
FAMILIES: dict[str, tuple[str, Kind, str]] = {
    "bound_fraction_<resource>": ("fraction", "number", "share of the generation time bounded by the resource"),
    "<class>_time_per_step_s": ("s", "number", "time per generation pass of one op class (gemm, attention, "
                                               "norm_elementwise, other)"),
    "bytes_<level>": ("B", "number", "bytes one instance of an op moves at a memory level"),
    "efficiency.<field>": ("", "number", "a field of a hardware spec's efficiency block, as written there "
                                         "(`perfmodel hardware show NAME`)"),
    "<parameter>": ("", "number", "a swept --set key (hardware.<path>, model.<field> or a scenario field), "
                                  "in its spec's unit"),
}
_PATTERNS = [(re.compile(r"^bound_fraction_\w+$"), "bound_fraction_<resource>"),
             (re.compile(r"^\w+_time_per_step_s$"), "<class>_time_per_step_s"),
             (re.compile(r"^bytes_\w+$"), "bytes_<level>"),
             (re.compile(r"^efficiency\.[\w.]+$"), "efficiency.<field>")]

#: fields of a prediction's summary (``perfmodel predict``, ``Prediction.record``)
SUMMARY = ("hardware", "model", "scenario", "method", "engine", "batch", "prompt_len", "gen_len", "tensor_parallel",
            "latency_s", "prefill_s", "decode_s", "time_per_step_s", "steps", "tokens_per_s", "flops", "hbm_bytes",
            "arithmetic_intensity", "bound", "bound_fraction_<resource>", "memory_weights_bytes",
            "memory_cache_bytes", "memory_activation_bytes", "memory_total_bytes", "memory_capacity_bytes",
            "memory_fits", "power_w", "energy_per_token_j", "price_per_hour_usd", "cost_per_million_tokens_usd")
#: fields of the rows of ``perfmodel predict``'s op table (JSON: the ``ops`` list)
OP_ROW = ("op", "phase", "kind", "count", "flops", "bytes", "arithmetic_intensity", "total_time_s", "latency_share",
          "bound")
#: fields of one predicted configuration in ``perfmodel compare``
COMPARE_ROW = ("hardware", "model", "scenario", "batch", "latency_s", "prefill_s", "time_per_step_s", "steps",
               "tokens_per_s", "arithmetic_intensity", "bound", "memory_total_bytes", "memory_fits",
               "energy_per_token_j", "cost_per_million_tokens_usd")
#: fields of one planned configuration in ``perfmodel plan``
PLAN_ROW = ("hardware", "gpus", "tensor_parallel", "replicas", "batch", "kv_cache.format", "tpot_s", "ttft_s",
            "tokens_per_s", "tokens_per_s_per_user", "memory_total_bytes", "memory_limit_bytes", "bound", "power_w",
            "energy_per_token_j", "price_per_hour_usd", "cost_per_million_tokens_usd", "ok", "reason")

#: command -> the fields it prints, in order (tables and JSON alike)
COMMANDS: dict[str, tuple[str, ...]] = {
    "predict": (*SUMMARY, *OP_ROW, "engine_details"),
    "op": ("kind", "shape", "dtype", "hardware", "engine", "time_s", "compute_s", "flops", "bytes",
           "arithmetic_intensity", "bound", "bytes_<level>", "engine_details"),
    "compare": COMPARE_ROW,
    "plan": PLAN_ROW,
    "sweep": ("point", "hardware", "model", "scenario", "method", "engine", "<parameter>", "batch", "prompt_len", "gen_len",
              "latency_s", "prefill_s", "decode_s", "tokens_per_s", "time_per_step_s", "steps", "flops",
              "hbm_bytes", "arithmetic_intensity", "bound", "memory_weights_bytes", "memory_cache_bytes",
              "memory_activation_bytes", "memory_total_bytes", "memory_capacity_bytes", "memory_fits",
              "bound_fraction_<resource>"),
    "report": ("hardware", "configuration", "model", "scenario", "dtype", "level", "phase", "op", "kind", "batch",
               "prompt_len", "gen_len", "steps", "ops", "peak_flops", "bandwidth_bytes_per_s", "ridge_point",
               "flops", "bytes", "flops_per_step", "hbm_bytes_per_step", "arithmetic_intensity", "time_s",
               "achieved_flops_per_s", "peak_fraction", "<class>_time_per_step_s", "time_per_step_s", "prefill_s",
               "latency_s", "tokens_per_s", "bound", "memory_total_bytes", "memory_fits", "within_context", "power_w",
               "energy_per_token_j", "cost_per_million_tokens_usd", "reference", "reference_latency_s",
               "fixed_latency_s", "denoising_steps", "latency_per_denoising_step_s", "crossover_steps", "tokens_per_step", "kv_cache.format", "kv_cache.bits",
               "cache_bytes_per_token", "memory_cache_bytes", "speedup", "attention.kind", "attention.token_budget",
               "attention_time_per_step_s", "attention_hbm_bytes_per_step", "max_batch", "tokens_held",
               "memory_capacity_bytes", "search_capped", "memory_weights_bytes", "memory_activation_bytes", "gpus",
               "rows", "median_ape_pct", "p90_ape_pct", "spearman", "predicted_over_measured", "measured_s",
               "predicted_s", "m", "n", "k", "q_len", "kv_len", "heads", "kv_heads", "head_dim", "causal", "variant",
               "source", "table", "name", "file", "sha256", "overrides", "key",
               "efficiency.<field>", "note"),
    "hardware list": ("name", "vendor", "compute_units", "unit_name", "peak_flops", "memory_capacity_bytes",
                      "bandwidth_bytes_per_s", "ridge_point", "tdp_w", "idle_w", "price_per_hour_usd"),
    "models list": ("name", "parameters", "num_hidden_layers", "hidden_size", "num_attention_heads",
                    "num_key_value_heads", "intermediate_size", "vocab_size", "attention_mask",
                    "kv_bytes_per_token"),
    "scenarios list": ("name", "method", "batch", "prompt_len", "gen_len", "kv_cache.format", "attention.kind",
                       "description"),
    "validate": ("op", "rows", "median_ape_pct", "p90_ape_pct", "spearman", "hardware", "m", "n", "k", "batch",
                 "q_len", "kv_len", "heads", "kv_heads", "head_dim", "measured_s", "predicted_s", "ape_pct",
                 "bound"),
    "import": ("hardware", "op", "dtype", "variant", "rows", "min_s", "median_s", "max_s"),
    "calibrate": ("level", "capacity_bytes", "measured_bandwidth_bytes_per_s", "bandwidth_bytes_per_s",
                  "efficiency", "dtype", "measured_flops_per_s", "peak_flops"),
}


def family(name: str) -> str | None:
    """The family pattern a built name belongs to (``bound_fraction_hbm`` -> ``bound_fraction_<resource>``)."""
    for pattern, key in _PATTERNS:
        if pattern.match(name):
            return key
    return None


def lookup(name: str) -> Quantity | None:
    """The quantity of an output column: a field, a member of a family, or None for a name the schema lacks.

    A column of a wide report table (``latency_s, batch=4``) is looked up by the field before the comma.
    """
    base = name.split(",", 1)[0].strip()
    if base in QUANTITIES:
        return QUANTITIES[base]
    key = family(base)
    if key is None:
        return None
    unit, kind, description = FAMILIES[key]
    return Quantity(base, unit, kind, description)


def quantity(name: str) -> Quantity:
    """The quantity called ``name``; a ``ValueError`` for a name that is not in the vocabulary."""
    found = lookup(name)
    if found is None:
        raise ValueError(f"output field {name!r}: not in the vocabulary (perfmodel/schema.py), expected one of "
                         f"docs/fields.md")
    return found


def fmt(value: Any) -> str:
    """A value as every table and document prints it: integers whole (a whole float too), other numbers to 4
    significant digits (fixed notation from 1e-3 to below 1e6, scientific otherwise), flags as yes/no, a missing
    or not-a-number value as "-"."""
    if value is None:
        return "-"
    if isinstance(value, bool) or type(value).__name__ == "bool_":
        return "yes" if bool(value) else "no"
    if isinstance(value, Integral):
        return str(int(value))
    if isinstance(value, Real):
        x = float(value)
        if math.isnan(x):
            return "-"
        if math.isinf(x):
            return "inf" if x > 0 else "-inf"
        if x == 0:
            return "0"
        if x.is_integer() and abs(x) < 1e6:
            return str(int(x))
        if 1e-3 <= abs(x) < 1e6:
            decimals = max(0, 3 - math.floor(math.log10(abs(x))))
            text = f"{x:.{decimals}f}"
            return text.rstrip("0").rstrip(".") if "." in text else text
        return f"{x:.3e}"
    return str(value)


def json_value(name: str, value: Any) -> Any:
    """``value`` of field ``name`` as JSON carries it: numpy scalars as Python numbers, a whole count as an
    integer, NaN and infinity as None (null)."""
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 0) == 0:
        value = value.item()
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        q = lookup(name)
        if q is not None and q.kind == "count" and value.is_integer():
            return int(value)
    return value


def record(values: Mapping[str, Any], names: Iterable[str] | None = None) -> dict[str, Any]:
    """A JSON-ready row: ``values`` (every key a field of the vocabulary) in the order of ``names`` (default:
    their own), each through :func:`json_value`."""
    keys = list(names) if names is not None else list(values)
    for key in keys:
        quantity(key)
    return {key: json_value(key, values.get(key)) for key in keys}


def markdown() -> str:
    """``docs/fields.md``: every field with its unit, kind and description, and which commands print it."""
    printed: dict[str, list[str]] = {}
    for command, names in COMMANDS.items():
        for name in dict.fromkeys(names):
            printed.setdefault(name, []).append(command)

    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    lines = ["# Output fields", "",
             "Generated by `python docs/make_fields.py` from `perfmodel/schema.py`; do not edit by hand.", "",
             "Every command prints a quantity under one name, in one unit, rounded one way: tables and reports show 4 "
             "significant digits (integers whole), JSON carries full precision (counts as integers, missing values "
             "as null). Units are SI (s, B, FLOP, W, J); prices in US dollars.", "",
             "| field | unit | kind | printed by | description |", "|---|---|---|---|---|"]
    for name, q in sorted(QUANTITIES.items()):
        lines.append(f"| `{name}` | {q.unit or '-'} | {q.kind} | {', '.join(printed.get(name, [])) or '-'} | "
                     f"{cell(q.description)} |")
    for pattern, (unit, kind, description) in FAMILIES.items():
        lines.append(f"| `{pattern}` | {unit or '-'} | {kind} | {', '.join(printed.get(pattern, [])) or '-'} | "
                     f"{cell(description)} |")
    lines += ["", "## Fields per command", ""]
    for command, names in COMMANDS.items():
        lines.append(f"- `perfmodel {command}`: " + ", ".join(f"`{n}`" for n in dict.fromkeys(names)))
    return "\n".join(lines) + "\n"
