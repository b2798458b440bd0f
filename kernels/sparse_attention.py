"""Sparse decode attention over key clusters: Squeezed Attention and Multipole Attention.

Picture looking for a quote in a library whose shelves are labelled by topic: read the labels (centroid
lookup), pick the best shelves until enough books are in hand (cluster selection), read those books in full
(sparse flash-decoding); Multipole Attention (arXiv:2506.13059) also takes a one-line summary of every other
shelf — its centroid key and value, counted as many times as the shelf holds books — so that nothing is ignored
outright. Squeezed Attention (Hooper et al., arXiv:2411.09688) reads only the chosen shelves.

Steps, for q [batch, heads, d] and a cache k, v [batch, kv_heads, seq_len, d] clustered per KV head
(:func:`kmeans_keys`, :class:`KeyClusters` in :mod:`perfmodel.kernels.clusters`):

1. :func:`centroid_lookup`: S[b, g, c] = mean over the group's query heads of q·c_k (fp32). One selection per
   KV head, shared by its query heads (they read the same keys).
2. :func:`select_clusters`: clusters in decreasing score until they hold ``token_budget`` of the tokens
   (a fraction of seq_len, or a count); their token positions, ascending, form an int32 index list padded to
   the longest row, with a count per row. :func:`topk_clusters` is the plain top-k the model's op counts.
3. :func:`sparse_decode_attention` (Triton): flash-decoding whose key/value loads go through the index list.
4. :func:`multipole_attention`: 3 plus attention over the centroids of the clusters not selected, each score
   raised by log(cluster size) (a cluster of n identical keys weighs n times one key), the two parts merged
   by the split reduce's online softmax. With every cluster selected both equal dense attention; when each
   cluster's keys are identical multipole is exact for any budget.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from perfmodel import ops
from perfmodel.kernels._common import (FLOAT_DTYPES, check_same_device, check_tensor, compute_dtype_for, dtype_name,
                                       kernel_launch,
                                       default_sm_scale, dot_precision, jit, next_power_of_2, resolve_impl, tl)
from perfmodel.kernels.clusters import KeyClusters, kmeans_keys
from perfmodel.kernels.decode_attention import (BLOCK_N, check_decode_inputs, choose_splits,
                                                decode_attention_reference, launch_decode_split, online_softmax_step,
                                                reduce_splits, split_workspace, store_split)
from perfmodel.specs.model import bytes_per_element

__all__ = ["KeyClusters", "kmeans_keys", "centroid_lookup", "topk_clusters", "select_clusters", "Selection",
           "sparse_decode_attention", "squeezed_attention", "multipole_attention"]


# ---------------------------------------------------------------------------------------------------------------
# Triton kernel
@jit
def _sparse_decode_split_kernel(Q, K, V, Idx, Counts, Out, MidO, MidLse, sm_scale,
                                stride_qb, stride_qh, stride_kb, stride_kh, stride_kn, stride_vb, stride_vh,
                                stride_vn, stride_ob, stride_oh, KVH, H, D, n_idx, split_len, total_splits,
                                G: tl.constexpr, HAS_COUNTS: tl.constexpr, DIRECT: tl.constexpr,
                                BLOCK_G: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                                PRECISION: tl.constexpr):
    """One program = one (sequence, KV head) and one split of its index list (the first Counts[b, g] entries).

    Each step reads BLOCK_N positions from the index list, then those rows of K and V: the same tiles as
    dense flash-decoding, with row addresses from memory instead of consecutive ones.
    """
    pid = tl.program_id(0)
    split = tl.program_id(1)
    b = pid // KVH
    kvh = pid % KVH
    bk = b * KVH + kvh
    if HAS_COUNTS:
        count = tl.load(Counts + bk).to(tl.int32)
    else:
        count = n_idx
    lo = split * split_len
    hi = tl.minimum(lo + split_len, count)

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
        j = start + offs_n
        j_mask = j < hi
        pos = tl.load(Idx + bk * n_idx + j, mask=j_mask, other=0).to(tl.int64)
        k = tl.load(k_base + pos[None, :] * stride_kn + offs_d[:, None], mask=d_mask[:, None] & j_mask[None, :],
                    other=0.0)
        s = tl.dot(q, k, input_precision=PRECISION) * sm_scale
        s = tl.where(j_mask[None, :], s, float("-inf"))
        v = tl.load(v_base + pos[:, None] * stride_vn + offs_d[None, :], mask=j_mask[:, None] & d_mask[None, :],
                    other=0.0)
        acc, m_i, l_i = online_softmax_step(acc, m_i, l_i, s, v)

    store_split(acc, m_i, l_i, rows, g_mask, offs_d, d_mask, Out, stride_ob, stride_oh, b, MidO, MidLse,
                 split, total_splits, H, D, DIRECT)


def _launch_sparse_split(q, k, v, idx, counts, out, mid_o, mid_lse, *, sm_scale, splits, split_len, direct):
    batch, heads, head_dim = q.shape
    kv_heads = k.shape[1]
    group = heads // kv_heads
    _sparse_decode_split_kernel[(batch * kv_heads, splits)](
        q, k, v, idx, counts if counts is not None else idx, out, out if direct else mid_o,
        out if direct else mid_lse, sm_scale, q.stride(0), q.stride(1), k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2), out.stride(0), out.stride(1), kv_heads, heads, head_dim,
        idx.shape[2], split_len, 1 if direct else mid_lse.shape[1],
        G=group, HAS_COUNTS=counts is not None, DIRECT=direct, BLOCK_G=max(16, next_power_of_2(group)),
        BLOCK_N=BLOCK_N, BLOCK_D=max(16, next_power_of_2(head_dim)), PRECISION=dot_precision(q.dtype))


# ---------------------------------------------------------------------------------------------------------------
# Lookup and selection (torch)
def _lookup_op(q, centroids):
    return centroid_lookup_op(batch=q.shape[0], heads=q.shape[1], kv_heads=centroids.shape[-3],
                              centroids=centroids.shape[-2], head_dim=q.shape[2], dtype=dtype_name(centroids.dtype),
                              shared=centroids.dim() == 3)


@kernel_launch(_lookup_op)
def centroid_lookup(q: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """Scores fp32 [batch, kv_heads, C] = mean over each group's query heads of q·c.

    q [batch, heads, d]; centroids [kv_heads, C, d] (shared by the batch, e.g. a common prompt) or
    [batch, kv_heads, C, d]. Computed in fp32 whatever the inputs, so that a reference run in fp64 selects
    exactly the same clusters.
    """
    check_tensor("q", q, ndim=3, dtypes=FLOAT_DTYPES)
    check_tensor("centroids", centroids, dtypes=FLOAT_DTYPES)
    batch, heads, d = q.shape
    if centroids.dim() not in (3, 4) or centroids.shape[-1] != d or \
            (centroids.dim() == 4 and centroids.shape[0] != batch):
        raise ValueError(f"centroids: expected [kv_heads, C, {d}] or [{batch}, kv_heads, C, {d}], "
                         f"got {list(centroids.shape)}")
    kv_heads = centroids.shape[-3]
    if heads % kv_heads:
        raise ValueError(f"centroids: expected kv_heads dividing heads={heads}, got {kv_heads}")
    check_same_device(q=q, centroids=centroids)
    q_mean = q.float().reshape(batch, kv_heads, heads // kv_heads, d).mean(2)
    c = centroids.float()
    if c.dim() == 3:
        return torch.einsum("bkd,kcd->bkc", q_mean, c)
    return torch.einsum("bkd,bkcd->bkc", q_mean, c)


@kernel_launch(lambda scores, k: topk_clusters_op(rows=scores.numel() // scores.shape[-1], n=scores.shape[-1], k=k))
def topk_clusters(scores: torch.Tensor, k: int) -> torch.Tensor:
    """int32 indices [..., k] of the k largest scores of each row, best first."""
    check_tensor("scores", scores, dtypes=(torch.float32,))
    if not isinstance(k, int) or not 1 <= k <= scores.shape[-1]:
        raise ValueError(f"k={k!r}: expected an int in [1, {scores.shape[-1]}]")
    return torch.topk(scores, k, dim=-1).indices.to(torch.int32)


@dataclass(frozen=True)
class Selection:
    """Token positions to attend to exactly: idx int32 [batch, kv_heads, N] (ascending, the first counts[b, g]
    valid, the rest 0), counts int32 [batch, kv_heads], selected bool [batch, kv_heads, C] (chosen clusters)."""

    idx: torch.Tensor
    counts: torch.Tensor
    selected: torch.Tensor


def budget_tokens(token_budget: float | int, seq_len: int) -> int:
    """Tokens a budget asks for: a float in (0, 1] is a fraction of seq_len (rounded up), an int a count."""
    if isinstance(token_budget, bool) or not isinstance(token_budget, (int, float)):
        raise TypeError(f"token_budget: expected a float fraction in (0, 1] or an int count, "
                        f"got {type(token_budget).__name__}")
    if isinstance(token_budget, float):
        if not 0.0 < token_budget <= 1.0:
            raise ValueError(f"token_budget={token_budget!r}: expected a fraction in (0, 1]")
        return max(1, math.ceil(token_budget * seq_len))
    if token_budget < 1:
        raise ValueError(f"token_budget={token_budget!r}: expected a count ≥ 1")
    return min(token_budget, seq_len)


def select_clusters(scores: torch.Tensor, clusters: KeyClusters, token_budget: float | int) -> Selection:
    """Best-scoring clusters until they hold ``token_budget`` tokens, as the positions of their tokens."""
    check_tensor("scores", scores, dtypes=(torch.float32,), shape=tuple(clusters.sizes.shape))
    seq_len = clusters.seq_len
    need = budget_tokens(token_budget, seq_len)
    sizes = clusters.sizes
    ranked = scores.masked_fill(sizes == 0, float("-inf"))
    order = torch.argsort(ranked, dim=-1, descending=True, stable=True)
    sorted_sizes = sizes.gather(-1, order)
    before = torch.cumsum(sorted_sizes, dim=-1) - sorted_sizes  # tokens in better clusters
    keep = (before < need) & (sorted_sizes > 0)
    selected = torch.zeros_like(keep).scatter(-1, order, keep)
    token_mask = selected.gather(-1, clusters.labels)
    counts = token_mask.sum(-1)
    pos = torch.arange(seq_len, device=scores.device)
    ordered = torch.where(token_mask, pos, pos + seq_len).sort(dim=-1).values
    n = max(int(counts.max()), 1)
    idx = ordered[..., :n]
    idx = torch.where(idx < seq_len, idx, torch.zeros_like(idx)).to(torch.int32)
    return Selection(idx.contiguous(), counts.to(torch.int32), selected)


# ---------------------------------------------------------------------------------------------------------------
# Wrappers
def _sparse_op(q, k, v, idx, counts=None, **_):
    return sparse_decode_attention_op(batch=q.shape[0], selected=idx.shape[2], heads=q.shape[1], kv_heads=k.shape[1],
                                      head_dim=q.shape[2], dtype=dtype_name(k.dtype))


@kernel_launch(_sparse_op)
def sparse_decode_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, idx: torch.Tensor,
                            counts: torch.Tensor | None = None, *, sm_scale: float | None = None,
                            num_splits: int | None = None, impl: str | None = None) -> torch.Tensor:
    """Decode attention of q [batch, heads, d] over the positions idx int32 [batch, kv_heads, N] of
    k, v [batch, kv_heads, seq_len, d]; row (b, g) uses its first counts[b, g] indices (default all N)."""
    check_decode_inputs(q, k, v)
    batch, kv_heads = k.shape[0], k.shape[1]
    check_tensor("idx", idx, ndim=3, dtypes=(torch.int32,), shape=(batch, kv_heads, None))
    n_idx = idx.shape[2]
    if n_idx < 1:
        raise ValueError("idx: expected at least one position per row, got an empty index list")
    check_same_device(q=q, idx=idx, counts=counts)
    if counts is not None:
        check_tensor("counts", counts, dtypes=(torch.int32,), shape=(batch, kv_heads))
        if not counts.is_cuda and (counts.min() < 1 or counts.max() > n_idx):
            raise ValueError(f"counts: expected values in [1, {n_idx}], got [{int(counts.min())}, "
                             f"{int(counts.max())}]")
    if not idx.is_cuda and (idx.min() < 0 or idx.max() >= k.shape[2]):
        raise ValueError(f"idx: expected positions in [0, {k.shape[2]}), got [{int(idx.min())}, {int(idx.max())}]")
    scale = default_sm_scale(q.shape[-1], sm_scale)
    if resolve_impl(impl, q, k, v) == "torch":
        return sparse_decode_attention_reference(q, k, v, idx, counts, sm_scale=scale)
    q, k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v))
    idx = idx.contiguous()
    out = torch.empty_like(q)
    splits, split_len = choose_splits(batch * kv_heads, n_idx, q.device, num_splits)
    direct = splits == 1
    mid_o, mid_lse = (None, None) if direct else split_workspace(batch, q.shape[1], splits, q.shape[2], q.device)
    _launch_sparse_split(q, k, v, idx, counts, out, mid_o, mid_lse, sm_scale=scale, splits=splits,
                         split_len=split_len, direct=direct)
    return out if direct else reduce_splits(mid_o, mid_lse, out)


def squeezed_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, clusters: KeyClusters,
                       token_budget: float | int, *, sm_scale: float | None = None,
                       impl: str | None = None) -> torch.Tensor:
    """Squeezed Attention: centroid lookup, cluster selection, exact attention over the selected tokens."""
    sel = select_clusters(centroid_lookup(q, clusters.centroids), clusters, token_budget)
    return sparse_decode_attention(q, k, v, sel.idx, sel.counts, sm_scale=sm_scale, impl=impl)


def _multipole_bias(clusters: KeyClusters, selected: torch.Tensor) -> torch.Tensor:
    """log(size) for clusters left out of the exact part; −inf for selected and empty clusters."""
    log_size = clusters.sizes.float().clamp_min(1).log()
    return torch.where(selected | (clusters.sizes == 0), float("-inf"), log_size).contiguous()


def multipole_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, clusters: KeyClusters,
                        token_budget: float | int, *, sm_scale: float | None = None,
                        impl: str | None = None) -> torch.Tensor:
    """Multipole Attention: exact attention over the selected clusters' tokens + the other clusters as their
    size-weighted centroid keys/values, merged by one online softmax (see the module docstring)."""
    check_decode_inputs(q, k, v)
    if not isinstance(clusters, KeyClusters) or clusters.value_centroids is None:
        raise ValueError("clusters: expected KeyClusters with value centroids (kmeans_keys(..., values=v))")
    if tuple(clusters.labels.shape) != tuple(k.shape[:3]):
        raise ValueError(f"clusters: expected labels for k's {list(k.shape[:3])} positions, "
                         f"got {list(clusters.labels.shape)}")
    scale = default_sm_scale(q.shape[-1], sm_scale)
    sel = select_clusters(centroid_lookup(q, clusters.centroids), clusters, token_budget)
    bias = _multipole_bias(clusters, sel.selected)
    if resolve_impl(impl, q, k, v) == "torch":
        return multipole_attention_reference(q, k, v, clusters, token_budget, sm_scale=scale)
    q, k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v))
    batch, heads, head_dim = q.shape
    kv_heads = k.shape[1]
    cent_k = clusters.centroids.to(q.dtype)
    cent_v = clusters.value_centroids.to(q.dtype)
    # Splits [0, s1) hold the exact part, [s1, s1 + s2) the centroid part; one reduce merges them all.
    s1, len1 = choose_splits(batch * kv_heads, sel.idx.shape[2], q.device)
    s2, len2 = choose_splits(batch * kv_heads, clusters.n_clusters, q.device)
    out = torch.empty_like(q)
    mid_o, mid_lse = split_workspace(batch, heads, s1 + s2, head_dim, q.device)
    _launch_sparse_split(q, k, v, sel.idx, sel.counts, out, mid_o, mid_lse, sm_scale=scale, splits=s1,
                         split_len=len1, direct=False)
    launch_decode_split(q, cent_k, cent_v, out, mid_o, mid_lse, bias=bias, sm_scale=scale, splits=s2,
                        split_len=len2, split_offset=s1)
    return reduce_splits(mid_o, mid_lse, out)


def _multipole_ops(q, k, v, idx, cent_k, cent_v, bias, **_):
    batch, heads, head_dim = q.shape
    kv_heads, n_cent = cent_k.shape[1], cent_k.shape[2]
    exact = sparse_decode_attention_op(batch=batch, selected=idx.shape[2], heads=heads, kv_heads=kv_heads,
                                       head_dim=head_dim, dtype=dtype_name(k.dtype))
    rest = ops.attention("centroid_attention", batch, 1, n_cent, heads, kv_heads, head_dim, mask="bidirectional",
                         dtype=dtype_name(q.dtype), kv_bits=8.0 * bytes_per_element(dtype_name(cent_k.dtype)),
                         kv_scale_bytes=4.0 * batch * kv_heads * n_cent, phase="decode")
    return [exact, rest]


@kernel_launch(_multipole_ops)
def multipole_decode_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, idx: torch.Tensor,
                               cent_k: torch.Tensor, cent_v: torch.Tensor, bias: torch.Tensor, *,
                               sm_scale: float | None = None, impl: str | None = None) -> torch.Tensor:
    """Multipole attention with the selection made beforehand: exact attention over the positions ``idx``
    int32 [batch, kv_heads, N] of k, v, plus attention over the centroids cent_k, cent_v [batch, kv_heads, C, d]
    (q's dtype) whose scores are raised by ``bias`` fp32 [batch, kv_heads, C] (log of the cluster's tokens left
    out of ``idx``; −inf for none), merged by one online softmax (two split launches and one reduce)."""
    check_decode_inputs(q, k, v)
    batch, heads, head_dim = q.shape
    kv_heads = k.shape[1]
    check_tensor("idx", idx, ndim=3, dtypes=(torch.int32,), shape=(batch, kv_heads, None))
    check_tensor("cent_k", cent_k, ndim=4, dtypes=(q.dtype,), shape=(batch, kv_heads, None, head_dim))
    check_tensor("cent_v", cent_v, dtypes=(q.dtype,), shape=tuple(cent_k.shape))
    check_tensor("bias", bias, dtypes=(torch.float32,), shape=tuple(cent_k.shape[:3]))
    scale = default_sm_scale(head_dim, sm_scale)
    if resolve_impl(impl, q, k, v) == "torch":
        return multipole_decode_attention_reference(q, k, v, idx, cent_k, cent_v, bias, sm_scale=scale)
    q, k, v, cent_k, cent_v = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v, cent_k, cent_v))
    idx, bias = idx.contiguous(), bias.contiguous()
    s1, len1 = choose_splits(batch * kv_heads, idx.shape[2], q.device)
    s2, len2 = choose_splits(batch * kv_heads, cent_k.shape[2], q.device)
    out = torch.empty_like(q)
    mid_o, mid_lse = split_workspace(batch, heads, s1 + s2, head_dim, q.device)
    _launch_sparse_split(q, k, v, idx, None, out, mid_o, mid_lse, sm_scale=scale, splits=s1, split_len=len1,
                         direct=False)
    launch_decode_split(q, cent_k, cent_v, out, mid_o, mid_lse, bias=bias, sm_scale=scale, splits=s2,
                        split_len=len2, split_offset=s1)
    return reduce_splits(mid_o, mid_lse, out)


# ---------------------------------------------------------------------------------------------------------------
# Ops
def sparse_decode_attention_op(*, batch, selected, heads, kv_heads, head_dim, dtype: str = "fp16",
                               name: str = "sparse_attention") -> ops.Op:
    """Attention over ``selected`` gathered keys per KV head, + 4 bytes per index (as the workloads count it)."""
    return ops.attention(name, batch, 1, selected, heads, kv_heads, head_dim, mask="bidirectional", dtype=dtype,
                         kv_bits=8.0 * bytes_per_element(dtype), kv_scale_bytes=4.0 * batch * kv_heads * selected,
                         phase="decode")


def centroid_lookup_op(*, batch, heads, kv_heads, centroids, head_dim, dtype: str = "fp16", shared: bool = False,
                       name: str = "centroid_lookup") -> ops.Op:
    """One decode query per sequence against ``centroids`` centroids per KV head: each sequence's own
    ([batch, kv_heads, C, d]), or one set ``shared`` by the batch ([kv_heads, C, d])."""
    return ops.centroid_lookup(name, batch, 1, heads, kv_heads, centroids, head_dim, dtype, shared=shared,
                               phase="decode")


def topk_clusters_op(*, rows, n, k, name: str = "topk") -> ops.Op:
    """Scores [rows, n] fp32 read, int32 indices [rows, k] written (torch.topk also writes the k values)."""
    return ops.topk(name, rows, n, k, phase="decode")


# ---------------------------------------------------------------------------------------------------------------
# References
def sparse_decode_attention_reference(q, k, v, idx, counts=None, *, sm_scale=None, compute_dtype=None):
    """Gather the indexed rows, then dense decode attention with the counts as sequence lengths."""
    batch, kv_heads, n_idx = idx.shape
    rows = idx.long()[..., None].expand(-1, -1, -1, k.shape[-1])
    k_sel = k.gather(2, rows)
    v_sel = v.gather(2, rows)
    if counts is None:
        return decode_attention_reference(q, k_sel, v_sel, sm_scale=sm_scale, compute_dtype=compute_dtype)
    # Rows of one sequence may use different counts per KV head: mask by an additive −inf bias.
    hidden = torch.arange(n_idx, device=q.device) >= counts[..., None]
    bias = torch.zeros(batch, kv_heads, n_idx, device=q.device).masked_fill(hidden, float("-inf"))
    return decode_attention_reference(q, k_sel, v_sel, bias=bias, sm_scale=sm_scale, compute_dtype=compute_dtype)


def multipole_attention_reference(q, k, v, clusters: KeyClusters, token_budget, *, sm_scale=None,
                                  compute_dtype=None):
    """One explicit softmax over [selected tokens' scores, unselected centroids' scores + log size]."""
    cd = compute_dtype_for(q.dtype, compute_dtype)
    batch, heads, d = q.shape
    kv_heads, seq_len = k.shape[1], k.shape[2]
    scale = default_sm_scale(d, sm_scale)
    sel = select_clusters(centroid_lookup(q, clusters.centroids), clusters, token_budget)
    token_mask = sel.selected.gather(-1, clusters.labels)
    bias = _multipole_bias(clusters, sel.selected)
    # Centroids reach the kernel in q's dtype; the reference rounds them the same way.
    cent_k = clusters.centroids.to(q.dtype).to(cd)
    cent_v = clusters.value_centroids.to(q.dtype).to(cd)
    qg = q.to(cd).reshape(batch, kv_heads, heads // kv_heads, d)
    s_tok = torch.einsum("bkgd,bknd->bkgn", qg, k.to(cd)) * scale
    s_tok = s_tok.masked_fill(~token_mask[:, :, None, :], float("-inf"))
    s_cen = torch.einsum("bkgd,bkcd->bkgc", qg, cent_k) * scale + bias.to(cd)[:, :, None, :]
    p = torch.softmax(torch.cat([s_tok, s_cen], dim=-1), dim=-1)
    o = torch.einsum("bkgn,bknd->bkgd", p[..., :seq_len], v.to(cd))
    o = o + torch.einsum("bkgc,bkcd->bkgd", p[..., seq_len:], cent_v)
    return o.reshape(batch, heads, d).to(q.dtype)


def multipole_decode_attention_reference(q, k, v, idx, cent_k, cent_v, bias, *, sm_scale=None, compute_dtype=None):
    """One explicit softmax over [the indexed tokens' scores, the centroids' scores + bias]."""
    cd = compute_dtype_for(q.dtype, compute_dtype)
    batch, heads, d = q.shape
    kv_heads = k.shape[1]
    scale = default_sm_scale(d, sm_scale)
    rows = idx.long()[..., None].expand(-1, -1, -1, d)
    k_sel, v_sel = k.gather(2, rows).to(cd), v.gather(2, rows).to(cd)
    qg = q.to(cd).reshape(batch, kv_heads, heads // kv_heads, d)
    s_tok = torch.einsum("bkgd,bknd->bkgn", qg, k_sel) * scale
    s_cen = torch.einsum("bkgd,bkcd->bkgc", qg, cent_k.to(cd)) * scale + bias.to(cd)[:, :, None, :]
    p = torch.softmax(torch.cat([s_tok, s_cen], dim=-1), dim=-1)
    n = idx.shape[2]
    o = torch.einsum("bkgn,bknd->bkgd", p[..., :n], v_sel) + torch.einsum("bkgc,bkcd->bkgd", p[..., n:], cent_v.to(cd))
    return o.reshape(batch, heads, d).to(q.dtype)


def centroid_lookup_reference(q: torch.Tensor, centroids: torch.Tensor, *,
                              compute_dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Every query head's dot products with the centroids, then their mean over the group (in fp64 by default);
    the wrapper averages the queries first, which is the same sum in a different order."""
    batch, heads, d = q.shape
    c = centroids if centroids.dim() == 4 else centroids.expand(batch, *centroids.shape)
    kv_heads = c.shape[1]
    qg = q.to(compute_dtype).reshape(batch, kv_heads, heads // kv_heads, d)
    return torch.einsum("bkgd,bkcd->bkgc", qg, c.to(compute_dtype)).mean(2)


def topk_clusters_reference(scores: torch.Tensor, k: int) -> torch.Tensor:
    """A full stable sort, best first, cut at k."""
    return torch.argsort(scores, dim=-1, descending=True, stable=True)[..., :k].to(torch.int32)
