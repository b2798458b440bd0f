"""GEMM and GEMV: a linear layer over m tokens, y = x·Wᵀ (+ b), through ``torch.nn.functional.linear``.

Picture a spreadsheet where every output cell is the dot product of a row of inputs with a column of weights:
with one token (decode) each weight is used once per step (a GEMV, bound by reading W), with many tokens each
weight is reused m times (a GEMM, bound by arithmetic). torch hands both to the vendor BLAS (cuBLAS, MKL or
oneDNN), which is what models really run and what the measurement runner times on the CPU, so this module adds
no kernel of its own: it checks inputs, names the op and keeps the fp64 reference beside it.

Shapes: x [m, k] (or [..., k]), w [n, k] (``torch.nn.Linear`` layout), bias [n]; y [m, n] in x's dtype.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from perfmodel import ops
from perfmodel.kernels._common import (FLOAT_DTYPES, check_same_device, check_tensor, compute_dtype_for, dtype_name,
                                       kernel_launch)


def _linear_op(x, w, bias=None, **_):
    return linear_op(m=x.numel() // max(x.shape[-1], 1), n=w.shape[0], k=x.shape[-1], dtype=dtype_name(x.dtype),
                     bias=bias is not None)


@kernel_launch(_linear_op)
def linear(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None = None, *,
           out: torch.Tensor | None = None) -> torch.Tensor:
    """y = x·wᵀ + bias: a GEMM for m > 1 tokens, a GEMV for m = 1 (into ``out`` [m, n] when given, any row
    stride: e.g. rows of a larger buffer)."""
    check_tensor("x", x, dtypes=FLOAT_DTYPES)
    if x.dim() < 1:
        raise ValueError("x: expected at least one dimension (the input features), got a scalar")
    check_tensor("w", w, ndim=2, dtypes=(x.dtype,), shape=(None, x.shape[-1]))
    if bias is not None:
        check_tensor("bias", bias, dtypes=(x.dtype,), shape=(w.shape[0],))
    check_same_device(x=x, w=w, bias=bias)
    if out is None:
        return F.linear(x, w, bias)
    check_tensor("out", out, ndim=2, dtypes=(x.dtype,), shape=(x.numel() // max(x.shape[-1], 1), w.shape[0]))
    if bias is not None:
        return torch.addmm(bias, x.reshape(-1, x.shape[-1]), w.t(), out=out)
    return torch.mm(x.reshape(-1, x.shape[-1]), w.t(), out=out)


def linear_op(*, m, n, k, dtype: str = "fp16", bias: bool = False, name: str = "gemm") -> ops.Op:
    """x [m, k] and w [n, k] read once, y [m, n] written once; 2·m·n·k FLOPs (+ m·n for the bias)."""
    return ops.gemm(name, m, n, k, dtype, bias=bias)


def linear_reference(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None = None, *,
                     compute_dtype: torch.dtype | None = None) -> torch.Tensor:
    """The same product in ``compute_dtype`` (default fp32; fp64 for fp64 inputs), returned in x's dtype."""
    cd = compute_dtype_for(x.dtype, compute_dtype)
    y = x.to(cd) @ w.to(cd).T
    if bias is not None:
        y = y + bias.to(cd)
    return y.to(x.dtype)
