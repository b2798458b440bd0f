"""The closed form of a lone kernel (perfmodel/engines/event_lone.py) against the SimPy simulation it stands in
for: the same number, to 1e-9 relative, on randomised kernels and GPUs; None wherever it cannot promise that.

The tiny GPU of the hand-worked case has 2 SMs and 1 GB/s of HBM, as in test_event_engine.py.
"""
from __future__ import annotations

import random

import numpy as np
import pytest

from perfmodel import ops
from perfmodel.engines import event
from perfmodel.engines.event_gpu import GpuConfig, Kernel, TileClass, simulate
from perfmodel.engines.event_lone import exact_time, lone_kernel_time, merged_classes
from perfmodel.specs.hardware import load_hardware

GB = 1e9
TINY = GpuConfig(sms=2, bandwidth_bytes_per_s={"hbm": 1 * GB})


def _config(rng: random.Random) -> GpuConfig:
    sms = rng.randint(1, 6)
    bandwidth = {"l2": rng.uniform(2, 8) * GB, "hbm": rng.uniform(0.5, 2) * GB}
    port = {}
    if rng.random() < 0.6:  # a per-SM port on every level, sometimes below the per-tile share
        per_sm = rng.uniform(0.1, 3) * GB
        port = {"l2": per_sm, "hbm": per_sm}
    return GpuConfig(sms, bandwidth, port, launch_s=rng.choice([0.0, 0.3]))


def _class(rng: random.Random, paced: bool) -> TileClass:
    """A tile class; ``paced``: a long floor, so that its tiles keep their own pace whatever else runs."""
    compute = rng.choice([0.0, rng.uniform(0.1, 2)])
    moved = {level: rng.choice([0.0, rng.uniform(0.05, 1) * GB]) for level in ("l2", "hbm") if rng.random() < 0.8}
    floor = rng.uniform(20, 40) if paced else rng.choice([0.0, rng.uniform(0.1, 2)])
    return TileClass(rng.randint(1, 30), compute, moved, rng.choice([0.0, rng.uniform(0.1, 1)]), floor)


def _kernel(rng: random.Random) -> Kernel:
    paced = rng.random() < 0.5
    classes = [_class(rng, paced) for _ in range(rng.randint(1, 6))]
    if rng.random() < 0.3:  # a run of identical classes (decode attention's blocks)
        classes = [classes[0]] * len(classes)
    return Kernel("k", tuple(classes), rng.randint(1, 4), rng.choice([0.0, rng.uniform(0.1, 1)]),
                  rng.choice([0.0, 0.7]))


def test_closed_form_equals_the_simulation_on_random_kernels():
    rng = random.Random(16)
    closed = 0
    for _ in range(400):
        config, kernel = _config(rng), _kernel(rng)
        t = exact_time(kernel, config)
        if t is None:
            continue
        closed += 1
        assert t == pytest.approx(simulate([kernel], config).end, rel=1e-9, abs=1e-12), (kernel, config)
    assert closed > 200  # most of them have a closed form: the test is not vacuous


def test_list_schedule_on_the_tiny_gpu():
    # Two SMs, one tile each. Class a: 2 tiles of 3 s (their floor; 0.5 GB each needs at most 1 s even sharing
    # the 1 GB/s), class b: 3 tiles of 1 s. At 0 both a tiles start (end at 3); b's tiles take both SMs at 3
    # (end at 4), then the last one at 4 (ends at 5).
    a = TileClass(2, bytes={"hbm": 0.5 * GB}, min_s=3.0)
    b = TileClass(3, bytes={"hbm": 0.25 * GB}, min_s=1.0)
    kernel = Kernel("k", (a, b))
    assert simulate([kernel], TINY).end == 5.0
    assert exact_time(kernel, TINY) == 5.0


def test_no_closed_form_when_tiles_share_bandwidth_unevenly():
    # Unequal transfers sharing HBM: the short one speeds the long one up when it leaves, which only the
    # simulation follows.
    kernel = Kernel("k", (TileClass(1, bytes={"hbm": GB}), TileClass(1, bytes={"hbm": 0.5 * GB})))
    assert exact_time(kernel, TINY) is None
    assert simulate([kernel], TINY).end == 1.5


def test_identical_classes_run_as_one():
    cls = TileClass(3, compute_s=0.5, bytes={"hbm": 0.2 * GB}, serial_s=0.1)
    split = Kernel("k", (cls, cls, TileClass(2, compute_s=0.5, bytes={"hbm": 0.2 * GB}, serial_s=0.1)))
    merged = merged_classes(split.tiles)
    assert merged == (TileClass(8, compute_s=0.5, bytes={"hbm": 0.2 * GB}, serial_s=0.1),)
    whole = Kernel("k", merged)
    assert simulate([split], TINY).end == pytest.approx(simulate([whole], TINY).end, rel=1e-12)
    assert exact_time(split, TINY) == pytest.approx(lone_kernel_time(whole, TINY), rel=1e-12)


H100 = load_hardware("h100-sxm")
A100 = load_hardware("a100-sxm-80gb")


@pytest.mark.parametrize("hw", [H100, A100], ids=["h100", "a100"])
@pytest.mark.parametrize("op", [ops.attention("prefill", 2, 1500, 1500, 32, 8, 128),
                                ops.attention("chunk", 3, 256, 4096, 32, 8, 128),
                                ops.attention("bidir", 1, 700, 700, 16, 16, 64, mask="bidirectional"),
                                ops.attention("decode", 7, 1, 3000, 32, 8, 128),
                                ops.gemm("gemm", 3000, 5000, 700)],
                         ids=["prefill", "chunked-prefill", "bidirectional", "decode", "gemm"])
def test_event_engine_times_real_kernels_as_simulated(op, hw):
    kernel, config = event.kernel_for(op, hw), event.gpu_config(hw)
    assert event.time_ops([op], hw).time[0] == pytest.approx(simulate([kernel], config).end, rel=1e-9)


@pytest.mark.parametrize("hw", ["h100-sxm", "l40s", "cpu-generic"])
def test_time_points_equals_time_ops_point_by_point(hw):
    hw = load_hardware(hw)
    m = np.array([1.0, 64, 3000, 0])
    batch, q = np.array([1.0, 4, 2, 8]), np.array([1.0, 1, 900, 17])
    op_list = [ops.gemm("g", m, 4096, 1024), ops.attention("a", batch, q, q + 100, 32, 8, 128),
               ops.elementwise("e", m, 4096), ops.norm("n", 64, 4096)]
    rows = event.time_points(op_list, hw)
    assert rows.time.shape == rows.bound.shape == (4, 4)
    for i in range(4):
        one = event.time_ops([ops.point(op, i) for op in op_list], hw)
        np.testing.assert_allclose(rows.time[:, i], one.time, rtol=1e-12)
        assert list(rows.bound[:, i]) == list(one.bound)
