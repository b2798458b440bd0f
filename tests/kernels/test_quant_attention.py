"""KIVI quantisation round trip, decode attention over the quantised cache against an fp64 reference, and the
Ops' bytes."""
from __future__ import annotations

import pytest
import torch

from kernel_checks import assert_close_to_reference, cuda, randn, triton_cpu
from perfmodel.kernels._common import dtype_name, tensor_bytes
from perfmodel.kernels.decode_attention import decode_attention_reference
from perfmodel.kernels.groupquant import GroupQuant, packed_width
from perfmodel.kernels.quant_attention import (QuantizedKV, dequantize_kv, dequantize_kv_op, quant_decode_attention,
                                               quant_decode_attention_op, quant_decode_attention_reference,
                                               quantize_kv, quantize_kv_into, quantize_kv_op, quantized_attention_op,
                                               quantized_length)


def make(batch, heads, kv_heads, seq_len, head_dim, dtype, device="cpu", seed=0):
    gen = torch.Generator().manual_seed(seed)
    return (randn(batch, heads, head_dim, dtype=dtype, device=device, gen=gen),
            randn(batch, kv_heads, seq_len, head_dim, dtype=dtype, device=device, gen=gen),
            randn(batch, kv_heads, seq_len, head_dim, dtype=dtype, device=device, gen=gen))


@pytest.mark.parametrize("seq_len,residual,group,expected", [(97, 32, 32, 64), (96, 32, 32, 64), (31, 0, 32, 0),
                                                             (1, 32, 32, 0), (1025, 0, 64, 1024), (128, 0, 32, 128)])
def test_quantized_length_keeps_whole_groups_and_the_window(seq_len, residual, group, expected):
    assert quantized_length(seq_len, residual, group) == expected


@pytest.mark.parametrize("bits", [8, 4, 2])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_round_trip_within_half_a_step(bits, dtype):
    _, k, v = make(2, 4, 2, 97, 64, dtype)
    k = k * torch.linspace(0.1, 8.0, 64).to(dtype)  # outlier channels, as KIVI observes in keys
    cache = quantize_kv(k, v, bits=bits, group_size=32, residual=16)
    n = cache.quantized_len
    assert n == 64 and cache.seq_len == 97
    k_hat, v_hat = dequantize_kv(cache, torch.float64)
    # Keys: one step per (channel, group of 32 tokens); values: one step per (token, group of 32 channels).
    k_step = cache.keys.scale.double().repeat_interleave(32, dim=-1).transpose(2, 3)
    v_step = cache.values.scale.double().repeat_interleave(32, dim=-1)
    slack = 1e-6  # fp32 arithmetic of code·scale + zero
    assert ((k_hat[:, :, :n] - k[:, :, :n].double()).abs() <= k_step / 2 * (1 + slack) + slack).all()
    assert ((v_hat[:, :, :n] - v[:, :, :n].double()).abs() <= v_step / 2 * (1 + slack) + slack).all()
    # The recent window is kept exactly.
    assert torch.equal(k_hat[:, :, n:], k[:, :, n:].double()) and torch.equal(v_hat[:, :, n:], v[:, :, n:].double())


# batch, heads, kv_heads, seq_len, head_dim, dtype, bits, group, residual, num_splits
CASES = [
    (2, 4, 4, 97, 64, torch.float32, 8, 32, 16, None),
    (1, 8, 1, 1025, 128, torch.float16, 4, 32, 32, None),
    (2, 8, 2, 200, 64, torch.float16, 2, 32, 32, 3),
    (1, 4, 4, 1, 64, torch.float32, 4, 32, 32, None),      # one token: all in the window
    (1, 8, 2, 97, 128, torch.float16, 4, 64, 0, 2),        # window of 33 after 64 quantised tokens
    (1, 4, 1, 128, 64, torch.float32, 8, 32, 0, None),     # everything quantised, empty window
    (1, 4, 2, 97, 96, torch.float16, 4, 32, 16, None),     # head_dim 96: a padded tile, 3 value groups of 4
]


@triton_cpu
@pytest.mark.parametrize("batch,heads,kv_heads,seq_len,head_dim,dtype,bits,group,residual,num_splits", CASES)
def test_triton_matches_fp64_reference(batch, heads, kv_heads, seq_len, head_dim, dtype, bits, group, residual,
                                       num_splits):
    q, k, v = make(batch, heads, kv_heads, seq_len, head_dim, dtype)
    cache = quantize_kv(k, v, bits=bits, group_size=group, residual=residual)
    out = quant_decode_attention(q, cache, num_splits=num_splits, impl="triton")
    ref = quant_decode_attention_reference(q.double(), cache)
    pt = quant_decode_attention_reference(q, cache, compute_dtype=dtype)
    assert_close_to_reference(out, ref, pt)


def test_8_bit_cache_attention_is_close_to_unquantised_attention():
    q, k, v = make(2, 8, 2, 97, 64, torch.float32)
    out = quant_decode_attention(q, quantize_kv(k, v, bits=8, group_size=32, residual=16))
    exact = decode_attention_reference(q, k, v)
    assert (out - exact).abs().max() < 0.02


@triton_cpu
@pytest.mark.parametrize("bits", [8, 4])
def test_op_bytes_equal_the_tensors_read_and_written(bits):
    q, k, v = make(2, 8, 2, 96, 64, torch.float16)
    # Quantise: K and V read, codes and fp16 scales/zeros written (no window: 96 tokens = 3 whole groups).
    cache = quantize_kv(k, v, bits=bits, group_size=32, residual=0)
    op = quantize_kv_op(batch=2, tokens=96, kv_heads=2, head_dim=64, bits=bits, group_size=32)
    assert (op.kind, op.read_bytes, op.write_bytes) == ("quantize", tensor_bytes(k, v), tensor_bytes(*cache.tensors()))
    k_hat, v_hat = dequantize_kv(cache)
    op = dequantize_kv_op(batch=2, tokens=96, kv_heads=2, head_dim=64, bits=bits, group_size=32)
    assert (op.kind, op.read_bytes, op.write_bytes) == ("dequantize", tensor_bytes(*cache.tensors()),
                                                        tensor_bytes(k_hat, v_hat))
    # Decode attention with a window: q, codes, scales, zeros and the window read once; out written once.
    q, k, v = make(2, 8, 2, 97, 64, torch.float16)
    cache = quantize_kv(k, v, bits=bits, group_size=32, residual=16)
    out = quant_decode_attention(q, cache, num_splits=1, impl="triton")
    op = quant_decode_attention_op(batch=2, kv_len=97, heads=8, kv_heads=2, head_dim=64, bits=bits, group_size=32,
                                   residual=16, dtype=dtype_name(q.dtype))
    assert op.read_bytes == pytest.approx(tensor_bytes(q, *cache.tensors()), rel=1e-12)
    assert op.write_bytes == tensor_bytes(out)


def test_rejects_bad_inputs_saying_expected_and_got():
    q, k, v = make(1, 4, 2, 64, 64, torch.float32)
    with pytest.raises(ValueError, match="bits=3: expected one of 2, 4, 8"):
        quantize_kv(k, v, bits=3)
    with pytest.raises(ValueError, match="group_size=48: expected a power of two ≥ 16 dividing head_dim=64"):
        quantize_kv(k, v, group_size=48)
    with pytest.raises(TypeError, match="expected a QuantizedKV"):
        quant_decode_attention(q, (k, v))
    with pytest.raises(TypeError, match="cache.k_recent: expected dtype"):
        quant_decode_attention(q.half(), quantize_kv(k, v))


@cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("bits,head_dim,group", [(8, 128, 32), (4, 128, 64), (2, 128, 32), (4, 96, 32)])
def test_compiled_on_cuda(bits, head_dim, group, dtype):
    q, k, v = make(4, 32, 8, 1025, head_dim, dtype, device="cuda")
    cache = quantize_kv(k, v, bits=bits, group_size=group, residual=64)
    for num_splits in (None, 1):
        out = quant_decode_attention(q, cache, num_splits=num_splits, impl="triton")
        ref = quant_decode_attention_reference(q.double(), cache)
        pt = quant_decode_attention_reference(q, cache, compute_dtype=dtype)
        assert_close_to_reference(out, ref, pt)


def grow_cache(k, v, bits, group, residual, capacity):
    """A KIVI cache grown group by group inside buffers of ``capacity`` tokens, as decoding grows it: the
    window lives in a full-precision store, quantised groups are written in place (views, not copies)."""
    batch, kv_heads, n, d = k.shape
    u8, f16 = torch.uint8, torch.float16
    kc = torch.zeros(batch, kv_heads, d, packed_width(capacity, bits), dtype=u8)
    ks, kz = (torch.zeros(batch, kv_heads, d, capacity // group, dtype=f16) for _ in range(2))
    vc = torch.zeros(batch, kv_heads, capacity, packed_width(d, bits), dtype=u8)
    vs, vz = (torch.zeros(batch, kv_heads, capacity, d // group, dtype=f16) for _ in range(2))
    store_k, store_v = (torch.zeros(batch, kv_heads, capacity, d, dtype=k.dtype) for _ in range(2))
    store_k[:, :, :n], store_v[:, :, :n] = k, v
    n_q = quantized_length(n, residual, group)
    for g0 in range(0, n_q, group):
        g1 = g0 + group
        keys = GroupQuant(kc[..., packed_width(g0, bits):packed_width(g1, bits)], ks[..., g0 // group:g1 // group],
                          kz[..., g0 // group:g1 // group], bits, group, group)
        values = GroupQuant(vc[:, :, g0:g1], vs[:, :, g0:g1], vz[:, :, g0:g1], bits, group, d)
        quantize_kv_into(store_k[:, :, g0:g1], store_v[:, :, g0:g1], keys, values)
    return QuantizedKV(GroupQuant(kc[..., :packed_width(n_q, bits)], ks[..., :n_q // group], kz[..., :n_q // group],
                                  bits, group, n_q),
                       GroupQuant(vc[:, :, :n_q], vs[:, :, :n_q], vz[:, :, :n_q], bits, group, d),
                       store_k[:, :, n_q:n], store_v[:, :, n_q:n])


@pytest.mark.parametrize("impl", [pytest.param("triton", marks=triton_cpu), "torch"])
@pytest.mark.parametrize("bits,seq_len", [(4, 200), (8, 97), (2, 160)])
def test_a_cache_grown_in_place_equals_one_quantised_at_once(impl, bits, seq_len):
    q, k, v = make(2, 8, 2, seq_len, 64, torch.float16)
    grown = grow_cache(k, v, bits, 32, 32, capacity=256)
    at_once = quantize_kv(k, v, bits=bits, group_size=32, residual=32)
    assert grown.quantized_len == at_once.quantized_len and grown.seq_len == at_once.seq_len
    for a, b in zip(dequantize_kv(grown), dequantize_kv(at_once)):
        assert torch.equal(a, b)  # groups are quantised independently: the same codes wherever they are stored
    out = quant_decode_attention(q, grown, num_splits=3, impl=impl)
    assert_close_to_reference(out, quant_decode_attention_reference(q.double(), at_once),
                              quant_decode_attention_reference(q, at_once, compute_dtype=torch.float16))
    op = quantized_attention_op(batch=2, quantized=grown.quantized_len, recent=seq_len - grown.quantized_len,
                                heads=8, kv_heads=2, head_dim=64, bits=bits, group_size=32)
    assert op.read_bytes == tensor_bytes(q, *grown.tensors())


def test_quantize_into_rejects_a_partial_group():
    _, k, v = make(1, 4, 2, 40, 64, torch.float16)
    cache = quantize_kv(k, v, bits=4, group_size=32, residual=0)
    with pytest.raises(ValueError, match="whole number of 32-token groups"):
        quantize_kv_into(k[:, :, :40], v[:, :, :40], cache.keys, cache.values)
