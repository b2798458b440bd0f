"""Model against measurement: compare, the efficiency fit, the validate/fit commands and the CPU loop end to end."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from perfmodel.cli.main import main
from perfmodel.validation.compare import predict_table, reuse_factor, summarize_errors
from perfmodel.validation.fit import SUBSETS, calibration_mask, fit_efficiency


@pytest.fixture(scope="module")
def h100_table(tmp_path_factory):
    from tests.conftest import MEASURED

    src = MEASURED / "aiconfigurator" / "h100_sxm"
    if not src.is_dir():
        pytest.skip(f"public measurements not found at {src}")
    out = tmp_path_factory.mktemp("aic") / "h100.parquet"
    assert main(["import", "aiconfigurator", str(src), "-o", str(out)]) == 0
    return pd.read_parquet(out)


def test_reuse_factor_conventions():
    assert reuse_factor("perfmodel-measure:cpu:x:rot=5", "gemm") == 5
    assert reuse_factor("aiconfigurator/h100_sxm/gemm:linear", "gemm") == 6
    assert reuse_factor("aiconfigurator/h100_sxm/generation:fa3", "attention") == 1  # the same call replayed
    assert math.isinf(reuse_factor("vidur/a100/mlp.csv", "gemm"))


def test_public_table_predictions_are_finite_and_ranked(h100_table):
    sample = pd.concat([g.sample(n=min(len(g), 400), random_state=0) for _, g in h100_table.groupby("op")])
    pred = predict_table(sample, "h100-sxm")
    assert np.isfinite(pred.predicted_s).all() and (pred.predicted_s > 0).all()
    errors = summarize_errors(pred)
    for scope in [errors["overall"], *errors["by_op"].values()]:
        assert set(scope) == {"rows", "median_ape_pct", "p90_ape_pct", "spearman"}
        assert scope["spearman"] > 0.9  # the model orders kernels by duration
    assert set(errors["by_op"]) == {"gemm", "attention"}


def test_fit_uses_only_calibration_rows_and_improves_them(h100_table):
    mask = calibration_mask(h100_table, SUBSETS)
    assert 0 < mask.sum() < 0.1 * len(h100_table)  # a small, named subset
    hw, report = fit_efficiency(h100_table, "h100-sxm")
    assert report["rows"] == int(mask.sum())
    eff = report["efficiency"]
    assert 0.2 <= eff["tensor"] <= 1.0 and 0.1 <= eff["hbm"] <= 1.0 and eff["launch_s"] >= 0
    rows = h100_table[mask]
    from perfmodel.specs.hardware import Efficiency, load_hardware

    spec = load_hardware("h100-sxm")
    defaults = spec.model_copy(update={"efficiency": Efficiency()})
    measured = rows.measured_s.to_numpy()
    before = np.log(predict_table(rows, defaults).predicted_s.to_numpy() / measured)
    after = np.log(predict_table(rows, hw).predicted_s.to_numpy() / measured)
    assert np.sqrt(np.mean(after**2)) < 0.8 * np.sqrt(np.mean(before**2))  # the fit removes a real part of the error


def test_validate_command_writes_outputs(h100_table, tmp_path, capsys):
    table = tmp_path / "t.csv"
    h100_table.sample(n=300, random_state=1).to_csv(table, index=False)
    out = tmp_path / "val"
    assert main(["validate", str(table), "--out", str(out), "--json"]) == 0
    errors = json.loads(capsys.readouterr().out)
    assert errors["overall"]["rows"] == 300
    assert (out / "predictions.csv").is_file() and (out / "scatter.png").stat().st_size > 0
    assert json.loads((out / "errors.json").read_text())["by_op"]


def test_validate_event_engine_on_a_sample(h100_table, tmp_path, capsys):
    table = tmp_path / "t.parquet"
    h100_table.sample(n=40, random_state=2).to_parquet(table)
    assert main(["validate", str(table), "--engine", "event", "--json"]) == 0
    errors = json.loads(capsys.readouterr().out)
    assert errors["engine"] == "event" and errors["overall"]["rows"] == 40
    assert errors["overall"]["median_ape_pct"] < 100


def test_validate_missing_file_is_an_error(tmp_path, capsys):
    assert main(["validate", str(tmp_path / "nope.parquet")]) == 2
    assert "nope.parquet" in capsys.readouterr().err


def test_cpu_loop_end_to_end(tmp_path, capsys):
    """calibrate → measure → fit → validate on this machine's CPU: the pipeline runs and gives finite numbers."""
    spec = tmp_path / "host.yaml"
    table = tmp_path / "cpu.parquet"
    assert main(["calibrate", "--device", "cpu", "--sizes", "small", "-o", str(spec)]) == 0
    assert main(["measure", "--device", "cpu", "--suite", "tiny", "--no-bf16", "--samples", "2", "--target-ms", "1",
                 "--no-progress", "--hardware", str(spec), "-o", str(table)]) == 0
    capsys.readouterr()
    assert main(["validate", str(table), "--json"]) == 0
    errors = json.loads(capsys.readouterr().out)
    assert errors["overall"]["rows"] > 0
    for stats in errors["by_op"].values():
        assert math.isfinite(stats["median_ape_pct"]) and stats["median_ape_pct"] >= 0


def test_eager_kernels_of_the_measurement_runner():
    import pandas as pd

    from perfmodel.validation.compare import row_ops

    def rows(op, variant, dtype="fp32", device="cpu", **shape):
        d = {"hardware": "cpu-generic", "op": op, "dtype": dtype, "variant": variant, "measured_s": 1e-3,
             "source": f"perfmodel-measure:{device}:host:torch=2:rot=1", **shape}
        return row_ops(pd.DataFrame([d]))

    silu = rows("elementwise", "silu_mul", m=8, n=64)
    assert [o.name for o in silu] == ["silu", "mul"]
    assert silu[0].shape["fresh_output"] and not silu[1].shape["fresh_output"]
    assert not rows("elementwise", "add", m=8, n=64)[0].shape["fresh_output"]
    norm = rows("norm", "rmsnorm", dtype="bf16", m=8, n=64)
    assert [o.name for o in norm][0] == "upcast" and norm[-1].name == "downcast"
    assert all(o.dtype == "fp32" for o in norm)
    assert len(rows("norm", "rmsnorm", device="cuda", m=8, n=64)) == 1  # fused on CUDA
    gemm = rows("gemm", "", m=4, n=64, k=64)
    assert len(gemm) == 1 and gemm[0].shape["fresh_output"]


def test_replayed_attention_cache_is_served_from_l2_when_it_fits():
    """The L40S decode rows stream a 33.5 MB cache at 1.2 TB/s, beyond its 864 GB/s GDDR6: the replayed call's cache
    sits in the 96 MB L2. The same call with a 134 MB cache streams from GDDR6."""
    rows = pd.DataFrame({"hardware": "l40s", "op": "attention", "dtype": "bf16", "batch": [1, 4],
                         "q_len": 1, "kv_len": [8191, 32767], "heads": 32, "kv_heads": 8, "head_dim": 128,
                         "causal": True, "measured_s": [27.3e-6, 841.6e-6],
                         "source": "aiconfigurator/l40s/attention/vllm/0.24.0/generation_attention_perf.parquet"})
    pred = predict_table(rows, "l40s")
    kv = 4.0 * rows.batch * rows.kv_len * 8 * 128
    rate = kv / pred.predicted_s
    assert rate.iloc[0] > 0.864e12 > rate.iloc[1]
