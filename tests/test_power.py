"""Energy per token and cost per million tokens (perfmodel/power.py) in predict, compare, plan and the report."""
from __future__ import annotations

import json

import pytest

from perfmodel import power
from perfmodel.api import predict
from perfmodel.cli.main import main
from perfmodel.specs.hardware import load_hardware

H100 = load_hardware("h100-sxm")
H200 = load_hardware("h200-sxm")


def test_power_lies_between_idle_and_tdp():
    idle = power.idle_power_w(H100)
    assert idle == pytest.approx(0.1 * H100.power.tdp_w)
    assert power.economics(H100, flops=0, main_bytes=0, latency_s=1.0, tokens_per_s=1.0)["power_w"] == idle
    busy = power.economics(H100, flops=1e20, main_bytes=1e20, latency_s=1.0, tokens_per_s=1.0)
    assert busy["power_w"] == pytest.approx(H100.power.tdp_w)  # the TDP caps it


def test_memory_bound_decode_draws_less_than_compute_bound_diffusion():
    decode = predict("h100-sxm", "llama-3.1-8b", "arm")
    diffusion = predict("h100-sxm", "llada-8b", "dlm")
    assert power.idle_power_w(H100) < decode["power_w"] < diffusion["power_w"] <= H100.power.tdp_w
    # the measured range the memory share is taken from: decode draws 137-300 W on a 700 W H200
    assert predict("h200-sxm", "llama-3.1-8b", "arm", {"batch": 8})["power_w"] < 320


def test_energy_and_cost_follow_their_formulas():
    p = predict("h200-sxm", "llama-3.1-8b", "arm", {"batch": 8, "tensor_parallel": 2})
    assert p["energy_per_token_j"] == pytest.approx(p["power_w"] * 2 / p["tokens_per_s"])
    assert p["price_per_hour_usd"] == pytest.approx(H200.price_per_hour_usd * 2)
    assert p["cost_per_million_tokens_usd"] == pytest.approx(H200.price_per_hour_usd * 2 / 3600
                                                              / p["tokens_per_s"] * 1e6)


def test_a_device_without_a_price_reports_no_cost(capsys):
    assert main(["predict", "--hardware", "h100-sxm", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["price_per_hour_usd"] is None and data["cost_per_million_tokens_usd"] is None
    assert data["energy_per_token_j"] > 0


def test_idle_power_is_a_spec_field_below_the_tdp():
    hw = load_hardware("h100-sxm", {"power.idle_w": 70})
    assert power.idle_power_w(hw) == 70
    with pytest.raises(ValueError, match="idle_w"):
        load_hardware("h100-sxm", {"power.idle_w": 900})


def test_plan_ranks_by_cost_or_energy(capsys):
    argv = ["plan", "--hardware", "h100-sxm", "h200-sxm", "b200-sxm", "--tpot-ms", "40", "--tp", "1",
            "--batch", "1", "8", "64", "--cache", "fp16", "--json"]
    assert main([*argv, "--rank-by", "energy"]) == 0
    by_energy = json.loads(capsys.readouterr().out)["plans"]
    energies = [p["best"]["energy_per_token_j"] for p in by_energy if p["best"]]
    assert energies == sorted(energies)
    assert main([*argv, "--rank-by", "cost"]) == 0
    by_cost = json.loads(capsys.readouterr().out)["plans"]
    assert by_cost[-1]["hardware"] == "h100-sxm"  # no price: ranked after the priced devices
    priced = [p["best"]["cost_per_million_tokens_usd"] for p in by_cost if p["best"] and p["hardware"] != "h100-sxm"]
    assert priced == sorted(priced) and all(c > 0 for c in priced)
    for p in by_cost:  # each device's best option is its cheapest per token among those meeting the target
        ok = [o["cost_per_million_tokens_usd"] for o in p["options"] if o["ok"] and o["cost_per_million_tokens_usd"]]
        if ok:
            assert p["best"]["cost_per_million_tokens_usd"] == min(ok)


# -- a dtype's own tensor fraction and energy per FLOP (fp8 scaled_mm) -------------------------------------------
def _fp8_gemm_time(overrides, m=8192):
    from perfmodel import ops
    from perfmodel.engines import analytic, event

    hw = load_hardware("h100-sxm", overrides)
    op = ops.gemm("g", m, 8192, 8192, "fp8")
    return float(analytic.time_ops([op], hw).time[0]), float(event.time_ops([op], hw).time[0])


def test_an_fp8_gemm_runs_at_its_own_fraction_of_the_fp8_peak():
    # no power limit: a compute-bound fp8 GEMM's time follows the fp8 fraction, not the bf16 one
    off = {"efficiency.energy_per_flop_j": None}
    slow, _ = _fp8_gemm_time({**off, "efficiency.tensor_dtype": {"fp8": 0.4}})
    fast, fast_event = _fp8_gemm_time({**off, "efficiency.tensor_dtype": {"fp8": 0.8}})
    assert 1.8 < slow / fast <= 2.0
    assert fast_event == pytest.approx(fast, rel=0.05)
    assert H100.efficiency.tensor_fraction("bf16") == H100.efficiency.tensor


def test_cheaper_fp8_flops_are_slowed_less_by_the_power_limiter():
    # the same long fp8 GEMM with fp8 FLOPs at the bf16 energy and at half of it: the limiter stretches the first
    bf16_energy = H100.efficiency.energy_per_flop_j
    same, same_event = _fp8_gemm_time({"efficiency.energy_per_flop_dtype": {"fp8": bf16_energy}})
    half, half_event = _fp8_gemm_time({"efficiency.energy_per_flop_dtype": {"fp8": bf16_energy / 2}})
    assert same > 1.2 * half
    assert same_event == pytest.approx(same, rel=0.05) and half_event == pytest.approx(half, rel=0.05)


def test_siblings_take_the_fp8_terms_and_other_devices_only_the_fraction():
    h100, h200, pro = (load_hardware(n) for n in ("h100-sxm", "h200-sxm", "rtx-pro-6000-server"))
    assert h200.efficiency.tensor_dtype["fp8"] == pytest.approx(
        h100.efficiency.tensor_dtype["fp8"] * h200.efficiency.tensor / h100.efficiency.tensor)
    assert h200.efficiency.energy_per_flop_dtype == pytest.approx(h100.efficiency.energy_per_flop_dtype, rel=1e-12)
    assert "fp8" in pro.efficiency.tensor_dtype and not pro.efficiency.energy_per_flop_dtype


def test_the_power_limiter_lowers_the_clock_by_the_cube_root_of_the_excess():
    """Power goes as the cube of the clock (f·V², the voltage following the clock): a kernel long against the
    limiter's window asking 8x the TDP runs at half its clock, twice as long; a short one barely slows; one under
    the TDP not at all."""
    from perfmodel.engines.throttle import power_stretch

    energy, tdp, window = 1e-12, 500.0, 1e-3
    rate = 8 * tdp / energy  # FLOP/s that draw 8x the TDP
    long_s, short_s = 1.0, 1e-5
    assert power_stretch(rate * long_s, long_s, energy, tdp, window) == pytest.approx(2.0, rel=1e-6)
    assert power_stretch(rate * short_s, short_s, energy, tdp, window) == pytest.approx(1.0, abs=1e-6)
    assert power_stretch(0.5 * tdp / energy, 1.0, energy, tdp, window) == 1.0
