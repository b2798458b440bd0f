"""`perfmodel plan`: the cheapest configuration of each device that meets a latency or throughput target."""
from __future__ import annotations

import argparse

from perfmodel.cli.options import add_hardware, add_json, add_model, add_scenario, add_set

EPILOG = """\
For every device of the catalog (CPUs skipped) or those given with --hardware, every combination of tensor
parallelism (--tp), batch size (--batch) and KV-cache format (--cache) is predicted; an option is rejected when it
does not fit in memory (per GPU, within --memory-budget-gb) or misses a target. The cheapest option that passes
is chosen: fewest GPUs, then lowest price per hour (spec field price_per_hour_usd), then highest throughput;
--rank-by cost|energy|throughput|tpot puts that figure first. Energy per token and cost per million tokens come
from perfmodel/power.py (idle + utilisation-weighted power up to the TDP; the spec's price, none without one).
A --throughput target is met with replicas: GPUs = tp x replicas.

TPOT = time per output token of one sequence (ARM: one decode pass; diffusion methods: decode time / gen_len);
TTFT = prefill (+ the passes until the first finished block for diffusion methods); tokens/s per user = 1 / TPOT.

examples:
  perfmodel plan --model llama-3.1-70b --tpot-ms 50
  perfmodel plan --model llama-3.1-70b --tpot-ms 50 --set hardware.memory.hbm.bandwidth_bytes_per_s=x2
  perfmodel plan --model llada-8b --scenario block-dlm --throughput 5000 --memory-budget-gb 60 --json
"""


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``perfmodel plan``."""
    p = sub.add_parser("plan", help="cheapest GPUs / batch / cache per device that meet a latency or throughput target",
                       description="Capacity planning: for each device, the cheapest configuration (tensor "
                                   "parallelism, batch size, KV-cache format) that meets the target, and why "
                                   "cheaper ones fail.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model(p)
    add_scenario(p)
    t = p.add_argument_group("targets (at least one)")
    t.add_argument("--tpot-ms", type=float, metavar="MS", help="maximum time per output token of one sequence (ms)")
    t.add_argument("--ttft-ms", type=float, metavar="MS", help="maximum time to first token (ms)")
    t.add_argument("--tokens-per-s-per-user", type=float, metavar="N",
                   help="minimum generated tokens/s of one sequence")
    t.add_argument("--throughput", type=float, metavar="N",
                   help="minimum generated tokens/s over all sequences (met with replicas)")
    p.add_argument("--memory-budget-gb", type=float, metavar="GB",
                   help="usable memory per GPU (default: the device's capacity)")
    add_hardware(p, many=True, default=None, helptext="devices to plan on: catalog names or hardware YAML paths "
                                                       "(default: every non-CPU device of the catalog)")
    p.add_argument("--tp", nargs="+", type=int, default=[1, 2, 4, 8], metavar="N",
                   help="tensor-parallel degrees to try (default 1 2 4 8)")
    p.add_argument("--batch", nargs="+", type=int, default=[1, 2, 4, 8, 16, 32, 64, 128, 256], metavar="N",
                   help="batch sizes to try (default powers of two 1..256)")
    p.add_argument("--cache", nargs="+", default=["fp16", "int8", "int4"],
                   choices=["fp16", "bf16", "fp8", "int8", "int4"],
                   help="KV-cache formats to try (default fp16 int8 int4)")
    add_set(p, "; applied to every option")
    p.add_argument("--rank-by", choices=["gpus", "cost", "energy", "throughput", "tpot"], default="gpus",
                   help="what the best option of a device is: fewest GPUs (then price, then throughput; default), "
                        "lowest cost_per_million_tokens_usd, lowest energy_per_token_j, highest tokens_per_s or "
                        "lowest tpot_s; devices are listed in the same order")
    p.add_argument("--show-rejected", action="store_true", help="list every rejected option with its reason")
    add_json(p)
    p.set_defaults(func=run_plan)


def run_plan(args: argparse.Namespace) -> int:
    """Plan on every device asked for and print the answers (a table and why cheaper options fail, or JSON)."""
    import sys

    from perfmodel.cli.output import print_json, table
    from perfmodel.cli.options import set_pairs as _set_pairs
    from perfmodel.planner import Target, plan, plans_frame

    try:
        target = Target(
            tpot_s=args.tpot_ms / 1e3 if args.tpot_ms is not None else None,
            ttft_s=args.ttft_ms / 1e3 if args.ttft_ms is not None else None,
            tokens_per_s_per_user=args.tokens_per_s_per_user, throughput_tokens_per_s=args.throughput,
            memory_budget_bytes=args.memory_budget_gb * 1e9 if args.memory_budget_gb is not None else None)
        plans = plan(args.model, args.scenario, target, hardware=args.hardware, tps=args.tp, batches=args.batch,
                     caches=args.cache, overrides=_set_pairs(args.set), rank_by=args.rank_by)
    except ValueError as exc:  # bad targets, choices or --set values (spec errors name the field)
        print(f"perfmodel: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print_json({"model": args.model, "scenario": args.scenario, "target": vars(target), "rank_by": args.rank_by,
                    "overrides": _set_pairs(args.set), "plans": [p.to_dict() for p in plans]})
        return 0
    goals = [f"{label} {value}" for label, value in (
        ("TPOT <=", f"{args.tpot_ms:g} ms" if args.tpot_ms is not None else None),
        ("TTFT <=", f"{args.ttft_ms:g} ms" if args.ttft_ms is not None else None),
        ("tokens/s per user >=", args.tokens_per_s_per_user), ("throughput >=", args.throughput),
        ("memory per GPU <=", f"{args.memory_budget_gb:g} GB" if args.memory_budget_gb else None)) if value is not None]
    print(f"{args.model} · {args.scenario} · target: {', '.join(goals)}")
    df = plans_frame(plans)
    headers = list(df.columns)
    print(table(df.astype(object).where(df.notna(), None).values.tolist(), headers))
    print("\nwhy not fewer GPUs:")
    for p in plans:
        if p.best is None:
            print(f"  {p.hardware}: no option meets the target")
        for tp, note in p.notes.items():
            if p.best is None or tp < p.best.tp:
                print(f"  {p.hardware} tp={tp}: {note}")
    if args.show_rejected:
        from perfmodel.schema import PLAN_ROW

        names = [n for n in PLAN_ROW if n != "ok"]
        rows = [[o.record()[n] for n in names] for p in plans for o in p.options if not o.ok]
        print("\nrejected options:")
        print(table(rows, names))
    return 0
