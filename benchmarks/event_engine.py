"""The event engine against the analytic one, and how long it takes to run.

    python benchmarks/event_engine.py

Prints: agreement on large regular ops; the simulation wall time of one llama-3.1-8b decode step on h100-sxm at
batch 1 and 64; and three tables of what only the event engine shows: wave quantisation, launch-bound small
ops, two streams sharing HBM.
"""
from __future__ import annotations

import statistics
import time

from perfmodel import ops
from perfmodel.engines import analytic, event, event_tiling
from perfmodel.specs.hardware import load_hardware
from perfmodel.specs.model import load_model
from perfmodel.specs.scenario import load_scenario
from perfmodel.workload import build_workload
from perfmodel.workload.layers import pass_ops

HW = "h100-sxm"
US = 1e6


def table(rows, headers) -> str:
    cells = [[str(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]

    def line(r):
        return "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))

    return "\n".join([line(headers), line(["-" * w for w in widths]), *map(line, cells)])


def wall(fn, repeats: int = 5) -> float:
    """Median wall time of ``fn()`` over ``repeats`` runs (s)."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def agreement(hw) -> None:
    big = [ops.gemm("gemm 8192^3 bf16", 8192, 8192, 8192),
           ops.attention("decode attn b16 kv32768 32/8 heads d128", 16, 1, 32768, 32, 8, 128),
           ops.attention("prefill attn 8192 causal 32/8 heads", 1, 8192, 8192, 32, 8, 128),
           ops.gemm("lm_head batch 64", 64, 128256, 4096)]
    ev, an = event.time_ops(big, hw), analytic.time_ops(big, hw)
    rows = [(op.name, f"{ev.time[i] * US:.1f}", f"{an.time[i] * US:.1f}",
             f"{100 * (ev.time[i] / an.time[i] - 1):+.2f}%", f"{ev.bound[i]}/{an.bound[i]}", ev.extras["tiling"][i])
            for i, op in enumerate(big)]
    print("Large regular ops: event vs analytic")
    print(table(rows, ["op", "event µs", "analytic µs", "diff", "bound ev/an", "event grid"]))


def decode_step(hw, batch: int) -> tuple:
    wl = build_workload(load_model("llama-3.1-8b"), load_scenario("arm", {"batch": batch}))
    ps = next(p for p in wl.passes if p.generation)
    segment = pass_ops(wl.structure, wl.params, ps)
    per_step = [round(float(op.count) / float(ps.count)) for op in segment]
    # One step on one stream, in order: embedding, the layer ops once per layer, then the head.
    head = [op for op in segment if not op.name.startswith("layer.")]
    layer = [op for op in segment if op.name.startswith("layer.")]
    layers = per_step[segment.index(layer[0])]
    sequence = head[:1] + layer * layers + head[1:]
    ev = event.time_ops(segment, hw)
    an = analytic.time_ops(segment, hw)
    ev_step = sum(t * n for t, n in zip(ev.time, per_step))
    an_step = sum(t * n for t, n in zip(an.time, per_step))
    timeline_end = event.simulate_ops(sequence, hw).end
    return (batch, len(segment), f"{wall(lambda: event.time_ops(segment, hw)) * 1e3:.1f}",
            len(sequence), f"{wall(lambda: event.simulate_ops(sequence, hw), 3) * 1e3:.1f}",
            f"{ev_step * 1e3:.3f}", f"{timeline_end * 1e3:.3f}", f"{an_step * 1e3:.3f}",
            f"{100 * (ev_step / an_step - 1):+.2f}%")


def wave_quantisation(hw) -> None:
    # 128x256 tiles: (rows, cols) of tiles with rows·cols = 132·w (exact waves) and 132·w + 1 (one tile over).
    pairs = [((22, 24), (23, 23)), ((28, 33), (25, 37)), ((33, 36), (29, 41))]
    config = event.gpu_config(hw)
    rows = []
    for exact, over in pairs:
        gemms = [ops.gemm(f"{r * 128}x{c * 256}x8192", r * 128, c * 256, 8192) for r, c in (exact, over)]
        pinned = [event_tiling.gemm_kernel(g, hw, shapes=((128, 256),), splits=(1,)) for g in gemms]
        fixed = [event.simulate([k], config).end for k in pinned]
        ev, an = event.time_ops(gemms, hw), analytic.time_ops(gemms, hw)
        for i, g in enumerate(gemms):
            delta = (lambda t: "" if i == 0 else f"{(t[1] - t[0]) * US:+.1f}")
            rows.append((g.name, pinned[i].tile_count, -(-pinned[i].tile_count // hw.compute.units),
                         f"{fixed[i] * US:.1f}", delta(fixed), f"{ev.time[i] * US:.1f}", delta(ev.time),
                         ev.extras["tiling"][i], f"{an.time[i] * US:.1f}", delta(an.time)))
    tile_s = 2 * 128 * 256 * 8192 / (hw.compute.peak_flops("bf16") * hw.efficiency.tensor / hw.compute.units)
    print(f"\nWave quantisation (bf16, k=8192, {hw.compute.units} SMs; one 128x256 tile computes for "
          f"{tile_s * US:.1f} µs). Fixed 128x256 kernel, then the autotuned grid, then the analytic engine:")
    print(table(rows, ["gemm", "tiles", "waves", "fixed µs", "Δ", "autotuned µs", "Δ", "autotuned grid",
                       "analytic µs", "Δ"]))


def small_ops(hw) -> None:
    small = [ops.norm("rmsnorm 1x4096", 1, 4096), ops.elementwise("rope 1x5120", 1, 5120, flops_per_element=3),
             ops.elementwise("residual 1x4096", 1, 4096, inputs=2),
             ops.elementwise("silu*mul 1x14336", 1, 14336, inputs=2, flops_per_element=5),
             ops.elementwise("residual 64x4096", 64, 4096, inputs=2)]
    ev, an = event.time_ops(small, hw), analytic.time_ops(small, hw)
    hbm = hw.memory[hw.main_memory].bandwidth_bytes_per_s * hw.efficiency.memory_fraction(hw.main_memory)
    rows = [(op.name, f"{op.bytes / 1024:.0f}", f"{op.bytes / hbm * US:.3f}", f"{ev.time[i] * US:.2f}",
             f"{an.time[i] * US:.2f}", f"{100 * hw.efficiency.launch_s / ev.time[i]:.0f}%", ev.bound[i])
            for i, op in enumerate(small)]
    tl = event.simulate_ops(small * 6, hw)
    busy = sum(g.finished - g.started for g in tl.groups) / tl.end
    print("\nLaunch-bound small ops (batch-1 decode kernels)")
    print(table(rows, ["op", "KiB", "bytes/bw µs", "event µs", "analytic µs", "launch share", "bound"]))
    print(f"{len(small) * 6} of them back to back: {tl.end * US:.1f} µs, SMs busy {100 * busy:.0f}% of it")


def two_streams(hw) -> None:
    a, b = ops.elementwise("copy A 32768x4096", 32768, 4096), ops.elementwise("copy B 32768x4096", 32768, 4096)
    hbm = hw.memory[hw.main_memory].bandwidth_bytes_per_s * hw.efficiency.memory_fraction(hw.main_memory)
    one = event.time_ops([a], hw).time[0]
    rows = [("A alone", f"{one * US:.1f}"),
            ("A then B, one stream", f"{event.simulate_ops([a, b], hw).end * US:.1f}"),
            ("A and B, two streams", f"{event.simulate_ops([a, b], hw, streams=[0, 1]).end * US:.1f}"),
            ("if overlap were free: max(A, B)", f"{one * US:.1f}"),
            ("combined bytes / HBM bandwidth", f"{(a.bytes + b.bytes) / hbm * US:.1f}"),
            ("analytic, A + B", f"{analytic.time_ops([a, b], hw).time.sum() * US:.1f}")]
    print(f"\nTwo memory-bound kernels ({a.bytes / 1e9:.2f} GB each) on one and two streams")
    print(table(rows, ["case", "µs"]))


def main() -> None:
    hw = load_hardware(HW)
    print(f"hardware {hw.name}, efficiency: {hw.efficiency.note[:60]}...\n")
    agreement(hw)
    rows = [decode_step(hw, b) for b in (1, 64)]
    print("\nllama-3.1-8b decode step (first decode segment of an arm scenario; medians of repeated runs)")
    print(table(rows, ["batch", "ops in segment", "time_ops wall ms", "kernels/step", "step timeline wall ms",
                       "event step ms", "timeline step ms", "analytic step ms", "event vs analytic"]))
    wave_quantisation(hw)
    small_ops(hw)
    two_streams(hw)


if __name__ == "__main__":
    main()
