"""`perfmodel sweep GRID.yaml -o results.parquet`: predict every point of a grid into one table."""
from __future__ import annotations

import argparse
import sys

EPILOG = """\
grid file (YAML):
  hardware:  [h100-sxm, h200-sxm]        catalog names or YAML paths (default h100-sxm)
  models:    [llama-3.1-8b]              (default llama-3.1-8b)
  scenarios: [arm, kv-int4]              (default arm)
  parameters:                            every combination of these values is a point
    hardware.memory.hbm.bandwidth_bytes_per_s: [x1, x1.5, x2]   'xF' = F times the spec's own value
    hardware.compute.tensor_flops.bf16: [x1, x2]
    model.num_hidden_layers: [32, 64]
    batch: [1, 8, 64]                    scenario fields: the keys of `perfmodel predict --set`
    prompt_len: [512, 4096]
    kv_cache.bits: [4, 8]
    tensor_parallel: [1, 2, 4]

Keys are routed like `perfmodel predict --set`: hardware.<path>, model.<field>, anything else is a scenario
field (see `perfmodel scenarios show arm`). The analytic engine evaluates numeric fields as arrays in this process;
--engine event runs point by point as Dask tasks. With -o, each chunk is filed as a part under OUTPUT.parts/
as soon as it is done; rerunning an interrupted sweep computes only the missing chunks.

output columns: point, hardware, model, scenario, method, engine, one column per parameter, batch, prompt_len,
gen_len, latency_s, prefill_s, decode_s, tokens_per_s, time_per_step_s, steps, flops, hbm_bytes,
arithmetic_intensity, bound, memory_*_bytes, memory_fits, bound_fraction_<resource>: the names, units and
descriptions of every command's output (docs/fields.md, perfmodel/schema.py).
"""

SHOWN = ["hardware", "model", "scenario", "latency_s", "tokens_per_s", "time_per_step_s", "bound", "memory_fits"]


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``perfmodel sweep``."""
    p = sub.add_parser("sweep", help="predict every point of a grid of hardware, models, scenarios and parameters",
                       description="Evaluate a grid (hardware variants × models × scenarios × parameter values) "
                                   "and write one row per point to Parquet.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("grid", metavar="GRID.yaml", help="grid file (format below)")
    p.add_argument("-o", "--output", metavar="PATH",
                   help="Parquet file to write (parts are filed in PATH.parts/ so an interrupted run resumes); "
                        "without it the table is printed")
    p.add_argument("--engine", choices=["analytic", "event"], default="analytic",
                   help="timing engine (default analytic; event runs point by point through Dask)")
    p.add_argument("--chunk-size", type=int, metavar="N",
                   help="points per chunk / part file (default 20000 analytic, 8 event)")
    dask = p.add_mutually_exclusive_group()
    dask.add_argument("--dask", dest="use_dask", action="store_const", const=True,
                      help="run chunks as Dask tasks (default: for --engine event and grids over 5 million points)")
    dask.add_argument("--no-dask", dest="use_dask", action="store_const", const=False,
                      help="run every chunk in this process")
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="address of a running Dask scheduler, e.g. tcp://10.0.0.5:8786 (default: a local cluster)")
    p.add_argument("--workers", type=int, metavar="N", help="processes of the local Dask cluster (default: CPU count)")
    p.add_argument("--keep-parts", action="store_true", help="keep OUTPUT.parts/ after writing the output")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--top", type=int, default=20, help="rows printed without -o (default 20)")
    p.add_argument("--json", action="store_true", help="print the rows (without -o) or a summary (with -o) as JSON")
    p.set_defaults(func=run_sweep_cmd)


def _dask_choice(args: argparse.Namespace, by_default: bool) -> bool | None:
    """``--dask`` / ``--no-dask`` as given; where Dask would be chosen by default but is not installed, run in this
    process with a note. Asking for Dask (``--dask``, ``--scheduler``) without it names the extra to install."""
    from perfmodel.extras import available, require

    if args.use_dask or args.scheduler:
        require("dask", "dask", "perfmodel sweep --dask / --scheduler")
        return args.use_dask
    if args.use_dask is None and by_default and not available("dask"):
        print("perfmodel: note: dask is not installed (the [dask] extra), so the sweep runs in this process",
              file=sys.stderr)
        return False
    return args.use_dask


def run_sweep_cmd(args: argparse.Namespace) -> int:
    """Run the sweep with a progress bar; write the table (and report resumed chunks) or print it."""
    import time

    from perfmodel.cli.output import print_json, table
    from perfmodel.errors import SpecError
    from perfmodel import sweep
    from perfmodel.sweep import load_grid, parts_dir, run_sweep

    if args.chunk_size is not None and args.chunk_size < 1:
        raise SpecError("--chunk-size", "chunk-size", args.chunk_size, "a positive number of points")
    from perfmodel.extras import MissingExtra, parquet_engine

    if args.output and not parquet_engine():
        raise MissingExtra("pyarrow", "parquet", "perfmodel sweep -o (results and resumable parts are Parquet)")
    grid = load_grid(args.grid)
    use_dask = _dask_choice(args, args.engine == "event" or grid.size > getattr(sweep, "DASK_THRESHOLD", 5_000_000))
    bar = None
    if not args.no_progress:
        from tqdm import tqdm

        bar = tqdm(total=grid.size, unit="pt", unit_scale=True, desc="sweep", file=sys.stderr, leave=False,
                   disable=None)

    def progress(done: int, total: int) -> None:
        if bar is not None:
            bar.total = total
            bar.n = done
            bar.refresh()

    if args.output and parts_dir(args.output).is_dir():
        print(f"resuming from {parts_dir(args.output)}", file=sys.stderr)
    start = time.perf_counter()
    try:
        result = run_sweep(grid, args.output, engine=args.engine, chunk_size=args.chunk_size, use_dask=use_dask,
                           scheduler=args.scheduler, workers=args.workers, progress=progress,
                           keep_parts=args.keep_parts)
    except (ValueError, OSError) as exc:  # bad grid values, engine missing, scheduler unreachable, disk errors
        print(f"perfmodel: error: {exc}", file=sys.stderr)
        return 2
    finally:
        if bar is not None:
            bar.close()
    elapsed = time.perf_counter() - start
    if result.resumed_chunks:
        print(f"resumed: {result.resumed_chunks} of {result.chunks} chunks ({result.resumed_points} points) were "
              f"already done", file=sys.stderr)
    if args.output:
        info = {"output": str(result.output), "points": result.points, "chunks": result.chunks,
                "resumed_chunks": result.resumed_chunks, "resumed_points": result.resumed_points,
                "seconds": elapsed, "points_per_s": result.points / elapsed if elapsed > 0 else None,
                "engine": args.engine, "dask": result.used_dask}
        if args.json:
            print_json(info)
        else:
            print(f"wrote {result.points:,} points to {result.output} in {elapsed:.2f} s "
                  f"({info['points_per_s']:,.0f} points/s, {args.engine} engine"
                  f"{', Dask' if result.used_dask else ''})")
        return 0
    df = result.table
    if args.json:
        from perfmodel.schema import json_value

        print_json([{k: json_value(k, v) for k, v in row.items()} for row in df.to_dict(orient="records")])
        return 0
    cols = ["point", *[c for c in SHOWN[:3]], *grid.columns, *[c for c in SHOWN[3:]]]
    cols = list(dict.fromkeys(c for c in cols if c in df.columns))
    shown = df.head(args.top)
    print(table(shown[cols].astype(object).values.tolist(), cols))
    if len(df) > len(shown):
        print(f"... {len(df) - len(shown):,} more rows (write them all with -o results.parquet)")
    return 0
