"""Fused XQuant decode attention: rematerialise K and V from the X cache inside the attention kernel.

Picture a bakery that bakes each loaf at the counter as the customer asks for it instead of stocking the shelf:
the fused kernel reads the quantised X of a block of cached tokens, multiplies it by the KV head's slice of Wk
and Wv in registers (K = X̂·Wkᵀ, V = X̂·Wvᵀ), scores the block against the query and folds it into an online
softmax, so K and V never reach memory. The unfused alternative (:func:`perfmodel.kernels.xquant.dequant_matmul`
writing K and V, then :func:`perfmodel.kernels.decode_attention.decode_attention`) moves them twice more.

The X source is any of the three XQuant caches (Tomar et al., arXiv:2508.10395):
- X itself (MHA, or forced): ``x_k`` = ``x_v`` = the quantised X [tokens·batch, hidden], ``w_k``/``w_v`` the
  rows of Wk and Wv [kv_dim, hidden];
- SVD latents (GQA): ``x_k`` = X·U_k and ``x_v`` = X·U_v (quantised, [tokens·batch, kv_dim] each, possibly two
  column halves of one [tokens·batch, 2·kv_dim] matrix), ``w_k``/``w_v`` the up factors Σ·Vᵀ [kv_dim, kv_dim];
- XQuant-CL: the reconstruction X̂ in the activation dtype (a plain tensor, no dequantisation).

Rows are token-major, row = token·batch + sequence (a cache that grows by whole tokens for the whole batch).
The queries q [batch, heads, d] see the ``n_cached`` rematerialised tokens and then this step's own keys and
values ``k_new``, ``v_new`` [batch, kv_heads, t, d] (read as they are: they were just computed).
"""
from __future__ import annotations

import torch

from perfmodel import ops
from perfmodel.kernels._common import (FLOAT_DTYPES, check_tensor, default_sm_scale, dot_precision, dtype_name, jit,
                                       kernel_launch, next_power_of_2, resolve_impl, tl)
from perfmodel.kernels.decode_attention import (choose_splits, decode_attention_reference, online_softmax_step,
                                                reduce_splits, split_workspace, store_split)
from perfmodel.kernels.groupquant import GroupQuant, dequantize_groups, load_code_tile
from perfmodel.specs.model import bytes_per_element

SCALE_BYTES = 4.0  # fp16 scale + fp16 zero per group


# ---------------------------------------------------------------------------------------------------------------
# Triton kernel
@jit
def _x_tile(XC, XS, XZ, rows, r_mask, w0, W, row_stride, s_row_stride,
            QUANT: tl.constexpr, GROUP: tl.constexpr, BITS: tl.constexpr, BLOCK_W: tl.constexpr):
    """Rows ``rows`` × columns w0..w0+BLOCK_W of X in fp32: dequantised (one scale and zero per row, as
    BLOCK_W divides the group) or loaded as they are."""
    offs_w = w0 + tl.arange(0, BLOCK_W)
    if QUANT:
        codes = load_code_tile(XC + rows[:, None] * row_stride, r_mask[:, None], w0, (W * BITS) // 8, BLOCK_W, BITS)
        group = rows * s_row_stride + w0 // GROUP
        scale = tl.load(XS + group, mask=r_mask, other=0.0).to(tl.float32)
        zero = tl.load(XZ + group, mask=r_mask, other=0.0).to(tl.float32)
        return codes.to(tl.float32) * scale[:, None] + zero[:, None]
    return tl.load(XC + rows[:, None] * row_stride + offs_w[None, :], mask=r_mask[:, None] & (offs_w < W)[None, :],
                   other=0.0).to(tl.float32)


@jit
def _xquant_attention_kernel(Q, XKC, XKS, XKZ, XVC, XVS, XVZ, WK, WV, KN, VN, Out, MidO, MidLse, sm_scale,
                             stride_qb, stride_qh, stride_ob, stride_oh, xk_row, xk_srow, xv_row, xv_srow,
                             stride_wk, stride_wv, skn_b, skn_h, skn_t, svn_b, svn_h, svn_t,
                             KVH, H, D, W, BATCH, n_cached, n_new, split_len, total_splits,
                             G: tl.constexpr, QUANT: tl.constexpr, GROUP: tl.constexpr, BITS: tl.constexpr,
                             DIRECT: tl.constexpr, BLOCK_G: tl.constexpr, BLOCK_N: tl.constexpr,
                             BLOCK_D: tl.constexpr, BLOCK_W: tl.constexpr, PRECISION: tl.constexpr):
    """One program = one (sequence, KV head) and one split of positions 0..n_cached+n_new−1.

    Cached positions: for each block of BLOCK_N tokens, K and V [BLOCK_N, D] are accumulated over the X width
    in BLOCK_W steps (x tile · the head's rows of Wk, Wv), rounded to the activation dtype (as an unfused GEMM
    would store them) and folded into the online softmax. Then this step's own tokens, loaded directly.
    """
    pid = tl.program_id(0)
    split = tl.program_id(1)
    b = pid // KVH
    kvh = pid % KVH
    lo = split * split_len
    hi = tl.minimum(lo + split_len, n_cached + n_new)

    offs_g = tl.arange(0, BLOCK_G)
    offs_d = tl.arange(0, BLOCK_D)
    offs_n = tl.arange(0, BLOCK_N)
    offs_wl = tl.arange(0, BLOCK_W)
    rows_q = kvh * G + offs_g
    g_mask = offs_g < G
    d_mask = offs_d < D
    q = tl.load(Q + b * stride_qb + rows_q[:, None] * stride_qh + offs_d[None, :],
                mask=g_mask[:, None] & d_mask[None, :], other=0.0)
    dtype = Q.dtype.element_ty
    # The KV head's rows of the weights, read as [BLOCK_W, BLOCK_D] tiles (Wᵀ).
    w_rows = (kvh * D + offs_d).to(tl.int64)

    m_i = tl.full([BLOCK_G], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_G], tl.float32)
    acc = tl.zeros([BLOCK_G, BLOCK_D], tl.float32)
    for start in range(lo, tl.minimum(hi, n_cached), BLOCK_N):
        n = start + offs_n
        n_mask = n < tl.minimum(hi, n_cached)
        rows = n.to(tl.int64) * BATCH + b
        k_blk = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
        v_blk = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
        for w0 in range(0, W, BLOCK_W):
            w_mask = (w0 + offs_wl) < W
            wk = tl.load(WK + w_rows[None, :] * stride_wk + (w0 + offs_wl)[:, None],
                         mask=w_mask[:, None] & d_mask[None, :], other=0.0)
            wv = tl.load(WV + w_rows[None, :] * stride_wv + (w0 + offs_wl)[:, None],
                         mask=w_mask[:, None] & d_mask[None, :], other=0.0)
            xk = _x_tile(XKC, XKS, XKZ, rows, n_mask, w0, W, xk_row, xk_srow, QUANT, GROUP, BITS, BLOCK_W)
            k_blk += tl.dot(xk.to(WK.dtype.element_ty), wk, input_precision=PRECISION)
            xv = _x_tile(XVC, XVS, XVZ, rows, n_mask, w0, W, xv_row, xv_srow, QUANT, GROUP, BITS, BLOCK_W)
            v_blk += tl.dot(xv.to(WV.dtype.element_ty), wv, input_precision=PRECISION)
        s = tl.dot(q, tl.trans(k_blk.to(dtype)), input_precision=PRECISION) * sm_scale
        s = tl.where(n_mask[None, :], s, float("-inf"))
        acc, m_i, l_i = online_softmax_step(acc, m_i, l_i, s, v_blk.to(dtype))

    # This step's own tokens (positions n_cached.. in the split), straight from k_new / v_new.
    for start in range(tl.maximum(lo, n_cached), hi, BLOCK_N):
        n = start + offs_n
        n_mask = n < hi
        t = (n - n_cached).to(tl.int64)
        k = tl.load(KN + b * skn_b + kvh * skn_h + t[None, :] * skn_t + offs_d[:, None],
                    mask=d_mask[:, None] & n_mask[None, :], other=0.0)
        s = tl.dot(q, k, input_precision=PRECISION) * sm_scale
        s = tl.where(n_mask[None, :], s, float("-inf"))
        v = tl.load(VN + b * svn_b + kvh * svn_h + t[:, None] * svn_t + offs_d[None, :],
                    mask=n_mask[:, None] & d_mask[None, :], other=0.0)
        acc, m_i, l_i = online_softmax_step(acc, m_i, l_i, s, v)

    store_split(acc, m_i, l_i, rows_q, g_mask, offs_d, d_mask, Out, stride_ob, stride_oh, b, MidO, MidLse,
                 split, total_splits, H, D, DIRECT)


# ---------------------------------------------------------------------------------------------------------------
# Wrapper
def _rows(x) -> int:
    return x.codes.shape[0] if isinstance(x, GroupQuant) else x.shape[0]


def _width(x) -> int:
    return x.n if isinstance(x, GroupQuant) else x.shape[1]


def _check(q, k_new, v_new, x_k, w_k, x_v, w_v) -> None:
    check_tensor("q", q, ndim=3, dtypes=FLOAT_DTYPES)
    batch, heads, head_dim = q.shape
    check_tensor("k_new", k_new, ndim=4, dtypes=(q.dtype,), shape=(batch, None, None, head_dim))
    check_tensor("v_new", v_new, dtypes=(q.dtype,), shape=tuple(k_new.shape))
    kv_heads = k_new.shape[1]
    if heads % kv_heads:
        raise ValueError(f"k_new: expected kv_heads dividing heads={heads}, got kv_heads={kv_heads}")
    for name, x, w in (("x_k", x_k, w_k), ("x_v", x_v, w_v)):
        if not isinstance(x, (GroupQuant, torch.Tensor)):
            raise TypeError(f"{name}: expected a GroupQuant or a tensor, got {type(x).__name__}")
        if isinstance(x, torch.Tensor):
            check_tensor(name, x, ndim=2, dtypes=(q.dtype,))
        check_tensor(f"w_{name[-1]}", w, ndim=2, dtypes=(q.dtype,), shape=(kv_heads * head_dim, _width(x)))
        if _rows(x) % batch:
            raise ValueError(f"{name}: expected token-major rows (tokens × batch {batch}), got {_rows(x)} rows")
    if _rows(x_k) != _rows(x_v) or type(x_k) is not type(x_v):
        raise ValueError("x_v: expected the same kind and number of rows as x_k")


def _fused_ops(q, k_new, v_new, x_k, w_k, x_v=None, w_v=None, **_):
    batch, heads, head_dim = q.shape
    x_v = x_k if x_v is None else x_v
    kv_heads, t = k_new.shape[1], k_new.shape[2]
    return xquant_attention_ops(batch=batch, cached=_rows(x_k) // batch, new=t, heads=heads, kv_heads=kv_heads,
                                head_dim=head_dim, width=_width(x_k), shared=x_v is x_k,
                                quant=(x_k.bits, x_k.group_size) if isinstance(x_k, GroupQuant) else None,
                                dtype=dtype_name(q.dtype))


@kernel_launch(_fused_ops)
def xquant_decode_attention(q: torch.Tensor, k_new: torch.Tensor, v_new: torch.Tensor, x_k, w_k: torch.Tensor,
                            x_v=None, w_v: torch.Tensor | None = None, *, sm_scale: float | None = None,
                            num_splits: int | None = None, impl: str | None = None) -> torch.Tensor:
    """softmax(q·[K_cached; k_new]ᵀ)·[V_cached; v_new] with K_cached = X_k·w_kᵀ and V_cached = X_v·w_vᵀ made
    inside the kernel (see the module docstring); ``x_v``/``w_v`` default to ``x_k`` and the same weights
    are then not allowed (pass w_v). Returns [batch, heads, d] in q's dtype."""
    x_v = x_k if x_v is None else x_v
    if w_v is None:
        raise ValueError("w_v: expected the value weights [kv_dim, width], got None")
    _check(q, k_new, v_new, x_k, w_k, x_v, w_v)
    scale = default_sm_scale(q.shape[-1], sm_scale)
    batch, heads, head_dim = q.shape
    kv_heads, n_new = k_new.shape[1], k_new.shape[2]
    n_cached = _rows(x_k) // batch
    if resolve_impl(impl, q, k_new, w_k) == "torch":
        # The rematerialisation as a model runs it: a bf16 matmul stays bf16 (fp32 accumulation in the BLAS).
        return xquant_decode_attention_reference(q, k_new, v_new, x_k, w_k, x_v, w_v, sm_scale=scale,
                                                 remat_dtype=torch.bfloat16 if w_k.dtype == torch.bfloat16 else None)
    quant = isinstance(x_k, GroupQuant)
    width = _width(x_k)
    for name, t in (("q", q), ("k_new", k_new), ("v_new", v_new), ("w_k", w_k), ("w_v", w_v)):
        if t.stride(-1) != 1:
            raise ValueError(f"{name}: expected a contiguous last dimension, got strides {t.stride()}")
    if quant:
        group = x_k.group_size
        if x_v.bits != x_k.bits or x_v.group_size != group or group < 16 or group & (group - 1):
            raise ValueError(f"x_k, x_v: expected one bit width and a power-of-two group size ≥ 16, got "
                             f"{x_k.bits}/{x_v.bits} bits, groups {group}/{x_v.group_size}")
        xk = (x_k.codes, x_k.scale, x_k.zero)
        xv = (x_v.codes, x_v.scale, x_v.zero)
        strides = (x_k.codes.stride(0), x_k.scale.stride(0), x_v.codes.stride(0), x_v.scale.stride(0))
        bits = x_k.bits
    else:
        group, bits = 16, 8
        xk, xv = (x_k, x_k, x_k), (x_v, x_v, x_v)
        strides = (x_k.stride(0), 0, x_v.stride(0), 0)
    out = torch.empty_like(q)
    splits, split_len = choose_splits(batch * kv_heads, n_cached + n_new, q.device, num_splits)
    direct = splits == 1
    mid_o, mid_lse = (None, None) if direct else split_workspace(batch, heads, splits, head_dim, q.device)
    block_w = min(group, 64) if quant else min(64, next_power_of_2(width))
    _xquant_attention_kernel[(batch * kv_heads, splits)](
        q, *xk, *xv, w_k, w_v, k_new, v_new, out, out if direct else mid_o, out if direct else mid_lse, scale,
        q.stride(0), q.stride(1), out.stride(0), out.stride(1), *strides, w_k.stride(0), w_v.stride(0),
        *k_new.stride()[:3], *v_new.stride()[:3], kv_heads, heads, head_dim, width, batch, n_cached, n_new,
        split_len, splits, G=heads // kv_heads, QUANT=quant, GROUP=group, BITS=bits, DIRECT=direct,
        BLOCK_G=max(16, next_power_of_2(heads // kv_heads)), BLOCK_N=32 if q.is_cuda else 16,
        BLOCK_D=max(16, next_power_of_2(head_dim)), BLOCK_W=block_w, PRECISION=dot_precision(q.dtype))
    return out if direct else reduce_splits(mid_o, mid_lse, out)


# ---------------------------------------------------------------------------------------------------------------
# Ops
def xquant_attention_ops(*, batch, cached, new, heads, kv_heads, head_dim, width, shared: bool, quant,
                         dtype: str = "fp16") -> list[ops.Op]:
    """The fused kernel as the workloads count it: its rematerialisation GEMM part(s), never written
    (``write=False``), then the attention part, which reads only the ``new`` tokens' K and V from memory.

    One X shared by K and V: one GEMM [rows × width]·[width × 2·kv_dim]; separate latents (SVD): two GEMMs
    [rows × width]·[width × kv_dim]. A quantised X is read at bits/8 + scales per element and dequantised
    (2 FLOPs per element); rows = batch · cached tokens.
    """
    rows = batch * cached
    kv_dim = kv_heads * head_dim
    if quant is None:
        kw = {}
    else:
        bits, group = quant
        kw = dict(a_bytes=bits / 8.0 + SCALE_BYTES / group, dequant_flops=2.0 * rows * width)
    if shared:
        remat = [ops.gemm("xquant_remat", rows, 2 * kv_dim, width, dtype, write=False, phase="decode", **kw)]
    else:
        remat = [ops.gemm("xquant_remat", rows, kv_dim, width, dtype, write=False, phase="decode", **kw)
                 for _ in range(2)]
    attn = ops.attention("attention", batch, 1, cached + new, heads, kv_heads, head_dim, mask="bidirectional",
                         dtype=dtype, kv_bits=8.0 * bytes_per_element(dtype), kv_tokens_read=new, phase="decode")
    return remat + [attn]


# ---------------------------------------------------------------------------------------------------------------
# Reference
def rematerialise(x, w: torch.Tensor, batch: int, kv_heads: int, compute_dtype: torch.dtype) -> torch.Tensor:
    """K (or V) [batch, kv_heads, tokens, d] = X·wᵀ from token-major rows, rounded to w's dtype as stored."""
    xf = dequantize_groups(x, w.dtype) if isinstance(x, GroupQuant) else x
    kv = (xf.to(compute_dtype) @ w.to(compute_dtype).T).to(w.dtype)
    tokens = kv.shape[0] // batch
    return kv.reshape(tokens, batch, kv_heads, -1).permute(1, 2, 0, 3)


def xquant_decode_attention_reference(q, k_new, v_new, x_k, w_k, x_v=None, w_v=None, *, sm_scale=None,
                                      compute_dtype=None, remat_dtype=None):
    """Rematerialise K and V (in w's dtype; the products in ``remat_dtype``, default ``compute_dtype``), append
    this step's own, then plain decode attention."""
    x_v = x_k if x_v is None else x_v
    batch, kv_heads = q.shape[0], k_new.shape[1]
    cd = compute_dtype or (torch.float64 if q.dtype == torch.float64 else torch.float32)
    rd = remat_dtype or cd
    k = torch.cat([rematerialise(x_k, w_k, batch, kv_heads, rd).to(q.dtype), k_new], dim=2)
    v = torch.cat([rematerialise(x_v, w_v, batch, kv_heads, rd).to(q.dtype), v_new], dim=2)
    return decode_attention_reference(q, k, v, sm_scale=sm_scale, compute_dtype=compute_dtype)
