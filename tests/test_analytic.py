"""The analytic engine and the workload builder: closed forms, physical sanity, and the CLI's predict JSON."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from perfmodel import checks, ops
from perfmodel.api import predict, predict_op
from perfmodel.cli.main import main
from perfmodel.engines.analytic import cache_levels, time_ops
from perfmodel.specs.hardware import load_hardware

H100 = load_hardware("h100-sxm")


@pytest.mark.parametrize("name", [n for n in checks.ALL if n != "paper_findings"])
def test_closed_forms(name):
    for c in checks.ALL[name]():
        assert c.ok, f"{c.name}: expected {c.expected}, got {c.got}"


def test_paper_findings_on_an_a6000_like_spec():
    from perfmodel.specs.hardware import hardware_names

    hw = "rtx-a6000" if "rtx-a6000" in hardware_names() else "h100-sxm"
    for c in checks.paper_findings(hw):
        assert c.ok, f"{c.name}: expected {c.expected}, got {c.got}"


def test_gemm_formula_by_hand():
    op = ops.gemm("g", 64, 128, 256, "bf16")
    assert op.flops == 2 * 64 * 128 * 256
    assert op.read_bytes == 64 * 256 * 2 + 256 * 128 * 2
    assert op.write_bytes == 64 * 128 * 2


def test_attention_pairs_by_hand():
    # 4 queries at the end of an 10-key causal sequence see 7, 8, 9, 10 keys.
    assert ops.attention_pairs(4, 10, "causal") == 7 + 8 + 9 + 10
    assert ops.attention_pairs(4, 10, "bidirectional") == 40
    # Block-causal prefill of 8 tokens in blocks of 4: block 0 sees 4 keys, block 1 sees 8, 4 queries each.
    assert ops.attention_pairs(8, 8, "block_causal", 4) == 4 * 4 + 4 * 8


@pytest.mark.parametrize("q, L, B", [(97, 97, 16), (32, 1025, 32), (96, 96, 32), (64, 200, 16), (5, 9, 4), (1, 7, 3)])
def test_block_causal_pairs_match_an_explicit_mask(q, L, B):
    # Queries are the last q of L positions; blocks are counted from the first query.
    qi = np.arange(q)[:, None]
    kj = np.arange(L)[None, :] - (L - q)
    allowed = (kj < 0) | ((kj // B) <= (qi // B))
    assert ops.attention_pairs(q, L, "block_causal", B) == allowed.sum()


def test_attention_bytes_by_hand():
    op = ops.attention("a", batch=2, q_len=1, kv_len=100, heads=8, kv_heads=2, head_dim=64, kv_bits=16)
    kv = 2 * 2 * 100 * 2 * 64 * 2
    q = o = 2 * 1 * 8 * 64 * 2
    assert op.read_bytes == kv + q and op.write_bytes == o
    assert op.flops == 4 * 2 * 8 * 100 * 64


def _roofline_bounds(op, hw):
    eff = hw.efficiency
    peak = hw.compute.peak_flops(op.dtype, op.unit) * (eff.tensor if op.unit == "tensor" else eff.vector)
    bounds = [op.flops / peak]
    levels = cache_levels(hw)
    bounds.append(op.bytes / levels[-1].bandwidth)  # reuse_bytes is infinite: main memory serves the op
    bounds.append(op.l2_bytes / levels[0].bandwidth)
    return bounds


gemm_dims = st.integers(1, 16384)


@settings(max_examples=200, deadline=None)
@given(m=gemm_dims, n=gemm_dims, k=gemm_dims, dtype=st.sampled_from(["bf16", "fp16", "fp8", "fp32"]))
def test_time_is_at_least_every_roofline_bound(m, n, k, dtype):
    op = ops.gemm("g", m, n, k, dtype)
    t = float(time_ops([op], H100).time[0])
    for bound in _roofline_bounds(op, H100):
        assert t >= bound * (1 - 1e-12)
    assert t >= H100.efficiency.launch_s


@settings(max_examples=200, deadline=None)
@given(m=gemm_dims, n=gemm_dims, k=gemm_dims, extra=st.floats(0, 1e10), extra_flops=st.floats(0, 1e13))
def test_more_bytes_or_flops_never_make_an_op_faster(m, n, k, extra, extra_flops):
    base = ops.gemm("g", m, n, k)
    heavier = ops.Op("g", "gemm", "", base.shape, base.dtype, base.flops + extra_flops, base.read_bytes + extra,
                     base.write_bytes, base.l2_bytes + extra)
    t0, t1 = time_ops([base, heavier], H100).time
    assert t1 >= t0


@settings(max_examples=100, deadline=None)
@given(b=st.integers(1, 64), q=st.integers(1, 4096), extra=st.integers(0, 8192),
       g=st.sampled_from([1, 4, 8]), d=st.sampled_from([64, 128]))
def test_attention_time_monotone_in_context(b, q, extra, g, d):
    a = ops.attention("a", b, q, q, 8 * g, 8, d, mask="causal")
    bigger = ops.attention("a", b, q, q + extra, 8 * g, 8, d, mask="causal")
    t0, t1 = time_ops([a, bigger], H100).time
    assert t1 >= t0


def test_cache_resident_op_is_faster_than_streaming_one():
    w = ops.gemm("gemv", 1, 2048, 2048)  # 8 MiB of weights: fits the 50 MB L2
    hot = ops.Op(w.name, w.kind, "", w.shape, w.dtype, w.flops, w.read_bytes, w.write_bytes, w.l2_bytes,
                 reuse_bytes=3 * w.bytes)
    t_cold, t_hot = time_ops([w, hot], H100).time
    assert t_hot < t_cold


def test_arrays_broadcast_like_scalars():
    m = np.array([1, 64, 4096])
    vec = time_ops([ops.gemm("g", m, 4096, 4096)], H100).time[0]
    scal = [float(time_ops([ops.gemm("g", int(x), 4096, 4096)], H100).time[0]) for x in m]
    assert np.allclose(vec, scal, rtol=1e-12)


def test_hbm_bandwidth_what_if_speeds_up_decode():
    base = predict("h100-sxm", "llama-3.1-8b", "arm")
    fast = predict("h100-sxm", "llama-3.1-8b", "arm", {"hardware.memory.hbm.bandwidth_bytes_per_s": 6.7e12})
    def busy(pred, names=None):  # the memory/compute-bound part: time minus fixed launch and latency overheads
        d = pred.ops[pred.ops.phase == "decode"]
        if names is not None:
            d = d[d.name.isin(names)]
        return float(((d.time_s - d.overhead_s) * d["count"]).sum())
    # The big weight streams halve exactly; the down projection's 64-row tensor-core tiles (one real row of 64)
    # then take about as long as its stream, the smaller projections meet their latency-paced K loop (Little's law
    # per CTA) and decode attention its dependent-load chain, which bandwidth does not shorten.
    assert busy(fast, ["layer.gate_up_proj", "lm_head"]) == pytest.approx(
        0.5 * busy(base, ["layer.gate_up_proj", "lm_head"]), rel=1e-6)
    assert 0.5 <= busy(fast, ["layer.down_proj"]) / busy(base, ["layer.down_proj"]) < 0.6
    assert 0.5 < busy(fast) / busy(base) < 0.6
    assert fast["decode_s"] < base["decode_s"]


def test_memory_footprint_and_fit():
    p = predict("h100-sxm", "llama-3.1-70b", "arm")
    mem = p["memory"]
    assert mem["weights_bytes"] == pytest.approx(70.55e9 * 2, rel=0.01)
    assert not mem["fits"]  # 141 GB of bf16 weights on an 80 GB GPU
    kv = predict("h100-sxm", "llama-3.1-8b", "arm", {"batch": 4, "prompt_len": 1000, "gen_len": 24})["memory"]
    assert kv["cache_bytes"] == 4 * 1024 * 131072


def test_every_scenario_predicts_finite_positive(tmp_path):
    from perfmodel.specs.scenario import scenario_names

    for sc in scenario_names():
        model = "llada-8b" if "dlm" in sc or "dllm" in sc else "llama-3.1-8b"
        s = predict("h100-sxm", model, sc).summary
        assert math.isfinite(s["latency_s"]) and s["latency_s"] > 0
        assert s["tokens_per_s"] > 0 and s["steps"] >= 1


def test_quantised_caches_read_fewer_bytes_than_fp16():
    ctx = {"prompt_len": 8192, "batch": 16}
    fp16 = predict("h100-sxm", "llama-3.1-8b", "arm", ctx)
    int4 = predict("h100-sxm", "llama-3.1-8b", "kv-int4", ctx)
    xq = predict("h100-sxm", "llada-8b", "xquant", ctx)
    xq_fp = predict("h100-sxm", "llada-8b", "arm", ctx)
    assert int4["hbm_bytes"] < fp16["hbm_bytes"]
    assert xq["memory"]["cache_bytes"] < xq_fp["memory"]["cache_bytes"] / 3
    assert xq["flops"] > xq_fp["flops"]  # rematerialisation costs FLOPs


def test_sparse_attention_reads_less_than_dense_at_long_context():
    ctx = {"prompt_len": 32768, "gen_len": 64}
    dense = predict("h100-sxm", "llama-3.1-8b", "arm", ctx).op_table()
    sq = predict("h100-sxm", "llama-3.1-8b", "squeezed-attention", ctx).op_table()
    d = dense[(dense.name == "layer.attention") & (dense.phase == "decode")].iloc[0]
    s = sq[(sq.name == "layer.attention") & (sq.phase == "decode")].iloc[0]
    assert s.bytes < 0.2 * d.bytes
    full = predict("h100-sxm", "llama-3.1-8b", "squeezed-attention", {**ctx, "attention.token_budget": 1.0}).op_table()
    f = full[(full.name == "layer.attention") & (full.phase == "decode")].iloc[0]
    assert f.flops == pytest.approx(d.flops, rel=0.01)


def test_predict_json_fields(capsys):
    from perfmodel import schema

    assert main(["predict", "--hardware", "h100-sxm", "--model", "llama-3.1-8b", "--scenario", "arm",
                 "--set", "batch=8", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    for key in ("latency_s", "prefill_s", "decode_s", "tokens_per_s", "steps", "flops", "hbm_bytes",
                "arithmetic_intensity", "bound", "memory_weights_bytes", "memory_cache_bytes",
                "memory_activation_bytes", "memory_total_bytes", "memory_capacity_bytes", "memory_fits", "power_w",
                "energy_per_token_j", "cost_per_million_tokens_usd", "ops"):
        assert key in data
    assert all(schema.lookup(key) is not None for key in data)  # one vocabulary (perfmodel/schema.py)
    assert isinstance(data["steps"], int) and isinstance(data["batch"], int)  # counts are integers
    assert data["cost_per_million_tokens_usd"] is None  # the H100 spec cites no price
    op = data["ops"][0]
    assert list(op) == list(schema.OP_ROW)
    assert data["latency_s"] == pytest.approx(data["prefill_s"] + data["decode_s"])


def test_op_command_json(capsys):
    assert main(["op", "gemm", "--hardware", "h100-sxm", "--m", "4096", "--n", "4096", "--k", "4096", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["flops"] == 2 * 4096**3 and data["bound"] in ("compute", "l2")
    assert main(["op", "attention", "--batch", "1", "--q-len", "1", "--kv-len", "8192", "--heads", "32",
                 "--kv-heads", "8", "--head-dim", "128", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["bound"] == "hbm" and data["time_s"] > 0


def test_bad_set_key_is_a_clear_error(capsys):
    assert main(["predict", "--set", "kv_cache.bitz=4"]) == 2
    assert "kv_cache.bitz" in capsys.readouterr().err
    assert main(["predict", "--set", "batch"]) == 2


def test_compare_table(capsys):
    assert main(["compare", "--scenario", "arm", "dlm", "--batch", "1", "8", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 4 and {r["scenario"] for r in rows} == {"arm", "dlm"}


def test_predict_op_matches_gemm_formula():
    r = predict_op(ops.gemm("g", 8192, 8192, 8192), "h100-sxm")
    assert r["bound"] in ("compute", "l2")
    assert r["time_s"] >= r["flops"] / 989.4e12


def test_predict_writes_a_chrome_trace(tmp_path, capsys):
    path = tmp_path / "trace.json"
    assert main(["predict", "--scenario", "block-dlm", "--model", "llada-8b", "--trace", str(path), "--json"]) == 0
    events = json.loads(path.read_text())["traceEvents"]
    kernels = [e for e in events if e["ph"] == "X" and e["pid"] == 0 and not e["name"].startswith("launch")]
    assert {"layer.qkv_proj", "layer.attention", "lm_head"} <= {e["name"] for e in kernels}
    assert all(e["dur"] > 0 and e["ts"] >= 0 for e in kernels)


