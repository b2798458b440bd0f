"""Token selection for sparse attention: the best ``k`` cached tokens per (sequence, KV head) by their cluster's
score, with exactly ``k`` of them.

Picture a librarian who has scored every shelf (the centroid lookup) and now fills a trolley with exactly k
books: every book takes its shelf's score, the k best go on the trolley, so the best shelves go whole and the
last one only in part. Fixing k (⌈token_budget·context⌉) makes the attention that follows a fixed-size kernel,
the shape the workload model counts; a threshold on the scores would make it data-dependent. Multipole
attention also needs, per cluster, how many of its tokens stayed behind: their centroid stands in for them,
weighted by that count (``rest_bias`` = log(count), −inf when none stayed).

Shapes: scores fp32 [batch, kv_heads, C]; labels int32 [batch, kv_heads, n] (the cluster of each cached token);
returns idx int32 [batch, kv_heads, k] (and with ``sizes`` int [batch, kv_heads, C], the bias fp32
[batch, kv_heads, C]). torch.topk on CPU and CUDA alike (a selection kernel, as serving stacks run it).
"""
from __future__ import annotations

import torch

from perfmodel import ops
from perfmodel.kernels._common import check_same_device, check_tensor, kernel_launch


def _select_op(scores, labels, k, sizes=None):
    return select_tokens_op(rows=labels.shape[0] * labels.shape[1], n=labels.shape[2], k=k)


@kernel_launch(_select_op)
def select_tokens(scores: torch.Tensor, labels: torch.Tensor, k: int, sizes: torch.Tensor | None = None):
    """idx of the k best tokens (by their cluster's score); with ``sizes``, also (idx, rest_bias)."""
    check_tensor("scores", scores, ndim=3, dtypes=(torch.float32,))
    batch, kv_heads, n_clusters = scores.shape
    check_tensor("labels", labels, ndim=3, dtypes=(torch.int32, torch.int64), shape=(batch, kv_heads, None))
    n = labels.shape[2]
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= n:
        raise ValueError(f"k={k!r}: expected an int in [1, {n}] (the cached tokens)")
    check_same_device(scores=scores, labels=labels, sizes=sizes)
    lab = labels.long()
    token_scores = scores.gather(-1, lab)
    idx = torch.topk(token_scores, k, dim=-1, sorted=False).indices
    if sizes is None:
        return idx.to(torch.int32)
    check_tensor("sizes", sizes, dtypes=(torch.int32, torch.int64), shape=(batch, kv_heads, n_clusters))
    taken = torch.zeros_like(sizes).scatter_add_(-1, lab.gather(-1, idx), torch.ones_like(idx, dtype=sizes.dtype))
    rest = (sizes - taken).float()
    bias = torch.where(rest > 0, rest.clamp_min(1.0).log(), torch.full_like(rest, float("-inf")))
    return idx.to(torch.int32), bias


def select_tokens_op(*, rows, n, k, name: str = "topk") -> ops.Op:
    """A top-k of n per row over one 4-byte score (label) per cached token, k int32 indices written: the
    workloads' ``layer.topk``."""
    return ops.topk(name, rows, n, k)


def select_tokens_reference(scores: torch.Tensor, labels: torch.Tensor, k: int) -> torch.Tensor:
    """The k best tokens by a stable sort (ties: earlier positions first), as a set per row."""
    token_scores = scores.double().gather(-1, labels.long())
    return torch.argsort(token_scores, dim=-1, descending=True, stable=True)[..., :k].to(torch.int32)
