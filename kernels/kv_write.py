"""Writing a pass's keys and values into the cache, where the attention kernel will read them.

Picture filing new pages into a binder at the page numbers they belong to: every token the model computes in a
pass gets its key and value filed at its position (vLLM's ``reshape_and_cache``), converted to the cache's
dtype on the way. Later passes read them as cached tokens; a diffusion step's block is filed too, so that one
attention call reads cache and block alike.

Shapes: k, v [batch, kv_heads, tokens, d] (any strides, contiguous last dimension: slices of a fused QKV output
work); k_dst, v_dst the same shape (slices of the cache, in its dtype). One launch writes both.
"""
from __future__ import annotations

import torch

from perfmodel import ops
from perfmodel.kernels._common import (FLOAT_DTYPES, cdiv, check_same_device, check_tensor, dtype_name, jit,
                                       kernel_launch, next_power_of_2, resolve_impl, tl)
from perfmodel.specs.model import bytes_per_element


# ---------------------------------------------------------------------------------------------------------------
# Triton kernel
@jit
def _write_kv_kernel(K, V, KD, VD, T, D, sk_b, sk_h, sk_t, sv_b, sv_h, sv_t, sd_b, sd_h, sd_t, se_b, se_h, se_t,
                     KVH, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr):
    """One program copies BLOCK_T tokens of one (sequence, KV head): the key rows, then the value rows."""
    pid = tl.program_id(0)
    b = pid // KVH
    h = pid % KVH
    offs_t = tl.program_id(1) * BLOCK_T + tl.arange(0, BLOCK_T)
    offs_d = tl.arange(0, BLOCK_D)
    mask = (offs_t < T)[:, None] & (offs_d < D)[None, :]
    t = offs_t[:, None].to(tl.int64)
    k = tl.load(K + b * sk_b + h * sk_h + t * sk_t + offs_d[None, :], mask=mask)
    tl.store(KD + b * sd_b + h * sd_h + t * sd_t + offs_d[None, :], k.to(KD.dtype.element_ty), mask=mask)
    v = tl.load(V + b * sv_b + h * sv_h + t * sv_t + offs_d[None, :], mask=mask)
    tl.store(VD + b * se_b + h * se_h + t * se_t + offs_d[None, :], v.to(VD.dtype.element_ty), mask=mask)


# ---------------------------------------------------------------------------------------------------------------
# Wrapper
def _write_kv_op(k_dst, v_dst, k, v, **_):
    batch, kv_heads, tokens, head_dim = k.shape
    return write_kv_op(batch=batch, tokens=tokens, kv_heads=kv_heads, head_dim=head_dim, dtype=dtype_name(k.dtype),
                       cache_dtype=dtype_name(k_dst.dtype))


@kernel_launch(_write_kv_op)
def write_kv(k_dst: torch.Tensor, v_dst: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *,
             impl: str | None = None) -> None:
    """k_dst ← k and v_dst ← v (converted to the destination's dtype), in place."""
    check_tensor("k", k, ndim=4, dtypes=FLOAT_DTYPES)
    check_tensor("v", v, dtypes=(k.dtype,), shape=tuple(k.shape))
    check_tensor("k_dst", k_dst, dtypes=FLOAT_DTYPES, shape=tuple(k.shape))
    check_tensor("v_dst", v_dst, dtypes=(k_dst.dtype,), shape=tuple(k.shape))
    check_same_device(k=k, v=v, k_dst=k_dst, v_dst=v_dst)
    if resolve_impl(impl, k, k_dst) == "torch":
        k_dst.copy_(k)
        v_dst.copy_(v)
        return
    for name, t in (("k", k), ("v", v), ("k_dst", k_dst), ("v_dst", v_dst)):
        if t.stride(-1) != 1:
            raise ValueError(f"{name}: expected a contiguous last dimension, got strides {t.stride()}")
    batch, kv_heads, tokens, head_dim = k.shape
    if not k.numel():
        return
    block_t = 16 if k.is_cuda else max(1, min(64, next_power_of_2(tokens)))
    _write_kv_kernel[(batch * kv_heads, cdiv(tokens, block_t))](
        k, v, k_dst, v_dst, tokens, head_dim, *k.stride()[:3], *v.stride()[:3], *k_dst.stride()[:3],
        *v_dst.stride()[:3], kv_heads, BLOCK_T=block_t, BLOCK_D=max(16, next_power_of_2(head_dim)))


def write_kv_op(*, batch, tokens, kv_heads, head_dim, dtype: str = "fp16", cache_dtype: str | None = None,
                name: str = "kv_append") -> ops.Op:
    """K and V of ``tokens`` tokens read in ``dtype`` and written in ``cache_dtype`` (default the same): the
    workloads' ``layer.kv_append``."""
    out = bytes_per_element(cache_dtype or dtype) / bytes_per_element(dtype)
    return ops.elementwise(name, batch * tokens, 2 * kv_heads * head_dim, dtype, inputs=1, outputs=out,
                           flops_per_element=0, variant="copy")


# ---------------------------------------------------------------------------------------------------------------
# Reference
def write_kv_reference(k_dst, v_dst, k, v) -> None:
    k_dst.copy_(k.to(k_dst.dtype))
    v_dst.copy_(v.to(v_dst.dtype))
