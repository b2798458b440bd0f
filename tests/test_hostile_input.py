"""Hostile and careless input to the spec loaders: YAML over the limits, unit strings, bounds, overrides and
error messages. Each case either loads with the right value or raises a SpecError naming the field, quickly."""
from __future__ import annotations

import time

import pytest
import yaml

from perfmodel.errors import SpecError, describe
from perfmodel.specs.base import catalog_dir, parse_value
from perfmodel.specs.hardware import load_hardware
from perfmodel.specs.model import load_model
from perfmodel.specs.scenario import load_scenario
from perfmodel.specs.yamlio import MAX_DEPTH, MAX_FILE_BYTES, MAX_NODES, read_yaml
from perfmodel.units import parse_quantity


def _laughs(levels: int) -> str:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, levels + 1)]
    return "\n".join(lines) + f"\nname: *a{levels}\n"


# -- YAML limits ----------------------------------------------------------------------------------------------
def test_alias_bomb_is_refused_quickly_with_a_short_message(tmp_path):
    path = tmp_path / "laughs.yaml"
    path.write_text(_laughs(9))  # 9**10 "lol"s once expanded
    start = time.perf_counter()
    with pytest.raises(SpecError, match=f"expands to more than {MAX_NODES:,} nodes") as info:
        load_model(path)
    assert time.perf_counter() - start < 2
    assert len(str(info.value)) < 400


def test_aliases_within_the_limit_still_load(tmp_path):
    data = yaml.safe_load((catalog_dir("models") / "llama-3.1-8b.yaml").read_text())
    for key in ("description", "hf_id"):
        data.pop(key, None)
    path = tmp_path / "alias.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False) + "description: &d meta-llama/Llama-3.1-8B\nhf_id: *d\n")
    model = load_model(path)
    assert model.hf_id == model.description == "meta-llama/Llama-3.1-8B"


@pytest.mark.parametrize("text, message", [
    ("name: " + "[" * 1500 + "]" * 1500 + "\n", f"nesting deeper than {MAX_DEPTH} levels"),
    ("name: " + "{a: " * 1200 + "1" + "}" * 1200 + "\n", f"nesting deeper than {MAX_DEPTH} levels"),
    ("hidden_size: " + "9" * 5000 + "\n", "an integer of 5,000 digits"),
    ("name: '" + "x" * 20_000 + "'\n", "a scalar of 20,000 characters"),
    ("name: 2024-13-45\n", "valid YAML values"),
    ("name: [unclosed\n", "valid YAML"),
    ("!!python/object/apply:os.system ['echo pwned']\n", "valid YAML"),
])
def test_yaml_over_a_limit_is_a_clean_error(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    start = time.perf_counter()
    with pytest.raises(SpecError, match=message) as info:
        load_model(path)
    assert time.perf_counter() - start < 2
    assert str(path) in str(info.value) and len(str(info.value)) < 600


def test_file_size_is_checked_before_reading(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_text("# " + "x" * MAX_FILE_BYTES + "\n")
    with pytest.raises(SpecError, match="a YAML file of at most"):
        read_yaml(path)


def test_describe_is_bounded_for_huge_values():
    huge = ["x"] * 10
    for _ in range(30):  # 10**30 leaves by reference
        huge = [huge] * 10
    start = time.perf_counter()
    text = describe({"k": huge, "s": "y" * 10**6, "i": 10**5000})
    assert time.perf_counter() - start < 0.1 and len(text) <= 80
    assert "characters" in describe("y" * 10**6) and "digits" in describe(10**5000)


# -- units --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, dimension, value", [
    ("80e9", "data size", 80e9),                # a quoted plain number is a number, never bits
    ("80 GB", "data size", 80e9),
    ("80GB", "data size", 80e9),
    ("80 GiB", "data size", 80 * 2**30),
    ("640 Gb", "data size", 80e9),              # bits only where written as bits
    ("640 Gbit", "data size", 80e9),
    ("3.35 TB/s", "data rate", 3.35e12),
    ("900 GB/s", "data rate", 9e11),
    ("400 Gb/s", "data rate", 5e10),
    ("989 TFLOPS", "compute rate", 989e12),
    ("989 TFLOP/s", "compute rate", 989e12),
    ("1.98 GHz", "frequency", 1.98e9),
    ("4 us", "time", 4e-6),
    ("4 µs", "time", 4e-6),
    ("355 ns", "time", 355e-9),
    ("700 W", "power", 700.0),
    (" 1.5e3 MB ", "data size", 1.5e9),
    ("-5 GB", "data size", -5e9),               # read; the field's bound then rejects it, naming the field
])
def test_quantities_read_exactly(text, dimension, value):
    assert parse_quantity(text, dimension) == pytest.approx(value, rel=1e-12)


@pytest.mark.parametrize("text, dimension, message", [
    ("100 %", "data size", "'%' is not a unit"),
    ("[1,2] B", "data size", "a number and one unit"),
    ("{} B", "data size", "a number and one unit"),
    ("💥 GB", "data size", "a number and one unit"),
    ("9**9**9 B", "data size", "a number and one unit"),
    ("2*40 GB", "data size", "a number and one unit"),
    ("3.35 Hz", "data rate", "'Hz' is a unit of frequency"),
    ("80 GB", "data rate", "'GB' is a unit of data size"),
    ("3.35 TB/s", "data size", "'TB/s' is a unit of data rate"),
    ("1 s", "data size", "'s' is a unit of time"),
    ("80 gb", "data size", "'gb' is not a unit"),
    ("1e999 B", "data size", "a finite number"),
    ("inf", "data size", "a number and one unit"),
    ("nan B", "data size", "a number and one unit"),
    ("80 GB GB", "data size", "a number and one unit"),
    ("1" * 100_000 + " B", "data size", "at most 64 characters"),
])
def test_quantities_outside_the_grammar_or_dimension_are_refused(text, dimension, message):
    start = time.perf_counter()
    with pytest.raises(ValueError, match=message):
        parse_quantity(text, dimension)
    assert time.perf_counter() - start < 0.1


def test_quoted_number_in_a_spec_is_a_number_not_bits(tmp_path):
    data = yaml.safe_load((catalog_dir("hardware") / "h100-sxm.yaml").read_text())
    data["memory"]["hbm"]["capacity_bytes"] = "80e9"
    path = tmp_path / "hw.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    assert load_hardware(path).memory["hbm"].capacity_bytes == 80e9
    assert load_hardware("h100-sxm", {"memory.hbm.capacity_bytes": "80e9"}).memory["hbm"].capacity_bytes == 80e9


def test_unit_strings_inside_per_dtype_mappings():
    hw = load_hardware("h100-sxm", {"compute.tensor_flops.bf16": "989 TFLOPS"})
    assert hw.compute.tensor_flops["bf16"] == pytest.approx(989e12)
    with pytest.raises(SpecError) as info:
        load_hardware("h100-sxm", {"compute.tensor_flops.bf16": "989 TB/s"})
    assert info.value.field == "compute.tensor_flops.bf16" and "unit of data rate" in str(info.value)


# -- bounds ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("field, value", [
    ("efficiency.memory.hbm", -1), ("efficiency.memory.hbm", 0), ("efficiency.memory.hbm", 1.5),
    ("efficiency.tensor", 0), ("efficiency.vector", 2), ("efficiency.launch_s", -1e-6),
    ("efficiency.attention_overhead_s", -1), ("efficiency.attention_cta_bytes_per_s", 0),
    ("efficiency.exps_per_s", 0), ("efficiency.gemm_half_rows.fp32", -4), ("efficiency.launch_s", ".nan"),
    ("efficiency.launch_s", ".inf"), ("memory.hbm.bandwidth_bytes_per_s", 1e-300),
    ("memory.hbm.bandwidth_bytes_per_s", 0), ("compute.units", 2**40), ("memory.hbm.latency_s", 1e9),
])
def test_efficiency_and_fixed_costs_are_bounded_with_the_field_named(field, value):
    with pytest.raises(SpecError) as info:
        load_hardware("h100-sxm", {field: value})
    assert info.value.field == field
    assert "Input should" not in str(info.value)


@pytest.mark.parametrize("loader, name, field, value", [
    (load_scenario, "arm", "batch", 10**18), (load_scenario, "arm", "prompt_len", 2**31),
    (load_model, "llama-3.1-8b", "hidden_size", 2**40), (load_scenario, "arm", "kv_cache.bits", 0),
])
def test_counts_are_bounded(loader, name, field, value):
    with pytest.raises(SpecError) as info:
        loader(name, {field: value})
    assert info.value.field == field


# -- overrides ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("key", [".".join(["a"] * 1500), "a..b", ".batch", "batch.", "x" * 500])
def test_impossible_override_keys_are_clean_errors(key):
    with pytest.raises(SpecError) as info:
        load_scenario("arm", {key: "1"})
    assert len(str(info.value)) < 400


@pytest.mark.parametrize("text", ["[" * 2000, "9" * 5000, "2024-13-45", "{a: *b}", "&a [*a]", "x" * 20_000])
def test_set_values_never_raise_while_parsing(text):
    value = parse_value(text)
    assert value is not None or text == ""


# -- messages -------------------------------------------------------------------------------------------------
def test_every_problem_is_listed_in_the_projects_words(tmp_path):
    data = yaml.safe_load((catalog_dir("models") / "llama-3.1-8b.yaml").read_text())
    data["hiden_size"] = data.pop("hidden_size")      # a misspelled required field
    data["vocab_size"] = "many"
    data["attention_mask"] = "causl"
    data["num_hidden_layers"] = -2
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(SpecError) as info:
        load_model(path)
    text = str(info.value)
    assert text.startswith(f"{path}: 4 problems:")
    assert "field 'hiden_size'" in text and "did you mean hidden_size?" in text and "is required" in text
    assert "field 'hidden_size'" not in text  # the misspelling is reported, not a missing field besides it
    assert "field 'vocab_size': got 'many', expected an integer" in text
    assert "field 'attention_mask': got 'causl', expected one of: causal, bidirectional (did you mean causal?)" in text
    assert "field 'num_hidden_layers': got -2, expected an integer greater than 0" in text
    for pydantic_words in ("Input should", "Value error", "Extra inputs", "Field required"):
        assert pydantic_words not in text


def test_a_typo_inside_efficiency_memory_names_the_entry_not_the_spec():
    with pytest.raises(SpecError) as info:
        load_hardware("h100-sxm", {"efficiency.memory.hmb": 0.9})
    err = info.value
    assert err.field == "efficiency.memory.hmb" and err.value == 0.9
    assert "smem, l2, hbm" in str(err) and len(str(err)) < 300


def test_misspelled_field_in_a_nested_group_is_suggested():
    with pytest.raises(SpecError, match=r"field 'memory.hbm.bandwith_bytes_per_s'.*did you mean "
                                        r"bandwidth_bytes_per_s\?"):
        load_hardware("h100-sxm", {"memory.hbm.bandwith_bytes_per_s": 1e12})


def test_union_fields_of_a_review_are_reported_without_member_names(tmp_path):
    from perfmodel.report import load_review

    path = tmp_path / "r.yaml"
    path.write_text("title: t\nhardware: [3]\nmethods: [{label: a, model: llama-3.1-8b, scenario: arm}]\n")
    with pytest.raises(SpecError) as info:
        load_review(path)
    assert "hardware.0" in str(info.value) and "HardwareEntry'" not in str(info.value)


# -- the memory hierarchy is the order of `memory` --------------------------------------------------------------
def test_memory_levels_out_of_order_are_refused_not_read_as_another_device(tmp_path):
    """A YAML tool that sorts keys writes hbm before l2 and smem: read in that order the spec would describe a
    device whose cache is its HBM. It is refused, naming the level that breaks the order."""
    data = yaml.safe_load((catalog_dir("hardware") / "h100-sxm.yaml").read_text())
    path = tmp_path / "sorted.yaml"
    path.write_text(yaml.safe_dump(data))  # sort_keys=True: memory becomes hbm, l2, smem
    with pytest.raises(SpecError) as info:
        load_hardware(path)
    text = str(info.value)
    assert "memory.l2.capacity_bytes" in text and "nearest to farthest" in text
    assert "memory.smem" in text  # the per-SM level after the shared ones
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    assert list(load_hardware(path).memory) == ["smem", "l2", "hbm"]


def test_a_term_the_spec_writes_is_kept_when_the_rule_completes_the_others():
    # L40S's calibration has no row-kernel rows: the rule completes them, but never over a value the user wrote
    moved = load_hardware("l40s")
    mine = load_hardware("l40s", {"efficiency.kernel_floor_s": "2 us"})
    assert mine.efficiency.kernel_floor_s == pytest.approx(2e-6)
    assert moved.efficiency.kernel_floor_s != pytest.approx(2e-6)
    assert mine.efficiency.row_kernel_s == moved.efficiency.row_kernel_s


def test_figures_the_transfer_rule_cannot_use_name_the_field():
    # 60 B/s of HBM on an uncalibrated device: the rule's per-CTA bandwidth would fall below a byte per second
    with pytest.raises(SpecError) as info:
        load_hardware("h200-sxm", {"memory.hbm.bandwidth_bytes_per_s": 60})
    assert info.value.field == "memory.hbm.bandwidth_bytes_per_s"
