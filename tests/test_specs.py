"""Catalog loading, derived quantities against published figures, and the error paths of the spec loaders."""
from __future__ import annotations

import json
import string
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from perfmodel.errors import SpecError, UnknownNameError
from perfmodel.specs.base import catalog_dir
from perfmodel.specs.hardware import Hardware, hardware_names, load_hardware
from perfmodel.specs.model import load_model, model_names
from perfmodel.specs.scenario import load_scenario, scenario_names

REQUIRED_HARDWARE = ["a100-sxm-80gb", "h100-sxm", "h200-sxm", "b200-sxm", "mi300x", "l40s", "rtx-a6000"]
REQUIRED_MODELS = ["llama-3.1-8b", "llama-3.1-70b", "qwen2.5-7b", "qwen3-8b", "llada-8b", "dream-7b"]
REQUIRED_SCENARIOS = ["arm", "dlm", "block-dlm", "fast-dllm-prefix", "fast-dllm-dual", "xquant", "xquant-cl",
                      "kv-int8", "kv-int4", "squeezed-attention", "multipole-attention"]


@pytest.mark.parametrize("name", hardware_names())
def test_every_hardware_file_loads_with_cited_numbers(name):
    hw = load_hardware(name)
    assert hw.name == name
    assert hw.compute.peak_flops("bf16") > 0 or hw.compute.peak_flops("fp32") > 0
    cited = {hw.compute.source, *(m.source for m in hw.memory.values())}
    assert cited <= set(hw.sources)
    levels = list(hw.memory.values())
    # The hierarchy gets bigger and slower (in aggregate bandwidth) going outwards. A GPU's per-SM scratchpad
    # is not a cache level (it can total more than a small L2, as on the RTX A6000), so capacity skips it.
    totals = [hw.level_capacity_bytes(k) for k, m in hw.memory.items() if not (hw.kind == "gpu" and m.per_unit)]
    assert totals == sorted(totals)
    assert [m.bandwidth_bytes_per_s for m in levels] == sorted((m.bandwidth_bytes_per_s for m in levels), reverse=True)


def test_required_catalog_entries_exist():
    assert set(REQUIRED_HARDWARE) <= set(hardware_names())
    assert set(REQUIRED_MODELS) <= set(model_names())
    assert set(REQUIRED_SCENARIOS) <= set(scenario_names())


@pytest.mark.parametrize("name", model_names())
def test_parameter_count_matches_published_size(name):
    m = load_model(name)
    assert m.published_parameters, f"{name} should state its published size"
    assert abs(m.parameters / m.published_parameters - 1) < 0.01


def test_known_parameter_counts_and_kv_bytes():
    assert load_model("llama-3.1-8b").parameters == pytest.approx(8.03e9, rel=0.01)
    assert load_model("qwen2.5-7b").parameters == pytest.approx(7.62e9, rel=0.01)
    # KV bytes per token = 2 * layers * kv_heads * head_dim * bytes: 2 * 32 * 8 * 128 * 2 for Llama-3.1-8B.
    assert load_model("llama-3.1-8b").kv_bytes_per_token("bf16") == 2 * 32 * 8 * 128 * 2
    assert load_model("llada-8b").kv_bytes_per_token("bf16") == 2 * 32 * 32 * 128 * 2


@pytest.mark.parametrize("name", scenario_names())
def test_every_scenario_loads(name):
    sc = load_scenario(name)
    assert sc.name == name
    assert sc.batch >= 1 and sc.gen_len >= 1


def test_h200_has_more_memory_and_bandwidth_than_h100():
    h100, h200 = load_hardware("h100-sxm"), load_hardware("h200-sxm")
    assert h200.memory_capacity_bytes > h100.memory_capacity_bytes
    assert h200.main_bandwidth_bytes_per_s > h100.main_bandwidth_bytes_per_s


def test_unit_strings_parse_with_decimal_and_binary_prefixes(tmp_path):
    hw = load_hardware("h100-sxm", {"memory.hbm.capacity_bytes": "80 GiB",
                                    "memory.hbm.bandwidth_bytes_per_s": "3.35 TB/s"})
    assert hw.memory["hbm"].capacity_bytes == 80 * 2**30
    assert hw.memory["hbm"].bandwidth_bytes_per_s == pytest.approx(3.35e12)


def test_override_changes_the_field_and_nothing_else():
    base = load_hardware("h100-sxm")
    hw = load_hardware("h100-sxm", {"memory.hbm.bandwidth_bytes_per_s": "6.7e12"})
    assert hw.memory["hbm"].bandwidth_bytes_per_s == 6.7e12
    assert hw.memory["hbm"].capacity_bytes == base.memory["hbm"].capacity_bytes


def _write(tmp_path, data, name="spec.yaml"):
    p = tmp_path / name
    p.write_text(yaml.safe_dump(data, sort_keys=False))
    return p


def _model_data():
    return yaml.safe_load((catalog_dir("models") / "llama-3.1-8b.yaml").read_text())


@pytest.mark.parametrize(
    "field, value, expected",
    [
        ("hidden_size", -4096, "greater than 0"),
        ("hidden_size", 0, "greater than 0"),
        ("num_hidden_layers", "many", "expected an integer"),
        ("num_attention_heads", 30, "divisor of hidden_size"),
        ("num_key_value_heads", 5, "divisor of num_attention_heads"),
        ("attention_mask", "sideways", "causal"),
        ("hiden_size", 4096, "unknown field"),
    ],
)
def test_bad_model_fields_name_file_field_value(tmp_path, field, value, expected):
    data = _model_data()
    data[field] = value
    path = _write(tmp_path, data)
    with pytest.raises(SpecError) as info:
        load_model(path)
    err = info.value
    assert str(path) in str(err)
    assert expected in str(err)
    assert err.value == value
    assert err.field == field


def test_missing_field_is_named(tmp_path):
    data = _model_data()
    del data["vocab_size"]
    with pytest.raises(SpecError, match="vocab_size.*required"):
        load_model(_write(tmp_path, data))


def test_bad_unit_is_named(tmp_path):
    data = yaml.safe_load((catalog_dir("hardware") / "h100-sxm.yaml").read_text())
    data["memory"]["hbm"]["bandwidth_bytes_per_s"] = "3.35 furlongs"
    with pytest.raises(SpecError) as info:
        load_hardware(_write(tmp_path, data))
    assert info.value.field == "memory.hbm.bandwidth_bytes_per_s"
    assert "bytes per second" in str(info.value) and "'furlongs' is not a unit" in str(info.value)


def test_uncited_source_is_rejected(tmp_path):
    data = yaml.safe_load((catalog_dir("hardware") / "h100-sxm.yaml").read_text())
    data["memory"]["hbm"]["source"] = "hearsay"
    with pytest.raises(SpecError, match="hearsay"):
        load_hardware(_write(tmp_path, data))


def test_unknown_name_lists_valid_names():
    with pytest.raises(UnknownNameError) as info:
        load_hardware("h100")
    assert "h100-sxm" in str(info.value)
    with pytest.raises(UnknownNameError, match="llama-3.1-8b"):
        load_model("llama")


def test_yaml_is_loaded_safely(tmp_path):
    p = tmp_path / "evil.yaml"
    p.write_text("!!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(SpecError, match="YAML"):
        load_model(p)


def test_scenario_override_of_nested_field():
    sc = load_scenario("arm", {"kv_cache.format": "int4", "batch": "8"})
    assert sc.kv_cache.format == "int4" and sc.batch == 8 and sc.kv_cache.effective_bits == 4
    with pytest.raises(SpecError, match="kv_cache.bogus"):
        load_scenario("arm", {"kv_cache.bogus": 1})


# -- property tests: malformed specs either load or raise SpecError, never anything else ----------------------
scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**12), st.floats(allow_nan=True),
                    st.text(string.printable, max_size=12), st.lists(st.integers(), max_size=2))


def _paths(data, prefix=()):
    for k, v in data.items():
        yield prefix + (k,)
        if isinstance(v, dict):
            yield from _paths(v, prefix + (k,))


def _mutate(data, path, value, delete):
    node = data
    for p in path[:-1]:
        node = node[p]
    if delete:
        node.pop(path[-1], None)
    else:
        node[path[-1]] = value


@pytest.mark.parametrize("kind, loader, name", [("hardware", load_hardware, "h100-sxm"),
                                                ("models", load_model, "llama-3.1-8b"),
                                                ("scenarios", load_scenario, "xquant")])
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_malformed_specs_load_or_raise_spec_error(tmp_path, kind, loader, name, data):
    spec = yaml.safe_load((catalog_dir(kind) / f"{name}.yaml").read_text())
    paths = list(_paths(spec)) + [("unexpected_field",)]
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(paths))
        try:
            _mutate(spec, path, data.draw(scalars), delete=data.draw(st.booleans()))
        except (KeyError, TypeError, AttributeError):
            pass  # a parent was replaced by a scalar in an earlier mutation
    path = tmp_path / "mutated.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False) if isinstance(spec, dict) else "[]")
    try:
        loaded = loader(path)
    except SpecError as err:
        assert str(path) in str(err) and err.field
    else:
        json.dumps(loaded.to_dict())  # whatever loads is a complete, serialisable spec


@settings(max_examples=40, deadline=None)
@given(text=st.text(max_size=40))
def test_arbitrary_yaml_text_never_crashes(text, tmp_path_factory):
    path = tmp_path_factory.mktemp("y") / "any.yaml"
    path.write_text(text)
    try:
        load_hardware(path)
    except SpecError:
        pass


def test_a_calibration_that_cannot_be_carried_names_the_file_and_field(tmp_path):
    """A copied spec whose ``calibrated_for`` has a zero figure cannot be normalised: the error names the file it
    came from and the field, as every other spec error does (it named the catalog device instead)."""
    from perfmodel.errors import SpecError

    spec = yaml.safe_load((Path(__file__).resolve().parents[1] / "hardware" / "h100-sxm.yaml").read_text())
    spec["efficiency"]["calibrated_for"]["main_bandwidth_bytes_per_s"] = 0
    path = tmp_path / "copy.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    with pytest.raises(SpecError) as err:
        load_hardware(path)
    assert str(path) in str(err.value) and err.value.field == "efficiency.calibrated_for"
