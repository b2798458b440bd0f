"""The kernels a whole forward pass adds to the attention and GEMM ones: embedding lookup, greedy sampling (token
and confidence), the cache write and XQuant-CL's subtraction; against fp64 references, and the Ops' bytes."""
from __future__ import annotations

import pytest
import torch

from kernel_checks import cuda, randn, triton_cpu
from perfmodel.kernels._common import dtype_name, tensor_bytes
from perfmodel.kernels.elementwise import subtract, subtract_op, subtract_reference
from perfmodel.kernels.embedding import embedding, embedding_op, embedding_reference
from perfmodel.kernels.kv_write import write_kv, write_kv_op
from perfmodel.kernels.sampling import greedy, greedy_op, greedy_reference

DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def test_embedding_gathers_rows_and_counts_its_bytes():
    gen = torch.Generator().manual_seed(0)
    table = randn(1000, 96, dtype=torch.bfloat16, gen=gen)
    ids = torch.randint(0, 1000, (3, 17), generator=gen, dtype=torch.int32)
    out = embedding(ids, table)
    assert out.shape == (3, 17, 96) and torch.equal(out, embedding_reference(ids, table))
    op = embedding_op(tokens=ids.numel(), hidden=96, dtype=dtype_name(table.dtype))
    assert (op.read_bytes, op.write_bytes) == (tensor_bytes(out) + tensor_bytes(ids), tensor_bytes(out))
    with pytest.raises(ValueError, match=r"ids: expected values in \[0, 1000\)"):
        embedding(torch.tensor([1000]), table)


def logits_with_ties(rows, vocab, dtype, seed):
    gen = torch.Generator().manual_seed(seed)
    x = randn(rows, vocab, dtype=dtype, gen=gen, scale=3.0)
    x[0, vocab // 3] = x[0, 2 * vocab // 3] = x[0].max() + 1  # a tie: the first index wins
    x[-1, : vocab // 2] = float("-inf")                      # masked entries
    return x


@pytest.mark.parametrize("impl", [pytest.param("triton", marks=triton_cpu), "torch"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows,vocab", [(5, 1000), (3, 1025), (1, 7), (2, 50257)])
def test_greedy_picks_the_first_maximum_and_its_probability(impl, dtype, rows, vocab):
    x = logits_with_ties(rows, vocab, dtype, seed=vocab)
    token, conf = greedy(x, impl=impl)
    ref_token, ref_conf = greedy_reference(x)
    assert token.dtype == torch.int64 and conf.dtype == torch.float32
    assert torch.equal(token, ref_token)
    # fp32 sum of up to 50257 exponentials: a relative error of a few hundred ulps of fp32 at most.
    torch.testing.assert_close(conf.double(), ref_conf, rtol=2e-5, atol=0)


def test_greedy_of_a_batch_keeps_the_leading_shape():
    x = randn(2, 3, 100, gen=torch.Generator().manual_seed(1))
    token, conf = greedy(x)
    assert token.shape == conf.shape == (2, 3)
    op = greedy_op(rows=6, vocab=100, dtype="fp32")
    assert (op.read_bytes, op.write_bytes, op.shape["variant"]) == (tensor_bytes(x), 0, "softmax")


@pytest.mark.parametrize("impl", [pytest.param("triton", marks=triton_cpu), "torch"])
@pytest.mark.parametrize("src,dst", [(torch.float16, torch.float16), (torch.float32, torch.float16),
                                     (torch.bfloat16, torch.bfloat16)])
def test_write_kv_files_a_strided_qkv_slice_into_the_cache(impl, src, dst):
    gen = torch.Generator().manual_seed(2)
    qkv = randn(2, 13, 8 + 2 * 2, 64, dtype=src, gen=gen)        # [batch, tokens, heads + 2·kv_heads, d]
    k = qkv[:, :, 8:10].permute(0, 2, 1, 3)
    v = qkv[:, :, 10:12].permute(0, 2, 1, 3)
    k_cache, v_cache = (torch.zeros(2, 2, 40, 64, dtype=dst) for _ in range(2))
    write_kv(k_cache[:, :, 20:33], v_cache[:, :, 20:33], k, v, impl=impl)
    assert torch.equal(k_cache[:, :, 20:33], k.to(dst)) and torch.equal(v_cache[:, :, 20:33], v.to(dst))
    assert not k_cache[:, :, :20].any() and not v_cache[:, :, 33:].any()
    op = write_kv_op(batch=2, tokens=13, kv_heads=2, head_dim=64, dtype=dtype_name(src), cache_dtype=dtype_name(dst))
    assert (op.read_bytes, op.write_bytes) == (tensor_bytes(k, v), tensor_bytes(k_cache[:, :, 20:33], v_cache[:, :, 20:33]))


@pytest.mark.parametrize("dtype", DTYPES)
def test_subtract(dtype):
    a, b = (randn(7, 33, dtype=dtype, gen=torch.Generator().manual_seed(i)) for i in range(2))
    torch.testing.assert_close(subtract(a, b), subtract_reference(a, b), rtol=0, atol=0)
    op = subtract_op(tokens=7, width=33, dtype=dtype_name(dtype))
    assert (op.read_bytes, op.write_bytes) == (tensor_bytes(a, b), tensor_bytes(a))


@cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_compiled_on_cuda(dtype):
    x = logits_with_ties(7, 128256, dtype, seed=3).cuda()
    token, conf = greedy(x, impl="triton")
    ref_token, ref_conf = greedy_reference(x.cpu())
    assert torch.equal(token.cpu(), ref_token)
    torch.testing.assert_close(conf.cpu().double(), ref_conf, rtol=2e-5, atol=0)
    qkv = randn(3, 33, 16, 128, dtype=dtype, device="cuda")
    k, v = qkv[:, :, 8:12].permute(0, 2, 1, 3), qkv[:, :, 12:].permute(0, 2, 1, 3)
    k_cache, v_cache = (torch.zeros(3, 4, 64, 128, dtype=dtype, device="cuda") for _ in range(2))
    write_kv(k_cache[:, :, 7:40], v_cache[:, :, 7:40], k, v, impl="triton")
    assert torch.equal(k_cache[:, :, 7:40], k) and torch.equal(v_cache[:, :, 7:40], v)
