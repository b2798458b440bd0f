"""`perfmodel predict --trace`: a whole generation step as Chrome / Perfetto trace JSON."""
from __future__ import annotations

import json
from collections import Counter

import pytest

from perfmodel.cli.main import main
from perfmodel.specs.model import load_model


def _trace(tmp_path, capsys, *extra: str) -> dict:
    path = tmp_path / "trace.json"
    assert main(["predict", "--trace", str(path), *extra]) == 0
    capsys.readouterr()
    return json.loads(path.read_text())


def test_trace_is_a_whole_step_with_names_streams_and_counters(tmp_path, capsys):
    doc = _trace(tmp_path, capsys)
    events = doc["traceEvents"]
    assert {e["ph"] for e in events} == {"M", "X", "C"}
    assert all({"name", "ph", "ts", "pid", "tid"} <= set(e) for e in events)
    ts = [e["ts"] for e in events]
    assert ts == sorted(ts) and all(t >= 0 for t in ts)  # monotone timestamps
    threads = {e["args"]["name"] for e in events if e["ph"] == "M" and e["name"] == "thread_name"}
    assert threads == {"stream 0"}
    kernels = [e for e in events if e["ph"] == "X" and e["pid"] == 0 and not e["name"].startswith("launch ")]
    layers = load_model("llama-3.1-8b").num_hidden_layers
    names = Counter(e["name"] for e in kernels)
    assert names["layer.qkv_proj"] == names["layer.attention"] == names["layer.down_proj"] == layers
    assert names["embed"] == names["lm_head"] == 1  # one whole decode step, every layer
    assert all(e["dur"] > 0 and e["tid"] == 0 for e in kernels)
    assert {e["args"]["step"] for e in kernels} == {127} and {e["args"]["phase"] for e in kernels} == {"decode"}
    assert sorted({e["args"]["layer"] for e in kernels if "layer" in e["args"]}) == list(range(layers))
    starts = [e["ts"] for e in kernels]
    assert starts == sorted(starts)  # one stream: kernels in launch order, one after another
    assert all(a["ts"] + a["dur"] <= b["ts"] + 1e-6 for a, b in zip(kernels, kernels[1:]))
    counters = [e for e in events if e["ph"] == "C"]
    assert {e["name"] for e in counters} == {"bytes in flight", "bandwidth (B/s)"}
    assert {"hbm", "l2"} <= set(counters[0]["args"])
    assert max(e["args"]["hbm"] for e in counters if e["name"] == "bytes in flight") > 0
    assert counters[-1]["args"]["hbm"] == 0  # nothing in flight after the last kernel
    assert doc["otherData"]["simulated_s"] > 0


def test_trace_step_range(tmp_path, capsys):
    doc = _trace(tmp_path, capsys, "--scenario", "block-dlm", "--model", "llada-8b", "--trace-steps", "0:2")
    kernels = [e for e in doc["traceEvents"] if e["ph"] == "X" and e["pid"] == 0 and e["name"] == "lm_head"]
    assert [e["args"]["step"] for e in kernels] == [0, 1, 2]


@pytest.mark.parametrize("steps", ["3:1", "x", "-1", "0:100000"])
def test_a_bad_step_range_is_one_message(tmp_path, capsys, steps):
    assert main(["predict", "--trace", str(tmp_path / "t.json"), "--trace-steps", steps]) == 2
    err = capsys.readouterr().err
    assert "--trace-steps" in err and "Traceback" not in err
    assert not (tmp_path / "t.json").exists()
