"""Clusters, centroid lookup, selection, sparse flash-decoding and Squeezed/Multipole attention: against fp64
references, against dense attention where they must equal it, and the Ops' bytes."""
from __future__ import annotations

import pytest
import torch

from kernel_checks import assert_close_to_reference, cuda, randn, triton_cpu
from perfmodel.kernels._common import dtype_name, tensor_bytes
from perfmodel.kernels.decode_attention import decode_attention_reference
from perfmodel.kernels.sparse_attention import (KeyClusters, budget_tokens, centroid_lookup, centroid_lookup_op,
                                                centroid_lookup_reference, kmeans_keys, multipole_attention,
                                                multipole_attention_reference, select_clusters,
                                                sparse_decode_attention, sparse_decode_attention_op,
                                                sparse_decode_attention_reference, squeezed_attention,
                                                topk_clusters, topk_clusters_op, topk_clusters_reference)


def make(batch, heads, kv_heads, seq_len, head_dim, dtype, device="cpu", seed=0):
    gen = torch.Generator().manual_seed(seed)
    return (randn(batch, heads, head_dim, dtype=dtype, device=device, gen=gen),
            randn(batch, kv_heads, seq_len, head_dim, dtype=dtype, device=device, gen=gen),
            randn(batch, kv_heads, seq_len, head_dim, dtype=dtype, device=device, gen=gen))


def member_means(x: torch.Tensor, clusters: KeyClusters) -> torch.Tensor:
    """Mean of x [batch, kv_heads, seq_len, d] over each cluster's members, fp64, by brute force."""
    out = torch.zeros(clusters.centroids.shape, dtype=torch.float64)
    for b in range(x.shape[0]):
        for g in range(x.shape[1]):
            for c in range(clusters.n_clusters):
                members = clusters.labels[b, g] == c
                if members.any():
                    out[b, g, c] = x[b, g, members].double().mean(0)
    return out


# ---------------------------------------------------------------------------------------------------------------
# Clusters
def test_kmeans_finds_well_separated_clusters():
    gen = torch.Generator().manual_seed(0)
    centres = randn(1, 2, 6, 32, gen=gen, scale=10.0)
    truth = torch.randint(0, 6, (1, 2, 300), generator=gen)
    truth[..., :6] = torch.arange(6)
    keys = centres.gather(2, truth[..., None].expand(-1, -1, -1, 32)) + randn(1, 2, 300, 32, gen=gen, scale=0.1)
    clusters = kmeans_keys(keys, 6, seed=1)
    for g in range(2):  # the same partition up to renaming: labels agree on every pair of points
        same_truth = truth[0, g][:, None] == truth[0, g][None, :]
        same_found = clusters.labels[0, g][:, None] == clusters.labels[0, g][None, :]
        assert torch.equal(same_truth, same_found)
    torch.testing.assert_close(clusters.centroids.double(), member_means(keys, clusters), rtol=0, atol=1e-5)
    assert clusters.sizes.sum(-1).tolist() == [[300, 300]]


def test_update_assigns_new_keys_to_the_nearest_centroid_and_keeps_running_means():
    _, k, v = make(2, 4, 2, 97, 64, torch.float32)
    clusters = kmeans_keys(k[:, :, :90], 8, values=v[:, :, :90])
    before = clusters.centroids.clone()
    updated = clusters.update(k[:, :, 90:], v[:, :, 90:])
    new_labels = updated.labels[:, :, 90:]
    dist = torch.cdist(k[:, :, 90:].double(), before.double())
    assert torch.equal(new_labels, dist.argmin(-1))
    assert updated.sizes.sum(-1).tolist() == [[97, 97], [97, 97]]
    # Running means equal the means of all members, old and new.
    torch.testing.assert_close(updated.centroids.double(), member_means(k, updated), rtol=0, atol=1e-5)
    torch.testing.assert_close(updated.value_centroids.double(), member_means(v, updated), rtol=0, atol=1e-5)
    assert torch.equal(clusters.centroids, before)  # the old object is unchanged


# ---------------------------------------------------------------------------------------------------------------
# Lookup and selection
@pytest.mark.parametrize("heads,kv_heads,shared", [(4, 4, False), (8, 2, True), (8, 1, False)])
def test_centroid_lookup_is_the_group_mean_of_query_dot_centroid(heads, kv_heads, shared):
    q, k, _ = make(2, heads, kv_heads, 97, 64, torch.float16)
    cent = kmeans_keys(k, 12).centroids
    cent = cent[0] if shared else cent
    scores = centroid_lookup(q, cent)
    assert scores.dtype == torch.float32 and scores.shape == (2, kv_heads, 12)
    ref = centroid_lookup_reference(q, cent)
    pt = centroid_lookup_reference(q, cent, compute_dtype=torch.float32)
    assert_close_to_reference(scores, ref, pt.float())


def test_topk_clusters_matches_a_full_sort():
    scores = randn(2, 4, 50, gen=torch.Generator().manual_seed(1))
    idx = topk_clusters(scores, 7)
    assert idx.dtype == torch.int32
    assert torch.equal(idx, topk_clusters_reference(scores, 7))


@pytest.mark.parametrize("budget", [1, 0.1, 0.25, 97, 1.0])
def test_selection_covers_the_budget_with_the_best_clusters(budget):
    q, k, _ = make(2, 8, 2, 97, 64, torch.float32)
    clusters = kmeans_keys(k, 10)
    scores = centroid_lookup(q, clusters.centroids)
    sel = select_clusters(scores, clusters, budget)
    need = budget_tokens(budget, 97)
    for b in range(2):
        for g in range(2):
            chosen = sel.selected[b, g]
            n = int(sel.counts[b, g])
            assert n == int(clusters.sizes[b, g][chosen].sum()) >= need
            # Minimal: without its worst chosen cluster the selection would fall short of the budget.
            worst = scores[b, g].masked_fill(~chosen, float("inf")).argmin()
            assert n - int(clusters.sizes[b, g, worst]) < need
            # Every chosen cluster scores at least as high as every cluster left out.
            if (~chosen).any():
                assert scores[b, g][chosen].min() >= scores[b, g][~chosen].max()
            positions = sel.idx[b, g, :n]
            assert torch.equal(positions, torch.sort(positions).values)
            assert chosen[clusters.labels[b, g, positions.long()]].all()


# ---------------------------------------------------------------------------------------------------------------
# Sparse flash-decoding
# batch, heads, kv_heads, seq_len, selected, head_dim, dtype, ragged counts, num_splits
CASES = [
    (2, 4, 4, 200, 97, 64, torch.float32, True, None),
    (1, 8, 1, 2000, 1025, 128, torch.float16, False, None),
    (2, 8, 2, 300, 97, 128, torch.float16, True, 2),
    (2, 8, 1, 50, 1, 64, torch.float32, False, None),
]


def random_selection(batch, kv_heads, seq_len, selected, ragged, gen):
    idx = torch.stack([torch.stack([torch.randperm(seq_len, generator=gen)[:selected].sort().values
                                    for _ in range(kv_heads)]) for _ in range(batch)]).to(torch.int32)
    counts = torch.randint(1, selected + 1, (batch, kv_heads), generator=gen, dtype=torch.int32) if ragged else None
    return idx, counts


@triton_cpu
@pytest.mark.parametrize("batch,heads,kv_heads,seq_len,selected,head_dim,dtype,ragged,num_splits", CASES)
def test_sparse_triton_matches_fp64_reference(batch, heads, kv_heads, seq_len, selected, head_dim, dtype, ragged,
                                              num_splits):
    q, k, v = make(batch, heads, kv_heads, seq_len, head_dim, dtype)
    idx, counts = random_selection(batch, kv_heads, seq_len, selected, ragged, torch.Generator().manual_seed(2))
    out = sparse_decode_attention(q, k, v, idx, counts, num_splits=num_splits, impl="triton")
    ref = sparse_decode_attention_reference(q.double(), k.double(), v.double(), idx, counts)
    pt = sparse_decode_attention_reference(q, k, v, idx, counts, compute_dtype=dtype)
    assert_close_to_reference(out, ref, pt)


@pytest.mark.parametrize("impl", [pytest.param("triton", marks=triton_cpu), "torch"])
@pytest.mark.parametrize("method", [squeezed_attention, multipole_attention])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_budget_of_all_tokens_equals_dense_attention(method, impl, dtype):
    q, k, v = make(2, 8, 2, 97, 64, dtype)
    clusters = kmeans_keys(k, 9, values=v)
    out = method(q, k, v, clusters, 1.0, impl=impl)
    ref = decode_attention_reference(q.double(), k.double(), v.double())
    pt = decode_attention_reference(q, k, v, compute_dtype=dtype)
    assert_close_to_reference(out, ref, pt)


@pytest.mark.parametrize("impl", [pytest.param("triton", marks=triton_cpu), "torch"])
def test_multipole_is_exact_when_each_cluster_holds_identical_keys(impl):
    # n identical keys with values v_i contribute exp(s)·Σv_i = exp(s + log n)·mean(v): the centroid term.
    gen = torch.Generator().manual_seed(3)
    q = randn(2, 8, 64, gen=gen)
    distinct = randn(2, 2, 12, 64, gen=gen)
    labels = torch.randint(0, 12, (2, 2, 200), generator=gen)
    k = distinct.gather(2, labels[..., None].expand(-1, -1, -1, 64)).contiguous()
    v = randn(2, 2, 200, 64, gen=gen)
    clusters = KeyClusters.from_labels(k, labels, 12, values=v)
    out = multipole_attention(q, k, v, clusters, 0.2, impl=impl)
    ref = decode_attention_reference(q.double(), k.double(), v.double())
    pt = decode_attention_reference(q, k, v)
    assert_close_to_reference(out, ref, pt)
    # ... while Squeezed attention, which drops the other clusters, is not.
    assert (squeezed_attention(q, k, v, clusters, 0.2, impl=impl) - out).abs().max() > 1e-2


@triton_cpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("budget", [0.1, 0.3])
def test_multipole_triton_matches_fp64_reference(budget, dtype):
    q, k, v = make(2, 8, 2, 300, 64, dtype)
    clusters = kmeans_keys(k, 16, values=v)
    out = multipole_attention(q, k, v, clusters, budget, impl="triton")
    ref = multipole_attention_reference(q.double(), k.double(), v.double(), clusters, budget)
    pt = multipole_attention_reference(q, k, v, clusters, budget, compute_dtype=dtype)
    assert_close_to_reference(out, ref, pt)
    # Between the two extremes: closer to dense attention than Squeezed attention is, on this data.
    dense = decode_attention_reference(q.double(), k.double(), v.double())
    squeezed = squeezed_attention(q, k, v, clusters, budget, impl="triton")
    assert (out.double() - dense).pow(2).mean() < (squeezed.double() - dense).pow(2).mean()


# ---------------------------------------------------------------------------------------------------------------
# Ops
@triton_cpu
def test_op_bytes_equal_the_tensors_read_and_written():
    q, k, v = make(2, 8, 2, 300, 64, torch.float16)
    idx, _ = random_selection(2, 2, 300, 97, False, torch.Generator().manual_seed(4))
    out = sparse_decode_attention(q, k, v, idx, num_splits=1, impl="triton")
    op = sparse_decode_attention_op(batch=2, selected=97, heads=8, kv_heads=2, head_dim=64,
                                    dtype=dtype_name(q.dtype))
    rows_read = 2 * idx.numel() * 64 * k.element_size()  # the selected rows of K and V, not the whole cache
    assert op.read_bytes == tensor_bytes(q, idx) + rows_read
    assert op.write_bytes == tensor_bytes(out)

    cent = kmeans_keys(k, 16).centroids.half()  # [batch, kv_heads, C, d]: each sequence's own clusters
    scores = centroid_lookup(q, cent)
    op = centroid_lookup_op(batch=2, heads=8, kv_heads=2, centroids=16, head_dim=64, dtype="fp16")
    assert (op.read_bytes, op.write_bytes) == (tensor_bytes(q, cent), tensor_bytes(scores))
    shared = cent[0]  # [kv_heads, C, d], one set for the whole batch
    op = centroid_lookup_op(batch=2, heads=8, kv_heads=2, centroids=16, head_dim=64, dtype="fp16", shared=True)
    assert (op.read_bytes, op.write_bytes) == (tensor_bytes(q, shared), tensor_bytes(centroid_lookup(q, shared)))

    top = topk_clusters(scores, 4)
    op = topk_clusters_op(rows=2 * 2, n=16, k=4)
    assert (op.read_bytes, op.write_bytes) == (tensor_bytes(scores), tensor_bytes(top))


def test_rejects_bad_inputs_saying_expected_and_got():
    q, k, v = make(1, 4, 2, 40, 64, torch.float32)
    idx = torch.zeros(1, 2, 5, dtype=torch.int32)
    with pytest.raises(TypeError, match="idx: expected dtype"):
        sparse_decode_attention(q, k, v, idx.long())
    with pytest.raises(ValueError, match=r"idx: expected positions in \[0, 40\)"):
        sparse_decode_attention(q, k, v, idx + 40)
    with pytest.raises(ValueError, match=r"token_budget=1.5: expected a fraction in \(0, 1\]"):
        squeezed_attention(q, k, v, kmeans_keys(k, 4), 1.5)
    with pytest.raises(ValueError, match="expected KeyClusters with value centroids"):
        multipole_attention(q, k, v, kmeans_keys(k, 4), 0.5)
    with pytest.raises(ValueError, match=r"n_clusters=41: expected an int in \[1, seq_len=40\]"):
        kmeans_keys(k, 41)


@cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_compiled_on_cuda(dtype):
    q, k, v = make(4, 32, 8, 4097, 128, dtype, device="cuda")
    clusters = kmeans_keys(k, 64, values=v)
    for budget in (0.1, 1.0):
        out = multipole_attention(q, k, v, clusters, budget, impl="triton")
        ref = multipole_attention_reference(q.double(), k.double(), v.double(), clusters, budget)
        assert_close_to_reference(out, ref, multipole_attention_reference(q, k, v, clusters, budget,
                                                                          compute_dtype=dtype))
        sel = select_clusters(centroid_lookup(q, clusters.centroids), clusters, budget)
        out = sparse_decode_attention(q, k, v, sel.idx, sel.counts, impl="triton")
        ref = sparse_decode_attention_reference(q.double(), k.double(), v.double(), sel.idx, sel.counts)
        assert_close_to_reference(out, ref, sparse_decode_attention_reference(q, k, v, sel.idx, sel.counts,
                                                                              compute_dtype=dtype))
