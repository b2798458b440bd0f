"""A KIVI cache that grows during decoding: a full-precision window and whole quantised groups.

A warehouse with a loading bay: new keys and values land in the bay (the window, activation dtype) and once the
bay holds ``residual + group`` tokens the oldest ``group`` of them are packed into crates (quantised, KIVI:
keys per channel, values per token, Liu et al., arXiv:2402.02750) and shelved, so the bay keeps between
``residual`` and ``residual + group − 1`` tokens. A pass first files its tokens in the bay, attends (decode:
the quantised crates dequantised in the kernel plus the bay; a prefill: its own fresh keys), then packs.

Buffers per layer, with room for ``capacity`` tokens: the window's backing store [batch, kv_heads, capacity, d]
(tokens stay where they were filed; the window is a moving view of it), key codes [batch, kv_heads, d,
capacity·bits/8] with scales [batch, kv_heads, d, capacity/group], value codes [batch, kv_heads, capacity,
d·bits/8] with scales [batch, kv_heads, capacity, d/group]. The decode kernel reads views of them.
"""
from __future__ import annotations

import torch

from perfmodel.kernels.groupquant import GroupQuant, packed_width
from perfmodel.kernels.quant_attention import QuantizedKV, quant_decode_attention, quantize_kv_into
from perfmodel.reference.dense import KVCache, attend
from perfmodel.reference.recorder import named
from perfmodel.reference.step import Step


class KIVICache(KVCache):
    def __init__(self, layers: int, batch: int, kv_heads: int, capacity: int, head_dim: int, dtype, device, *,
                 bits: int, group: int, residual: int, block_size: int):
        if head_dim % group or group < 16 or group & (group - 1):
            raise ValueError(f"kv_cache.group_size {group}: expected a power of two ≥ 16 dividing head_dim "
                             f"{head_dim} (the reference's KIVI kernels)")
        if bits not in (2, 4, 8):
            raise ValueError(f"kv_cache.bits {bits}: expected 2, 4 or 8 for int8/int4 caches in the reference")
        super().__init__(layers, batch, kv_heads, capacity, head_dim, dtype, device, block_size)
        u8, f16 = torch.uint8, torch.float16
        groups = -(-capacity // group)
        self.bits, self.group, self.residual = bits, group, residual
        self.quantised = [0] * layers
        self.kc = [torch.empty(batch, kv_heads, head_dim, packed_width(groups * group, bits), dtype=u8,
                               device=device) for _ in range(layers)]
        self.ks = [torch.empty(2, batch, kv_heads, head_dim, groups, dtype=f16, device=device) for _ in range(layers)]
        self.vc = [torch.empty(batch, kv_heads, groups * group, packed_width(head_dim, bits), dtype=u8,
                               device=device) for _ in range(layers)]
        self.vs = [torch.empty(2, batch, kv_heads, groups * group, head_dim // group, dtype=f16, device=device)
                   for _ in range(layers)]

    def _keys(self, layer: int, lo: int, hi: int) -> GroupQuant:
        b, g = self.bits, self.group
        s = self.ks[layer]
        return GroupQuant(self.kc[layer][..., packed_width(lo, b):packed_width(hi, b)], s[0, ..., lo // g:hi // g],
                          s[1, ..., lo // g:hi // g], b, g, hi - lo)

    def _values(self, layer: int, lo: int, hi: int) -> GroupQuant:
        s = self.vs[layer]
        return GroupQuant(self.vc[layer][:, :, lo:hi], s[0, :, :, lo:hi], s[1, :, :, lo:hi], self.bits, self.group,
                          self.kc[layer].shape[2])

    def attend(self, layer: int, step: Step, q, k, v, h) -> torch.Tensor:
        self.write(layer, step, k, v)
        ctx, n_q = step.context, self.quantised[layer]
        if q.shape[1] == 1:
            cache = QuantizedKV(self._keys(layer, 0, n_q), self._values(layer, 0, n_q),
                                self.k[layer][:, :, n_q:ctx], self.v[layer][:, :, n_q:ctx])
            with named("layer.attention"):
                out = quant_decode_attention(q[:, 0], cache).reshape(q.shape[0], -1)
        elif n_q == 0:
            out = attend(q, self.k[layer][:, :, :ctx], self.v[layer][:, :, :ctx], step, self.block_size)
        else:
            raise ValueError("the reference's KIVI cache attends several queries only before anything is quantised "
                             "(a prefill); expected method 'arm'")
        # Pack whole groups out of the window while it holds residual + group tokens or more.
        committed = step.cached + step.append
        hi = n_q
        while committed - hi >= self.residual + self.group:
            hi += self.group
        if hi > n_q:
            with named("layer.kv_quantize"):
                quantize_kv_into(self.k[layer][:, :, n_q:hi], self.v[layer][:, :, n_q:hi],
                                 self._keys(layer, n_q, hi), self._values(layer, n_q, hi))
            self.quantised[layer] = hi
        return out
