"""`perfmodel calibrate` (a hardware YAML from microbenchmarks) and `perfmodel measure` (the measurement table)."""
from __future__ import annotations

import argparse
import sys
import time


def register(sub: argparse._SubParsersAction) -> None:
    c = sub.add_parser(
        "calibrate", help="measure microbenchmarks on this device and write a calibrated hardware YAML",
        description="Run copies over growing working sets (bandwidth per memory level), large matmuls per dtype "
                    "(attainable FLOP/s) and tiny ops (launch overhead) on the device, and write the base spec "
                    "with its efficiency block measured. The raw microbenchmark table goes to a sidecar CSV "
                    "(NAME.microbench.csv beside the YAML).")
    c.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="device to measure (default cpu)")
    c.add_argument("-o", "--output", required=True, metavar="YAML", help="hardware YAML to write")
    c.add_argument("--base", help="spec with the nominal numbers: catalog name or YAML "
                                  "(default cpu-generic for --device cpu; required for cuda, e.g. h100-sxm)")
    c.add_argument("--name", help="name of the written spec (default: the output file's stem)")
    c.add_argument("--sizes", choices=["full", "small"], default="full",
                   help="full sweep (16 KiB to 1 GiB on a CPU, under a minute) or small (caches only, a few "
                        "seconds, noisier: for tests and smoke runs)")
    c.add_argument("--threads", type=int, help="CPU threads torch runs (default: torch's own choice); the "
                                              "calibrated spec's core count is this number")
    c.add_argument("--clock", choices=["wall", "process"], default="wall",
                   help="CPU: wall-clock time (default) or, with --threads 1, the process's CPU time (leaves out "
                        "the time other processes took on a shared machine)")
    c.add_argument("--json", action="store_true", help="print the measured ceilings as JSON")
    c.set_defaults(func=run_calibrate)

    m = sub.add_parser(
        "measure", help="time torch kernels over a shape sweep and write a measurement table",
        description="Time F.linear (GEMM/GEMV), scaled_dot_product_attention, rms_norm and elementwise ops on "
                    "the device over a suite of shapes; rows are appended to the table as they are measured, "
                    "and a rerun skips the shapes already there. Each row's source records the device, torch "
                    "version and input rotation (rot=N: the prediction's reuse footprint is N x op bytes).")
    m.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="device to measure (default cpu)")
    m.add_argument("--suite", choices=["tiny", "quick", "full", "e2e"], default="quick",
                   help="tiny (seconds), quick (1-2 minutes on a 2-core CPU, default), full (10+ minutes) or e2e "
                        "(whole decoding steps and runs of every method on the reference implementation: a few "
                        "minutes on a 2-core CPU, the real 8B/7B models on a GPU)")
    m.add_argument("-o", "--output", required=True, metavar="TABLE", help="measurement table: .parquet or .csv")
    m.add_argument("--hardware", metavar="HARDWARE", help="spec the rows are predicted with: catalog name or calibrated YAML "
                                      "(default cpu-generic for --device cpu; required for cuda)")
    m.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True,
                   help="skip shapes already in the table (default); --no-resume replaces the table")
    m.add_argument("--rotate", type=int, default=4,
                   help="input sets rotated when one call's bytes fit in the last-level cache (default 4)")
    m.add_argument("--no-bf16", action="store_true", help="fp32 only, even where bf16 runs fast")
    m.add_argument("--samples", type=int, default=5, help="timed samples per shape (default 5)")
    m.add_argument("--repeats", type=int, default=3,
                   help="e2e: timed runs per case after one warm-up run, cases taking turns (default 3)")
    m.add_argument("--clock", choices=["wall", "process"], default="wall",
                   help="CPU: wall-clock time (default) or, with --threads 1, the process's CPU time (leaves out "
                        "the time other processes took on a shared machine); kernel suites and e2e alike")
    m.add_argument("--graph-replays", type=int, default=0, metavar="N",
                   help="e2e on cuda: also time every pass of one run from N replays of its CUDA graph "
                        "(methods whose passes replay; default 0: eager timing only)")
    m.add_argument("--target-ms", type=float, default=20.0, help="minimum length of one sample in ms (default 20)")
    m.add_argument("--no-progress", action="store_true", help="no progress bar")
    m.add_argument("--threads", type=int, help="CPU threads torch runs (default: torch's own choice); use the "
                                              "count the --hardware spec was calibrated with")
    m.add_argument("--json", action="store_true", help="print a JSON summary")
    m.set_defaults(func=run_measure)


def _set_threads(args: argparse.Namespace) -> None:
    """Apply ``--threads`` (CPU only); raises ValueError for a count below 1."""
    if getattr(args, "threads", None) is None:
        return
    if args.threads < 1:
        raise ValueError(f"--threads {args.threads}: expected >= 1")
    if args.device == "cpu":
        import torch

        torch.set_num_threads(args.threads)


def _set_clock(args: argparse.Namespace) -> None:
    """Apply ``--clock`` to CPU timings (process time needs --threads 1)."""
    if getattr(args, "clock", "wall") != "wall" and args.device == "cpu":
        from perfmodel.validation.microbench import set_cpu_clock

        set_cpu_clock(args.clock)


def _device_error(exc: Exception) -> int:
    print(f"perfmodel: error: {exc}", file=sys.stderr)
    return 2


def run_calibrate(args: argparse.Namespace) -> int:
    from perfmodel.extras import require

    require("torch", "measure", "perfmodel calibrate")
    from perfmodel.cli.output import print_json, table
    from perfmodel.validation import calibrate as cal
    from perfmodel.validation.microbench import DeviceUnavailable

    start = time.perf_counter()
    try:
        _set_threads(args)
        _set_clock(args)
        _warn_if_busy(args.device)
        result = cal.calibrate(args.device, args.base, output=args.output, name=args.name,
                               quick=args.sizes == "small")
    except (DeviceUnavailable, ValueError) as exc:
        return _device_error(exc)
    yaml_path, csv_path = cal.write_calibration(result, args.output)
    wall = time.perf_counter() - start
    hw = result.hardware
    eff = hw.efficiency
    if args.json:
        print_json({"hardware": str(yaml_path), "microbench": str(csv_path), "wall_s": wall,
                    "bandwidth_bytes_per_s": result.bandwidth, "matmul_flops": result.flops,
                    "launch_s": result.launch_s, "efficiency": eff.model_dump(mode="json")})
        return 0
    rows = [[lv, hw.level_capacity_bytes(lv), result.bandwidth.get(lv), hw.memory[lv].bandwidth_bytes_per_s,
             eff.memory_fraction(lv)] for lv in hw.memory]
    print(table(rows, ["level", "capacity_bytes", "measured_bandwidth_bytes_per_s", "bandwidth_bytes_per_s",
                       "efficiency"]))
    print()
    rows = [[dt, rate, hw.compute.peak_flops(dt, "vector" if dt == "fp32" else "tensor")]
            for dt, rate in result.flops.items()]
    print(table(rows, ["dtype", "measured_flops_per_s", "peak_flops"]))
    print(f"\nefficiency: tensor {eff.tensor:.3f}, vector {eff.vector:.3f}, launch {eff.launch_s * 1e6:.2f} us, "
          f"attention overhead {eff.attention_overhead_s * 1e6:.2f} us")
    if eff.gemm_half_rows or eff.exps_per_s:
        half = ", ".join(f"{dt} {v:.1f}" for dt, v in eff.gemm_half_rows.items())
        print(f"half-performance rows (matmul): {half or 'n/a'}; exponentials "
              f"{(eff.exps_per_s or 0) / 1e9:.2f} G/s; prefill attention overhead "
              f"{eff.prefill_attention_overhead_s * 1e6:.2f} us")
    for note in result.notes:
        print(f"note: {note}")
    print(f"wrote {yaml_path} and {csv_path} in {wall:.1f} s")
    return 0


def _warn_if_busy(device: str) -> None:
    from perfmodel.validation.microbench import busy_warning

    warning = busy_warning(device)
    if warning:
        print(f"perfmodel: warning: {warning}", file=sys.stderr)


def _check_threads(args: argparse.Namespace) -> None:
    """Warn when a CPU run uses another thread count than the calibrated spec it names was measured with."""
    if args.device != "cpu" or not args.hardware:
        return
    import torch

    from perfmodel.specs.hardware import load_hardware

    try:
        hw = load_hardware(args.hardware)
    except Exception:  # the runner reports an unusable spec itself
        return
    if hw.kind == "cpu" and "calibration" in hw.sources and hw.compute.units != torch.get_num_threads():
        print(f"perfmodel: warning: measuring with {torch.get_num_threads()} threads, but {args.hardware} was "
              f"calibrated with {hw.compute.units}; pass --threads {hw.compute.units}", file=sys.stderr)


def run_measure(args: argparse.Namespace) -> int:
    from perfmodel.extras import require

    require("torch", "measure", "perfmodel measure")
    from perfmodel.cli.output import print_json
    from perfmodel.validation import measure as ms
    from perfmodel.validation import microbench as mb

    start = time.perf_counter()
    try:
        mb.check_device(args.device)
        _set_threads(args)
        _set_clock(args)
        _check_threads(args)
        _warn_if_busy(args.device)
        if args.suite == "e2e":
            return _run_e2e(args, start)
        if args.samples < 1 or args.target_ms <= 0:
            raise ValueError(f"--samples {args.samples} --target-ms {args.target_ms}: expected >= 1 and > 0")
        bf16 = not args.no_bf16 and mb.bf16_is_fast(args.device)
        cases = ms.suite_cases(args.suite, bf16=bf16, device=args.device)
        budget = mb.Budget(target_s=args.target_ms * 1e-3, samples=args.samples,
                           warmup_s=min(0.01, args.target_ms * 1e-3))
        result = ms.measure(cases, args.output, device=args.device, hardware=args.hardware, resume=args.resume,
                            rotate=args.rotate, budget=budget, progress=not args.no_progress)
    except (mb.DeviceUnavailable, ValueError) as exc:
        return _device_error(exc)
    wall = time.perf_counter() - start
    summary = {"table": str(result.path), "timings": str(ms.timings_path(result.path)), "suite": args.suite,
               "shapes": len(cases), "measured": result.measured, "skipped": result.skipped,
               "rows_written": len(result.rows), "wall_s": wall}
    if args.json:
        print_json(summary)
        return 0
    print(f"{args.suite} suite on {args.device}: measured {result.measured} shapes ({len(result.rows)} rows), "
          f"skipped {result.skipped} already in {result.path}, in {wall:.1f} s")
    return 0


def _run_e2e(args: argparse.Namespace, start: float) -> int:
    """``measure --suite e2e``: the reference implementation's steps and runs (validation/e2e.py)."""
    from perfmodel.cli.output import print_json
    from perfmodel.validation import e2e

    if args.repeats < 1:
        raise ValueError(f"--repeats {args.repeats}: expected >= 1")
    cases = e2e.suite_cases(args.device)
    result = e2e.measure_e2e(cases, args.output, device=args.device, hardware=args.hardware,
                             repeats=args.repeats, resume=args.resume, graph_replays=args.graph_replays,
                             clock=args.clock,
                             progress=not args.no_progress)
    wall = time.perf_counter() - start
    summary = {"table": str(result.path), "suite": "e2e", "cases": len(cases), "measured": result.measured,
               "skipped": result.skipped, "rows_written": len(result.rows), "wall_s": wall}
    if args.json:
        print_json(summary)
        return 0
    print(f"e2e suite on {args.device}: measured {result.measured} cases ({len(result.rows)} rows), skipped "
          f"{result.skipped} already in {result.path}, in {wall:.1f} s")
    return 0
