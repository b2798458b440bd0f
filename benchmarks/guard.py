"""Performance guard: each throughput of the package as a ratio to a plain NumPy workload timed in the same run,
against the ratios recorded in benchmarks/guard_reference.json; a drop by more than a factor of 3 fails.

    python benchmarks/guard.py            # measure, compare, exit 1 on a 3x drop
    python benchmarks/guard.py --record   # measure three times, write the median ratios to the reference file

A shared machine runs everything slower or faster at once; the ratio of two timings taken side by side moves far
less than either (each timing is the best of a few repetitions, the reference timed just before and after each
measure, its better run kept). Measured:

- analytic sweep: points per second of ``perfmodel.sweep.evaluate`` on a 10,000-point grid, in this process;
- event engine: rows per second of ``predict_table(..., engine="event")`` on a fixed synthetic measurement table
  (GEMMs, decode and prefill attention on two GPUs, as ``perfmodel validate --engine event`` runs them);
- ``perfmodel predict``: 1 / wall time of the command in a fresh interpreter (start, imports, prediction).

Each is divided by the reference's rate (reference runs per second) to give its ratio.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REFERENCE_FILE = Path(__file__).resolve().with_name("guard_reference.json")
ALLOWED_DROP = 3.0
REPEAT = 3
RECORD_RUNS = 3
GRID = {  # as benchmarks/sweep_throughput.py's 100,000-point grid, a tenth of it: 2 x 10 x 20 x 25 = 10,000 points
    "hardware": ["h100-sxm"], "models": ["llama-3.1-8b"], "scenarios": ["arm", "kv-int4"],
    "parameters": {"batch": [1, 2, 4, 8, 16, 32, 64, 128, 256, 512],
                   "prompt_len": [128, 256, 384, 512, 768, 1024, 1280, 1536, 2048, 2560, 3072, 3584, 4096, 5120,
                                  6144, 7168, 8192, 10240, 12288, 16384],
                   "gen_len": [16, 32, 48, 64, 96, 128, 160, 192, 256, 320, 384, 448, 512, 640, 768, 896, 1024,
                               1280, 1536, 1792, 2048, 2560, 3072, 3584, 4096]},
}
PREDICT = [sys.executable, "-m", "perfmodel.cli.main", "predict", "--hardware", "h100-sxm", "--model", "llama-3.1-8b",
           "--scenario", "arm", "--set", "batch=8", "--json"]


def reference_workload() -> None:
    """Plain NumPy, fixed work: many small-array operations (interpreter-bound, as the engines' per-op Python
    is) and a few on arrays larger than the caches (memory-bound, as a vectorised sweep is)."""
    rng = np.random.default_rng(0)
    small = rng.random(64)
    for _ in range(10_000):
        small = np.sqrt(small * small + 0.5) / 1.25
    large = rng.random(4_000_000)
    for _ in range(4):
        large = np.maximum(large * 0.999, np.ceil(large * 7.0) / 8.0)


def best_time(fn, repeat: int = REPEAT, warm_up=None) -> float:
    """Least wall time of ``fn()`` over ``repeat`` runs, after one warm-up run (of ``warm_up`` if given)."""
    (warm_up or fn)()
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def synthetic_table():
    """A fixed measurement table as the aiconfigurator importer writes it: bf16 GEMMs, decode and causal
    prefill attention on h100-sxm (FA3) and a100-sxm-80gb (FA2); the measured times are placeholders."""
    import pandas as pd

    rng = np.random.default_rng(16)
    rows = []
    for hw in ("h100-sxm", "a100-sxm-80gb"):
        for _ in range(300):
            m = int(rng.choice([1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192]))
            n, k = (int(x) for x in rng.choice([1024, 2048, 4096, 5120, 6144, 8192, 14336, 28672], size=2))
            rows.append({"hardware": hw, "op": "gemm", "m": m, "n": n, "k": k,
                         "source": "aiconfigurator:guard:gemm"})
        for i in range(450):
            decode = i < 300
            batch = int(rng.choice([1, 2, 4, 8, 16, 32, 64, 128, 256] if decode else [1, 2, 4, 8]))
            kv = int(rng.choice([128, 512, 1024, 2048, 4096, 8192, 16384] if decode else [128, 256, 512, 1024, 2048]))
            heads = int(rng.choice([8, 16, 32, 64]))
            rows.append({"hardware": hw, "op": "attention", "batch": batch, "q_len": 1 if decode else kv,
                         "kv_len": kv, "heads": heads, "kv_heads": int(rng.choice([1, 2, 4, 8])) if heads > 8 else 8,
                         "head_dim": int(rng.choice([64, 128])), "causal": True,
                         "source": "aiconfigurator:guard:attention"})
    df = pd.DataFrame(rows).assign(dtype="bf16", measured_s=1e-5, variant="")
    for col in ("m", "n", "k", "batch", "q_len", "kv_len", "heads", "kv_heads", "head_dim"):
        df[col] = df[col].astype("Int64")
    return df


def _quiet(fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` with its progress bar (on stderr) out of the guard's output."""
    with contextlib.redirect_stderr(io.StringIO()):
        return fn(*args, **kwargs)


def measure() -> dict[str, dict[str, float]]:
    """Every throughput and the reference's rate beside it: {name: {value, unit, reference_per_s, ratio}}."""
    from perfmodel.sweep import evaluate, grid_from_dict
    from perfmodel.validation.compare import predict_table

    grid = grid_from_dict(GRID, "guard")
    table = synthetic_table()
    runs = {  # name: (work done per run, unit, run, runs timed, warm-up)
        "analytic sweep": (grid.size, "points/s", lambda: evaluate(grid), REPEAT, None),
        "event engine validation": (len(table), "rows/s", lambda: _quiet(predict_table, table, engine="event"),
                                    REPEAT, lambda: predict_table(table.iloc[::100], engine="event")),
        "perfmodel predict": (1, "runs/s", lambda: subprocess.run(PREDICT, check=True, capture_output=True),
                              REPEAT, None),
    }
    out = {}
    for name, (work, unit, fn, repeat, warm_up) in runs.items():
        before = best_time(reference_workload)
        seconds = best_time(fn, repeat, warm_up)
        after = best_time(reference_workload)
        reference_per_s = 1.0 / min(before, after)
        out[name] = {"value": work / seconds, "unit": unit, "seconds": seconds, "reference_per_s": reference_per_s,
                     "ratio": work / seconds / reference_per_s}
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--record", action="store_true",
                        help=f"measure {RECORD_RUNS} times and write the median ratios to {REFERENCE_FILE.name}")
    args = parser.parse_args()
    start = time.perf_counter()
    results = measure()
    if args.record:  # the median run of each measure, so that the reference is neither a lucky nor an unlucky one
        runs = [results] + [measure() for _ in range(RECORD_RUNS - 1)]
        results = {name: sorted((run[name] for run in runs), key=lambda r: r["ratio"])[len(runs) // 2]
                   for name in results}
    recorded = json.loads(REFERENCE_FILE.read_text())["ratios"] if REFERENCE_FILE.is_file() else {}
    failed = []
    print("| measure | value | reference runs/s | ratio | recorded ratio | change |")
    print("|---|---|---|---|---|---|")
    for name, r in results.items():
        ref = recorded.get(name)
        change = r["ratio"] / ref if ref else float("nan")
        if ref and change < 1.0 / ALLOWED_DROP:
            failed.append(name)
        print(f"| {name} | {r['value']:,.1f} {r['unit']} | {r['reference_per_s']:.2f} | {r['ratio']:.4g} | "
              f"{f'{ref:.4g}' if ref else '-'} | {change:.2f}x |")
    print(f"\nguard: {time.perf_counter() - start:.1f} s on {os.cpu_count()} CPUs ({platform.python_version()})")
    if args.record:
        REFERENCE_FILE.write_text(json.dumps({
            "note": "ratios of each throughput to the NumPy reference workload of benchmarks/guard.py, "
                    "written by `python benchmarks/guard.py --record`",
            "ratios": {name: round(r["ratio"], 6) for name, r in results.items()},
            "measured": {name: {"value": round(r["value"], 3), "unit": r["unit"],
                                "reference_per_s": round(r["reference_per_s"], 4)} for name, r in results.items()},
        }, indent=2) + "\n")
        print(f"recorded {REFERENCE_FILE.name}")
        return 0
    if not recorded:
        print(f"no {REFERENCE_FILE.name}: nothing to compare with (write it with --record)")
        return 1
    if failed:
        print(f"FAILED: {', '.join(failed)} dropped more than {ALLOWED_DROP:g}x against the recorded ratio")
        return 1
    print(f"ok: no throughput dropped more than {ALLOWED_DROP:g}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
