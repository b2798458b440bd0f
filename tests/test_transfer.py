"""The transfer rule (perfmodel/transfer.py): own, carried, sibling and cross-device efficiency blocks, and the
memory figures a spec leaves out."""
from __future__ import annotations

import re
import statistics
from pathlib import Path

import pytest
import yaml

from perfmodel import transfer
from perfmodel.specs.hardware import Efficiency, load_hardware

CATALOG = Path(__file__).resolve().parents[1] / "hardware"
CALIBRATED = ("a100-sxm-80gb", "gb200", "h100-sxm", "l40s")


def _copy(tmp_path: Path, name: str, edit) -> Path:
    data = yaml.safe_load((CATALOG / f"{name}.yaml").read_text())
    edit(data)
    path = tmp_path / f"{data['name']}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))  # levels stay nearest first
    return path


@pytest.mark.parametrize("name", CALIBRATED)
def test_calibrated_catalog_gpus_use_their_own_fit(name):
    hw = load_hardware(name)
    assert transfer.is_own(hw) and hw.efficiency.note.startswith("fit on")
    raw = load_hardware(name, resolve_efficiency=False)
    assert hw.efficiency.tensor == raw.efficiency.tensor


def test_siblings_take_the_calibrated_sibling_block():
    h100, h200 = load_hardware("h100-sxm"), load_hardware("h200-sxm")
    assert "sibling rule" in h200.efficiency.note and "h100-sxm" in h200.efficiency.note
    assert h200.efficiency.tensor == pytest.approx(h100.efficiency.tensor)
    assert h200.efficiency.attention_kernel == "fa3"
    for name in ("b200-sxm", "b300-sxm"):
        hw = load_hardware(name)
        assert "sibling rule" in hw.efficiency.note and "gb200" in hw.efficiency.note
        assert hw.efficiency.attention_kernel == "trtllm"


def test_the_gb202_graphics_sm_is_not_a_sibling_of_datacenter_blackwell():
    hw = load_hardware("rtx-pro-6000-server")
    assert "cross-device rule" in hw.efficiency.note and hw.efficiency.attention_kernel == "fa2"


def test_an_edited_copy_carries_the_calibration_and_says_so(tmp_path):
    """More SMs and a slower memory on a copy of the H100: fractions stay, the tile times follow the new latency,
    and the note says the calibration was carried, not fit."""
    def edit(d):
        d["name"] = "h100-edited"
        d["compute"]["units"] = 160
        d["memory"]["hbm"]["latency_s"] = 2 * float(d["memory"]["hbm"]["latency_s"])
    hw = load_hardware(_copy(tmp_path, "h100-sxm", edit))
    h100 = load_hardware("h100-sxm")
    assert not transfer.is_own(hw)
    assert hw.efficiency.note.startswith("calibration carried") and "units 132 -> 160" in hw.efficiency.note
    assert hw.efficiency.tensor == pytest.approx(h100.efficiency.tensor)
    # a row kernel's pass is a round trip: twice as long; an attention tile's serial time is the kernel's own
    assert hw.efficiency.row_kernel_s == pytest.approx(2 * h100.efficiency.row_kernel_s)
    assert hw.efficiency.attention_tile_s == pytest.approx(h100.efficiency.attention_tile_s)


def test_cross_device_rule_is_the_median_in_device_independent_units(tmp_path):
    def edit(d):
        d["name"] = "new-gpu"
        d["compute"]["architecture"] = "unknown-arch"
        d["compute"].pop("sm_version", None)
        d["efficiency"] = {"note": "datasheet defaults, not calibrated"}
    hw = load_hardware(_copy(tmp_path, "h100-sxm", edit))
    assert "cross-device rule" in hw.efficiency.note
    sources = [load_hardware(n) for n in CALIBRATED]
    expect = statistics.median(s.efficiency.tensor for s in sources)
    assert hw.efficiency.tensor == pytest.approx(expect)
    # the tile time is a family constant: an unknown architecture runs FlashAttention-2, so the median of the FA2
    # devices' tile times in seconds
    assert hw.efficiency.attention_kernel == "fa2"
    tiles = [s.efficiency.attention_tile_s for s in sources if s.efficiency.attention_kernel == "fa2"]
    assert len(tiles) == 2 and hw.efficiency.attention_tile_s == pytest.approx(statistics.median(tiles))
    # the cache fraction: the median of the devices whose GEMM kernels load operands per CTA, as an unknown
    # architecture's do (A100 and L40S), not of the multicasting H100 and GB200
    per_cta = [s.efficiency.memory_fraction(transfer._cache(s)) for s in sources
               if transfer._sharing(s) == (1.0, 1.0)]
    assert len(per_cta) == 2 and hw.efficiency.memory_fraction("l2") == pytest.approx(statistics.median(per_cta))
    assert "cache fraction from" in hw.efficiency.note
    # a row kernel's pass: the median in main-memory round trips
    lat = hw.memory["hbm"].latency_s
    rts = [s.efficiency.row_kernel_s / s.memory[s.main_memory].latency_s for s in sources]
    assert hw.efficiency.row_kernel_s / lat == pytest.approx(statistics.median(rts))
    # a kernel's fixed cost is the GPU's own work timed from graph replays: the median in SM clock cycles
    cycles = statistics.median(s.efficiency.launch_s * s.compute.clock_hz for s in sources)
    assert hw.efficiency.launch_s * hw.compute.clock_hz == pytest.approx(cycles)


def test_an_edited_clock_scales_the_fixed_costs(tmp_path):
    """A copy of the H100 clocked 20% lower: its kernels' fixed costs, counted in cycles, take 1.25x as long."""
    def edit(d):
        d["name"] = "h100-slow"
        d["compute"]["clock_hz"] = 0.8 * float(d["compute"]["clock_hz"])
        d["compute"]["boost_clock_hz"] = 0.8 * float(d["compute"]["boost_clock_hz"])
    with pytest.warns(Warning):  # the peaks now disagree with the clock (specs/sanity.py)
        hw = load_hardware(_copy(tmp_path, "h100-sxm", edit))
    h100 = load_hardware("h100-sxm")
    assert hw.efficiency.launch_s == pytest.approx(1.25 * h100.efficiency.launch_s)
    assert hw.efficiency.attention_overhead_s == pytest.approx(1.25 * h100.efficiency.attention_overhead_s)


def test_transfer_never_draws_from_the_target_itself():
    h100 = load_hardware("h100-sxm")
    datasheet = h100.model_copy(update={"efficiency": Efficiency()})
    moved = transfer.transfer(datasheet, [load_hardware(n) for n in CALIBRATED])
    assert "h100-sxm" not in re.sub(r"attention-kernel values.*", "", moved.efficiency.note.split("median")[1])


def test_memory_figures_left_out_come_from_the_rule(tmp_path):
    def edit(d):
        d["name"] = "my-ada-card"
        for key in ("bandwidth_bytes_per_s", "latency_s"):
            d["memory"]["l2"].pop(key)
        d["memory"]["gddr"].pop("latency_s")
        d["efficiency"] = {"note": "datasheet defaults, not calibrated"}
    hw = load_hardware(_copy(tmp_path, "l40s", edit))
    l40s = load_hardware("l40s")
    assert hw.memory["l2"].bandwidth_bytes_per_s == pytest.approx(l40s.memory["l2"].bandwidth_bytes_per_s)
    assert hw.memory["gddr"].latency_s == pytest.approx(l40s.memory["gddr"].latency_s)
    assert hw.memory["l2"].source == "transfer" and "same family" in hw.sources["transfer"]


def test_main_memory_bandwidth_cannot_be_left_out(tmp_path):
    from perfmodel.errors import SpecError

    def edit(d):
        d["name"] = "no-bandwidth"
        d["memory"]["hbm"].pop("bandwidth_bytes_per_s")
    with pytest.raises(SpecError, match="memory.hbm.bandwidth_bytes_per_s"):
        load_hardware(_copy(tmp_path, "h100-sxm", edit))
