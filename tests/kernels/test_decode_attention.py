"""Flash-decoding against an fp64 reference: GQA, ragged lengths, splits, bias; its Op's bytes."""
from __future__ import annotations

import pytest
import torch

from kernel_checks import assert_close_to_reference, cuda, randn, triton_cpu
from perfmodel.kernels._common import dtype_name, tensor_bytes
from perfmodel.kernels.decode_attention import decode_attention, decode_attention_op, decode_attention_reference

# batch, heads, kv_heads, max_len, head_dim, dtype, ragged, num_splits
CASES = [
    (2, 4, 4, 97, 64, torch.float32, True, None),
    (2, 8, 2, 97, 128, torch.float16, True, 2),
    (1, 8, 1, 1025, 64, torch.float16, False, None),
    (2, 8, 1, 1025, 128, torch.float32, True, 5),
    (3, 4, 1, 1, 128, torch.float32, False, None),
    (2, 4, 4, 1, 64, torch.float16, True, None),
]


def make(batch, heads, kv_heads, max_len, head_dim, dtype, ragged, device="cpu", seed=0):
    gen = torch.Generator().manual_seed(seed)
    q = randn(batch, heads, head_dim, dtype=dtype, device=device, gen=gen)
    k = randn(batch, kv_heads, max_len, head_dim, dtype=dtype, device=device, gen=gen)
    v = randn(batch, kv_heads, max_len, head_dim, dtype=dtype, device=device, gen=gen)
    lens = None
    if ragged:
        lens = torch.randint(1, max_len + 1, (batch,), generator=gen, dtype=torch.int32)
        lens[0] = max_len
        lens = lens.to(device)
    return q, k, v, lens


def check(q, k, v, lens, out, bias=None):
    ref = decode_attention_reference(q.double(), k.double(), v.double(), lens, bias=bias)
    pt = decode_attention_reference(q, k, v, lens, bias=bias, compute_dtype=q.dtype)
    assert_close_to_reference(out, ref, pt)


@triton_cpu
@pytest.mark.parametrize("batch,heads,kv_heads,max_len,head_dim,dtype,ragged,num_splits", CASES)
def test_triton_matches_fp64_reference(batch, heads, kv_heads, max_len, head_dim, dtype, ragged, num_splits):
    q, k, v, lens = make(batch, heads, kv_heads, max_len, head_dim, dtype, ragged)
    out = decode_attention(q, k, v, lens, num_splits=num_splits, impl="triton")
    assert out.dtype == dtype and out.shape == q.shape
    check(q, k, v, lens, out)


@pytest.mark.parametrize("batch,heads,kv_heads,max_len,head_dim,dtype,ragged,num_splits", CASES[:2])
def test_torch_path_matches_fp64_reference(batch, heads, kv_heads, max_len, head_dim, dtype, ragged, num_splits):
    q, k, v, lens = make(batch, heads, kv_heads, max_len, head_dim, dtype, ragged)
    check(q, k, v, lens, decode_attention(q, k, v, lens))  # CPU tensors: the torch path by default


@triton_cpu
def test_split_count_does_not_change_the_result():
    q, k, v, lens = make(2, 8, 2, 300, 64, torch.float32, True)
    outs = [decode_attention(q, k, v, lens, num_splits=s, impl="triton") for s in (1, 2, 5)]
    for o in outs[1:]:
        torch.testing.assert_close(o, outs[0], rtol=0, atol=2e-6)


@triton_cpu
def test_bias_shifts_scores_and_minus_inf_hides_keys():
    q, k, v, _ = make(2, 8, 2, 97, 64, torch.float32, False)
    bias = randn(2, 2, 97, gen=torch.Generator().manual_seed(1))
    bias[:, :, 50:] = float("-inf")
    out = decode_attention(q, k, v, bias=bias, num_splits=2, impl="triton")
    check(q, k, v, None, out, bias=bias)
    # hiding keys 50.. by bias is attention over the first 50 keys
    base = decode_attention(q, k[:, :, :50], v[:, :, :50], bias=bias[:, :, :50], impl="triton")
    torch.testing.assert_close(out, base, rtol=0, atol=2e-6)


@pytest.mark.parametrize("impl", [pytest.param("triton", marks=triton_cpu), "torch"])
def test_padding_beyond_seq_len_is_never_read(impl):
    q, k, v, lens = make(2, 4, 2, 100, 64, torch.float32, True)
    lens[1] = 37
    k2, v2 = k.clone(), v.clone()
    for b, n in enumerate(lens.tolist()):
        k2[b, :, n:] = float("nan")
        v2[b, :, n:] = float("nan")
    torch.testing.assert_close(decode_attention(q, k2, v2, lens, impl=impl), decode_attention(q, k, v, lens, impl=impl))


def test_rejects_bad_inputs_saying_expected_and_got():
    q, k, v, lens = make(2, 8, 2, 16, 64, torch.float32, True)
    with pytest.raises(TypeError, match="expected dtype"):
        decode_attention(q, k.half(), v, lens)
    with pytest.raises(ValueError, match="kv_heads dividing heads=8"):
        decode_attention(q, k[:, :1].expand(2, 3, 16, 64), v[:, :1].expand(2, 3, 16, 64))
    with pytest.raises(ValueError, match=r"seq_lens: expected values in \[1, 16\]"):
        decode_attention(q, k, v, torch.tensor([0, 3], dtype=torch.int32))
    with pytest.raises(ValueError, match="impl="):
        decode_attention(q, k, v, impl="cuda")
    with pytest.raises(TypeError, match="expected a torch.Tensor"):
        decode_attention(q.numpy(), k, v)


@triton_cpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_op_bytes_equal_the_tensors_read_and_written(dtype):
    # Minimal traffic: every sequence full length, one split (the kernel writes the output directly).
    q, k, v, _ = make(2, 8, 2, 97, 64, dtype, False)
    out = decode_attention(q, k, v, num_splits=1, impl="triton")
    op = decode_attention_op(batch=2, kv_len=97, heads=8, kv_heads=2, head_dim=64, dtype=dtype_name(dtype))
    assert op.kind == "attention"
    assert op.read_bytes == tensor_bytes(q, k, v)
    assert op.write_bytes == tensor_bytes(out)
    assert op.flops == 4 * 2 * 8 * 97 * 64  # Q·Kᵀ and P·V: 2·d FLOPs each per (query head, key)


def test_op_counts_the_bias_bytes():
    op = decode_attention_op(batch=2, kv_len=97, heads=8, kv_heads=2, head_dim=64, bias=True)
    plain = decode_attention_op(batch=2, kv_len=97, heads=8, kv_heads=2, head_dim=64)
    assert op.read_bytes - plain.read_bytes == tensor_bytes(torch.empty(2, 2, 97, dtype=torch.float32))


@cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("batch,heads,kv_heads,max_len,head_dim,ragged", [(4, 32, 8, 1025, 128, True),
                                                                          (1, 8, 1, 97, 64, False),
                                                                          (3, 16, 16, 4097, 64, True)])
def test_compiled_on_cuda(batch, heads, kv_heads, max_len, head_dim, ragged, dtype):
    q, k, v, lens = make(batch, heads, kv_heads, max_len, head_dim, dtype, ragged, device="cuda")
    for num_splits in (None, 1):
        out = decode_attention(q, k, v, lens, num_splits=num_splits, impl="triton")
        check(q, k, v, lens, out)
