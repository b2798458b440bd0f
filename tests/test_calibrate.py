"""`perfmodel calibrate`: microbenchmarks to a loadable hardware YAML (reduced sweep; no timing assertions)."""
from __future__ import annotations

import math

import pandas as pd
import pytest

from perfmodel.cli.main import main
from perfmodel.specs.hardware import load_hardware
from perfmodel.validation import calibrate as cal
from perfmodel.validation import microbench as mb


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    out = tmp_path_factory.mktemp("cal") / "myhost.yaml"
    assert main(["calibrate", "--device", "cpu", "--sizes", "small", "-o", str(out)]) == 0
    return out


def test_calibrated_yaml_loads_with_fractions_in_range(calibrated):
    hw = load_hardware(calibrated)
    base = load_hardware("cpu-generic")
    assert hw.name == "myhost" and hw.kind == "cpu"
    eff = hw.efficiency
    assert 0 < eff.tensor <= 1 and 0 < eff.vector <= 1
    assert eff.launch_s > 0 and math.isfinite(eff.launch_s)
    assert eff.attention_overhead_s >= 0
    assert set(eff.memory) <= set(hw.memory) and eff.memory
    assert all(0 < f <= 1 for f in eff.memory.values())
    assert "myhost.microbench.csv" in eff.note and "calibration" in hw.sources
    # nominal numbers are kept, or raised to the measurement (never lowered)
    for level in hw.memory:
        assert hw.memory[level].capacity_bytes == base.memory[level].capacity_bytes
        assert hw.memory[level].bandwidth_bytes_per_s >= base.memory[level].bandwidth_bytes_per_s
        if hw.memory[level].bandwidth_bytes_per_s > base.memory[level].bandwidth_bytes_per_s:
            assert eff.memory[level] == 1.0 and hw.memory[level].source == "calibration"


def test_sidecar_csv_holds_the_raw_table(calibrated):
    csv = calibrated.with_name("myhost.microbench.csv")
    df = pd.read_csv(csv)
    assert list(df.columns) == list(cal.COLUMNS)
    assert {"tiny_add", "tiny_copy", "copy", "matmul"} <= set(df.kind)
    assert (df.seconds > 0).all()
    copies = df[df.kind == "copy"]
    assert copies.size_bytes.is_monotonic_increasing and (copies.gb_per_s > 0).all()
    assert set(copies.level) <= {"l1", "l2", "l3", "dram"}


def test_levels_follow_capacities():
    hw = load_hardware("cpu-generic")
    l1_total = hw.level_capacity_bytes("l1")
    assert cal.level_of(hw, 16 * 1024) == "l1"
    assert cal.level_of(hw, l1_total + 1) == "l2"
    assert cal.level_of(hw, 10 * hw.level_capacity_bytes("l3")) == "dram"
    # a working set just past a level straddles it; twice past is clean for the next one
    assert cal.qualifying_level(hw, 16 * 1024) == "l1"
    assert cal.qualifying_level(hw, l1_total + 1) is None
    assert cal.qualifying_level(hw, 4 * l1_total) == "l2"
    assert cal.qualifying_level(hw, 4 * hw.level_capacity_bytes("l3")) == "dram"


def test_measured_above_nominal_raises_the_nominal():
    hw = load_hardware("cpu-generic")
    nominal = hw.memory["l3"].bandwidth_bytes_per_s
    rows = [{"kind": "tiny_add", "seconds": 1e-6}, {"kind": "tiny_copy", "seconds": 1e-6},
            {"kind": "copy", "size_bytes": 8 << 20, "used_for": "l3", "seconds": 1e-6 + (8 << 20) / (2 * nominal)},
            {"kind": "copy", "size_bytes": 1 << 30, "used_for": "dram",
             "seconds": 1e-6 + (1 << 30) / (0.5 * hw.memory["dram"].bandwidth_bytes_per_s)},
            {"kind": "matmul", "dtype": "fp32", "gflop_per_s": 0.5 * hw.compute.peak_flops("fp32", "vector") / 1e9}]
    table = pd.DataFrame(rows, columns=list(cal.COLUMNS))
    result = cal.build_spec(hw, table, device="cpu", name="t", sidecar="t.microbench.csv")
    out = result.hardware
    assert out.memory["l3"].bandwidth_bytes_per_s == pytest.approx(2 * nominal)
    assert out.efficiency.memory["l3"] == 1.0 and "raised" in out.efficiency.note
    assert out.efficiency.memory["dram"] == pytest.approx(0.5, rel=1e-3)
    assert out.efficiency.vector == pytest.approx(0.5, rel=1e-3)
    assert out.efficiency.launch_s == pytest.approx(1e-6)


def test_cuda_without_gpu_is_a_clear_error(tmp_path, capsys):
    if mb_has_cuda():
        pytest.skip("this machine has a CUDA device")
    assert main(["calibrate", "--device", "cuda", "--base", "h100-sxm", "-o", str(tmp_path / "g.yaml")]) == 2
    assert "no CUDA device" in capsys.readouterr().err
    assert not (tmp_path / "g.yaml").exists()


def test_help(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["calibrate", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "--device" in out and "--base" in out and "microbench.csv" in out


def mb_has_cuda() -> bool:
    try:
        mb.check_device("cuda")
    except mb.DeviceUnavailable:
        return False
    return True
