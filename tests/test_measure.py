"""`perfmodel measure`: the local runner writes the measurement table, appends as it goes and resumes."""
from __future__ import annotations

import math

import numpy as np
import pytest

from perfmodel.cli.main import main
from perfmodel.validation import measure as ms
from perfmodel.validation import microbench as mb
from perfmodel.validation.compare import reuse_factor
from perfmodel.validation.table import ALL_COLUMNS, read_table, write_table

FAST = mb.Budget(target_s=0.0005, samples=2, warmup_s=0.0)


def _has_cuda() -> bool:
    try:
        mb.check_device("cuda")
    except mb.DeviceUnavailable:
        return False
    return True


def test_tiny_suite_writes_the_table_layout(tmp_path, capsys):
    out = tmp_path / "cpu.parquet"
    assert main(["measure", "--device", "cpu", "--suite", "tiny", "--no-bf16", "--samples", "2", "--target-ms", "1",
                 "--no-progress", "-o", str(out)]) == 0
    assert "measured" in capsys.readouterr().out
    df = read_table(out)
    assert tuple(df.columns) == ALL_COLUMNS
    assert len(df) == len(ms.suite_cases("tiny"))
    t = df.measured_s.to_numpy(dtype=float)
    assert np.isfinite(t).all() and (t > 0).all()
    assert set(df.op) == {"gemm", "attention", "norm", "elementwise"}
    assert (df.hardware == "cpu-generic").all()
    assert df.source.str.startswith("perfmodel-measure:cpu:").all()
    assert df.source.str.contains("torch=").all()
    assert set(df[df.op == "elementwise"].variant) == {"add", "silu_mul"}
    assert set(df[df.op == "norm"].variant) == {"rmsnorm"}
    attn = df[df.op == "attention"]
    assert attn.causal.notna().all() and attn.head_dim.notna().all()
    # the rotation of every row is in its source, and compare reads it back
    from perfmodel.specs.hardware import load_hardware

    caps = ms.cache_capacities(load_hardware("cpu-generic"))
    for r in df.itertuples():
        case = ms.Case.make(r.op, r.dtype, r.variant,
                            **{key: getattr(r, key) for key in ms.SHAPE_KEYS if not _na(getattr(r, key))})
        assert reuse_factor(r.source, r.op) == ms.rotation_for(case, caps)
    timings = ms.timings_path(out)
    assert timings.is_file() and len(timings.read_text().splitlines()) == len(df) + 1


def test_resume_measures_only_missing_shapes(tmp_path):
    cases = ms.suite_cases("tiny")
    out = tmp_path / "cpu.csv"
    first = ms.measure(cases, out, budget=FAST, progress=False)
    assert first.measured == len(cases) and first.skipped == 0
    # an interrupted run: only the first k rows made it to the file
    k = 3
    write_table(read_table(out).head(k), out)
    measured = []
    second = ms.measure(cases, out, budget=FAST, progress=False, on_row=measured.append)
    assert second.skipped == k and second.measured == len(cases) - k
    want = {c.key("cpu-generic") for c in cases[k:]}
    got = {ms.Case.make(r["op"], r["dtype"], r["variant"],
                        **{key: r[key] for key in ms.SHAPE_KEYS if r[key] is not None}).key("cpu-generic")
           for r in measured}
    assert got == want
    df = read_table(out)
    assert len(df) == len(cases)
    assert {ms.Case.make(r.op, r.dtype, r.variant, **{key: getattr(r, key) for key in ms.SHAPE_KEYS
                                                      if not _na(getattr(r, key))}).key(r.hardware)
            for r in df.itertuples()} == {c.key("cpu-generic") for c in cases}
    # a third run has nothing to do; --no-resume starts afresh
    assert ms.measure(cases, out, budget=FAST, progress=False).measured == 0
    assert ms.measure(cases[:2], out, budget=FAST, progress=False, resume=False).measured == 2
    assert len(read_table(out)) == 2


def _na(v) -> bool:
    return v is None or v is __import__("pandas").NA or (isinstance(v, float) and math.isnan(v))


def test_rotation_keeps_footprints_clear_of_cache_edges():
    from perfmodel.specs.hardware import load_hardware

    hw = load_hardware("cpu-generic")
    caps = ms.cache_capacities(hw)
    assert caps == [hw.level_capacity_bytes(n) for n in ("l1", "l2", "l3")]
    small = ms.Case.make("gemm", "fp32", m=1, n=256, k=256)
    big = ms.Case.make("gemm", "fp32", m=1, n=8192, k=8192)
    assert ms.rotation_for(small, caps) == ms.DEFAULT_ROTATION
    assert ms.rotation_for(big, caps) == 1
    assert small.op_bytes() == pytest.approx(4 * (256 + 256 * 256 + 256))
    for n in (64, 96, 128, 512, 1024, 2048, 2900, 4096):
        case = ms.Case.make("elementwise", "fp32", "add", m=n, n=n)
        rot = ms.rotation_for(case, caps)
        footprint = rot * case.op_bytes()
        assert rot >= (ms.DEFAULT_ROTATION if case.op_bytes() <= caps[-1] else 1)
        assert not any(c < footprint <= 2 * c for c in caps), (n, rot, footprint)
    calls = ms.build_calls(small, "cpu", 3)
    assert len(calls) == 3 and tuple(calls[0]().shape) == (1, 256)


def test_source_and_hardware_label(tmp_path):
    src = ms.source_string("cpu", 4)
    assert src.startswith("perfmodel-measure:cpu:") and src.endswith(":rot=4")
    assert ms.source_string("cpu", 1, profiler=True).endswith(":rot=1:profiler")
    assert ms.hardware_label("cpu-generic") == "cpu-generic"
    spec = tmp_path / "host.yaml"
    assert ms.hardware_label(spec) == str(spec.resolve())


def test_suites_are_known_shapes():
    quick = ms.suite_cases("quick", bf16=True)
    assert len({c.key("x") for c in quick}) == len(quick)
    gemv = [c.dims["n"] for c in quick if c.op == "gemm" and c.dims["m"] == 1 and c.dims["n"] == c.dims["k"]]
    assert min(gemv) == 256 and max(gemv) == 8192
    kv = [c.dims["kv_len"] for c in quick if c.op == "attention" and c.dims["q_len"] == 1]
    assert min(kv) == 128 and max(kv) == 32768
    assert {c.dtype for c in quick if c.op == "attention"} == {"fp32"}
    assert len(ms.suite_cases("full")) > len(ms.suite_cases("quick"))
    with pytest.raises(ValueError, match="suite"):
        ms.suite_cases("huge")


def test_cuda_without_gpu_exits_2(tmp_path, capsys):
    if _has_cuda():
        pytest.skip("this machine has a CUDA device")
    out = tmp_path / "t.csv"
    assert main(["measure", "--device", "cuda", "--hardware", "h100-sxm", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "CUDA" in err and "no CUDA device" in err
    assert not out.exists()


def test_bad_table_suffix_is_an_error(tmp_path, capsys):
    assert main(["measure", "--suite", "tiny", "--no-progress", "-o", str(tmp_path / "t.txt")]) == 2
    assert ".csv or .parquet" in capsys.readouterr().err


def test_help(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["measure", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "--suite" in out and "--resume" in out and "rot=N" in out
