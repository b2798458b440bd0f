"""The catalog commands of the CLI, run in-process."""
from __future__ import annotations

import json

from perfmodel.cli.main import main


def test_hardware_show_json_has_sources(capsys):
    assert main(["hardware", "show", "h100-sxm", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["name"] == "h100-sxm"
    assert data["sources"] and data["memory"]["hbm"]["bandwidth_bytes_per_s"] == 3.35e12


def test_models_show_json_has_derived_parameter_count(capsys):
    assert main(["models", "show", "llada-8b", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert abs(data["derived"]["parameters"] / 8.02e9 - 1) < 0.01


def test_lists_are_tables(capsys):
    assert main(["models", "list"]) == 0
    out = capsys.readouterr().out
    assert "llama-3.1-8b" in out and "parameters" in out
    assert main(["hardware", "list", "--json"]) == 0
    assert any(r["name"] == "h100-sxm" for r in json.loads(capsys.readouterr().out))


def test_bad_name_lists_valid_ones(capsys):
    assert main(["hardware", "show", "h1000"]) == 2
    err = capsys.readouterr().err
    assert "h100-sxm" in err and "unknown hardware" in err
