"""Squeezed and Multipole attention over a K/V cache whose keys are clustered.

A library with labelled shelves (Hooper et al., arXiv:2411.09688; Multipole Attention, arXiv:2506.13059): the
prompt's keys are clustered once after the prefill (k-means per sequence and KV head, ⌈centroid_ratio ·
prompt⌉ clusters: :meth:`SparseCache.cluster`, the offline step the workload model leaves out); every decode
step then files the new token (K/V cache and its cluster: ``layer.cluster_update``), scores the query against
the centroids (``layer.centroid_lookup``), keeps exactly ⌈token_budget·context⌉ tokens of the best clusters
(``layer.topk``) and attends to them (``layer.attention``); Multipole also attends to every centroid weighted by
the tokens of its cluster left out (``layer.centroid_attention``, in the same kernel).
"""
from __future__ import annotations

import math

import torch

from perfmodel.kernels.clusters import assign_keys, kmeans_keys
from perfmodel.kernels.selection import select_tokens
from perfmodel.kernels.sparse_attention import (budget_tokens, centroid_lookup, multipole_decode_attention,
                                                sparse_decode_attention)
from perfmodel.reference.dense import KVCache, attend, heads_first
from perfmodel.reference.recorder import named
from perfmodel.reference.step import Step


class SparseCache(KVCache):
    def __init__(self, layers: int, batch: int, kv_heads: int, capacity: int, head_dim: int, dtype, device, *,
                 kind: str, token_budget: float, centroid_ratio: float, block_size: int, seed: int = 0):
        super().__init__(layers, batch, kv_heads, capacity, head_dim, dtype, device, block_size)
        self.kind, self.budget, self.ratio, self.seed = kind, token_budget, centroid_ratio, seed
        self.labels = [torch.empty(batch, kv_heads, capacity, dtype=torch.int32, device=device)
                       for _ in range(layers)]
        self.centroids: list = [None] * layers

    def cluster(self, prompt_len: int, iterations: int = 10) -> None:
        """k-means over the prompt's keys of every layer (the offline step): ⌈ratio·prompt⌉ clusters."""
        n = max(1, math.ceil(self.ratio * prompt_len))
        for layer in range(len(self.k)):
            k, v = self.k[layer][:, :, :prompt_len], self.v[layer][:, :, :prompt_len]
            found = kmeans_keys(k, n, values=v if self.kind == "multipole" else None, iters=iterations,
                                seed=self.seed + layer)
            self.labels[layer][:, :, :prompt_len].copy_(found.labels)
            vc = found.value_centroids
            self.centroids[layer] = dict(
                keys=found.centroids.clone(), keys_low=found.centroids.to(k.dtype), sizes=found.sizes.clone(),
                values=None if vc is None else vc.clone(), values_low=None if vc is None else vc.to(k.dtype))

    def attend(self, layer: int, step: Step, q, k, v, h) -> torch.Tensor:
        self.write(layer, step, k, v)
        ctx = step.context
        if step.phase != "decode":  # the prompt's own prefill is dense
            return attend(q, self.k[layer][:, :, :ctx], self.v[layer][:, :, :ctx], step, self.block_size)
        c = self.centroids[layer]
        if c is None:
            raise ValueError("sparse decode before clustering: call SparseCache.cluster after the prefill")
        with named("layer.cluster_update"):
            assign_keys(heads_first(k), c["keys"], c["keys_low"], c["sizes"],
                        self.labels[layer][:, :, step.start:step.end],
                        new_values=heads_first(v) if c["values"] is not None else None,
                        value_centroids=c["values"], value_low=c["values_low"])
        with named("layer.centroid_lookup"):
            scores = centroid_lookup(q[:, 0], c["keys_low"])
        keep = budget_tokens(float(self.budget), ctx)
        keys, values = self.k[layer][:, :, :ctx], self.v[layer][:, :, :ctx]
        batch, _, heads, d = q.shape
        with named("layer.topk"):
            picked = select_tokens(scores, self.labels[layer][:, :, :ctx], keep,
                                   sizes=c["sizes"] if self.kind == "multipole" else None)
        if self.kind == "multipole":
            idx, bias = picked
            with named("layer.attention", "layer.centroid_attention"):
                out = multipole_decode_attention(q[:, 0], keys, values, idx, c["keys_low"], c["values_low"], bias)
        else:
            with named("layer.attention"):
                out = sparse_decode_attention(q[:, 0], keys, values, picked)
        return out.reshape(batch, heads * d)
