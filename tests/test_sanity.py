"""Sanity findings: one test per kind of contradiction, and the whole catalog checked clean."""
from __future__ import annotations

import json
import warnings

import pytest
import yaml

from perfmodel.api import predict
from perfmodel.cli.main import main
from perfmodel.specs.base import catalog_dir
from perfmodel.specs.hardware import hardware_names, load_hardware
from perfmodel.specs.model import load_model, model_names
from perfmodel.specs.sanity import (
    PEAK_TOLERANCE, SM_RATES, SpecWarning, efficiency_findings, hardware_findings, price_findings,
    prompt_findings, sm_rates, tensor_peak_findings, vector_peak_findings,
)
from perfmodel.specs.scenario import load_scenario, scenario_names

# A catalog spec that must carry a finding lists it here with the reason; none does today.
EXPLAINED: dict[str, dict[str, str]] = {}
# (model, scenario) pairs whose sequence passes the model's context, with the reason the pair still exists
_LONG = ("the scenario's 4,096-token prompt is a long-context case for sparse attention; LLaDA's whole context is "
         "4,096 positions, so prompt + 256 generated tokens overflow it")
EXPLAINED_CONTEXT = {("llada-8b", "multipole-attention"): _LONG, ("llada-8b", "squeezed-attention"): _LONG}


def _quiet(name: str, overrides: dict | None = None):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SpecWarning)
        return load_hardware(name, overrides)


def _fields(findings) -> list[str]:
    return [f.field for f in findings]


@pytest.mark.parametrize("name", hardware_names())
def test_every_catalog_hardware_spec_is_clean_or_explained(name):
    fields = _fields(hardware_findings(_quiet(name)))
    assert sorted(fields) == sorted(EXPLAINED.get(name, {}))


@pytest.mark.parametrize("model", model_names())
def test_every_catalog_scenario_fits_every_model_context(model):
    m = load_model(model)
    for scenario in scenario_names():
        findings = prompt_findings(m, load_scenario(scenario))
        assert bool(findings) == ((model, scenario) in EXPLAINED_CONTEXT), (scenario, findings)


def test_the_rate_table_reproduces_its_citations():
    # dense FLOP/clock/SM = peak / (SMs x clock), from the datasheets each entry cites
    assert 312e12 / (108 * 1.41e9) == pytest.approx(SM_RATES[80].tensor["bf16"], rel=0.001)
    assert 154.8e12 / (84 * 1.8e9) == pytest.approx(SM_RATES[86].tensor["bf16"], rel=0.001)
    assert 733e12 / (142 * 2.52e9) == pytest.approx(SM_RATES[89].tensor["fp8"], rel=0.001)
    assert 362.05e12 / (142 * 2.52e9) == pytest.approx(SM_RATES[89].tensor["bf16"], rel=0.015)
    assert 989.4e12 / (132 * 1.83e9) == pytest.approx(SM_RATES[90].tensor["bf16"], rel=0.001)
    assert 2.5e15 / (148 * SM_RATES[100].tensor["bf16"]) == pytest.approx(2.06e9, rel=0.005)
    assert 2242e12 / (148 * 2.032e9) > SM_RATES[90].tensor["bf16"]  # a B300 GEMM beats any Hopper-rate SM
    assert 1676e12 / (170 * 2.407e9) == pytest.approx(SM_RATES[120].tensor["fp4"], rel=0.001)
    # Blackwell Ultra: FP4 1.5x Blackwell; consumer-class SMs run BF16 at 1/8 of the datacenter Blackwell SM
    assert SM_RATES[103].tensor["fp4"] == 1.5 * SM_RATES[100].tensor["fp4"]
    assert SM_RATES[120].tensor["bf16"] * 8 == SM_RATES[100].tensor["bf16"]


def test_sparse_tensor_peak_is_reported_with_field_value_and_expectation():
    hw = _quiet("h100-sxm", {"compute.tensor_flops.bf16": 1978.9e12})  # NVIDIA's sparse figure
    (finding,) = tensor_peak_findings(hw)
    assert finding.field == "compute.tensor_flops.bf16" and finding.value == 1978.9e12
    assert "9.894e+14" in finding.expected and "4096" in finding.expected
    with pytest.warns(SpecWarning, match="compute.tensor_flops.bf16"):
        load_hardware("h100-sxm", {"compute.tensor_flops.bf16": 1978.9e12})


def test_peak_within_tolerance_passes_and_just_outside_fails():
    exact = 132 * 1.83e9 * 4096
    assert tensor_peak_findings(_quiet("h100-sxm", {"compute.tensor_flops.fp16": exact * (1 + PEAK_TOLERANCE / 2)})) == []
    assert _fields(tensor_peak_findings(_quiet("h100-sxm", {"compute.tensor_flops.fp16": exact * (1 + 2 * PEAK_TOLERANCE)}))) \
        == ["compute.tensor_flops.fp16"]


def test_wrong_sm_count_contradicts_every_checked_peak():
    hw = _quiet("a100-sxm-80gb", {"compute.units": 128})
    assert set(_fields(tensor_peak_findings(hw))) == {f"compute.tensor_flops.{d}" for d in ("tf32", "bf16", "fp16", "int8")}
    assert _fields(vector_peak_findings(hw)) == ["compute.vector_flops.fp32"]


def test_vector_peak_uses_the_boost_clock_and_reports_without_it():
    hw = _quiet("h100-sxm")
    assert vector_peak_findings(hw) == []
    without_boost = hw.model_copy(update={"compute": hw.compute.model_copy(update={"boost_clock_hz": None})})
    (finding,) = vector_peak_findings(without_boost)
    assert finding.field == "compute.vector_flops.fp32" and "boost_clock_hz" in finding.expected
    doubled = _quiet("l40s", {"compute.vector_flops.fp32": 2 * 91.6e12})
    assert _fields(vector_peak_findings(doubled)) == ["compute.vector_flops.fp32"]


def test_sm_version_selects_the_design_and_the_architecture_gives_the_default():
    a6000 = _quiet("rtx-a6000")
    assert sm_rates(a6000.compute) is SM_RATES[86] and hardware_findings(a6000) == []
    # without sm_version an Ampere spec is read as the A100's GA100, whose SM does twice GA102's tensor work
    as_ga100 = a6000.model_copy(update={"compute": a6000.compute.model_copy(update={"sm_version": None})})
    assert sm_rates(as_ga100.compute) is SM_RATES[80]
    assert "compute.tensor_flops.bf16" in _fields(tensor_peak_findings(as_ga100))
    pro = _quiet("rtx-pro-6000-server")
    assert pro.compute.architecture == "blackwell" and sm_rates(pro.compute) is SM_RATES[120]
    assert sm_rates(_quiet("b300-sxm").compute) is SM_RATES[103]


def test_devices_without_a_known_sm_design_are_not_checked():
    for name in ("mi300x", "cpu-generic"):
        hw = _quiet(name, {"compute.vector_flops.fp32": 1e18})
        assert sm_rates(hw.compute) is None
        assert tensor_peak_findings(hw) == [] and vector_peak_findings(hw) == []


def test_efficiency_fractions_above_one_are_reported():
    hw = _quiet("h100-sxm")
    eff = hw.efficiency.model_copy(update={"memory": {"l2": 0.9, "hbm": 1.2}, "attention_tensor": 1.5})
    findings = efficiency_findings(hw.model_copy(update={"efficiency": eff}))
    assert sorted(_fields(findings)) == ["efficiency.attention_tensor", "efficiency.memory.hbm"]
    assert [f.value for f in findings if f.field == "efficiency.memory.hbm"] == [1.2]
    # all-reduce efficiency may exceed 1 with in-switch reduction: not a finding
    assert hw.interconnect["nvlink"].collective_efficiency > 1 and efficiency_findings(hw) == []


def test_price_needs_a_cited_provider_and_date():
    hw = _quiet("h100-sxm", {"price_per_hour_usd": 2.5})
    assert _fields(price_findings(hw)) == ["price_per_hour_usd"]
    cited = _quiet("h100-sxm", {"price_per_hour_usd": 2.5, "sources.price": "a provider, June 2026"})
    assert price_findings(cited) == []
    assert price_findings(_quiet("b200-sxm")) == [] and _quiet("b200-sxm").price_per_hour_usd > 0


def test_prompt_longer_than_max_position_embeddings():
    llada = load_model("llada-8b")
    assert llada.max_position_embeddings == 4096
    (f,) = prompt_findings(llada, load_scenario("arm", {"prompt_len": 5000}))
    assert f.field == "scenario.prompt_len" and f.value == 5000 and "4096" in f.expected
    (f,) = prompt_findings(llada, load_scenario("arm", {"prompt_len": 4000, "gen_len": 200}))
    assert f.field == "scenario.gen_len"
    assert prompt_findings(llada, load_scenario("arm", {"prompt_len": 3000, "gen_len": 1096})) == []
    unbounded = llada.model_copy(update={"max_position_embeddings": None})
    assert prompt_findings(unbounded, load_scenario("arm", {"prompt_len": 10**6})) == []


def test_predict_warns_once_per_distinct_finding():
    with pytest.warns(SpecWarning, match="max_position_embeddings") as record:
        predict("h100-sxm", "llada-8b", "arm", {"prompt_len": 5000})
    assert sum("prompt_len" in str(w.message) for w in record) == 1


@pytest.mark.parametrize("name", ["b300-sxm", "rtx-pro-6000-server", "gb200", "b200-sxm", "l40s"])
def test_new_and_rechecked_gpus_predict_without_findings(name):
    with warnings.catch_warnings():
        warnings.simplefilter("error", SpecWarning)
        p = predict(name, "llama-3.1-8b", "arm")
    assert p.summary["latency_s"] > 0 and p.summary["memory"]["fits"]


def test_hardware_show_lists_findings(tmp_path, capsys):
    assert main(["hardware", "show", "b300-sxm", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["findings"] == []
    spec = yaml.safe_load((catalog_dir("hardware") / "l40s.yaml").read_text())
    spec["compute"]["tensor_flops"]["bf16"] = 733e12  # the sparse figure
    path = tmp_path / "l40s-sparse.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SpecWarning)
        assert main(["hardware", "show", str(path)]) == 0
    out = capsys.readouterr().out
    assert "findings" in out and "compute.tensor_flops.bf16" in out
