"""benchmarks/kernels.py: without CUDA it names every kernel it skips, says why, and exits 0."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from perfmodel.kernels import KERNELS

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "kernels.py"


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a CUDA machine the script benchmarks instead")
def test_prints_a_skip_line_per_kernel_and_exits_0_without_cuda():
    run = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines == [f"skip {name}: no CUDA device (torch.cuda.is_available() is False)" for name in KERNELS]
