"""Where a whole step's error comes from: every kernel of an end-to-end case timed and predicted, op by op.

    python benchmarks/e2e_breakdown.py --hardware out/host1.yaml --threads 1 --clock process   # every CPU case
    python benchmarks/e2e_breakdown.py --hardware out/host1.yaml --threads 1 --clock process --scenario kv-int4

Runs each case of the CPU e2e suite (validation/e2e.py) once to warm up, then once under the recorder, which
times every kernel launch on the host (on a CPU that is the kernel's time); predicts the same ops (the kernels
report exactly the builder's ops, tests/test_reference_oplist.py) with the analytic engine on the given spec;
prints per case and phase the measured and predicted milliseconds per step of each op name, their ratio, and
the host time between kernels (Python, the decoding policy). Markdown.
"""
from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def breakdown(case, hw, clock: str = "wall") -> list[str]:
    import time

    from perfmodel.engines.analytic import time_ops
    from perfmodel.reference import Recorder, Reference

    model, scenario = case.specs()
    ref = Reference(model, scenario)
    ref.run()
    with Recorder(clock=time.process_time if clock == "process" else None) as rec:
        result = ref.run(clock=clock)
    phase_of = {i: ps.phase for i, ps in enumerate(ref.passes)}
    steps = defaultdict(int)
    wall = defaultdict(float)
    for t in result.times:
        steps[t.phase] += 1
        wall[t.phase] += t.seconds
    measured = defaultdict(float)
    predicted = defaultdict(float)
    ops = [launch.op for launch in rec.launches]
    times = time_ops(ops, hw).time
    for launch, pred in zip(rec.launches, times):
        key = (phase_of[launch.pass_index], launch.op.name)
        measured[key] += launch.seconds
        predicted[key] += float(pred)
    lines = [f"### {case.label()}", "", "| phase | op | measured ms/step | predicted ms/step | measured / predicted |",
             "|---|---|---|---|---|"]
    for phase in steps:
        n = steps[phase]
        keys = sorted((k for k in measured if k[0] == phase), key=lambda k: -measured[k])
        for k in keys:
            m, p = measured[k] / n * 1e3, predicted[k] / n * 1e3
            lines.append(f"| {phase} | {k[1]} | {m:.2f} | {p:.2f} | {m / p if p else float('nan'):.2f} |")
        kernels = sum(measured[k] for k in keys)
        lines.append(f"| {phase} | (between kernels) | {(wall[phase] - kernels) / n * 1e3:.2f} | 0 | |")
        total_p = sum(predicted[k] for k in keys) / n * 1e3
        lines.append(f"| {phase} | **step** | **{wall[phase] / n * 1e3:.2f}** | **{total_p:.2f}** | "
                     f"**{wall[phase] / n * 1e3 / total_p:.2f}** |")
    return lines + [""]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hardware", default="cpu-generic", help="spec to predict with (e.g. out/host.yaml)")
    ap.add_argument("--scenario", nargs="*", help="only these scenarios of the suite")
    ap.add_argument("--threads", type=int, help="torch threads (default: torch's own choice)")
    ap.add_argument("--clock", choices=["wall", "process"], default="wall",
                    help="wall clock, or process CPU time (needs --threads 1)")
    args = ap.parse_args(argv)

    import os

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    from perfmodel.specs.hardware import load_hardware
    from perfmodel.validation.e2e import suite_cases

    hw = load_hardware(args.hardware)
    print(f"Load average before: {os.getloadavg()[0]:.2f}\n")
    for case in suite_cases("cpu"):
        if args.scenario and case.scenario not in args.scenario:
            continue
        print("\n".join(breakdown(case, hw, args.clock)))
    print(f"Load average after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
