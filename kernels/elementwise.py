"""The elementwise and normalisation ops of a transformer block, as the fused torch functions models call.

Picture an assembly line where each station touches every item once and passes it on: these ops do a handful of
FLOPs per element, so their time is the time to stream the tensors through memory. They are plain torch (one
library call where torch has a fused one, ``out=``/in-place forms where it saves a temporary) because that is
what the measurement runner times on the CPU and what eager models run.

- :func:`rmsnorm`: y = x / sqrt(mean(x²) + eps) · weight over the last dimension (``F.rms_norm``).
- :func:`silu_mul`: SiLU(gate) · up, the gated MLP's activation (SwiGLU).
- :func:`rope`: rotary position embedding, rotate-half convention (Llama/Qwen): for x = [x1, x2] split in
  halves of the head dimension, [x1·cos − x2·sin, x2·cos + x1·sin]; cos/sin [tokens, head_dim / 2], shared by
  every sequence of a batch.
- :func:`residual_add`: a + b; :func:`subtract`: a − b (XQuant-CL's delta between layers).

Each wrapper is one launch (:func:`perfmodel.kernels._common.kernel_launch`) described by its ``*_op``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from perfmodel import ops
from perfmodel.kernels._common import (FLOAT_DTYPES, check_same_device, check_tensor, compute_dtype_for, dtype_name,
                                       kernel_launch)


def _check_pair(name_a: str, a: torch.Tensor, name_b: str, b: torch.Tensor) -> None:
    check_tensor(name_a, a, dtypes=FLOAT_DTYPES)
    check_tensor(name_b, b, dtypes=(a.dtype,), shape=tuple(a.shape))
    check_same_device(**{name_a: a, name_b: b})


def _rows(x: torch.Tensor) -> int:
    return x.numel() // max(x.shape[-1], 1)


# ---------------------------------------------------------------------------------------------------------------
# Wrappers
@kernel_launch(lambda x, weight, eps=1e-6: rmsnorm_op(tokens=_rows(x), width=x.shape[-1], dtype=dtype_name(x.dtype)))
def rmsnorm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """RMSNorm of x [..., width] with weight [width]."""
    check_tensor("x", x, dtypes=FLOAT_DTYPES)
    if x.dim() < 1:
        raise ValueError("x: expected at least one dimension, got a scalar")
    check_tensor("weight", weight, dtypes=(x.dtype,), shape=(x.shape[-1],))
    check_same_device(x=x, weight=weight)
    if not eps > 0:
        raise ValueError(f"eps={eps!r}: expected a positive number")
    return F.rms_norm(x, (x.shape[-1],), weight, eps)


@kernel_launch(lambda gate, up: silu_mul_op(tokens=_rows(gate), width=gate.shape[-1], dtype=dtype_name(gate.dtype)))
def silu_mul(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """SiLU(gate) · up; the SiLU output is multiplied in place, so one temporary is written, not two."""
    _check_pair("gate", gate, "up", up)
    return F.silu(gate).mul_(up)


def _rope_op(x, cos, sin):
    rows = x.shape[0] * x.shape[1] if x.dim() == 4 else x.shape[0]
    return rope_op(tokens=rows, heads=x.shape[-2], head_dim=x.shape[-1], dtype=dtype_name(x.dtype))


@kernel_launch(_rope_op)
def rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding of x [tokens, heads, head_dim] (or [batch, tokens, heads, head_dim], every sequence at
    the same positions) with cos, sin [tokens, head_dim / 2] (rotate-half); returns a new contiguous tensor."""
    check_tensor("x", x, dtypes=FLOAT_DTYPES)
    if x.dim() not in (3, 4):
        raise ValueError(f"x: expected [tokens, heads, head_dim] or [batch, tokens, heads, head_dim], "
                         f"got shape {list(x.shape)}")
    tokens, head_dim = x.shape[-3], x.shape[-1]
    if head_dim % 2:
        raise ValueError(f"x: expected an even head_dim, got {head_dim}")
    check_tensor("cos", cos, dtypes=(x.dtype,), shape=(tokens, head_dim // 2))
    check_tensor("sin", sin, dtypes=(x.dtype,), shape=(tokens, head_dim // 2))
    check_same_device(x=x, cos=cos, sin=sin)
    c, s = cos[:, None, :], sin[:, None, :]
    x1, x2 = x.chunk(2, dim=-1)
    out = torch.empty_like(x)
    o1, o2 = out.chunk(2, dim=-1)
    torch.mul(x1, c, out=o1)
    o1.addcmul_(x2, s, value=-1.0)
    torch.mul(x2, c, out=o2)
    o2.addcmul_(x1, s)
    return out


@kernel_launch(lambda a, b, *, out=None: residual_add_op(tokens=_rows(a), width=a.shape[-1], dtype=dtype_name(a.dtype)))
def residual_add(a: torch.Tensor, b: torch.Tensor, *, out: torch.Tensor | None = None) -> torch.Tensor:
    """a + b (into ``out`` when given)."""
    _check_pair("a", a, "b", b)
    if out is not None:
        check_tensor("out", out, dtypes=(a.dtype,), shape=tuple(a.shape))
        return torch.add(a, b, out=out)
    return torch.add(a, b)


@kernel_launch(lambda a, b: subtract_op(tokens=_rows(a), width=a.shape[-1], dtype=dtype_name(a.dtype)))
def subtract(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a − b, a new tensor."""
    _check_pair("a", a, "b", b)
    return torch.sub(a, b)


# ---------------------------------------------------------------------------------------------------------------
# Ops (formulas in perfmodel.ops)
def rmsnorm_op(*, tokens, width, dtype: str = "fp16", name: str = "rmsnorm") -> ops.Op:
    return ops.norm(name, tokens, width, dtype)


def silu_mul_op(*, tokens, width, dtype: str = "fp16", name: str = "silu_mul") -> ops.Op:
    return ops.elementwise(name, tokens, width, dtype, inputs=2, outputs=1, flops_per_element=5,
                           variant="silu_mul")


def rope_op(*, tokens, heads, head_dim, dtype: str = "fp16", name: str = "rope") -> ops.Op:
    """x read, out written, and the cos/sin tables (head_dim/2 each per token row, shared by every head): as the
    workloads count it, inputs = 1 + head_dim / (heads·head_dim) of x's size."""
    width = heads * head_dim
    return ops.elementwise(name, tokens, width, dtype, inputs=1 + head_dim / width, outputs=1, flops_per_element=3,
                           variant="rope")


def residual_add_op(*, tokens, width, dtype: str = "fp16", name: str = "residual_add") -> ops.Op:
    return ops.elementwise(name, tokens, width, dtype, inputs=2, outputs=1, flops_per_element=1, variant="add")


def subtract_op(*, tokens, width, dtype: str = "fp16", name: str = "subtract") -> ops.Op:
    return ops.elementwise(name, tokens, width, dtype, inputs=2, outputs=1, flops_per_element=1, variant="sub")


# ---------------------------------------------------------------------------------------------------------------
# References (compute in fp32 by default, fp64 for fp64 inputs; results in the input dtype)
def rmsnorm_reference(x, weight, eps: float = 1e-6, *, compute_dtype=None):
    cd = compute_dtype_for(x.dtype, compute_dtype)
    xf = x.to(cd)
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps) * weight.to(cd)).to(x.dtype)


def silu_mul_reference(gate, up, *, compute_dtype=None):
    cd = compute_dtype_for(gate.dtype, compute_dtype)
    g = gate.to(cd)
    return (g / (1 + torch.exp(-g)) * up.to(cd)).to(gate.dtype)


def rope_reference(x, cos, sin, *, compute_dtype=None):
    cd = compute_dtype_for(x.dtype, compute_dtype)
    xf = x.to(cd)
    c, s = cos.to(cd)[:, None, :], sin.to(cd)[:, None, :]  # broadcast over heads (and a leading batch)
    x1, x2 = xf.chunk(2, dim=-1)
    return torch.cat([x1 * c - x2 * s, x2 * c + x1 * s], dim=-1).to(x.dtype)


def residual_add_reference(a, b, *, compute_dtype=None):
    cd = compute_dtype_for(a.dtype, compute_dtype)
    return (a.to(cd) + b.to(cd)).to(a.dtype)


def subtract_reference(a, b, *, compute_dtype=None):
    cd = compute_dtype_for(a.dtype, compute_dtype)
    return (a.to(cd) - b.to(cd)).to(a.dtype)
