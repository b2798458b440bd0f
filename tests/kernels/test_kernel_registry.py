"""The kernel registry: every entry resolves, names an op kind of perfmodel.ops and builds an Op of that kind;
importing the package stays cheap; wrappers pick the torch path on CPU tensors."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from perfmodel import ops
from perfmodel.kernels import KERNELS, KernelInfo
from perfmodel.kernels._common import resolve_impl

SHAPES = {
    "linear": dict(m=4, n=8, k=16),
    "rmsnorm": dict(tokens=4, width=16),
    "silu_mul": dict(tokens=4, width=16),
    "rope": dict(tokens=4, heads=2, head_dim=16),
    "residual_add": dict(tokens=4, width=16),
    "decode_attention": dict(batch=2, kv_len=97, heads=8, kv_heads=2, head_dim=64),
    "prefill_attention": dict(batch=2, q_len=97, kv_len=97, heads=8, kv_heads=2, head_dim=64),
    "quantize_kv": dict(batch=2, tokens=64, kv_heads=2, head_dim=64, bits=4, group_size=32),
    "dequantize_kv": dict(batch=2, tokens=64, kv_heads=2, head_dim=64, bits=4, group_size=32),
    "quant_decode_attention": dict(batch=2, kv_len=97, heads=8, kv_heads=2, head_dim=64, bits=4, group_size=32,
                                   residual=32),
    "quantize_x": dict(tokens=97, hidden=256, bits=4, group_size=32),
    "dequantize_x": dict(tokens=97, hidden=256, bits=4, group_size=32),
    "dequant_matmul": dict(tokens=97, out_features=128, in_features=256, bits=4, group_size=32),
    "accumulate_delta": dict(tokens=97, hidden=256, bits=4, group_size=32),
    "centroid_lookup": dict(batch=2, heads=8, kv_heads=2, centroids=16, head_dim=64),
    "topk_clusters": dict(rows=4, n=16, k=4),
    "gather_rows": dict(rows=97, width=64),
    "sparse_decode_attention": dict(batch=2, selected=97, heads=8, kv_heads=2, head_dim=64),
    "embedding": dict(tokens=97, hidden=64),
    "greedy": dict(rows=4, vocab=1000),
    "write_kv": dict(batch=2, tokens=3, kv_heads=2, head_dim=64),
    "subtract": dict(tokens=4, width=16),
    "select_tokens": dict(rows=4, n=300, k=30),
    "assign_keys": dict(batch=2, tokens=1, kv_heads=2, centroids=16, head_dim=64),
}
# Sampling writes a token and a confidence per row, which the model (like the workloads' ``sample``) leaves out.
WRITES_NOTHING_COUNTED = {"greedy"}


def test_every_kernel_has_example_shapes():
    assert set(SHAPES) == set(KERNELS)


@pytest.mark.parametrize("name", sorted(KERNELS))
def test_entry_resolves_and_builds_an_op_of_its_kind(name):
    info = KERNELS[name]
    assert isinstance(info, KernelInfo) and info.kind in ops.KINDS
    assert callable(info.wrapper) and (info.reference is None or callable(info.reference))
    op = info.op_for(**SHAPES[name])
    assert isinstance(op, ops.Op) and op.kind == info.kind
    assert op.read_bytes > 0 and op.flops >= 0
    assert op.write_bytes > 0 or (name in WRITES_NOTHING_COUNTED and op.write_bytes == 0)


def test_importing_the_package_imports_neither_torch_nor_triton():
    code = "import sys, perfmodel.kernels; print('torch' in sys.modules, 'triton' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_cpu_tensors_run_the_torch_path_unless_told():
    t = torch.zeros(2)
    assert resolve_impl(None, t) == "torch"
    assert resolve_impl("torch", t) == "torch"
    with pytest.raises(ValueError, match="impl='gpu': expected None, 'triton' or 'torch'"):
        resolve_impl("gpu", t)


def test_triton_on_cpu_without_the_interpreter_is_refused(monkeypatch):
    pytest.importorskip("triton")
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(ValueError, match="expected TRITON_INTERPRET=1"):
        resolve_impl("triton", torch.zeros(2))


def test_kernel_modules_import_and_run_without_triton():
    # sys.modules["triton"] = None makes "import triton" raise ImportError, as if it were not installed.
    code = """
import sys
sys.modules["triton"] = None
import torch
from perfmodel.kernels import KERNELS
for info in KERNELS.values():
    info.wrapper
from perfmodel.kernels.decode_attention import decode_attention
q, k, v = torch.randn(1, 4, 64), torch.randn(1, 2, 9, 64), torch.randn(1, 2, 9, 64)
assert decode_attention(q, k, v).shape == (1, 4, 64)
try:
    decode_attention(q, k, v, impl="triton")
except ValueError as e:
    print(e)
"""
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "the triton package is not installed" in run.stdout
