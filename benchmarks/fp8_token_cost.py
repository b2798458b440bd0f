"""What vLLM's fp8 linear costs beyond the bf16 GEMM of the same shape, per token, measured and predicted.

For every GPU with both bf16 (`F.linear`) and fp8 (CUTLASS scaled_mm with its input quantisation) rows in the
aiconfigurator tables, take the shapes with many tokens and a small weight (m >= 4096, n·k <= 2^20), where the GEMM
itself is nearly free in either dtype, and print the median of (fp8 time - bf16 time) / m: measured, and as the
catalog's calibrated spec predicts it (analytic engine). A gap between the two is a per-token cost the model does not
have.

    python benchmarks/fp8_token_cost.py [--data DIR]

prints a Markdown table (the README's).
"""
from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
MEASURED = REPO.parent / "shared" / "data" / "measured"


def token_costs(data: str) -> list[dict]:
    """One entry per GPU: rows, measured and predicted median extra seconds per token."""
    import numpy as np

    from perfmodel.specs.hardware import load_hardware
    from perfmodel.validation.compare import predict_table
    from perfmodel.validation.importers import SkippedInput, import_source
    from validate_public import FP8_KERNEL

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SkippedInput)
        warnings.simplefilter("ignore", UserWarning)
        bf16 = import_source("aiconfigurator", data)
        fp8 = import_source("aiconfigurator", data, gemm_dtype="fp8", gemm_kernel=FP8_KERNEL)
    key = ["hardware", "m", "n", "k"]
    out = []
    for gpu in sorted(set(fp8.hardware) & set(bf16.hardware)):
        a = bf16[(bf16.op == "gemm") & (bf16.hardware == gpu)]
        b = fp8[(fp8.op == "gemm") & (fp8.hardware == gpu)]
        sel = lambda t: t[(t.m >= 4096) & (t.n.astype(float) * t.k <= 2**20)]  # noqa: E731
        a, b = sel(a), sel(b)
        hw = load_hardware(gpu)
        pa, pb = predict_table(a, hw, "analytic"), predict_table(b, hw, "analytic")
        both = pa.merge(pb, on=key, suffixes=("_bf16", "_fp8"))
        if both.empty:
            continue
        m = both.m.to_numpy(dtype=float)
        measured = (both.measured_s_fp8 - both.measured_s_bf16).to_numpy() / m
        predicted = (both.predicted_s_fp8 - both.predicted_s_bf16).to_numpy() / m
        out.append({"gpu": gpu, "rows": len(both), "measured_ns_per_token": float(np.median(measured) * 1e9),
                    "predicted_ns_per_token": float(np.median(predicted) * 1e9)})
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(MEASURED / "aiconfigurator"), help="aiconfigurator folder")
    args = ap.parse_args()
    rows = token_costs(args.data)
    print("| GPU | shapes | measured fp8 - bf16 per token | predicted |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['gpu']} | {r['rows']:,} | {r['measured_ns_per_token']:.1f} ns | "
              f"{r['predicted_ns_per_token']:.1f} ns |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
