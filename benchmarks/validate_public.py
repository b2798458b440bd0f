"""Regenerate the README's validation table: import the public aiconfigurator data (and vidur's per-operator
profiles where present), fit each GPU's efficiency block on the named calibration subsets (validation/fit.py; the
row kernels' pass time and full-load bandwidth on vidur's one-wave and full-load rows; the fp8 GEMMs' own fraction
of the fp8 peak and energy per FLOP on their large and square rows), and print the held-out error of both engines
by GPU, dataset and op kind, fp8 GEMMs (vLLM's per-tensor fp8 linear) included.

    python benchmarks/validate_public.py [--engines analytic event] [--write-catalog]

``--write-catalog`` writes the fitted efficiency blocks into hardware/<gpu>.yaml.
"""
from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MEASURED = REPO.parent / "shared" / "data" / "measured"
#: vLLM's fp8 linear with per-tensor scales (CUTLASS scaled_mm), the fp8 GEMMs validated beside the bf16 ones
FP8_KERNEL = "CutlassFP8ScaledMMLinearKernel"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(MEASURED / "aiconfigurator"), help="aiconfigurator folder")
    ap.add_argument("--engines", nargs="+", default=["analytic", "event"], choices=["analytic", "event"])
    ap.add_argument("--event-sample", type=int, default=0,
                    help="held-out rows per GPU (seeded random sample) for the event engine, the slower "
                         "one (default 0: all rows)")
    ap.add_argument("--write-catalog", action="store_true", help="write fitted efficiency blocks into hardware/*.yaml")
    args = ap.parse_args()

    from perfmodel.validation.compare import predict_table, summarize_errors
    from perfmodel.validation.fit import (DTYPE_GEMM_SUBSETS, ROW_SUBSETS, SUBSETS, calibration_mask,
                                          fit_dtype_gemms, fit_efficiency, fit_row_kernels, subsets_for)
    from perfmodel.validation.importers import import_source

    table = import_source("aiconfigurator", args.data)
    with warnings.catch_warnings():  # A100 has no fp8 GEMM tables: skipped
        warnings.simplefilter("ignore")
        fp8 = import_source("aiconfigurator", args.data, gemm_dtype="fp8", gemm_kernel=FP8_KERNEL)
    fp8 = fp8[fp8.op == "gemm"]
    vidur_dir = Path(args.data).parent / "vidur"
    vidur = import_source("vidur", vidur_dir) if vidur_dir.is_dir() else None
    print("| GPU | data | engine | op | rows | median APE | p90 APE | Spearman |")
    print("|---|---|---|---|---|---|---|---|")
    for hw_name, rows in table.groupby("hardware", sort=True):
        hw, report = fit_efficiency(rows, hw_name)
        profiled = vidur[vidur.hardware == hw_name] if vidur is not None else None
        if profiled is not None and not profiled.empty:
            hw, _ = fit_row_kernels(profiled, hw)
            report["row_kernels"] = True
        mine_fp8 = fp8[fp8.hardware == hw_name]
        if not mine_fp8.empty:  # fp8 scaled_mm: its own fraction of the fp8 peak and energy per FLOP
            hw, _ = fit_dtype_gemms(mine_fp8, hw, "fp8")
            report["dtype_gemms"] = True
        if args.write_catalog:
            _write_efficiency(hw, report)
        held_out = rows[~calibration_mask(rows, subsets_for(hw))]
        sets = [("aiconfigurator", held_out)]
        if not mine_fp8.empty:  # fp8 GEMMs outside the subsets they were fit on
            fp8_subsets = {k: SUBSETS[k] for k in DTYPE_GEMM_SUBSETS}
            sets.append(("aiconfigurator fp8", mine_fp8[~calibration_mask(mine_fp8, fp8_subsets)]))
        if profiled is not None and not profiled.empty:
            sets.append(("vidur", profiled[~calibration_mask(profiled, ROW_SUBSETS)]))
        for data, held in sets:
            for engine in args.engines:
                rows_e = held
                if engine == "event" and 0 < args.event_sample < len(held):
                    rows_e = held.sample(n=args.event_sample, random_state=0)
                errors = summarize_errors(predict_table(rows_e, hw, engine))
                for op, st in errors["by_op"].items():
                    print(f"| {hw_name} | {data} | {engine} | {op} | {st['rows']:,} | {st['median_ape_pct']:.1f}% | "
                          f"{st['p90_ape_pct']:.1f}% | {st['spearman']:.3f} |")
    return 0


def _write_efficiency(hw, report) -> None:
    from perfmodel.validation.fit import write_efficiency

    write_efficiency(REPO / "hardware" / f"{hw.name}.yaml", hw, report)


if __name__ == "__main__":
    sys.exit(main())
