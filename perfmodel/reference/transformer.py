"""One forward pass of a Llama-style (causal, GQA, RoPE, SwiGLU, RMSNorm) or LLaDA-style (the same block,
bidirectional) transformer, built only from :mod:`perfmodel.kernels` calls.

An assembly line whose stations are kernels, in the order of :mod:`perfmodel.workload.layers`: embedding;
per layer RMSNorm → fused QKV projection (+bias) → (QK-norm) → RoPE on q and k → the cache's attention (writes,
then reads: :mod:`perfmodel.reference.dense`, ``kivi``, ``xcache``, ``sparse``) → output projection →
residual add → RMSNorm → gate/up projection → SiLU·mul → down projection → residual add; then, for the positions
whose logits the pass needs, the final RMSNorm, the LM head and greedy sampling. Every call is named as the
workload builder names its op, so a recorder sees the op list. Activations are [batch·tokens, hidden] rows,
sequence-major; q, k and v are views of the QKV output, never copied.
"""
from __future__ import annotations

import torch

from perfmodel.kernels.elementwise import residual_add, rmsnorm, rope, silu_mul
from perfmodel.kernels.embedding import embedding
from perfmodel.kernels.gemm import linear
from perfmodel.kernels.sampling import greedy
from perfmodel.reference.recorder import named
from perfmodel.reference.step import Step
from perfmodel.reference.weights import Weights
from perfmodel.specs.model import Model


def forward(model: Model, w: Weights, cache, step: Step, ids: torch.Tensor):
    """Run one pass over ids [batch, tokens] (the pass's computed positions); returns (token, confidence)
    [batch, logits] of its last ``step.logits`` positions, or None when it needs no logits."""
    batch, tokens = ids.shape
    heads, kv_heads, d = model.num_attention_heads, model.num_key_value_heads, model.d_head
    q_dim, kv_dim = heads * d, kv_heads * d
    with named("embed"):
        x = embedding(ids, w.embed).view(batch * tokens, -1)
    cos, sin = w.cos[step.start:step.end], w.sin[step.start:step.end]
    for layer, lw in enumerate(w.layers):
        with named("layer.attn_norm"):
            h = rmsnorm(x, lw.attn_norm)
        with named("layer.qkv_proj"):
            qkv = linear(h, lw.qkv, lw.qkv_bias)
        qk = qkv[:, :q_dim + kv_dim].view(batch, tokens, heads + kv_heads, d)
        if lw.q_norm is not None:
            # One RMSNorm over every query and key head (one weight shared by both; Qwen3 keeps one each).
            with named("layer.qk_norm"):
                qk = rmsnorm(qk, lw.q_norm)
        with named("layer.rope"):
            qk = rope(qk, cos, sin)
        q, k = qk[:, :, :heads], qk[:, :, heads:]
        v = qkv[:, q_dim + kv_dim:].view(batch, tokens, kv_heads, d)
        attn = cache.attend(layer, step, q, k, v, h)
        with named("layer.o_proj"):
            o = linear(attn, lw.o)
        with named("layer.attn_residual"):
            x = residual_add(x, o)
        with named("layer.mlp_norm"):
            h2 = rmsnorm(x, lw.mlp_norm)
        with named("layer.gate_up_proj"):
            gate_up = linear(h2, lw.gate_up)
        inter = gate_up.shape[1] // 2
        with named("layer.act"):
            act = silu_mul(gate_up[:, :inter], gate_up[:, inter:])
        with named("layer.down_proj"):
            down = linear(act, lw.down)
        with named("layer.mlp_residual"):
            x = residual_add(x, down)
    if step.logits == 0:
        return None
    last = x.view(batch, tokens, -1)[:, tokens - step.logits:]
    with named("final_norm"):
        last = rmsnorm(last, w.final_norm)
    with named("lm_head"):
        logits = linear(last, w.lm_head)
    with named("sample"):
        return greedy(logits)
