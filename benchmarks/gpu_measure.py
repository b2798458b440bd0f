"""Measure torch GEMMs and SDPA attention on a CUDA GPU into a measurement table (CSV), needing only torch.

    python benchmarks/gpu_measure.py --hardware h100-sxm -o h100_measured.csv

Method: the calls are captured in a CUDA graph (12 calls per graph, so host dispatch is not timed, as in
aiconfigurator's collector), 3 warm-up replays, then CUDA events around each replay, median of 15 replays divided
by the calls per graph; inputs random (never zeros); GEMM weights rotate among 6 copies inside the graph (source
carries ``rot=6``) so that repeated calls do not hit L2 unless 6 copies fit there, which the model then knows;
attention reuses its buffers (``rot=1``).
The columns are perfmodel's measurement table. Without CUDA it says so and exits 0.
"""
from __future__ import annotations

import argparse
import csv
import itertools
import sys


def _time(fns, samples: int = 15, calls: int = 12) -> float:
    """Median seconds per call of ``fns`` (cycled) replayed from a CUDA graph."""
    import torch

    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for i in range(3):
            fns[i % len(fns)]()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for i in range(calls):
            fns[i % len(fns)]()
    for _ in range(3):
        graph.replay()
    torch.cuda.synchronize()
    times = []
    for _ in range(samples):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1e3 / calls)
    times.sort()
    return times[len(times) // 2]


def gemm_rows(hardware: str, src: str):
    import torch
    import torch.nn.functional as F

    ms = [1, 8, 32, 128, 512, 2048, 8192]
    nks = [(1024, 1024), (4096, 4096), (6144, 4096), (4096, 14336), (28672, 4096), (128256, 4096), (3000, 5000),
           (1536, 1536), (8192, 8192)]
    for m, (n, k) in itertools.product(ms, nks):
        x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
        ws = [torch.randn(n, k, device="cuda", dtype=torch.bfloat16) for _ in range(6)]
        t = _time([lambda w=w: F.linear(x, w) for w in ws])
        yield dict(hardware=hardware, op="gemm", dtype="bf16", m=m, n=n, k=k, measured_s=t, source=f"{src}:linear:rot=6")
        del ws


def attention_rows(hardware: str, src: str):
    import torch
    import torch.nn.functional as F

    for (b, L), (h, kvh), d in itertools.product([(1, 1024), (1, 8192), (8, 4096), (32, 2048), (64, 8192), (16, 32768)],
                                                 [(32, 8), (32, 32)], [128]):
        q = torch.randn(b, h, 1, d, device="cuda", dtype=torch.bfloat16)
        k = torch.randn(b, kvh, L, d, device="cuda", dtype=torch.bfloat16)
        v = torch.randn_like(k)
        t = _time([lambda: F.scaled_dot_product_attention(q, k, v, enable_gqa=(h != kvh))])
        yield dict(hardware=hardware, op="attention", dtype="bf16", batch=b, q_len=1, kv_len=L, heads=h, kv_heads=kvh,
                   head_dim=d, causal=False, measured_s=t, source=f"{src}:sdpa-decode:rot=1")
        del k, v
    for (b, L), (h, kvh), d in itertools.product([(1, 512), (1, 2048), (4, 1024), (1, 8192), (2, 4096)],
                                                 [(32, 8), (32, 32)], [128]):
        q = torch.randn(b, h, L, d, device="cuda", dtype=torch.bfloat16)
        k = torch.randn(b, kvh, L, d, device="cuda", dtype=torch.bfloat16)
        v = torch.randn_like(k)
        for causal in (True, False):
            t = _time([lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=(h != kvh))])
            yield dict(hardware=hardware, op="attention", dtype="bf16", batch=b, q_len=L, kv_len=L, heads=h,
                       kv_heads=kvh, head_dim=d, causal=causal, measured_s=t, source=f"{src}:sdpa-prefill:rot=1")


COLUMNS = ["hardware", "op", "dtype", "m", "n", "k", "batch", "q_len", "kv_len", "heads", "kv_heads", "head_dim",
           "causal", "measured_s", "source"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hardware", default="h100-sxm", help="catalog name recorded in the rows")
    ap.add_argument("-o", "--output", required=True)
    args = ap.parse_args()
    import torch

    if not torch.cuda.is_available():
        print("no CUDA device: nothing measured")
        return 0
    src = f"perfmodel-gpu-measure:{torch.cuda.get_device_name()}:torch-{torch.__version__}:cuda-graph"
    with open(args.output, "w", newline="") as fh:
        w = csv.DictWriter(fh, COLUMNS)
        w.writeheader()
        for row in itertools.chain(gemm_rows(args.hardware, src), attention_rows(args.hardware, src)):
            w.writerow(row)
            fh.flush()
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
