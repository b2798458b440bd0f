"""The torch GEMM/GEMV and elementwise ops against fp64 references, and their Ops' bytes."""
from __future__ import annotations

import pytest
import torch

from kernel_checks import assert_close_to_reference, randn
from perfmodel.kernels._common import dtype_name, tensor_bytes
from perfmodel.kernels.elementwise import (residual_add, residual_add_op, residual_add_reference, rmsnorm,
                                           rmsnorm_op, rmsnorm_reference, rope, rope_op, rope_reference, silu_mul,
                                           silu_mul_op, silu_mul_reference)
from perfmodel.kernels.gemm import linear, linear_op, linear_reference

DTYPES = [torch.float32, torch.bfloat16, torch.float16]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("m,n,k,bias", [(1, 256, 1025, False), (97, 128, 256, True), (1025, 64, 128, False)])
def test_linear_matches_fp64_reference(m, n, k, bias, dtype):
    gen = torch.Generator().manual_seed(0)
    x, w = randn(m, k, gen=gen, dtype=dtype), randn(n, k, gen=gen, dtype=dtype, scale=k ** -0.5)
    b = randn(n, gen=gen, dtype=dtype) if bias else None
    out = linear(x, w, b)
    ref = linear_reference(x.double(), w.double(), None if b is None else b.double())
    assert_close_to_reference(out, ref, linear_reference(x, w, b, compute_dtype=dtype))
    op = linear_op(m=m, n=n, k=k, dtype=dtype_name(dtype), bias=bias)
    assert (op.kind, op.read_bytes, op.write_bytes) == ("gemm", tensor_bytes(x, w, b), tensor_bytes(out))
    assert op.flops == 2 * m * n * k + (m * n if bias else 0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("tokens,width", [(1, 64), (97, 1025), (1025, 128)])
def test_rmsnorm_matches_fp64_reference(tokens, width, dtype):
    gen = torch.Generator().manual_seed(1)
    x, w = randn(tokens, width, gen=gen, dtype=dtype, scale=3.0), randn(width, gen=gen, dtype=dtype)
    out = rmsnorm(x, w)
    assert_close_to_reference(out, rmsnorm_reference(x.double(), w.double()),
                              rmsnorm_reference(x, w, compute_dtype=dtype))
    op = rmsnorm_op(tokens=tokens, width=width, dtype=dtype_name(dtype))
    assert (op.kind, op.read_bytes, op.write_bytes) == ("norm", tensor_bytes(x, w), tensor_bytes(out))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("tokens,width", [(1, 64), (97, 1025)])
def test_silu_mul_and_residual_add_match_fp64_references(tokens, width, dtype):
    gen = torch.Generator().manual_seed(2)
    a, b = randn(tokens, width, gen=gen, dtype=dtype, scale=3.0), randn(tokens, width, gen=gen, dtype=dtype)
    out = silu_mul(a, b)
    assert_close_to_reference(out, silu_mul_reference(a.double(), b.double()),
                              silu_mul_reference(a, b, compute_dtype=dtype))
    op = silu_mul_op(tokens=tokens, width=width, dtype=dtype_name(dtype))
    assert (op.kind, op.read_bytes, op.write_bytes) == ("elementwise", tensor_bytes(a, b), tensor_bytes(out))
    out = residual_add(a, b)
    assert_close_to_reference(out, residual_add_reference(a.double(), b.double()),
                              residual_add_reference(a, b, compute_dtype=dtype))
    op = residual_add_op(tokens=tokens, width=width, dtype=dtype_name(dtype))
    assert (op.kind, op.read_bytes, op.write_bytes) == ("elementwise", tensor_bytes(a, b), tensor_bytes(out))
    into = torch.empty_like(a)
    assert residual_add(a, b, out=into) is into and torch.equal(into, out)


def rope_tables(tokens, head_dim, dtype):
    inv_freq = 10000.0 ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    angles = torch.arange(tokens, dtype=torch.float64)[:, None] * inv_freq[None, :]
    return angles.cos().to(dtype), angles.sin().to(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("tokens,heads,head_dim", [(1, 8, 64), (97, 4, 128), (1025, 2, 64)])
def test_rope_matches_fp64_reference(tokens, heads, head_dim, dtype):
    x = randn(tokens, heads, head_dim, gen=torch.Generator().manual_seed(3), dtype=dtype)
    cos, sin = rope_tables(tokens, head_dim, dtype)
    out = rope(x, cos, sin)
    assert_close_to_reference(out, rope_reference(x.double(), cos.double(), sin.double()),
                              rope_reference(x, cos, sin, compute_dtype=dtype))
    # Rotations keep each pair's squared length (up to a few roundings of the tables and the products).
    def pair_lengths(t):
        return t.double().reshape(tokens, heads, 2, head_dim // 2).pow(2).sum(2)
    eps = torch.finfo(dtype).eps
    torch.testing.assert_close(pair_lengths(out), pair_lengths(x), rtol=8 * eps, atol=8 * eps)
    op = rope_op(tokens=tokens, heads=heads, head_dim=head_dim, dtype=dtype_name(dtype))
    # x and the cos/sin tables read (the tables shared by all heads: 1/heads of x), out written.
    assert (op.kind, op.read_bytes, op.write_bytes) == ("elementwise", tensor_bytes(x, cos, sin), tensor_bytes(out))
    assert tensor_bytes(cos, sin) == tensor_bytes(x) / heads


@pytest.mark.parametrize("dtype", DTYPES)
def test_rope_of_a_batch_uses_the_same_positions_for_every_sequence(dtype):
    # A strided view, as a model takes q and k out of its fused QKV projection: [batch, tokens, heads, d].
    qkv = randn(3, 37, 5, 64, gen=torch.Generator().manual_seed(5), dtype=dtype)
    x = qkv[:, :, :4]
    cos, sin = rope_tables(37, 64, dtype)
    out = rope(x, cos, sin)
    assert out.shape == x.shape and out.is_contiguous()
    for b in range(3):
        torch.testing.assert_close(out[b], rope(x[b].contiguous(), cos, sin), rtol=0, atol=0)
    op = rope_op(tokens=3 * 37, heads=4, head_dim=64, dtype=dtype_name(dtype))
    assert op.read_bytes == tensor_bytes(x) + 3 * tensor_bytes(cos, sin)  # the tables once per sequence


def test_rejects_bad_inputs_saying_expected_and_got():
    with pytest.raises(ValueError, match=r"w: expected shape \[\*, 64\]"):
        linear(randn(2, 64), randn(8, 32))
    with pytest.raises(TypeError, match="w: expected dtype"):
        linear(randn(2, 64), randn(8, 64, dtype=torch.float16))
    with pytest.raises(ValueError, match=r"weight: expected shape \[16\]"):
        rmsnorm(randn(2, 16), randn(8))
    with pytest.raises(ValueError, match=r"up: expected shape \[2, 16\]"):
        silu_mul(randn(2, 16), randn(2, 8))
    with pytest.raises(ValueError, match="expected an even head_dim, got 63"):
        rope(randn(4, 2, 63), randn(4, 31), randn(4, 31))
    with pytest.raises(ValueError, match=r"x: expected \[tokens, heads, head_dim\]"):
        rope(randn(4, 64), randn(4, 32), randn(4, 32))
