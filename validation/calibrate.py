"""Calibration: a device's efficiency block from microbenchmarks only.

Like tuning a car's speedometer on a test track rather than on the commute: the spec's datasheet numbers
say what the device could do, a handful of simple runs say what it does, and the ratio goes into the
``efficiency`` block of a new hardware YAML. The runs are microbenchmarks, never the kernels that validation
measures (DESIGN.md: "never fit per shape to a validation row"):

- **copies** of growing working sets (``dst.copy_(src)``, working set = src + dst bytes, repeated on the same
  buffers so that the set stays in the nearest level that holds it) → the bandwidth of each memory level;
- **large square matmuls** per dtype → attainable FLOP/s (fp32 against the vector peak, bf16 against the
  tensor peak — the units the analytic engine charges them to);
- **tiny ops** (1-element tensors) → the fixed cost of a call: ``efficiency.launch_s`` is a 1-element
  ``torch.add(out=)``, ``efficiency.attention_overhead_s`` what a tiny ``scaled_dot_product_attention`` costs
  beyond that (wall time on a CPU, CUDA events on a GPU: the host's dispatch is part of a call's cost).

On a GPU the copies and matmuls are timed by their kernels' device time (``torch.profiler``): a loop of small
eager copies is paced by the host's dispatch, which would hide the L2's bandwidth behind the launch cost.

How a copy's time becomes a level's bandwidth. The engine predicts ``bytes / (bandwidth × efficiency) +
launch``, so the bandwidth wanted is the marginal one: ``bytes / (t − t₀)`` with ``t₀`` the time of a 1-element
copy (the copy's own fixed cost). A size counts for a level when its working set fits the level (one unit's
share for a per-core level: small copies run on one thread) and exceeds twice the total capacity of the nearer
level (so the nearer level does not serve it); sizes whose data time ``t − t₀`` is under a quarter of ``t`` are
too overhead-dominated to use. A cache level's ceiling is the best over its sizes; main memory's is the largest
working set's (the one the caches help least: a streamed weight matrix); a nearer level is never slower than
a farther one (its ceiling is raised to the farther one's where a measurement says otherwise: that only happens
when overhead hides the nearer level's speed). Each ceiling is written as ``efficiency.memory.<level>`` =
measured / nominal; where the measurement beats the nominal peak, the nominal is raised to the measurement and
the fraction set to 1.0 (the same for compute peaks), and ``efficiency.note`` says so.

The hardware schema has no room for raw data, so the microbenchmark table (kind, dtype, size, seconds, GB/s,
GFLOP/s, level) goes into a sidecar CSV next to the YAML (``host.yaml`` → ``host.microbench.csv``), named in
``efficiency.note``.
"""
from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from perfmodel.specs.hardware import Hardware, load_hardware
from perfmodel.validation import microbench as mb

KIB = 1024
#: working sets of the full copy sweep: 16 KiB ... 1 GiB on a CPU, 256 KiB ... 4 GiB on a GPU
CPU_SIZES = tuple(16 * KIB * 2 ** i for i in range(17))
CUDA_SIZES = tuple(256 * KIB * 2 ** i for i in range(15))
#: the reduced sweep (tests, smoke runs): caches only
QUICK_CPU_SIZES = tuple(16 * KIB * 2 ** i for i in range(10))
QUICK_CUDA_SIZES = tuple(256 * KIB * 2 ** i for i in range(8))
MATMUL_N = {"cpu": 2048, "cuda": 8192}
QUICK_MATMUL_N = 256
DEFAULT_BASE = {"cpu": "cpu-generic"}
#: the share of a copy's time that must be data movement (not fixed cost) for it to set a ceiling
MIN_DATA_SHARE = 0.25

COLUMNS = ("kind", "dtype", "size_bytes", "n", "level", "used_for", "seconds", "q1_s", "q3_s", "min_s", "reps",
           "gb_per_s", "gflop_per_s")


@dataclass
class Calibration:
    """What :func:`calibrate` returns: the new spec, the raw microbenchmark table and the measured ceilings."""

    hardware: Hardware
    table: pd.DataFrame
    bandwidth: dict[str, float] = field(default_factory=dict)   # level → measured ceiling (B/s)
    flops: dict[str, float] = field(default_factory=dict)       # dtype → measured matmul FLOP/s
    launch_s: float = 0.0
    notes: list[str] = field(default_factory=list)


def cache_level_names(hw: Hardware) -> list[str]:
    """Levels that hold data between kernels, nearest first (the analytic engine's view: no GPU scratchpad)."""
    return [name for name, lvl in hw.memory.items() if not (hw.kind == "gpu" and lvl.per_unit)]


def level_of(hw: Hardware, working_set: float) -> str:
    """The nearest level whose total capacity holds ``working_set`` bytes (main memory otherwise)."""
    names = cache_level_names(hw)
    for name in names[:-1]:
        if working_set <= hw.level_capacity_bytes(name):
            return name
    return names[-1]


def qualifying_level(hw: Hardware, working_set: float) -> str | None:
    """The level a copy of this working set measures cleanly, or None when it straddles two levels.

    Clean for level i: it fits one unit's share of level i (all of it for a shared level) and is more than twice
    the total capacity of level i−1.
    """
    names = cache_level_names(hw)
    for i, name in enumerate(names):
        lvl = hw.memory[name]
        last = i == len(names) - 1
        fits = last or working_set <= lvl.capacity_bytes  # per-unit capacity when per_unit, else total
        clear = i == 0 or working_set > 2 * hw.level_capacity_bytes(names[i - 1])
        if fits and clear:
            return name
        if working_set <= hw.level_capacity_bytes(name):
            return None
    return None


def run_microbenchmarks(device: str, hw: Hardware, *, quick: bool = False,
                        budget: mb.Budget | None = None) -> pd.DataFrame:
    """Run the copy sweep, the matmuls and the tiny ops on ``device``; one row per benchmark (``COLUMNS``)."""
    budget = budget or (mb.QUICK_BUDGET if quick else mb.DEFAULT_BUDGET)
    rows: list[dict[str, Any]] = []
    tiny = mb.tiny_op_times(device, budget)
    for name, t in tiny.items():
        rows.append(_row(f"tiny_{name}", "fp32", 0, 0, "", "launch" if name == "add" else "", t))
    sizes = (QUICK_CPU_SIZES if device == "cpu" else QUICK_CUDA_SIZES) if quick else \
        (CPU_SIZES if device == "cpu" else CUDA_SIZES)
    for size in sizes:
        t = mb.copy_bandwidth(device, size, budget)
        rows.append(_row("copy", "fp32", size, 0, level_of(hw, size), qualifying_level(hw, size) or "", t,
                         gb=size / t.median_s / 1e9))
    n = QUICK_MATMUL_N if quick else MATMUL_N[device]
    dtypes = ["fp32", "bf16"] if (device == "cuda" or mb.bf16_is_fast(device)) else ["fp32"]
    if device == "cuda":
        dtypes.append("fp16")
    for dtype in dtypes:
        t, rate = mb.matmul_throughput(device, dtype, n, budget)
        rows.append(_row("matmul", dtype, 3 * n * n * mb.element_bytes(dtype), n, "", _unit(dtype), t,
                         gflop=rate / 1e9))
    return pd.DataFrame(rows, columns=list(COLUMNS))


def _unit(dtype: str) -> str:
    return "vector" if dtype == "fp32" else "tensor"


def _row(kind, dtype, size, n, level, used_for, t: mb.Timing, gb=float("nan"), gflop=float("nan")) -> dict:
    return {"kind": kind, "dtype": dtype, "size_bytes": int(size), "n": int(n), "level": level,
            "used_for": used_for, "seconds": t.median_s, "q1_s": t.q1_s, "q3_s": t.q3_s, "min_s": t.min_s,
            "reps": t.reps, "gb_per_s": gb, "gflop_per_s": gflop}


def bandwidth_ceilings(hw: Hardware, table: pd.DataFrame) -> tuple[dict[str, float], list[str]]:
    """Measured bandwidth (B/s) of each level with clean copy sizes, nearest level never slower; plus notes."""
    notes: list[str] = []
    tiny = table[table.kind == "tiny_copy"]
    t0 = float(tiny.seconds.iloc[0]) if len(tiny) else 0.0
    copies = table[table.kind == "copy"]
    measured: dict[str, float] = {}
    for name in cache_level_names(hw):
        sizes = copies[copies.used_for == name]
        if sizes.empty:
            continue
        if name == hw.main_memory:
            # Streaming from main memory: the largest working set, the one the caches help least.
            big = sizes.loc[sizes.size_bytes.idxmax()]
            measured[name] = float(big.size_bytes / max(big.seconds - t0, MIN_DATA_SHARE * big.seconds))
            continue
        t = sizes.seconds.to_numpy()
        data = t - t0
        ok = data >= MIN_DATA_SHARE * t
        if ok.any():
            measured[name] = float((sizes.size_bytes.to_numpy()[ok] / data[ok]).max())
        else:
            measured[name] = float((sizes.size_bytes.to_numpy() / t).max())
            notes.append(f"{name}: every copy was mostly fixed cost, ceiling taken without subtracting it")
    names = [n for n in cache_level_names(hw) if n in measured]
    for near, far in reversed(list(zip(names, names[1:]))):
        if measured[near] < measured[far]:
            notes.append(f"{near} measured {measured[near] / 1e9:.3g} GB/s < {far}; raised to {far}'s "
                         f"{measured[far] / 1e9:.3g} GB/s (small copies are dominated by their fixed cost)")
            measured[near] = measured[far]
    return measured, notes


def build_spec(base: Hardware, table: pd.DataFrame, *, device: str, name: str, sidecar: str) -> Calibration:
    """The calibrated spec: ``base`` with measured efficiency (and nominal peaks raised where beaten)."""
    data = base.to_dict()
    notes: list[str] = []
    raised: list[str] = []
    eff = dict(data.get("efficiency", {}))
    memory = dict(eff.get("memory", {}))

    bandwidth, bw_notes = bandwidth_ceilings(base, table)
    notes += bw_notes
    for level, bw in bandwidth.items():
        nominal = base.memory[level].bandwidth_bytes_per_s
        if bw > nominal:
            data["memory"][level]["bandwidth_bytes_per_s"] = float(bw)
            data["memory"][level]["source"] = "calibration"
            memory[level] = 1.0
            raised.append(f"memory.{level}.bandwidth {nominal / 1e9:.4g} -> {bw / 1e9:.4g} GB/s")
        else:
            memory[level] = max(round(bw / nominal, 4), 1e-4)
    unmeasured = [lv for lv in cache_level_names(base) if lv not in bandwidth]
    if unmeasured:
        notes.append(f"not measured (kept from {base.name}): memory {', '.join(unmeasured)}")
    eff["memory"] = memory

    flops: dict[str, float] = {}
    for row in table[table.kind == "matmul"].itertuples():
        flops[row.dtype] = row.gflop_per_s * 1e9
    for unit, dtype, key in (("vector", "fp32", "vector_flops"), ("tensor", "bf16", "tensor_flops")):
        if dtype not in flops:
            notes.append(f"efficiency.{unit} kept from {base.name} ({dtype} matmul not measured)")
            continue
        nominal = base.compute.peak_flops(dtype, unit)
        if flops[dtype] > nominal:
            data["compute"][key][dtype] = float(flops[dtype])
            eff[unit] = 1.0
            raised.append(f"compute.{key}.{dtype} {nominal / 1e9:.4g} -> {flops[dtype] / 1e9:.4g} GFLOP/s")
        else:
            eff[unit] = max(round(flops[dtype] / nominal, 4), 1e-4)

    tiny = {r.kind: r.seconds for r in table[table.kind.str.startswith("tiny_")].itertuples()}
    launch = float(tiny["tiny_add"])
    eff["launch_s"] = launch
    eff["attention_overhead_s"] = max(0.0, float(tiny.get("tiny_attention", launch)) - launch)

    import torch

    host = mb.device_name(device)
    threads = f", {torch.get_num_threads()} threads" if device == "cpu" else ""
    today = _dt.date.today().isoformat()
    data["name"] = name
    data["description"] = f"{base.description or base.name}; calibrated on {host}"
    data["sources"] = dict(data["sources"])
    data["sources"]["calibration"] = (f"perfmodel calibrate --device {device} on {host} (torch {torch.__version__}"
                                      f"{threads}), {today}; raw microbenchmarks in {sidecar}")
    if raised:
        notes.append("measured above nominal, nominal raised to the measurement and efficiency set to 1.0: "
                     + "; ".join(raised))
    ceilings = ", ".join(f"{lv} {bw / 1e9:.3g} GB/s" for lv, bw in bandwidth.items())
    rates = ", ".join(f"{dt} {r / 1e9:.3g} GFLOP/s" for dt, r in flops.items())
    eff["note"] = (f"calibrated {today} by `perfmodel calibrate --device {device}` on {host} from {base.name}: "
                   f"copy bandwidth {ceilings or 'none'}; matmul {rates or 'none'}; launch {launch * 1e6:.2f} us; "
                   f"raw table {sidecar}" + ("; " + "; ".join(notes) if notes else ""))
    data["efficiency"] = eff
    from perfmodel.specs.base import validate

    hw = validate(Hardware, data, f"calibrated spec {name}")
    return Calibration(hw, table, bandwidth, flops, launch, notes)


def sidecar_path(yaml_path: str | Path) -> Path:
    """``host.yaml`` → ``host.microbench.csv`` beside it."""
    p = Path(yaml_path)
    return p.with_name(p.stem + ".microbench.csv")


def calibrate(device: str = "cpu", base: str | Path | Hardware | None = None, *, output: str | Path | None = None,
              name: str | None = None, quick: bool = False, budget: mb.Budget | None = None) -> Calibration:
    """Measure the microbenchmarks on ``device`` and return the calibrated spec built on ``base``.

    ``base`` defaults to ``cpu-generic`` for the CPU; for CUDA it must name the GPU's catalog spec. ``output``
    (the YAML path that :func:`write_calibration` will use) names the sidecar in the note and, without ``name``,
    gives the spec its name (the file's stem). Raises :class:`microbench.DeviceUnavailable` for an absent device.
    """
    mb.check_device(device)
    if base is None:
        if device not in DEFAULT_BASE:
            raise ValueError(f"calibrate --device {device}: expected --base naming the device's catalog spec "
                             "(e.g. h100-sxm)")
        base = DEFAULT_BASE[device]
    hw = load_hardware(base)
    expected_kind = "cpu" if device == "cpu" else "gpu"
    if hw.kind != expected_kind:
        raise ValueError(f"calibrate --device {device}: base spec {hw.name!r} is kind {hw.kind!r}, "
                         f"expected a {expected_kind} spec")
    out = Path(output) if output is not None else Path(f"{hw.name}-calibrated.yaml")
    table = run_microbenchmarks(device, hw, quick=quick, budget=budget)
    return build_spec(hw, table, device=device, name=name or out.stem, sidecar=sidecar_path(out).name)


def write_calibration(cal: Calibration, path: str | Path) -> tuple[Path, Path]:
    """Write the spec YAML (checked by loading it back) and the sidecar CSV; returns both paths."""
    import yaml

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = (f"# {cal.hardware.name}: written by `perfmodel calibrate`; nominal numbers from the base spec,\n"
              "# efficiency measured by microbenchmarks (see efficiency.note and the sidecar CSV).\n")
    path.write_text(header + yaml.safe_dump(cal.hardware.to_dict(), sort_keys=False, width=120), encoding="utf-8")
    load_hardware(path)
    csv = sidecar_path(path)
    cal.table.to_csv(csv, index=False)
    return path, csv
