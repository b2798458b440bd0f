"""Sweep throughput: grid points per second, analytic engine on 100,000 points and event engine on 100 points,
each in one process and through a local Dask cluster.

    python benchmarks/sweep_throughput.py [--workers 2] [--repeat 3] [--markdown]

Points/s = points / wall-clock seconds of the whole sweep: grid validation, chunking, evaluation, and (for the
"to Parquet" lines) writing part files and the combined table. The in-process figure is the best of --repeat runs
after one warm-up (imports, spec loading); Dask figures include starting the local cluster. ``--markdown`` prints
the same lines as the Markdown table of the README's "Speed" section.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import tempfile
import time
from pathlib import Path

from guard import best_time  # benchmarks/guard.py, beside this script

ROOT = Path(__file__).resolve().parents[1]
ANALYTIC_GRID = ROOT / "workloads" / "grids" / "throughput-100k.yaml"
EVENT_GRID = {
    "hardware": ["h100-sxm"], "models": ["llama-3.1-8b"], "scenarios": ["arm", "kv-int4"],
    "parameters": {"batch": [1, 2, 4, 8, 16, 32, 64, 128, 192, 256], "prompt_len": [256, 512, 1024, 2048, 4096]},
}


def _line(label: str, points: int, seconds: float, markdown: bool = False) -> None:
    if markdown:
        print(f"| {label} | {points:,d} | {seconds:.2f} | {points / seconds:,.0f} |")
    else:
        print(f"{label:58s} {points:>8,d} points {seconds:8.2f} s {points / seconds:>12,.0f} points/s")


def main() -> int:
    """Run the four measurements and print one line each."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="local Dask cluster processes")
    parser.add_argument("--repeat", type=int, default=3, help="timed repetitions of in-process runs (best kept)")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table (the README's)")
    args = parser.parse_args()
    md = args.markdown

    from perfmodel.sweep import evaluate, grid_from_dict, load_grid, run_sweep

    machine = f"{os.cpu_count()} CPUs; Dask local cluster: {args.workers} worker processes"
    if md:
        print(f"`python benchmarks/sweep_throughput.py --markdown` on {machine}:\n")
        print("| sweep | points | seconds | points/s |\n|---|---|---|---|")
    else:
        print(f"machine: {machine}\n")
    grid = load_grid(ANALYTIC_GRID)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "analytic.parquet"
        _line("analytic, one process, in memory", grid.size, best_time(lambda: evaluate(grid), args.repeat), md)
        _line("analytic, one process, to Parquet (parts + combine)", grid.size,
              best_time(lambda: run_sweep(grid, out, use_dask=False), args.repeat), md)
        start = time.perf_counter()
        run_sweep(grid, Path(tmp) / "analytic-dask.parquet", use_dask=True, workers=args.workers)
        _line("analytic, local Dask cluster, to Parquet", grid.size, time.perf_counter() - start, md)

        if importlib.util.find_spec("perfmodel.engines.event") is None:
            print("\nevent engine: skipped (perfmodel.engines.event is not there yet)")
            return 0
        event = grid_from_dict(EVENT_GRID, "event-100")
        start = time.perf_counter()
        evaluate(event, engine="event")
        _line("event, one process, in memory", event.size, time.perf_counter() - start, md)
        start = time.perf_counter()
        run_sweep(event, Path(tmp) / "event.parquet", engine="event", use_dask=True, workers=args.workers)
        _line("event, local Dask cluster, to Parquet", event.size, time.perf_counter() - start, md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
