"""FlashAttention-2/3 grids, split-KV heuristic, extra kernels of a decode call, and the GEMM latency terms
(perfmodel/engines/tiling.py), in both engines."""
from __future__ import annotations

import numpy as np
import pytest

from perfmodel import ops
from perfmodel.engines import analytic, event, tiling
from perfmodel.engines.event_tiling import attention_kernel
from perfmodel.specs.hardware import load_hardware

A100 = load_hardware("a100-sxm-80gb")
H100 = load_hardware("h100-sxm")
FA2, FA3 = tiling.FLASH_KERNELS["fa2"], tiling.FLASH_KERNELS["fa3"]


def test_catalog_gpus_name_their_flash_attention_generation():
    assert A100.efficiency.attention_kernel == "fa2"
    assert H100.efficiency.attention_kernel == "fa3"
    assert load_hardware("h200-sxm").efficiency.attention_kernel == "fa3"


@pytest.mark.parametrize("tiles,n_blocks,slots,min_blocks,expected", [
    (8, 2, 216, 0, 2),      # efficiencies 8/216 and 16/216: the best (2 splits) is the first within 85%
    (200, 64, 216, 0, 1),   # 200 ≥ 0.8·216 tiles already fill the slots
    # eligible splits of 64 blocks: 1..8, 10, 11, 13, 16, 22, 32, 64; efficiency 8s/216 up to 22 splits (0.815,
    # the best: 32 and 64 splits spill into a second and third wave: 0.593, 0.790); 16 splits give 0.593 < 0.85·0.815
    (8, 64, 216, 0, 22),
    (8, 4, 132, 4, 1),      # FA3 never splits 4 or fewer key blocks
    # FA3, 16 blocks on 132 SMs: eligible 1..8 and 16; 16 splits (128/132 = 0.97) is the first within 85%
    (8, 16, 132, 4, 16),
])
def test_num_splits_heuristic_as_flash_attention_computes_it(tiles, n_blocks, slots, min_blocks, expected):
    assert tiling.num_splits_heuristic(tiles, n_blocks, slots, min_blocks) == expected


def test_num_splits_heuristic_broadcasts_over_arrays():
    got = tiling.num_splits_heuristic(np.array([8, 200, 8]), np.array([2, 64, 64]), 216)
    assert got.tolist() == [2, 1, 22]


def test_fa2_decode_grid_regroups_the_gqa_group_and_copies_only_when_it_must():
    # batch 2 × 8 KV heads, 63 keys (one key block): 16 CTAs, no split; Q's (batch, group, kv head) regrouping is a
    # copy each way because neither the batch nor the KV heads is 1
    tiles, splits, extra = tiling.decode_grid(2, 32, 8, 63, 128, sms=108, kernel=FA2)
    assert (tiles, splits, extra) == (16, 1, 2)
    # one sequence: the regrouping is a view, nothing extra
    assert tiling.decode_grid(1, 32, 8, 63, 128, sms=108, kernel=FA2) == (8, 1, 0)
    # 255 keys = 2 blocks of 128: split in two (see the heuristic above), plus the combine kernel
    assert tiling.decode_grid(1, 32, 8, 255, 128, sms=108, kernel=FA2) == (8, 2, 1)
    # multi-head attention is not regrouped, so never split: one CTA per (sequence, head) walks the whole cache
    assert tiling.decode_grid(1, 8, 8, 65535, 128, sms=108, kernel=FA2) == (8, 1, 0)


def test_fa3_decode_grid_packs_the_group_and_splits_long_caches():
    assert tiling.decode_grid(1, 32, 8, 2048, 128, sms=132, kernel=FA3) == (8, 16, 1)
    assert tiling.decode_grid(1, 32, 8, 512, 128, sms=132, kernel=FA3) == (8, 1, 0)  # 4 blocks: no split
    assert tiling.decode_grid(1, 8, 8, 65535, 128, sms=132, kernel=FA3)[0] == 8  # MHA: group of one packed


def test_prefill_grid_fa2_one_cta_per_query_head_fa3_packs_the_group():
    # 256 sequences of 16 tokens, 32 query heads on 8 KV heads, nothing but the tile time (no FLOPs): FA2 runs
    # 256·32 = 8192 CTAs of 64 rows = ⌈8192/108⌉ = 76 waves; FA3 packs 4 heads × 16 tokens into one 128-row
    # block per (sequence, KV head): 2048 CTAs = 19 waves.
    for kernel, expected in ((FA2, 76e-6), (FA3, 19e-6)):
        plan = tiling.attention_plan(256, 16, 16, 32, 8, 128, sms=108, kernel=kernel)
        assert float(plan.splits) == 1
        got = tiling.attention_compute_time(plan, 0.0, sms=108, tile_s=1e-6)
        assert float(got) == pytest.approx(expected, rel=1e-12)
    assert float(FA3.block_q(64)) == 192 and float(FA3.block_q(128)) == 128 and float(FA2.block_q(256)) == 64


def test_softmax_overlaps_the_matmuls_only_under_fa3():
    assert tiling.softmax_overlap(3.0, 2.0, FA3) == 3.0
    assert tiling.softmax_overlap(3.0, 2.0, FA2) == 5.0


def test_gemm_latency_terms():
    # 1024 K elements = 16 blocks of 64, 4 in flight: 4 round trips
    assert float(tiling.gemm_pipeline_time(1024, 1e-6)) == pytest.approx(4e-6)
    assert float(tiling.gemm_pipeline_time(1, 1e-6)) == pytest.approx(1e-6)
    # a 128×256 bf16 tile through a 1 GB/s port plus a 100 ns store round trip
    assert float(tiling.gemm_epilogue_time(128, 256, 2, 1e9, 1e-7)) == pytest.approx(128 * 256 * 2 / 1e9 + 1e-7)


def test_fa2_decode_pays_a_launch_and_a_round_trip_per_extra_kernel():
    one, two = (ops.attention("a", b, 1, 63, 32, 8, 128) for b in (1, 2))
    t1, t2 = (analytic.time_ops([op], A100) for op in (one, two))
    extra = 2 * (A100.efficiency.launch_s + A100.memory["hbm"].latency_s)  # the two regrouping copies
    assert float(t2.overhead[0] - t1.overhead[0]) == pytest.approx(extra, rel=1e-9)
    k1, k2 = attention_kernel(one, A100), attention_kernel(two, A100)
    assert k2.tail_s - k1.tail_s == pytest.approx(extra, rel=1e-9)


def test_unsplit_mha_decode_streams_at_one_cta_per_head_in_both_engines():
    # FA2 never splits multi-head decode: 8 CTAs walk 65535 keys each, at the bandwidth one CTA sustains
    op = ops.attention("a", 1, 1, 65535, 8, 8, 128)
    an = analytic.time_ops([op], A100)
    stream = float(op.read_bytes) / (8 * A100.efficiency.attention_cta_bytes_per_s)
    assert float(an.level_time["hbm"][0]) == pytest.approx(stream, rel=1e-9)
    ev = event.time_ops([op], A100)
    assert float(ev.time[0]) == pytest.approx(float(an.time[0]), rel=0.03)


def test_event_prefill_grid_follows_the_flash_generation():
    op = ops.attention("a", 4, 256, 256, 32, 8, 128)
    fa2 = attention_kernel(op, A100)  # 4 sequences × 32 heads × 4 blocks of 64 rows
    fa3 = attention_kernel(op, H100)  # 4 sequences × 8 KV heads × ⌈256·4/128⌉ = 8 blocks
    assert fa2.tile_count == 4 * 32 * 4 and fa3.tile_count == 4 * 8 * 8
    assert fa2.occupancy == fa3.occupancy == 1


def test_fa3_splits_a_call_with_a_few_queries_per_sequence_over_the_cache():
    """A block-diffusion step or a verify pass (1 < q_len < kv_len) is split like a decode call under FA3: one
    sequence, 32 queries, 8 KV heads = 8 packed 128-row tiles over 32 key blocks on 132 SMs -> 16 splits; FA2 as
    vLLM calls it splits only a regrouped decode call."""
    fa3 = tiling.attention_plan(1, 32, 4096, 32, 8, 128, sms=132, kernel=FA3)
    assert (float(fa3.tiles), float(fa3.splits), float(fa3.extra)) == (8, 16, 1)
    fa2 = tiling.attention_plan(1, 32, 4096, 32, 8, 128, sms=108, kernel=FA2)
    assert (float(fa2.tiles), float(fa2.splits), float(fa2.extra)) == (32, 1, 0)


def test_split_verify_pass_on_h100_is_near_its_bytes_bound():
    """perfmodel op attention --hardware h100-sxm --batch 1 --q-len 32 --kv-len 4096 --heads 32 --kv-heads 8:
    with the split, within 2x of the time its bytes need at the attainable HBM bandwidth plus the fixed costs
    (launch, the call's overhead, the combine kernel's launch and round trip)."""
    op = ops.attention("a", 1, 32, 4096, 32, 8, 128)
    eff = H100.efficiency
    hbm = H100.memory["hbm"]
    bytes_s = float(op.bytes) / (hbm.bandwidth_bytes_per_s * eff.memory_fraction("hbm"))
    fixed = eff.launch_s + hbm.latency_s + eff.prefill_attention_overhead_s + eff.launch_s + hbm.latency_s
    for engine in (analytic, event):
        t = float(engine.time_ops([op], H100).time[0])
        assert t < 2 * (bytes_s + fixed), engine.__name__


def test_both_engines_read_one_plan_for_gemm_and_attention():
    """The event engine's kernels are the plans of perfmodel/engines/tiling.py: the same tile shape, split-K and
    occupancy for a GEMM, the same CTAs for attention, so alone on the GPU they agree with the analytic engine
    on large regular ops."""
    gemm = ops.gemm("g", 8192, 8192, 8192)
    k = event.kernel_for(gemm, H100)
    sh = gemm.shape
    plan = tiling.gemm_plan(8192, 8192, 8192, a_bytes=sh["a_bytes"], w_bytes=sh["w_bytes"], o_bytes=sh["o_bytes"],
                            sms=132, peak=analytic.tensor_rate(gemm, H100), l2_bw=event.gpu_config(H100)
                            .bandwidth_bytes_per_s["l2"], hbm_bw=event.gpu_config(H100).bandwidth_bytes_per_s["hbm"],
                            hbm_bytes=float(gemm.bytes), latency=H100.memory["hbm"].latency_s,
                            store_latency=H100.memory["l2"].latency_s,
                            reduce_s=H100.efficiency.launch_s + H100.memory["l2"].latency_s,
                            smem_bytes=H100.memory["smem"].capacity_bytes)
    assert k.tile_count == int(plan.tiles) and k.occupancy == int(plan.occupancy) and k.label == plan.label
    assert float(event.time_ops([gemm], H100).time[0]) == pytest.approx(float(analytic.time_ops([gemm], H100).time[0]),
                                                                        rel=0.05)
    attn = ops.attention("a", 4, 1, 8192, 32, 8, 128)
    grid = tiling.attention_plan(4, 1, 8192, 32, 8, 128, sms=132, kernel=FA3)
    assert attention_kernel(attn, H100).tile_count == int(grid.ctas)


def test_mainloop_step_is_128_bytes_of_the_wider_operand():
    # CUTLASS's Hopper/Blackwell tiles take K in 128-byte swizzled steps: 64 bf16 or 128 fp8 elements, so an fp8
    # K loop of the same length keeps the same bytes in flight in half the round trips
    assert tiling.gemm_block_k(2, 2) == 64 and tiling.gemm_block_k(1, 1) == 128 and tiling.gemm_block_k(2, 0.5) == 64
    bf16 = tiling.gemm_pipeline_time(8192, 1e-6, tiling.gemm_block_k(2, 2))
    fp8 = tiling.gemm_pipeline_time(8192, 1e-6, tiling.gemm_block_k(1, 1))
    assert float(bf16) == pytest.approx(2 * float(fp8))
    # the pipeline's shared memory is the same bytes either way: one 128x256 tile per 228 KiB SM
    assert tiling.gemm_occupancy(128, 256, 1, 1, 233472) == tiling.gemm_occupancy(128, 256, 2, 2, 233472) == 1


def test_fp8_gemms_run_the_tile_vllm_dispatches_without_split_k_in_both_engines():
    # vLLM's scaled_mm dispatch on sm_90 (scaled_mm_sm90_fp8_dispatch.cuh): m ≤ 16 a swapped 64x16 tile, (64, 128]
    # 64x128, above 128x128; never split-K. A bf16 GEMM of the same shape still takes the fastest candidate.
    for m, tile in [(8, "16x64"), (100, "64x128"), (4096, "128x128")]:
        op = ops.gemm("g", m, 8192, 8192, "fp8", out_dtype="bf16")
        k = event.kernel_for(op, H100)
        assert k.label == f"{tile} tiles, split-K 1"
        assert float(event.time_ops([op], H100).time[0]) == pytest.approx(
            float(analytic.time_ops([op], H100).time[0]), rel=0.05)
    fastest = event.kernel_for(ops.gemm("g", 8, 8192, 8192), H100).label
    assert fastest != "16x64 tiles, split-K 1"
    # the GB202 graphics SM (sm_120, RTX PRO 6000) has its own table, never swapped
    pro = load_hardware("rtx-pro-6000-server")
    assert event.kernel_for(ops.gemm("g", 24, 8192, 8192, "fp8", out_dtype="bf16"), pro).label == "32x64 tiles, split-K 1"
    # A100 (sm_80) has no fp8 dispatch table: the fastest candidate
    assert tiling.library_dispatch("fp8", "ampere") is None
    # the dispatched tile follows m's bucket, element by element, over a sweep
    m = np.array([1.0, 16, 17, 64, 65, 128, 129, 300])
    tm, tn = tiling.library_dispatch("fp8", "hopper")(m, np.full(8, 4096.0), np.full(8, 4096.0))
    assert tm.tolist() == [16, 16, 64, 64, 64, 64, 128, 128] and tn.tolist() == [64, 64, 64, 64, 128, 128, 128, 128]


def test_fp8_input_quantisation_is_vectorised_as_vllm_launches_it():
    # scaled_fp8_quant_kernel_strided: 256 threads per token, 16 elements per thread per pass
    threads = tiling.row_threads("elementwise", "quant", np.array([512.0, 4096.0, 8192.0, 16384.0]))
    assert threads.tolist() == [256, 256, 256, 256]
    assert tiling.row_passes("elementwise", "quant", np.array([512.0, 4096.0, 8192.0, 16384.0]),
                             threads).tolist() == [1, 1, 2, 4]


def test_a_tile_whose_pipeline_does_not_fit_shared_memory_runs_fewer_stages_or_not_at_all():
    # L40S (Ada): 100 KiB of shared memory per SM. A 128x256 bf16 tile's K-block is 48 KiB: two stages fit, not
    # four, so its K loop keeps half the bytes in flight (twice the round trips); on H100 (228 KiB) all four fit.
    stage = (128 * 2 + 256 * 2) * 64
    assert tiling.gemm_stages(128, 256, 2, 2, 102400) == 2 and 2 * stage <= 102400 < 3 * stage
    assert tiling.gemm_stages(128, 256, 2, 2, 233472) == 4
    assert tiling.gemm_stages(256, 256, 2, 2, 65536) == 0  # not even double buffering fits: no such kernel
    kw = dict(a_bytes=2, w_bytes=2, o_bytes=2, sms=142, peak=3e14, l2_bw=5e12, hbm_bw=8e11, hbm_bytes=1e6,
              latency=2.5e-7)
    pinned = dict(shapes=((128, 256),), splits=(1,))
    small, large = (tiling.gemm_plan(256, 256, 8192, smem_bytes=smem, **pinned, **kw) for smem in (102400, 233472))
    assert float(small.tile_floor_s) == pytest.approx(2 * float(large.tile_floor_s))
    # with only tiles that cannot run offered beside one that can, the plan takes the one that can
    plan = tiling.gemm_plan(4096, 4096, 4096, smem_bytes=65536, shapes=((256, 256), (64, 64)), splits=(1,), **kw)
    assert (int(plan.tm), int(plan.tn)) == (64, 64)
