"""The workload builder's op lists (build_passes / pass_ops): what each method's passes contain, the accounting
of caches and sparse attention, and that the grouped spans add up to the exact step-by-step schedule."""
from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest

from perfmodel import ops
from perfmodel.api import predict, predict_op
from perfmodel.specs.hardware import load_hardware
from perfmodel.specs.model import load_model
from perfmodel.specs.scenario import load_scenario
from perfmodel.workload import from_specs
from perfmodel.workload.layers import pass_ops
from perfmodel.workload.passes import build_passes


def built(model, scenario, overrides=None, exact=False):
    s, p = from_specs(load_model(model), load_scenario(scenario, overrides or {}))
    passes = build_passes(s, p, exact=exact)
    return s, p, passes, [(ps, pass_ops(s, p, ps)) for ps in passes]


def op_named(pass_list, name, phase=None):
    for ps, op_list in pass_list:
        if phase is None or ps.phase == phase:
            for op in op_list:
                if op.name == name:
                    return op
    raise AssertionError(f"no op {name!r} in phase {phase!r}")


def totals(pass_list):
    """Per op name: Σ count·flops and Σ count·bytes over every pass."""
    out = defaultdict(lambda: np.zeros(2))
    for _, op_list in pass_list:
        for op in op_list:
            out[op.name] += float(op.count) * np.array([float(op.flops), float(op.bytes)])
    return dict(out)


# ---------------------------------------------------------------------------------------------------------------
# Sparse attention
def test_centroids_are_read_once_per_sequence():
    one = ops.centroid_lookup("c", 1, 1, 32, 8, 100, 128, "bf16")
    four = ops.centroid_lookup("c", 4, 1, 32, 8, 100, 128, "bf16")
    q_bytes = 32 * 128 * 2
    centroid_bytes = 100 * 8 * 128 * 2
    assert one.read_bytes == q_bytes + centroid_bytes
    assert four.read_bytes == 4 * (q_bytes + centroid_bytes)  # each sequence clusters its own keys
    shared = ops.centroid_lookup("c", 4, 1, 32, 8, 100, 128, "bf16", shared=True)
    assert shared.read_bytes == 4 * q_bytes + centroid_bytes
    _, _, _, passes = built("llama-3.1-8b", "squeezed-attention", {"batch": 4, "gen_len": 8})
    lookup = op_named(passes, "layer.centroid_lookup", "decode")
    clusters = np.ceil(0.05 * 4096)  # made once over the prompt
    assert float(lookup.read_bytes) == pytest.approx(4 * (q_bytes + clusters * centroid_bytes / 100))


def test_sparse_attention_over_an_int4_cache_reads_codes_scales_and_dequantises():
    over = {"kv_cache.format": "int4", "gen_len": 8}
    _, p, _, passes = built("llama-3.1-8b", "squeezed-attention", over, exact=True)
    _, _, _, plain = built("llama-3.1-8b", "squeezed-attention", {"gen_len": 8}, exact=True)
    attn = op_named(passes, "layer.attention", "decode")
    fp16 = op_named(plain, "layer.attention", "decode")
    selected = float(attn.shape["kv_len"])
    assert selected == float(fp16.shape["kv_len"])
    index_bytes = 4.0 * 8 * selected
    assert float(attn.shape["kv_bits"]) < 6 < 16 == float(fp16.shape["kv_bits"])
    assert float(attn.read_bytes) < 0.4 * float(fp16.read_bytes)
    assert float(attn.vector_flops) > 0 and float(fp16.vector_flops) == 0
    # First decode step: 4096 cached tokens, ⌊(4096 − 128)/128⌋·128 = 3968 of them quantised; the selected
    # tokens are quantised in that proportion and carry 2·kv_dim / group_size groups of 4 bytes each.
    scales = float(attn.read_bytes) - 2 * 8 * selected * 128 * float(attn.shape["kv_bits"]) / 8 - index_bytes \
        - 32 * 128 * 2
    assert float(attn.shape["kv_bits"]) == pytest.approx((3968 * 4 + 129 * 16) / 4097)
    assert scales == pytest.approx(selected * 3968 / 4097 * 2 * 1024 / 128 * 4)


@pytest.mark.parametrize("method", ["dlm", "block-dlm", "fast-dllm-prefix", "fast-dllm-dual"])
def test_sparse_attention_with_a_diffusion_method_is_a_clear_error(method):
    with pytest.raises(ValueError, match=r"attention.kind 'squeezed' with method 'arm'.*not '" + method):
        load_scenario(method, {"attention.kind": "squeezed"})


def test_sparse_attention_over_an_xquant_cache_is_a_clear_error():
    with pytest.raises(ValueError, match=r"attention.kind 'multipole' with kv_cache.format 'xquant'"):
        load_scenario("xquant", {"attention.kind": "multipole"})


def test_arm_prefill_stays_dense_and_decode_is_sparse():
    _, _, _, passes = built("llama-3.1-8b", "multipole-attention", {"gen_len": 8})
    prefill = [op.name for ps, o in passes if ps.phase == "prefill" for op in o]
    decode = [op.name for ps, o in passes if ps.phase == "decode" for op in o]
    assert "layer.centroid_lookup" not in prefill and "layer.centroid_attention" not in prefill
    for name in ("layer.cluster_update", "layer.centroid_lookup", "layer.topk", "layer.attention",
                 "layer.centroid_attention"):
        assert name in decode


def test_sparse_cache_memory_counts_prompt_clusters_and_labels():
    base = predict("h100-sxm", "llama-3.1-8b", "arm", {"prompt_len": 4096, "gen_len": 256})
    sq = predict("h100-sxm", "llama-3.1-8b", "squeezed-attention", {"gen_len": 256})
    extra = sq["memory"]["cache_bytes"] - base["memory"]["cache_bytes"]
    per_layer = np.ceil(0.05 * 4096) * 8 * 128 * 2 + (4096 + 256) * 8 * 4
    assert extra == pytest.approx(32 * per_layer)


# ---------------------------------------------------------------------------------------------------------------
# DLM semi-autoregressive
def test_semi_autoregressive_runs_the_whole_sequence_every_step_as_llada_generate_does():
    over = {"semi_autoregressive": True, "steps": 64, "block_size": 32, "prompt_len": 512, "gen_len": 256}
    _, _, passes, _ = built("llada-8b", "dlm", over)
    assert len(passes) == 1 and passes[0].tokens == 768 and passes[0].logits == 768 and passes[0].count == 64
    vanilla = predict("h100-sxm", "llada-8b", "dlm", {k: v for k, v in over.items() if k != "semi_autoregressive"})
    assert predict("h100-sxm", "llada-8b", "dlm", over)["latency_s"] == pytest.approx(vanilla["latency_s"])


def test_truncated_semi_autoregressive_is_its_own_cheaper_variant():
    over = {"semi_autoregressive": True, "truncate_suffix": True, "steps": 64, "block_size": 32,
            "prompt_len": 512, "gen_len": 256}
    _, _, passes, _ = built("llada-8b", "dlm", over, exact=True)
    assert [int(ps.tokens) for ps in passes] == [512 + 32 * (j + 1) for j in range(8)]
    assert all(ps.count == 8 for ps in passes)
    full = predict("h100-sxm", "llada-8b", "dlm", {**over, "truncate_suffix": False})
    assert predict("h100-sxm", "llada-8b", "dlm", over)["latency_s"] < full["latency_s"]
    with pytest.raises(ValueError, match="truncate_suffix true with method 'dlm' and semi_autoregressive False"):
        load_scenario("dlm", {"truncate_suffix": True})


# ---------------------------------------------------------------------------------------------------------------
# XQuant fused and unfused
@pytest.mark.parametrize("model", ["llama-3.1-8b", "llada-8b"])
def test_xquant_unfused_writes_k_and_v_and_reads_them_back(model):
    fused = built(model, "xquant", {"gen_len": 8})[3]
    unfused = built(model, "xquant", {"gen_len": 8, "kv_cache.remat": "unfused"})[3]
    f_remat = op_named(fused, "layer.xquant_remat", "decode")
    u_remat = op_named(unfused, "layer.xquant_remat", "decode")
    assert f_remat.write_bytes == 0 and u_remat.write_bytes > 0
    assert f_remat.flops == u_remat.flops
    f_attn, u_attn = op_named(fused, "layer.attention", "decode"), op_named(unfused, "layer.attention", "decode")
    ctx = float(u_attn.shape["kv_len"])
    kv_read = 2 * ctx * float(u_attn.shape["kv_heads"]) * 128 * 2
    assert float(u_attn.read_bytes) - float(f_attn.read_bytes) == pytest.approx(kv_read * (ctx - 1) / ctx)
    with pytest.raises(AssertionError):
        op_named(fused, "layer.kv_append", "decode")
    assert float(op_named(unfused, "layer.kv_append", "decode").shape["tokens"]) == 1
    fast = predict("h100-sxm", model, "xquant", {"prompt_len": 8192})
    slow = predict("h100-sxm", model, "xquant", {"prompt_len": 8192, "kv_cache.remat": "unfused"})
    assert slow["hbm_bytes"] > fast["hbm_bytes"]


def test_xquant_svd_caches_latents_made_by_a_gemm():
    _, _, _, passes = built("llama-3.1-8b", "xquant", {"gen_len": 8})
    latent = op_named(passes, "layer.xquant_latent", "decode")
    assert (float(latent.shape["m"]), float(latent.shape["n"]), float(latent.shape["k"])) == (1, 2048, 4096)
    assert float(op_named(passes, "layer.x_quantize", "decode").shape["width"]) == 2048


def test_xquant_cl_keeps_a_reconstruction_layer_0_writes_and_later_layers_update():
    _, p, _, passes = built("llama-3.1-8b", "xquant-cl", {"gen_len": 8}, exact=True)
    start = op_named(passes, "layer.xcl_start", "decode")
    acc = op_named(passes, "layer.xcl_accumulate", "decode")
    delta = op_named(passes, "layer.xcl_delta", "decode")
    assert (start.count, acc.count, delta.count) == (1, 31, 31)
    assert float(start.shape["tokens"]) == float(acc.shape["tokens"]) == 512 + 1  # every cached token + the new one
    assert float(op_named(passes, "layer.x_quantize", "decode").count) == 32


# ---------------------------------------------------------------------------------------------------------------
# Dtypes, caches, logits
def test_activation_bytes_follow_the_compute_dtype():
    _, _, _, passes = built("llama-3.1-8b", "arm", {"compute_dtype": "fp32", "gen_len": 8})
    append = op_named(passes, "layer.kv_append", "decode")
    assert append.read_bytes == 2 * 1024 * 4       # one token's K and V in fp32
    assert append.write_bytes == 2 * 1024 * 2      # stored in the fp16 cache
    _, _, _, cl = built("llama-3.1-8b", "xquant-cl", {"compute_dtype": "fp32", "gen_len": 8})
    acc = op_named(cl, "layer.xcl_accumulate", "decode")
    n = float(acc.shape["tokens"]) * 4096
    assert float(acc.read_bytes) == pytest.approx(n * 4 + n * (3 / 8 + 4 / 128))
    assert float(acc.write_bytes) == pytest.approx(n * 4)


def test_kivi_window_and_groups_are_exact_step_by_step():
    over = {"prompt_len": 300, "gen_len": 40, "kv_cache.residual_window": 32, "kv_cache.group_size": 64}
    _, _, _, passes = built("llama-3.1-8b", "kv-int4", over, exact=True)
    quantised = [float(o.shape["tokens"]) for ps, op_list in passes for o in op_list if o.name == "layer.kv_quantize"]
    # Prefill commits 300 tokens: ⌊(300 − 32)/64⌋·64 = 256 quantised; the window then holds 44..95 tokens and a
    # group of 64 leaves it when it would reach 32 + 64 (at 352 committed tokens: the 52nd decode step).
    assert quantised[0] == 256 and sum(quantised[1:]) == 0  # 300 + 39 < 352
    _, _, _, longer = built("llama-3.1-8b", "kv-int4", {**over, "gen_len": 60}, exact=True)
    q = [float(o.shape["tokens"]) for ps, op_list in longer for o in op_list if o.name == "layer.kv_quantize"]
    assert q[0] == 256 and q[52] == 64 and sum(q) == 320
    attn = [(float(o.shape["kv_len"]), float(o.shape["kv_bits"])) for ps, op_list in longer for o in op_list
            if o.name == "layer.attention"]
    ctx, bits = attn[53]  # the step after the group left: 320 quantised of 353 keys
    assert ctx == 353 and bits == pytest.approx((320 * 4 + 33 * 16) / 353)


def test_grouped_int4_quantisation_adds_up_to_the_exact_schedule():
    over = {"prompt_len": 300, "gen_len": 700}
    exact = totals(built("llama-3.1-8b", "kv-int4", over, exact=True)[3])
    grouped = totals(built("llama-3.1-8b", "kv-int4", over)[3])
    np.testing.assert_allclose(grouped["layer.kv_quantize"], exact["layer.kv_quantize"], rtol=1e-12)


def test_passes_without_logits_run_no_lm_head():
    _, _, _, passes = built("llada-8b", "block-dlm", {"gen_len": 64})
    for ps, op_list in passes:
        names = {o.name for o in op_list}
        assert ("lm_head" in names) == (ps.phase == "denoise")


def test_dlm_has_no_cache_to_write():
    _, _, _, passes = built("llada-8b", "dlm", {"gen_len": 32, "steps": 8})
    assert "layer.kv_append" not in {o.name for _, op_list in passes for o in op_list}


@pytest.mark.parametrize("model,scenario", [("llama-3.1-8b", "arm"), ("llada-8b", "block-dlm"),
                                            ("llada-8b", "fast-dllm-prefix"), ("llada-8b", "fast-dllm-dual"),
                                            ("llama-3.1-8b", "xquant"), ("llama-3.1-8b", "squeezed-attention"),
                                            ("llada-8b", "dlm")])
def test_grouped_spans_add_up_to_the_exact_schedule(model, scenario):
    # Every cost linear in the context (attention over a growing cache, cache writes) sums exactly over a
    # span evaluated at its mean; the exact schedule lists each step on its own.
    over = {"prompt_len": 200, "gen_len": 96, "steps": 24, "block_size": 16}
    exact = totals(built(model, scenario, over, exact=True)[3])
    grouped = totals(built(model, scenario, over)[3])
    assert set(exact) == set(grouped)
    for name in exact:
        if scenario == "squeezed-attention" and name in ("layer.topk", "layer.attention"):
            # ⌈token_budget·context⌉ selected keys and n·log2(k + 1) selection FLOPs: not linear in the context.
            np.testing.assert_allclose(grouped[name], exact[name], rtol=1e-2, err_msg=name)
            continue
        np.testing.assert_allclose(grouped[name], exact[name], rtol=1e-12, err_msg=name)


def test_exact_passes_need_scalar_steps():
    s, p = from_specs(load_model("llama-3.1-8b"), load_scenario("arm"))
    with pytest.raises(ValueError, match="exact passes need a whole, scalar number of steps"):
        build_passes(s, p.replace(gen_len=np.array([8, 16])), exact=True)


# ---------------------------------------------------------------------------------------------------------------
# Attention with 1 < q_len < kv_len (engine)
def test_block_query_attention_over_a_long_cache_is_split_over_the_kv():
    hw = load_hardware("h100-sxm")
    op = ops.attention("attention", 1, 32, 4096, 32, 8, 128, mask="causal", dtype="bf16")
    r = predict_op(op, hw)
    eff = hw.efficiency
    bytes_bound = op.bytes / (hw.memory["hbm"].bandwidth_bytes_per_s * eff.memory_fraction("hbm"))
    launches = 2 * eff.launch_s + eff.prefill_attention_overhead_s  # the attention kernel and a combine kernel
    assert r["time_s"] <= 2 * (bytes_bound + launches)
