"""Gather: copy the rows named by an index list into a contiguous buffer.

Picture pulling the requested files out of a cabinet and stacking them on a desk in the order asked for. Sparse
attention without a fused kernel runs this first (gather the selected keys and values), then dense attention on
the stack; the fused sparse decoder (:mod:`perfmodel.kernels.sparse_attention`) reads through the indices
instead and saves the copy.

out[i, :] = src[idx[i], :] for src [rows, width] (last dimension contiguous) and int32 idx [n].
"""
from __future__ import annotations

import torch

from perfmodel import ops
from perfmodel.kernels._common import cdiv, check_same_device, check_tensor, jit, next_power_of_2, resolve_impl, tl


# ---------------------------------------------------------------------------------------------------------------
# Triton kernel
@jit
def _gather_rows_kernel(Src, Idx, Out, n, width, stride_src, stride_out, BLOCK_R: tl.constexpr,
                        BLOCK_W: tl.constexpr):
    """One program copies a BLOCK_R × BLOCK_W tile: BLOCK_R indices are read once, the rows streamed."""
    offs_r = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    offs_w = tl.program_id(1) * BLOCK_W + tl.arange(0, BLOCK_W)
    r_mask = offs_r < n
    mask = r_mask[:, None] & (offs_w < width)[None, :]
    rows = tl.load(Idx + offs_r, mask=r_mask, other=0).to(tl.int64)
    tile = tl.load(Src + rows[:, None] * stride_src + offs_w[None, :], mask=mask)
    tl.store(Out + offs_r[:, None].to(tl.int64) * stride_out + offs_w[None, :], tile, mask=mask)


# ---------------------------------------------------------------------------------------------------------------
# Wrapper
def gather_rows(src: torch.Tensor, idx: torch.Tensor, *, impl: str | None = None) -> torch.Tensor:
    """src [rows, width] and idx int32/int64 [n] with 0 ≤ idx < rows → [n, width]."""
    check_tensor("src", src, ndim=2)
    check_tensor("idx", idx, ndim=1, dtypes=(torch.int32, torch.int64))
    check_same_device(src=src, idx=idx)
    if not idx.is_cuda and idx.numel() and (idx.min() < 0 or idx.max() >= src.shape[0]):
        raise ValueError(f"idx: expected values in [0, {src.shape[0]}), got [{int(idx.min())}, {int(idx.max())}]")
    if resolve_impl(impl, src, idx) == "torch":
        return gather_rows_reference(src, idx)
    src = src if src.stride(-1) == 1 else src.contiguous()
    n, width = idx.shape[0], src.shape[1]
    out = torch.empty(n, width, dtype=src.dtype, device=src.device)
    if n == 0:
        return out
    block_r = 16 if src.is_cuda else max(1, min(64, next_power_of_2(n)))
    block_w = min(256, next_power_of_2(width))
    _gather_rows_kernel[(cdiv(n, block_r), cdiv(width, block_w))](src, idx, out, n, width, src.stride(0),
                                                                  out.stride(0), BLOCK_R=block_r, BLOCK_W=block_w)
    return out


def gather_rows_op(*, rows, width, dtype: str = "fp16", name: str = "gather") -> ops.Op:
    """Rows read and written once, a 4-byte index per row."""
    return ops.gather(name, rows, width, dtype)


# ---------------------------------------------------------------------------------------------------------------
# Reference
def gather_rows_reference(src: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    return src.index_select(0, idx.long())
