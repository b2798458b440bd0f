"""XQuant: the X quantiser's round trip and packing, the fused dequantise-and-rematerialise GEMM against fp64,
rematerialised K and V within the quantisation bound, the SVD (GQA) and cross-layer (CL) variants, and the Ops'
bytes."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from kernel_checks import assert_close_to_reference, cuda, randn, triton_cpu
from perfmodel.kernels._common import dtype_name, tensor_bytes
from perfmodel.kernels.groupquant import pack_codes, packed_width, unpack_codes
from perfmodel.kernels.xquant import (accumulate_delta, accumulate_delta_op, accumulate_delta_reference,
                                      dequant_matmul, dequant_matmul_op, dequant_matmul_reference, dequantize_x,
                                      dequantize_x_op, quantize_x, quantize_x_deltas, quantize_x_op, svd_factors,
                                      xquant_cl_reconstruct, xquant_remat, xquant_svd_quantize, xquant_svd_remat)


def step_per_element(qx) -> torch.Tensor:
    """The quantisation step of every element of a [tokens, width] GroupQuant, fp64."""
    return qx.scale.double().repeat_interleave(qx.group_size, dim=-1)


@settings(max_examples=40, deadline=None)
@given(bits=st.integers(1, 8), rows=st.integers(1, 4), n=st.integers(1, 40), seed=st.integers(0, 2 ** 16))
def test_pack_unpack_round_trip(bits, rows, n, seed):
    codes = torch.randint(0, 1 << bits, (rows, n), generator=torch.Generator().manual_seed(seed))
    packed = pack_codes(codes, bits)
    assert packed.dtype == torch.uint8 and packed.shape == (rows, packed_width(n, bits))
    assert torch.equal(unpack_codes(packed, bits, n), codes.to(torch.int32))


def test_four_bit_codes_are_two_per_byte_low_nibble_first():
    assert pack_codes(torch.tensor([[1, 2, 15, 0]]), 4).tolist() == [[0x21, 0x0F]]


@pytest.mark.parametrize("bits", [2, 3, 4, 5, 6, 7, 8])
@pytest.mark.parametrize("tokens", [1, 97])
def test_round_trip_within_half_a_step(bits, tokens):
    x = randn(tokens, 256, gen=torch.Generator().manual_seed(bits)) * torch.linspace(0.1, 4.0, 256)
    qx = quantize_x(x, bits, 32)
    assert qx.codes.shape == (tokens, 256 * bits // 8) and qx.scale.shape == (tokens, 8)
    err = (dequantize_x(qx, torch.float64) - x.double()).abs()
    step = step_per_element(qx)
    assert (err <= step / 2 * (1 + 1e-6) + 1e-6).all()


# tokens, hidden, out_features, bits, group, dtype
CASES = [
    (97, 256, 128, 8, 32, torch.float32),
    (1025, 128, 128, 4, 32, torch.float16),
    (1, 256, 64, 3, 64, torch.float16),
    (97, 256, 128, 2, 128, torch.float32),
    (97, 128, 256, 5, 32, torch.float16),
    (97, 192, 64, 4, 48, torch.float32),  # a group that is not a power of two: per-element scales
]


@triton_cpu
@pytest.mark.parametrize("tokens,hidden,out_features,bits,group,dtype", CASES)
def test_dequant_matmul_matches_fp64_reference(tokens, hidden, out_features, bits, group, dtype):
    gen = torch.Generator().manual_seed(0)
    x = randn(tokens, hidden, gen=gen, dtype=dtype)
    w = randn(out_features, hidden, gen=gen, dtype=dtype, scale=hidden ** -0.5)
    qx = quantize_x(x, bits, group)
    out = dequant_matmul(qx, w, impl="triton")
    assert out.shape == (tokens, out_features) and out.dtype == dtype
    # The reference multiplies the same dequantised X (rounded to the weights' dtype, as the kernel's dot sees it).
    ref = F.linear(dequantize_x(qx, dtype).double(), w.double())
    pt = dequant_matmul_reference(qx, w, compute_dtype=dtype)
    assert_close_to_reference(out, ref, pt)


def remat_bound(qx, w: torch.Tensor) -> torch.Tensor:
    """|K̂ − K| ≤ Σ_i |X̂ − X|_i·|W|_ji ≤ (step/2)·|W|ᵀ, elementwise (plus fp32 rounding of the products)."""
    bound = (step_per_element(qx) / 2) @ w.double().abs().T
    return bound * (1 + 1e-5) + 1e-5


@pytest.mark.parametrize("impl", [pytest.param("triton", marks=triton_cpu), "torch"])
def test_remat_at_8_bits_matches_unquantised_projections_within_the_quantisation_bound(impl):
    gen = torch.Generator().manual_seed(1)
    x = randn(97, 256, gen=gen)
    w_k, w_v = randn(64, 256, gen=gen, scale=1 / 16), randn(64, 256, gen=gen, scale=1 / 16)
    qx = quantize_x(x, 8, 32)
    k, v = xquant_remat(qx, w_k, w_v, impl=impl)
    for got, w in ((k, w_k), (v, w_v)):
        exact = x.double() @ w.double().T
        assert ((got.double() - exact).abs() <= remat_bound(qx, w)).all()


def test_remat_error_grows_as_bits_fall():
    gen = torch.Generator().manual_seed(2)
    x = randn(97, 256, gen=gen)
    w_k, w_v = randn(64, 256, gen=gen, scale=1 / 16), randn(64, 256, gen=gen, scale=1 / 16)
    exact = torch.cat([x @ w_k.T, x @ w_v.T], dim=1).double()
    rms, worst = [], []
    for bits in (8, 6, 4, 3, 2):
        k, v = xquant_remat(quantize_x(x, bits, 32), w_k, w_v)
        err = torch.cat([k, v], dim=1).double() - exact
        rms.append(err.pow(2).mean().sqrt().item())
        worst.append(err.abs().max().item())
    assert rms == sorted(rms) and len(set(rms)) == len(rms), rms
    assert worst == sorted(worst), worst


@pytest.mark.parametrize("impl", [pytest.param("triton", marks=triton_cpu), "torch"])
def test_svd_latents_rematerialise_k_and_v(impl):
    gen = torch.Generator().manual_seed(3)
    hidden, kv_dim = 256, 64  # GQA: K and V are narrower than X
    x = randn(97, hidden, gen=gen)
    w_k, w_v = randn(kv_dim, hidden, gen=gen, scale=1 / 16), randn(kv_dim, hidden, gen=gen, scale=1 / 16)
    f = svd_factors(w_k, w_v)
    assert f.down_k.shape == (kv_dim, hidden) and f.up_k.shape == (kv_dim, kv_dim)
    torch.testing.assert_close(f.up_k @ f.down_k, w_k, rtol=0, atol=1e-5)
    torch.testing.assert_close(f.up_v @ f.down_v, w_v, rtol=0, atol=1e-5)
    ql_k, ql_v = xquant_svd_quantize(x, f, bits=8, group_size=32)
    assert ql_k.n == kv_dim  # the cache holds kv_dim-wide latents, not hidden-wide X
    k, v = xquant_svd_remat(ql_k, ql_v, f, impl=impl)
    for got, w, ql, up in ((k, w_k, ql_k, f.up_k), (v, w_v, ql_v, f.up_v)):
        exact = x.double() @ w.double().T
        # The latent's quantisation error goes through the small factor only.
        assert ((got.double() - exact).abs() <= remat_bound(ql, up) + 1e-4).all()


@pytest.mark.parametrize("impl", [pytest.param("triton", marks=triton_cpu), "torch"])
def test_cross_layer_deltas_reconstruct_every_layer_within_half_a_step(impl):
    gen = torch.Generator().manual_seed(4)
    xs = [randn(33, 256, gen=gen)]
    for _ in range(6):  # consecutive layers' inputs differ by a small residual update
        xs.append(xs[-1] + randn(33, 256, gen=gen, scale=0.1))
    entries = quantize_x_deltas(xs, bits=4, group_size=32)
    recon = xquant_cl_reconstruct(entries, torch.float32, impl=impl)
    for layer, (x, x_hat, q) in enumerate(zip(xs, recon, entries)):
        err = (x_hat.double() - x.double()).abs()
        assert (err <= step_per_element(q) / 2 + 1e-5).all(), layer  # closed loop: no build-up across layers
    # Deltas span a smaller range than X itself, so their steps are finer: the point of XQuant-CL.
    assert entries[3].scale.float().mean() < entries[0].scale.float().mean() / 3


@triton_cpu
@pytest.mark.parametrize("tokens,dtype", [(1, torch.float32), (97, torch.float16), (1025, torch.float32)])
def test_accumulate_delta_matches_reference(tokens, dtype):
    gen = torch.Generator().manual_seed(5)
    acc = randn(tokens, 128, gen=gen, dtype=dtype)
    q = quantize_x(randn(tokens, 128, gen=gen, scale=0.1), 4, 32)
    out = accumulate_delta(acc.clone(), q, impl="triton")
    ref = acc.double() + dequantize_x(q, torch.float64)
    pt = accumulate_delta_reference(acc.clone(), q)
    assert_close_to_reference(out, ref, pt)


@triton_cpu
@pytest.mark.parametrize("bits", [8, 4, 3])
def test_op_bytes_equal_the_tensors_read_and_written(bits):
    gen = torch.Generator().manual_seed(6)
    x = randn(97, 256, gen=gen, dtype=torch.float16)
    w = randn(128, 256, gen=gen, dtype=torch.float16, scale=1 / 16)
    qx = quantize_x(x, bits, 32)
    kw = dict(bits=bits, group_size=32, dtype=dtype_name(x.dtype))
    op = quantize_x_op(tokens=97, hidden=256, **kw)
    assert (op.kind, op.read_bytes, op.write_bytes) == ("quantize", tensor_bytes(x), tensor_bytes(*qx.tensors()))
    x_hat = dequantize_x(qx, x.dtype)
    op = dequantize_x_op(tokens=97, hidden=256, **kw)
    assert (op.kind, op.read_bytes, op.write_bytes) == ("dequantize", tensor_bytes(*qx.tensors()),
                                                        tensor_bytes(x_hat))
    out = dequant_matmul(qx, w, impl="triton")
    op = dequant_matmul_op(tokens=97, out_features=128, in_features=256, **kw)
    assert op.kind == "gemm"
    assert op.read_bytes == pytest.approx(tensor_bytes(*qx.tensors(), w), rel=1e-12)
    assert op.write_bytes == tensor_bytes(out)
    assert op.flops == 2 * 97 * 128 * 256
    acc = x.clone()
    accumulate_delta(acc, qx, impl="triton")
    op = accumulate_delta_op(tokens=97, hidden=256, **kw)
    assert op.kind == "elementwise"
    assert op.read_bytes == pytest.approx(tensor_bytes(acc, *qx.tensors()), rel=1e-12)
    assert op.write_bytes == tensor_bytes(acc)


def test_rejects_bad_inputs_saying_expected_and_got():
    x = randn(4, 64)
    with pytest.raises(ValueError, match="bits=1: expected one of 2, 3"):
        quantize_x(x, 1)
    with pytest.raises(ValueError, match="group_size=48: expected a positive int dividing the quantised dimension 64"):
        quantize_x(x, 4, 48)
    with pytest.raises(ValueError, match=r"w: expected \[out_features, 64\]"):
        dequant_matmul(quantize_x(x, 4, 32), randn(8, 32))
    with pytest.raises(TypeError, match="expected a 2-D GroupQuant"):
        dequant_matmul(x, randn(8, 64))


@cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("tokens,hidden,out_features,bits", [(4097, 4096, 2048, 4), (97, 1024, 256, 3),
                                                             (1, 512, 128, 8)])
def test_compiled_on_cuda(tokens, hidden, out_features, bits, dtype):
    x = randn(tokens, hidden, dtype=dtype, device="cuda")
    w = randn(out_features, hidden, dtype=dtype, device="cuda", scale=hidden ** -0.5)
    qx = quantize_x(x, bits, 128)
    out = dequant_matmul(qx, w, impl="triton")
    ref = F.linear(dequantize_x(qx, dtype).double(), w.double())
    assert_close_to_reference(out, ref, dequant_matmul_reference(qx, w, compute_dtype=dtype))
    acc = x.clone()
    ref = x.double() + dequantize_x(qx, torch.float64)
    assert_close_to_reference(accumulate_delta(acc, qx, impl="triton"), ref,
                              accumulate_delta_reference(x.clone(), qx))
