"""Row gather: exact copy of the indexed rows; its Op's bytes."""
from __future__ import annotations

import pytest
import torch

from kernel_checks import cuda, randn, triton_cpu
from perfmodel.kernels._common import dtype_name, tensor_bytes
from perfmodel.kernels.gather import gather_rows, gather_rows_op, gather_rows_reference


@triton_cpu
@pytest.mark.parametrize("rows,width,n,dtype", [(100, 72, 37, torch.float32), (2000, 128, 1025, torch.float16),
                                                (5, 64, 1, torch.float16), (97, 300, 97, torch.float32)])
def test_triton_copies_the_indexed_rows_exactly(rows, width, n, dtype):
    gen = torch.Generator().manual_seed(0)
    src = randn(rows, width, gen=gen, dtype=dtype)
    idx = torch.randint(0, rows, (n,), generator=gen, dtype=torch.int32)
    assert torch.equal(gather_rows(src, idx, impl="triton"), gather_rows_reference(src, idx))


def test_empty_index_list_gives_no_rows():
    assert gather_rows(randn(4, 8), torch.empty(0, dtype=torch.int32)).shape == (0, 8)


@triton_cpu
def test_op_bytes_equal_the_tensors_read_and_written():
    src = randn(300, 128, dtype=torch.float16)
    idx = torch.arange(0, 300, 3, dtype=torch.int32)
    out = gather_rows(src, idx, impl="triton")
    op = gather_rows_op(rows=100, width=128, dtype=dtype_name(src.dtype))
    assert op.kind == "gather"
    assert op.read_bytes == tensor_bytes(idx) + tensor_bytes(out)  # the indexed rows of src, not all of it
    assert op.write_bytes == tensor_bytes(out)


def test_rejects_bad_inputs_saying_expected_and_got():
    with pytest.raises(ValueError, match=r"idx: expected values in \[0, 4\)"):
        gather_rows(randn(4, 8), torch.tensor([4], dtype=torch.int32))
    with pytest.raises(TypeError, match="idx: expected dtype"):
        gather_rows(randn(4, 8), torch.tensor([1.0]))


@cuda
def test_compiled_on_cuda():
    src = randn(100000, 128, dtype=torch.bfloat16, device="cuda")
    idx = torch.randint(0, 100000, (4097,), dtype=torch.int32, device="cuda")
    assert torch.equal(gather_rows(src, idx, impl="triton"), gather_rows_reference(src, idx))
