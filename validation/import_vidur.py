"""Importer for vidur's per-operator profiles (microsoft/vidur, ``data/profiling/compute/<gpu>/<model>/mlp.csv``).

Each row of ``mlp.csv`` is one transformer block profiled at ``num_tokens`` tokens and
``num_tensor_parallel_workers`` (TP) ways, with ``time_stats.<op>.{min,max,mean,median,std}`` in milliseconds
(torch.profiler kernel durations summed per ``record_function`` region, 20 repetitions). The model shape comes
from the file's own columns (``n_head, n_kv_head, n_embd, n_expanded_embd, use_gated_mlp``; head_dim =
``n_embd / n_head``). The median becomes ``measured_s`` (option ``stat`` picks another statistic).

Operators, with T = num_tokens, H = n_embd, I = n_expanded_embd, d = head_dim, TP = tensor-parallel ways:

- ``attn_pre_proj`` (fused QKV): gemm m=T, k=H, n=(n_head + 2·n_kv_head)·d / TP
- ``attn_post_proj``: gemm m=T, n=H, k=n_head·d / TP
- ``mlp_up_proj`` (fused gate+up when gated): gemm m=T, k=H, n=2·I / TP (I / TP when not gated)
- ``mlp_down_proj``: gemm m=T, n=H, k=I / TP
- ``input_layernorm``, ``post_attention_layernorm``: norm ``rmsnorm``, m=T, n=H
- ``attn_rope``: elementwise ``rope`` on q and k, m=T, n=(n_head + n_kv_head)·d / TP
- ``mlp_act``: elementwise ``silu_mul`` (``gelu`` when not gated), m=T, n=I / TP (the output width)
- ``add``: elementwise ``add`` (residual), m=T, n=H
- ``emb``: ``embedding`` lookup, m=T, n=H

TP>1 rows are kept: they were measured on one GPU with the per-shard shapes above. The GPU folder is ``a100``
(→ ``a100-sxm-80gb``) or ``h100`` (→ ``h100-sxm``); vidur does not state the variant (SXM / PCIe, memory size),
which every row's ``source`` says. Precision is fp16. The times have 1 µs resolution, so the smallest ops
(2–5 µs) carry up to ±25 % rounding.
"""
from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from perfmodel.validation.importers import (
    concat_tables, dataset_label, find_inputs, gpu_from_path, keep_valid, require_columns,
)

DATASET = "vidur"
FILES = ("mlp.csv",)
GPU_NAMES = {"a100": "a100-sxm-80gb", "h100": "h100-sxm"}
SHAPE_COLUMNS = ("n_head", "n_kv_head", "n_embd", "n_expanded_embd", "use_gated_mlp", "num_tokens",
                 "num_tensor_parallel_workers")
OPERATORS = ("emb", "input_layernorm", "attn_pre_proj", "attn_rope", "attn_post_proj",
             "post_attention_layernorm", "mlp_up_proj", "mlp_act", "mlp_down_proj", "add")
STATS = ("min", "max", "mean", "median")


def _truthy(col: pd.Series) -> pd.Series:
    if pd.api.types.is_bool_dtype(col):
        return col.astype(bool)
    return col.astype(str).str.strip().str.lower().isin({"true", "1", "yes"})


def _shapes(op: str, t: pd.Series, df: pd.DataFrame) -> dict:
    tp = df["num_tensor_parallel_workers"]
    heads, kv_heads, hidden, inter = df["n_head"], df["n_kv_head"], df["n_embd"], df["n_expanded_embd"]
    head_dim = hidden // heads
    gated = _truthy(df["use_gated_mlp"])
    if op == "attn_pre_proj":
        return dict(op="gemm", m=t, k=hidden, n=(heads + 2 * kv_heads) * head_dim // tp)
    if op == "attn_post_proj":
        return dict(op="gemm", m=t, n=hidden, k=heads * head_dim // tp)
    if op == "mlp_up_proj":
        return dict(op="gemm", m=t, k=hidden, n=inter.where(~gated, 2 * inter) // tp)
    if op == "mlp_down_proj":
        return dict(op="gemm", m=t, n=hidden, k=inter // tp)
    if op in ("input_layernorm", "post_attention_layernorm"):
        return dict(op="norm", variant="rmsnorm", m=t, n=hidden)
    if op == "attn_rope":
        return dict(op="elementwise", variant="rope", m=t, n=(heads + kv_heads) * head_dim // tp)
    if op == "mlp_act":
        return dict(op="elementwise", variant=gated.map({True: "silu_mul", False: "gelu"}), m=t, n=inter // tp)
    if op == "add":
        return dict(op="elementwise", variant="add", m=t, n=hidden)
    return dict(op="embedding", variant="embedding", m=t, n=hidden)


def import_file(path: str | os.PathLike, *, stat: str = "median") -> pd.DataFrame:
    """One ``mlp.csv`` as measurement rows; rows without a valid time or shape are dropped and counted."""
    path = Path(path)
    if stat not in STATS:
        raise ValueError(f"vidur statistic {stat!r}: expected one of {', '.join(STATS)}")
    try:
        df = pd.read_csv(path)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise ValueError(f"{path}: not a readable CSV file ({exc})") from exc
    require_columns(df, SHAPE_COLUMNS, path, "vidur mlp.csv")
    present = [op for op in OPERATORS if f"time_stats.{op}.{stat}" in df.columns]
    if not present:
        raise ValueError(f"{path}: missing column 'time_stats.attn_pre_proj.{stat}', expected "
                         f"time_stats.<op>.{stat} columns for ops {', '.join(OPERATORS)}")
    for col in ("n_head", "n_kv_head", "n_embd", "n_expanded_embd", "num_tokens", "num_tensor_parallel_workers"):
        df[col] = pd.to_numeric(df[col], errors="coerce").astype("Int64")
    tp = df["num_tensor_parallel_workers"]
    uneven = ((df["n_embd"] % df["n_head"]) | (df["n_head"] % tp) | (df["n_kv_head"] % tp)
              | (df["n_expanded_embd"] % tp)).fillna(0) != 0  # rows with a blank are dropped below
    if uneven.any():
        raise ValueError(f"{path}: columns 'n_head', 'n_kv_head', 'n_embd', 'n_expanded_embd': shapes that do not "
                         f"split evenly over num_tensor_parallel_workers at row {uneven.idxmax()}, "
                         "expected n_embd % n_head == 0 and heads, kv heads and n_expanded_embd divisible by TP")

    hardware, start = gpu_from_path(path, GPU_NAMES, DATASET)
    label = dataset_label(path, DATASET, start)
    note = f"GPU variant not stated by vidur; taken as {hardware}"
    frames = []
    for op in present:
        cols = _shapes(op, df["num_tokens"], df)
        frame = pd.DataFrame({"hardware": hardware, "dtype": "fp16", **cols,
                              "measured_s": pd.to_numeric(df[f"time_stats.{op}.{stat}"], errors="coerce") / 1e3,
                              "source": label + f":{op} tp=" + tp.astype(str) + f" {stat} ({note})"})
        frames.append(frame)
    return keep_valid(pd.concat(frames, ignore_index=True), path)


def import_path(path: str | os.PathLike, *, stat: str = "median") -> pd.DataFrame:
    """Every ``mlp.csv`` at ``path`` (the file, or a folder searched recursively), normalized."""
    return concat_tables([import_file(f, stat=stat) for f in find_inputs(path, FILES, DATASET)])
