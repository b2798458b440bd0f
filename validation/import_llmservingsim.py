"""Importer for LLMServingSim's per-layer profiles (casys-kaist/LLMServingSim,
``profiler/v0/perf_models/<GPU>/<model>/tp<N>/layers.csv``).

Columns ``layer_name, input, kv_cache, tp_size, latency(ns)``: the 15 layers of one Llama-3.1-8B block (plus
embedding, final norm and LM head) run through vLLM and timed with torch.profiler at ``input`` = 1..2048 new
tokens; nanoseconds become seconds. The GPU folder ``H100`` → ``h100-sxm`` (the form factor is not stated;
every row's ``source`` says so). Precision fp16. The model folder must be a known model (``MODELS``; only
``Llama-3.1-8B``: hidden 4096, 32 heads, 8 KV heads, head_dim 128, intermediate 14336, vocab 128256).

Layers, with T = input tokens, TP = tp_size; column-parallel layers divide n by TP, row-parallel ones k:

- ``q_proj`` / ``k_proj`` / ``v_proj``: gemm m=T, k=hidden, n=heads·d / TP (kv_heads·d / TP for k and v)
- ``o_proj``: gemm m=T, n=hidden, k=heads·d / TP
- ``gate_proj`` / ``up_proj``: gemm m=T, k=hidden, n=intermediate / TP; ``down_proj``: n=hidden,
  k=intermediate / TP
- ``lm_head``: gemm m=T, k=hidden, n=vocab / TP (its time grows linearly with T: logits of every token)
- ``attn``: attention, batch 1, q_len = T, kv_len = kv_cache + T, heads / TP, kv_heads / TP, causal. Every
  shipped row has kv_cache = 0, i.e. a prefill of T tokens with no cached prefix.
- ``input_layernorm`` / ``post_layernorm`` / ``final_layernorm``: norm ``rmsnorm``, m=T, n=hidden
- ``rope``: elementwise ``rope`` on q and k, m=T, n=(heads + kv_heads)·d / TP
- ``act_fn``: elementwise ``silu_mul``, m=T, n=intermediate / TP (the output width)
- ``embedding``: ``embedding`` lookup (vocab-parallel), m=T, n=hidden

These are layer times from the profiler, not single kernels: the norm, rope and embedding rows are ~10× slower
than one fused memory-bound kernel (e.g. RMSNorm of 2048×4096 takes ~150 µs), which points at unfused PyTorch
paths or several kernels per layer. Compare them with that in mind.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from perfmodel.validation.importers import (
    concat_tables, dataset_label, find_inputs, gpu_from_path, keep_valid, require_columns,
)

DATASET = "llmservingsim"
FILES = ("layers.csv",)
GPU_NAMES = {"H100": "h100-sxm"}
COLUMNS = ("layer_name", "input", "kv_cache", "tp_size", "latency(ns)")


@dataclass(frozen=True)
class ModelShape:
    """The dimensions the layer shapes are derived from."""

    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int


MODELS = {"Llama-3.1-8B": ModelShape(hidden=4096, heads=32, kv_heads=8, head_dim=128, intermediate=14336,
                                     vocab=128256)}
GEMMS = {  # layer: (n, k) as functions of (model, tp)
    "q_proj": (lambda s, tp: s.heads * s.head_dim // tp, lambda s, tp: s.hidden),
    "k_proj": (lambda s, tp: s.kv_heads * s.head_dim // tp, lambda s, tp: s.hidden),
    "v_proj": (lambda s, tp: s.kv_heads * s.head_dim // tp, lambda s, tp: s.hidden),
    "o_proj": (lambda s, tp: s.hidden, lambda s, tp: s.heads * s.head_dim // tp),
    "gate_proj": (lambda s, tp: s.intermediate // tp, lambda s, tp: s.hidden),
    "up_proj": (lambda s, tp: s.intermediate // tp, lambda s, tp: s.hidden),
    "down_proj": (lambda s, tp: s.hidden, lambda s, tp: s.intermediate // tp),
    "lm_head": (lambda s, tp: s.vocab // tp, lambda s, tp: s.hidden),
}
NORMS = ("input_layernorm", "post_layernorm", "final_layernorm")
LAYERS = tuple(GEMMS) + NORMS + ("attn", "rope", "act_fn", "embedding")


def _model(path: Path, model: ModelShape | None) -> tuple[str, ModelShape]:
    if model is not None:
        return "custom model", model
    for part in reversed(path.parts):
        if part in MODELS:
            return part, MODELS[part]
    raise ValueError(f"{path}: cannot tell the model, expected a folder named one of {', '.join(MODELS)} "
                     "in the path (or pass model=ModelShape(...))")


def _layer_rows(layer: str, rows: pd.DataFrame, s: ModelShape, tp: int) -> dict:
    t = rows["input"]
    if layer in GEMMS:
        n, k = GEMMS[layer]
        return dict(op="gemm", m=t, n=n(s, tp), k=k(s, tp))
    if layer in NORMS:
        return dict(op="norm", variant="rmsnorm", m=t, n=s.hidden)
    if layer == "attn":
        return dict(op="attention", batch=1, q_len=t, kv_len=rows["kv_cache"] + t, heads=s.heads // tp,
                    kv_heads=s.kv_heads // tp, head_dim=s.head_dim, causal=True)
    if layer == "rope":
        return dict(op="elementwise", variant="rope", m=t, n=(s.heads + s.kv_heads) * s.head_dim // tp)
    if layer == "act_fn":
        return dict(op="elementwise", variant="silu_mul", m=t, n=s.intermediate // tp)
    return dict(op="embedding", variant="embedding", m=t, n=s.hidden)


def import_file(path: str | os.PathLike, *, model: ModelShape | None = None) -> pd.DataFrame:
    """One ``layers.csv`` as measurement rows; rows without a valid time are dropped and counted."""
    path = Path(path)
    try:
        df = pd.read_csv(path, skipinitialspace=True)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise ValueError(f"{path}: not a readable CSV file ({exc})") from exc
    require_columns(df, COLUMNS, path, "LLMServingSim layers.csv")
    if df.empty:
        raise ValueError(f"{path}: no rows, expected one row per layer and input size")
    df["layer_name"] = df["layer_name"].astype(str).str.strip()
    unknown = sorted(set(df["layer_name"]) - set(LAYERS))
    if unknown:
        raise ValueError(f"{path}: column 'layer_name': unknown layer {unknown[0]!r}, expected one of "
                         f"{', '.join(LAYERS)}")
    df["latency(ns)"] = pd.to_numeric(df["latency(ns)"], errors="coerce")  # a blank time: dropped and counted
    for c in ("input", "kv_cache", "tp_size"):
        num = pd.to_numeric(df[c], errors="coerce")
        if num.isna().any():
            raise ValueError(f"{path}: column '{c}': non-numeric value at row {int(num.isna().idxmax())}, "
                             "expected a number")
        df[c] = num
    model_name, shape = _model(path, model)
    hardware, start = gpu_from_path(path, GPU_NAMES, DATASET)
    label = dataset_label(path, DATASET, start)
    frames = []
    for (layer, tp), rows in df.groupby(["layer_name", "tp_size"], sort=False):
        tp = int(tp)
        if tp < 1 or shape.heads % tp or shape.kv_heads % tp or shape.intermediate % tp or shape.vocab % tp:
            raise ValueError(f"{path}: column 'tp_size': {tp} does not split {model_name} evenly, expected a "
                             "divisor of its heads, KV heads, intermediate size and vocabulary")
        frame = pd.DataFrame({"hardware": hardware, "dtype": "fp16", **_layer_rows(layer, rows, shape, tp),
                              "measured_s": rows["latency(ns)"] / 1e9,
                              "source": f"{label}:{layer} tp={tp} (vLLM torch.profiler layer time; "
                                        f"H100 form factor not stated, taken as {hardware})"})
        frames.append(frame)
    return keep_valid(pd.concat(frames, ignore_index=True), path)


def import_path(path: str | os.PathLike, *, model: ModelShape | None = None) -> pd.DataFrame:
    """Every ``layers.csv`` at ``path`` (the file, or a folder searched recursively), normalized."""
    return concat_tables([import_file(f, model=model) for f in find_inputs(path, FILES, DATASET)])
