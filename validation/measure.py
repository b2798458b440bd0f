"""The local measurement runner: time torch kernels over a shape sweep and write the measurement table.

A surveyor's traverse: walk a fixed list of stations (shapes), take a reading at each with the same method, write
each reading down as soon as it is taken, and, after an interruption, pick up at the first station without one.

What runs (``torch.nn.functional`` and plain torch ops, the kernels a torch model really calls):

- ``gemm``: ``F.linear(x, W)`` with x[m, k] and W[n, k] (C = x·Wᵀ): GEMV (m = 1) and GEMMs, weights from
  cache-resident to DRAM-resident sizes; fp32, and bf16 where the device runs it fast (always on CUDA).
- ``attention``: decode rows (q_len = 1, ``causal`` = false: the one query sees every key, the same work as a
  causal query at the end of the sequence) run perfmodel's own decode-attention kernel
  (:func:`perfmodel.kernels.decode_attention.decode_attention`: split-KV Triton on CUDA, its grouped-query torch
  reference on the CPU, one read of the cache); prefill rows (q_len = kv_len, ``is_causal=True``) run
  ``F.scaled_dot_product_attention`` on q[b, H, q_len, d], k/v[b, KVH, kv_len, d], GQA through ``enable_gqa=True``.
- ``norm`` (variant ``rmsnorm``): ``F.rms_norm`` over m tokens × n width with a weight.
- ``elementwise``: variant ``add`` = ``torch.add(a, b, out=o)``; variant ``silu_mul`` =
  ``torch.mul(F.silu(g), u, out=o)`` (torch's unfused SwiGLU: two kernels and a temporary, as eager torch runs it).

Timing (DESIGN.md, :mod:`perfmodel.validation.microbench`): warm-up, then ≥ ``samples`` samples of ≥ ``target_s``
each; ``measured_s`` is the median per-call time. Inputs are normal random values, never zeros. On CUDA each shape
gives two rows: CUDA events around back-to-back calls (``measured_s`` of the main row) and ``torch.profiler``'s
summed kernel time per call (launch gaps excluded) in a second row whose ``source`` ends in ``:profiler``.

**Rotation and the ``source`` convention.** When one call's bytes (the minimal bytes of the op as
:mod:`perfmodel.ops` counts them, the same formula the prediction uses) fit in the device's last-level cache,
the runner rotates among ``rot`` (default 4) independent sets of the op's tensors, inputs and (where the op
takes an ``out=``) outputs, so that call i uses set i mod rot; otherwise ``rot`` = 1. ``rot`` is then raised
until the footprint is clear of every cache level (not within (C, 2C] of a level of capacity C, where the level
would still serve part of it), so that one level serves each row. The reuse footprint of a row is therefore
``rot × op bytes``, and the prediction must use ``Op.reuse_bytes = rot × op.bytes``. Every row's ``source``
reads::

    perfmodel-measure:<device>:<device name>:torch=<version>[:threads=<n>]:rot=<rot>[:profiler]

e.g. ``perfmodel-measure:cpu:AMD EPYC:torch=2.13.0+cpu:threads=2:rot=4``; the comparison parses ``rot=N``
(:func:`perfmodel.validation.compare.reuse_factor`). Ops whose functional form allocates its output (linear,
attention, rms_norm, and silu_mul's temporary) get it from the allocator, which hands back the block freed by the
previous call, so their outputs are not rotated: their footprint is (rot − 1) outputs below ``rot × op bytes``.

The ``hardware`` column holds the spec the rows are to be predicted with, as given by ``hardware=``: a catalog
name as is, a YAML path made absolute (so that ``perfmodel validate`` loads the calibrated file itself).
Rows are appended to the table as they are measured (:func:`perfmodel.validation.table.append_rows`); a rerun
skips the shapes already in the table for the same hardware (``resume``), so an interrupted run keeps its
rows and finishes where it stopped. A sidecar ``<table>.timings.csv`` keeps each row's spread (quartiles,
minimum, repetitions), which the fixed table schema has no column for.
"""
from __future__ import annotations

import csv
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from perfmodel import ops
from perfmodel.specs.hardware import Hardware, load_hardware
from perfmodel.validation import microbench as mb

SHAPE_KEYS = ("m", "n", "k", "batch", "q_len", "kv_len", "heads", "kv_heads", "head_dim", "causal")
SUITES = ("tiny", "quick", "full")
DEFAULT_ROTATION = 4
SOURCE_PREFIX = "perfmodel-measure"
TIMING_COLUMNS = ("hardware", "op", "dtype", "variant", *SHAPE_KEYS, "source", "median_s", "q1_s", "q3_s", "min_s",
                  "reps", "samples")


@dataclass(frozen=True)
class Case:
    """One shape to measure: an op kind, a dtype, its table shape columns and (norm/elementwise) a variant."""

    op: str
    dtype: str
    shape: tuple[tuple[str, Any], ...]
    variant: str = ""

    @classmethod
    def make(cls, op: str, dtype: str, variant: str = "", **shape: Any) -> "Case":
        unknown = set(shape) - set(SHAPE_KEYS)
        if unknown:
            raise ValueError(f"Case {op}: unknown shape key(s) {sorted(unknown)}, expected {', '.join(SHAPE_KEYS)}")
        return cls(op, dtype, tuple(sorted(shape.items())), variant)

    @property
    def dims(self) -> dict[str, Any]:
        return dict(self.shape)

    def key(self, hardware: str) -> tuple:
        """Identity of a row for resuming: hardware, op, dtype, variant and every shape column."""
        d = self.dims
        return (hardware, self.op, self.dtype, self.variant,
                *(None if d.get(k) is None else (bool(d[k]) if k == "causal" else int(d[k])) for k in SHAPE_KEYS))

    def op_bytes(self) -> float:
        """Minimal bytes of one call, with the formulas of :mod:`perfmodel.ops` (as the prediction counts them)."""
        d = self.dims
        if self.op == "gemm":
            op = ops.gemm("gemm", d["m"], d["n"], d["k"], self.dtype)
        elif self.op == "attention":
            op = ops.attention("attention", d["batch"], d["q_len"], d["kv_len"], d["heads"], d["kv_heads"],
                               d["head_dim"], mask="causal" if d["causal"] else "bidirectional", dtype=self.dtype)
        elif self.op == "norm":
            op = ops.norm("norm", d["m"], d["n"], self.dtype)
        elif self.op == "elementwise":
            op = ops.elementwise("elementwise", d["m"], d["n"], self.dtype, inputs=2, outputs=1)
        else:
            raise ValueError(f"Case op {self.op!r}: expected gemm, attention, norm or elementwise")
        return float(op.bytes)

    def label(self) -> str:
        d = self.dims
        shape = ",".join(f"{k}={int(v) if k != 'causal' else bool(v)}" for k, v in d.items())
        return f"{self.op}{'/' + self.variant if self.variant else ''} {self.dtype} {shape}"


# ---------------------------------------------------------------------------------------------------------------
# Suites
def _gemms(dtype: str, mnk: Iterable[tuple[int, int, int]]) -> list[Case]:
    return [Case.make("gemm", dtype, m=m, n=n, k=k) for m, n, k in mnk]


def _attn(dtype: str, batch: int, q_len: int, kv_len: int, heads: int, kv_heads: int, head_dim: int = 128) -> Case:
    return Case.make("attention", dtype, batch=batch, q_len=q_len, kv_len=kv_len, heads=heads, kv_heads=kv_heads,
                     head_dim=head_dim, causal=q_len > 1)


def _pointwise(dtype: str, tokens: Sequence[int], widths: Sequence[int]) -> list[Case]:
    out = []
    for m in tokens:
        for n in widths:
            out.append(Case.make("norm", dtype, "rmsnorm", m=m, n=n))
            out.append(Case.make("elementwise", dtype, "add", m=m, n=n))
            out.append(Case.make("elementwise", dtype, "silu_mul", m=m, n=n))
    return out


def suite_cases(suite: str, *, bf16: bool = False, device: str = "cpu") -> list[Case]:
    """The shapes of a suite. ``bf16`` adds bf16 GEMMs and pointwise ops (and, on CUDA, bf16 attention).

    - ``tiny``: a handful of small shapes of every kind (seconds; for tests).
    - ``quick`` (about a minute on an idle 2-core CPU): GEMV n = k = 256…8192 and the MLP shapes
      14336×4096 / 4096×14336; GEMMs m ∈ {4, 16, 64, 256, 1024} × n = k ∈ {1024, 4096}; decode attention
      (32 query heads, head_dim 128) over kv_len 128…32768 with 8 KV heads, plus MHA and batch-4 points; causal
      prefill 128…2048; rmsnorm, add and silu_mul at m ∈ {1, 16, 256, 4096} × n ∈ {4096, 14336}.
    - ``full`` (ten minutes or more): GEMV over every n, k ∈ {256…8192}; GEMMs m ∈ {4, 16, 64, 256, 1024} ×
      n, k ∈ {512…4096} and the MLP shapes at m ∈ {1, 16, 256, 1024}; decode kv_len 128…32768 at batch 1 and 4,
      GQA and MHA; prefill 128…2048; pointwise ops at m ∈ {1, 16, 64, 256, 1024, 4096} × {4096, 14336}.
    """
    if suite not in SUITES:
        raise ValueError(f"suite {suite!r}: expected one of {', '.join(SUITES)}")
    low = ["fp32"] + (["bf16"] if bf16 else [])
    attn_dtypes = ["fp32"] + (["bf16"] if bf16 and device == "cuda" else [])
    mlp = ((14336, 4096), (4096, 14336))
    cases: list[Case] = []
    if suite == "tiny":
        for dt in low:
            cases += _gemms(dt, [(1, 64, 64), (8, 128, 64)])
        cases += [_attn("fp32", 1, 1, 64, 4, 2, 32), _attn("fp32", 1, 16, 16, 2, 2, 32)]
        cases += _pointwise("fp32", (2,), (64,))
        return cases
    if suite == "quick":
        gemv = [(1, s, s) for s in (256, 512, 1024, 2048, 4096, 8192)] + [(1, n, k) for n, k in mlp]
        gemm = [(m, s, s) for m in (4, 16, 64, 256, 1024) for s in (1024, 4096)]
        gemm += [(m, n, k) for m in (16, 256) for n, k in mlp]
        for dt in low:
            cases += _gemms(dt, gemv + gemm)
        for dt in attn_dtypes:
            cases += [_attn(dt, 1, 1, kv, 32, 8) for kv in (128, 512, 2048, 8192, 32768)]
            cases += [_attn(dt, 1, 1, kv, 32, 32) for kv in (512, 4096)]
            cases += [_attn(dt, 4, 1, kv, 32, 8) for kv in (512, 4096)]
            cases += [_attn(dt, 1, s, s, 32, 8) for s in (128, 512, 1024, 2048)]
        for dt in low:
            cases += _pointwise(dt, (1, 16, 256, 4096), (4096, 14336))
        return cases
    sizes = (256, 512, 1024, 2048, 4096, 8192)
    gemv = [(1, n, k) for n in sizes for k in sizes]
    mid = (512, 1024, 2048, 4096)
    gemm = [(m, n, k) for m in (4, 16, 64, 256, 1024) for n in mid for k in mid]
    gemm += [(m, n, k) for m in (1, 16, 256, 1024) for n, k in mlp]
    for dt in low:
        cases += _gemms(dt, gemv + gemm)
    for dt in attn_dtypes:
        for batch in (1, 4):
            for heads, kv_heads in ((32, 8), (32, 32)):
                cases += [_attn(dt, batch, 1, 128 * 2 ** i, heads, kv_heads) for i in range(9)]
        cases += [_attn(dt, 1, s, s, 32, 8) for s in (128, 256, 512, 1024, 2048)]
    for dt in low:
        cases += _pointwise(dt, (1, 16, 64, 256, 1024, 4096), (4096, 14336))
    return cases


# ---------------------------------------------------------------------------------------------------------------
# Kernels
def build_calls(case: Case, device: str, rot: int) -> list[mb.Call]:
    """``rot`` zero-argument callables running ``case`` on ``device``, each on its own random tensors."""
    import torch
    import torch.nn.functional as F

    d, dt = case.dims, case.dtype

    def rnd(*shape: int, scale: float = 1.0):
        return mb.random_tensor(shape, dt, device, scale)

    calls: list[mb.Call] = []
    for _ in range(rot):
        if case.op == "gemm":
            x, w = rnd(d["m"], d["k"]), rnd(d["n"], d["k"], scale=d["k"] ** -0.5)
            calls.append(lambda x=x, w=w: F.linear(x, w))
        elif case.op == "attention":
            b, h, kvh, hd = d["batch"], d["heads"], d["kv_heads"], d["head_dim"]
            q, k, v = rnd(b, h, d["q_len"], hd), rnd(b, kvh, d["kv_len"], hd), rnd(b, kvh, d["kv_len"], hd)
            causal, gqa = bool(d["causal"]), h != kvh
            if d["q_len"] == 1:
                from perfmodel.kernels.decode_attention import decode_attention

                q1 = q[:, :, 0, :].contiguous()
                calls.append(lambda q1=q1, k=k, v=v: decode_attention(q1, k, v))
            elif gqa:
                calls.append(lambda q=q, k=k, v=v: F.scaled_dot_product_attention(q, k, v, is_causal=causal,
                                                                                  enable_gqa=True))
            else:
                calls.append(lambda q=q, k=k, v=v: F.scaled_dot_product_attention(q, k, v, is_causal=causal))
        elif case.op == "norm":
            x, g = rnd(d["m"], d["n"]), rnd(d["n"])
            width = (d["n"],)
            calls.append(lambda x=x, g=g: F.rms_norm(x, width, weight=g, eps=1e-6))
        elif case.op == "elementwise":
            a, b, o = rnd(d["m"], d["n"]), rnd(d["m"], d["n"]), rnd(d["m"], d["n"])
            if case.variant == "add":
                calls.append(lambda a=a, b=b, o=o: torch.add(a, b, out=o))
            elif case.variant == "silu_mul":
                calls.append(lambda a=a, b=b, o=o: torch.mul(F.silu(a), b, out=o))
            else:
                raise ValueError(f"elementwise variant {case.variant!r}: expected 'add' or 'silu_mul'")
        else:
            raise ValueError(f"Case op {case.op!r}: expected gemm, attention, norm or elementwise")
    return calls


def cache_capacities(hw: Hardware) -> list[float]:
    """Total capacities of the caches between kernels, nearest first (the engine's view: no GPU scratchpad)."""
    names = [n for n, lvl in hw.memory.items() if not (hw.kind == "gpu" and lvl.per_unit)]
    return [hw.level_capacity_bytes(n) for n in names[:-1]]


def rotation_for(case: Case, capacities: Sequence[float], rotate: int = DEFAULT_ROTATION, max_rot: int = 64) -> int:
    """Input sets to rotate among (see the module docstring).

    ``rotate`` when one call's bytes fit in the last-level cache, else 1; then raised until the footprint
    rot × bytes is clear of every cache: not in (C, 2C] for a level of capacity C, where that level would still
    serve part of it (the rule calibration uses for clean copy sizes).
    """
    b = case.op_bytes()
    llc = capacities[-1] if capacities else 0.0
    rot = rotate if b <= llc else 1
    while rot < max_rot and any(c < rot * b <= 2 * c for c in capacities):
        rot += 1
    return rot


def source_string(device: str, rot: int, *, profiler: bool = False) -> str:
    """The ``source`` of a row: ``perfmodel-measure:<device>:<name>:torch=<v>[:threads=<n>]:rot=<rot>[:profiler]``."""
    import torch

    parts = [SOURCE_PREFIX, device, mb.device_name(device), f"torch={torch.__version__}"]
    if device == "cpu":
        parts.append(f"threads={torch.get_num_threads()}")
    parts.append(f"rot={rot}")
    if profiler:
        parts.append("profiler")
    return ":".join(parts)


def hardware_label(hardware: str | Path) -> str:
    """The ``hardware`` column: a catalog name as given, a YAML path made absolute."""
    text = str(hardware)
    p = Path(text)
    if text.endswith((".yaml", ".yml")) or "/" in text or p.is_file():
        return str(p.resolve())
    return text


def device_hardware(device: str, hardware: str | Path | None, command: str) -> str | Path:
    """The spec a measurement run's rows belong to: ``hardware`` as given, ``cpu-generic`` on a CPU without one;
    a GPU run must name its spec (``command`` says which run, in the error)."""
    if hardware is not None:
        return hardware
    if device != "cpu":
        raise ValueError(f"{command}: expected --hardware naming the device's spec (e.g. h100-sxm)")
    return "cpu-generic"


# ---------------------------------------------------------------------------------------------------------------
# The runner
@dataclass
class MeasureResult:
    """What :func:`measure` did: rows written this run, shapes skipped as already measured, the table path."""

    path: Path
    measured: int = 0
    skipped: int = 0
    rows: list[dict[str, Any]] = field(default_factory=list)


def timings_path(table_path: str | Path) -> Path:
    """``table.parquet`` → ``table.timings.csv`` beside it (the spread of each row)."""
    p = Path(table_path)
    return p.with_name(p.stem + ".timings.csv")


def existing_keys(path: Path) -> set[tuple]:
    """Keys (:meth:`Case.key`) of the rows already in the table at ``path`` (empty when there is none)."""
    from perfmodel.validation.table import read_table

    if not path.is_file() or path.stat().st_size == 0:
        return set()
    df = read_table(path)
    keys = set()
    for r in df.to_dict("records"):
        shape = tuple(None if _missing(r[k]) else (bool(r[k]) if k == "causal" else int(r[k])) for k in SHAPE_KEYS)
        keys.add((r["hardware"], r["op"], r["dtype"], r.get("variant") or "", *shape))
    return keys


def _missing(v: Any) -> bool:
    import pandas as pd

    return v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v))


def table_row(case: Case, hardware: str, seconds: float, source: str) -> dict[str, Any]:
    """One measurement-table row (:data:`perfmodel.validation.table.ALL_COLUMNS`)."""
    from perfmodel.validation.table import ALL_COLUMNS

    row: dict[str, Any] = {c: None for c in ALL_COLUMNS}
    row.update(hardware=hardware, op=case.op, dtype=case.dtype, measured_s=float(seconds), source=source,
               variant=case.variant)
    for k, v in case.dims.items():
        row[k] = bool(v) if k == "causal" else int(v)
    return row


def _append_timing(path: Path, row: dict[str, Any], t: mb.Timing) -> None:
    new = not path.is_file() or path.stat().st_size == 0
    rec = {**{k: row.get(k) for k in TIMING_COLUMNS[:-6]}, "median_s": t.median_s, "q1_s": t.q1_s,
           "q3_s": t.q3_s, "min_s": t.min_s, "reps": t.reps, "samples": t.samples}
    with path.open("a", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(TIMING_COLUMNS))
        if new:
            w.writeheader()
        w.writerow(rec)


def measure(cases: Sequence[Case], output: str | Path, *, device: str = "cpu", hardware: str | Path | None = None,
            resume: bool = True, rotate: int = DEFAULT_ROTATION, budget: mb.Budget = mb.DEFAULT_BUDGET,
            profiler: bool = True, progress: bool = True,
            on_row: Callable[[dict[str, Any]], None] | None = None) -> MeasureResult:
    """Measure ``cases`` on ``device`` and append one row per case (two on CUDA) to the table at ``output``.

    ``hardware`` (default ``cpu-generic`` on the CPU; required on CUDA) is the spec the rows belong to: it sets
    the ``hardware`` column and, through its cache capacities, how many input sets each shape rotates. With ``resume``
    (the default) shapes already in the table for that hardware are skipped; without it the table is replaced.
    ``progress`` shows a tqdm bar on stderr. Raises :class:`microbench.DeviceUnavailable` for an absent device.
    """
    from tqdm import tqdm

    from perfmodel.validation.table import append_rows, table_format

    mb.check_device(device)
    if rotate < 1:
        raise ValueError(f"rotate={rotate}: expected a positive number of input sets")
    hardware = device_hardware(device, hardware, f"measure --device {device}")
    hw = load_hardware(hardware)
    label = hardware_label(hardware)
    path = Path(output)
    table_format(path)
    spread = timings_path(path)
    if not resume:
        for p in (path, spread):
            if p.exists():
                p.unlink()
    done = existing_keys(path) if resume else set()
    todo = [c for c in cases if c.key(label) not in done]
    result = MeasureResult(path, skipped=len(cases) - len(todo))
    capacities = cache_capacities(hw)
    timer = mb.timer_for(device)
    bar = tqdm(todo, desc=f"measure {device}", unit="shape", file=sys.stderr, disable=not progress,
               dynamic_ncols=True)
    for case in bar:
        bar.set_postfix_str(case.label(), refresh=False)
        rot = rotation_for(case, capacities, rotate)
        calls = build_calls(case, device, rot)
        t = timer(calls, budget)
        rows = [(table_row(case, label, t.median_s, source_string(device, rot)), t)]
        if device == "cuda" and profiler:
            kernel_s = mb.profile_cuda_kernels(calls)
            if kernel_s > 0:
                rows.append((table_row(case, label, kernel_s, source_string(device, rot, profiler=True)),
                             mb.Timing(kernel_s, kernel_s, kernel_s, kernel_s, 1, 0)))
        del calls
        append_rows(path, [r for r, _ in rows])
        for r, timing in rows:
            _append_timing(spread, r, timing)
            result.rows.append(r)
            if on_row is not None:
                on_row(r)
        result.measured += 1
        bar.set_postfix_str(f"{case.label()}: {t.median_s * 1e6:.1f} us "
                            f"(IQR {t.iqr_s / max(t.median_s, 1e-30):.0%})")
    bar.close()
    return result
