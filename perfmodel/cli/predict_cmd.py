"""`perfmodel predict`, `perfmodel op` and `perfmodel compare`: the what-if commands."""
from __future__ import annotations

import argparse
import sys


def _set_pairs(values: list[str] | None) -> dict[str, str]:
    out = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            from perfmodel.errors import SpecError

            raise SpecError("--set", item, item, "KEY=VALUE with a dotted KEY, e.g. batch=8 or kv_cache.bits=4")
        out[key.strip()] = value.strip()
    return out


def _scenario_epilog() -> str:
    from perfmodel.specs.scenario import field_help

    lines = ["scenario fields for --set (default, description):"]
    lines += [f"  {name:26s} {default:10s} {desc}" for name, default, desc in field_help()]
    lines += ["", "hardware fields: --set hardware.<path as in `perfmodel hardware show NAME --json`>=VALUE",
              "model fields:    --set model.<field>=VALUE"]
    return "\n".join(lines)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--hardware", default="h100-sxm", help="catalog name or YAML path (default h100-sxm)")
    p.add_argument("--engine", choices=["analytic", "event"], default="analytic", help="timing engine (default analytic)")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="predict latency, throughput, memory and bottleneck of one scenario",
                       description="Predict one model + scenario on one device.", epilog=_scenario_epilog(),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    _common(p)
    p.add_argument("--model", default="llama-3.1-8b", help="catalog name or YAML path (default llama-3.1-8b)")
    p.add_argument("--scenario", default="arm", help="catalog name or YAML path (default arm)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a field (repeatable), see below")
    p.add_argument("--top", type=int, default=10, help="ops shown in the table (default 10)")
    p.add_argument("--trace", metavar="FILE.json",
                   help="also write a Chrome-trace timeline (Perfetto / chrome://tracing) of one instance of each "
                        "distinct kernel of the middle generation step, simulated by the event engine")
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
    c.add_argument("--hardware", nargs="+", default=["h100-sxm"], help="catalog names or YAML paths")
    c.add_argument("--model", nargs="+", default=None,
                   help="models (default: llama-3.1-8b for arm-based scenarios, llada-8b for diffusion ones)")
    c.add_argument("--scenario", nargs="+", default=["arm", "dlm", "block-dlm"], help="scenarios")
    c.add_argument("--batch", nargs="+", type=int, default=[1], help="batch sizes, e.g. 1 8 32 128")
    c.add_argument("--set", action="append", metavar="KEY=VALUE", help="override applied to every row")
    c.add_argument("--engine", choices=["analytic", "event"], default="analytic")
    c.add_argument("--json", action="store_true", help="print machine-readable JSON")
    c.set_defaults(func=run_compare)


def run_predict(args: argparse.Namespace) -> int:
    from perfmodel.api import predict
    from perfmodel.cli.output import print_json, table
    from perfmodel.units import format_si

    overrides = _set_pairs(args.set)
    if args.trace:
        _check_output_file("--trace", args.trace)
    pred = predict(args.hardware, args.model, args.scenario, overrides, engine=args.engine)
    if args.trace:
        n = _write_trace(args, overrides)
        print(f"wrote {n} trace events to {args.trace}", file=sys.stderr)
    if args.json:
        print_json(pred.to_dict())
        return 0
    s = pred.summary
    ctx = s["context"]
    mem = s["memory"]
    print(f"{ctx['model']} · {ctx['scenario']} ({ctx['method']}) on {ctx['hardware']} · batch {ctx['batch']}, "
          f"prompt {ctx['prompt_len']}, generate {ctx['gen_len']} · {ctx['engine']} engine")
    print(f"  latency        {format_si(s['latency_s'], 's')}  (prefill {format_si(s['prefill_s'], 's')}, "
          f"generation {format_si(s['decode_s'], 's')} over {s['steps']:.0f} passes, "
          f"{format_si(s['time_per_step_s'], 's')} per pass)")
    print(f"  throughput     {s['tokens_per_s']:,.1f} generated tokens/s (whole batch)")
    print(f"  intensity      {s['arithmetic_intensity']:,.1f} FLOP/byte of main memory (generation)")
    print(f"  bound          {s['bound']}  " + ", ".join(f"{k} {v:.0%}" for k, v in s["bound_fractions"].items()))
    print(f"  memory         {format_si(mem['total_bytes'], 'B')} of {format_si(mem['capacity_bytes'], 'B')} "
          f"(weights {format_si(mem['weights_bytes'], 'B')}, cache {format_si(mem['cache_bytes'], 'B')}, "
          f"activations {format_si(mem['activation_bytes'], 'B')}) -> {'fits' if mem['fits'] else 'DOES NOT FIT'}")
    print(f"  efficiency     {ctx['efficiency']}")
    ops = pred.op_table().head(args.top)
    print(f"\ntop {len(ops)} ops by total time:")
    rows = [[r.name, r.phase, r.kind, r.count, r.flops, r.bytes, r.arithmetic_intensity, r.time_s,
             r.time_s / s["latency_s"] if s["latency_s"] else 0.0, r.bound] for r in ops.itertuples()]
    print(table(rows, ["op", "phase", "kind", "count", "flops", "bytes", "flop/B", "time_s", "share", "bound"]))
    if not mem["fits"]:
        print("\nwarning: the workload does not fit in device memory", file=sys.stderr)
    return 0


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


def _write_trace(args: argparse.Namespace, overrides: dict[str, str]) -> int:
    """Event-engine timeline of the middle generation step's kernels (one instance each, in order)."""
    from perfmodel.api import split_overrides
    from perfmodel.engines import event
    from perfmodel.specs.hardware import load_hardware
    from perfmodel.specs.model import load_model
    from perfmodel.specs.scenario import load_scenario
    from perfmodel.workload import build_workload

    hw_o, model_o, sc_o = split_overrides(overrides)
    hw = load_hardware(args.hardware, hw_o)
    wl = build_workload(load_model(args.model, model_o), load_scenario(args.scenario, sc_o))
    steps = [ps for ps in wl.passes if ps.generation and float(ps.count) > 0] or list(wl.passes)
    middle = steps[len(steps) // 2]
    from perfmodel.workload.layers import pass_ops

    kernels = [op.with_count(1) for op in pass_ops(wl.structure, wl.params, middle)]
    return len(event.chrome_trace(kernels, hw, args.trace))


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
        print_json(res)
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

    base = _set_pairs(args.set)
    rows = []
    for hw in args.hardware:
        for sc in args.scenario:
            for model in args.model or [_default_model(sc)]:
                for batch in args.batch:
                    s = predict(hw, model, sc, {**base, "batch": batch}, engine=args.engine).summary
                    rows.append({"hardware": hw, "model": model, "scenario": sc, "batch": batch,
                                 "latency_s": s["latency_s"], "prefill_s": s["prefill_s"],
                                 "per_pass_ms": s["time_per_step_s"] * 1e3, "steps": s["steps"],
                                 "tokens_per_s": s["tokens_per_s"], "flop_per_byte": s["arithmetic_intensity"],
                                 "bound": s["bound"], "memory_gb": s["memory"]["total_bytes"] / 1e9,
                                 "fits": s["memory"]["fits"]})
    if args.json:
        print_json(rows)
        return 0
    headers = list(rows[0]) if rows else []
    print(table([[r[h] for h in headers] for r in rows], headers))
    return 0
