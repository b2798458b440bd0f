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
    # capacities are the host's (sysfs; the last-level cache at most its nominal size); nominal bandwidths are
    # kept, or raised to the measurement (never lowered)
    import torch

    host, _ = cal.host_spec(base, torch.get_num_threads())
    assert hw.compute.units == torch.get_num_threads()
    for level in hw.memory:
        if level == "l3":
            assert 0 < hw.memory[level].capacity_bytes <= host.memory[level].capacity_bytes
        else:
            assert hw.memory[level].capacity_bytes == host.memory[level].capacity_bytes
        assert hw.memory[level].bandwidth_bytes_per_s >= base.memory[level].bandwidth_bytes_per_s
        if hw.memory[level].bandwidth_bytes_per_s > base.memory[level].bandwidth_bytes_per_s:
            assert eff.memory[level] == 1.0 and hw.memory[level].source == "calibration"


def test_sidecar_csv_holds_the_raw_table(calibrated):
    csv = calibrated.with_name("myhost.microbench.csv")
    df = pd.read_csv(csv)
    assert list(df.columns) == list(cal.COLUMNS)
    assert {"tiny_add", "tiny_sum", "tiny_decode_attention", "read", "matmul", "skinny_matmul", "exp"} <= set(df.kind)
    assert (df.seconds > 0).all()
    copies = df[df.kind == "read"]
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


def test_calibrated_cpu_terms_are_written(calibrated):
    eff = load_hardware(calibrated).efficiency
    assert set(eff.gemm_half_rows) >= {"fp32"} and all(v >= 0 for v in eff.gemm_half_rows.values())
    assert eff.exps_per_s > 0 and math.isfinite(eff.exps_per_s)
    assert eff.prefill_attention_overhead_s >= 0


def test_half_rows_inverts_hockney():
    # rate(m) = peak·m/(m + m½): a skinny matmul at a fifth of the square rate with m = 16 gives m½ = 64
    table = pd.DataFrame([{"kind": "skinny_matmul", "dtype": "fp32", "gflop_per_s": 100.0},
                          {"kind": "skinny_matmul", "dtype": "bf16", "gflop_per_s": 1000.0}], columns=list(cal.COLUMNS))
    half = cal.half_rows(table, {"fp32": 500e9, "bf16": 500e9})
    assert half["fp32"] == pytest.approx(cal.SKINNY_M * 4)
    assert half["bf16"] == 0.0  # faster than the square one: no penalty, never negative


def test_host_spec_reads_sysfs_caches(tmp_path):
    def index(i, level, kind, size, shared):
        d = tmp_path / f"index{i}"
        d.mkdir()
        for name, value in (("level", level), ("type", kind), ("size", size), ("shared_cpu_list", shared)):
            (d / name).write_text(f"{value}\n")
    index(0, 1, "Data", "48K", "0")
    index(1, 1, "Instruction", "32K", "0")
    index(2, 2, "Unified", "2048K", "0")
    index(3, 3, "Unified", "105M", "0-1")
    caches = cal.host_caches(tmp_path)
    assert caches == {1: (48 * 1024, 1), 2: (2 << 20, 1), 3: (105 << 20, 2)}
    hw, notes = cal.host_spec(load_hardware("cpu-generic"), 3, caches, memory_bytes=8e9)
    assert hw.compute.units == 3
    assert hw.memory["l2"].capacity_bytes == 2 << 20 and hw.memory["l2"].per_unit
    assert hw.memory["l3"].capacity_bytes == 105 << 20 and not hw.memory["l3"].per_unit
    assert hw.memory["dram"].capacity_bytes == 8e9
    assert any("l2" in n for n in notes)
    base = load_hardware("cpu-generic")
    assert hw.compute.peak_flops("fp32", "vector") == pytest.approx(1.5 * base.compute.peak_flops("fp32", "vector"))
    assert hw.memory["l1"].bandwidth_bytes_per_s == pytest.approx(1.5 * base.memory["l1"].bandwidth_bytes_per_s)
    assert hw.memory["dram"].bandwidth_bytes_per_s == base.memory["dram"].bandwidth_bytes_per_s


def _sweep(points):
    return pd.DataFrame([{"kind": "read", "size_bytes": s, "gb_per_s": g} for s, g in points],
                        columns=list(cal.COLUMNS))


def test_effective_llc_from_the_bandwidth_drop():
    caches = {1: (48 * 1024, 1), 2: (1 << 20, 1), 3: (256 << 20, 2)}
    hw, _ = cal.host_spec(load_hardware("cpu-generic"), 2, caches, memory_bytes=8e9)
    mib = 1 << 20
    # L3 plateau 50 GB/s up to 32 MiB, then main memory's 20 GB/s: the edge lies between 32 and 64 MiB
    table = _sweep([(8 * mib, 50), (16 * mib, 48), (32 * mib, 45), (64 * mib, 21), (128 * mib, 20),
                    (512 * mib, 20), (1024 * mib, 20)])
    cap, note = cal.effective_llc(hw, table)
    assert cap == pytest.approx(32 * mib * 2 ** 0.5) and "effective capacity" in note
    # no drop before the nominal size: the nominal capacity holds
    flat = _sweep([(8 * mib, 50), (128 * mib, 49), (256 * mib, 48), (1024 * mib, 20)])
    assert cal.effective_llc(hw, flat) == (None, None)


def test_threads_option_sets_the_core_count_and_measure_warns_on_a_mismatch(tmp_path, capsys):
    import torch

    before = torch.get_num_threads()
    try:
        out = tmp_path / "one.yaml"
        assert main(["calibrate", "--device", "cpu", "--sizes", "small", "--threads", "1", "-o", str(out)]) == 0
        assert load_hardware(out).compute.units == 1
        torch.set_num_threads(2)
        capsys.readouterr()
        assert main(["measure", "--device", "cpu", "--suite", "tiny", "--hardware", str(out), "--no-progress",
                     "--samples", "1", "--target-ms", "1", "-o", str(tmp_path / "t.csv")]) == 0
        assert "calibrated with 1; pass --threads 1" in capsys.readouterr().err
        assert main(["calibrate", "--device", "cpu", "--threads", "0", "-o", str(tmp_path / "x.yaml")]) == 2
    finally:
        torch.set_num_threads(before)


def test_other_runnable_reads_proc_stat(tmp_path):
    stat = tmp_path / "stat"
    stat.write_text("cpu  1 2 3\nprocs_running 3\nprocs_blocked 0\n")
    assert mb.other_runnable(samples=2, interval_s=0, path=str(stat)) == 2
    stat.write_text("procs_running 1\n")
    assert mb.other_runnable(samples=1, path=str(stat)) == 0
    assert mb.other_runnable(path=str(tmp_path / "missing")) is None
    assert mb.busy_warning("cuda") is None
