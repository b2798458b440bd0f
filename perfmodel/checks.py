"""Closed forms and published qualitative findings that a correct model must reproduce.

Each check returns a :class:`Check` (what was expected, what the model gives, pass or fail); the test-suite
asserts them and ``benchmarks/closed_forms.py`` prints them. They are the model's sanity contract: if a change
breaks one, the change is wrong or the check's physics must be argued anew.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from perfmodel.api import predict
from perfmodel.specs.model import load_model
from perfmodel.specs.scenario import load_scenario
from perfmodel.workload import build_workload
from perfmodel.workload.layers import cache_bytes_per_token_layer
from perfmodel.workload.params import from_specs


@dataclass(frozen=True)
class Check:
    name: str
    expected: str
    got: float
    ok: bool


def _within(got: float, want: float, rel: float) -> bool:
    return abs(got / want - 1) <= rel


def _gemm_ai(pred, name: str, phase: str) -> float:
    t = pred.op_table()
    row = t[(t.name == name) & (t.phase == phase)].iloc[0]
    return float(row.arithmetic_intensity)


def arm_linear_intensity(hardware: str = "h100-sxm") -> list[Check]:
    """ARM decode: every linear layer reads its weights once per step for b tokens: intensity ≈ batch."""
    out = []
    for b in (1, 8, 64):
        p = predict(hardware, "llama-3.1-8b", "arm", {"batch": b})
        ai = _gemm_ai(p, "layer.gate_up_proj", "decode")
        out.append(Check(f"arm decode gate_up intensity, batch {b}", f"≈ {b} (±10%)", ai, _within(ai, b, 0.10)))
    return out


def arm_attention_intensity(hardware: str = "h100-sxm") -> list[Check]:
    """ARM decode attention reads the whole cache once: intensity ≈ heads / kv_heads, independent of batch."""
    out = []
    for model in ("llama-3.1-8b", "llada-8b", "qwen2.5-7b"):
        m = load_model(model)
        want = m.num_attention_heads / m.num_key_value_heads
        for b in (1, 32):
            p = predict(hardware, model, "arm", {"batch": b, "prompt_len": 4096})
            ai = _gemm_ai(p, "layer.attention", "decode")
            out.append(Check(f"{model} decode attention intensity, batch {b}", f"≈ {want:g} (±10%)", ai,
                             _within(ai, want, 0.10)))
    return out


def dlm_intensity_grows_with_length(hardware: str = "h100-sxm") -> list[Check]:
    """Vanilla DLM: each step is a full pass over the sequence: intensity ∝ sequence length."""
    a = predict(hardware, "llada-8b", "dlm", {"prompt_len": 64, "gen_len": 64, "steps": 8})
    b = predict(hardware, "llada-8b", "dlm", {"prompt_len": 128, "gen_len": 128, "steps": 8})
    ratio = b["arithmetic_intensity"] / a["arithmetic_intensity"]
    return [Check("dlm step intensity, sequence 256 / 128", "≈ 2 (±10%)", ratio, _within(ratio, 2.0, 0.10))]


def block_dlm_intensity(hardware: str = "h100-sxm") -> list[Check]:
    """Cached block-wise step: linear layers see block_size × batch tokens: intensity ≈ B·b."""
    out = []
    for bs, b in ((8, 1), (32, 1), (32, 4)):
        p = predict(hardware, "llada-8b", "block-dlm", {"block_size": bs, "batch": b})
        ai = _gemm_ai(p, "layer.gate_up_proj", "denoise")
        out.append(Check(f"block-dlm gate_up intensity, block {bs} batch {b}", f"≈ {bs * b} (±10%)", ai,
                         _within(ai, bs * b, 0.10)))
    return out


def dlm_latency_proportional_to_steps(hardware: str = "h100-sxm") -> list[Check]:
    a = predict(hardware, "llada-8b", "dlm", {"steps": 64})["latency_s"]
    b = predict(hardware, "llada-8b", "dlm", {"steps": 128})["latency_s"]
    return [Check("dlm latency, 128 steps / 64 steps", "= 2 (±1%)", b / a, _within(b / a, 2.0, 0.01))]


def xquant_cache_sizes() -> list[Check]:
    """XQuant caches X (hidden wide) instead of K and V: half an MHA cache at equal bits; 4-bit with group-128
    scales against an fp16 KV cache: 16 / (4 + 32/128) / ... = 7.5× (fp16 scale and zero per group)."""
    m = load_model("llada-8b")  # MHA
    def per_token(overrides):
        s, p = from_specs(m, load_scenario("arm", overrides))
        return float(cache_bytes_per_token_layer(s, p))
    fp16 = per_token({})
    int4 = per_token({"kv_cache.format": "int4"})
    xq4 = per_token({"kv_cache.format": "xquant", "kv_cache.bits": 4})
    return [
        Check("MHA: int4 KV / 4-bit XQuant cache (equal bits)", "= 2", int4 / xq4, _within(int4 / xq4, 2.0, 0.01)),
        Check("MHA: fp16 KV / 4-bit XQuant (group 128)", "7.5–8", fp16 / xq4, 7.5 <= fp16 / xq4 <= 8.0),
    ]


def paper_findings(hardware: str = "rtx-a6000") -> list[Check]:
    """Qualitative findings of the ARM-vs-DLM performance study, on an A6000-class GPU (LLaMA-8B vs LLaDA-8B)."""
    out = []
    arm1 = predict(hardware, "llama-3.1-8b", "arm", {"batch": 1})
    dlm1 = predict(hardware, "llada-8b", "dlm", {"batch": 1})
    ratio = dlm1["arithmetic_intensity"] / arm1["arithmetic_intensity"]
    out.append(Check("DLM / ARM intensity at batch 1", "≫ 1 (> 50)", ratio, ratio > 50))

    def per_token(model, scen, ctx, **kw):
        return predict(hardware, model, scen, {"prompt_len": ctx, "gen_len": 256, **kw})["latency_s"] / 256
    growth = {}
    for scen, model in (("arm", "llama-3.1-8b"), ("dlm", "llada-8b"), ("block-dlm", "llada-8b")):
        growth[scen] = per_token(model, scen, 4096) / per_token(model, scen, 512)
    out.append(Check("per-token latency growth 512→4096 context: DLM / ARM", "> 3", growth["dlm"] / growth["arm"],
                     growth["dlm"] / growth["arm"] > 3))
    out.append(Check("block-dlm context growth close to ARM's (ratio)", "< 1.5", growth["block-dlm"] / growth["arm"],
                     growth["block-dlm"] / growth["arm"] < 1.5))
    blk = predict(hardware, "llada-8b", "block-dlm", {"block_size": 32})
    ai = _gemm_ai(blk, "layer.gate_up_proj", "denoise")
    out.append(Check("block-dlm linear intensity ≈ block size (32)", "≈ 32 (±10%)", ai, _within(ai, 32, 0.10)))

    def gain(model, scen):
        return (predict(hardware, model, scen, {"batch": 32})["tokens_per_s"]
                / predict(hardware, model, scen, {"batch": 1})["tokens_per_s"])
    g_arm, g_dlm = gain("llama-3.1-8b", "arm"), gain("llada-8b", "dlm")
    out.append(Check("throughput gain batch 1→32: ARM / DLM", "> 5", g_arm / g_dlm, g_arm / g_dlm > 5))
    arm_lat = arm1["latency_s"]
    full = dlm1["latency_s"]
    few = predict(hardware, "llada-8b", "dlm", {"steps": 16})["latency_s"]
    out.append(Check("DLM (256 steps) / ARM latency", "> 1", full / arm_lat, full / arm_lat > 1))
    out.append(Check("DLM (16 steps) / ARM latency", "< 1", few / arm_lat, few / arm_lat < 1))
    return out


ALL: dict[str, Callable[..., list[Check]]] = {
    "arm_linear_intensity": arm_linear_intensity,
    "arm_attention_intensity": arm_attention_intensity,
    "dlm_intensity_grows_with_length": dlm_intensity_grows_with_length,
    "block_dlm_intensity": block_dlm_intensity,
    "dlm_latency_proportional_to_steps": dlm_latency_proportional_to_steps,
    "xquant_cache_sizes": xquant_cache_sizes,
    "paper_findings": paper_findings,
}


def run_all() -> list[Check]:
    return [c for fn in ALL.values() for c in fn()]
