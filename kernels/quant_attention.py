"""KIVI-style KV-cache quantisation and decode attention that dequantises inside the kernel.

Picture a photo archive that keeps this week's pictures as full-resolution prints and files everything older as
compressed copies: recent tokens stay exact because the next queries attend to them most, older ones are stored
in a few bits. KIVI (Liu et al., "KIVI: A Tuning-Free Asymmetric 2bit Quantization for KV Cache", ICML 2024,
arXiv:2402.02750) found that keys have outlier *channels* and values do not, so:

- keys are quantised per channel: each group is ``group_size`` consecutive tokens of one channel;
- values are quantised per token: each group is ``group_size`` consecutive channels of one token;
- the newest tokens stay in full precision: quantisation happens in whole key groups, so the
  ``residual``-token window holds between ``residual`` and ``residual + group_size − 1`` tokens
  (:func:`quantized_length`);
- ``group_size`` is a power of two ≥ 16 (KIVI uses 32–128): the decode kernel reads keys one group of tokens
  at a time.

Storage (:class:`QuantizedKV`): key codes [batch, kv_heads, head_dim, ⌈T_q·bits/8⌉] (a packed row per channel)
with scale/zero [batch, kv_heads, head_dim, T_q/group_size]; value codes [batch, kv_heads, T_q, ⌈d·bits/8⌉]
with scale/zero [batch, kv_heads, T_q, d/group_size]; scales and zeros fp16 (4 bytes per group); recent keys
and values [batch, kv_heads, T_r, d] in the activation dtype. Codes are 8, 4 or 2 bits (packing in
:mod:`perfmodel.kernels.groupquant`). Each tensor may be a view into a larger buffer along its token
dimension (a cache that grows during decoding: :func:`quantize_kv_into` fills the next groups in place): the
decode kernel takes every stride it needs.

The decode kernel is flash-decoding (:mod:`perfmodel.kernels.decode_attention`) whose key/value loads read
codes, scales and zeros and dequantise in registers (code·scale + zero) for the quantised part, then read the
recent window directly; it shares the online-softmax step and the split reduce.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from perfmodel import ops
from perfmodel.kernels._common import (FLOAT_DTYPES, check_tensor, default_sm_scale, dot_precision, dtype_name, jit,
                                       kernel_launch, next_power_of_2, resolve_impl, tl)
from perfmodel.kernels.decode_attention import (choose_splits, decode_attention_reference, online_softmax_step,
                                                reduce_splits, split_workspace, store_split)
from perfmodel.kernels.groupquant import (GroupQuant, check_bits, dequantize_groups, load_code_tile, packed_width,
                                          quantize_groups)
from perfmodel.specs.model import bytes_per_element

KV_BITS = (2, 4, 8)
SCALE_BYTES = 4.0  # fp16 scale + fp16 zero per group


# ---------------------------------------------------------------------------------------------------------------
# Triton kernel
@jit
def _quant_decode_split_kernel(Q, KC, KS, KZ, VC, VS, VZ, KR, VR, Out, MidO, MidLse, sm_scale,
                               stride_qb, stride_qh, stride_ob, stride_oh, KVH, H, D, n_quant, n_recent,
                               k_row_bytes, v_row_bytes, split_len, total_splits,
                               k_row_stride, ks_row_stride, v_bk_rows, v_row_stride, vs_row_stride,
                               r_bk_stride, r_stride,
                               G: tl.constexpr, GROUP: tl.constexpr, BITS: tl.constexpr, DIRECT: tl.constexpr,
                               BLOCK_G: tl.constexpr, BLOCK_D: tl.constexpr, PRECISION: tl.constexpr):
    """One program = one (sequence, KV head) and one split of positions 0..n_quant+n_recent−1.

    Keys and values are read GROUP tokens at a time. Quantised keys come in whole groups, so a block of GROUP
    tokens is exactly one key group per channel (one scale and zero per channel row, no token mask), and splits
    are multiples of GROUP. Strides (in elements): key code rows (one per channel of every (sequence, KV head))
    ``k_row_stride`` bytes apart and their scale rows ``ks_row_stride``; value rows (one per token) numbered
    ``v_bk_rows`` per (sequence, KV head), ``v_row_stride`` bytes and ``vs_row_stride`` scales apart; the window
    ``r_bk_stride`` per (sequence, KV head) and ``r_stride`` per token; every last dimension contiguous.
    """
    pid = tl.program_id(0)
    split = tl.program_id(1)
    b = pid // KVH
    kvh = pid % KVH
    bk = b * KVH + kvh
    lo = split * split_len
    hi = tl.minimum(lo + split_len, n_quant + n_recent)

    offs_g = tl.arange(0, BLOCK_G)
    offs_d = tl.arange(0, BLOCK_D)
    offs_n = tl.arange(0, GROUP)
    offs_vg = tl.arange(0, BLOCK_D // GROUP)
    rows = kvh * G + offs_g
    g_mask = offs_g < G
    d_mask = offs_d < D
    q = tl.load(Q + b * stride_qb + rows[:, None] * stride_qh + offs_d[None, :],
                mask=g_mask[:, None] & d_mask[None, :], other=0.0)
    dtype = Q.dtype.element_ty

    m_i = tl.full([BLOCK_G], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_G], tl.float32)
    acc = tl.zeros([BLOCK_G, BLOCK_D], tl.float32)

    # Quantised positions of this split, one key group at a time.
    channel = bk * D + offs_d
    v_groups = D // GROUP
    q_hi = tl.minimum(hi, n_quant)
    for start in range(lo, q_hi, GROUP):
        # Keys [d, GROUP]: a packed row per channel; the block is one group: a scale and zero per channel.
        kc = load_code_tile(KC + channel[:, None].to(tl.int64) * k_row_stride, d_mask[:, None], start, k_row_bytes,
                            GROUP, BITS)
        k_group = channel.to(tl.int64) * ks_row_stride + start // GROUP
        ks = tl.load(KS + k_group, mask=d_mask, other=0.0).to(tl.float32)
        kz = tl.load(KZ + k_group, mask=d_mask, other=0.0).to(tl.float32)
        k = (kc.to(tl.float32) * ks[:, None] + kz[:, None]).to(dtype)
        s = tl.dot(q, k, input_precision=PRECISION) * sm_scale
        # Values [GROUP, d]: a packed row per token with d / GROUP groups along it; each group's scale and zero
        # are loaded once and spread over its GROUP channels.
        token = (bk * v_bk_rows + start + offs_n).to(tl.int64)
        vc = load_code_tile(VC + token[:, None] * v_row_stride, offs_n[:, None] < GROUP, 0, v_row_bytes, BLOCK_D,
                            BITS)
        v_group = token[:, None] * vs_row_stride + offs_vg[None, :]
        vg_mask = (offs_vg < v_groups)[None, :]
        vs = tl.load(VS + v_group, mask=vg_mask, other=0.0).to(tl.float32)
        vz = tl.load(VZ + v_group, mask=vg_mask, other=0.0).to(tl.float32)
        vs = tl.reshape(tl.broadcast_to(vs[:, :, None], (GROUP, BLOCK_D // GROUP, GROUP)), (GROUP, BLOCK_D))
        vz = tl.reshape(tl.broadcast_to(vz[:, :, None], (GROUP, BLOCK_D // GROUP, GROUP)), (GROUP, BLOCK_D))
        v = (vc.to(tl.float32) * vs + vz).to(dtype)
        acc, m_i, l_i = online_softmax_step(acc, m_i, l_i, s, v)

    # Recent positions of this split: plain loads from the full-precision window.
    for start in range(tl.maximum(lo, n_quant), hi, GROUP):
        n = start + offs_n
        n_mask = n < hi
        r = bk.to(tl.int64) * r_bk_stride + (n - n_quant).to(tl.int64) * r_stride
        k = tl.load(KR + r[None, :] + offs_d[:, None], mask=d_mask[:, None] & n_mask[None, :], other=0.0)
        s = tl.dot(q, k, input_precision=PRECISION) * sm_scale
        s = tl.where(n_mask[None, :], s, float("-inf"))
        v = tl.load(VR + r[:, None] + offs_d[None, :], mask=n_mask[:, None] & d_mask[None, :], other=0.0)
        acc, m_i, l_i = online_softmax_step(acc, m_i, l_i, s, v)

    store_split(acc, m_i, l_i, rows, g_mask, offs_d, d_mask, Out, stride_ob, stride_oh, b, MidO, MidLse,
                 split, total_splits, H, D, DIRECT)


# ---------------------------------------------------------------------------------------------------------------
# The quantised cache and its wrappers
@dataclass(frozen=True)
class QuantizedKV:
    """A KIVI cache: quantised keys (per channel) and values (per token), then the full-precision window."""

    keys: GroupQuant
    values: GroupQuant
    k_recent: torch.Tensor
    v_recent: torch.Tensor

    @property
    def bits(self) -> int:
        return self.keys.bits

    @property
    def group_size(self) -> int:
        return self.keys.group_size

    @property
    def quantized_len(self) -> int:
        return self.values.codes.shape[2]

    @property
    def seq_len(self) -> int:
        return self.quantized_len + self.k_recent.shape[2]

    def tensors(self) -> tuple[torch.Tensor, ...]:
        """Every tensor of the cache (what a decode step reads)."""
        return (*self.keys.tensors(), *self.values.tensors(), self.k_recent, self.v_recent)


def quantized_length(seq_len: int, residual: int, group_size: int) -> int:
    """Tokens stored quantised: whole key groups, leaving at least ``residual`` tokens in full precision."""
    return max(0, (seq_len - residual) // group_size * group_size)


def _empty_quant(shape_codes, shape_groups, bits, group_size, n, device) -> GroupQuant:
    return GroupQuant(torch.empty(shape_codes, dtype=torch.uint8, device=device),
                      torch.empty(shape_groups, dtype=torch.float16, device=device),
                      torch.empty(shape_groups, dtype=torch.float16, device=device), bits, group_size, n)


def quantize_kv(k: torch.Tensor, v: torch.Tensor, *, bits: int = 4, group_size: int = 32,
                residual: int = 32) -> QuantizedKV:
    """Quantise k, v [batch, kv_heads, seq_len, d] KIVI-style (see the module docstring)."""
    check_tensor("k", k, ndim=4, dtypes=FLOAT_DTYPES)
    check_tensor("v", v, dtypes=(k.dtype,), shape=tuple(k.shape))
    check_bits(bits, KV_BITS)
    batch, kv_heads, seq_len, head_dim = k.shape
    if not isinstance(group_size, int) or group_size < 16 or group_size & (group_size - 1) or head_dim % group_size:
        raise ValueError(f"group_size={group_size!r}: expected a power of two ≥ 16 dividing head_dim={head_dim} "
                         "(key groups are the decode kernel's blocks of tokens; values are grouped along channels)")
    if not isinstance(residual, int) or residual < 0:
        raise ValueError(f"residual={residual!r}: expected a non-negative int")
    n_quant = quantized_length(seq_len, residual, group_size)
    if n_quant:
        keys = quantize_groups(k[:, :, :n_quant].transpose(2, 3), bits, group_size)
        values = quantize_groups(v[:, :, :n_quant], bits, group_size)
    else:
        keys = _empty_quant((batch, kv_heads, head_dim, 0), (batch, kv_heads, head_dim, 0), bits, group_size, 0,
                            k.device)
        values = _empty_quant((batch, kv_heads, 0, packed_width(head_dim, bits)),
                              (batch, kv_heads, 0, head_dim // group_size), bits, group_size, head_dim, k.device)
    return QuantizedKV(keys, values, k[:, :, n_quant:].contiguous(), v[:, :, n_quant:].contiguous())


def dequantize_kv(cache: QuantizedKV, dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Full k, v [batch, kv_heads, seq_len, d] in ``dtype`` (default: the recent window's dtype)."""
    dtype = dtype or cache.k_recent.dtype
    k_q = dequantize_groups(cache.keys, dtype).transpose(2, 3)
    v_q = dequantize_groups(cache.values, dtype)
    return (torch.cat([k_q, cache.k_recent.to(dtype)], dim=2), torch.cat([v_q, cache.v_recent.to(dtype)], dim=2))


def _bk_uniform(name: str, t: torch.Tensor) -> None:
    """(sequence, KV head) blocks must be evenly spaced and the last dimension contiguous (views of a buffer)."""
    if t.numel() and (t.stride(-1) != 1 or t.stride(0) != t.shape[1] * t.stride(1)):
        raise ValueError(f"{name}: expected a view of a contiguous [batch, kv_heads, ...] buffer, got shape "
                         f"{list(t.shape)} with strides {t.stride()}")


def _quant_attention_op(q, cache, **_):
    batch, heads, head_dim = q.shape
    return quantized_attention_op(batch=batch, quantized=cache.quantized_len,
                                  recent=cache.seq_len - cache.quantized_len, heads=heads,
                                  kv_heads=cache.k_recent.shape[1], head_dim=head_dim, bits=cache.bits,
                                  group_size=cache.group_size, dtype=dtype_name(q.dtype))


@kernel_launch(_quant_attention_op)
def quant_decode_attention(q: torch.Tensor, cache: QuantizedKV, *, sm_scale: float | None = None,
                           num_splits: int | None = None, impl: str | None = None) -> torch.Tensor:
    """Decode attention of q [batch, heads, d] over a :class:`QuantizedKV` cache; returns [batch, heads, d]."""
    check_tensor("q", q, ndim=3, dtypes=FLOAT_DTYPES)
    if not isinstance(cache, QuantizedKV):
        raise TypeError(f"cache: expected a QuantizedKV (from quantize_kv), got {type(cache).__name__}")
    batch, heads, head_dim = q.shape
    kv_heads = cache.k_recent.shape[1]
    check_tensor("cache.k_recent", cache.k_recent, dtypes=(q.dtype,), shape=(batch, kv_heads, None, head_dim))
    if heads % kv_heads:
        raise ValueError(f"cache: expected kv_heads dividing heads={heads}, got kv_heads={kv_heads}")
    if cache.seq_len < 1:
        raise ValueError("cache: expected at least one cached token, got an empty cache")
    scale = default_sm_scale(head_dim, sm_scale)
    if resolve_impl(impl, q, cache.k_recent) == "torch":
        return quant_decode_attention_reference(q, cache, sm_scale=scale)
    q = q if q.stride(-1) == 1 else q.contiguous()
    out = torch.empty_like(q)
    splits, split_len = choose_splits(batch * kv_heads, cache.seq_len, q.device, num_splits, block=cache.group_size)
    direct = splits == 1
    mid_o, mid_lse = (None, None) if direct else split_workspace(batch, heads, splits, head_dim, q.device)
    n_quant, n_recent = cache.quantized_len, cache.seq_len - cache.quantized_len
    keys, values = cache.keys, cache.values
    for name, t in (("keys.codes", keys.codes), ("keys.scale", keys.scale), ("keys.zero", keys.zero),
                    ("values.codes", values.codes), ("values.scale", values.scale), ("values.zero", values.zero),
                    ("k_recent", cache.k_recent), ("v_recent", cache.v_recent)):
        _bk_uniform(f"cache.{name}", t)
    if cache.k_recent.stride() != cache.v_recent.stride() or keys.scale.stride() != keys.zero.stride() \
            or values.scale.stride() != values.zero.stride():
        raise ValueError("cache: expected keys and values of the window, and scales and zeros, laid out alike")
    k_recent = cache.k_recent if n_recent else out  # an unread pointer when the window is empty
    v_recent = cache.v_recent if n_recent else out
    v_bk_rows = values.codes.stride(1) // max(values.codes.stride(2), 1) if n_quant else 0
    _quant_decode_split_kernel[(batch * kv_heads, splits)](
        q, keys.codes, keys.scale, keys.zero, values.codes, values.scale,
        values.zero, k_recent, v_recent, out, out if direct else mid_o, out if direct else mid_lse, scale,
        q.stride(0), q.stride(1), out.stride(0), out.stride(1), kv_heads, heads, head_dim, n_quant, n_recent,
        packed_width(n_quant, cache.bits), packed_width(head_dim, cache.bits), split_len, splits,
        keys.codes.stride(2), keys.scale.stride(2), v_bk_rows, values.codes.stride(2), values.scale.stride(2),
        cache.k_recent.stride(1), cache.k_recent.stride(2),
        G=heads // kv_heads, GROUP=cache.group_size, BITS=cache.bits, DIRECT=direct,
        BLOCK_G=max(16, next_power_of_2(heads // kv_heads)), BLOCK_D=max(16, next_power_of_2(head_dim)),
        PRECISION=dot_precision(q.dtype))
    return out if direct else reduce_splits(mid_o, mid_lse, out)


def _quantize_kv_into_op(k, v, keys, values):
    batch, kv_heads, tokens, head_dim = k.shape
    return quantize_kv_op(batch=batch, tokens=tokens, kv_heads=kv_heads, head_dim=head_dim, bits=keys.bits,
                          group_size=keys.group_size, dtype=dtype_name(k.dtype))


@kernel_launch(_quantize_kv_into_op)
def quantize_kv_into(k: torch.Tensor, v: torch.Tensor, keys: GroupQuant, values: GroupQuant) -> None:
    """Quantise whole key groups of k, v [batch, kv_heads, T, d] (T a multiple of the group size) KIVI-style
    into ``keys`` (codes [batch, kv_heads, d, T·bits/8], scales [batch, kv_heads, d, T/group]) and ``values``
    (codes [batch, kv_heads, T, ⌈d·bits/8⌉], scales [batch, kv_heads, T, d/group]): views of a growing cache,
    written in place."""
    check_tensor("k", k, ndim=4, dtypes=FLOAT_DTYPES)
    check_tensor("v", v, dtypes=(k.dtype,), shape=tuple(k.shape))
    bits, group = keys.bits, keys.group_size
    if values.bits != bits or values.group_size != group or k.shape[2] % group:
        raise ValueError(f"k: expected a whole number of {group}-token groups with keys and values of the same "
                         f"bits and group size, got {k.shape[2]} tokens")
    new_k = quantize_groups(k.transpose(2, 3), bits, group)
    new_v = quantize_groups(v, bits, group)
    for dst, src in ((keys, new_k), (values, new_v)):
        for name, d_t, s_t in (("codes", dst.codes, src.codes), ("scale", dst.scale, src.scale),
                               ("zero", dst.zero, src.zero)):
            if tuple(d_t.shape) != tuple(s_t.shape):
                raise ValueError(f"{name}: expected a destination of shape {list(s_t.shape)}, got {list(d_t.shape)}")
            d_t.copy_(s_t)


# ---------------------------------------------------------------------------------------------------------------
# Ops
def quantize_kv_op(*, batch, tokens, kv_heads, head_dim, bits, group_size, dtype: str = "fp16",
                   name: str = "quantize_kv") -> ops.Op:
    """Quantising ``tokens`` tokens of K and V (2·kv_dim values per token) in groups."""
    return ops.quantize(name, batch * tokens, 2 * kv_heads * head_dim, bits, group_size, dtype,
                        scale_bytes=SCALE_BYTES)


def dequantize_kv_op(*, batch, tokens, kv_heads, head_dim, bits, group_size, dtype: str = "fp16",
                     name: str = "dequantize_kv") -> ops.Op:
    return ops.dequantize(name, batch * tokens, 2 * kv_heads * head_dim, bits, group_size, dtype,
                          scale_bytes=SCALE_BYTES)


def quant_decode_attention_op(*, batch, kv_len, heads, kv_heads, head_dim, bits, group_size, residual,
                              dtype: str = "fp16", name: str = "quant_decode_attention") -> ops.Op:
    """Decode attention over a KIVI cache, as :mod:`perfmodel.workload.layers` counts it: the average bits per
    cached element over the quantised and full-precision tokens, plus one scale and zero per group."""
    n_quant = quantized_length(kv_len, residual, group_size)
    full_bits = 8.0 * bytes_per_element(dtype)
    kv_bits = (n_quant * bits + (kv_len - n_quant) * full_bits) / kv_len
    kv_dim = kv_heads * head_dim
    scales = 2.0 * batch * n_quant * kv_dim / group_size * SCALE_BYTES
    dequant = 2.0 * 2.0 * batch * n_quant * kv_dim
    return ops.attention(name, batch, 1, kv_len, heads, kv_heads, head_dim, mask="bidirectional", dtype=dtype,
                         kv_bits=kv_bits, kv_scale_bytes=scales, dequant_flops=dequant, phase="decode")


def quantized_attention_op(*, batch, quantized, recent, heads, kv_heads, head_dim, bits, group_size,
                           dtype: str = "fp16", name: str = "quant_decode_attention") -> ops.Op:
    """Decode attention over ``quantized`` tokens at ``bits`` (with a scale and zero per group, dequantised in
    the kernel: 2 FLOPs per element) and ``recent`` tokens in the activation dtype."""
    kv_len = quantized + recent
    full_bits = 8.0 * bytes_per_element(dtype)
    kv_bits = (quantized * bits + recent * full_bits) / kv_len
    kv_dim = kv_heads * head_dim
    scales = 2.0 * batch * quantized * kv_dim / group_size * SCALE_BYTES
    dequant = 2.0 * 2.0 * batch * quantized * kv_dim
    return ops.attention(name, batch, 1, kv_len, heads, kv_heads, head_dim, mask="bidirectional", dtype=dtype,
                         kv_bits=kv_bits, kv_scale_bytes=scales, dequant_flops=dequant, phase="decode")


# ---------------------------------------------------------------------------------------------------------------
# Reference
def quant_decode_attention_reference(q: torch.Tensor, cache: QuantizedKV, *, sm_scale: float | None = None,
                                     compute_dtype: torch.dtype | None = None) -> torch.Tensor:
    """Dequantise the whole cache, then plain decode attention (in ``compute_dtype``, default fp32)."""
    k, v = dequantize_kv(cache, q.dtype)
    return decode_attention_reference(q, k, v, sm_scale=sm_scale, compute_dtype=compute_dtype)
