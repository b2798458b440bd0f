"""Numeric parameters of a workload, as plain numbers or NumPy arrays (one value per sweep point).

The builder reads every size through this record, never from the specs directly, so that one build can
cover a whole grid of batches, lengths, widths or bit-widths at once. Structural choices (method, cache
format, attention kind, model flags) are plain strings and booleans: a sweep groups points that share them.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from perfmodel.specs.model import Model
from perfmodel.specs.scenario import Scenario

NUMERIC_FIELDS = (
    "batch", "prompt_len", "gen_len", "steps", "block_size", "block_steps", "bits", "group_size", "scale_bytes",
    "residual_window", "token_budget", "centroid_ratio", "tp",
    "hidden", "layers", "heads", "kv_heads", "head_dim", "intermediate", "vocab",
)


@dataclass(frozen=True)
class Structure:
    """The non-numeric choices that decide which ops exist."""

    method: str
    cache_format: str
    attention_kind: str
    hierarchical: bool
    update_clusters: bool
    semi_autoregressive: bool
    commit_pass: bool
    latent: str  # 'x' or 'svd' (resolved from 'auto')
    remat: str  # xquant: 'fused' or 'unfused'
    truncate_suffix: bool
    gated_mlp: bool
    qkv_bias: bool
    qk_norm: bool
    tied: bool
    weight_dtype: str
    compute_dtype: str
    model_mask: str


@dataclass(frozen=True)
class Params:
    batch: Any
    prompt_len: Any
    gen_len: Any
    steps: Any
    block_size: Any
    block_steps: Any
    bits: Any
    group_size: Any
    scale_bytes: Any
    residual_window: Any
    token_budget: Any
    centroid_ratio: Any
    tp: Any
    hidden: Any
    layers: Any
    heads: Any
    kv_heads: Any
    head_dim: Any
    intermediate: Any
    vocab: Any
    kmeans_iterations: Any = 10
    prefill_chunk: Any = 8192

    def replace(self, **changes: Any) -> "Params":
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values.update(changes)
        return Params(**values)


def from_specs(model: Model, scenario: Scenario) -> tuple[Structure, Params]:
    """Scalar parameters and structure of one (model, scenario) pair."""
    kv = scenario.kv_cache
    latent = kv.latent
    if latent == "auto":
        latent = "x" if model.num_key_value_heads == model.num_attention_heads else "svd"
    structure = Structure(
        method=scenario.method, cache_format=kv.format, attention_kind=scenario.attention.kind,
        hierarchical=scenario.attention.hierarchical, update_clusters=scenario.attention.update_clusters,
        semi_autoregressive=scenario.semi_autoregressive, commit_pass=scenario.commit_pass, latent=latent,
        remat=kv.remat, truncate_suffix=scenario.truncate_suffix,
        gated_mlp=model.gated_mlp, qkv_bias=model.qkv_bias, qk_norm=model.qk_norm,
        tied=model.tie_word_embeddings, weight_dtype=scenario.weight_dtype, compute_dtype=scenario.compute_dtype,
        model_mask=model.attention_mask,
    )
    params = Params(
        batch=scenario.batch, prompt_len=scenario.prompt_len, gen_len=scenario.gen_len,
        steps=scenario.denoise_steps, block_size=scenario.block_size, block_steps=scenario.block_steps,
        bits=kv.effective_bits, group_size=kv.group_size, scale_bytes=kv.scale_bytes,
        residual_window=kv.residual_window, token_budget=scenario.attention.token_budget,
        centroid_ratio=scenario.attention.centroid_ratio, tp=scenario.tensor_parallel,
        hidden=model.hidden_size, layers=model.num_hidden_layers, heads=model.num_attention_heads,
        kv_heads=model.num_key_value_heads, head_dim=model.d_head, intermediate=model.intermediate_size,
        vocab=model.vocab_size, prefill_chunk=scenario.prefill_chunk,
    )
    return structure, params
