"""The base install (no torch, triton, dask, pyarrow or scipy) predicts, compares, plans, sweeps and reports.

Each command runs in a fresh interpreter in which importing those fails, as it does where the extras are not
installed; a command that needs one of them says which extra to install, without a traceback.
"""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

BLOCKED = textwrap.dedent("""
    import sys
    from importlib.abc import MetaPathFinder

    class NotInstalled(MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("torch", "triton", "dask", "distributed", "pyarrow", "fastparquet", "scipy"):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, NotInstalled())
    import importlib.util
    _find = importlib.util.find_spec
    BLOCK = ("torch", "triton", "dask", "pyarrow", "fastparquet", "scipy")
    importlib.util.find_spec = lambda name, *a: None if name.split(".")[0] in BLOCK else _find(name, *a)
    from perfmodel.cli.main import main
    code = main(sys.argv[1:])
    heavy = sorted({m.split(".")[0] for m in sys.modules} & set(BLOCK))
    assert not heavy, heavy
    sys.exit(code)
""")


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCKED, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600)


REVIEW = """\
title: base install
hardware: [h100-sxm]
methods:
  - {label: ARM, model: llama-3.1-8b, scenario: arm}
sections: [breakdown, validation, assumptions]
validation: [table.csv]
dpi: 40
"""


@pytest.mark.parametrize("args", [
    ["predict", "--set", "batch=8"],
    ["compare", "--scenario", "arm", "block-dlm", "--batch", "1", "8"],
    ["plan", "--hardware", "h100-sxm", "--tpot-ms", "50", "--tp", "1", "2", "--batch", "1", "8"],
    ["sweep", "GRID", "--no-progress", "--engine", "event"],
    ["report", "REVIEW", "-o", "OUT", "-q"],
], ids=["predict", "compare", "plan", "sweep", "report"])
def test_commands_run_without_the_extras(tmp_path, args):
    grid = tmp_path / "grid.yaml"
    grid.write_text("hardware: [h100-sxm]\nscenarios: [arm]\nparameters:\n  batch: [1, 8]\n  gen_len: [16]\n")
    (tmp_path / "review.yaml").write_text(REVIEW)
    (tmp_path / "table.csv").write_text("hardware,op,dtype,m,n,k,measured_s,source\n"
                                        "h100-sxm,gemm,bf16,4096,4096,4096,0.00018,test\n"
                                        "h100-sxm,gemm,bf16,1,4096,4096,0.000015,test\n"
                                        "h100-sxm,gemm,bf16,64,4096,4096,0.00002,test\n")
    args = [{"GRID": str(grid), "REVIEW": str(tmp_path / "review.yaml"), "OUT": str(tmp_path / "out")}.get(a, a)
            for a in args]
    done = _run(args, ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("args, extra", [
    (["measure", "-o", "t.csv"], "[measure]"),
    (["calibrate", "-o", "h.yaml"], "[measure]"),
    (["sweep", "GRID", "--dask"], "[dask]"),
    (["sweep", "GRID", "-o", "out.parquet"], "[parquet]"),
    (["validate", "t.parquet"], "[parquet]"),
    (["fit", "t.csv", "--hardware", "h100-sxm", "-o", "h.yaml"], "[fit]"),
])
def test_a_command_needing_an_extra_names_it(tmp_path, args, extra):
    grid = tmp_path / "grid.yaml"
    grid.write_text("hardware: [h100-sxm]\n")
    done = _run([str(grid) if a == "GRID" else a for a in args], tmp_path)
    assert done.returncode == 2
    assert extra in done.stderr and "pip install" in done.stderr and "Traceback" not in done.stderr


def test_the_extras_are_declared_with_torch_pinned():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert not any(d.split("=")[0].split(">")[0].strip() in ("torch", "triton") for d in project["dependencies"])
    extras = project["optional-dependencies"]
    assert {"kernels", "measure", "test"} <= set(extras)
    for name in ("kernels", "measure", "test"):
        torch = [d for d in extras[name] if d.startswith("torch")]
        assert torch == ["torch==2.13.0"], name
    assert any(d.startswith("triton") for d in extras["kernels"])


def test_predict_starts_without_heavy_libraries():
    code = ("import io, sys, contextlib\nfrom perfmodel.cli.main import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n    assert main(['predict']) == 0\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'triton', 'simpy', 'matplotlib', 'dask', "
            "'scipy'}))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_readme_quick_start_installs_the_base_and_runs_the_main_job():
    text = (ROOT / "README.md").read_text()
    first = text.split("```bash\n", 1)[1].split("\n", 1)[0]
    assert "pip install -e . &&" in first and "torch" not in first
    assert "perfmodel predict" in first and "perfmodel report reports/default.yaml" in first
