"""Event-engine validation speed: the wall time of ``perfmodel validate TABLE --engine event --sample N`` and the
figures it gives (median and p90 APE per GPU and op), optionally beside those of an earlier run.

    perfmodel import aiconfigurator ../shared/data/measured/aiconfigurator -o out/aic.parquet
    python benchmarks/event_validation.py [out/aic.parquet] [--sample 20000] [--compare OLD/errors.json] [--time-only]

The command runs in a fresh interpreter (with ``--json``, its figures read from what it prints), so the time
includes starting it, reading the table and the error statistics. ``--compare`` takes the ``errors.json`` that ``perfmodel validate ... --out DIR`` wrote and prints
each figure's change in percentage points.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("table", nargs="?", default="out/aic.parquet", help="measurement table (default %(default)s)")
    parser.add_argument("--sample", type=int, default=20_000, help="seeded sample of rows (default %(default)s)")
    parser.add_argument("--compare", metavar="ERRORS_JSON", help="errors.json of an earlier run to compare with")
    parser.add_argument("--time-only", action="store_true", help="print the time only (the README's line)")
    args = parser.parse_args()
    if not Path(args.table).is_file():
        print(f"{args.table}: not found (make it with `perfmodel import aiconfigurator ... -o {args.table}`)",
              file=sys.stderr)
        return 2
    command = [sys.executable, "-m", "perfmodel.cli.main", "validate", args.table, "--engine", "event",
               "--sample", str(args.sample), "--json"]
    start = time.perf_counter()
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    errors = json.loads(done.stdout)
    old = json.loads(Path(args.compare).read_text()) if args.compare else None
    n = errors["overall"]["rows"]
    print(f"`perfmodel validate {args.table} --engine event --sample {args.sample}` on {os.cpu_count()} CPUs: "
          f"{seconds:.1f} s, {n / seconds:,.0f} rows/s")
    if args.time_only:
        return 0
    print()
    head = "| GPU | op | rows | median APE | p90 APE |"
    print(head + (" Δ median | Δ p90 |" if old else "") + "\n" + "|---" * (5 + 2 * bool(old)) + "|")
    worst = 0.0
    for hw, by_op in errors["by_hardware"].items():
        for op, s in by_op.items():
            line = f"| {hw} | {op} | {s['rows']:,} | {s['median_ape_pct']:.2f}% | {s['p90_ape_pct']:.2f}% |"
            if old:
                o = old["by_hardware"][hw][op]
                d_med, d_p90 = s["median_ape_pct"] - o["median_ape_pct"], s["p90_ape_pct"] - o["p90_ape_pct"]
                worst = max(worst, abs(d_med), abs(d_p90))
                line += f" {d_med:+.3f} | {d_p90:+.3f} |"
            print(line)
    if old:
        print(f"\nlargest change against {args.compare}: {worst:.3f} percentage points")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
