"""Flash attention over a whole block of queries: ARM prefill, vanilla diffusion steps and block-wise diffusion.

Picture a reading group where each reader may look only at certain pages: in a causal group every reader sees
the pages up to their own, in a bidirectional group everyone sees the whole book, and in a block-causal group
readers are seated by chapter and see every earlier chapter plus all of their own. The kernel is the same in all
three; only the rule of who may see what changes, and it is written as one integer, the block size.

Semantics (as :func:`perfmodel.ops.attention_pairs` counts them): the ``q_len`` queries are the LAST q_len
positions of a ``kv_len``-long sequence (offset = kv_len − q_len cached tokens come before them). Query i sees
key j when j < offset (the cached prefix) or (j − offset) // block_size ≤ i // block_size:

- ``causal``: block_size 1 (ARM prefill; with offset > 0, chunked prefill against a cache);
- ``bidirectional``: block_size ≥ q_len (vanilla DLM: every query sees every key);
- ``block_causal``: blocks of ``block_size`` starting at the first query. With q_len = kv_len this is a
  block-causal prefill; with q_len = block_size queries after a cache it is one block-wise diffusion step
  (BD3-LM, SDAR, Fast-dLLM): the block sees all cached keys and itself bidirectionally.

Layout: q [batch, heads, q_len, d], k, v [batch, kv_heads, kv_len, d]; GQA maps query head h to KV head
h // (heads / kv_heads). Output [batch, heads, q_len, d] in q's dtype; softmax statistics in fp32.
"""
from __future__ import annotations

import torch

from perfmodel import ops
from perfmodel.kernels._common import (FLOAT_DTYPES, cdiv, check_same_device, check_tensor, compute_dtype_for,
                                       default_sm_scale, dot_precision, dtype_name, jit, kernel_launch,
                                       next_power_of_2, resolve_impl, tl)
from perfmodel.kernels.decode_attention import online_softmax_step
from perfmodel.specs.model import bytes_per_element

MASKS = ("causal", "bidirectional", "block_causal")


# ---------------------------------------------------------------------------------------------------------------
# Triton kernel
@jit
def _prefill_kernel(Q, K, V, Out, sm_scale, stride_qb, stride_qh, stride_qm, stride_kb, stride_kh, stride_kn,
                    stride_vb, stride_vh, stride_vn, stride_ob, stride_oh, stride_om, H, q_len, kv_len, D,
                    block_size, G: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                    BLOCK_D: tl.constexpr, PRECISION: tl.constexpr):
    """One program = BLOCK_M queries of one (sequence, head); it streams the keys those queries may see."""
    start_m = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // H
    h = bh % H
    kvh = h // G
    offset = kv_len - q_len

    offs_m = start_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    m_mask = offs_m < q_len
    d_mask = offs_d < D
    q = tl.load(Q + b * stride_qb + h * stride_qh + offs_m[:, None] * stride_qm + offs_d[None, :],
                mask=m_mask[:, None] & d_mask[None, :], other=0.0)

    # Keys beyond the last block that this tile's last query belongs to are invisible to the whole tile: stop
    # there (this is what makes causal attention cost half of bidirectional).
    last_q = tl.minimum(start_m * BLOCK_M + BLOCK_M, q_len) - 1
    hi = tl.minimum(offset + (last_q // block_size + 1) * block_size, kv_len)

    k_base = K + b * stride_kb + kvh * stride_kh
    v_base = V + b * stride_vb + kvh * stride_vh
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    for start_n in range(0, hi, BLOCK_N):
        n = start_n + offs_n
        n_mask = n < kv_len
        k = tl.load(k_base + n[None, :] * stride_kn + offs_d[:, None], mask=d_mask[:, None] & n_mask[None, :],
                    other=0.0)
        s = tl.dot(q, k, input_precision=PRECISION) * sm_scale
        # The mask rule: cached prefix, or a key block not after the query's block. Key 0 is visible to every
        # query, so the first block gives every row a finite maximum.
        visible = (n[None, :] < offset) | ((n[None, :] - offset) // block_size <= offs_m[:, None] // block_size)
        s = tl.where(visible & n_mask[None, :], s, float("-inf"))
        v = tl.load(v_base + n[:, None] * stride_vn + offs_d[None, :], mask=n_mask[:, None] & d_mask[None, :],
                    other=0.0)
        acc, m_i, l_i = online_softmax_step(acc, m_i, l_i, s, v)

    o = acc / l_i[:, None]
    tl.store(Out + b * stride_ob + h * stride_oh + offs_m[:, None] * stride_om + offs_d[None, :],
             o.to(Out.dtype.element_ty), mask=m_mask[:, None] & d_mask[None, :])


# ---------------------------------------------------------------------------------------------------------------
# Wrapper
def mask_block_size(mask: str, q_len: int, block_size: int | None) -> int:
    """The one integer that encodes a mask for the kernel (see the module docstring)."""
    if mask not in MASKS:
        raise ValueError(f"mask={mask!r}: expected one of {', '.join(MASKS)}")
    if mask == "block_causal":
        if not isinstance(block_size, int) or block_size < 1:
            raise ValueError(f"block_size={block_size!r}: expected a positive int for mask='block_causal'")
        return block_size
    if block_size is not None:
        raise ValueError(f"block_size={block_size!r}: expected None for mask={mask!r}")
    return 1 if mask == "causal" else max(q_len, 1)


def _prefill_op(q, k, v, *, mask="causal", block_size=None, **_):
    return prefill_attention_op(batch=q.shape[0], q_len=q.shape[2], kv_len=k.shape[2], heads=q.shape[1],
                                kv_heads=k.shape[1], head_dim=q.shape[3], mask=mask, block_size=block_size or 1,
                                dtype=dtype_name(q.dtype))


@kernel_launch(_prefill_op)
def prefill_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, mask: str = "causal",
                      block_size: int | None = None, sm_scale: float | None = None,
                      out: torch.Tensor | None = None, impl: str | None = None) -> torch.Tensor:
    """Flash attention of q [batch, heads, q_len, d] against k, v [batch, kv_heads, kv_len, d], q_len ≤ kv_len.

    ``mask``: "causal", "bidirectional" or "block_causal" (with ``block_size``); see the module docstring.
    ``out`` (optional, q's shape and dtype, any strides with a contiguous last dimension, e.g. a
    [batch, q_len, heads, d] buffer seen through ``permute(0, 2, 1, 3)``) receives the result.
    """
    check_tensor("q", q, ndim=4, dtypes=FLOAT_DTYPES)
    batch, heads, q_len, head_dim = q.shape
    check_tensor("k", k, ndim=4, dtypes=(q.dtype,), shape=(batch, None, None, head_dim))
    kv_heads, kv_len = k.shape[1], k.shape[2]
    check_tensor("v", v, dtypes=(q.dtype,), shape=tuple(k.shape))
    if kv_heads < 1 or heads % kv_heads:
        raise ValueError(f"k: expected kv_heads dividing heads={heads}, got kv_heads={kv_heads}")
    if not 1 <= q_len <= kv_len:
        raise ValueError(f"q: expected 1 ≤ q_len ≤ kv_len={kv_len}, got q_len={q_len}")
    check_same_device(q=q, k=k, v=v)
    if out is not None:
        check_tensor("out", out, dtypes=(q.dtype,), shape=tuple(q.shape))
        if out.stride(-1) != 1:
            raise ValueError(f"out: expected a contiguous last dimension, got strides {out.stride()}")
    bs = mask_block_size(mask, q_len, block_size)
    scale = default_sm_scale(head_dim, sm_scale)
    if resolve_impl(impl, q, k, v) == "torch":
        result = prefill_attention_torch(q, k, v, mask=mask, block_size=block_size, sm_scale=scale)
        return result if out is None else out.copy_(result)
    q, k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v))
    out = torch.empty_like(q) if out is None else out
    block_m = 64 if q.is_cuda else max(16, min(128, next_power_of_2(q_len)))
    block_n = 64 if q.is_cuda else 128
    grid = (cdiv(q_len, block_m), batch * heads)
    _prefill_kernel[grid](q, k, v, out, scale, q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1),
                          k.stride(2), v.stride(0), v.stride(1), v.stride(2), out.stride(0), out.stride(1),
                          out.stride(2), heads, q_len, kv_len, head_dim, bs, G=heads // kv_heads, BLOCK_M=block_m,
                          BLOCK_N=block_n, BLOCK_D=max(16, next_power_of_2(head_dim)),
                          PRECISION=dot_precision(q.dtype))
    return out


def prefill_attention_torch(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, mask: str = "causal",
                            block_size: int | None = None, sm_scale: float | None = None) -> torch.Tensor:
    """The torch path: ``F.scaled_dot_product_attention`` (PyTorch's fused flash attention on a CPU, as a torch
    model runs it), GQA through ``enable_gqa``; a causal mask over as many keys as queries is its ``is_causal``,
    any other mask but the bidirectional one an explicit boolean mask (:func:`attention_mask`)."""
    import torch.nn.functional as F

    q_len, kv_len = q.shape[2], k.shape[2]
    kw = dict(scale=sm_scale, enable_gqa=q.shape[1] != k.shape[1])
    if mask == "bidirectional" or (mask == "block_causal" and block_size >= q_len and q_len == kv_len):
        return F.scaled_dot_product_attention(q, k, v, **kw)
    if mask == "causal" and q_len == kv_len:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, **kw)
    visible = attention_mask(q_len, kv_len, mask, block_size, device=q.device)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=visible, **kw)


def prefill_attention_op(*, batch, q_len, kv_len, heads, kv_heads, head_dim, mask: str = "causal",
                         block_size=1, dtype: str = "fp16", name: str = "prefill_attention") -> ops.Op:
    """The Op of one call (FLOPs from the visible (query, key) pairs of the mask)."""
    return ops.attention(name, batch, q_len, kv_len, heads, kv_heads, head_dim, mask=mask, dtype=dtype,
                         kv_bits=8.0 * bytes_per_element(dtype), block_size=block_size, phase="prefill")


# ---------------------------------------------------------------------------------------------------------------
# Reference
def attention_mask(q_len: int, kv_len: int, mask: str, block_size: int | None = None,
                   device: torch.device | str | None = None) -> torch.Tensor:
    """Boolean [q_len, kv_len]: True where query i (position kv_len − q_len + i) may see key j."""
    bs = mask_block_size(mask, q_len, block_size)
    offset = kv_len - q_len
    i = torch.arange(q_len, device=device)[:, None]
    j = torch.arange(kv_len, device=device)[None, :]
    return (j < offset) | (torch.div(j - offset, bs, rounding_mode="floor") <= torch.div(i, bs, rounding_mode="floor"))


def prefill_attention_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, mask: str = "causal",
                                block_size: int | None = None, sm_scale: float | None = None,
                                compute_dtype: torch.dtype | None = None) -> torch.Tensor:
    """Explicit mask, scores and softmax in ``compute_dtype`` (default fp32; fp64 for fp64 inputs)."""
    cd = compute_dtype_for(q.dtype, compute_dtype)
    batch, heads, q_len, head_dim = q.shape
    kv_heads, kv_len = k.shape[1], k.shape[2]
    scale = default_sm_scale(head_dim, sm_scale)
    visible = attention_mask(q_len, kv_len, mask, block_size, device=q.device)
    qg = q.to(cd).reshape(batch, kv_heads, heads // kv_heads, q_len, head_dim)
    s = torch.einsum("bkgqd,bknd->bkgqn", qg, k.to(cd)) * scale
    s = s.masked_fill(~visible, float("-inf"))
    p = torch.softmax(s, dim=-1)
    o = torch.einsum("bkgqn,bknd->bkgqd", p, v.to(cd))
    return o.reshape(batch, heads, q_len, head_dim).to(q.dtype)
