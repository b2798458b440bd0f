"""XQuant caches: the quantised layer input X (or its SVD latents, or XQuant-CL's deltas) and the
rematerialisation of K and V at every decode step, fused into the attention kernel or not.

A pantry that keeps flour, not bread (Tomar et al., arXiv:2508.10395): each layer files the quantised X of the
tokens a pass commits; at a decode step the cached tokens' K and V are baked again from it, either inside the
attention kernel (fused: :func:`perfmodel.kernels.xquant_attention.xquant_decode_attention`) or by a GEMM that
writes them next to the new token's own K and V before dense flash-decoding (unfused). Prefill attends to its
own fresh keys and values and only files X.

- ``x`` (MHA, or forced): X [tokens, hidden] quantised; K, V = X̂·[Wk; Wv]ᵀ with the rows of the fused QKV weight.
- ``svd`` (GQA): the latents X·[U_k, U_v] (one GEMM, ``layer.xquant_latent``) quantised [tokens, 2·kv_dim];
  K = latent_k·(Σ_k V_kᵀ), V likewise (:func:`perfmodel.kernels.xquant.svd_factors`, computed once).
- XQuant-CL: layer 0 files X_0, layer l > 0 the delta X_l − X̂_{l−1}; a reconstruction X̂ of every cached
  token is rebuilt layer by layer (layer 0 writes it, ``layer.xcl_start``; later layers add their deltas,
  ``layer.xcl_accumulate``), and K, V are rematerialised from it.

Rows are token-major (row = position·batch + sequence) so that the cached tokens of the whole batch are one
block of rows for one GEMM.
"""
from __future__ import annotations

import torch

from perfmodel.kernels.elementwise import subtract
from perfmodel.kernels.gemm import linear
from perfmodel.kernels.groupquant import GroupQuant, packed_width
from perfmodel.kernels.kv_write import write_kv
from perfmodel.kernels.xquant import accumulate_delta, dequant_matmul, dequantize_x, quantize_x_into, svd_factors
from perfmodel.kernels.decode_attention import decode_attention
from perfmodel.kernels.xquant_attention import xquant_decode_attention
from perfmodel.reference.dense import attend, heads_first
from perfmodel.reference.recorder import named
from perfmodel.reference.step import Step


def columns(qx: GroupQuant, lo: int, hi: int) -> GroupQuant:
    """Columns lo..hi−1 of a quantised matrix (multiples of the group size), as views."""
    b, g = qx.bits, qx.group_size
    return GroupQuant(qx.codes[:, packed_width(lo, b):packed_width(hi, b)], qx.scale[:, lo // g:hi // g],
                      qx.zero[:, lo // g:hi // g], b, g, hi - lo)


def svd_weights(weights, q_dim: int, kv_dim: int) -> tuple[list[torch.Tensor], list[tuple]]:
    """Per layer: the latent projection [U_kᵀ; U_vᵀ] [2·kv_dim, hidden] and the up factors (Σ_k V_kᵀ, Σ_v V_vᵀ),
    with Wkᵀ = U_k Σ_k V_kᵀ (:func:`perfmodel.kernels.xquant.svd_factors`, full rank)."""
    factors = [svd_factors(lw.qkv[q_dim:q_dim + kv_dim], lw.qkv[q_dim + kv_dim:]) for lw in weights.layers]
    return ([torch.cat([f.down_k, f.down_v]).contiguous() for f in factors],
            [(f.up_k, f.up_v) for f in factors])


class XCache:
    def __init__(self, weights, *, fmt: str, latent: str, remat: str, bits: int, group: int, batch: int,
                 capacity: int, kv_heads: int, head_dim: int, svd=None):
        layers = weights.layers
        dtype, device = weights.dtype, weights.device
        hidden = weights.embed.shape[1]
        self.kv_dim = kv_heads * head_dim
        self.q_dim = layers[0].qkv.shape[0] - 2 * self.kv_dim
        self.fmt, self.remat, self.batch = fmt, remat, batch
        self.latent = "x" if fmt == "xquant-cl" else latent
        self.width = 2 * self.kv_dim if self.latent == "svd" else hidden
        if (self.kv_dim if self.latent == "svd" else self.width) % group:
            raise ValueError(f"kv_cache.group_size {group}: expected a divisor of the cached width {self.width} "
                             f"(of kv_dim {self.kv_dim} for SVD latents, whose K and V halves are read apart)")
        rows = capacity * batch
        self.codes = [torch.empty(rows, packed_width(self.width, bits), dtype=torch.uint8, device=device)
                      for _ in layers]
        self.scales = [torch.empty(2, rows, self.width // group, dtype=torch.float16, device=device) for _ in layers]
        self.bits, self.group = bits, group
        self.kv_heads, self.head_dim = kv_heads, head_dim
        self.w = layers
        if self.latent == "svd":
            # Wkᵀ = U_k Σ_k V_kᵀ: the cached latent is X·U_k; K = latent·(Σ_k V_kᵀ) (likewise V).
            self.down, self.up = svd if svd is not None else svd_weights(weights, self.q_dim, self.kv_dim)
        if fmt == "xquant-cl":
            self.acc = torch.empty(rows, hidden, dtype=dtype, device=device)
        if remat == "unfused":
            self.kv = torch.empty(capacity, batch, 2 * self.kv_dim, dtype=dtype, device=device)

    def _x(self, layer: int, lo: int, hi: int) -> GroupQuant:
        b = self.batch
        s = self.scales[layer]
        return GroupQuant(self.codes[layer][lo * b:hi * b], s[0, lo * b:hi * b], s[1, lo * b:hi * b], self.bits,
                          self.group, self.width)

    def _weights(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.latent == "svd":
            return self.up[layer]
        qkv, q, kv = self.w[layer].qkv, self.q_dim, self.kv_dim
        return qkv[q:q + kv], qkv[q + kv:]

    def _file(self, layer: int, step: Step, h: torch.Tensor) -> None:
        """File the committed tokens' X (latents, or delta) and, for CL, bring the reconstruction to X̂_layer."""
        b, lo, hi = self.batch, step.start, step.start + step.append
        x = h.view(b, step.tokens, -1)[:, :step.append]
        if self.latent == "svd":
            with named("layer.xquant_latent"):
                x = linear(x, self.down[layer])
        if self.fmt == "xquant-cl" and layer > 0:
            acc_new = self.acc[lo * b:hi * b].view(step.append, b, -1).transpose(0, 1)
            with named("layer.xcl_delta"):
                x = subtract(x, acc_new)
        with named("layer.x_quantize"):
            quantize_x_into(x, self._x(layer, lo, hi))
        if self.fmt == "xquant-cl":
            rows = (step.cached + step.append) * b
            if layer == 0:
                with named("layer.xcl_start"):
                    dequantize_x(self._x(layer, 0, step.cached + step.append), out=self.acc[:rows])
            else:
                with named("layer.xcl_accumulate"):
                    accumulate_delta(self.acc[:rows], self._x(layer, 0, step.cached + step.append))

    def _sources(self, layer: int, n: int):
        """X rows of the first n tokens for K and for V."""
        if self.fmt == "xquant-cl":
            x = self.acc[:n * self.batch]
            return x, x
        x = self._x(layer, 0, n)
        if self.latent == "svd":
            return columns(x, 0, self.kv_dim), columns(x, self.kv_dim, 2 * self.kv_dim)
        return x, x

    def attend(self, layer: int, step: Step, q, k, v, h) -> torch.Tensor:
        self._file(layer, step, h)
        if step.cached == 0:  # prefill: every key is fresh
            return attend(q, heads_first(k), heads_first(v), step, 1)
        if q.shape[1] != 1:
            raise ValueError("the reference's XQuant cache decodes one token per step; expected method 'arm'")
        x_k, x_v = self._sources(layer, step.cached)
        w_k, w_v = self._weights(layer)
        batch, _, heads, d = q.shape
        if self.remat == "fused":
            parts = ("layer.xquant_remat",) * (2 if self.latent == "svd" else 1) + ("layer.attention",)
            with named(*parts):
                out = xquant_decode_attention(q[:, 0], heads_first(k), heads_first(v), x_k, w_k, x_v, w_v)
            return out.reshape(batch, heads * d)
        # Unfused: a GEMM writes the cached tokens' K and V, the new token's own follow, dense attention reads all.
        n, kvd = step.cached, self.kv_dim
        kv_rows = self.kv[:n].view(n * batch, 2 * kvd)
        with named("layer.xquant_remat"):
            if self.fmt == "xquant-cl":
                linear(x_k, self.w[layer].qkv[self.q_dim:], out=kv_rows)
            elif self.latent == "svd":
                dequant_matmul(x_k, w_k, out=kv_rows[:, :kvd])
            else:  # [Wk; Wv]: adjacent rows of the fused QKV weight
                dequant_matmul(x_k, self.w[layer].qkv[self.q_dim:], out=kv_rows)
        if self.latent == "svd" and self.fmt != "xquant-cl":
            with named("layer.xquant_remat"):
                dequant_matmul(x_v, w_v, out=kv_rows[:, kvd:])
        ctx = step.context
        keys = self.kv[:ctx, :, :kvd].reshape(ctx, batch, self.kv_heads, d).permute(1, 2, 0, 3)
        values = self.kv[:ctx, :, kvd:].reshape(ctx, batch, self.kv_heads, d).permute(1, 2, 0, 3)
        with named("layer.kv_append"):
            write_kv(keys[:, :, n:ctx], values[:, :, n:ctx], heads_first(k), heads_first(v))
        with named("layer.attention"):
            out = decode_attention(q[:, 0], keys, values)
        return out.reshape(batch, heads * d)
