"""One forward pass as ops: a transformer block's kernels (× layers) plus embedding, final norm and LM head.

The block is the Llama/Qwen layout: RMSNorm → QKV projection (+bias) → (QK-norm) → RoPE → cache write →
attention → output projection → residual add → RMSNorm → gate/up projection → SiLU·mul → down projection →
residual add. The cache format and the attention variant change only the attention part of the block; with
tensor parallelism heads and MLP columns are split across devices and two all-reduces join each block.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from perfmodel import ops
from perfmodel.ops import Op
from perfmodel.workload.params import Params, Structure
from perfmodel.workload.passes import Pass


def _dims(p: Params) -> dict[str, Any]:
    tp = p.tp
    heads = p.heads / tp
    kv_heads = np.maximum(p.kv_heads / tp, 1)  # KV heads are replicated when there are fewer than devices
    return {"heads": heads, "kv_heads": kv_heads, "q_dim": heads * p.head_dim, "kv_dim": kv_heads * p.head_dim,
            "inter": p.intermediate / tp}


def pass_ops(s: Structure, p: Params, ps: Pass) -> list[Op]:
    """The ops of one group of passes; each op's count = instances per pass × ps.count."""
    d = _dims(p)
    a = s.compute_dtype
    wd = s.weight_dtype
    b, t = p.batch, ps.tokens
    rows = b * t
    L = p.layers
    phase = ps.phase
    c_layer = L * ps.count

    def w_scales(n, k):
        # Quantised weights (int8/int4) carry one fp16 scale per 128 weights.
        return n * k / 128 * 2.0 if wd in ("int8", "int4") else 0.0

    out: list[Op] = [ops.embedding("embed", rows, p.hidden, a, phase=phase, count=ps.count)]
    qkv_n = d["q_dim"] + 2 * d["kv_dim"]
    out += [
        ops.norm("layer.attn_norm", rows, p.hidden, a, phase=phase, count=c_layer),
        ops.gemm("layer.qkv_proj", rows, qkv_n, p.hidden, a, weight_dtype=wd, bias=s.qkv_bias, phase=phase,
                 count=c_layer, weight_scale_bytes=w_scales(qkv_n, p.hidden)),
    ]
    if s.qk_norm:
        out.append(ops.norm("layer.qk_norm", rows * (d["heads"] + d["kv_heads"]), p.head_dim, a, phase=phase,
                            count=c_layer))
    # RoPE reads q and k plus the cos and sin tables (head_dim/2 each per token): inputs = 1 + head_dim / width.
    rope_width = d["q_dim"] + d["kv_dim"]
    out.append(ops.elementwise("layer.rope", rows, rope_width, a, inputs=1 + p.head_dim / rope_width, outputs=1,
                               flops_per_element=3, variant="rope", phase=phase, count=c_layer))
    out += _attention_ops(s, p, ps, d, c_layer)
    out += [
        ops.gemm("layer.o_proj", rows, p.hidden, d["q_dim"], a, weight_dtype=wd, phase=phase, count=c_layer,
                 weight_scale_bytes=w_scales(p.hidden, d["q_dim"])),
        ops.elementwise("layer.attn_residual", rows, p.hidden, a, inputs=2, outputs=1, flops_per_element=1,
                        variant="add", phase=phase, count=c_layer),
        ops.norm("layer.mlp_norm", rows, p.hidden, a, phase=phase, count=c_layer),
    ]
    up_n = (2 if s.gated_mlp else 1) * d["inter"]
    out += [
        ops.gemm("layer.gate_up_proj", rows, up_n, p.hidden, a, weight_dtype=wd, phase=phase, count=c_layer,
                 weight_scale_bytes=w_scales(up_n, p.hidden)),
        ops.elementwise("layer.act", rows, d["inter"], a, inputs=2 if s.gated_mlp else 1, outputs=1,
                        flops_per_element=5, variant="silu_mul" if s.gated_mlp else "gelu", phase=phase,
                        count=c_layer),
        ops.gemm("layer.down_proj", rows, p.hidden, d["inter"], a, weight_dtype=wd, phase=phase, count=c_layer,
                 weight_scale_bytes=w_scales(p.hidden, d["inter"])),
        ops.elementwise("layer.mlp_residual", rows, p.hidden, a, inputs=2, outputs=1, flops_per_element=1,
                        variant="add", phase=phase, count=c_layer),
    ]
    if np.any(np.asarray(p.tp) > 1):
        # Megatron layout: one all-reduce after the attention output and one after the MLP output.
        out.append(ops.allreduce("layer.allreduce", rows * p.hidden, p.tp, a, phase=phase, count=2 * c_layer))
    # Logits: the LM head over the positions that need them, then sampling (softmax / argmax over the vocab).
    lrows = b * ps.logits
    out += [
        ops.norm("final_norm", lrows, p.hidden, a, phase=phase, count=ps.count),
        ops.gemm("lm_head", lrows, p.vocab / p.tp, p.hidden, a, weight_dtype=wd, phase=phase, count=ps.count,
                 weight_scale_bytes=w_scales(p.vocab / p.tp, p.hidden)),
        ops.elementwise("sample", lrows, p.vocab / p.tp, a, inputs=1, outputs=0, flops_per_element=5,
                        variant="softmax", phase=phase, count=ps.count),
    ]
    return out


def cache_bytes_per_token_layer(s: Structure, p: Params) -> Any:
    """Bytes one token occupies in one layer's cache (per device), scales included.

    fp16/bf16/fp8: 2·kv_dim·bits/8. int8/int4 (KIVI-style): 2·kv_dim·bits/8 + scales of every group.
    XQuant: X (hidden wide) at bits, or for GQA the SVD latents of K and V (2·kv_dim wide), + scales.
    XQuant-CL: the quantised delta of X from the previous layer (hidden wide) + scales.
    """
    d = _dims(p)
    fmt = s.cache_format
    if fmt in ("fp16", "bf16", "fp8"):
        return 2 * d["kv_dim"] * p.bits / 8.0
    width = _cached_width(s, p, d)
    return width * p.bits / 8.0 + width / p.group_size * p.scale_bytes


def _cached_width(s: Structure, p: Params, d: dict[str, Any]) -> Any:
    if s.cache_format in ("int8", "int4"):
        return 2 * d["kv_dim"]
    if s.cache_format == "xquant" and s.latent == "svd":
        return 2 * d["kv_dim"]
    return p.hidden  # xquant (MHA) and xquant-cl cache X itself


def _attention_ops(s: Structure, p: Params, ps: Pass, d: dict[str, Any], count: Any) -> list[Op]:
    a = s.compute_dtype
    b, t, phase = p.batch, ps.tokens, ps.phase
    heads, kvh, hd = d["heads"], d["kv_heads"], p.head_dim
    mask = ps.mask
    fmt = s.cache_format
    out: list[Op] = []
    kw = dict(mask=mask, dtype=a, block_size=p.block_size, phase=phase, count=count)

    # -- writing this pass's keys/values (or X) into the cache ----------------------------------------------
    if fmt in ("xquant", "xquant-cl"):
        width = _cached_width(s, p, d)
        out.append(ops.quantize("layer.x_quantize", b * ps.append, width, p.bits, p.group_size, a,
                                scale_bytes=p.scale_bytes, phase=phase, count=count))
    elif fmt in ("int8", "int4"):
        out.append(ops.quantize("layer.kv_quantize", b * ps.append, 2 * d["kv_dim"], p.bits, p.group_size, a,
                                scale_bytes=p.scale_bytes, phase=phase, count=count))
    else:
        out.append(ops.elementwise("layer.kv_append", b * ps.append, 2 * d["kv_dim"], a, inputs=1,
                                   outputs=p.bits / 16.0, flops_per_element=0, variant="copy", phase=phase,
                                   count=count))

    cached = ps.cached
    # -- sparse attention over the cache (decode passes only; prefill and block passes stay dense) ---------
    if s.attention_kind != "dense" and phase == "decode":
        return out + _sparse_attention_ops(s, p, ps, d, count)

    if fmt in ("int8", "int4"):
        # Keys per channel and values per token in groups; the newest `residual_window` tokens stay fp16.
        window = np.minimum(p.residual_window, cached)
        quant = cached - window
        fp_tokens = window + t
        kv_bits = (quant * p.bits + fp_tokens * 16.0) / np.maximum(ps.context, 1e-30)
        scales = 2.0 * b * quant * d["kv_dim"] / p.group_size * p.scale_bytes
        dequant = 2.0 * 2.0 * b * quant * d["kv_dim"]  # x = code·s + z on every cached K and V element
        out.append(ops.attention("layer.attention", b, t, ps.context, heads, kvh, hd, kv_bits=kv_bits,
                                 kv_scale_bytes=scales, dequant_flops=dequant, **kw))
    elif fmt in ("xquant", "xquant-cl"):
        out += _xquant_ops(s, p, ps, d, count)
        # Fused with the rematerialisation: cached K/V arrive on chip; only the new tokens' K/V are read.
        out.append(ops.attention("layer.attention", b, t, ps.context, heads, kvh, hd, kv_tokens_read=t, **kw))
    else:
        out.append(ops.attention("layer.attention", b, t, ps.context, heads, kvh, hd, kv_bits=p.bits, **kw))
    return out


def _xquant_ops(s: Structure, p: Params, ps: Pass, d: dict[str, Any], count: Any) -> list[Op]:
    """XQuant (Tomar et al., arXiv:2508.10395): K = X·Wk and V = X·Wv recomputed from the quantised X cache.

    MHA: one GEMM over the cached tokens, [tokens × hidden]·[hidden × 2·kv_dim]: 4·tokens·hidden·kv_dim FLOPs.
    GQA (SVD latents): X·U_k and X·U_v (kv_dim wide each) are cached; K = (X·U_k)·(Σ_k V_kᵀ), likewise V: two
    [tokens × kv_dim]·[kv_dim × kv_dim] GEMMs. XQuant-CL caches quantised deltas between consecutive layers'
    X: an accumulator X_l = X_{l-1} + Δ_l (kept in the activation dtype, read and written every layer) is
    updated before the same rematerialisation; it saves capacity, not bandwidth.
    """
    a = s.compute_dtype
    rows = p.batch * ps.cached
    el_bytes = p.bits / 8.0 + p.scale_bytes / p.group_size  # bytes per cached element, scales included
    phase = ps.phase
    out: list[Op] = []
    if s.cache_format == "xquant-cl":
        out.append(ops.elementwise("layer.xcl_accumulate", rows, p.hidden, a, inputs=1 + el_bytes / 2.0,
                                   outputs=1, flops_per_element=3, variant="dequant_add", phase=phase, count=count))
        out.append(ops.gemm("layer.xquant_remat", rows, 2 * d["kv_dim"], p.hidden, a, weight_dtype=s.weight_dtype,
                            write=False, phase=phase, count=count))
    elif s.latent == "svd":
        out.append(ops.gemm("layer.xquant_remat", rows, d["kv_dim"], d["kv_dim"], a, a_bytes=el_bytes,
                            weight_dtype=s.weight_dtype, write=False, dequant_flops=2.0 * rows * d["kv_dim"],
                            phase=phase, count=2 * count))
    else:
        out.append(ops.gemm("layer.xquant_remat", rows, 2 * d["kv_dim"], p.hidden, a, a_bytes=el_bytes,
                            weight_dtype=s.weight_dtype, write=False, dequant_flops=2.0 * rows * p.hidden,
                            phase=phase, count=count))
    return out


def _sparse_attention_ops(s: Structure, p: Params, ps: Pass, d: dict[str, Any], count: Any) -> list[Op]:
    """Squeezed Attention (Hooper et al., arXiv:2411.09688) and Multipole Attention (arXiv:2506.13059).

    Keys of the context are clustered offline (k-means, C = centroid_ratio·context centroids per KV head).
    Each decode step: score the queries against the centroids (flat: all C; hierarchical: √C coarse centroids,
    then the fine centroids under the kept coarse ones), keep the top clusters holding token_budget of the
    keys, gather their keys/values and attend exactly. Multipole adds attention over all centroids (keys and
    values weighted by cluster size) for the clusters not kept, merged by an online softmax.
    """
    a = s.compute_dtype
    b, t, phase = p.batch, ps.tokens, ps.phase
    heads, kvh, hd = d["heads"], d["kv_heads"], p.head_dim
    ctx = ps.context
    C = np.maximum(np.ceil(p.centroid_ratio * ctx), 1)
    kept_clusters = np.maximum(np.ceil(p.token_budget * C), 1)
    looked_up = np.sqrt(C) + p.token_budget * C if s.hierarchical else C
    selected = np.minimum(np.ceil(p.token_budget * ctx), ctx)
    out = [
        ops.centroid_lookup("layer.centroid_lookup", b, t, heads, kvh, looked_up, hd, a, phase=phase, count=count),
        ops.topk("layer.topk", b * t * kvh, looked_up, kept_clusters, phase=phase, count=count),
        # Exact attention over the gathered keys (flash-decoding over an index list: 4 bytes per index).
        ops.attention("layer.attention", b, t, selected, heads, kvh, hd, mask="bidirectional", dtype=a,
                      kv_bits=p.bits, kv_scale_bytes=4.0 * b * kvh * selected, phase=phase, count=count),
    ]
    if s.attention_kind == "multipole":
        # Centroid keys/values plus one fp32 log(cluster size) bias per centroid and KV head.
        out.append(ops.attention("layer.centroid_attention", b, t, C, heads, kvh, hd, mask="bidirectional",
                                 dtype=a, kv_scale_bytes=4.0 * C * kvh, phase=phase, count=count))
    if s.update_clusters:
        # The new token's key joins its nearest centroid: a lookup of one key per KV head + a running-mean update.
        out.append(ops.centroid_lookup("layer.cluster_update", b, ps.append, kvh, kvh, C, hd, a, phase=phase,
                                       count=count))
    return out
