"""`perfmodel predict`, `perfmodel op` and `perfmodel compare`: the what-if commands."""
from __future__ import annotations

import argparse
import sys


from perfmodel.cli.options import (add_engine, add_hardware, add_json, add_model, add_scenario, add_set,
                                   set_pairs as _set_pairs)


def _scenario_epilog() -> str:
    from perfmodel.specs.scenario import field_help

    lines = ["scenario fields for --set (default, description):"]
    lines += [f"  {name:26s} {default:10s} {desc}" for name, default, desc in field_help()]
    lines += ["", "hardware fields: --set hardware.<path as in `perfmodel hardware show NAME --json`>=VALUE",
              "model fields:    --set model.<field>=VALUE"]
    return "\n".join(lines)


def _common(p: argparse.ArgumentParser) -> None:
    add_hardware(p)
    add_engine(p)
    add_json(p)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="predict latency, throughput, memory and bottleneck of one scenario",
                       description="Predict one model + scenario on one device.", epilog=_scenario_epilog(),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    _common(p)
    add_model(p)
    add_scenario(p)
    add_set(p, "; fields below")
    p.add_argument("--top", type=int, default=10, help="ops shown in the table (default 10)")
    p.add_argument("--trace", metavar="FILE.json",
                   help="also write a Chrome-trace timeline (Perfetto / chrome://tracing) of a whole generation "
                        "step simulated by the event engine: every kernel by name, streams as threads, counters "
                        "of bytes in flight per memory level")
    p.add_argument("--trace-steps", metavar="N|FIRST:LAST",
                   help="generation steps to trace, 0-based (default: the middle step; FIRST: to the last)")
    p.set_defaults(func=run_predict)

    o = sub.add_parser("op", help="time one kernel (gemm or attention)", description="Time one op on one device.")
    kinds = o.add_subparsers(title="op kinds", metavar="KIND")
    g = kinds.add_parser("gemm", help="C[m,n] = A[m,k]·B[k,n]")
    _common(g)
    for dim in ("m", "n", "k"):
        g.add_argument(f"--{dim}", type=int, required=True, help=f"GEMM dimension {dim}")
    g.add_argument("--dtype", default="bf16", help="bf16, fp16, fp8 or fp32 (default bf16)")
    g.set_defaults(func=run_op, kind="gemm")
    a = kinds.add_parser("attention", help="fused attention over a KV sequence")
    _common(a)
    for name, helptext in (("batch", "sequences"), ("q-len", "query tokens per sequence (1 for decode)"),
                           ("kv-len", "keys per sequence"), ("heads", "query heads"),
                           ("kv-heads", "key/value heads"), ("head-dim", "head width")):
        a.add_argument(f"--{name}", type=int, required=True, help=helptext)
    mask = a.add_mutually_exclusive_group()
    mask.add_argument("--causal", dest="mask", action="store_const", const="causal", help="causal mask (default)")
    mask.add_argument("--bidirectional", dest="mask", action="store_const", const="bidirectional",
                      help="no mask (diffusion LMs)")
    a.add_argument("--dtype", default="bf16", help="bf16, fp16, fp8 or fp32 (default bf16)")
    a.set_defaults(func=run_op, kind="attention", mask="causal")

    c = sub.add_parser("compare", help="one table over several scenarios, models, hardware and batch sizes",
                       description="Compare scenarios side by side (every combination of the lists given).")
    add_hardware(c, many=True, default=["h100-sxm"])
    add_model(c, many=True, default=None, helptext="catalog names, model YAML paths or Hugging Face config.json "
                                                   "files (default: llama-3.1-8b for arm-based scenarios, llada-8b "
                                                   "for diffusion ones)")
    add_scenario(c, many=True, default=["arm", "dlm", "block-dlm"])
    c.add_argument("--batch", nargs="+", type=int, default=[1], metavar="N", help="batch sizes, e.g. 1 8 32 128")
    add_set(c, "; applied to every row")
    add_engine(c)
    add_json(c)
    c.set_defaults(func=run_compare)


def run_predict(args: argparse.Namespace) -> int:
    from perfmodel.api import predict
    from perfmodel.cli.output import print_json, table

    overrides = _set_pairs(args.set)
    if args.trace:
        _check_output_file("--trace", args.trace)
        steps = _step_range(args.trace_steps)
    pred = predict(args.hardware, args.model, args.scenario, overrides, engine=args.engine)
    if args.trace:
        from perfmodel.trace import write_trace

        written = write_trace(args.trace, args.hardware, args.model, args.scenario, overrides, steps)
        print(f"wrote {written.events} trace events ({written.kernels} kernels of {written.steps} step(s), "
              f"{written.seconds * 1e3:.3g} ms simulated) to {args.trace}", file=sys.stderr)
    if args.json:
        print_json(pred.to_dict())
        return 0
    print(summary_text(pred.record()))
    ops = pred.op_rows(args.top)
    print(f"\ntop {len(ops)} ops by total time:")
    print(table([list(r.values()) for r in ops], list(ops[0]) if ops else []))
    if not pred.summary["memory"]["fits"]:
        print("\nwarning: the workload does not fit in device memory", file=sys.stderr)
    return 0


def summary_text(record: dict) -> str:
    """A prediction's summary as a two-column table: every field of the record with its value and unit."""
    from perfmodel.cli.output import table
    from perfmodel.schema import quantity

    head = (f"{record['model']} · {record['scenario']} ({record['method']}) on {record['hardware']} · batch "
            f"{record['batch']}, prompt {record['prompt_len']}, generate {record['gen_len']} · {record['engine']} "
            f"engine")
    skip = ("hardware", "model", "scenario", "method", "engine", "batch", "prompt_len", "gen_len")
    rows = [[name, value, quantity(name).unit] for name, value in record.items() if name not in skip]
    return head + "\n" + table(rows, ["field", "value", "unit"])


def _step_range(text: str | None) -> tuple[int, int] | None:
    """``--trace-steps`` as a (first, last) pair of 0-based generation steps, None for the default."""
    from perfmodel.errors import SpecError

    if text is None:
        return None
    first, sep, last = text.partition(":")
    try:
        lo = int(first) if first.strip() else 0
        hi = int(last) if sep and last.strip() else (lo if not sep else -1)
    except ValueError:
        raise SpecError("command line", "--trace-steps", text,
                        "a step N or a range FIRST:LAST of 0-based generation steps, e.g. 0 or 0:3") from None
    if lo < 0 or (hi != -1 and hi < lo):
        raise SpecError("command line", "--trace-steps", text, "0 <= FIRST <= LAST")
    return lo, hi


def _check_output_file(option: str, path: str) -> None:
    """Fail before the work when ``path`` cannot be written: its folder must exist and it must not be a folder."""
    from pathlib import Path

    from perfmodel.errors import SpecError

    target = Path(path)
    folder = target.parent
    if not folder.is_dir():
        raise SpecError("command line", option, path, f"a file in an existing folder ({str(folder)!r} does not exist)")
    if target.is_dir():
        raise SpecError("command line", option, path, "a file name, not a folder")


def run_op(args: argparse.Namespace) -> int:
    from perfmodel.api import make_op, predict_op
    from perfmodel.cli.output import print_json
    from perfmodel.units import format_si

    if args.kind == "gemm":
        shape = {"m": args.m, "n": args.n, "k": args.k}
    else:
        shape = {"batch": args.batch, "q_len": args.q_len, "kv_len": args.kv_len, "heads": args.heads,
                 "kv_heads": args.kv_heads, "head_dim": args.head_dim, "mask": args.mask}
    from perfmodel.errors import Problem, SpecError
    from perfmodel.shapes import count_problem, heads_problem

    problems = [Problem(key, value, count_problem(value)) for key, value in shape.items()
                if key != "mask" and count_problem(value)]
    if args.kind == "attention" and not problems and heads_problem(args.heads, args.kv_heads):
        problems.append(Problem("kv_heads", args.kv_heads, heads_problem(args.heads, args.kv_heads)))
    if problems:
        raise SpecError.from_problems("perfmodel op", problems)
    res = predict_op(make_op(args.kind, dtype=args.dtype, **shape), args.hardware, engine=args.engine)
    if args.json:
        from perfmodel.schema import COMMANDS, record

        names = [n for n in COMMANDS["op"] if n in res]
        out = record({n: res[n] for n in names}, names)
        out.update({f"bytes_{level}": v for level, v in res["level_bytes"].items()})
        extras = {k: v for k, v in res.items() if k not in names and k != "level_bytes"}
        if extras:
            out["engine_details"] = extras
        print_json(out)
        return 0
    print(f"{args.kind} {shape} {args.dtype} on {res['hardware']} ({args.engine})")
    print(f"  time {format_si(res['time_s'], 's')}  ·  {format_si(res['flops'], 'FLOP')}  ·  "
          f"{format_si(res['bytes'], 'B')}  ·  {res['arithmetic_intensity']:,.1f} FLOP/B  ·  bound: {res['bound']}")
    print(f"  achieved {format_si(res['flops'] / res['time_s'], 'FLOP/s')}, {format_si(res['bytes'] / res['time_s'], 'B/s')}")
    return 0


def _default_model(scenario: str) -> str:
    return "llada-8b" if ("dlm" in scenario or "dllm" in scenario) else "llama-3.1-8b"


def run_compare(args: argparse.Namespace) -> int:
    from perfmodel.api import predict
    from perfmodel.cli.output import print_json, table
    from perfmodel.schema import COMPARE_ROW

    base = _set_pairs(args.set)
    rows = []
    for hw in args.hardware:
        for sc in args.scenario:
            for model in args.model or [_default_model(sc)]:
                for batch in args.batch:
                    record = predict(hw, model, sc, {**base, "batch": batch}, engine=args.engine).record()
                    rows.append({name: record[name] for name in COMPARE_ROW})
    if args.json:
        print_json(rows)
        return 0
    print(table([list(r.values()) for r in rows], list(COMPARE_ROW)))
    return 0
