"""K-means clusters of the cached keys, per KV head, with an incremental update as decoding appends tokens.

Picture a librarian shelving books by topic: the shelves (clusters) are found once by grouping similar books,
each shelf labelled with the average of its books (the centroid); a new book goes on the shelf whose label is
closest, and that label shifts a little towards it. Squeezed Attention (Hooper et al., arXiv:2411.09688) and
Multipole Attention (arXiv:2506.13059) compare a query with the labels first and read only the best shelves.

- :func:`kmeans_keys`: Lloyd's algorithm on the keys of every (sequence, KV head) independently, in fp32,
  seeded by k-means++ from a seeded generator; it stops when no label changes.
- :meth:`KeyClusters.update`: new keys join their nearest centroid (as it stood before the step) and every
  touched centroid becomes the running mean (size·c + Σ new) / (size + n). Value centroids, when kept (multipole
  attention needs them), follow the same labels.
- :func:`assign_keys`: the same update in place, on the buffers of a cache that grows during decoding (fp32
  centroids and sizes, a copy of the centroids in the activation dtype for the lookup, labels written at the
  new tokens' positions): one launch per step and layer.
- Invariant after any of them: every centroid is the mean of the keys labelled with it; an empty cluster has
  size 0 (selection and multipole attention ignore it) and keeps its last centroid.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from perfmodel import ops
from perfmodel.kernels._common import FLOAT_DTYPES, check_tensor, dtype_name, kernel_launch


@dataclass(frozen=True)
class KeyClusters:
    """centroids [batch, kv_heads, C, d] fp32, sizes int64 [batch, kv_heads, C], labels int64
    [batch, kv_heads, seq_len], value_centroids [batch, kv_heads, C, d] fp32 or None."""

    centroids: torch.Tensor
    sizes: torch.Tensor
    labels: torch.Tensor
    value_centroids: torch.Tensor | None = None

    @property
    def n_clusters(self) -> int:
        return self.centroids.shape[2]

    @property
    def seq_len(self) -> int:
        return self.labels.shape[2]

    @classmethod
    def from_labels(cls, keys: torch.Tensor, labels: torch.Tensor, n_clusters: int,
                    values: torch.Tensor | None = None) -> "KeyClusters":
        """Clusters given by ``labels`` [batch, kv_heads, seq_len]: centroids are the members' means (zero for
        an empty cluster)."""
        check_tensor("keys", keys, ndim=4, dtypes=FLOAT_DTYPES)
        check_tensor("labels", labels, dtypes=(torch.int64,), shape=tuple(keys.shape[:3]))
        batch, kv_heads, seq_len, d = keys.shape
        if labels.numel() and (labels.min() < 0 or labels.max() >= n_clusters):
            raise ValueError(f"labels: expected values in [0, {n_clusters}), got [{int(labels.min())}, "
                             f"{int(labels.max())}]")
        flat = labels.reshape(-1, seq_len)
        zeros = torch.zeros(batch * kv_heads, n_clusters, d, device=keys.device)
        cent, sizes = _means(keys.float().reshape(-1, seq_len, d), flat, zeros)
        vcent = None
        if values is not None:
            check_tensor("values", values, shape=tuple(keys.shape))
            vcent, _ = _means(values.float().reshape(-1, seq_len, d), flat, zeros)
        shape = (batch, kv_heads, n_clusters)
        return cls(cent.reshape(*shape, d), sizes.reshape(shape), labels,
                   None if vcent is None else vcent.reshape(*shape, d))

    def update(self, new_keys: torch.Tensor, new_values: torch.Tensor | None = None) -> "KeyClusters":
        """The clusters after appending new_keys [batch, kv_heads, n, d] (and their values); a new object."""
        batch, kv_heads, n_clusters, d = self.centroids.shape
        check_tensor("new_keys", new_keys, ndim=4, dtypes=FLOAT_DTYPES, shape=(batch, kv_heads, None, d))
        if (new_values is None) != (self.value_centroids is None):
            raise ValueError("new_values: expected values exactly when the clusters keep value centroids "
                             f"(value_centroids is {'set' if self.value_centroids is not None else 'None'})")
        n = new_keys.shape[2]
        keys = new_keys.float().reshape(batch * kv_heads, n, d)
        cent = self.centroids.reshape(-1, n_clusters, d)
        sizes = self.sizes.reshape(-1, n_clusters)
        labels = _nearest(keys, cent)
        new_cent, new_sizes = _running_means(cent, sizes, keys, labels)
        vcent = None
        if new_values is not None:
            check_tensor("new_values", new_values, shape=tuple(new_keys.shape))
            vals = new_values.float().reshape(batch * kv_heads, n, d)
            vcent, _ = _running_means(self.value_centroids.reshape(-1, n_clusters, d), sizes, vals, labels)
            vcent = vcent.reshape(self.value_centroids.shape)
        return KeyClusters(new_cent.reshape(self.centroids.shape), new_sizes.reshape(self.sizes.shape),
                           torch.cat([self.labels, labels.reshape(batch, kv_heads, n)], dim=2), vcent)


def _nearest(x: torch.Tensor, cent: torch.Tensor) -> torch.Tensor:
    """Label of the nearest centroid (squared L2) for x [R, n, d] against cent [R, C, d]."""
    dist = (cent * cent).sum(-1)[:, None, :] - 2.0 * torch.bmm(x, cent.transpose(1, 2))
    return dist.argmin(-1)


def _means(x: torch.Tensor, labels: torch.Tensor, fallback: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-cluster means of x [R, n, d] by labels [R, n] (``fallback`` for empty clusters) and sizes."""
    c, d = fallback.shape[1:]
    r = fallback.shape[0]
    sums = torch.zeros(r, c, d, device=x.device, dtype=x.dtype).scatter_add_(1, labels[..., None].expand(-1, -1, d), x)
    sizes = torch.zeros(r, c, device=x.device, dtype=torch.int64).scatter_add_(1, labels, torch.ones_like(labels))
    cent = torch.where(sizes[..., None] > 0, sums / sizes.clamp_min(1)[..., None].to(x.dtype), fallback)
    return cent, sizes


def _running_means(cent, sizes, x, labels):
    """(size·c + Σ new) / (size + n_new) for every cluster that received new points."""
    d = cent.shape[2]
    sums = (cent * sizes[..., None].to(cent.dtype)).scatter_add(1, labels[..., None].expand(-1, -1, d), x)
    new_sizes = sizes.scatter_add(1, labels, torch.ones_like(labels))
    means = sums / new_sizes.clamp_min(1)[..., None].to(cent.dtype)
    return torch.where(new_sizes[..., None] > 0, means, cent), new_sizes


def _kmeans_plus_plus(x: torch.Tensor, n_clusters: int, gen: torch.Generator) -> torch.Tensor:
    """k-means++ seeding (Arthur & Vassilvitskii, 2007): each next centre is a point drawn with probability
    proportional to its squared distance from the centres so far, so that distant groups each get one."""
    r, n, d = x.shape
    rows = torch.arange(r, device=x.device)
    first = torch.randint(0, n, (r,), generator=gen, device=x.device)
    cent = x[rows, first][:, None, :]
    d2 = (x - cent).pow(2).sum(-1)
    for _ in range(1, n_clusters):
        # A point already chosen has d2 = 0; when every remaining d2 is 0 (duplicates), draw uniformly.
        weights = torch.where(d2.sum(-1, keepdim=True) > 0, d2, torch.ones_like(d2))
        nxt = x[rows, torch.multinomial(weights, 1, generator=gen)[:, 0]][:, None, :]
        cent = torch.cat([cent, nxt], dim=1)
        d2 = torch.minimum(d2, (x - nxt).pow(2).sum(-1))
    return cent


def kmeans_keys(keys: torch.Tensor, n_clusters: int, *, values: torch.Tensor | None = None, iters: int = 25,
                seed: int = 0) -> KeyClusters:
    """Cluster keys [batch, kv_heads, seq_len, d] into ``n_clusters`` per (sequence, KV head) by Lloyd's k-means.

    ``values`` (same shape), when given, get value centroids under the same labels (for multipole attention).
    """
    check_tensor("keys", keys, ndim=4, dtypes=FLOAT_DTYPES)
    batch, kv_heads, seq_len, d = keys.shape
    if not isinstance(n_clusters, int) or not 1 <= n_clusters <= seq_len:
        raise ValueError(f"n_clusters={n_clusters!r}: expected an int in [1, seq_len={seq_len}]")
    if not isinstance(iters, int) or iters < 1:
        raise ValueError(f"iters={iters!r}: expected a positive int")
    x = keys.float().reshape(batch * kv_heads, seq_len, d)
    cent = _kmeans_plus_plus(x, n_clusters, torch.Generator(device=keys.device).manual_seed(seed))
    labels = _nearest(x, cent)
    for _ in range(iters):
        cent, _ = _means(x, labels, cent)
        relabelled = _nearest(x, cent)
        if torch.equal(relabelled, labels):
            break
        labels = relabelled
    cent, sizes = _means(x, labels, cent)
    shape = (batch, kv_heads, n_clusters)
    vcent = None
    if values is not None:
        check_tensor("values", values, shape=tuple(keys.shape))
        vcent, _ = _means(values.float().reshape(x.shape), labels, torch.zeros_like(cent))
        vcent = vcent.reshape(*shape, d)
    return KeyClusters(cent.reshape(*shape, d), sizes.reshape(shape), labels.reshape(batch, kv_heads, seq_len), vcent)


def _assign_op(new_keys, centroids, centroids_low, sizes, labels, **_):
    batch, kv_heads, n, d = new_keys.shape
    return assign_keys_op(batch=batch, tokens=n, kv_heads=kv_heads, centroids=centroids.shape[2], head_dim=d,
                          dtype=dtype_name(centroids_low.dtype))


@kernel_launch(_assign_op)
def assign_keys(new_keys: torch.Tensor, centroids: torch.Tensor, centroids_low: torch.Tensor, sizes: torch.Tensor,
                labels: torch.Tensor, *, new_values: torch.Tensor | None = None,
                value_centroids: torch.Tensor | None = None, value_low: torch.Tensor | None = None) -> None:
    """In place: each of new_keys [batch, kv_heads, n, d] joins its nearest centroid (fp32 ``centroids``
    [batch, kv_heads, C, d], as they stood before the step); touched centroids become running means, ``sizes``
    int64 [batch, kv_heads, C] grow, ``labels`` [batch, kv_heads, n] (a view at the new positions) get the
    labels, and ``centroids_low`` (the lookup's copy in the activation dtype) follows. Value centroids, when
    given (multipole), follow the same labels."""
    check_tensor("new_keys", new_keys, ndim=4, dtypes=FLOAT_DTYPES)
    batch, kv_heads, n, d = new_keys.shape
    check_tensor("centroids", centroids, dtypes=(torch.float32,), shape=(batch, kv_heads, None, d))
    c = centroids.shape[2]
    check_tensor("centroids_low", centroids_low, dtypes=FLOAT_DTYPES, shape=(batch, kv_heads, c, d))
    check_tensor("sizes", sizes, dtypes=(torch.int64,), shape=(batch, kv_heads, c))
    check_tensor("labels", labels, dtypes=(torch.int32, torch.int64), shape=(batch, kv_heads, n))
    keys = new_keys.float().reshape(batch * kv_heads, n, d)
    cent = centroids.reshape(-1, c, d)
    size = sizes.reshape(-1, c)
    lab = _nearest(keys, cent)
    new_cent, new_sizes = _running_means(cent, size, keys, lab)
    if new_values is not None:
        check_tensor("new_values", new_values, shape=tuple(new_keys.shape))
        vals = new_values.float().reshape(batch * kv_heads, n, d)
        vcent, _ = _running_means(value_centroids.reshape(-1, c, d), size, vals, lab)
        value_centroids.copy_(vcent.reshape(value_centroids.shape))
        value_low.copy_(value_centroids)
    centroids.copy_(new_cent.reshape(centroids.shape))
    centroids_low.copy_(centroids)
    sizes.copy_(new_sizes.reshape(sizes.shape))
    labels.copy_(lab.reshape(batch, kv_heads, n))


def assign_keys_op(*, batch, tokens, kv_heads, centroids, head_dim, dtype: str = "fp16",
                   name: str = "cluster_update") -> ops.Op:
    """As the workloads count it (``layer.cluster_update``): a centroid lookup of one key per KV head (the
    KV head's own 'query') against its C centroids, per sequence."""
    return ops.centroid_lookup(name, batch, tokens, kv_heads, kv_heads, centroids, head_dim, dtype)
