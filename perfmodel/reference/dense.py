"""Attention with no cache (vanilla diffusion) and with a plain K/V cache (fp16/bf16 formats).

The shelf every other cache builds on: a K/V cache is a bookcase with one slot per position and layer; a pass
files the keys and values of every token it computes into their slots (``layer.kv_append``), then one attention
call reads slots 0..context−1. Without a cache (vanilla DLM) the attention reads the keys and values where the
QKV projection left them. fp16 and bf16 caches are kept in the activation dtype (the same bytes per element).
"""
from __future__ import annotations

import torch

from perfmodel.kernels.decode_attention import decode_attention
from perfmodel.kernels.kv_write import write_kv
from perfmodel.kernels.prefill_attention import prefill_attention
from perfmodel.reference.recorder import named
from perfmodel.reference.step import Step


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, step: Step, block_size: int) -> torch.Tensor:
    """softmax(q·kᵀ)·v for q [batch, tokens, heads, d] against k, v [batch, kv_heads, context, d]; returns
    [batch·tokens, heads·d] (what the output projection reads). One query per sequence: flash-decoding;
    more: flash attention with the pass's mask, written straight into the token-major output."""
    batch, tokens, heads, d = q.shape
    with named("layer.attention"):
        if tokens == 1:
            return decode_attention(q[:, 0], k, v).reshape(batch, heads * d)
        out = torch.empty(batch, tokens, heads, d, dtype=q.dtype, device=q.device)
        prefill_attention(q.permute(0, 2, 1, 3), k, v, mask=step.mask,
                          block_size=block_size if step.mask == "block_causal" else None,
                          out=out.permute(0, 2, 1, 3))
    return out.view(batch * tokens, heads * d)


def heads_first(x: torch.Tensor) -> torch.Tensor:
    """[batch, tokens, kv_heads, d] → [batch, kv_heads, tokens, d] (a view)."""
    return x.permute(0, 2, 1, 3)


class NoCache:
    """Vanilla DLM: every pass computes every position; nothing is kept between passes."""

    def __init__(self, block_size: int):
        self.block_size = block_size

    def attend(self, layer: int, step: Step, q, k, v, h) -> torch.Tensor:
        return attend(q, heads_first(k), heads_first(v), step, self.block_size)


class KVCache:
    """K and V [batch, kv_heads, capacity, d] per layer, in the activation dtype."""

    def __init__(self, layers: int, batch: int, kv_heads: int, capacity: int, head_dim: int, dtype, device,
                 block_size: int):
        shape = (batch, kv_heads, capacity, head_dim)
        self.k = [torch.empty(shape, dtype=dtype, device=device) for _ in range(layers)]
        self.v = [torch.empty(shape, dtype=dtype, device=device) for _ in range(layers)]
        self.block_size = block_size

    def write(self, layer: int, step: Step, k: torch.Tensor, v: torch.Tensor) -> None:
        with named("layer.kv_append"):
            write_kv(self.k[layer][:, :, step.start:step.end], self.v[layer][:, :, step.start:step.end],
                     heads_first(k), heads_first(v))

    def attend(self, layer: int, step: Step, q, k, v, h) -> torch.Tensor:
        self.write(layer, step, k, v)
        ctx = step.context
        return attend(q, self.k[layer][:, :, :ctx], self.v[layer][:, :, :ctx], step, self.block_size)
