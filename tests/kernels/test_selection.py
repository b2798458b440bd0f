"""Fixed-size token selection, the in-place cluster update of a growing cache and multipole attention over a
given selection: against brute force and fp64 references, and the Ops' bytes."""
from __future__ import annotations

import pytest
import torch

from kernel_checks import assert_close_to_reference, randn, triton_cpu
from perfmodel.kernels._common import tensor_bytes
from perfmodel.kernels.clusters import assign_keys, assign_keys_op, kmeans_keys
from perfmodel.kernels.sparse_attention import (centroid_lookup, multipole_decode_attention,
                                                multipole_decode_attention_reference, multipole_attention_reference)
from perfmodel.kernels.selection import select_tokens, select_tokens_op, select_tokens_reference


def test_select_takes_the_best_clusters_whole_and_cuts_the_last():
    scores = torch.tensor([[[0.5, 3.0, 1.0]]])
    labels = torch.tensor([[[0, 1, 2, 1, 0, 2, 2, 0]]], dtype=torch.int32)  # cluster 1: 2 tokens, 2: 3, 0: 3
    idx, bias = select_tokens(scores, labels, 4, sizes=torch.tensor([[[3, 2, 3]]]))
    chosen = set(idx[0, 0].tolist())
    assert {1, 3} <= chosen and len(chosen & {2, 5, 6}) == 2 and not chosen & {0, 4, 7}
    # Left behind: all 3 of cluster 0, none of cluster 1, one of cluster 2.
    torch.testing.assert_close(bias, torch.tensor([[[torch.log(torch.tensor(3.0)), float("-inf"), 0.0]]]))


def test_select_matches_a_stable_sort_as_a_set():
    gen = torch.Generator().manual_seed(0)
    scores = torch.randn(2, 3, 20, generator=gen)
    labels = torch.randint(0, 20, (2, 3, 301), generator=gen, dtype=torch.int32)
    idx = select_tokens(scores, labels, 31)
    ref = select_tokens_reference(scores, labels, 31)
    # Ties (tokens of one cluster) may be cut anywhere: compare the multiset of the chosen tokens' scores.
    def chosen(i):
        return torch.sort(scores.gather(-1, labels.long()).gather(-1, i.long()), dim=-1).values
    assert torch.equal(chosen(idx), chosen(ref))
    op = select_tokens_op(rows=6, n=301, k=31)
    assert (op.read_bytes, op.write_bytes) == (tensor_bytes(labels), tensor_bytes(idx))
    with pytest.raises(ValueError, match=r"k=302: expected an int in \[1, 301\]"):
        select_tokens(scores, labels, 302)


def test_assign_keys_in_place_matches_the_functional_update():
    gen = torch.Generator().manual_seed(1)
    k = randn(2, 2, 70, 32, gen=gen)
    v = randn(2, 2, 70, 32, gen=gen)
    clusters = kmeans_keys(k[:, :, :64], 8, values=v[:, :, :64])
    want = clusters.update(k[:, :, 64:], v[:, :, 64:])
    cent, sizes, vcent = clusters.centroids.clone(), clusters.sizes.clone(), clusters.value_centroids.clone()
    low, vlow = cent.half(), vcent.half()
    labels = torch.full((2, 2, 80), -1, dtype=torch.int32)
    for t in range(64, 70):  # one decode step at a time
        assign_keys(k[:, :, t:t + 1], cent, low, sizes, labels[:, :, t:t + 1], new_values=v[:, :, t:t + 1],
                    value_centroids=vcent, value_low=vlow)
    one_at_a_time = clusters
    for t in range(64, 70):
        one_at_a_time = one_at_a_time.update(k[:, :, t:t + 1], v[:, :, t:t + 1])
    torch.testing.assert_close(cent, one_at_a_time.centroids)
    torch.testing.assert_close(vcent, one_at_a_time.value_centroids)
    assert torch.equal(sizes, one_at_a_time.sizes) and sizes.sum() == want.sizes.sum()
    assert torch.equal(labels[:, :, 64:70].long(), one_at_a_time.labels[:, :, 64:])
    assert torch.equal(low, cent.half())
    op = assign_keys_op(batch=2, tokens=1, kv_heads=2, centroids=8, head_dim=32, dtype="fp16")
    assert op.read_bytes == tensor_bytes(k[:, :, :1].half(), low)


@pytest.mark.parametrize("impl", [pytest.param("triton", marks=triton_cpu), "torch"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_multipole_over_a_given_selection_matches_fp64(impl, dtype):
    gen = torch.Generator().manual_seed(2)
    batch, heads, kv_heads, n, d, c = 2, 8, 2, 300, 64, 24
    q, k, v = randn(batch, heads, d, dtype=dtype, gen=gen), randn(batch, kv_heads, n, d, dtype=dtype, gen=gen), \
        randn(batch, kv_heads, n, d, dtype=dtype, gen=gen)
    clusters = kmeans_keys(k, c, values=v)
    cent_k, cent_v = clusters.centroids.to(dtype), clusters.value_centroids.to(dtype)
    idx, bias = select_tokens(centroid_lookup(q, cent_k), clusters.labels.int(), 37, sizes=clusters.sizes)
    out = multipole_decode_attention(q, k, v, idx, cent_k, cent_v, bias, impl=impl)
    ref = multipole_decode_attention_reference(q.double(), k.double(), v.double(), idx, cent_k.double(),
                                               cent_v.double(), bias)
    pt = multipole_decode_attention_reference(q, k, v, idx, cent_k, cent_v, bias, compute_dtype=dtype)
    assert_close_to_reference(out, ref, pt)


def test_multipole_with_whole_clusters_selected_equals_the_cluster_selection_reference():
    # When the selection holds whole clusters, the bias is log(size) of the others: the existing reference.
    gen = torch.Generator().manual_seed(3)
    q, k, v = randn(1, 4, 32, gen=gen), randn(1, 1, 60, 32, gen=gen), randn(1, 1, 60, 32, gen=gen)
    clusters = kmeans_keys(k, 6, values=v)
    best = int(centroid_lookup(q, clusters.centroids).argmax())
    size = int(clusters.sizes[0, 0, best])
    idx = torch.nonzero(clusters.labels[0, 0] == best)[:, 0].int()[None, None]
    rest = clusters.sizes.float().clone()
    rest[0, 0, best] = 0
    bias = torch.where(rest > 0, rest.clamp_min(1).log(), torch.tensor(float("-inf")))
    got = multipole_decode_attention(q, k, v, idx, clusters.centroids, clusters.value_centroids, bias)
    want = multipole_attention_reference(q, k, v, clusters, size)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
