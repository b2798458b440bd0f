"""The analytic engine's CPU terms (perfmodel/engines/cpu.py): few-row matmuls, exponentials, flash blocks."""
from __future__ import annotations

import numpy as np
import pytest

from perfmodel import ops
from perfmodel.engines import analytic, cpu
from perfmodel.specs.hardware import load_hardware


def host(half=None, exps=None, **eff):
    """cpu-generic with unit efficiencies (so rates are the nominal peaks) and the given CPU terms."""
    block = {"tensor": 1.0, "vector": 1.0, "launch_s": 0.0, **eff}
    if half is not None:
        block["gemm_half_rows"] = half
    if exps is not None:
        block["exps_per_s"] = exps
    return load_hardware("cpu-generic", {f"efficiency.{k}": v for k, v in block.items()})


def test_gemm_pays_the_half_performance_rows():
    hw = host(half={"fp32": 16.0})
    peak = hw.compute.peak_flops("fp32", "vector")
    op = ops.gemm("g", 16, 1024, 1024, "fp32")
    t = analytic.time_ops([op], hw)
    # rate(16) = peak·16/(16 + 16): twice the square matmul's time
    assert t.compute[0] == pytest.approx(2 * 16 * 1024 * 1024 * 2 / peak)
    # one row is a GEMV: no penalty
    gemv = analytic.time_ops([ops.gemm("g", 1, 1024, 1024, "fp32")], hw)
    assert gemv.compute[0] == pytest.approx(2 * 1024 * 1024 / peak)
    # without the term the plain roofline remains
    plain = analytic.time_ops([op], host())
    assert plain.compute[0] == pytest.approx(2 * 16 * 1024 * 1024 / peak)


def test_bf16_takes_the_tensor_rate_and_its_own_half_rows():
    hw = host(half={"fp32": 16.0, "bf16": 48.0})
    op = ops.gemm("g", 16, 512, 512, "bf16")
    t = analytic.time_ops([op], hw)
    assert t.compute[0] == pytest.approx(2 * 16 * 512 * 512 * (64 / 16) / hw.compute.tensor_flops["bf16"])
    # a dtype without its own entry falls back to fp32's
    assert hw.efficiency.half_rows("fp16") == 16.0


def test_more_rows_never_take_less_time_but_raise_the_rate():
    hw = host(half={"fp32": 24.0})
    ms = np.array([1, 2, 4, 16, 64, 256, 1024], dtype=float)
    t = analytic.time_ops([ops.gemm("g", ms, 2048, 2048, "fp32")], hw)
    assert np.all(np.diff(t.time[0]) >= 0)
    rate = 2 * ms * 2048 * 2048 / t.compute[0]
    assert np.all(np.diff(rate[1:]) > 0)


def test_flash_blocks_of_pytorchs_cpu_kernel():
    assert cpu.flash_q_split(128) == 32 and cpu.flash_q_split(512) == 64 and cpu.flash_q_split(2048) == 256
    assert cpu.flash_q_split(10) == 10
    # 128 causal queries: 4 blocks of 32 rows, each computing the one 128-key block
    assert cpu.flash_pairs(128, 128, "causal") == 4 * 32 * 128
    # 2048: 8 blocks of 256 rows; block j computes ⌈256(j+1)/512⌉ key blocks of 512
    assert cpu.flash_pairs(2048, 2048, "causal") == 256 * 512 * (1 + 1 + 2 + 2 + 3 + 3 + 4 + 4)
    assert cpu.flash_pairs(100, 700, "bidirectional") == 100 * 700
    # never fewer than the causal mask keeps, never more than the full square
    q = np.array([16, 200, 777, 1500, 4096], dtype=float)
    pairs = cpu.flash_pairs(q, q, "causal")
    assert np.all(pairs >= q * (q + 1) / 2) and np.all(pairs <= q * q)


def test_prefill_attention_time_from_its_blocks():
    hw = host(half={"fp32": 32.0}, exps=1e9)
    op = ops.attention("a", 1, 2048, 2048, 32, 8, 128, mask="causal", dtype="fp32")
    t = analytic.time_ops([op], hw)
    pairs = 256 * 512 * 20
    matmul = 4 * 32 * 128 * pairs / hw.compute.peak_flops("fp32", "vector") * (256 + 32) / 256
    exps = 32 * pairs / 1e9
    vec = float(op.vector_flops) / hw.compute.peak_flops("fp32", "vector")
    assert t.compute[0] == pytest.approx(matmul + exps + vec)


def test_decode_attention_rows_are_the_query_group():
    hw = host(half={"fp32": 12.0}, exps=1e12)
    peak = hw.compute.peak_flops("fp32", "vector")
    gqa = ops.attention("a", 1, 1, 4096, 32, 8, 128, mask="bidirectional", dtype="fp32")
    mha = ops.attention("a", 1, 1, 4096, 32, 32, 128, mask="bidirectional", dtype="fp32")
    t = analytic.time_ops([gqa, mha], hw)
    flops = 4 * 32 * 4096 * 128
    extra = 32 * 4096 / 1e12 + np.asarray([float(gqa.vector_flops), float(mha.vector_flops)]) / peak
    assert t.compute[0] == pytest.approx(flops / peak * (4 + 12) / 4 + extra[0])
    # MHA: a batched matmul of one row, no GEMV kernel to fall back on
    assert t.compute[1] == pytest.approx(flops / peak * 13 + extra[1])


def test_attention_fixed_costs_by_phase():
    hw = host(attention_overhead_s=5e-5, prefill_attention_overhead_s=7e-6)
    dec = ops.attention("a", 1, 1, 16, 4, 4, 8, mask="bidirectional", dtype="fp32")
    pre = ops.attention("a", 1, 16, 16, 4, 4, 8, mask="causal", dtype="fp32")
    base = analytic.time_ops([dec, pre], host())
    t = analytic.time_ops([dec, pre], hw)
    assert t.overhead[0] - base.overhead[0] == pytest.approx(5e-5)
    assert t.overhead[1] - base.overhead[1] == pytest.approx(7e-6)


def test_default_exp_rate_is_a_vector_polynomial():
    hw = host()
    assert cpu.exp_rate(hw) == pytest.approx(hw.compute.peak_flops("fp32", "vector") / cpu.DEFAULT_EXP_COST_FLOPS)
    assert cpu.exp_rate(host(exps=3e9)) == 3e9


def test_activation_exponentials_and_first_touch():
    hw = host(exps=1e9, page_fault_bytes_per_s=4e9)
    small = ops.elementwise("silu", 16, 4096, "fp32", inputs=1, outputs=1, flops_per_element=4, variant="silu")
    add = ops.elementwise("add", 16, 4096, "fp32", inputs=2, outputs=1, flops_per_element=1, variant="add")
    t = analytic.time_ops([small, add], hw)
    vec = hw.compute.peak_flops("fp32", "vector")
    assert t.compute[0] == pytest.approx(16 * 4096 * 4 / vec + 16 * 4096 / 1e9)
    assert t.compute[1] == pytest.approx(16 * 4096 / vec)
    # a fresh output above glibc's mmap threshold pays its first touch; below it, or reused, nothing
    big = ops.elementwise("mul", 4096, 14336, "fp32", inputs=2, outputs=1, flops_per_element=1, variant="mul")
    fresh = type(big)(**{**big.__dict__, "shape": {**big.shape, "fresh_output": True}})
    reused, touched = analytic.time_ops([big, fresh], hw).overhead
    assert touched - reused == pytest.approx(4096 * 14336 * 4 / 4e9)
    small_fresh = type(add)(**{**add.__dict__, "shape": {**add.shape, "fresh_output": True}})
    both = analytic.time_ops([add, small_fresh], hw).overhead
    assert both[0] == both[1]


def test_event_engine_charges_the_same_cpu_work():
    from perfmodel.engines import event

    hw = host(half={"fp32": 24.0}, exps=2e9, attention_overhead_s=3e-5)
    op_list = [ops.gemm("g", 16, 2048, 2048, "fp32"),
               ops.attention("a", 1, 1, 8192, 32, 8, 128, mask="bidirectional", dtype="fp32"),
               ops.attention("p", 1, 1024, 1024, 32, 8, 128, mask="causal", dtype="fp32")]
    a = analytic.time_ops(op_list, hw)
    e = event.time_ops(op_list, hw)
    assert np.allclose(e.compute, a.compute, rtol=1e-9)
    # large compute-bound work: the simulated time is the analytic one up to the fill and tail terms
    assert np.allclose(e.time, a.time, rtol=0.05)
    # and a GPU's kernels are left alone
    h100 = load_hardware("h100-sxm")
    from perfmodel.engines.event_tiling import kernel_for
    assert cpu.adjust_kernel(kernel_for(op_list[0], h100), op_list[0], h100) == kernel_for(op_list[0], h100)


def test_cache_resident_gemv_is_predicted_faster_than_a_streamed_one():
    hw = load_hardware("cpu-generic")
    w = ops.gemm("gemv", 1, 1024, 1024, "fp32")  # 4 MiB of weights
    l3 = type(w)(**{**w.__dict__, "reuse_bytes": 4 * w.bytes})      # 16 MiB: the L3 holds it
    dram = type(w)(**{**w.__dict__, "reuse_bytes": 64 * w.bytes})   # 256 MiB: streamed from DRAM
    t = analytic.time_ops([l3, dram], hw)
    assert list(t.bound) == ["l3", "dram"]
    ratio = t.time[1] / t.time[0]
    assert ratio > 1.5 and ratio == pytest.approx(
        hw.memory["l3"].bandwidth_bytes_per_s * hw.efficiency.memory_fraction("l3")
        / (hw.memory["dram"].bandwidth_bytes_per_s * hw.efficiency.memory_fraction("dram")), rel=0.1)


def test_small_pointwise_ops_run_on_one_core():
    hw = host()
    assert cpu.threads_used(1000, 2) == 1 and cpu.threads_used(10 * cpu.GRAIN_SIZE, 2) == 2
    small = ops.elementwise("add", 4, 4096, "fp32", inputs=2, outputs=1, variant="add")   # 16384 elements
    big = ops.elementwise("add", 64, 4096, "fp32", inputs=2, outputs=1, variant="add")    # 262144 elements
    t = analytic.time_ops([small, big], hw)
    plain = analytic.time_ops([small, big], load_hardware("cpu-generic", {"kind": "accelerator"}))
    assert t.compute[0] == pytest.approx(hw.compute.units * float(small.flops)
                                         / hw.compute.peak_flops("fp32", "vector"))
    for name in t.level_time:
        assert t.level_time[name][1] == pytest.approx(plain.level_time[name][1])
    for name in t.level_time:
        assert t.level_time[name][0] == pytest.approx(hw.compute.units * plain.level_time[name][0])
