"""XQuant: cache the quantised layer input X and rematerialise K = X·Wkᵀ and V = X·Wvᵀ at every decode step.

Picture a kitchen that stores flour instead of bread: a sack of flour takes less room than the loaves it makes,
and the baker (the GPU's tensor cores, idle during memory-bound decoding) bakes fresh loaves when they are needed.
XQuant (Tomar et al., "XQuant: Breaking the Memory Wall for LLM Inference with KV Cache Rematerialization",
arXiv:2508.10395) caches X (post-norm, tokens × hidden) quantised group-wise instead of K and V; for
multi-head attention X is half the size of K and V together, and X quantises well.

What is here (weights in ``torch.nn.Linear`` layout [out_features, in_features]):

- :func:`quantize_x` / :func:`dequantize_x`: asymmetric groups of ``group_size`` along the hidden dimension,
  2–8 bits, packed (:mod:`perfmodel.kernels.groupquant`).
- :func:`dequant_matmul` (Triton): C = dequant(A)·Wᵀ where A is a quantised cache; each A tile is unpacked and
  dequantised in registers right before the ``tl.dot``, so the cache is read once, in its packed form.
  :func:`xquant_remat` applies it to [Wk; Wv] to produce K and V in one GEMM.
- GQA (XQuant's SVD variant): with few KV heads X is wider than K and V, so instead the cache holds the
  latents X·U_k and X·U_v (kv_dim wide) where Wkᵀ = U_k Σ_k V_kᵀ; K = (X·U_k)·(Σ_k V_kᵀ) needs only the small
  factor.
  :func:`svd_factors` returns the factors; :func:`xquant_svd_quantize` and :func:`xquant_svd_remat` use them.
- XQuant-CL: consecutive layers' X differ little, so layer l caches the quantised delta X_l − X̂_{l−1}
  (:func:`quantize_x_deltas`, closed loop: against the reconstruction, so errors do not pile up across layers)
  and a running accumulator rebuilds X̂_l = X̂_{l−1} + dequant(Δ_l) (:func:`accumulate_delta`, Triton,
  and :func:`xquant_cl_reconstruct`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

from perfmodel import ops
from perfmodel.kernels._common import (FLOAT_DTYPES, cdiv, check_same_device, check_tensor, compute_dtype_for,
                                       dot_precision, dtype_name, jit, kernel_launch, next_power_of_2,
                                       resolve_impl, tl)
from perfmodel.kernels.groupquant import GroupQuant, check_bits, dequantize_groups, load_code_tile, quantize_groups
from perfmodel.specs.model import bytes_per_element

X_BITS = (2, 3, 4, 5, 6, 7, 8)
SCALE_BYTES = 4.0  # fp16 scale + fp16 zero per group


# ---------------------------------------------------------------------------------------------------------------
# Triton kernels
@jit
def _dequant_matmul_kernel(AC, AS, AZ, W, C, M, N, K, a_row_bytes, stride_wn, stride_wk, stride_cm, stride_cn,
                           a_row_stride, s_row_stride,
                           GROUP: tl.constexpr, BITS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                           BLOCK_K: tl.constexpr, PRECISION: tl.constexpr):
    """One program = one BLOCK_M × BLOCK_N tile of C = dequant(A)·Wᵀ, marching along K in BLOCK_K steps.

    A's packed codes [M, a_row_bytes] (rows ``a_row_stride`` bytes apart) and fp16 scale/zero [M, K / GROUP]
    (rows ``s_row_stride`` apart); W and C are strided. When BLOCK_K divides GROUP each A tile lies inside one
    group per row: one scale and zero per row.
    """
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    m_mask = offs_m < M
    n_mask = offs_n < N
    a_rows = AC + offs_m[:, None].to(tl.int64) * a_row_stride
    acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
    for k0 in range(0, K, BLOCK_K):
        kk = k0 + offs_k
        k_mask = kk < K
        # The A tile, dequantised in registers: code·scale + zero in fp32, then the weights' dtype for the dot.
        codes = load_code_tile(a_rows, m_mask[:, None], k0, a_row_bytes, BLOCK_K, BITS).to(tl.float32)
        if GROUP % BLOCK_K == 0:
            group = offs_m.to(tl.int64) * s_row_stride + k0 // GROUP
            scale = tl.load(AS + group, mask=m_mask, other=0.0).to(tl.float32)[:, None]
            zero = tl.load(AZ + group, mask=m_mask, other=0.0).to(tl.float32)[:, None]
        else:
            a_mask = m_mask[:, None] & k_mask[None, :]
            group = offs_m[:, None].to(tl.int64) * s_row_stride + kk[None, :] // GROUP
            scale = tl.load(AS + group, mask=a_mask, other=0.0).to(tl.float32)
            zero = tl.load(AZ + group, mask=a_mask, other=0.0).to(tl.float32)
        a = (codes * scale + zero).to(W.dtype.element_ty)
        # The Wᵀ tile [BLOCK_K, BLOCK_N].
        w = tl.load(W + offs_n[None, :] * stride_wn + kk[:, None] * stride_wk,
                    mask=k_mask[:, None] & n_mask[None, :], other=0.0)
        acc += tl.dot(a, w, input_precision=PRECISION)
    tl.store(C + offs_m[:, None].to(tl.int64) * stride_cm + offs_n[None, :] * stride_cn, acc.to(C.dtype.element_ty),
             mask=m_mask[:, None] & n_mask[None, :])


@jit
def _dequant_add_kernel(Acc, AC, AS, AZ, M, K, a_row_bytes, GROUP: tl.constexpr, BITS: tl.constexpr,
                        BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr):
    """XQuant-CL's accumulator step, in place: acc += code·scale + zero over one BLOCK_M × BLOCK_K tile."""
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    k0 = tl.program_id(1) * BLOCK_K
    offs_k = k0 + tl.arange(0, BLOCK_K)
    m_mask = offs_m < M
    mask = m_mask[:, None] & (offs_k < K)[None, :]
    codes = load_code_tile(AC + offs_m[:, None] * a_row_bytes, m_mask[:, None], k0, a_row_bytes, BLOCK_K, BITS)
    group = offs_m[:, None] * (K // GROUP) + offs_k[None, :] // GROUP
    scale = tl.load(AS + group, mask=mask, other=0.0).to(tl.float32)
    zero = tl.load(AZ + group, mask=mask, other=0.0).to(tl.float32)
    ptrs = Acc + offs_m[:, None] * K + offs_k[None, :]
    acc = tl.load(ptrs, mask=mask, other=0.0).to(tl.float32)
    tl.store(ptrs, (acc + codes.to(tl.float32) * scale + zero).to(Acc.dtype.element_ty), mask=mask)


# ---------------------------------------------------------------------------------------------------------------
# Quantising X
def _quantize_x_op(x, bits=4, group_size=128):
    return quantize_x_op(tokens=x.shape[0], hidden=x.shape[1], bits=bits, group_size=group_size,
                         dtype=dtype_name(x.dtype))


@kernel_launch(_quantize_x_op)
def quantize_x(x: torch.Tensor, bits: int = 4, group_size: int = 128) -> GroupQuant:
    """Quantise x [tokens, hidden] in groups of ``group_size`` along hidden, ``bits`` ∈ 2..8, packed."""
    check_tensor("x", x, ndim=2, dtypes=FLOAT_DTYPES)
    check_bits(bits, X_BITS)
    if x.shape[0] < 1:
        raise ValueError(f"x: expected at least one token, got shape {tuple(x.shape)}")
    return quantize_groups(x, bits, group_size)


@kernel_launch(lambda x, dst: quantize_x_op(tokens=x.numel() // x.shape[-1], hidden=x.shape[-1], bits=dst.bits,
                                            group_size=dst.group_size, dtype=dtype_name(x.dtype)))
def quantize_x_into(x: torch.Tensor, dst: GroupQuant) -> None:
    """Quantise x [tokens, width] (or [batch, tokens, width], stored token-major: row = token·batch +
    sequence) into ``dst`` (views of a cache's codes [rows, ⌈width·bits/8⌉] and scales/zeros
    [rows, width / group]) in place."""
    check_tensor("x", x, dtypes=FLOAT_DTYPES)
    if x.dim() == 3:
        x = x.transpose(0, 1).reshape(-1, x.shape[-1])
    check_tensor("x", x, ndim=2)
    if not isinstance(dst, GroupQuant) or dst.n != x.shape[1] or dst.codes.shape[0] != x.shape[0]:
        raise ValueError(f"dst: expected a GroupQuant of {x.shape[0]} rows of width {x.shape[1]}, got "
                         + (f"{dst.codes.shape[0]} rows of width {dst.n}" if isinstance(dst, GroupQuant)
                            else type(dst).__name__))
    q = quantize_groups(x, dst.bits, dst.group_size)
    dst.codes.copy_(q.codes)
    dst.scale.copy_(q.scale)
    dst.zero.copy_(q.zero)


def _dequantize_x_op(qx, dtype=torch.float16, *, out=None):
    dt = out.dtype if out is not None else dtype
    return dequantize_x_op(tokens=qx.codes.shape[0], hidden=qx.n, bits=qx.bits, group_size=qx.group_size,
                           dtype=dtype_name(dt))


@kernel_launch(_dequantize_x_op)
def dequantize_x(qx: GroupQuant, dtype: torch.dtype = torch.float16, *,
                 out: torch.Tensor | None = None) -> torch.Tensor:
    """x̂ [tokens, hidden] = code·scale + zero, in ``dtype`` (into ``out`` when given, in its dtype)."""
    if not isinstance(qx, GroupQuant):
        raise TypeError(f"qx: expected a GroupQuant (from quantize_x), got {type(qx).__name__}")
    if out is None:
        return dequantize_groups(qx, dtype)
    check_tensor("out", out, dtypes=FLOAT_DTYPES, shape=(qx.codes.shape[0], qx.n))
    return out.copy_(dequantize_groups(qx, out.dtype))


# ---------------------------------------------------------------------------------------------------------------
# Rematerialisation
def _check_quant_operand(qx: GroupQuant, w: torch.Tensor) -> None:
    if not isinstance(qx, GroupQuant) or qx.codes.dim() != 2:
        raise TypeError(f"qx: expected a 2-D GroupQuant (from quantize_x), got {type(qx).__name__}"
                        + (f" with codes of shape {tuple(qx.codes.shape)}" if isinstance(qx, GroupQuant) else ""))
    check_tensor("w", w, ndim=2, dtypes=(torch.float16, torch.bfloat16, torch.float32, torch.float64))
    if w.shape[1] != qx.n:
        raise ValueError(f"w: expected [out_features, {qx.n}] (in_features = the quantised width), "
                         f"got {list(w.shape)}")
    check_same_device(codes=qx.codes, w=w)


def _dequant_matmul_op(qx, w, *, out=None, **_):
    return dequant_matmul_op(tokens=qx.codes.shape[0], out_features=w.shape[0], in_features=qx.n, bits=qx.bits,
                             group_size=qx.group_size, dtype=dtype_name(w.dtype))


@kernel_launch(_dequant_matmul_op)
def dequant_matmul(qx: GroupQuant, w: torch.Tensor, *, out: torch.Tensor | None = None,
                   impl: str | None = None) -> torch.Tensor:
    """dequant(qx)·wᵀ: [tokens, in] quantised × w [out, in] → [tokens, out] in w's dtype (into ``out`` when
    given: [tokens, out] with any row stride, e.g. the K or V half of a [tokens, 2·kv_dim] buffer).

    ``qx`` may be a column slice of a wider quantised matrix (its rows keep the wider row strides)."""
    _check_quant_operand(qx, w)
    m, k = qx.codes.shape[0], qx.n
    n = w.shape[0]
    if out is not None:
        check_tensor("out", out, ndim=2, dtypes=(w.dtype,), shape=(m, n))
    if resolve_impl(impl, qx.codes, w) == "torch":
        # As a model runs it: a bf16 matmul stays bf16 (fp32 accumulation inside the BLAS), not upcast.
        result = dequant_matmul_reference(qx, w, compute_dtype=torch.bfloat16 if w.dtype == torch.bfloat16 else None)
        return result if out is None else out.copy_(result)
    for name, t in (("qx.codes", qx.codes), ("qx.scale", qx.scale), ("qx.zero", qx.zero)):
        if t.stride(-1) != 1:
            raise ValueError(f"{name}: expected a contiguous last dimension, got strides {t.stride()}")
    if qx.scale.stride() != qx.zero.stride():
        raise ValueError("qx: expected scales and zeros laid out alike")
    out = torch.empty(m, n, dtype=w.dtype, device=w.device) if out is None else out
    # A K-step within one quantisation group (a power of two ≥ 16) reads one scale and zero per row.
    g = qx.group_size
    pow2_group = g >= 16 and g & (g - 1) == 0
    if w.is_cuda:
        block_m, block_n, block_k, warps = 128, 128, min(g, 64) if pow2_group else 32, 8
    else:
        block_m, block_n = max(16, min(64, next_power_of_2(m))), max(16, min(64, next_power_of_2(n)))
        block_k, warps = min(g, 128) if pow2_group else 32, 4
    grid = (cdiv(m, block_m), cdiv(n, block_n))
    _dequant_matmul_kernel[grid](qx.codes, qx.scale, qx.zero, w, out, m, n, k, qx.codes.shape[1], w.stride(0),
                                 w.stride(1), out.stride(0), out.stride(1), qx.codes.stride(0), qx.scale.stride(0),
                                 GROUP=g, BITS=qx.bits,
                                 BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k,
                                 PRECISION=dot_precision(w.dtype), num_warps=warps)
    return out


def xquant_remat(qx: GroupQuant, w_k: torch.Tensor, w_v: torch.Tensor, *,
                 impl: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """K = X̂·Wkᵀ and V = X̂·Wvᵀ from the quantised X cache, in one GEMM over [Wk; Wv].

    Returns views of one [tokens, kv_dim_k + kv_dim_v] result. A model keeps [Wk; Wv] fused (its QKV weight);
    call :func:`dequant_matmul` with that to skip the concatenation here.
    """
    check_tensor("w_k", w_k, ndim=2)
    check_tensor("w_v", w_v, ndim=2, dtypes=(w_k.dtype,), shape=(None, w_k.shape[1]))
    kv = dequant_matmul(qx, torch.cat([w_k, w_v]), impl=impl)
    return kv[:, : w_k.shape[0]], kv[:, w_k.shape[0]:]


@dataclass(frozen=True)
class SVDFactors:
    """Wk = up_k · down_k and Wv = up_v · down_v (Linear layout): down_* [rank, hidden] projects X onto the
    SVD basis (the cached latent X·down_*ᵀ = X·U), up_* [kv_dim, rank] = V·Σ rematerialises K or V."""

    down_k: torch.Tensor
    up_k: torch.Tensor
    down_v: torch.Tensor
    up_v: torch.Tensor


def svd_factors(w_k: torch.Tensor, w_v: torch.Tensor) -> SVDFactors:
    """Exact (full-rank) SVD factors of Wk, Wv [kv_dim, hidden], computed in fp64, returned in their dtype.

    Wkᵀ = U Σ Vᵀ (U [hidden, r], r = min(kv_dim, hidden)) gives down_k = Uᵀ and up_k = V Σ.
    """
    check_tensor("w_k", w_k, ndim=2, dtypes=FLOAT_DTYPES)
    check_tensor("w_v", w_v, ndim=2, dtypes=(w_k.dtype,), shape=(None, w_k.shape[1]))

    def factor(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        u, sigma, vh = torch.linalg.svd(w.double().T, full_matrices=False)
        return u.T.to(w.dtype).contiguous(), (vh.T * sigma).to(w.dtype).contiguous()

    down_k, up_k = factor(w_k)
    down_v, up_v = factor(w_v)
    return SVDFactors(down_k, up_k, down_v, up_v)


def xquant_svd_quantize(x: torch.Tensor, factors: SVDFactors, bits: int = 4,
                        group_size: int = 32) -> tuple[GroupQuant, GroupQuant]:
    """The GQA cache entries of x [tokens, hidden]: the quantised latents X·U_k and X·U_v."""
    check_tensor("x", x, ndim=2, dtypes=(factors.down_k.dtype,), shape=(None, factors.down_k.shape[1]))
    return (quantize_x(F.linear(x, factors.down_k), bits, group_size),
            quantize_x(F.linear(x, factors.down_v), bits, group_size))


def xquant_svd_remat(q_latent_k: GroupQuant, q_latent_v: GroupQuant, factors: SVDFactors, *,
                     impl: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """K = dequant(X·U_k)·(Σ_k V_kᵀ) and V likewise: two small [tokens × r]·[r × kv_dim] GEMMs."""
    return (dequant_matmul(q_latent_k, factors.up_k, impl=impl),
            dequant_matmul(q_latent_v, factors.up_v, impl=impl))


# ---------------------------------------------------------------------------------------------------------------
# XQuant-CL: cross-layer deltas
def _accumulate_delta_op(acc, q_delta, **_):
    return accumulate_delta_op(tokens=acc.shape[0], hidden=acc.shape[1], bits=q_delta.bits,
                               group_size=q_delta.group_size, dtype=dtype_name(acc.dtype))


@kernel_launch(_accumulate_delta_op)
def accumulate_delta(acc: torch.Tensor, q_delta: GroupQuant, *, impl: str | None = None) -> torch.Tensor:
    """acc += dequant(q_delta), in place (acc [tokens, hidden], contiguous); returns acc."""
    check_tensor("acc", acc, ndim=2, dtypes=FLOAT_DTYPES)
    if not isinstance(q_delta, GroupQuant) or tuple(q_delta.scale.shape[:1]) != (acc.shape[0],) \
            or q_delta.n != acc.shape[1]:
        raise ValueError(f"q_delta: expected a GroupQuant of shape {list(acc.shape)} (from quantize_x), got "
                         f"{type(q_delta).__name__}"
                         + (f" of width {q_delta.n}" if isinstance(q_delta, GroupQuant) else ""))
    if not acc.is_contiguous():
        raise ValueError("acc: expected a contiguous tensor (it is updated in place)")
    check_same_device(acc=acc, codes=q_delta.codes)
    if resolve_impl(impl, acc) == "torch":
        return accumulate_delta_reference(acc, q_delta)
    m, k = acc.shape
    block_m, block_k = (32, 128) if acc.is_cuda else (max(16, min(128, next_power_of_2(m))), 128)
    _dequant_add_kernel[(cdiv(m, block_m), cdiv(k, block_k))](
        acc, q_delta.codes, q_delta.scale, q_delta.zero, m, k, q_delta.codes.shape[1], GROUP=q_delta.group_size,
        BITS=q_delta.bits, BLOCK_M=block_m, BLOCK_K=block_k)
    return acc


def quantize_x_deltas(xs: Sequence[torch.Tensor], bits: int = 4, group_size: int = 128) -> list[GroupQuant]:
    """XQuant-CL cache entries of the layer inputs xs[0..L−1]: X_0 itself, then X_l − X̂_{l−1} (closed loop)."""
    if len(xs) < 1:
        raise ValueError("xs: expected at least one layer's X, got none")
    out = [quantize_x(xs[0], bits, group_size)]
    recon = dequantize_x(out[0], xs[0].dtype)
    for layer, x in enumerate(xs[1:], start=1):
        check_tensor(f"xs[{layer}]", x, dtypes=(xs[0].dtype,), shape=tuple(xs[0].shape))
        out.append(quantize_x(x - recon, bits, group_size))
        recon = accumulate_delta_reference(recon, out[-1])
    return out


def xquant_cl_reconstruct(q_deltas: Sequence[GroupQuant], dtype: torch.dtype = torch.float16, *,
                          impl: str | None = None) -> list[torch.Tensor]:
    """X̂_l for every layer from XQuant-CL entries: a running accumulator, copied out after each layer."""
    if len(q_deltas) < 1:
        raise ValueError("q_deltas: expected at least one layer's entry, got none")
    acc = dequantize_x(q_deltas[0], dtype)
    out = [acc.clone()]
    for q in q_deltas[1:]:
        out.append(accumulate_delta(acc, q, impl=impl).clone())
    return out


# ---------------------------------------------------------------------------------------------------------------
# Ops
def _cached_bytes_per_element(bits, group_size) -> float:
    return bits / 8.0 + SCALE_BYTES / group_size


def quantize_x_op(*, tokens, hidden, bits, group_size, dtype: str = "fp16", name: str = "quantize_x") -> ops.Op:
    return ops.quantize(name, tokens, hidden, bits, group_size, dtype, scale_bytes=SCALE_BYTES)


def dequantize_x_op(*, tokens, hidden, bits, group_size, dtype: str = "fp16",
                    name: str = "dequantize_x") -> ops.Op:
    return ops.dequantize(name, tokens, hidden, bits, group_size, dtype, scale_bytes=SCALE_BYTES)


def dequant_matmul_op(*, tokens, out_features, in_features, bits, group_size, dtype: str = "fp16",
                      name: str = "xquant_remat") -> ops.Op:
    """The rematerialisation GEMM as :mod:`perfmodel.workload.layers` counts it (A at bits/8 + scales per
    element, 2 vector FLOPs per A element to dequantise), writing its result (a standalone launch)."""
    return ops.gemm(name, tokens, out_features, in_features, dtype, a_bytes=_cached_bytes_per_element(bits, group_size),
                    dequant_flops=2.0 * tokens * in_features, phase="decode")


def accumulate_delta_op(*, tokens, hidden, bits, group_size, dtype: str = "fp16",
                        name: str = "xcl_accumulate") -> ops.Op:
    """acc read and written in the activation dtype, the delta's codes and scales read."""
    a = bytes_per_element(dtype)
    return ops.elementwise(name, tokens, hidden, dtype, inputs=1 + _cached_bytes_per_element(bits, group_size) / a,
                           outputs=1, flops_per_element=3, variant="dequant_add", phase="decode")


# ---------------------------------------------------------------------------------------------------------------
# References
def dequant_matmul_reference(qx: GroupQuant, w: torch.Tensor, *,
                             compute_dtype: torch.dtype | None = None) -> torch.Tensor:
    """Dequantise to w's dtype (as the kernel feeds its dot), multiply in ``compute_dtype`` (default fp32)."""
    cd = compute_dtype_for(w.dtype, compute_dtype)
    x = dequantize_groups(qx, w.dtype)
    return F.linear(x.to(cd), w.to(cd)).to(w.dtype)


def accumulate_delta_reference(acc: torch.Tensor, q_delta: GroupQuant) -> torch.Tensor:
    """acc += dequant(q_delta) in fp32 (fp64 for fp64), rounded to acc's dtype; in place, returns acc."""
    cd = compute_dtype_for(acc.dtype, None)
    acc.copy_((acc.to(cd) + dequantize_groups(q_delta, cd)).to(acc.dtype))
    return acc
