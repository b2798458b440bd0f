"""Flash-decoding: one new query token per sequence attends to its whole KV cache.

Picture a stack of exam papers marked by several teachers at once: each takes a pile (a split of the cache),
keeps a running best score and a running total for that pile, and at the end one teacher combines the piles'
totals, rescaling each by how its best score compares with the overall best. At decode time there is one query
per sequence, so a program per (sequence, KV head) alone would leave most of a GPU idle; splitting the keys
(Dao et al., "Flash-Decoding for long-context inference", 2023) gives batch × kv_heads × splits programs.

Layout and semantics:

- ``q``: [batch, heads, head_dim]; ``k``, ``v``: [batch, kv_heads, max_len, head_dim] (padded);
  ``seq_lens``: int [batch], 1 ≤ seq_lens[b] ≤ max_len, sequence b using keys 0..seq_lens[b]−1 (ragged batch).
- GQA: query head h reads KV head h // (heads / kv_heads); one program loads its KV head's keys once and scores
  all the group's query heads against them (the group's heads are the rows of one ``tl.dot``).
- ``bias`` (optional, fp32 [batch, kv_heads, max_len]): added to every score of that key (−inf hides a key);
  multipole attention uses it for log(cluster size).
- out = softmax(q·kᵀ · sm_scale + bias) · v, returned in q's dtype; scores and sums in fp32.

Two kernels: ``_decode_split_kernel`` computes, per split, the partial output normalised by its own sum and the
split's log-sum-exp; ``_decode_reduce_kernel`` merges the splits. With one split the first kernel writes the
output directly (the minimal-traffic case: q, k, v read once, out written once). The online-softmax update and
the reduce are shared with the quantised, sparse and multipole decoders.
"""
from __future__ import annotations

import torch

from perfmodel import ops
from perfmodel.kernels._common import (FLOAT_DTYPES, cdiv, check_same_device, check_tensor, compute_dtype_for,
                                       default_sm_scale, dot_precision, dtype_name, jit, kernel_launch,
                                       next_power_of_2, resolve_impl, tl)
from perfmodel.specs.model import bytes_per_element

BLOCK_N = 64  # keys per inner-loop step


# ---------------------------------------------------------------------------------------------------------------
# Triton kernels
@jit
def online_softmax_step(acc, m_i, l_i, s, v):
    """Fold one block of scores ``s`` [rows, keys] and values ``v`` [keys, d] into the running state.

    ``m_i`` is the running row maximum, ``l_i`` the running sum of exp(s − m_i), ``acc`` the running
    Σ exp(s − m_i)·v. A new maximum rescales the old sums by exp(m_old − m_new). Rows whose scores are all
    −inf so far (fully masked, e.g. a bias hiding every key of a block) keep m = −inf; subtracting 0 instead of
    −inf then gives exp(−inf) = 0 rather than NaN.
    """
    m_new = tl.maximum(m_i, tl.max(s, 1))
    m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
    alpha = tl.exp(m_i - m_safe)
    p = tl.exp(s - m_safe[:, None])
    l_i = l_i * alpha + tl.sum(p, 1)
    acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
    return acc, m_new, l_i


@jit
def store_split(acc, m_i, l_i, rows, row_mask, offs_d, d_mask, Out, stride_ob, stride_oh, b, MidO, MidLse,
                 split_slot, total_splits, H, D, DIRECT: tl.constexpr):
    """Write one program's result: the normalised output itself (single split) or the split's partial.

    A partial is acc / l (fp32) plus lse = m + log(l); an empty split (l = 0: no keys, or all hidden) stores
    a zero output and lse = −inf so that the reduce gives it zero weight.
    """
    if DIRECT:
        o = acc / l_i[:, None]
        ptrs = Out + b * stride_ob + rows[:, None] * stride_oh + offs_d[None, :]
        tl.store(ptrs, o.to(Out.dtype.element_ty), mask=row_mask[:, None] & d_mask[None, :])
    else:
        has = l_i > 0
        o = acc / tl.where(has, l_i, 1.0)[:, None]
        lse = tl.where(has, m_i + tl.log(tl.where(has, l_i, 1.0)), float("-inf"))
        bh = b * H + rows
        tl.store(MidO + (bh[:, None] * total_splits + split_slot) * D + offs_d[None, :], o,
                 mask=row_mask[:, None] & d_mask[None, :])
        tl.store(MidLse + bh * total_splits + split_slot, lse, mask=row_mask)


@jit
def _decode_split_kernel(Q, K, V, Lens, Bias, Out, MidO, MidLse, sm_scale,
                         stride_qb, stride_qh, stride_kb, stride_kh, stride_kn, stride_vb, stride_vh, stride_vn,
                         stride_ob, stride_oh, KVH, H, D, max_len, split_len, split_offset, total_splits,
                         G: tl.constexpr, HAS_LENS: tl.constexpr, HAS_BIAS: tl.constexpr, DIRECT: tl.constexpr,
                         BLOCK_G: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                         PRECISION: tl.constexpr):
    """One program = one (sequence, KV head) pair and one split of its keys; rows = the group's query heads.

    The last dimension of every tensor is contiguous (the wrapper ensures it); the other strides are passed.
    """
    pid = tl.program_id(0)
    split = tl.program_id(1)
    b = pid // KVH
    kvh = pid % KVH

    # This split's key range, clipped to the sequence's own length (ragged batch).
    if HAS_LENS:
        seq_len = tl.load(Lens + b).to(tl.int32)
    else:
        seq_len = max_len
    lo = split * split_len
    hi = tl.minimum(lo + split_len, seq_len)

    # The group's query heads as the rows of one tile; padding rows (≥ G) are loaded as zeros, never stored.
    offs_g = tl.arange(0, BLOCK_G)
    offs_d = tl.arange(0, BLOCK_D)
    offs_n = tl.arange(0, BLOCK_N)
    rows = kvh * G + offs_g
    g_mask = offs_g < G
    d_mask = offs_d < D
    q = tl.load(Q + b * stride_qb + rows[:, None] * stride_qh + offs_d[None, :],
                mask=g_mask[:, None] & d_mask[None, :], other=0.0)

    k_base = K + b * stride_kb + kvh * stride_kh
    v_base = V + b * stride_vb + kvh * stride_vh
    m_i = tl.full([BLOCK_G], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_G], tl.float32)
    acc = tl.zeros([BLOCK_G, BLOCK_D], tl.float32)
    for start in range(lo, hi, BLOCK_N):
        # Scores of the group's heads against BLOCK_N keys; keys past the split's end are −inf.
        n = start + offs_n
        n_mask = n < hi
        k = tl.load(k_base + n[None, :] * stride_kn + offs_d[:, None], mask=d_mask[:, None] & n_mask[None, :],
                    other=0.0)
        s = tl.dot(q, k, input_precision=PRECISION) * sm_scale
        if HAS_BIAS:
            bias = tl.load(Bias + (b * KVH + kvh) * max_len + n, mask=n_mask, other=0.0)
            s = s + bias[None, :]
        s = tl.where(n_mask[None, :], s, float("-inf"))
        v = tl.load(v_base + n[:, None] * stride_vn + offs_d[None, :], mask=n_mask[:, None] & d_mask[None, :],
                    other=0.0)
        acc, m_i, l_i = online_softmax_step(acc, m_i, l_i, s, v)

    store_split(acc, m_i, l_i, rows, g_mask, offs_d, d_mask, Out, stride_ob, stride_oh, b, MidO, MidLse,
                 split_offset + split, total_splits, H, D, DIRECT)


@jit
def _decode_reduce_kernel(MidO, MidLse, Out, stride_ob, stride_oh, H, D, total_splits,
                          BLOCK_S: tl.constexpr, BLOCK_D: tl.constexpr):
    """One program per (sequence, query head): out = Σ_s exp(lse_s − M)·o_s / Σ_s exp(lse_s − M), M = max lse.

    Each o_s is already normalised by its own split's sum, so exp(lse_s − M) is the split's share of the total.
    """
    bh = tl.program_id(0)
    b = bh // H
    h = bh % H
    offs_s = tl.arange(0, BLOCK_S)
    offs_d = tl.arange(0, BLOCK_D)
    s_mask = offs_s < total_splits
    d_mask = offs_d < D
    lse = tl.load(MidLse + bh * total_splits + offs_s, mask=s_mask, other=float("-inf"))
    o = tl.load(MidO + (bh * total_splits + offs_s[:, None]) * D + offs_d[None, :],
                mask=s_mask[:, None] & d_mask[None, :], other=0.0)
    m = tl.max(lse, 0)
    w = tl.exp(lse - m)
    out = tl.sum(w[:, None] * o, 0) / tl.sum(w, 0)
    tl.store(Out + b * stride_ob + h * stride_oh + offs_d, out.to(Out.dtype.element_ty), mask=d_mask)


# ---------------------------------------------------------------------------------------------------------------
# Launch helpers shared by the decoders in this package
def choose_splits(programs: int, length: int, device: torch.device, num_splits: int | None = None, *,
                  block: int = BLOCK_N) -> tuple[int, int]:
    """(splits, keys per split): enough programs to fill a GPU (2 per SM), each split a whole number of
    ``block``-key blocks.

    On CPU (the interpreter) a split covers up to 512 keys: fewer, larger programs run faster there.
    """
    blocks = max(cdiv(length, block), 1)
    if num_splits is None:
        if device.type == "cuda":
            sms = torch.cuda.get_device_properties(device).multi_processor_count
            num_splits = cdiv(2 * sms, max(programs, 1))
        else:
            num_splits = cdiv(length, 512)
    elif not isinstance(num_splits, int) or num_splits < 1:
        raise ValueError(f"num_splits={num_splits!r}: expected a positive int")
    num_splits = max(1, min(num_splits, blocks))
    split_len = cdiv(cdiv(max(length, 1), num_splits), block) * block
    return cdiv(max(length, 1), split_len), split_len


def split_workspace(batch: int, heads: int, splits: int, head_dim: int, device: torch.device):
    """fp32 buffers for per-split partial outputs [batch·heads, splits, head_dim] and their log-sum-exps."""
    mid_o = torch.empty(batch * heads, splits, head_dim, device=device, dtype=torch.float32)
    mid_lse = torch.empty(batch * heads, splits, device=device, dtype=torch.float32)
    return mid_o, mid_lse


def reduce_splits(mid_o: torch.Tensor, mid_lse: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """Launch the reduce over the splits of ``mid_o``/``mid_lse`` into ``out`` [batch, heads, head_dim]."""
    batch, heads, head_dim = out.shape
    splits = mid_lse.shape[1]
    _decode_reduce_kernel[(batch * heads,)](mid_o, mid_lse, out, out.stride(0), out.stride(1), heads, head_dim,
                                            splits, BLOCK_S=next_power_of_2(max(splits, 2)),
                                            BLOCK_D=next_power_of_2(head_dim))
    return out


def launch_decode_split(q, k, v, out, mid_o, mid_lse, *, seq_lens=None, bias=None, sm_scale, splits, split_len,
                        split_offset=0, direct=False):
    """Launch ``_decode_split_kernel`` over ``splits`` splits, writing partials at ``split_offset`` onwards."""
    batch, heads, head_dim = q.shape
    kv_heads, max_len = k.shape[1], k.shape[2]
    group = heads // kv_heads
    dummy = out  # pointer arguments a constexpr branch never reads
    _decode_split_kernel[(batch * kv_heads, splits)](
        q, k, v, seq_lens if seq_lens is not None else dummy, bias if bias is not None else dummy, out,
        mid_o if mid_o is not None else dummy, mid_lse if mid_lse is not None else dummy, sm_scale,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), k.stride(2), v.stride(0), v.stride(1), v.stride(2),
        out.stride(0), out.stride(1), kv_heads, heads, head_dim, max_len, split_len, split_offset,
        mid_lse.shape[1] if mid_lse is not None else 1,
        G=group, HAS_LENS=seq_lens is not None, HAS_BIAS=bias is not None, DIRECT=direct,
        BLOCK_G=max(16, next_power_of_2(group)), BLOCK_N=BLOCK_N, BLOCK_D=max(16, next_power_of_2(head_dim)),
        PRECISION=dot_precision(q.dtype))


# ---------------------------------------------------------------------------------------------------------------
# Wrapper
def check_decode_inputs(q, k, v, seq_lens=None, bias=None) -> None:
    """Shapes, dtypes and devices of a decode call; ValueError/TypeError saying expected versus got."""
    check_tensor("q", q, ndim=3, dtypes=FLOAT_DTYPES)
    batch, heads, head_dim = q.shape
    check_tensor("k", k, ndim=4, dtypes=(q.dtype,))
    kv_heads, max_len = k.shape[1], k.shape[2]
    check_tensor("k", k, shape=(batch, None, None, head_dim))
    check_tensor("v", v, dtypes=(q.dtype,), shape=tuple(k.shape))
    if kv_heads < 1 or heads % kv_heads:
        raise ValueError(f"k: expected kv_heads dividing heads={heads}, got kv_heads={kv_heads}")
    if max_len < 1:
        raise ValueError(f"k: expected at least one cached token, got max_len={max_len}")
    check_same_device(q=q, k=k, v=v, seq_lens=seq_lens, bias=bias)
    if seq_lens is not None:
        check_tensor("seq_lens", seq_lens, dtypes=(torch.int32, torch.int64), shape=(batch,))
        # Checking values needs them on the host: free on CPU; on CUDA it would cost a synchronisation per call.
        if not seq_lens.is_cuda and (seq_lens.min() < 1 or seq_lens.max() > max_len):
            raise ValueError(f"seq_lens: expected values in [1, {max_len}], got min {int(seq_lens.min())}, "
                             f"max {int(seq_lens.max())}")
    if bias is not None:
        check_tensor("bias", bias, dtypes=(torch.float32,), shape=(batch, kv_heads, max_len))


def _decode_op(q, k, v, seq_lens=None, *, bias=None, **_):
    return decode_attention_op(batch=q.shape[0], kv_len=k.shape[2], heads=q.shape[1], kv_heads=k.shape[1],
                               head_dim=q.shape[2], dtype=dtype_name(q.dtype), bias=bias is not None)


@kernel_launch(_decode_op)
def decode_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, seq_lens: torch.Tensor | None = None, *,
                     bias: torch.Tensor | None = None, sm_scale: float | None = None, num_splits: int | None = None,
                     impl: str | None = None) -> torch.Tensor:
    """softmax(q·kᵀ·sm_scale + bias)·v for one query token per sequence over a padded, ragged KV cache.

    q [batch, heads, d]; k, v [batch, kv_heads, max_len, d]; seq_lens int [batch] (default: all max_len);
    returns [batch, heads, d] in q's dtype. ``num_splits`` overrides the number of KV splits (1: no reduce).
    """
    check_decode_inputs(q, k, v, seq_lens, bias)
    scale = default_sm_scale(q.shape[-1], sm_scale)
    if resolve_impl(impl, q, k, v) == "torch":
        return decode_attention_reference(q, k, v, seq_lens, bias=bias, sm_scale=scale)
    q, k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v))
    bias = bias.contiguous() if bias is not None else None
    batch, heads, head_dim = q.shape
    kv_heads, max_len = k.shape[1], k.shape[2]
    out = torch.empty_like(q)
    splits, split_len = choose_splits(batch * kv_heads, max_len, q.device, num_splits)
    if splits == 1:
        launch_decode_split(q, k, v, out, None, None, seq_lens=seq_lens, bias=bias, sm_scale=scale, splits=1,
                            split_len=split_len, direct=True)
        return out
    mid_o, mid_lse = split_workspace(batch, heads, splits, head_dim, q.device)
    launch_decode_split(q, k, v, out, mid_o, mid_lse, seq_lens=seq_lens, bias=bias, sm_scale=scale,
                        splits=splits, split_len=split_len)
    return reduce_splits(mid_o, mid_lse, out)


def decode_attention_op(*, batch, kv_len, heads, kv_heads, head_dim, dtype: str = "fp16", bias: bool = False,
                        name: str = "decode_attention") -> ops.Op:
    """The Op of one call: q_len = 1 against kv_len keys (every key visible); a bias adds 4 bytes per key and
    KV head (fp32), counted with the K/V bytes."""
    bias_bytes = 4.0 * batch * kv_heads * kv_len if bias else 0.0
    return ops.attention(name, batch, 1, kv_len, heads, kv_heads, head_dim, mask="bidirectional", dtype=dtype,
                         kv_bits=8.0 * bytes_per_element(dtype), kv_scale_bytes=bias_bytes, phase="decode")


# ---------------------------------------------------------------------------------------------------------------
# Reference
def decode_attention_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                               seq_lens: torch.Tensor | None = None, *, bias: torch.Tensor | None = None,
                               sm_scale: float | None = None, compute_dtype: torch.dtype | None = None) -> torch.Tensor:
    """Plain torch: scores, explicit length mask, softmax, weighted sum, all in ``compute_dtype`` (default fp32,
    fp64 for fp64 inputs); the result in q's dtype."""
    cd = compute_dtype_for(q.dtype, compute_dtype)
    batch, heads, head_dim = q.shape
    kv_heads, max_len = k.shape[1], k.shape[2]
    scale = default_sm_scale(head_dim, sm_scale)
    qg = q.to(cd).reshape(batch, kv_heads, heads // kv_heads, head_dim)
    k, v = k.to(cd), v.to(cd)
    if seq_lens is not None:
        # Padding past a sequence's length is never used, whatever it holds (even NaN).
        hidden = torch.arange(max_len, device=q.device)[None, :] >= seq_lens.to(q.device)[:, None]
        k = k.masked_fill(hidden[:, None, :, None], 0.0)
        v = v.masked_fill(hidden[:, None, :, None], 0.0)
    s = torch.einsum("bkgd,bknd->bkgn", qg, k) * scale
    if bias is not None:
        s = s + bias.to(cd)[:, :, None, :]
    if seq_lens is not None:
        s = s.masked_fill(hidden[:, None, None, :], float("-inf"))
    p = torch.softmax(s, dim=-1)
    o = torch.einsum("bkgn,bknd->bkgd", p, v)
    return o.reshape(batch, heads, head_dim).to(q.dtype)
