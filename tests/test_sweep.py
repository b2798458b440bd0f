"""Sweeps: the vectorised grid equals predict point by point, what-if physics, resume, Dask, CLI and errors."""
from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from perfmodel.api import predict
from perfmodel.errors import SpecError
from perfmodel.sweep import evaluate, parts_dir, run_sweep
from perfmodel.sweep.evaluation import BOUND_PREFIX, summary_row
from perfmodel.aggregate import METRICS
from perfmodel.sweep.grid import chunks, grid_from_dict, resolve_value

HBM = "hardware.memory.hbm.bandwidth_bytes_per_s"
HAS_EVENT = importlib.util.find_spec("perfmodel.engines.event") is not None


def _overrides(row: pd.Series, columns) -> dict:
    """The ``predict`` overrides of a table row: its parameter columns (``scenario.steps`` routes like ``steps``)."""
    return {k: (row[k].item() if hasattr(row[k], "item") else row[k]) for k in columns}


def _assert_row_equals_predict(row: pd.Series, columns, engine: str = "analytic") -> None:
    pred = predict(row["hardware"], row["model"], row["scenario"], _overrides(row, columns), engine=engine)
    expected = summary_row(pred.summary)
    for key in METRICS:
        got, want = row[key], expected[key]
        if isinstance(want, (str, bool)):
            assert got == want, (key, got, want, dict(row))
        else:
            assert np.isclose(got, want, rtol=1e-9, atol=0.0), (key, got, want, dict(row))
    for col in row.index:
        if col.startswith(BOUND_PREFIX):
            assert np.isclose(row[col], expected.get(col, 0.0), rtol=1e-9, atol=1e-15), (col, dict(row))


def test_vectorised_sweep_equals_predict_on_a_random_sample():
    grid = grid_from_dict({
        "hardware": ["h100-sxm", "a100-sxm-80gb"],
        "models": ["llama-3.1-8b", "qwen3-8b"],
        "scenarios": ["arm", "kv-int4", "dlm", "block-dlm", "squeezed-attention"],
        "parameters": {HBM: ["x1", "x2"], "batch": [1, 7, 32], "prompt_len": [128, 1500],
                       "gen_len": [1, 64, 300], "steps": [16, 64], "tensor_parallel": [1, 2],
                       "kv_cache.bits": [4, 8]},
    })
    df = evaluate(grid)
    assert len(df) == grid.size and list(df.point) == list(range(grid.size))
    assert "scenario.steps" in df.columns and "steps" in df.columns  # a parameter and a metric of that name
    assert set(df.bound) <= {"compute", "l2", "hbm", "link", "launch", "none"}
    rng = np.random.default_rng(7)
    for i in rng.choice(len(df), size=10, replace=False):
        _assert_row_equals_predict(df.iloc[i], grid.columns)


def test_point_numbers_follow_the_grid_order_and_multipliers_resolve_per_device():
    grid = grid_from_dict({"hardware": ["h100-sxm", "h200-sxm"], "parameters": {HBM: ["x1", "x2"], "batch": [1, 4]}})
    df = evaluate(grid)
    assert list(df.hardware) == ["h100-sxm"] * 4 + ["h200-sxm"] * 4
    assert list(df.batch) == [1, 4, 1, 4, 1, 4, 1, 4]
    h100 = df[df.hardware == "h100-sxm"][HBM].unique()
    assert list(h100) == [3.35e12, 6.7e12]
    assert resolve_value("x1.5", 4, "g", "k") == 6 and resolve_value("x0.5", 3.0, "g", "k") == 1.5


def test_doubling_hbm_bandwidth_halves_memory_bound_arm_decode():
    grid = grid_from_dict({"models": ["llama-3.1-8b"], "scenarios": ["arm"],
                           "parameters": {HBM: ["x1", "x2"], "batch": [1]}})
    df = evaluate(grid)
    fixed = []
    for bw in df[HBM]:
        ops = predict("h100-sxm", "llama-3.1-8b", "arm", {HBM: bw}).ops
        gen = ops[ops.phase == "decode"]
        fixed.append(float((gen.overhead_s * gen["count"]).sum()))  # launch and latency terms
    streamed = df.decode_s.to_numpy() - np.array(fixed)
    # Halved for the weight streams; the smaller projections' latency-paced K loops and decode attention's
    # dependent-load chain do not shrink with bandwidth (see test_analytic's what-if), so a little less than half.
    assert 0.5 < streamed[1] / streamed[0] < 0.56
    assert (df.bound == "hbm").all()


def test_doubling_hbm_bandwidth_barely_moves_a_long_dlm_denoising_run():
    grid = grid_from_dict({"models": ["llada-8b"], "scenarios": ["dlm"],
                           "parameters": {HBM: ["x1", "x2"], "prompt_len": [2048], "gen_len": [512],
                                          "steps": [64]}})
    df = evaluate(grid)
    assert df.decode_s.iloc[1] / df.decode_s.iloc[0] > 0.9
    assert df.arithmetic_intensity.iloc[0] > 500


def test_chunks_are_rectangular_blocks_with_stable_keys():
    grid = grid_from_dict({"parameters": {"batch": list(range(1, 11)), "gen_len": [8, 16, 32]}})
    first = list(chunks(grid, 7))
    assert sum(c.size for c in first) == 30 and max(c.size for c in first) <= 7
    assert sorted(np.concatenate([c.points() for c in first])) == list(range(30))
    assert [c.key for c in first] == [c.key for c in chunks(grid, 7)]
    assert len({c.key for c in first}) == len(first)


def test_dask_and_in_process_runs_write_the_same_table(tmp_path):
    grid = grid_from_dict({"scenarios": ["arm", "kv-int8"], "parameters": {"batch": [1, 16], "gen_len": [32, 64]}})
    local = run_sweep(grid, tmp_path / "local.parquet", chunk_size=3, use_dask=False)
    dask = run_sweep(grid, tmp_path / "dask.parquet", chunk_size=3, use_dask=True, workers=1)
    pd.testing.assert_frame_equal(pd.read_parquet(local.output), pd.read_parquet(dask.output))
    assert dask.used_dask and not parts_dir(tmp_path / "dask.parquet").exists()


def test_a_damaged_part_is_recomputed_not_trusted(tmp_path):
    grid = grid_from_dict({"parameters": {"batch": [1, 2, 4, 8], "gen_len": [16, 32]}})
    first = run_sweep(grid, tmp_path / "a.parquet", chunk_size=2, keep_parts=True)
    parts = sorted(parts_dir(first.output).glob("*.parquet"))
    assert len(parts) == 4 and first.resumed_chunks == 0
    parts[1].write_bytes(b"not parquet")
    again = run_sweep(grid, tmp_path / "a.parquet", chunk_size=2)
    assert again.resumed_chunks == 4
    pd.testing.assert_frame_equal(again.table, first.table)


@pytest.mark.skipif(not HAS_EVENT, reason="perfmodel.engines.event is not there yet")
def test_event_engine_sweep_runs_point_by_point_through_dask(tmp_path):
    grid = grid_from_dict({"parameters": {"batch": [1, 4], "gen_len": [8, 16]}})
    result = run_sweep(grid, tmp_path / "event.parquet", engine="event", chunk_size=2, workers=1)
    df = pd.read_parquet(result.output)
    assert len(df) == 4 and (df.engine == "event").all()
    _assert_row_equals_predict(df.iloc[3], grid.columns, engine="event")


# -- CLI ---------------------------------------------------------------------------------------------------
def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "perfmodel.cli.main", *args]


def test_an_interrupted_sweep_resumes_and_ends_with_the_same_table(tmp_path):
    grid = tmp_path / "grid.yaml"
    grid.write_text("models: [llama-3.1-8b, qwen3-8b]\nscenarios: [arm, kv-int4, block-dlm]\n"
                    "parameters:\n  hardware.memory.hbm.bandwidth_bytes_per_s: [x1, x2]\n"
                    "  batch: [1, 2, 4, 8, 16, 32, 64, 128]\n  prompt_len: [256, 1024]\n")
    full = tmp_path / "full.parquet"
    subprocess.run(_cli("sweep", str(grid), "-o", str(full), "--chunk-size", "8", "--no-progress"), check=True,
                   capture_output=True)
    out = tmp_path / "resumed.parquet"
    parts = parts_dir(out)
    proc = subprocess.Popen(_cli("sweep", str(grid), "-o", str(out), "--chunk-size", "4", "--no-progress"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if parts.is_dir() and len(list(parts.glob("*.parquet"))) >= 3:
            break
        time.sleep(0.01)
    assert proc.poll() is None, "the sweep finished before it could be interrupted"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = {p.name: p.stat().st_mtime_ns for p in parts.glob("*.parquet")}
    assert done_before and not out.exists()
    rerun = subprocess.run(_cli("sweep", str(grid), "-o", str(out), "--chunk-size", "4", "--no-progress",
                                "--keep-parts"), check=True, capture_output=True, text=True)
    assert "resumed:" in rerun.stderr
    for name, mtime in done_before.items():  # finished parts were not redone
        assert (parts / name).stat().st_mtime_ns == mtime
    pd.testing.assert_frame_equal(pd.read_parquet(out), pd.read_parquet(full))


def test_cli_help_and_printed_table(capsys, tmp_path):
    from perfmodel.cli.main import main

    with pytest.raises(SystemExit):
        main(["sweep", "--help"])
    text = capsys.readouterr().out
    assert "grid file (YAML)" in text and "--scheduler" in text and "x1.5" in text
    grid = tmp_path / "g.yaml"
    grid.write_text("parameters:\n  batch: [1, 8]\n")
    assert main(["sweep", str(grid), "--json", "--no-progress"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["batch"] for r in rows] == [1, 8] and rows[0]["latency_s"] > 0


@pytest.mark.parametrize("text, field, value", [
    ("parameters:\n  batch: [1, -3]\n", "parameters.batch", "-3"),
    ("parameters:\n  hardware.memory.hbm.bandwidth_bytes_per_s: [x2, fast]\n",
     "parameters.hardware.memory.hbm.bandwidth_bytes_per_s", "fast"),
    ("parameters:\n  kv_cache.format: [int4, int3]\n", "parameters.kv_cache.format", "int3"),
    ("parameters:\n  method: [x2]\n", "parameters.method", "x2"),
    ("hardware: [h100-sxm, h1000]\n", "hardware", "h1000"),
    ("sweeps:\n  batch: [1]\n", "sweeps", "batch"),
])
def test_grid_errors_name_the_field_and_the_value(tmp_path, capsys, text, field, value):
    from perfmodel.cli.main import main

    grid = tmp_path / "bad.yaml"
    grid.write_text(text)
    assert main(["sweep", str(grid), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"field '{field}'" in err and value in err and str(grid) in err


def test_grid_with_a_bad_structure_is_refused():
    with pytest.raises(SpecError, match="parameters"):
        grid_from_dict({"parameters": [1, 2]})
    with pytest.raises(SpecError, match="parameters.batch"):
        grid_from_dict({"parameters": {"batch": []}})


def test_example_grids_load():
    from perfmodel.sweep import load_grid

    folder = Path(__file__).resolve().parents[1] / "workloads" / "grids"
    for path in sorted(folder.glob("*.yaml")):
        grid = load_grid(path)
        assert grid.size >= 1
        next(chunks(grid, 1000))


def _relative_gap(got: np.ndarray, want: np.ndarray) -> float:
    got, want = np.asarray(got, dtype=float), np.asarray(want, dtype=float)
    same = (got == want) | (np.isnan(got) & np.isnan(want))
    with np.errstate(divide="ignore", invalid="ignore"):
        gap = np.abs(got - want) / np.maximum(np.abs(want), np.finfo(float).tiny)
    return float(np.max(np.where(same, 0.0, gap), initial=0.0))


@pytest.mark.parametrize("hardware, model, scenarios, parameters", [
    # FA3 (Hopper), FA2 (Ampere), TensorRT-LLM (Blackwell) and a CPU; dense, quantised and sparse caches
    (["h100-sxm", "a100-sxm-80gb", "b200-sxm"], "llama-3.1-8b",
     ["arm", "kv-int4", "block-dlm", "squeezed-attention"],
     {HBM: ["x1", "x2"], "batch": [1, 96], "prompt_len": [3000], "gen_len": [1, 40, 700], "tensor_parallel": [1, 4]}),
    (["cpu-generic", "mi300x"], "qwen3-8b", ["arm", "dlm", "fast-dllm-dual", "xquant"],
     {"batch": [1, 24], "prompt_len": [200, 2048], "gen_len": [16, 333], "steps": [8]}),
])
def test_every_sweep_point_equals_predict_to_1e12(hardware, model, scenarios, parameters):
    """Every row of a sweep against ``predict`` at that point: equal to 1e-12 of each value (the sweep totals
    equal ops once with their counts added and stacks ops over the grid; the order of the additions differs)."""
    grid = grid_from_dict({"hardware": hardware, "models": [model], "scenarios": scenarios, "parameters": parameters})
    df = evaluate(grid)
    assert list(df.point) == list(range(grid.size))
    worst: dict[str, float] = {}
    for _, row in df.iterrows():
        pred = predict(row["hardware"], row["model"], row["scenario"], _overrides(row, grid.columns))
        expected = summary_row(pred.summary)
        for key in (*METRICS, *(c for c in df.columns if c.startswith(BOUND_PREFIX))):
            want = expected.get(key, 0.0)
            if isinstance(want, (str, bool, np.bool_)):
                assert row[key] == want, (key, row[key], want, dict(row))
            else:
                worst[key] = max(worst.get(key, 0.0), _relative_gap(row[key], want))
    assert max(worst.values()) <= 1e-12, {k: v for k, v in worst.items() if v > 1e-12}


def test_in_memory_sweep_equals_the_sweep_written_in_parts(tmp_path):
    grid = grid_from_dict({"hardware": ["h100-sxm", "a100-sxm-80gb"], "scenarios": ["arm", "kv-int8"],
                           "parameters": {HBM: ["x1", "x2"], "batch": [1, 16, 64], "gen_len": [32, 64],
                                          "tensor_parallel": [1, 2]}})
    written = run_sweep(grid, tmp_path / "t.parquet", chunk_size=5, use_dask=False)
    pd.testing.assert_frame_equal(evaluate(grid, chunk_size=7), written.table)
    pd.testing.assert_frame_equal(evaluate(grid), pd.read_parquet(written.output))
