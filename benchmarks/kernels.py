"""Time every kernel of perfmodel.kernels on a CUDA GPU and report it in the model's units.

    python benchmarks/kernels.py                       # all kernels
    python benchmarks/kernels.py decode_attention linear  # kernels whose names contain any of these words

For each kernel (the registry ``perfmodel.kernels.KERNELS``) at shapes of an 8B-class model (hidden 4096,
32 query heads, 8 KV heads of 128, a 4096-token context), ``triton.testing.do_bench`` gives the median time
(and the 20th/80th percentiles); achieved bandwidth is the Op's minimal bytes (``op.read_bytes +
op.write_bytes`` from the kernel's ``*_op`` formula, the same one the prediction uses) over that time, and
achieved TFLOP/s its FLOPs over that time. A roofline check: a memory-bound kernel should approach the HBM
bandwidth, a compute-bound one the tensor-core peak.

Without a CUDA device (or without triton) it prints one skip line per kernel saying why and exits 0.
"""
from __future__ import annotations

import sys
from typing import Callable


def cases(torch) -> list[tuple[str, str, Callable[[], tuple[Callable[[], object], object]]]]:
    """(kernel, shape label, make) where make() allocates inputs and returns (call, op)."""
    from perfmodel.kernels import elementwise as ew
    from perfmodel.kernels import gather, gemm, quant_attention as qa, sparse_attention as sa, xquant as xq
    from perfmodel.kernels.decode_attention import decode_attention, decode_attention_op
    from perfmodel.kernels.prefill_attention import prefill_attention, prefill_attention_op

    dev, dt, name = "cuda", torch.float16, "fp16"
    B, H, KVH, D, L, HID, INTER = 32, 32, 8, 128, 4096, 4096, 14336

    def rand(*shape, dtype=dt):
        return torch.randn(*shape, device=dev, dtype=dtype)

    def linear(m):
        def make():
            x, w = rand(m, HID), rand(HID, HID) / 64
            return (lambda: gemm.linear(x, w)), gemm.linear_op(m=m, n=HID, k=HID, dtype=name)
        return make

    def rmsnorm():
        x, w = rand(4096, HID), rand(HID)
        return (lambda: ew.rmsnorm(x, w)), ew.rmsnorm_op(tokens=4096, width=HID, dtype=name)

    def silu_mul():
        g, u = rand(4096, INTER), rand(4096, INTER)
        return (lambda: ew.silu_mul(g, u)), ew.silu_mul_op(tokens=4096, width=INTER, dtype=name)

    def rope():
        x, c, s = rand(4096, H + KVH, D), rand(4096, D // 2), rand(4096, D // 2)
        return (lambda: ew.rope(x, c, s)), ew.rope_op(tokens=4096, heads=H + KVH, head_dim=D, dtype=name)

    def residual_add():
        a, b = rand(4096, HID), rand(4096, HID)
        return (lambda: ew.residual_add(a, b)), ew.residual_add_op(tokens=4096, width=HID, dtype=name)

    def decode():
        q, k, v = rand(B, H, D), rand(B, KVH, L, D), rand(B, KVH, L, D)
        op = decode_attention_op(batch=B, kv_len=L, heads=H, kv_heads=KVH, head_dim=D, dtype=name)
        return (lambda: decode_attention(q, k, v)), op

    def prefill(q_len, mask, block_size):
        def make():
            q, k, v = rand(1, H, q_len, D), rand(1, KVH, L, D), rand(1, KVH, L, D)
            op = prefill_attention_op(batch=1, q_len=q_len, kv_len=L, heads=H, kv_heads=KVH, head_dim=D, mask=mask,
                                      block_size=block_size or 1, dtype=name)
            return (lambda: prefill_attention(q, k, v, mask=mask, block_size=block_size)), op
        return make

    kv_shape = dict(batch=B, kv_heads=KVH, head_dim=D, bits=4, group_size=32, dtype=name)

    def quantize_kv():
        k, v = rand(B, KVH, L, D), rand(B, KVH, L, D)
        return (lambda: qa.quantize_kv(k, v, bits=4, group_size=32, residual=0)), qa.quantize_kv_op(tokens=L,
                                                                                                    **kv_shape)

    def dequantize_kv():
        cache = qa.quantize_kv(rand(B, KVH, L, D), rand(B, KVH, L, D), bits=4, group_size=32, residual=0)
        return (lambda: qa.dequantize_kv(cache)), qa.dequantize_kv_op(tokens=L, **kv_shape)

    def quant_decode():
        cache = qa.quantize_kv(rand(B, KVH, L, D), rand(B, KVH, L, D), bits=4, group_size=32, residual=128)
        q = rand(B, H, D)
        op = qa.quant_decode_attention_op(batch=B, kv_len=L, heads=H, kv_heads=KVH, head_dim=D, bits=4,
                                          group_size=32, residual=128, dtype=name)
        return (lambda: qa.quant_decode_attention(q, cache)), op

    tokens = 8 * L  # an X cache of 8 sequences of 4096 tokens
    x_shape = dict(tokens=tokens, bits=4, group_size=128, dtype=name)

    def quantize_x():
        x = rand(tokens, HID)
        return (lambda: xq.quantize_x(x, 4, 128)), xq.quantize_x_op(hidden=HID, **x_shape)

    def dequantize_x():
        qx = xq.quantize_x(rand(tokens, HID), 4, 128)
        return (lambda: xq.dequantize_x(qx, dt)), xq.dequantize_x_op(hidden=HID, **x_shape)

    def remat():
        qx, w = xq.quantize_x(rand(tokens, HID), 4, 128), rand(2 * KVH * D, HID) / 64
        op = xq.dequant_matmul_op(out_features=2 * KVH * D, in_features=HID, **x_shape)
        return (lambda: xq.dequant_matmul(qx, w)), op

    def accumulate():
        acc, qd = rand(tokens, HID), xq.quantize_x(rand(tokens, HID) / 10, 4, 128)
        return (lambda: xq.accumulate_delta(acc, qd)), xq.accumulate_delta_op(hidden=HID, **x_shape)

    C = L // 10  # centroids: 10% of the context

    def lookup():
        q, cent = rand(B, H, D), rand(KVH, C, D)
        op = sa.centroid_lookup_op(batch=B, heads=H, kv_heads=KVH, centroids=C, head_dim=D, dtype=name)
        return (lambda: sa.centroid_lookup(q, cent)), op

    def topk():
        scores = rand(B * KVH, C, dtype=torch.float32)
        return (lambda: sa.topk_clusters(scores, C // 10)), sa.topk_clusters_op(rows=B * KVH, n=C, k=C // 10)

    def gather_rows():
        src, idx = rand(B * KVH * L, D), torch.randint(0, B * KVH * L, (B * KVH * L // 10,), device=dev,
                                                       dtype=torch.int32)
        return (lambda: gather.gather_rows(src, idx)), gather.gather_rows_op(rows=idx.numel(), width=D, dtype=name)

    def sparse():
        q, k, v = rand(B, H, D), rand(B, KVH, L, D), rand(B, KVH, L, D)
        sel = L // 10
        idx = torch.rand(B, KVH, L, device=dev).argsort(-1)[..., :sel].sort(-1).values.to(torch.int32).contiguous()
        op = sa.sparse_decode_attention_op(batch=B, selected=sel, heads=H, kv_heads=KVH, head_dim=D, dtype=name)
        return (lambda: sa.sparse_decode_attention(q, k, v, idx)), op

    return [
        ("linear", "GEMV m=1 4096x4096", linear(1)), ("linear", "GEMM m=4096 4096x4096", linear(4096)),
        ("rmsnorm", "4096x4096", rmsnorm), ("silu_mul", "4096x14336", silu_mul),
        ("rope", "4096 tok x 40 heads x 128", rope), ("residual_add", "4096x4096", residual_add),
        ("decode_attention", f"b={B} L={L} GQA 32/8", decode),
        ("prefill_attention", f"causal L={L}", prefill(L, "causal", None)),
        ("prefill_attention", f"block step q=32 L={L}", prefill(32, "block_causal", 32)),
        ("quantize_kv", f"b={B} L={L} int4 g32", quantize_kv), ("dequantize_kv", f"b={B} L={L} int4", dequantize_kv),
        ("quant_decode_attention", f"b={B} L={L} int4 r=128", quant_decode),
        ("quantize_x", f"{tokens}x{HID} 4b g128", quantize_x), ("dequantize_x", f"{tokens}x{HID} 4b", dequantize_x),
        ("dequant_matmul", f"XQuant remat {tokens}x{HID}->2048", remat),
        ("accumulate_delta", f"XQuant-CL {tokens}x{HID}", accumulate),
        ("centroid_lookup", f"b={B} C={C}", lookup), ("topk_clusters", f"{B * KVH} rows C={C} k={C // 10}", topk),
        ("gather_rows", f"{B * KVH * L // 10} rows x {D}", gather_rows),
        ("sparse_decode_attention", f"b={B} 10% of L={L}", sparse),
    ]


def main(argv: list[str]) -> int:
    from perfmodel.kernels import KERNELS

    words = argv[1:]
    wanted = [n for n in KERNELS if not words or any(w in n for w in words)]
    try:
        import torch
    except ImportError:
        for n in wanted:
            print(f"skip {n}: torch is not installed")
        return 0
    if not torch.cuda.is_available():
        for n in wanted:
            print(f"skip {n}: no CUDA device (torch.cuda.is_available() is False)")
        return 0
    try:
        import triton
        import triton.testing
    except ImportError:
        for n in wanted:
            print(f"skip {n}: triton is not installed (needed for triton.testing.do_bench)")
        return 0

    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}, triton {triton.__version__}")
    print(f"{'kernel':<24} {'shape':<32} {'median us':>10} {'p20-p80 us':>16} {'GB/s':>8} {'TFLOP/s':>8}")
    for kernel, label, make in cases(torch):
        if kernel not in wanted:
            continue
        call, op = make()
        med, lo, hi = triton.testing.do_bench(call, warmup=25, rep=100, quantiles=[0.5, 0.2, 0.8])
        seconds = med * 1e-3
        print(f"{kernel:<24} {label:<32} {med * 1e3:>10.1f} {f'{lo * 1e3:.1f}-{hi * 1e3:.1f}':>16} "
              f"{float(op.bytes) / seconds / 1e9:>8.0f} {float(op.flops) / seconds / 1e12:>8.2f}")
        del call
        torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
