"""Flash attention with causal, bidirectional and block-causal masks against an fp64 reference; mask semantics
and the Op's FLOPs and bytes."""
from __future__ import annotations

import pytest
import torch

from kernel_checks import assert_close_to_reference, cuda, randn, triton_cpu
from perfmodel.kernels._common import dtype_name, tensor_bytes
from perfmodel.kernels.prefill_attention import (attention_mask, prefill_attention, prefill_attention_op,
                                                 prefill_attention_reference)

# batch, heads, kv_heads, q_len, kv_len, head_dim, dtype, mask, block_size
CASES = [
    (1, 4, 1, 97, 97, 64, torch.float32, "causal", None),                    # ARM prefill, GQA 4
    (1, 2, 2, 1025, 1025, 64, torch.float16, "causal", None),                # long prefill, MHA
    (2, 8, 2, 97, 97, 128, torch.float16, "bidirectional", None),            # vanilla DLM step
    (1, 8, 1, 97, 97, 64, torch.float32, "block_causal", 16),                # block-causal prefill, GQA 8
    (1, 4, 1, 32, 1025, 64, torch.float16, "block_causal", 32),              # block diffusion step on a cache
    (1, 8, 8, 32, 97, 128, torch.float32, "block_causal", 16),               # two blocks after a cache
    (1, 2, 1, 1, 1, 64, torch.float32, "causal", None),                      # length 1
    (2, 4, 1, 5, 40, 128, torch.float16, "causal", None),                    # chunked prefill on a cache
]


def make(batch, heads, kv_heads, q_len, kv_len, head_dim, dtype, device="cpu", seed=0):
    gen = torch.Generator().manual_seed(seed)
    return (randn(batch, heads, q_len, head_dim, dtype=dtype, device=device, gen=gen),
            randn(batch, kv_heads, kv_len, head_dim, dtype=dtype, device=device, gen=gen),
            randn(batch, kv_heads, kv_len, head_dim, dtype=dtype, device=device, gen=gen))


def check(q, k, v, out, mask, block_size):
    ref = prefill_attention_reference(q.double(), k.double(), v.double(), mask=mask, block_size=block_size)
    pt = prefill_attention_reference(q, k, v, mask=mask, block_size=block_size, compute_dtype=q.dtype)
    assert_close_to_reference(out, ref, pt)


@triton_cpu
@pytest.mark.parametrize("batch,heads,kv_heads,q_len,kv_len,head_dim,dtype,mask,block_size", CASES)
def test_triton_matches_fp64_reference(batch, heads, kv_heads, q_len, kv_len, head_dim, dtype, mask, block_size):
    q, k, v = make(batch, heads, kv_heads, q_len, kv_len, head_dim, dtype)
    out = prefill_attention(q, k, v, mask=mask, block_size=block_size, impl="triton")
    assert out.shape == q.shape and out.dtype == dtype
    check(q, k, v, out, mask, block_size)


@pytest.mark.parametrize("batch,heads,kv_heads,q_len,kv_len,head_dim,dtype,mask,block_size",
                         CASES + [(1, 4, 2, 97, 97, 64, torch.bfloat16, "causal", None),
                                  (2, 8, 2, 16, 97, 128, torch.bfloat16, "bidirectional", None)])
def test_torch_path_matches_fp64_reference(batch, heads, kv_heads, q_len, kv_len, head_dim, dtype, mask,
                                           block_size):
    # The torch path is PyTorch's own fused attention (scaled_dot_product_attention), masks as the kernel's.
    q, k, v = make(batch, heads, kv_heads, q_len, kv_len, head_dim, dtype)
    check(q, k, v, prefill_attention(q, k, v, mask=mask, block_size=block_size, impl="torch"), mask, block_size)


@pytest.mark.parametrize("impl", [pytest.param("triton", marks=triton_cpu), "torch"])
def test_writes_into_a_token_major_output(impl):
    # q taken out of a fused [batch, tokens, heads + 2·kv_heads, d] projection, the result written where an
    # output projection reads it: [batch, tokens, heads, d] (no copy between the kernels).
    gen = torch.Generator().manual_seed(7)
    qkv = randn(2, 33, 8 + 2 * 2, 64, gen=gen, dtype=torch.float16)
    q = qkv[:, :, :8].permute(0, 2, 1, 3)
    k, v = (qkv[:, :, 8 + 2 * i:10 + 2 * i].permute(0, 2, 1, 3) for i in range(2))
    buf = torch.empty(2, 33, 8, 64, dtype=torch.float16)
    got = prefill_attention(q, k, v, mask="causal", out=buf.permute(0, 2, 1, 3), impl=impl)
    assert got.data_ptr() == buf.data_ptr()
    check(q, k, v, buf.permute(0, 2, 1, 3), "causal", None)


def test_masks_as_drawn():
    t, f = True, False
    assert attention_mask(4, 4, "causal").tolist() == [[t, f, f, f], [t, t, f, f], [t, t, t, f], [t, t, t, t]]
    assert attention_mask(4, 4, "block_causal", 2).tolist() == [[t, t, f, f], [t, t, f, f],
                                                                [t, t, t, t], [t, t, t, t]]
    # Two queries after three cached keys: the cache is visible to both; causal within the queries.
    assert attention_mask(2, 5, "causal").tolist() == [[t, t, t, t, f], [t, t, t, t, t]]
    # One diffusion block of 2 queries after 3 cached keys sees everything.
    assert attention_mask(2, 5, "block_causal", 2).all()
    assert attention_mask(3, 7, "bidirectional").all()


def test_block_causal_with_block_1_is_causal_and_with_the_whole_block_is_bidirectional():
    assert torch.equal(attention_mask(9, 12, "block_causal", 1), attention_mask(9, 12, "causal"))
    assert torch.equal(attention_mask(9, 12, "block_causal", 9), attention_mask(9, 12, "bidirectional"))


@pytest.mark.parametrize("q_len,kv_len,mask,block_size", [(97, 97, "causal", None), (5, 40, "causal", None),
                                                          (97, 97, "bidirectional", None),
                                                          (96, 96, "block_causal", 32), (32, 1025, "block_causal", 32),
                                                          (64, 200, "block_causal", 16)])
def test_op_flops_count_the_visible_pairs(q_len, kv_len, mask, block_size):
    op = prefill_attention_op(batch=2, q_len=q_len, kv_len=kv_len, heads=8, kv_heads=2, head_dim=64, mask=mask,
                              block_size=block_size or 1)
    pairs = int(attention_mask(q_len, kv_len, mask, block_size).sum())
    assert op.flops == 4 * 2 * 8 * pairs * 64


@triton_cpu
@pytest.mark.parametrize("mask,block_size", [("causal", None), ("bidirectional", None), ("block_causal", 16)])
def test_op_bytes_equal_the_tensors_read_and_written(mask, block_size):
    q, k, v = make(2, 8, 2, 64, 97, 64, torch.float16)
    out = prefill_attention(q, k, v, mask=mask, block_size=block_size, impl="triton")
    op = prefill_attention_op(batch=2, q_len=64, kv_len=97, heads=8, kv_heads=2, head_dim=64, mask=mask,
                              block_size=block_size or 1, dtype=dtype_name(q.dtype))
    assert op.read_bytes == tensor_bytes(q, k, v)
    assert op.write_bytes == tensor_bytes(out)


def test_rejects_bad_inputs_saying_expected_and_got():
    q, k, v = make(1, 4, 2, 8, 8, 64, torch.float32)
    with pytest.raises(ValueError, match="mask='sliding'"):
        prefill_attention(q, k, v, mask="sliding")
    with pytest.raises(ValueError, match="block_size=None: expected a positive int"):
        prefill_attention(q, k, v, mask="block_causal")
    with pytest.raises(ValueError, match="q_len ≤ kv_len=4"):
        prefill_attention(q, k[:, :, :4], v[:, :, :4])
    with pytest.raises(ValueError, match=r"k: expected shape \[1, \*, \*, 64\]"):
        prefill_attention(q, k[..., :32], v[..., :32])


@cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("batch,heads,kv_heads,q_len,kv_len,head_dim,mask,block_size", [
    (2, 32, 8, 1025, 1025, 128, "causal", None), (1, 8, 1, 97, 97, 64, "bidirectional", None),
    (2, 16, 4, 32, 4097, 128, "block_causal", 32), (1, 8, 8, 1024, 1024, 64, "block_causal", 64)])
def test_compiled_on_cuda(batch, heads, kv_heads, q_len, kv_len, head_dim, mask, block_size, dtype):
    q, k, v = make(batch, heads, kv_heads, q_len, kv_len, head_dim, dtype, device="cuda")
    check(q, k, v, prefill_attention(q, k, v, mask=mask, block_size=block_size, impl="triton"), mask, block_size)
