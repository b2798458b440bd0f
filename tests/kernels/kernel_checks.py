"""Shared checks of the kernel tests: the tolerance rule, skip marks and input makers.

Tolerance (FlashAttention's tests, ``tests/test_flash_attn.py``): a kernel run in some precision is compared with
an fp64 reference, and allowed at most twice the error that plain torch makes computing the same thing in the
same precision, plus a floor of a few units in the last place at the output's magnitude (so that cases where
torch happens to be exact, e.g. one key, do not demand exactness). The bound is checked on every element.
"""
from __future__ import annotations

import pytest
import torch

from perfmodel.kernels._common import interpreting, triton

FLOOR_ULPS = 4.0


def assert_close_to_reference(out: torch.Tensor, ref64: torch.Tensor, out_torch: torch.Tensor, *,
                              floor_ulps: float = FLOOR_ULPS) -> None:
    """Every element: |out − ref64| ≤ 2·max|out_torch − ref64| + floor_ulps·eps(out.dtype)·max|ref64|."""
    assert out.shape == ref64.shape == out_torch.shape, (out.shape, ref64.shape, out_torch.shape)
    assert out.dtype == out_torch.dtype, (out.dtype, out_torch.dtype)
    ref = ref64.double().cpu()
    torch_err = (out_torch.double().cpu() - ref).abs().max().item()
    floor = floor_ulps * torch.finfo(out.dtype).eps * max(ref.abs().max().item(), 1e-30)
    torch.testing.assert_close(out.double().cpu(), ref, rtol=0.0, atol=2.0 * torch_err + floor,
                               msg=lambda m: f"{m}\n(bound: 2 × torch error {torch_err:.3g} + floor {floor:.3g})")


triton_cpu = pytest.mark.skipif(triton is None or not interpreting(),
                                reason="Triton on CPU needs the triton package and TRITON_INTERPRET=1")
_no_cuda = pytest.mark.skipif(not torch.cuda.is_available() or triton is None,
                              reason="compiled Triton kernels need a CUDA device and triton")


def cuda(test):
    """Mark a test as needing CUDA (marker ``cuda``) and skip it where there is none."""
    return pytest.mark.cuda(_no_cuda(test))


def randn(*shape: int, dtype: torch.dtype = torch.float32, device: str = "cpu", scale: float = 1.0,
          gen: torch.Generator | None = None) -> torch.Tensor:
    """Normal random values made in fp64 on the CPU (reproducible across devices), then cast."""
    return (torch.randn(*shape, dtype=torch.float64, generator=gen) * scale).to(device=device, dtype=dtype)
