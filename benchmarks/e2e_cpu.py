"""The end-to-end table of the README: whole steps and runs of every method, measured against predicted.

    python benchmarks/e2e_cpu.py out/e2e.csv --calibrate --measure --hardware out/host1.yaml --threads 1 \
        --clock process                                                    # calibrate, measure, then print
    python benchmarks/e2e_cpu.py out/e2e.csv                               # print an existing table

``--calibrate`` writes the CPU spec at ``--hardware`` first (``perfmodel calibrate --device cpu``, same threads
and clock); ``--measure`` runs ``perfmodel measure --device cpu --suite e2e`` into TABLE (a few minutes on a
2-core CPU; it resumes a partial table) and notes the machine's load average before and after. The output is
Markdown: per method, the error of its step rows (median, p90) and of its run; then every row with its
measured time (median and interquartile range over the repeats), the prediction, the error and the ops that
take most of the predicted step.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _ms(x: float) -> str:
    return f"{x * 1e3:.1f}" if x >= 1e-3 else f"{x * 1e3:.3f}"


def markdown(pred, summary_only: bool = False) -> str:
    from perfmodel.validation.compare import summarize_errors

    errors = summarize_errors(pred)
    steps = errors.get("by_method", {})
    runs = errors.get("by_method_run", {})
    lines = ["| method | step rows | step median APE | step p90 APE | run APE |", "|---|---|---|---|---|"]
    for sc in sorted(set(steps) | set(runs)):
        s, r = steps.get(sc), runs.get(sc)
        run_txt = "" if r is None else (f"{r['median_ape_pct']:.1f}%" if r["rows"] == 1
                                         else f"{r['median_ape_pct']:.1f}% (median of {r['rows']})")
        lines.append(f"| {sc} | {s['rows'] if s else 0} | {s['median_ape_pct']:.1f}% | {s['p90_ape_pct']:.1f}% | "
                     f"{run_txt} |" if s else f"| {sc} | 0 | | | {run_txt} |")
    if summary_only:
        return "\n".join(lines)
    lines += ["", "| method | model | layers | step | steps/run | measured ms (IQR) | predicted ms | APE | "
                  "largest predicted ops |", "|---|---|---|---|---|---|---|---|---|"]
    order = pred.sort_values(["scenario", "model", "op", "phase"])
    for _, r in order.iterrows():
        step = r["phase"] if r["op"] == "step" else "whole run"
        iqr = f"{_ms(float(r['q1_s']))}–{_ms(float(r['q3_s']))}"
        lines.append(f"| {r['scenario']} | {r['model']} | {int(r['layers'])} | {step} | {int(r['steps'])} | "
                     f"{_ms(r['measured_s'])} ({iqr}) | {_ms(r['predicted_s'])} | {r['ape_pct']:.1f}% | "
                     f"{r['top_ops'] if r['op'] == 'step' else ''} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("table", help="e2e measurement table (.csv or .parquet)")
    ap.add_argument("--hardware", help="spec to predict with (default: each row's own; for --measure the spec "
                                       "the rows belong to, e.g. out/host.yaml from perfmodel calibrate)")
    ap.add_argument("--calibrate", action="store_true", help="calibrate the CPU into --hardware (a YAML path) first")
    ap.add_argument("--measure", action="store_true", help="run the CPU e2e suite into TABLE first")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per case with --measure (default 3)")
    ap.add_argument("--threads", type=int, help="torch threads with --measure (default: torch's own choice)")
    ap.add_argument("--clock", choices=["wall", "process"], default="wall",
                    help="with --measure: wall clock, or process CPU time (needs --threads 1)")
    ap.add_argument("--engine", choices=["analytic", "event"], default="analytic")
    ap.add_argument("--summary", action="store_true", help="print the per-method table only")
    args = ap.parse_args(argv)

    from perfmodel.validation import compare
    from perfmodel.validation.table import read_table

    if args.calibrate or args.measure:
        import torch

        from perfmodel.validation import microbench as mb

        if args.threads:
            torch.set_num_threads(args.threads)
        mb.set_cpu_clock(args.clock)
    if args.calibrate:
        from perfmodel.validation import calibrate as cal

        if not args.hardware or not args.hardware.endswith((".yaml", ".yml")):
            ap.error("--calibrate needs --hardware naming the YAML file to write")
        load = os.getloadavg()[0]
        cal.write_calibration(cal.calibrate("cpu", output=args.hardware), args.hardware)
        print(f"Calibrated {args.hardware} (load average {load:.2f}).")
    if args.measure:
        from perfmodel.validation import e2e

        before = os.getloadavg()
        e2e.measure_e2e(e2e.suite_cases("cpu"), args.table, device="cpu", hardware=args.hardware,
                        repeats=args.repeats, clock=args.clock)
        after = os.getloadavg()
        print(f"Measured with torch {torch.__version__}, {torch.get_num_threads()} threads, {args.clock} clock; "
              "load average "
              f"(1/5/15 min) {before[0]:.2f}/{before[1]:.2f}/{before[2]:.2f} before, "
              f"{after[0]:.2f}/{after[1]:.2f}/{after[2]:.2f} after.\n")
    table = read_table(args.table)
    table = table[table.op.isin(["step", "run"])]
    pred = compare.predict_table(table, None if args.measure else args.hardware, args.engine)
    print(markdown(pred, args.summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
