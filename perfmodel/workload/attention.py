"""The attention part of a transformer block as ops: what a pass writes into the cache, then how it reads it.

A filing clerk's day: new papers (this pass's keys and values) are filed first, where the reader will look for
them, then the reader goes through the drawer. How the drawer is kept (the cache format) decides what filing and
reading cost; the attention variant decides how much of the drawer is read.

Writing (methods with a cache; vanilla DLM has none and reads its fresh keys and values where the QKV
projection left them):
- fp16/bf16/fp8: every computed token's K and V are copied into the cache in its format (``layer.kv_append``).
- int8/int4 (KIVI, Liu et al., arXiv:2402.02750): computed tokens go to the full-precision window in the
  activation dtype (``layer.kv_append``); whole groups of ``group_size`` tokens leave the window once it holds
  ``residual_window + group_size`` and are quantised (``layer.kv_quantize``), so that after n committed tokens
  Q(n) = max(⌊(n − R)/G⌋, 0)·G of them are quantised and the window holds between R and R + G − 1.
- XQuant (Tomar et al., arXiv:2508.10395): the committed tokens' X (or, for GQA, its SVD latents X·U_k, X·U_v,
  one more GEMM ``layer.xquant_latent``) is quantised (``layer.x_quantize``); XQuant-CL quantises the delta
  from the previous layer's reconstruction (``layer.xcl_delta``; layer 0 caches X itself). Unfused decode
  also copies the new token's K and V next to the rematerialised ones (``layer.kv_append``).

Reading: dense attention over the context (cached tokens at the cache's bits with their scales and
dequantisation, this pass's tokens as written); XQuant rematerialises the cached tokens' K and V first
(:func:`xquant_ops`); Squeezed / Multipole attention read a selection (:func:`sparse_ops`).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from perfmodel import ops
from perfmodel.ops import Op
from perfmodel.specs.model import bytes_per_element
from perfmodel.workload.params import Params, Structure
from perfmodel.workload.passes import Pass

QUANTISED_KV = ("int8", "int4")
XQUANT = ("xquant", "xquant-cl")


def quantised_tokens(n: Any, p: Params) -> Any:
    """KIVI: tokens stored quantised after n committed tokens, Q(n) = max(⌊(n − R)/G⌋, 0)·G (whole key groups,
    at least R = ``residual_window`` left in the window)."""
    return np.maximum(np.floor((np.asarray(n, dtype=float) - p.residual_window) / p.group_size), 0.0) * p.group_size


def newly_quantised(p: Params, ps: Pass) -> Any:
    """Tokens one instance of the pass group moves from the window to quantised storage, on average.

    Instance i of the group starts with cached_i = cached + (i − (count − 1)/2)·stride tokens and commits
    ``append``: it quantises Q(cached_i + append) − Q(cached_i). When the cache grows by ``append`` per
    instance (stride = append) the sum telescopes to Q(last + append) − Q(first): exact for the whole group.
    """
    count = np.asarray(ps.count, dtype=float)
    half = (count - 1.0) / 2.0 * ps.stride
    lo = ps.cached - half
    hi = ps.cached + half + ps.append
    grows = np.asarray(ps.stride == ps.append) | (count <= 1)
    total = np.where(grows, quantised_tokens(hi, p) - quantised_tokens(lo, p),
                     count * (quantised_tokens(ps.cached + ps.append, p) - quantised_tokens(ps.cached, p)))
    return np.where(count > 0, total / np.maximum(count, 1.0), 0.0)


def cached_width(s: Structure, p: Params, d: dict[str, Any]) -> Any:
    """Elements one token stores per layer in a quantised cache (before scales)."""
    if s.cache_format in QUANTISED_KV:
        return 2 * d["kv_dim"]
    if s.cache_format == "xquant" and s.latent == "svd":
        return 2 * d["kv_dim"]
    return p.hidden  # xquant (MHA) and xquant-cl cache X itself


def attention_ops(s: Structure, p: Params, ps: Pass, d: dict[str, Any]) -> list[Op]:
    """Cache writes, then the attention reads, of one group of passes (counts: per layer × ps.count)."""
    out = cache_write_ops(s, p, ps, d)
    if s.attention_kind != "dense" and ps.phase == "decode":
        # Sparse attention runs in ARM decode steps; the prompt's own prefill is dense (the scenario spec
        # rejects sparse attention for the diffusion methods).
        return out + sparse_ops(s, p, ps, d)
    return out + dense_ops(s, p, ps, d)


def cache_write_ops(s: Structure, p: Params, ps: Pass, d: dict[str, Any]) -> list[Op]:
    if s.method == "dlm":
        return []  # no cache: the attention reads the fresh K and V where the projection wrote them
    a = s.compute_dtype
    ab = bytes_per_element(a)
    b, phase, fmt = p.batch, ps.phase, s.cache_format
    c_layer = p.layers * ps.count
    kv_width = 2 * d["kv_dim"]

    def kv_append(tokens, element_bytes):
        # K and V of `tokens` tokens read in the activation dtype, written at the cache's bytes per element.
        return ops.elementwise("layer.kv_append", b * tokens, kv_width, a, inputs=1, outputs=element_bytes / ab,
                               flops_per_element=0, variant="copy", phase=phase, count=c_layer)

    if fmt in XQUANT:
        rows = b * ps.append
        out: list[Op] = []
        if fmt == "xquant-cl":
            # Layer l > 0 caches X_l − X̂_{l−1} (the running reconstruction of the layer below); layer 0 X itself.
            out.append(ops.elementwise("layer.xcl_delta", rows, p.hidden, a, inputs=2, outputs=1,
                                       flops_per_element=1, variant="sub", phase=phase,
                                       count=(p.layers - 1) * ps.count))
        elif s.latent == "svd":
            # The cached latents X·[U_k, U_v] of the committed tokens: one GEMM onto 2·kv_dim columns.
            out.append(ops.gemm("layer.xquant_latent", rows, kv_width, p.hidden, a, weight_dtype=s.weight_dtype,
                                phase=phase, count=c_layer))
        out.append(ops.quantize("layer.x_quantize", rows, cached_width(s, p, d), p.bits, p.group_size, a,
                                scale_bytes=p.scale_bytes, phase=phase, count=c_layer))
        if fmt == "xquant-cl":
            # The reconstruction X̂_l = X̂_{l−1} + dequant(Δ_l) of every token in the cache (cached + committed
            # now), kept in the activation dtype and read and written every layer; layer 0 only writes it.
            el_bytes = p.bits / 8.0 + p.scale_bytes / p.group_size
            acc_rows = b * (ps.cached + ps.append)
            out.append(ops.dequantize("layer.xcl_start", acc_rows, p.hidden, p.bits, p.group_size, a,
                                      scale_bytes=p.scale_bytes, phase=phase, count=ps.count))
            out.append(ops.elementwise("layer.xcl_accumulate", acc_rows, p.hidden, a, inputs=1 + el_bytes / ab,
                                       outputs=1, flops_per_element=3, variant="dequant_add", phase=phase,
                                       count=(p.layers - 1) * ps.count))
        if s.remat == "unfused" and phase == "decode":
            out.append(kv_append(ps.tokens, ab))
        return out
    if fmt in QUANTISED_KV:
        return [kv_append(ps.tokens, ab),
                ops.quantize("layer.kv_quantize", b * newly_quantised(p, ps), kv_width, p.bits, p.group_size, a,
                             scale_bytes=p.scale_bytes, phase=phase, count=c_layer)]
    return [kv_append(ps.tokens, p.bits / 8.0)]


def dense_ops(s: Structure, p: Params, ps: Pass, d: dict[str, Any]) -> list[Op]:
    a = s.compute_dtype
    fresh_bits = 8.0 * bytes_per_element(a)
    b, t, phase = p.batch, ps.tokens, ps.phase
    heads, kvh, hd = d["heads"], d["kv_heads"], p.head_dim
    c_layer = p.layers * ps.count
    kw = dict(mask=ps.mask, dtype=a, block_size=p.block_size, phase=phase, count=c_layer)
    fmt = s.cache_format
    if s.method == "dlm":
        return [ops.attention("layer.attention", b, t, ps.context, heads, kvh, hd, kv_bits=fresh_bits, **kw)]
    if fmt in QUANTISED_KV:
        # The tokens quantised before this pass at `bits` with a scale and zero per group, dequantised in the
        # kernel (x = code·s + z: 2 FLOPs per element); the window and this pass's tokens in the activation dtype.
        quant = quantised_tokens(ps.cached, p)
        kv_bits = (quant * p.bits + (ps.context - quant) * fresh_bits) / np.maximum(ps.context, 1e-30)
        scales = 2.0 * b * quant * d["kv_dim"] / p.group_size * p.scale_bytes
        dequant = 2.0 * 2.0 * b * quant * d["kv_dim"]
        return [ops.attention("layer.attention", b, t, ps.context, heads, kvh, hd, kv_bits=kv_bits,
                              kv_scale_bytes=scales, dequant_flops=dequant, **kw)]
    if fmt in XQUANT:
        if phase != "decode":  # prefill: every key is fresh
            return [ops.attention("layer.attention", b, t, ps.context, heads, kvh, hd, kv_bits=fresh_bits, **kw)]
        out = xquant_ops(s, p, ps, d)
        if s.remat == "fused":
            # Cached K/V arrive on chip from the rematerialisation; only the new tokens' K/V are read.
            out.append(ops.attention("layer.attention", b, t, ps.context, heads, kvh, hd, kv_bits=fresh_bits,
                                     kv_tokens_read=t, **kw))
        else:
            out.append(ops.attention("layer.attention", b, t, ps.context, heads, kvh, hd, kv_bits=fresh_bits, **kw))
        return out
    return [ops.attention("layer.attention", b, t, ps.context, heads, kvh, hd, kv_bits=p.bits, **kw)]


def xquant_ops(s: Structure, p: Params, ps: Pass, d: dict[str, Any]) -> list[Op]:
    """XQuant (Tomar et al., arXiv:2508.10395): K = X·Wk and V = X·Wv recomputed from the quantised X cache.

    MHA: one GEMM over the cached tokens, [tokens × hidden]·[hidden × 2·kv_dim]: 4·tokens·hidden·kv_dim FLOPs.
    GQA (SVD latents): X·U_k and X·U_v (kv_dim wide each) are cached; K = (X·U_k)·(Σ_k V_kᵀ), likewise V: two
    [tokens × kv_dim]·[kv_dim × kv_dim] GEMMs. XQuant-CL caches quantised deltas between consecutive layers'
    X: the rematerialisation reads the reconstruction X̂_l = X̂_{l−1} + dequant(Δ_l) that the cache writes keep
    in the activation dtype; it saves capacity, not bandwidth. ``remat`` fused: the GEMMs run inside the attention
    kernel and K, V never reach memory (``write=False``); unfused: they are written, then read by attention.
    """
    a = s.compute_dtype
    rows = p.batch * ps.cached
    el_bytes = p.bits / 8.0 + p.scale_bytes / p.group_size  # bytes per cached element, scales included
    phase = ps.phase
    write = s.remat == "unfused"
    c_layer = p.layers * ps.count
    out: list[Op] = []
    if s.cache_format == "xquant-cl":
        # From the reconstruction (the cache writes keep it, :func:`cache_write_ops`), in the activation dtype.
        out.append(ops.gemm("layer.xquant_remat", rows, 2 * d["kv_dim"], p.hidden, a, weight_dtype=s.weight_dtype,
                            write=write, phase=phase, count=c_layer))
    elif s.latent == "svd":
        out.append(ops.gemm("layer.xquant_remat", rows, d["kv_dim"], d["kv_dim"], a, a_bytes=el_bytes,
                            weight_dtype=s.weight_dtype, write=write, dequant_flops=2.0 * rows * d["kv_dim"],
                            phase=phase, count=2 * c_layer))
    else:
        out.append(ops.gemm("layer.xquant_remat", rows, 2 * d["kv_dim"], p.hidden, a, a_bytes=el_bytes,
                            weight_dtype=s.weight_dtype, write=write, dequant_flops=2.0 * rows * p.hidden,
                            phase=phase, count=c_layer))
    return out


def sparse_ops(s: Structure, p: Params, ps: Pass, d: dict[str, Any]) -> list[Op]:
    """Squeezed Attention (Hooper et al., arXiv:2411.09688) and Multipole Attention (arXiv:2506.13059).

    The prompt's keys are clustered once (k-means, C = ⌈centroid_ratio·prompt_len⌉ centroids per sequence and
    KV head; later tokens join their nearest centroid, so C stays). Each decode step: the new key joins its
    cluster (``layer.cluster_update``: one key per KV head against the C centroids, then a running mean);
    the queries are scored against the centroids (flat: all C; hierarchical: √C coarse centroids, then the
    fine ones under the kept coarse ones); every cached token takes its cluster's score and the best
    ``selected`` = min(⌈token_budget·context⌉, context) tokens are kept (``layer.topk``: a top-k over one
    int32 label per token and KV head, i.e. the best clusters whole and the last one cut); exact attention
    over them reads their keys and values through an index list (4 bytes per index). Multipole adds
    attention over all centroids (keys and values weighted by the size of the unselected rest of each
    cluster: one fp32 bias per centroid), merged by an online softmax.
    """
    a = s.compute_dtype
    fresh_bits = 8.0 * bytes_per_element(a)
    b, t, phase = p.batch, ps.tokens, ps.phase
    heads, kvh, hd = d["heads"], d["kv_heads"], p.head_dim
    ctx = ps.context
    c_layer = p.layers * ps.count
    C = np.maximum(np.ceil(p.centroid_ratio * p.prompt_len), 1)
    looked_up = np.sqrt(C) + p.token_budget * C if s.hierarchical else C
    selected = np.minimum(np.ceil(p.token_budget * ctx), ctx)
    kw = dict(phase=phase, count=c_layer)
    out: list[Op] = []
    if s.update_clusters:
        out.append(ops.centroid_lookup("layer.cluster_update", b, ps.append, kvh, kvh, C, hd, a, **kw))
    out += [ops.centroid_lookup("layer.centroid_lookup", b, t, heads, kvh, looked_up, hd, a, **kw),
            ops.topk("layer.topk", b * t * kvh, ctx, selected, **kw)]
    index_bytes = 4.0 * b * kvh * selected
    if s.cache_format in QUANTISED_KV:
        # Selected tokens are quantised in the proportion the cache is: their codes, group scales and dequant.
        frac = quantised_tokens(ps.cached, p) / np.maximum(ctx, 1e-30)
        kv_bits = frac * p.bits + (1.0 - frac) * fresh_bits
        scales = 2.0 * b * selected * frac * d["kv_dim"] / p.group_size * p.scale_bytes
        dequant = 2.0 * 2.0 * b * selected * frac * d["kv_dim"]
    else:
        kv_bits, scales, dequant = p.bits, 0.0, 0.0
    out.append(ops.attention("layer.attention", b, t, selected, heads, kvh, hd, mask="bidirectional", dtype=a,
                             kv_bits=kv_bits, kv_scale_bytes=index_bytes + scales, dequant_flops=dequant, **kw))
    if s.attention_kind == "multipole":
        # Centroid keys/values (activation dtype) plus one fp32 log(rest of the cluster) bias per centroid.
        out.append(ops.attention("layer.centroid_attention", b, t, C, heads, kvh, hd, mask="bidirectional",
                                 dtype=a, kv_bits=fresh_bits, kv_scale_bytes=4.0 * b * C * kvh, **kw))
    return out
