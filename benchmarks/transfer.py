"""Leave-one-GPU-out: how far to trust a prediction for a GPU nobody here has measured.

For each GPU of the public aiconfigurator tables (A100, H100, L40S, GB200): fit the efficiency block of each of
the other three on their own calibration subsets only (validation/fit.py), build the left-out GPU's block from
its datasheet spec and those three by the transfer rule alone (perfmodel/transfer.py), and predict every one of
its bf16 GEMM and attention rows. Beside it: a three-parameter roofline on the same rows (0.8 x the bf16 tensor
peak, 0.8 x the main-memory bandwidth, + 3 us), and each GPU with its own fit (held-out rows only).

    python benchmarks/transfer.py [--data DIR] [--json] [--markdown] [--engine analytic|event]

``--json`` prints {gpu: {"gemm": {"n", "median_ape_pct", "p90_ape_pct", "spearman"}, "attention": {...},
"roofline": {"gemm": {...}, "attention": {...}}, "own_fit": {"gemm": {...}, "attention": {...}}}};
``--markdown`` prints the README's table.
"""
from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MEASURED = REPO.parent / "shared" / "data" / "measured"
OPS = ("gemm", "attention")
ROOFLINE = {"peak_fraction": 0.8, "bandwidth_fraction": 0.8, "fixed_s": 3e-6}


def _stats(measured, predicted) -> dict:
    import numpy as np
    from scipy.stats import spearmanr

    m = np.asarray(measured, dtype=float)
    p = np.asarray(predicted, dtype=float)
    ape = np.abs(p / m - 1.0) * 100.0
    return {"n": int(len(m)), "median_ape_pct": float(np.median(ape)), "p90_ape_pct": float(np.percentile(ape, 90)),
            "spearman": float(spearmanr(m, p).statistic) if len(m) > 2 else float("nan")}


def roofline(rows, hw) -> "np.ndarray":
    """The three-parameter roofline: max(FLOPs / (0.8·peak), bytes / (0.8·bandwidth)) + 3 µs, with the op's
    minimal FLOPs and bytes."""
    import numpy as np

    from perfmodel.validation.compare import row_ops

    out = np.empty(len(rows))
    for _, idx in rows.groupby(["op", "dtype"]).indices.items():
        group = rows.iloc[idx]
        op = row_ops(group)[0]
        peak = hw.compute.peak_flops(group["dtype"].iloc[0], "tensor") * ROOFLINE["peak_fraction"]
        bw = hw.main_bandwidth_bytes_per_s * ROOFLINE["bandwidth_fraction"]
        flops = np.broadcast_to(np.asarray(op.flops, dtype=float), (len(group),))
        nbytes = np.broadcast_to(np.asarray(op.bytes, dtype=float), (len(group),))
        out[idx] = np.maximum(flops / peak, nbytes / bw) + ROOFLINE["fixed_s"]
    return out


def evaluate(table, engine: str = "analytic") -> dict:
    """The figures of the module docstring, for every GPU of ``table`` (a normalized measurement table)."""
    from perfmodel.specs.hardware import Efficiency, load_hardware
    from perfmodel.transfer import transfer
    from perfmodel.validation.compare import predict_table
    from perfmodel.validation.fit import calibration_mask, fit_efficiency, subsets_for

    table = table[table.dtype == "bf16"]
    gpus = sorted(table.hardware.unique())
    own = {}
    for gpu in gpus:
        rows = table[table.hardware == gpu]
        datasheet = load_hardware(gpu, resolve_efficiency=False)
        datasheet = datasheet.model_copy(update={"efficiency": Efficiency()})
        own[gpu], _ = fit_efficiency(rows, transfer(datasheet, []))
    result = {}
    for gpu in gpus:
        rows = table[table.hardware == gpu]
        datasheet = load_hardware(gpu, resolve_efficiency=False)
        datasheet = datasheet.model_copy(update={"efficiency": Efficiency()})
        moved = transfer(datasheet, [own[g] for g in gpus if g != gpu])
        pred = predict_table(rows, moved, engine)
        held = ~calibration_mask(rows, subsets_for(own[gpu]))
        own_pred = predict_table(rows[held], own[gpu], engine)
        base = roofline(rows, datasheet)
        entry = {"note": moved.efficiency.note, "roofline": {}, "own_fit": {}}
        for op in OPS:
            sel = (rows.op == op).to_numpy()
            if not sel.any():
                continue
            entry[op] = _stats(pred.measured_s[sel], pred.predicted_s[sel])
            entry["roofline"][op] = _stats(rows.measured_s[sel], base[sel])
            osel = (own_pred.op == op).to_numpy()
            entry["own_fit"][op] = _stats(own_pred.measured_s[osel], own_pred.predicted_s[osel])
        result[gpu] = entry
    return result


def markdown(result: dict) -> str:
    lines = ["| left-out GPU | op | rows | median APE | p90 APE | Spearman | roofline median / p90 | own fit median / p90 |",
             "|---|---|---|---|---|---|---|---|"]
    for gpu, entry in result.items():
        for op in OPS:
            if op not in entry:
                continue
            s, r, o = entry[op], entry["roofline"][op], entry["own_fit"][op]
            lines.append(f"| {gpu} | {op} | {s['n']:,} | {s['median_ape_pct']:.1f}% | {s['p90_ape_pct']:.1f}% | "
                         f"{s['spearman']:.3f} | {r['median_ape_pct']:.1f}% / {r['p90_ape_pct']:.1f}% | "
                         f"{o['median_ape_pct']:.1f}% / {o['p90_ape_pct']:.1f}% |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(MEASURED / "aiconfigurator"), help="aiconfigurator folder")
    ap.add_argument("--engine", choices=["analytic", "event"], default="analytic")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    ap.add_argument("--markdown", action="store_true", help="print the README's Markdown table")
    args = ap.parse_args()

    from perfmodel.validation.importers import SkippedInput, import_source

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SkippedInput)
        table = import_source("aiconfigurator", args.data)
    result = evaluate(table, args.engine)
    if args.json:
        print(json.dumps({g: {k: v for k, v in e.items() if k != "note"} for g, e in result.items()}, indent=1))
    elif args.markdown:
        print(markdown(result))
    else:
        print(markdown(result))
        print()
        for gpu, entry in result.items():
            print(f"{gpu}: {entry['note']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
