"""Fused XQuant decode attention (K and V rematerialised inside the kernel) against an fp64 reference for the
three X caches (X itself, SVD latents, XQuant-CL's reconstruction), the in-place quantiser and dequantiser a
growing cache uses, the remat GEMM on column slices, and the Ops' bytes."""
from __future__ import annotations

import pytest
import torch

from kernel_checks import assert_close_to_reference, cuda, randn, triton_cpu
from perfmodel.kernels._common import dtype_name, tensor_bytes
from perfmodel.kernels.groupquant import GroupQuant, packed_width
from perfmodel.kernels.xquant import dequant_matmul, dequant_matmul_reference, dequantize_x, quantize_x, quantize_x_into
from perfmodel.kernels.xquant_attention import (xquant_attention_ops, xquant_decode_attention,
                                                xquant_decode_attention_reference)


def columns(qx: GroupQuant, lo: int, hi: int) -> GroupQuant:
    """Columns lo..hi−1 of a quantised matrix, as views (lo, hi multiples of the group size)."""
    b = qx.bits
    return GroupQuant(qx.codes[:, packed_width(lo, b):packed_width(hi, b)],
                      qx.scale[:, lo // qx.group_size:hi // qx.group_size],
                      qx.zero[:, lo // qx.group_size:hi // qx.group_size], b, qx.group_size, hi - lo)


def make_case(kind, batch, heads, kv_heads, head_dim, width, cached, new, dtype, bits=4, group=32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    kv_dim = kv_heads * head_dim
    q = randn(batch, heads, head_dim, dtype=dtype, gen=gen)
    k_new = randn(batch, kv_heads, new, head_dim, dtype=dtype, gen=gen)
    v_new = randn(batch, kv_heads, new, head_dim, dtype=dtype, gen=gen)
    rows = cached * batch
    if kind == "x":  # one X for K and V
        x = quantize_x(randn(rows, width, dtype=dtype, gen=gen), bits, group)
        w_k, w_v = (randn(kv_dim, width, dtype=dtype, gen=gen, scale=width ** -0.5) for _ in range(2))
        return q, k_new, v_new, x, w_k, x, w_v
    if kind == "svd":  # latents of K and V side by side, one quantised matrix
        lat = quantize_x(randn(rows, 2 * width, dtype=dtype, gen=gen), bits, group)
        w_k, w_v = (randn(kv_dim, width, dtype=dtype, gen=gen, scale=width ** -0.5) for _ in range(2))
        return q, k_new, v_new, columns(lat, 0, width), w_k, columns(lat, width, 2 * width), w_v
    x = randn(rows, width, dtype=dtype, gen=gen)  # XQuant-CL: the reconstruction in the activation dtype
    w_k, w_v = (randn(kv_dim, width, dtype=dtype, gen=gen, scale=width ** -0.5) for _ in range(2))
    return q, k_new, v_new, x, w_k, x, w_v


# kind, batch, heads, kv_heads, head_dim, width, cached, new, dtype, bits, group, num_splits
CASES = [
    ("x", 2, 4, 4, 32, 128, 37, 1, torch.float32, 4, 32, None),
    ("x", 1, 8, 2, 64, 96, 70, 1, torch.float16, 3, 32, 3),       # 3-bit codes straddle bytes
    ("svd", 2, 8, 2, 64, 128, 33, 1, torch.float16, 4, 32, None),
    ("svd", 1, 4, 1, 32, 32, 1, 1, torch.float32, 8, 32, None),    # one cached token
    ("cl", 2, 8, 4, 32, 128, 50, 1, torch.float16, None, None, 2),
]


@triton_cpu
@pytest.mark.parametrize("kind,batch,heads,kv_heads,head_dim,width,cached,new,dtype,bits,group,num_splits", CASES)
def test_triton_matches_fp64_reference(kind, batch, heads, kv_heads, head_dim, width, cached, new, dtype, bits,
                                       group, num_splits):
    q, k_new, v_new, x_k, w_k, x_v, w_v = make_case(kind, batch, heads, kv_heads, head_dim, width, cached, new,
                                                    dtype, bits or 4, group or 32)
    out = xquant_decode_attention(q, k_new, v_new, x_k, w_k, x_v, w_v, num_splits=num_splits, impl="triton")
    d64 = (lambda t: t.double() if isinstance(t, torch.Tensor) else t)
    ref = xquant_decode_attention_reference(q.double(), k_new.double(), v_new.double(), d64(x_k), w_k.double(),
                                            d64(x_v), w_v.double())
    pt = xquant_decode_attention_reference(q, k_new, v_new, x_k, w_k, x_v, w_v, compute_dtype=dtype)
    assert_close_to_reference(out, ref, pt)


def test_torch_path_equals_remat_then_dense_attention():
    q, k_new, v_new, x, w_k, _, w_v = make_case("x", 2, 8, 2, 32, 64, 20, 1, torch.float32)
    out = xquant_decode_attention(q, k_new, v_new, x, w_k, w_v=w_v)
    ref = xquant_decode_attention_reference(q.double(), k_new.double(), v_new.double(), x, w_k.double(), x,
                                            w_v.double())
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["x", "svd", "cl"])
def test_ops_count_the_remat_on_chip_and_the_new_tokens(kind):
    q, k_new, v_new, x_k, w_k, x_v, w_v = make_case(kind, 2, 8, 2, 32, 64, 20, 1, torch.float16)
    remat_then_attn = xquant_attention_ops(batch=2, cached=20, new=1, heads=8, kv_heads=2, head_dim=32, width=64,
                                           shared=x_v is x_k, quant=None if kind == "cl" else (4, 32),
                                           dtype=dtype_name(q.dtype))
    *remat, attn = remat_then_attn
    assert attn.read_bytes == tensor_bytes(q, k_new, v_new) and attn.write_bytes == tensor_bytes(q)
    x_bytes = (tensor_bytes(x_k) if kind == "cl" else tensor_bytes(*x_k.tensors())
               if kind == "x" else tensor_bytes(*x_k.tensors(), *x_v.tensors()))
    assert sum(op.read_bytes for op in remat) == x_bytes + tensor_bytes(w_k, w_v)
    assert all(op.write_bytes == 0 for op in remat)
    assert sum(op.flops for op in remat) == 2 * 20 * 2 * 64 * 2 * 64  # 2·rows·width·2·kv_dim


@pytest.mark.parametrize("impl", [pytest.param("triton", marks=triton_cpu), "torch"])
def test_remat_gemm_on_column_slices_writes_into_a_strided_half(impl):
    gen = torch.Generator().manual_seed(3)
    lat = quantize_x(randn(24, 128, dtype=torch.float16, gen=gen), 4, 32)
    w = randn(64, 64, dtype=torch.float16, gen=gen, scale=0.125)
    kv = torch.zeros(24, 128, dtype=torch.float16)
    for half in range(2):
        part = columns(lat, 64 * half, 64 * (half + 1))
        got = dequant_matmul(part, w, out=kv[:, 64 * half:64 * (half + 1)], impl=impl)
        assert got.data_ptr() == kv[:, 64 * half:].data_ptr()
        torch.testing.assert_close(got, dequant_matmul_reference(part, w), rtol=2e-3, atol=2e-3)


def test_quantize_into_and_dequantize_out_use_the_caller_s_buffers():
    gen = torch.Generator().manual_seed(5)
    x = randn(10, 128, dtype=torch.float16, gen=gen)
    codes = torch.zeros(16, 64, dtype=torch.uint8)
    scale, zero = (torch.zeros(16, 4, dtype=torch.float16) for _ in range(2))
    dst = GroupQuant(codes[3:13], scale[3:13], zero[3:13], 4, 32, 128)
    quantize_x_into(x, dst)
    fresh = quantize_x(x, 4, 32)
    assert torch.equal(codes[3:13], fresh.codes) and torch.equal(scale[3:13], fresh.scale)
    assert not codes[:3].any() and not codes[13:].any()
    out = torch.empty(10, 128, dtype=torch.float16)
    assert torch.equal(dequantize_x(dst, out=out), dequantize_x(fresh, torch.float16))
    with pytest.raises(ValueError, match="dst: expected a GroupQuant of 10 rows of width 128"):
        quantize_x_into(x, GroupQuant(codes[:4], scale[:4], zero[:4], 4, 32, 128))


def test_rejects_bad_inputs_saying_expected_and_got():
    q, k_new, v_new, x, w_k, _, w_v = make_case("x", 2, 8, 2, 32, 64, 20, 1, torch.float32)
    with pytest.raises(ValueError, match=r"w_k: expected shape \[64, 64\]"):
        xquant_decode_attention(q, k_new, v_new, x, w_k[:32], w_v=w_v)
    with pytest.raises(ValueError, match="w_v: expected the value weights"):
        xquant_decode_attention(q, k_new, v_new, x, w_k)


@cuda
@pytest.mark.parametrize("kind", ["x", "svd", "cl"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_compiled_on_cuda(kind, dtype):
    case = make_case(kind, 2, 32, 8, 128, 1024 if kind != "svd" else 1024, 513, 1, dtype, 4, 128)
    q, k_new, v_new, x_k, w_k, x_v, w_v = case

    def to(t):
        if isinstance(t, torch.Tensor):
            return t.cuda()
        return GroupQuant(t.codes.cuda(), t.scale.cuda(), t.zero.cuda(), t.bits, t.group_size, t.n)
    xk = to(x_k)
    xv = xk if x_v is x_k else to(x_v)
    out = xquant_decode_attention(to(q), to(k_new), to(v_new), xk, to(w_k), xv, to(w_v), impl="triton")
    d64 = (lambda t: t.double() if isinstance(t, torch.Tensor) else t)
    ref = xquant_decode_attention_reference(q.double(), k_new.double(), v_new.double(), d64(x_k), w_k.double(),
                                            d64(x_v), w_v.double())
    pt = xquant_decode_attention_reference(q, k_new, v_new, x_k, w_k, x_v, w_v, compute_dtype=dtype)
    assert_close_to_reference(out.cpu(), ref, pt)
