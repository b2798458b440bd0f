"""The end-to-end suite's pipeline on a tiny model: measure whole steps and runs with the reference, write them
as measurement rows, predict them like for like and report the error by method (the suite itself, with real
shapes, runs from the CLI: ``perfmodel measure --suite e2e``)."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from perfmodel.cli.main import main
from perfmodel.validation import compare
from perfmodel.validation.e2e import CPU_CASES, CUDA_CASES, Case, measure_e2e
from perfmodel.validation.e2e_predict import phase_predictions
from perfmodel.validation.table import read_table

TINY = """name: tiny
hidden_size: 128
num_hidden_layers: 2
num_attention_heads: 4
num_key_value_heads: 2
intermediate_size: 256
vocab_size: 500
"""


@pytest.fixture
def tiny(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY)
    return str(path)


def test_suite_rows_are_predicted_like_for_like(tiny, tmp_path, capsys):
    cases = [Case.make(tiny, "arm", prompt_len=16, gen_len=5),
             Case.make(tiny, "block-dlm", prompt_len=16, gen_len=8, block_size=4, steps_per_block=2)]
    out = tmp_path / "e2e.csv"
    result = measure_e2e(cases, out, repeats=2, progress=False)
    assert result.measured == 2 and result.skipped == 0
    table = read_table(out)
    steps = table[table.op == "step"]
    assert sorted(zip(steps.scenario, steps.phase)) == [("arm", "decode"), ("arm", "prefill"),
                                                       ("block-dlm", "commit"), ("block-dlm", "denoise"),
                                                       ("block-dlm", "prefill")]
    assert list(table[table.op == "run"].scenario) == ["arm", "block-dlm"]
    decode = steps[steps.phase == "decode"].iloc[0]
    assert int(decode.steps) == 4 and int(decode.repeats) == 2
    assert float(decode.q1_s) <= decode.measured_s <= float(decode.q3_s)
    # A run takes at least its steps: prefill + 4 decode steps.
    run = table[(table.op == "run") & (table.scenario == "arm")].iloc[0]
    prefill = steps[(steps.scenario == "arm") & (steps.phase == "prefill")].iloc[0]
    assert run.measured_s >= 0.99 * (prefill.measured_s + 4 * decode.measured_s)

    pred = compare.predict_table(table, "cpu-generic")
    assert (pred.predicted_s > 0).all() and pred.top_ops.str.contains("%").all()
    # Like for like: the decode row's prediction is the decode passes' time over their number.
    spec = decode.spec
    per = phase_predictions(__import__("perfmodel").specs.hardware.load_hardware("cpu-generic"), spec)
    assert pred.loc[decode.name, "predicted_s"] == pytest.approx(per["decode"]["time_s"])
    assert per[""]["time_s"] == pytest.approx(per["prefill"]["time_s"] + 4 * per["decode"]["time_s"])
    errors = compare.summarize_errors(pred)
    assert set(errors["by_method"]) == {"arm", "block-dlm"}
    assert errors["by_method"]["arm"]["rows"] == 2 and errors["by_method_run"]["arm"]["rows"] == 1

    # A rerun resumes: nothing left to measure.
    again = measure_e2e(cases, out, repeats=2, progress=False)
    assert (again.measured, again.skipped) == (0, 2)

    assert main(["validate", str(out), "--hardware", "cpu-generic", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report["by_method"]) == {"arm", "block-dlm"} and "step" in report["by_op"]


def test_mixed_tables_predict_kernel_and_step_rows(tiny, tmp_path):
    out = tmp_path / "e2e.csv"
    measure_e2e([Case.make(tiny, "dlm", prompt_len=8, gen_len=8, steps=2)], out, repeats=1, progress=False)
    e2e = read_table(out)
    kernel = pd.DataFrame([{"hardware": "cpu-generic", "op": "gemm", "dtype": "fp32", "m": 1, "n": 256, "k": 256,
                            "measured_s": 1e-5, "source": "perfmodel-measure:cpu:x:torch=2:rot=4"}])
    pred = compare.predict_table(pd.concat([kernel, e2e], ignore_index=True), "cpu-generic")
    assert list(pred.op) == ["gemm", "step", "run"] and pred.predicted_s.notna().all()


def test_bad_spec_is_a_clear_error(tiny, tmp_path):
    out = tmp_path / "e2e.csv"
    measure_e2e([Case.make(tiny, "dlm", prompt_len=8, gen_len=8, steps=2)], out, repeats=1, progress=False)
    table = read_table(out)
    table.loc[0, "spec"] = "{not json"
    with pytest.raises(ValueError, match="column 'spec' is not JSON"):
        compare.predict_table(table, "cpu-generic")


@pytest.mark.parametrize("cases", [CPU_CASES, CUDA_CASES])
def test_suites_cover_every_method_and_the_reference_runs_them(cases):
    from perfmodel.reference import check_supported

    wanted = {"arm", "dlm", "block-dlm", "fast-dllm-prefix", "fast-dllm-dual", "kv-int4", "xquant",
              "squeezed-attention", "multipole-attention"}
    assert wanted <= {c.scenario for c in cases}
    for case in cases:
        check_supported(*case.specs())


def test_gpu_script_measures_nothing_without_a_gpu(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present: the script would measure")
    repo = Path(__file__).resolve().parents[1]
    before = set((repo / "data" / "measured").iterdir())
    run = subprocess.run(["bash", str(repo / "benchmarks" / "gpu_e2e.sh")], capture_output=True, text=True,
                         env={**__import__("os").environ, "PATH": f"{Path(sys.executable).parent}:" +
                              __import__("os").environ.get("PATH", "")})
    assert run.returncode == 3 and "no CUDA device; nothing measured" in run.stderr
    assert set((repo / "data" / "measured").iterdir()) == before


def test_graph_timing_needs_cuda(tiny):
    from perfmodel.reference import Reference
    from perfmodel.specs.model import load_model
    from perfmodel.specs.scenario import load_scenario

    ref = Reference(load_model(tiny), load_scenario("arm", {"prompt_len": 8, "gen_len": 2}))
    with pytest.raises(ValueError, match="graph_replays=5: expected a CUDA device"):
        ref.run(graph_replays=5)
    with pytest.raises(ValueError, match="CUDA graphs need --device cuda"):
        measure_e2e([Case.make(tiny, "arm", prompt_len=8, gen_len=2)], tiny + ".csv", graph_replays=5,
                    progress=False)


def test_process_clock_needs_one_cpu_thread(tiny, tmp_path):
    import torch

    from perfmodel.reference import Reference
    from perfmodel.specs.model import load_model
    from perfmodel.specs.scenario import load_scenario

    ref = Reference(load_model(tiny), load_scenario("arm", {"prompt_len": 8, "gen_len": 3}))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        with pytest.raises(ValueError, match="clock='process' on cpu with 2 torch threads"):
            ref.run(clock="process")
        torch.set_num_threads(1)
        run = ref.run(clock="process")
        assert run.run_s > 0 and all(t.seconds >= 0 for t in run.times)
        out = tmp_path / "e2e.csv"
        measure_e2e([Case.make(tiny, "arm", prompt_len=8, gen_len=3)], out, repeats=1, clock="process",
                    progress=False)
        assert read_table(out).source.str.endswith("clock=process").all()
    finally:
        torch.set_num_threads(threads)


def test_microbenchmarks_can_time_with_the_process_clock():
    import time

    import torch

    from perfmodel.validation import microbench as mb

    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        with pytest.raises(ValueError, match="clock 'process' with 2 torch threads"):
            mb.set_cpu_clock("process")
        torch.set_num_threads(1)
        mb.set_cpu_clock("process")
        assert mb._CPU_CLOCK[0] is time.process_time
        x = torch.randn(256, 256)
        assert mb.time_cpu([lambda: x @ x], mb.Budget(target_s=0.005, samples=2)).median_s > 0
    finally:
        mb.set_cpu_clock("wall")
        torch.set_num_threads(threads)
    assert mb._CPU_CLOCK[0] is time.perf_counter
