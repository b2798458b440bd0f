"""One vocabulary: every command prints each quantity under the name, unit and rounding of perfmodel/schema.py."""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from perfmodel import schema
from perfmodel.cli.main import main

ROOT = Path(__file__).resolve().parent.parent


def _json(capsys, argv: list[str]):
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def _keys(obj) -> set[str]:
    return set(obj) if isinstance(obj, dict) else set().union(*(set(r) for r in obj))


def test_fields_doc_is_generated_from_the_schema():
    done = subprocess.run([sys.executable, str(ROOT / "docs" / "make_fields.py"), "--check"], capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr
    text = (ROOT / "docs" / "fields.md").read_text()
    for name in schema.QUANTITIES:
        assert f"| `{name}` |" in text


def test_one_name_per_quantity():
    # no quantity under two names that differ only by unit or spelling (per_pass_ms, memory_gb, flop_per_byte ...)
    names = set(schema.QUANTITIES)
    assert not names & {"per_pass_ms", "memory_gb", "flop_per_byte", "tpot_ms", "memory_gb_per_gpu", "params_b",
                        "time (s)", "latency (s)"}
    assert all(q.name == name for name, q in schema.QUANTITIES.items())
    for command, fields in schema.COMMANDS.items():
        assert all(schema.lookup(f) is not None or f in schema.FAMILIES for f in fields), command


def test_predict_compare_plan_and_sweep_json_use_the_vocabulary(capsys, tmp_path):
    predicted = _json(capsys, ["predict", "--json"])
    assert all(schema.lookup(k) for k in predicted if k != "ops") and _keys(predicted["ops"]) == set(schema.OP_ROW)
    compared = _json(capsys, ["compare", "--scenario", "arm", "--batch", "1", "8", "--json"])
    assert [list(r) for r in compared] == [list(schema.COMPARE_ROW)] * 2
    assert compared[0]["latency_s"] == pytest.approx(predicted["latency_s"])
    assert compared[0]["time_per_step_s"] == pytest.approx(predicted["time_per_step_s"])
    planned = _json(capsys, ["plan", "--hardware", "h200-sxm", "--tpot-ms", "50", "--batch", "1", "8", "--tp", "1",
                             "--json"])
    assert list(planned["plans"][0]["best"]) == list(schema.PLAN_ROW)
    grid = tmp_path / "grid.yaml"
    grid.write_text("hardware: [h100-sxm]\nparameters:\n  batch: [1, 8]\n")
    swept = _json(capsys, ["sweep", str(grid), "--no-progress", "--json"])
    assert all(schema.lookup(k) for k in _keys(swept))
    assert swept[0]["latency_s"] == pytest.approx(predicted["latency_s"])


def test_counts_are_integers_in_json_and_tables(capsys):
    data = _json(capsys, ["predict", "--json"])
    assert isinstance(data["steps"], int) and data["steps"] == 255
    assert main(["predict"]) == 0
    out = capsys.readouterr().out
    assert "255.0" not in out and any(line.split()[:2] == ["steps", "255"] for line in out.splitlines())


def test_the_calibration_note_is_shown_by_hardware_show_not_by_predict(capsys):
    assert main(["predict"]) == 0
    out = capsys.readouterr().out
    assert "calibrat" not in out
    assert main(["hardware", "show", "h100-sxm"]) == 0
    assert capsys.readouterr().out.count("efficiency.note") == 1


def test_multipliers_work_the_same_in_predict_compare_and_plan(capsys):
    fast = _json(capsys, ["predict", "--set", "hardware.memory.hbm.bandwidth_bytes_per_s=x2", "--json"])
    exact = _json(capsys, ["predict", "--set", "hardware.memory.hbm.bandwidth_bytes_per_s=6.7e12", "--json"])
    assert fast["latency_s"] == pytest.approx(exact["latency_s"], rel=1e-12)
    twice = _json(capsys, ["predict", "--set", "batch=x4", "--json"])
    assert twice["batch"] == 4
    compared = _json(capsys, ["compare", "--scenario", "arm", "--set", "hardware.memory.hbm.bandwidth_bytes_per_s=x2",
                              "--json"])
    assert compared[0]["latency_s"] == pytest.approx(fast["latency_s"], rel=1e-12)
    assert main(["predict", "--set", "hardware.name=x2"]) == 2
    assert "multiplier needs a numeric value" in capsys.readouterr().err


def test_every_spec_option_has_one_metavar():
    from perfmodel.cli.main import build_parser

    seen: dict[str, set[str]] = {}
    parser = build_parser()

    def walk(p):
        for action in p._actions:
            if action.option_strings and action.option_strings[-1] in ("--hardware", "--model", "--scenario",
                                                                        "--set"):
                seen.setdefault(action.option_strings[-1], set()).add(action.metavar)
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    walk(sub)

    walk(parser)
    assert seen["--hardware"] == {"HARDWARE"} and seen["--model"] == {"MODEL"}
    assert seen["--scenario"] == {"SCENARIO"} and seen["--set"] == {"KEY=VALUE"}


def test_fmt_is_the_one_rounding():
    from perfmodel.cli.output import table
    from perfmodel.report.document import fmt as report_fmt

    assert report_fmt is schema.fmt
    assert table([[0.0064181, 255.0, None, True]], ["a", "b", "c", "d"]).splitlines()[-1].split() == \
        ["0.006418", "255", "-", "yes"]
