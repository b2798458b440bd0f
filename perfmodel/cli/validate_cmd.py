"""`perfmodel validate` (model against a measurement table) and `perfmodel fit` (efficiency block from it)."""
from __future__ import annotations

import argparse
import sys

from perfmodel.cli.options import add_engine, add_hardware, add_json


def register(sub: argparse._SubParsersAction) -> None:
    v = sub.add_parser("validate", help="predict every row of a measurement table and report the error",
                       description="Predict each measured row from its hardware spec and report median / p90 "
                                   "absolute percentage error and Spearman rank correlation, by op kind.")
    v.add_argument("table", metavar="TABLE", nargs="+", help="measurement table(s): .parquet or .csv")
    add_hardware(v, default=None, helptext="catalog name or hardware YAML path used for every row instead of the "
                                           "row's own")
    add_engine(v)
    v.add_argument("--exclude-calibration", action="store_true",
                   help="leave out the rows of the named calibration subsets (validation/fit.py)")
    v.add_argument("--sample", type=int, metavar="N",
                   help="predict a seeded random sample of N rows (useful with the slower event engine)")
    v.add_argument("--out", metavar="DIR", help="write predictions.csv, errors.json, worst.csv and scatter.png here")
    v.add_argument("--worst", type=int, default=10, help="worst rows shown (default 10)")
    v.add_argument("--markdown", action="store_true", help="print the error table by op kind as Markdown only")
    add_json(v)
    v.set_defaults(func=run_validate)

    f = sub.add_parser("fit", help="fit a GPU's efficiency block on the calibration subsets of a table",
                       description="Fit tensor/L2/HBM efficiency, launch and attention overheads on the "
                                   "microbenchmark-like rows of a public measurement table; write a hardware YAML.")
    f.add_argument("table", metavar="TABLE", nargs="+", help="measurement table(s)")
    f.add_argument("--hardware", metavar="HARDWARE", required=True,
                   help="catalog name or hardware YAML path of the device to fit")
    f.add_argument("-o", "--output", required=True, help="hardware YAML to write")
    f.add_argument("--json", action="store_true", help="print the fit report as JSON")
    f.set_defaults(func=run_fit)


def _read(paths: list[str]):
    import pandas as pd

    from perfmodel.extras import require_parquet

    for p in paths:
        require_parquet(p, "reading a measurement table")

    from perfmodel.validation.table import read_table

    return pd.concat([read_table(p) for p in paths], ignore_index=True)


def run_validate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from perfmodel.cli.output import print_json, table
    from perfmodel.validation import compare
    from perfmodel.validation.fit import held_out_mask

    try:
        data = _read(args.table)
    except (OSError, ValueError) as exc:
        print(f"perfmodel: error: {exc}", file=sys.stderr)
        return 2
    if data.empty:
        print(f"perfmodel: error: {', '.join(args.table)}: no measured rows (a header only?), expected at least "
              "one row to predict", file=sys.stderr)
        return 2
    if args.exclude_calibration:
        data = data[held_out_mask(data)]
    if args.sample and args.sample < len(data):
        data = data.sample(n=args.sample, random_state=0)
    pred = compare.predict_table(data, args.hardware, args.engine)
    errors = compare.summarize_errors(pred)
    errors["engine"] = args.engine
    if args.out:
        import json

        from perfmodel.files import write_atomic

        out = Path(args.out)
        write_atomic(out / "predictions.csv", lambda tmp: pred.to_csv(tmp, index=False))
        write_atomic(out / "worst.csv", lambda tmp: compare.worst_rows(pred, 50).to_csv(tmp, index=False))
        write_atomic(out / "errors.json", json.dumps(errors, indent=2))
        compare.save_figure(compare.scatter_figure(pred, f"{args.engine} engine"), out / "scatter.png")
    if args.json:
        print_json(errors)
        return 0
    rows = [["overall", *errors["overall"].values()]] + [[op, *s.values()] for op, s in errors["by_op"].items()]
    if args.markdown:
        print("| op | rows | median_ape_pct | p90_ape_pct | spearman |\n|---|---|---|---|---|")
        for op, n, med, p90, rho in rows:
            print(f"| {op} | {n:,} | {med:.1f}% | {p90:.1f}% | {rho:.3f} |")
        return 0
    print(table(rows, ["op", "rows", "median_ape_pct", "p90_ape_pct", "spearman"]))
    for key, what in (("by_method", "whole steps"), ("by_method_run", "whole runs")):
        if key in errors:
            print(f"\n{what} by method:")
            print(table([[sc, *st.values()] for sc, st in errors[key].items()],
                        ["scenario", "rows", "median_ape_pct", "p90_ape_pct", "spearman"]))
    worst = compare.worst_rows(pred, args.worst)
    cols = [c for c in ("hardware", "op", "scenario", "phase", "m", "n", "k", "batch", "q_len", "kv_len", "heads",
                        "kv_heads", "head_dim", "measured_s", "predicted_s", "ape_pct", "bound") if c in worst]
    print(f"\nworst {len(worst)} rows:")
    print(table(worst[cols].itertuples(index=False), cols))
    return 0


def run_fit(args: argparse.Namespace) -> int:
    from perfmodel.extras import require

    require("scipy", "fit", "perfmodel fit")
    import yaml

    from perfmodel.cli.output import print_json, table
    from perfmodel.validation.fit import fit_efficiency

    from perfmodel.files import write_atomic

    data = _read(args.table)
    hw, report = fit_efficiency(data, args.hardware)
    write_atomic(args.output, yaml.safe_dump(hw.to_dict(), sort_keys=False))
    if args.json:
        print_json(report)
        return 0
    print(table([[k, v] for k, v in report["efficiency"].items()], ["parameter", "value"]))
    print(f"rows {report['rows']} {report['subsets']}, rms log error {report['rms_log_error']:.3f} -> {args.output}")
    return 0
