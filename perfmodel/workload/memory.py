"""Memory footprint of a workload on one device: weights, cache, activations."""
from __future__ import annotations

from typing import Any

import numpy as np

from perfmodel.specs.model import bytes_per_element
from perfmodel.workload.layers import cache_bytes_per_token_layer
from perfmodel.workload.params import Params, Structure
from perfmodel.workload.passes import Pass


def weight_bytes(s: Structure, p: Params) -> Any:
    """Parameters × bytes per weight (+ one fp16 scale per 128 weights when quantised), split over tp devices."""
    h, L = p.hidden, p.layers
    q_dim, kv_dim = p.heads * p.head_dim, p.kv_heads * p.head_dim
    layer = h * q_dim + 2 * h * kv_dim + q_dim * h + (3 if s.gated_mlp else 2) * h * p.intermediate + 2 * h
    if s.qkv_bias:
        layer = layer + q_dim + 2 * kv_dim
    params = p.vocab * h * (1 if s.tied else 2) + L * layer + h
    wb = bytes_per_element(s.weight_dtype)
    scales = params / 128 * 2.0 if s.weight_dtype in ("int8", "int4") else 0.0
    return (params * wb + scales) / p.tp


def cache_bytes(s: Structure, p: Params) -> Any:
    """Bytes of the cache at its largest (end of generation), per device.

    Methods without a cache (vanilla DLM) hold none. int8/int4 keep `residual_window` tokens in fp16.
    Squeezed/Multipole attention add their centroids (keys, and values for multipole) per sequence and KV head,
    ⌈centroid_ratio·prompt_len⌉ of them (the prompt is clustered once; later tokens join those clusters), and
    one int32 cluster label per token and KV head.
    """
    if s.method == "dlm":
        return 0.0 * p.batch
    tokens = p.prompt_len + p.gen_len
    per = cache_bytes_per_token_layer(s, p)
    kv_heads = np.maximum(p.kv_heads / p.tp, 1)
    if s.cache_format in ("int8", "int4"):
        window = np.minimum(p.residual_window, tokens)
        per_tokens = (tokens - window) * per + window * 2 * kv_heads * p.head_dim * 2.0
    else:
        per_tokens = tokens * per
    total = p.batch * p.layers * per_tokens
    if s.attention_kind != "dense":
        centroids = np.maximum(np.ceil(p.centroid_ratio * p.prompt_len), 1)
        per_centroid = kv_heads * p.head_dim * bytes_per_element(s.compute_dtype) * (2 if s.attention_kind == "multipole" else 1)
        labels = tokens * kv_heads * 4.0
        total = total + p.batch * p.layers * (centroids * per_centroid + labels)
    return total


def activation_bytes(s: Structure, p: Params, passes: list[Pass]) -> Any:
    """Peak live activations of the largest pass: one layer's hidden states, QKV and MLP intermediates, and the
    logits (fp32). Prefill passes hold only one chunk of ``prefill_chunk`` tokens at a time (chunked prefill);
    diffusion passes attend bidirectionally over the whole sequence and hold all of it."""
    a = bytes_per_element(s.compute_dtype)
    q_dim, kv_dim = p.heads * p.head_dim / p.tp, np.maximum(p.kv_heads / p.tp, 1) * p.head_dim
    peak = 0.0 * p.batch
    for ps in passes:
        rows = p.batch * ps.tokens
        if not ps.generation:
            rows = np.minimum(rows, p.prefill_chunk)
        per_row = (2 * p.hidden + q_dim + 2 * kv_dim + 3 * p.intermediate / p.tp) * a
        live = rows * per_row + p.batch * ps.logits * p.vocab / p.tp * 4.0
        peak = np.maximum(peak, np.where(np.asarray(ps.count) > 0, live, 0.0))
    return peak
