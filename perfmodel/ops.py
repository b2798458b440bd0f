"""The Op record and the FLOP and byte formulas of every op kind.

An op is one kernel launch described by what it must do: how many floating-point operations, how many bytes it
must read and write at minimum (each operand once, from wherever it lives), and how many bytes its tiles re-read
through the last-level on-chip cache. Workloads produce ops, engines time them, kernels implement them and
validation measures them: this record is the currency between all four.

Every numeric field may be a NumPy array (one value per point of a sweep grid): formulas use only arithmetic
and ``np.maximum``/``np.ceil`` so that they broadcast.

Conventions: a multiply-add is 2 FLOPs; ``a``, ``w``, ``o`` are bytes per element of activations, weights and
outputs; tokens = rows of the activation matrix.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, Mapping

import numpy as np

from perfmodel.specs.model import bytes_per_element

KINDS = ("gemm", "attention", "norm", "elementwise", "embedding", "quantize", "dequantize", "gather",
         "centroid_lookup", "topk", "allreduce")

# Tile edges that set the L2 re-read traffic of a GEMM: Hopper kernels use 128x256 CTA tiles in 2-CTA clusters
# whose TMA multicast shares one operand, so L2 sees about one 256x256 tile's loads; the query block of flash
# attention is 128 rows (FlashAttention-2/3).
GEMM_TILE_M = 256
GEMM_TILE_N = 256
ATTN_BLOCK_Q = 128


@dataclass(frozen=True)
class Op:
    """One kernel. Byte and FLOP fields are per instance; ``count`` instances run (e.g. once per layer per step)."""

    name: str
    kind: str
    phase: str
    shape: Mapping[str, Any]
    dtype: str
    flops: Any
    read_bytes: Any
    write_bytes: Any
    l2_bytes: Any = None
    count: Any = 1
    unit: str = "tensor"
    # Bytes touched between two uses of this op's inputs: decides which memory level serves them. Infinite for
    # the ops of a model step (weights and caches stream from main memory); finite for a repeated benchmark.
    reuse_bytes: Any = math.inf
    # Extra work on the vector units inside the same kernel (e.g. dequantising a KV cache inside attention).
    vector_flops: Any = 0.0

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"op {self.name!r}: kind {self.kind!r} is not one of {', '.join(KINDS)}")
        object.__setattr__(self, "shape", MappingProxyType(dict(self.shape)))
        if self.l2_bytes is None:
            object.__setattr__(self, "l2_bytes", self.bytes)

    @property
    def bytes(self) -> Any:
        """Minimal bytes moved: every operand read once, every output written once."""
        return self.read_bytes + self.write_bytes

    @property
    def arithmetic_intensity(self) -> Any:
        """FLOPs per byte of minimal traffic (the x-axis of a roofline)."""
        return self.flops / np.maximum(self.bytes, 1e-30)

    def with_count(self, count: Any, phase: str | None = None) -> "Op":
        return replace(self, count=count, phase=phase or self.phase)

    def __repr__(self) -> str:  # short, for logs and test failures
        return f"Op({self.name}, {self.kind}, {dict(self.shape)}, flops={self.flops}, bytes={self.bytes})"


def point(op: Op, i: int) -> Op:
    """Point ``i`` of an op whose fields are arrays of points (one per row of a measurement table), as an op of
    scalars; scalar fields stay as they are."""
    def pick(v):
        arr = np.asarray(v)
        return arr.reshape(-1)[i].item() if arr.ndim and arr.size > 1 else (arr.item() if arr.ndim else v)
    shape = {k: pick(v) if not isinstance(v, str) else v for k, v in op.shape.items()}
    return Op(op.name, op.kind, op.phase, shape, op.dtype, pick(op.flops), pick(op.read_bytes),
              pick(op.write_bytes), pick(op.l2_bytes), pick(op.count), op.unit, pick(op.reuse_bytes),
              pick(op.vector_flops))


def _b(dtype: str) -> float:
    return bytes_per_element(dtype)


# ---------------------------------------------------------------------------------------------------------------
def gemm(name: str, m, n, k, dtype: str = "bf16", *, weight_dtype: str | None = None, out_dtype: str | None = None,
         bias: bool = False, phase: str = "", count=1, weight_scale_bytes=0.0, a_bytes=None, write: bool = True,
         dequant_flops=0.0) -> Op:
    """C[m,n] = A[m,k] · B[k,n] (+ bias): a linear layer over m tokens.

    FLOPs = 2·m·n·k (one multiply-add per (i, j, l)); + m·n for a bias.
    Minimal bytes = A once (m·k·a) + B once (k·n·w) + C once (m·n·o) (+ n·o bias, + scales of a quantised B).
    On-chip re-reads: with TILE_M×TILE_N output tiles each A row-panel is read once per column of tiles and each
    B column-panel once per row of tiles: m·k·a·⌈n/TN⌉ + k·n·w·⌈m/TM⌉ + m·n·o served by the L2.
    ``a_bytes`` overrides the bytes per element of A (a quantised X cache); ``write=False`` keeps C on chip (a
    fused consumer reads it); ``dequant_flops`` is vector work spent unpacking a quantised operand.
    """
    a, o = _b(dtype) if a_bytes is None else a_bytes, _b(out_dtype or dtype)
    w = _b(weight_dtype or dtype)
    flops = 2.0 * m * n * k + (m * n if bias else 0)
    read = m * k * a + k * n * w + weight_scale_bytes + (n * o if bias else 0)
    stores = bool(write)
    write = m * n * o if stores else 0.0 * m
    l2 = m * k * a * np.ceil(n / GEMM_TILE_N) + (k * n * w + weight_scale_bytes) * np.ceil(m / GEMM_TILE_M) + write
    unit = "tensor" if (weight_dtype or dtype) not in ("fp32", "fp64") else "vector"
    shape = {"m": m, "n": n, "k": k, "a_bytes": a, "w_bytes": w, "o_bytes": o if stores else 0.0}
    return Op(name, "gemm", phase, shape, dtype, flops, read, write, l2, count, unit, vector_flops=dequant_flops)


def attention_pairs(q_len, kv_len, mask: str, block_size=1):
    """Number of (query, key) pairs a mask keeps, for q_len queries at the end of a kv_len-long sequence.

    - bidirectional: every query sees every key: q·L.
    - causal: query i (0-based among the q last positions) sees L − q + i + 1 keys:
      Σ = q·(L − q) + q·(q + 1)/2.
    - block_causal: queries see all earlier blocks and their whole own block, blocks counted from the first
      query. With f = ⌊q/B⌋ whole blocks and r = q − f·B queries in a last, partial block:
      Σ = q·(L − q) + B²·f·(f + 1)/2 + r·q (block j's B queries see (j+1)·B of the q; the partial block's r
      queries see all q). For one block at the end of the cache (a block-wise diffusion step, q ≤ B) it is q·L.
    """
    if mask == "bidirectional":
        return q_len * kv_len
    if mask == "causal":
        return q_len * (kv_len - q_len) + q_len * (q_len + 1) / 2.0
    if mask == "block_causal":
        bs = np.maximum(block_size, 1)
        whole = np.floor(q_len / bs)
        rest = q_len - whole * bs
        return q_len * (kv_len - q_len) + bs * bs * whole * (whole + 1) / 2.0 + rest * q_len
    raise ValueError(f"attention mask {mask!r}: expected 'causal', 'bidirectional' or 'block_causal'")


def attention(name: str, batch, q_len, kv_len, heads, kv_heads, head_dim, *, mask: str = "causal",
              dtype: str = "bf16", kv_bits=16.0, kv_scale_bytes=0.0, block_size=1, kv_tokens_read=None,
              dequant_flops=0.0, phase: str = "", count=1) -> Op:
    """softmax(Q·Kᵀ/√d)·V, fused (flash attention): scores never touch memory.

    FLOPs = 4·b·H·pairs·d (Q·Kᵀ and P·V are each 2·d FLOPs per (query, key) pair and head); the softmax's
    exponentials run on the vector units and are not counted here.
    Minimal bytes = Q (b·q·H·d·a) + K and V (2·b·L·KVH·d·kv_bits/8 + quantisation scales) + O (b·q·H·d·a).
    On-chip re-reads: each block of ATTN_BLOCK_Q query rows (the GQA group's heads packed into the rows) reads
    the K/V rows it needs: b·KVH·⌈q·g/BQ⌉·(pairs/q)·d·2·kv_bytes, at least the minimal K/V bytes.
    ``kv_tokens_read`` (default kv_len) is how many tokens' K/V come from memory: fewer when they are
    rematerialised on chip (XQuant). ``dequant_flops`` is vector work for a quantised cache.
    """
    a = _b(dtype)
    g = heads / kv_heads
    pairs = attention_pairs(q_len, kv_len, mask, block_size)
    flops = 4.0 * batch * heads * pairs * head_dim
    kv_bytes_el = kv_bits / 8.0
    kv_tokens = kv_len if kv_tokens_read is None else kv_tokens_read
    kv_read = 2.0 * batch * kv_tokens * kv_heads * head_dim * kv_bytes_el + kv_scale_bytes
    q_read = batch * q_len * heads * head_dim * a
    write = batch * q_len * heads * head_dim * a
    keys_per_query = pairs / np.maximum(q_len, 1)
    kv_l2 = (batch * kv_heads * np.ceil(q_len * g / ATTN_BLOCK_Q) * keys_per_query * head_dim * 2 * kv_bytes_el
             * kv_tokens / np.maximum(kv_len, 1e-30))
    l2 = q_read + np.maximum(kv_l2, kv_read) + write
    shape = {"batch": batch, "q_len": q_len, "kv_len": kv_len, "heads": heads, "kv_heads": kv_heads,
             "head_dim": head_dim, "mask": mask, "kv_bits": kv_bits, "pairs": pairs}
    return Op(name, "attention", phase, shape, dtype, flops, q_read + kv_read, write, l2, count, "tensor",
              vector_flops=dequant_flops)


def norm(name: str, tokens, width, dtype: str = "bf16", *, phase: str = "", count=1) -> Op:
    """RMSNorm over the last dimension: y = x / sqrt(mean(x²) + ε) · γ.

    FLOPs ≈ 4 per element (square, accumulate, scale, multiply by γ). Bytes = x read + y written + γ once.
    """
    a = _b(dtype)
    n = tokens * width
    return Op(name, "norm", phase, {"tokens": tokens, "width": width}, dtype, 4.0 * n,
              n * a + width * a, n * a, None, count, "vector")


def elementwise(name: str, tokens, width, dtype: str = "bf16", *, inputs: float = 1, outputs: float = 1,
              flops_per_element: float = 1, variant: str = "", phase: str = "", count=1) -> Op:
    """A fused elementwise op over a tokens × width output: reads `inputs` tensors of that size, writes `outputs`.

    Variants used by the workloads: residual add (2 in, 1 out, 1 FLOP/element), SiLU(gate)·up (2 in, 1 out,
    ≈5 FLOPs: exp, add, divide, two multiplies), rotary embedding on q and k (1 in, 1 out, 3 FLOPs per element:
    x·cos − y·sin per rotated pair, the tables read from cache).
    """
    a = _b(dtype)
    n = tokens * width
    return Op(name, "elementwise", phase, {"tokens": tokens, "width": width, "variant": variant}, dtype,
              flops_per_element * n, inputs * n * a, outputs * n * a, None, count, "vector")


def embedding(name: str, tokens, hidden, dtype: str = "bf16", *, phase: str = "", count=1) -> Op:
    """Embedding lookup: gather one hidden-wide row per token (row read + written, 4-byte ids read); no FLOPs."""
    a = _b(dtype)
    return Op(name, "embedding", phase, {"tokens": tokens, "width": hidden}, dtype, 0.0 * tokens,
              tokens * hidden * a + 4 * tokens, tokens * hidden * a, None, count, "vector")


def quantize(name: str, tokens, width, bits, group_size, dtype: str = "bf16", *, scale_bytes: float = 4.0,
             phase: str = "", count=1) -> Op:
    """Group-wise asymmetric quantisation of a tokens × width tensor to `bits` bits.

    Per group: min/max (2 compares per element), scale and zero point, then round((x − z)/s): ≈5 FLOPs/element.
    Bytes: x read (a per element), codes written (bits/8 per element) + one scale and zero per group.
    """
    a = _b(dtype)
    n = tokens * width
    write = n * bits / 8.0 + n / group_size * scale_bytes
    return Op(name, "quantize", phase, {"tokens": tokens, "width": width, "bits": bits, "group_size": group_size},
              dtype, 5.0 * n, n * a, write, None, count, "vector")


def dequantize(name: str, tokens, width, bits, group_size, dtype: str = "bf16", *, scale_bytes: float = 4.0,
               phase: str = "", count=1) -> Op:
    """The inverse of :func:`quantize`: x = code·s + z (2 FLOPs/element); codes and scales read, x written."""
    a = _b(dtype)
    n = tokens * width
    read = n * bits / 8.0 + n / group_size * scale_bytes
    return Op(name, "dequantize", phase, {"tokens": tokens, "width": width, "bits": bits, "group_size": group_size},
              dtype, 2.0 * n, read, n * a, None, count, "vector")


def gather(name: str, rows, width, dtype: str = "bf16", *, elem_bytes=None, phase: str = "", count=1) -> Op:
    """Copy `rows` rows of `width` elements chosen by a 4-byte index list into a contiguous buffer."""
    eb = _b(dtype) if elem_bytes is None else elem_bytes
    return Op(name, "gather", phase, {"rows": rows, "width": width}, dtype, 0.0 * rows,
              rows * width * eb + 4 * rows, rows * width * eb, None, count, "vector")


def centroid_lookup(name: str, batch, q_len, heads, kv_heads, centroids, head_dim, dtype: str = "bf16", *,
                    shared: bool = False, phase: str = "", count=1) -> Op:
    """Score every key centroid against the queries: S[b, kvh, q, c] = mean over the group's heads of q·cᵀ.

    FLOPs = 2·b·q·H·C·d (a dot product of length d per query head and centroid) + the group average (b·q·H·C).
    Bytes = queries (b·q·H·d·a) + centroids (b·C·KVH·d·a: each sequence clusters its own keys, C per KV head;
    C·KVH·d·a once when ``shared`` by the batch) + scores written in fp32 (b·q·KVH·C·4).
    """
    a = _b(dtype)
    flops = 2.0 * batch * q_len * heads * centroids * head_dim + batch * q_len * heads * centroids
    owners = 1 if shared else batch
    read = batch * q_len * heads * head_dim * a + owners * centroids * kv_heads * head_dim * a
    write = batch * q_len * kv_heads * centroids * 4.0
    shape = {"batch": batch, "q_len": q_len, "heads": heads, "kv_heads": kv_heads, "centroids": centroids,
             "head_dim": head_dim}
    return Op(name, "centroid_lookup", phase, shape, dtype, flops, read, write, None, count, "tensor")


def topk(name: str, rows, n, k, *, phase: str = "", count=1) -> Op:
    """Select the k largest of n fp32 scores in each of `rows` rows (a radix/heap selection).

    FLOPs ≈ n·log2(k+1) comparisons per row; bytes = scores read (rows·n·4) + int32 indices written (rows·k·4),
    the minimal traffic of a selection kernel (torch.topk also writes the k values and int64 indices).
    """
    flops = rows * n * np.log2(np.maximum(k, 1) + 1)
    return Op(name, "topk", phase, {"rows": rows, "n": n, "k": k}, "fp32", flops, rows * n * 4.0,
              rows * k * 4.0, None, count, "vector")


def allreduce(name: str, elements, devices, dtype: str = "bf16", *, phase: str = "", count=1) -> Op:
    """Ring all-reduce of `elements` values across `devices`: each device sends and receives 2·(p−1)/p of the
    buffer (reduce-scatter then all-gather) and adds (p−1)/p of it. Bytes here are those crossing the link."""
    a = _b(dtype)
    p = np.maximum(devices, 1)
    link = 2.0 * (p - 1) / p * elements * a
    return Op(name, "allreduce", phase, {"elements": elements, "devices": devices}, dtype,
              (p - 1) / p * elements, link, 0.0 * link, None, count, "vector")
