"""`perfmodel import SOURCE PATH -o TABLE`: turn a public kernel-timing dataset into a measurement table."""
from __future__ import annotations

import argparse
import sys
import warnings

SOURCES = ("aiconfigurator", "vidur", "llmcompass", "llmservingsim", "ncu")
SHAPE_OPTIONS = ("m", "n", "k", "batch", "q_len", "kv_len", "heads", "kv_heads", "head_dim")
NCU_OPTIONS = ("op", "dtype", "hardware", "variant", "causal", "shapes", "kernel") + SHAPE_OPTIONS
AIC_OPTIONS = ("gemm_kernel", "gemm_dtype", "attention_kernel", "kv_cache_dtype")

EPILOG = """\
sources (PATH is one file or a folder searched recursively):
  aiconfigurator  <gpu>/gemm/.../gemm_perf.parquet, <gpu>/attention/.../{context,generation}_attention_perf.parquet
  vidur           compute/<gpu>/<model>/mlp.csv
  llmcompass      matmul_A100.csv, layernorm_A100.csv, softmax_A100.csv, gelu_A100.csv
  llmservingsim   <GPU>/<model>/tp<N>/layers.csv
  ncu             an `ncu --csv --page raw|details` export; shapes from --op/--m/... or --shapes

Rows without a finite positive time, or with a shape the measurement table refuses, are dropped and counted by
reason in a note; an import with no valid row fails and leaves the output table as it was.

examples:
  perfmodel import aiconfigurator ../shared/data/measured/aiconfigurator -o aic.parquet
  perfmodel import ncu run.csv --op gemm --m 4096 --n 4096 --k 4096 --dtype bf16 --hardware h100-sxm -o t.csv
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("import", help="import a public kernel-timing dataset into a measurement table",
                       description="Read one public dataset of measured kernel timings (or an Nsight Compute "
                                   "CSV) and write it as a measurement table (.csv or .parquet).",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", metavar="SOURCE", choices=SOURCES, help=f"dataset: {', '.join(SOURCES)}")
    p.add_argument("path", metavar="PATH", help="a file of the dataset or a folder holding it")
    p.add_argument("-o", "--output", required=True, help="table to write: .csv or .parquet")
    p.add_argument("--append", action="store_true", help="append to the output table instead of replacing it")
    p.add_argument("--json", action="store_true", help="print a machine-readable summary")

    a = p.add_argument_group("aiconfigurator options")
    a.add_argument("--gemm-kernel", help="GEMM kernel_source (default: torch.nn.functional.linear, "
                                         "else vllm_default)")
    a.add_argument("--gemm-dtype", help="gemm_dtype to keep (default bfloat16)")
    a.add_argument("--attention-kernel", help="attention kernel_source (default: the one vLLM runs on the GPU: "
                                              "vllm_flash_attn_fa3, vllm_flash_attn, vllm_flash_attn_fa2, else "
                                              "vllm_flashinfer_trtllmprefill / trtllmdecode)")
    a.add_argument("--kv-cache-dtype", help="kv_cache_dtype to keep (default bfloat16)")

    n = p.add_argument_group("ncu options (the shape every kernel takes, or --shapes)")
    n.add_argument("--op", choices=["gemm", "attention", "norm", "elementwise", "embedding"], help="op kind")
    n.add_argument("--dtype", help="bf16, fp16, fp8 or fp32")
    n.add_argument("--hardware", metavar="HARDWARE", help="catalog name of the profiled GPU, e.g. h100-sxm")
    n.add_argument("--variant", help="norm / elementwise operation, e.g. rmsnorm, silu_mul")
    for dim in SHAPE_OPTIONS:
        n.add_argument(f"--{dim.replace('_', '-')}", dest=dim, type=int, metavar="N", help=f"shape column {dim}")
    mask = n.add_mutually_exclusive_group()
    mask.add_argument("--causal", dest="causal", action="store_const", const=True, help="causal attention")
    mask.add_argument("--no-causal", dest="causal", action="store_const", const=False, help="bidirectional")
    n.add_argument("--shapes", metavar="CSV", help="CSV mapping a 'kernel' regex to op/shape columns")
    n.add_argument("--kernel", metavar="REGEX", help="keep only kernels whose name matches")
    p.set_defaults(func=run)


def _given(args: argparse.Namespace, names: tuple[str, ...]) -> dict:
    return {k: getattr(args, k) for k in names if getattr(args, k) is not None}


def _options(args: argparse.Namespace) -> dict:
    """The importer keyword options of this source; options of another source are an error."""
    ncu, aic = _given(args, NCU_OPTIONS), _given(args, AIC_OPTIONS)
    if args.source == "ncu":
        if aic:
            raise ValueError(f"--{next(iter(aic)).replace('_', '-')} is an aiconfigurator option, not used with ncu")
        return ncu
    if ncu:
        raise ValueError(f"--{next(iter(ncu)).replace('_', '-')} is an ncu option, not used with {args.source}")
    if args.source == "aiconfigurator":
        return aic
    if aic:
        raise ValueError(f"--{next(iter(aic)).replace('_', '-')} is an aiconfigurator option, "
                         f"not used with {args.source}")
    return {}


def run(args: argparse.Namespace) -> int:
    from perfmodel.cli.output import print_json, table

    try:
        from perfmodel.validation.importers import SkippedInput, import_source
        from perfmodel.validation.table import append_rows, summarize, table_format, write_table

        table_format(args.output)
        from perfmodel.extras import require_parquet

        require_parquet(args.output, "perfmodel import -o")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", SkippedInput)
            data = import_source(args.source, args.path, **_options(args))
        skipped = [str(w.message) for w in caught if issubclass(w.category, SkippedInput)]
        for message in skipped:
            print(f"perfmodel: note: {message}", file=sys.stderr)
        if data.empty:
            raise ValueError(f"{args.path}: no valid row to import"
                             + (" (every row was dropped, see the notes above)" if skipped else "")
                             + f"; {args.output} is left as it was")
        if args.append:
            append_rows(args.output, data)
        else:
            write_table(data, args.output)
    except (ValueError, OSError) as exc:
        print(f"perfmodel: error: {exc}", file=sys.stderr)
        return 2
    groups = summarize(data)
    if args.json:
        print_json({"source": args.source, "path": args.path, "output": args.output, "appended": args.append,
                    "rows": len(data), "groups": groups, "skipped": skipped})
        return 0
    headers = ["hardware", "op", "dtype", "variant", "rows", "min_s", "median_s", "max_s"]
    rows = [[g[h] for h in headers] for g in groups]
    print(table(rows, headers))
    print(f"{len(data)} rows {'appended to' if args.append else 'written to'} {args.output}")
    return 0
