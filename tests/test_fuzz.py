"""Property tests with hostile input (the bounded, in-suite version of ``benchmarks/fuzz_specs.py``).

Mutated spec files, ``--set`` overrides, measurement tables and review files either give a correct answer or a
clean message that names the field (or column), each within two seconds, and nothing outside the test's own
temporary folder is written.
"""
from __future__ import annotations

import contextlib
import io
import json
import math
import os
import time
import warnings
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from perfmodel.cli.main import main
from perfmodel.errors import SpecError
from perfmodel.specs.base import catalog_dir
from perfmodel.specs.hardware import load_hardware
from perfmodel.specs.model import load_model
from perfmodel.specs.scenario import load_scenario
from perfmodel.validation.table import TornLine

REPO = Path(__file__).resolve().parents[1]
LIMIT_S = 2.0
FAST = settings(max_examples=40, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

UNITS = ["B", "GB", "GiB", "Gb", "TB/s", "GB/s", "Hz", "GHz", "s", "us", "ns", "W", "TFLOPS", "%", "m", "kg",
         "B/s/s", "💥", "", "B**2", "[B]", "{}"]
NUMBERS = st.one_of(st.integers(-10**40, 10**40), st.floats(allow_nan=True, allow_infinity=True),
                    st.sampled_from(["9**9**9", "2*40", "1e999", "0x10", "nan", "-0", ".5", "1_000", "(80)"]))
UNIT_TEXT = st.builds(lambda n, sep, u: f"{n}{sep}{u}", NUMBERS, st.sampled_from(["", " ", "  "]),
                      st.sampled_from(UNITS))
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-10**40, 10**40), st.floats(allow_nan=True),
                    st.text(max_size=30), UNIT_TEXT, st.lists(st.integers(), max_size=3),
                    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
                    st.sampled_from(["x" * 20_000, "[" * 3000, "&a [*a]", "!!python/name:os.system"]))


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    skip = {".git", ".venv", "__pycache__", ".pytest_cache", ".hypothesis"}
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in skip and not d.endswith(".egg-info")]
        for name in filenames:
            path = Path(dirpath) / name
            st_ = path.lstat()
            out[str(path)] = (st_.st_size, st_.st_mtime_ns)
    return out


@pytest.fixture(scope="module", autouse=True)
def nothing_written_outside(tmp_path_factory):
    """Run in an empty folder and check that the repository and the shared data are unchanged afterwards."""
    watched = [REPO, REPO.parent / "shared" / "data"]
    before = {str(w): _snapshot(w) for w in watched if w.is_dir()}
    cwd = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("cwd"))
    table = Path("warm-up.csv")
    table.write_text(HEADER + "h100-sxm,gemm,bf16,64,64,64,,,,,,,,1e-5,warm-up\n")
    for args in (["predict", "--json"], ["validate", str(table), "--json"]):  # first imports are not timed
        assert _run(args)[0] == 0
    try:
        yield
    finally:
        os.chdir(cwd)
    after = {str(w): _snapshot(w) for w in watched if w.is_dir()}
    assert after == before, "files outside the temporary folders changed"


def _run(args: list[str]) -> tuple[int, str, str, float]:
    out, err = io.StringIO(), io.StringIO()
    start = time.perf_counter()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(args)
    return code, out.getvalue(), err.getvalue(), time.perf_counter() - start


def _clean_error(err: str) -> None:
    assert err.startswith("perfmodel: error:") or "\nperfmodel: error:" in err, err
    assert "Traceback" not in err and "Input should" not in err


def _leaf_paths(data, prefix=()):
    for k, v in data.items():
        yield prefix + (k,)
        if isinstance(v, dict):
            yield from _leaf_paths(v, prefix + (k,))


# -- spec files ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind, loader, name", [("hardware", load_hardware, "h100-sxm"),
                                                ("models", load_model, "llada-8b"),
                                                ("scenarios", load_scenario, "block-dlm")])
@FAST
@given(data=st.data())
def test_mutated_spec_files_load_correctly_or_name_the_field(tmp_path, kind, loader, name, data):
    spec = yaml.safe_load((catalog_dir(kind) / f"{name}.yaml").read_text())
    path_choices = list(_leaf_paths(spec))
    where = data.draw(st.sampled_from(path_choices))
    node = spec
    for p in where[:-1]:
        node = node[p]
    action = data.draw(st.sampled_from(["set", "delete", "rename"]))
    if action == "set":
        node[where[-1]] = data.draw(SCALARS)
    elif action == "delete":
        node.pop(where[-1])
    else:
        node[data.draw(st.text("abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=12))] = node.pop(where[-1])
    path = tmp_path / "mutated.yaml"
    path.write_text(yaml.safe_dump(spec, allow_unicode=True, sort_keys=False))
    start = time.perf_counter()
    try:
        loaded = loader(path)
    except SpecError as err:
        assert str(path) in str(err) and all(p.field and p.field != "<root>" for p in err.problems)
        assert len(str(err)) < 200 * len(err.problems) + 400
    else:
        text = json.dumps(loaded.to_dict())  # a complete spec: no NaN, no infinity
        assert "NaN" not in text and "Infinity" not in text
    assert time.perf_counter() - start < LIMIT_S


# -- --set overrides -------------------------------------------------------------------------------------------------
KEYS = (["batch", "prompt_len", "gen_len", "kv_cache.bits", "kv_cache.format", "attention.token_budget",
         "model.hidden_size", "model.num_key_value_heads", "hardware.memory.hbm.bandwidth_bytes_per_s",
         "hardware.memory.hbm.capacity_bytes", "hardware.efficiency.memory.hbm", "hardware.efficiency.launch_s",
         "hardware.compute.tensor_flops.bf16", "hardware.compute.units", "bacth", "hardware.memory.hmb.latency_s",
         "a..b", ".".join(["k"] * 40)])


@FAST
@given(key=st.sampled_from(KEYS), value=st.one_of(SCALARS.map(str), UNIT_TEXT))
def test_set_overrides_answer_or_name_the_field(key, value):
    code, out, err, seconds = _run(["predict", "--set", f"{key}={value}", "--json"])
    assert seconds < LIMIT_S
    if code == 0:
        summary = json.loads(out)
        assert summary["latency_s"] is not None and summary["latency_s"] > 0 and math.isfinite(summary["latency_s"])
    else:
        assert code == 2
        _clean_error(err)
        assert key.split(".")[-1] in err or key[:20] in err or "field" in err


@FAST
@given(number=st.floats(1e-3, 1e6), unit=st.sampled_from(["GB", "GiB", "Gb", "TB", "MB", "kB"]))
def test_unit_strings_of_the_right_dimension_read_exactly(number, unit):
    factor = {"GB": 1e9, "GiB": 2**30, "Gb": 1e9 / 8, "TB": 1e12, "MB": 1e6, "kB": 1e3}[unit]
    text = f"{number!r} {unit}"
    # a capacity the hierarchy allows: HBM above L2's 50 MiB, or else the per-SM shared memory (any size)
    level = "hbm" if number * factor > 52428800 else "smem"
    hw = load_hardware("h100-sxm", {f"memory.{level}.capacity_bytes": text})
    assert hw.memory[level].capacity_bytes == pytest.approx(number * factor, rel=1e-12)
    with pytest.raises(SpecError) as info:  # the same quantity is not a bandwidth
        load_hardware("h100-sxm", {"memory.hbm.bandwidth_bytes_per_s": text})
    assert info.value.field == "memory.hbm.bandwidth_bytes_per_s"


# -- measurement tables --------------------------------------------------------------------------------------------
HEADER = "hardware,op,dtype,m,n,k,batch,q_len,kv_len,heads,kv_heads,head_dim,causal,measured_s,source\n"
CELLS = st.one_of(st.sampled_from(["", "0", "-1", "1", "64", "4096", "99999999999999999999", "1e3", "12.5", "nan",
                                   "inf", "x", "💥", "true", '"a,b"']), st.integers(-10**6, 10**25).map(str))


@settings(FAST, max_examples=25)
@given(m=CELLS, heads=CELLS, kv_heads=CELLS, t=CELLS, torn=st.integers(0, 30))
def test_tables_validate_or_name_the_column(tmp_path, m, heads, kv_heads, t, torn):
    rows = (f"h100-sxm,gemm,bf16,{m},4096,4096,,,,,,,,{t},fuzz\n"
            f"h100-sxm,attention,bf16,,,,1,1,4096,{heads},{kv_heads},128,true,{t},fuzz\n")
    path = tmp_path / "t.csv"
    text = HEADER + rows
    path.write_text(text[:len(text) - torn])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TornLine)  # a torn last line is expected here: it is left out
        code, out, err, seconds = _run(["validate", str(path), "--json"])
    assert seconds < LIMIT_S
    if code == 0:
        errors = json.loads(out)
        assert errors["overall"]["rows"] >= 1
    else:
        _clean_error(err)
        assert "column '" in err or "no measured rows" in err


# -- review files ----------------------------------------------------------------------------------------------------
REVIEW = {"title": "t", "hardware": ["h100-sxm", {"name": "what-if", "base": "h100-sxm",
                                                   "set": {"memory.hbm.bandwidth_bytes_per_s": 6.7e12}}],
          "methods": [{"label": "ARM", "model": "llama-3.1-8b", "scenario": "arm"}],
          "sweeps": {"batch": [1, 8]}, "sections": ["breakdown"], "dpi": 40}


@FAST
@given(data=st.data())
def test_mutated_reviews_load_or_name_the_field(tmp_path, data):
    from perfmodel.report import load_review
    from perfmodel.report.context import Context

    review = json.loads(json.dumps(REVIEW))
    target = data.draw(st.sampled_from([("title",), ("hardware", 1, "name"), ("hardware", 1, "set"),
                                        ("methods", 0, "label"), ("sweeps", "batch"), ("dpi",), ("sections",),
                                        ("hardware", 0), ("methods", 0, "scenario")]))
    node = review
    for p in target[:-1]:
        node = node[p]
    node[target[-1]] = data.draw(st.one_of(SCALARS, st.sampled_from(["/../../x/ESCAPED", "<script>", "h100"])))
    path = tmp_path / "review.yaml"
    path.write_text(yaml.safe_dump(review, allow_unicode=True))
    start = time.perf_counter()
    try:
        spec, base = load_review(path)
        Context.from_review(spec, base)
    except ValueError as err:
        text = str(err)
        assert "Traceback" not in text and "Input should" not in text
        if isinstance(err, SpecError):
            assert all(p.field and p.field != "<root>" for p in err.problems)
    assert time.perf_counter() - start < LIMIT_S
