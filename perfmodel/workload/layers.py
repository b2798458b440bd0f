"""One forward pass as ops: a transformer block's kernels (× layers) plus embedding, final norm and LM head.

The block is the Llama/Qwen layout: RMSNorm → QKV projection (+bias) → (QK-norm) → RoPE → cache write →
attention → output projection → residual add → RMSNorm → gate/up projection → SiLU·mul → down projection →
residual add. The cache format and the attention variant change only the attention part of the block
(:mod:`perfmodel.workload.attention`); with tensor parallelism heads and MLP columns are split across devices
and two all-reduces join each block.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from perfmodel import ops
from perfmodel.ops import Op
from perfmodel.workload.attention import attention_ops, cached_width
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
    out += attention_ops(s, p, ps, d)
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
    # A pass that produces none (a block commit, a block-causal prefill) runs no LM head at all.
    if isinstance(ps.logits, (int, float)) and ps.logits == 0:
        return out
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
    width = cached_width(s, p, d)
    return width * p.bits / 8.0 + width / p.group_size * p.scale_bytes
