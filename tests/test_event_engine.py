"""The event engine: exact timelines on a tiny GPU, agreement with the analytic engine on large regular ops, and
the effects a roofline cannot show (wave quantisation, launch-bound small ops, streams sharing bandwidth).

The tiny GPU has 2 SMs and 1 GB/s of HBM, so a 1 GB transfer alone takes 1 s and every time below is a
round number worked out by hand in the comment beside it.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from perfmodel import ops
from perfmodel.api import predict, predict_op
from perfmodel.engines import analytic, event
from perfmodel.engines.event import (GpuConfig, Kernel, TileClass, gpu_config, kernel_for, simulate, simulate_ops,
                                     time_ops)
from perfmodel.engines.event_tiling import gemm_kernel, lone_kernel_time
from perfmodel.specs.hardware import load_hardware

GB = 1e9
TINY = GpuConfig(sms=2, bandwidth_bytes_per_s={"hbm": 1 * GB})
H100 = load_hardware("h100-sxm")


# -- exact timelines on the tiny GPU -----------------------------------------------------------------------------
def test_one_tile_on_one_sm():
    # 1 GB at 1 GB/s (1 s) overlapped with 0.5 s of compute: the transfer decides.
    tl = simulate([Kernel.uniform("k", 1, compute_s=0.5, bytes={"hbm": GB})], TINY)
    assert tl.log == [(0, "k", "launch"), (0, "k", "start"), (0, "k[0]", "start"), (1, "k[0]", "end"),
                      (1, "k", "end")]
    # Compute-bound the other way round: 2 s of compute hides the 1 s transfer.
    tl = simulate([Kernel.uniform("k", 1, compute_s=2.0, bytes={"hbm": GB})], TINY)
    assert tl.end == 2


@pytest.mark.parametrize("coarsen", [True, False])
def test_two_tiles_contend_for_hbm(coarsen):
    # Two tiles on two SMs, 1 GB each: each gets 0.5 GB/s, so both finish at 2 s (not 1 s).
    tl = simulate([Kernel.uniform("k", 2, bytes={"hbm": GB})], TINY, coarsen=coarsen)
    if coarsen:  # identical tiles dispatched together: one weighted group
        assert tl.log == [(0, "k", "launch"), (0, "k", "start"), (0, "k[0:2]", "start"), (2, "k[0:2]", "end"),
                          (2, "k", "end")]
    else:
        assert tl.log == [(0, "k", "launch"), (0, "k", "start"), (0, "k[0]", "start"), (0, "k[1]", "start"),
                          (2, "k[0]", "end"), (2, "k[1]", "end"), (2, "k", "end")]
    assert tl.moved["hbm"] == 2 * GB


def test_processor_sharing_with_unequal_transfers():
    # Streams 0 and 1 start 1 GB and 0.5 GB together at 0.5 GB/s each; the short one ends at 1 s, then the long
    # one has 0.5 GB left at the full 1 GB/s: it ends at 1.5 s.
    tl = simulate([Kernel.uniform("a", 1, bytes={"hbm": GB}), Kernel.uniform("b", 1, bytes={"hbm": 0.5 * GB})],
                  TINY, streams=[0, 1])
    assert tl.log == [(0, "a", "launch"), (0, "b", "launch"), (0, "a", "start"), (0, "b", "start"),
                      (0, "a[0]", "start"), (0, "b[0]", "start"), (1, "b[0]", "end"), (1, "b", "end"),
                      (1.5, "a[0]", "end"), (1.5, "a", "end")]


def test_wave_boundary_three_tiles_on_two_sms():
    # Wave 1: tiles 0 and 1 share HBM (2 s for their 2 GB; their 1 s of compute hides under it).
    # Wave 2: tile 2 alone, 1 GB at 1 GB/s and 1 s of compute: 1 s more.
    tl = simulate([Kernel.uniform("k", 3, compute_s=1.0, bytes={"hbm": GB})], TINY)
    assert tl.log == [(0, "k", "launch"), (0, "k", "start"), (0, "k[0:2]", "start"), (2, "k[0:2]", "end"),
                      (2, "k[2]", "start"), (3, "k[2]", "end"), (3, "k", "end")]
    # Pure compute: 3 tiles × 1 s on 2 SMs take 2 s (two waves), where total work / SMs is 1.5 s.
    tl = simulate([Kernel.uniform("k", 3, compute_s=1.0)], TINY, coarsen=False)
    assert [(t, who, what) for t, who, what in tl.log if what == "end"] == [
        (1, "k[0]", "end"), (1, "k[1]", "end"), (2, "k[2]", "end"), (2, "k", "end")]


def test_launch_gaps_between_kernels():
    # Each kernel waits 0.25 s after the previous one ends before its tiles start: the SMs idle in between.
    cfg = GpuConfig(sms=2, bandwidth_bytes_per_s={"hbm": GB}, launch_s=0.25)
    tl = simulate([Kernel.uniform("a", 1, compute_s=1.0), Kernel.uniform("b", 1, compute_s=1.0)], cfg)
    assert tl.log == [(0, "a", "launch"), (0.25, "a", "start"), (0.25, "a[0]", "start"), (1.25, "a[0]", "end"),
                      (1.25, "a", "end"), (1.25, "b", "launch"), (1.5, "b", "start"), (1.5, "b[0]", "start"),
                      (2.5, "b[0]", "end"), (2.5, "b", "end")]


def test_occupancy_packs_tiles_that_share_an_sm():
    # Occupancy 2 on 2 SMs: 4 tiles resident at once, two per SM, each at half an SM: 1 s of work takes 2 s.
    # The fifth tile waits for a slot, then runs alone at a whole SM.
    tl = simulate([Kernel.uniform("k", 5, compute_s=1.0, occupancy=2)], TINY)
    assert tl.log == [(0, "k", "launch"), (0, "k", "start"), (0, "k[0:4]", "start"), (2, "k[0:4]", "end"),
                      (2, "k[4]", "start"), (3, "k[4]", "end"), (3, "k", "end")]


def test_tile_port_latency_and_tail():
    # A lone tile may draw at most 0.25 GB/s (its SM's port): 1 GB takes 4 s, after 0.5 s of pipeline fill,
    # then the kernel's 1 s tail (a split-K reduction, say).
    cfg = GpuConfig(sms=2, bandwidth_bytes_per_s={"hbm": GB}, tile_bandwidth_bytes_per_s={"hbm": 0.25 * GB})
    tl = simulate([Kernel.uniform("k", 1, bytes={"hbm": GB}, latency_s=0.5, tail_s=1.0)], cfg)
    assert tl.log == [(0, "k", "launch"), (0, "k", "start"), (0, "k[0]", "start"), (4.5, "k[0]", "end"),
                      (5.5, "k", "end")]
    # Eight such tiles on 2 SMs: two at a time, each held to 0.25 GB/s by its port although HBM could give it
    # 0.5 GB/s: 4 waves of 4 s.
    tl = simulate([Kernel.uniform("k", 8, bytes={"hbm": GB})], cfg)
    assert tl.end == 16


def test_only_the_first_wave_fills_the_pipeline():
    # 0.5 s of fill, then 1 s of compute, for tiles 0 and 1; tile 2 takes over a slot whose previous tile has
    # already issued its loads: no second fill.
    tl = simulate([Kernel.uniform("k", 3, compute_s=1.0, latency_s=0.5)], TINY)
    assert tl.log == [(0, "k", "launch"), (0, "k", "start"), (0, "k[0:2]", "start"), (1.5, "k[0:2]", "end"),
                      (1.5, "k[2]", "start"), (2.5, "k[2]", "end"), (2.5, "k", "end")]


def test_serial_steps_add_and_floors_bound():
    # serial_s is paid before the pipeline: 0.5 s, then 1 s of compute. min_s bounds the pipeline from below:
    # a 1 s transfer under a 3 s dependent chain takes 3 s; under a 0.5 s chain, 1 s.
    tl = simulate([Kernel("a", (TileClass(2, compute_s=1.0, serial_s=0.5),)),
                   Kernel("b", (TileClass(1, bytes={"hbm": GB}, min_s=3.0),)),
                   Kernel("c", (TileClass(1, bytes={"hbm": GB}, min_s=0.5),))], TINY)
    assert [(k.name, k.launched, k.finished) for k in tl.kernels] == [("a", 0, 1.5), ("b", 1.5, 4.5), ("c", 4.5, 5.5)]


def test_tile_classes_run_in_order():
    # A long tile class (2 s each) then a short one (1 s each), 2 + 2 tiles on 2 SMs.
    k = Kernel("k", (TileClass(2, compute_s=2.0), TileClass(2, compute_s=1.0)))
    tl = simulate([k], TINY)
    assert [(g.first, g.count, g.started, g.finished) for g in tl.groups] == [(0, 2, 0, 2), (2, 2, 2, 3)]


@pytest.mark.parametrize("op", [ops.gemm("g", 2944, 5888, 1024), ops.attention("a", 8, 1, 4096, 32, 8, 128),
                                ops.attention("p", 1, 1000, 1000, 8, 8, 128), ops.elementwise("e", 4096, 4096)],
                         ids=["gemm", "decode", "prefill", "elementwise"])
def test_coarsened_groups_time_exactly_like_single_tiles(op):
    fine = simulate_ops([op], H100, coarsen=False)
    coarse = simulate_ops([op], H100)
    assert len(coarse.groups) < len(fine.groups)
    assert coarse.end == pytest.approx(fine.end, rel=1e-9)


# -- input checks ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("make, message", [
    (lambda: GpuConfig(sms=0, bandwidth_bytes_per_s={"hbm": GB}), "got 0"),
    (lambda: GpuConfig(sms=2, bandwidth_bytes_per_s={"hbm": -1.0}), "got -1.0"),
    (lambda: GpuConfig(sms=2, bandwidth_bytes_per_s={}), "at least one"),
    (lambda: GpuConfig(sms=2, bandwidth_bytes_per_s={"hbm": GB}, tile_bandwidth_bytes_per_s={"l2": GB}), "'l2'"),
    (lambda: GpuConfig(sms=2, bandwidth_bytes_per_s={"hbm": GB}, launch_s=-1e-6), "got -1e-06"),
    (lambda: TileClass(0), "got 0"),
    (lambda: TileClass(1, compute_s=-2.0), "got -2.0"),
    (lambda: TileClass(1, min_s=float("inf")), "min_s must be a finite number >= 0, got inf"),
    (lambda: TileClass(1, bytes={"hbm": float("nan")}), "nan"),
    (lambda: Kernel.uniform("k", 1, occupancy=17), "got 17"),
    (lambda: Kernel.uniform("k", 1, latency_s=-1.0), "got -1.0"),
    (lambda: simulate([Kernel.uniform("k", 1, bytes={"l2": 1.0})], TINY), "'l2'"),
    (lambda: simulate([Kernel.uniform("k", 1)], TINY, streams=[0, 1]), "2 entries for 1 kernels"),
    (lambda: simulate([Kernel.uniform("k", 1)], TINY, streams=[-1]), "got -1"),
])
def test_constructors_reject_bad_values(make, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(".", r"\.")):
        make()


def test_time_ops_rejects_sweep_arrays():
    op = ops.gemm("g", np.array([64, 128]), 4096, 4096)
    with pytest.raises(ValueError, match=r"shape\[.m.\] is an array of shape \(2,\)"):
        time_ops([op], H100)


# -- agreement with the analytic engine where the roofline is exact -----------------------------------------------
@pytest.mark.parametrize("op", [ops.gemm("gemm_8192", 8192, 8192, 8192, "bf16"),
                                ops.attention("decode_32k", 16, 1, 32768, 32, 8, 128),
                                ops.attention("prefill_8k", 1, 8192, 8192, 32, 8, 128),
                                ops.gemm("lm_head_b64", 64, 128256, 4096)],
                         ids=["gemm-8192^3", "decode-attention-32k", "prefill-attention-8k", "lm-head-batch-64"])
def test_agrees_with_analytic_on_large_regular_ops(op):
    ev, an = time_ops([op], H100), analytic.time_ops([op], H100)
    assert ev.time[0] == pytest.approx(an.time[0], rel=0.05)
    assert ev.bound[0] == an.bound[0]
    for level in an.level_bytes:
        assert ev.level_bytes[level][0] == pytest.approx(an.level_bytes[level][0], rel=1e-9)


# -- what the roofline cannot show --------------------------------------------------------------------------------
def test_wave_quantisation_costs_a_tile_time():
    # One 128x256 kernel (as a single CUTLASS instantiation would run them): 22x24 = 528 tiles = 4 waves of 132
    # SMs, 23x23 = 529 tiles = 4 waves + one lone tile. The FLOPs differ by 0.2%.
    exact, plus_one = ops.gemm("528", 22 * 128, 24 * 256, 8192), ops.gemm("529", 23 * 128, 23 * 256, 8192)
    pinned = [gemm_kernel(op, H100, shapes=((128, 256),), splits=(1,)) for op in (exact, plus_one)]
    assert [k.tile_count for k in pinned] == [528, 529]
    t_exact, t_plus_one = (simulate([k], gpu_config(H100)).end for k in pinned)
    tile_time = 2 * 128 * 256 * 8192 / (H100.compute.peak_flops("bf16") * H100.efficiency.tensor / 132)
    assert t_plus_one - t_exact == pytest.approx(tile_time, rel=0.05)  # the lone tile computes on one SM
    # The chosen grid (best of every tile shape and split-K, one plan for both engines) may soften it with another
    # shape; whatever it picks, both engines charge the same waves.
    ev, an = time_ops([exact, plus_one], H100), analytic.time_ops([exact, plus_one], H100)
    assert ev.time[1] - ev.time[0] == pytest.approx(an.time[1] - an.time[0], rel=0.25, abs=0.05 * tile_time)
    assert ev.time[0] == pytest.approx(an.time[0], rel=0.02)


@pytest.mark.parametrize("op", [ops.gemm("g", 2944, 5888, 8192), ops.gemm("gemv", 1, 28672, 4096),
                                ops.attention("a", 64, 1, 700, 32, 8, 128), ops.norm("n", 4096, 4096)],
                         ids=["gemm", "gemv", "decode-attention", "norm"])
def test_closed_form_of_a_lone_kernel_matches_the_simulation(op):
    # The GEMM autotuner ranks grids by this closed form; it must be what the simulation does.
    kernel, config = kernel_for(op, H100), gpu_config(H100)
    assert lone_kernel_time(kernel, config) == pytest.approx(simulate([kernel], config).end, rel=1e-9)


def _busy_fraction(tl) -> float:
    """Share of the timeline during which some tile group is running."""
    busy, until = 0.0, 0.0
    for g in sorted(tl.groups, key=lambda g: g.started):
        start = max(g.started, until)
        if g.finished > start:
            busy += g.finished - start
            until = g.finished
    return busy / tl.end


def test_small_ops_are_dominated_by_launch_latency():
    # A batch-1 decode layer's small kernels: a few KiB each, nanoseconds of bandwidth, microseconds of launch.
    small = [ops.norm("attn_norm", 1, 4096), ops.elementwise("rope", 1, 5120, flops_per_element=3),
             ops.elementwise("residual", 1, 4096, inputs=2), ops.norm("mlp_norm", 1, 4096),
             ops.elementwise("act", 1, 14336, inputs=2, flops_per_element=5),
             ops.elementwise("residual2", 1, 4096, inputs=2)] * 4
    ev = time_ops(small, H100)
    assert set(ev.bound) == {"launch"}
    hbm_bw = H100.memory["hbm"].bandwidth_bytes_per_s * H100.efficiency.memory_fraction("hbm")
    tl = simulate_ops(small, H100)
    roofline = sum(op.bytes for op in small) / hbm_bw
    assert tl.end > 50 * roofline
    fixed = H100.efficiency.launch_s + H100.memory["hbm"].latency_s  # launch, then one round trip to HBM
    # the norms are row kernels (one block per token): one block's chain on top of the launch, 4096 / 1024 threads
    # = 4 passes of a round trip each
    norms = sum(op.kind == "norm" for op in small)
    assert tl.end == pytest.approx(len(small) * fixed + norms * 4 * H100.efficiency.row_kernel_s, rel=0.1)
    plain = simulate_ops([op for op in small if op.kind != "norm"], H100)
    assert _busy_fraction(plain) < 0.25  # the SMs sit idle through every launch gap


def test_row_kernels_run_in_waves_of_resident_blocks():
    """An RMSNorm over 4096 tokens of 4096 on an H100: one block of 1024 threads per token, two resident per SM
    (2048 threads), so 4096 / 264 -> 16 waves of one block's time (4 passes over its row); the analytic engine
    counts the same waves."""
    op = ops.norm("n", 4096, 4096, "fp16")
    k = event.kernel_for(op, H100)
    assert k.tile_count == 4096 and k.occupancy == 2
    waves = 16 * 4 * H100.efficiency.row_kernel_s
    an = analytic.time_ops([op], H100)
    streamed = op.bytes / (H100.memory["hbm"].bandwidth_bytes_per_s * H100.efficiency.memory_fraction("hbm"))
    assert streamed < waves  # the chain of round trips, not the bytes, sets the time; charged as latency
    fixed = H100.efficiency.launch_s + H100.memory["hbm"].latency_s
    assert float(an.time[0]) == pytest.approx(waves + fixed, rel=1e-9)
    assert float(an.overhead[0]) == pytest.approx(waves - streamed + fixed, rel=1e-6)
    assert float(time_ops([op], H100).time[0]) == pytest.approx(float(an.time[0]), rel=0.05)


def test_a_full_row_kernel_is_paced_by_the_bandwidth_such_kernels_reach():
    """SiLU·mul over 4,096 tokens of 11,008 on an H100: 15 full waves of 264 blocks (1,024 threads, two per SM) and a
    last of 136, 11 passes each. A full wave's pass moves 264 blocks' share of the bytes; at the row-kernel bandwidth
    that takes longer than the idle round trip, so the passes are paced by it and the kernel by its bytes at that
    rate; the last wave's passes move only its 136 blocks' share."""
    op = ops.elementwise("act", 4096, 11008, inputs=2, outputs=1, flops_per_element=5, variant="silu_mul")
    eff = H100.efficiency
    rate = eff.row_kernel_bandwidth * H100.main_bandwidth_bytes_per_s
    trip = 264 * op.bytes / (4096 * 11) / rate
    assert trip > eff.row_kernel_s
    an = analytic.time_ops([op], H100)
    fixed = eff.launch_s + H100.memory["hbm"].latency_s
    last = max(eff.row_kernel_s, trip * 136 / 264)
    assert float(an.time[0]) == pytest.approx(15 * 11 * trip + 11 * last + fixed, rel=1e-6)
    # one token: the same passes at the idle round trip
    one = analytic.time_ops([ops.elementwise("act", 1, 11008, inputs=2, outputs=1, variant="silu_mul")], H100)
    assert float(one.time[0]) == pytest.approx(11 * eff.row_kernel_s + fixed, rel=1e-6)
    assert float(time_ops([op], H100).time[0]) == pytest.approx(float(an.time[0]), rel=0.05)


def test_an_embedding_lookup_of_few_ids_walks_them_one_after_another():
    """PyTorch's index_select with 16 ids or fewer (indexSelectSmallIndex): 32 blocks of 128 threads span one
    4,096-wide row and walk the ids in turn, a pass (id from cache, then the table element) for each; above 16
    ids (indexSelectLargeIndex) the grid spans every output element, so 32 ids take a single pass."""
    trip = H100.efficiency.row_kernel_s + analytic.row_cache_latency(H100)
    for tokens, passes in ((1, 1), (8, 8), (16, 16), (32, 1)):
        op = ops.embedding("e", tokens, 4096)
        k = event.kernel_for(op, H100)
        assert k.tile_count == 32 * (1 if tokens <= 16 else tokens)
        an = analytic.time_ops([op], H100)
        fixed = H100.efficiency.launch_s + H100.memory["hbm"].latency_s
        assert float(an.time[0]) == pytest.approx(passes * trip + fixed, rel=1e-6)
        assert float(time_ops([op], H100).time[0]) == pytest.approx(float(an.time[0]), rel=0.05)


def test_two_streams_share_bandwidth_not_multiply_it():
    # Two memory-bound copies of 0.54 GB each. Overlapped on two streams they need their combined bytes at the
    # HBM rate: about the serial time less one launch, never the time of one of them.
    copy_a, copy_b = ops.elementwise("copy_a", 32768, 4096), ops.elementwise("copy_b", 32768, 4096)
    hbm_bw = H100.memory["hbm"].bandwidth_bytes_per_s * H100.efficiency.memory_fraction("hbm")
    combined = (copy_a.bytes + copy_b.bytes) / hbm_bw
    serial = simulate_ops([copy_a, copy_b], H100).end
    overlapped = simulate_ops([copy_a, copy_b], H100, streams=[0, 1])
    alone = time_ops([copy_a], H100).time[0]
    assert [k.stream for k in overlapped.kernels] == [0, 1] or [k.stream for k in overlapped.kernels] == [1, 0]
    fixed = H100.efficiency.launch_s + H100.memory["hbm"].latency_s
    assert overlapped.end == pytest.approx(combined + fixed, rel=0.01)
    assert overlapped.end > 1.9 * alone
    assert serial - overlapped.end == pytest.approx(H100.efficiency.launch_s, rel=0.05)  # one launch hidden


# -- integration ----------------------------------------------------------------------------------------------
def test_identical_instances_are_simulated_once():
    op = ops.gemm("qkv", 64, 6144, 4096)
    times = time_ops([op, op.with_count(480), ops.gemm("other_name", 64, 6144, 4096)], H100)
    assert times.time[0] == times.time[1] == times.time[2]
    assert "3 ops -> 1 distinct kernels" in times.extras["notes"][-1]
    assert len(times.extras["tiles"]) == 3 and set(times.extras["bandwidth_utilisation"]) == {"l2", "hbm"}


def test_predict_with_the_event_engine():
    ev = predict("h100-sxm", "llama-3.1-8b", "arm", {"batch": 64}, engine="event")
    an = predict("h100-sxm", "llama-3.1-8b", "arm", {"batch": 64})
    assert ev["context"]["engine"] == "event"
    assert ev["time_per_step_s"] == pytest.approx(an["time_per_step_s"], rel=0.1)
    assert any("coarsening" in note for note in ev.extras["notes"])
    json.dumps(ev.to_dict(), default=float)


def test_predict_op_with_the_event_engine():
    op = ops.attention("attention", 16, 1, 32768, 32, 8, 128)
    ev = predict_op(op, "h100-sxm", engine="event")
    an = predict_op(op, "h100-sxm")
    assert ev["engine"] == "event" and ev["bound"] == "hbm"
    assert ev["time_s"] == pytest.approx(an["time_s"], rel=0.05)
    # (batch, kv head) = 128 CTAs fill 80% of the 132 SMs: FlashAttention-3's heuristic does not split the cache
    assert ev["tiles"] == [16 * 8] and "x 128 (sequence, kv head) x 1 KV splits" in ev["tiling"][0]


def test_chrome_trace(tmp_path):
    path = tmp_path / "trace.json"
    step = [ops.norm("norm", 64, 4096), ops.gemm("qkv", 64, 6144, 4096), ops.attention("attn", 64, 1, 1024, 32, 8, 128)]
    events = event.chrome_trace(step, H100, path)
    assert json.loads(path.read_text()) == events
    assert {e["ph"] for e in events} == {"X"}
    kernels = [e for e in events if e["pid"] == 0 and not e["name"].startswith("launch")]
    assert [e["name"] for e in kernels] == ["norm", "qkv", "attn"]
    assert all(e["ts"] >= 0 and e["dur"] > 0 and math.isfinite(e["dur"]) for e in events)
