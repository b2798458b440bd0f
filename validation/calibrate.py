"""Calibration: a device's efficiency block from microbenchmarks only.

Like tuning a car's speedometer on a test track rather than on the commute: the spec's datasheet numbers
say what the device could do, a handful of simple runs say what it does, and the ratio goes into the
``efficiency`` block of a new hardware YAML. The runs are microbenchmarks, never the kernels that validation
measures (DESIGN.md: "never fit per shape to a validation row"):

- **streams** over growing working sets, repeated on the same buffers so that the set stays in the nearest level
  that holds it → the bandwidth of each memory level: on a CPU a read-only ``torch.sum`` (what a GEMV does to its
  weights and attention to its cache, with no write-allocate traffic), on a GPU ``dst.copy_(src)`` (working set
  = src + dst bytes);
- **large square matmuls** per dtype → attainable FLOP/s (fp32 against the vector peak, bf16 against the
  tensor peak — the units the analytic engine charges them to);
- **tiny ops** (1-element tensors) → the fixed cost of a call: ``efficiency.launch_s`` is a 1-element
  ``torch.add(out=)``, ``efficiency.attention_overhead_s`` what a tiny attention call costs beyond that (on a
  GPU ``scaled_dot_product_attention``; on a CPU the kernels its rows run: perfmodel's decode-attention
  reference for decode, SDPA's causal kernel for ``prefill_attention_overhead_s``; wall time on a CPU, CUDA
  events on a GPU: the host's dispatch is part of a call's cost);
- on a CPU also (perfmodel/engines/cpu.py): a **skinny matmul** (16 rows against a 1024² weight) per dtype →
  ``efficiency.gemm_half_rows``, Hockney's half-performance row count m½ = m·(rate(∞)/rate(m) − 1); a
  **GEMV** (one row against the same cached weight) per dtype → ``efficiency.gemv_flops_per_s``, the one-row
  kernel's own ceiling; and
  ``torch.exp`` over a cached buffer → ``efficiency.exps_per_s``. The matmuls and the exponentials run in
  three interleaved rounds and keep their median round: a burst of load from another process during one round
  must not set a ceiling. Last, ``fill_`` of a fresh 128 MiB allocation against a reused one →
  ``efficiency.page_fault_bytes_per_s``, the first-touch cost of new pages from the kernel.

On a CPU the spec starts from the host itself: the core count is the number of threads torch runs, the cache
sizes come from sysfs (``/sys/devices/system/cpu/cpu0/cache``) and main memory's from ``/proc/meminfo``. A
server's last-level cache is shared with other tenants, so its capacity is then taken from the sweep where the
bandwidth falls towards main memory's (:func:`effective_llc`), when that happens before the nominal size.

On a GPU the copies and matmuls are timed by their kernels' device time (``torch.profiler``): a loop of small
eager copies is paced by the host's dispatch, which would hide the L2's bandwidth behind the launch cost.

How a stream's time becomes a level's bandwidth. The engine predicts ``bytes / (bandwidth × efficiency) +
launch``, so the bandwidth wanted is the marginal one: ``bytes / (t − t₀)`` with ``t₀`` the time of a 1-element
call of the same kernel (its own fixed cost). A size counts for a level when its working set fits the level (one unit's
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
#: the bandwidth sweep's kernel: a read-only sum on a CPU (what GEMVs and attention do to their weights and
#: cache; a copy would add write-allocate traffic); a copy on a GPU, timed by its kernel
STREAM = {"cpu": "read", "cuda": "copy"}
STREAM_KINDS = tuple(STREAM.values())
#: the skinny matmul of the half-performance row count: SKINNY_M rows against an SKINNY_N² weight (cached)
SKINNY_M = 16
SKINNY_N = 1024
#: the first-touch benchmark's buffer: well above glibc's largest mmap threshold (32 MiB)
FIRST_TOUCH_BYTES = 128 << 20
#: interleaved rounds of the rate benchmarks (matmuls, exponentials); each keeps its median round
ROUNDS = 3

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


def host_caches(root: str | Path = "/sys/devices/system/cpu/cpu0/cache") -> dict[int, tuple[int, int]]:
    """This host's data caches from sysfs: level → (bytes per instance, CPUs sharing an instance); {} where
    sysfs has no cache directory (not Linux)."""
    out: dict[int, tuple[int, int]] = {}
    for index in sorted(Path(root).glob("index*")):
        try:
            kind = (index / "type").read_text().strip()
            level = int((index / "level").read_text())
            size = (index / "size").read_text().strip().upper()
            shared = (index / "shared_cpu_list").read_text().strip()
        except (OSError, ValueError):
            continue
        if kind == "Instruction":
            continue
        scale = {"K": 1024, "M": 1024 ** 2, "G": 1024 ** 3}.get(size[-1:], 1)
        nbytes = int(float(size.rstrip("KMG")) * scale)
        cpus = 0
        for part in shared.split(","):
            lo, _, hi = part.partition("-")
            cpus += int(hi or lo) - int(lo) + 1
        out[level] = (nbytes, cpus)
    return out


def host_spec(base: Hardware, threads: int, caches: dict[int, tuple[int, int]] | None = None,
              memory_bytes: float | None = None) -> tuple[Hardware, list[str]]:
    """``base`` with this host's core count (the threads torch runs) and cache sizes (sysfs), and its memory size;
    cache levels are matched by position (the spec's n-th level is the host's level n). Returns the spec and
    notes saying what changed. The nominal bandwidths and peaks stay the base's: calibration measures them."""
    from perfmodel.specs.base import validate

    caches = host_caches() if caches is None else caches
    data = base.to_dict()
    notes = []
    scale = threads / base.compute.units
    if scale != 1:
        # the template's nominal peaks and per-core bandwidths are for its own core count
        for key in ("tensor_flops", "vector_flops"):
            data["compute"][key] = {dt: v * scale for dt, v in data["compute"].get(key, {}).items()}
        for name, lvl in base.memory.items():
            if lvl.per_unit:
                data["memory"][name]["bandwidth_bytes_per_s"] = lvl.bandwidth_bytes_per_s * scale
        notes.append(f"{threads} threads against the template's {base.compute.units} cores: nominal peaks and "
                     f"per-core cache bandwidths scaled by {scale:.3g}")
    data["compute"]["units"] = int(threads)
    names = [n for n in base.memory][:-1]
    for i, name in enumerate(names, start=1):
        if i not in caches:
            continue
        size, sharing = caches[i]
        per_unit = sharing <= 1
        lvl = data["memory"][name]
        if lvl["capacity_bytes"] != size or bool(lvl.get("per_unit", False)) != per_unit:
            notes.append(f"memory.{name}: {size / 1024:.0f} KiB {'per core' if per_unit else 'shared'} (sysfs)")
        lvl["capacity_bytes"] = float(size)
        lvl["per_unit"] = per_unit
    if memory_bytes is None:
        try:
            meminfo = Path("/proc/meminfo").read_text().split()
            memory_bytes = float(meminfo[meminfo.index("MemTotal:") + 1]) * 1024
        except (OSError, ValueError, IndexError):
            memory_bytes = None
    if memory_bytes:
        data["memory"][base.main_memory]["capacity_bytes"] = float(memory_bytes)
    return validate(Hardware, data, f"host spec from {base.name}"), notes


def effective_llc(hw: Hardware, table: pd.DataFrame) -> tuple[float | None, str | None]:
    """Capacity the last-level cache really gives this process, from the bandwidth sweep: on a shared server
    the other tenants hold much of it. Its plateau is the best bandwidth between twice the level below's capacity
    and its nominal capacity; main memory's is the largest working set's. The effective capacity is the largest
    working set still above the geometric mean of the two (all smaller ones too), × √2 (the edge lies between two
    swept sizes); None when the sweep cannot tell or the nominal capacity holds."""
    names = cache_level_names(hw)
    if len(names) < 3:
        return None, None
    llc, below = names[-2], names[-3]
    sweep = table[table.kind.isin(STREAM_KINDS)].sort_values("size_bytes")
    lo, nominal = 2 * hw.level_capacity_bytes(below), hw.level_capacity_bytes(llc)
    region = sweep[(sweep.size_bytes > lo) & (sweep.size_bytes <= nominal)]
    if region.empty or sweep.size_bytes.max() <= nominal:
        return None, None
    plateau, floor = float(region.gb_per_s.max()), float(sweep.gb_per_s.iloc[-1])
    if plateau <= 1.25 * floor:
        return None, None
    threshold = (plateau * floor) ** 0.5
    held = 0.0
    for row in sweep[sweep.size_bytes > lo].itertuples():
        if row.gb_per_s < threshold:
            break
        held = float(row.size_bytes)
    if not held or held * 2 ** 0.5 >= nominal:
        return None, None
    cap = held * 2 ** 0.5
    return cap, (f"memory.{llc}: effective capacity {cap / 2**20:.0f} MiB of the nominal {nominal / 2**20:.0f} "
                 f"MiB (bandwidth falls from {plateau:.3g} towards main memory's {floor:.3g} GB/s beyond "
                 f"{held / 2**20:.0f} MiB)")


def relabel(hw: Hardware, table: pd.DataFrame) -> pd.DataFrame:
    """The bandwidth sweep's ``level`` (the level that holds each working set) and ``used_for`` (the level it
    measures cleanly, or "") columns for ``hw``'s capacities: set once the sweep has run, and again when
    calibration changes a capacity."""
    table = table.copy()
    sweep = table.kind.isin(STREAM_KINDS)
    table.loc[sweep, "level"] = [level_of(hw, s) for s in table.loc[sweep, "size_bytes"]]
    table.loc[sweep, "used_for"] = [qualifying_level(hw, s) or "" for s in table.loc[sweep, "size_bytes"]]
    return table


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
    stream = STREAM[device]
    bench = mb.read_bandwidth if stream == "read" else mb.copy_bandwidth
    for size in sizes:
        t = bench(device, size, budget)
        rows.append(_row(stream, "fp32", size, 0, "", "", t, gb=size / t.median_s / 1e9))
    n = QUICK_MATMUL_N if quick else MATMUL_N[device]
    dtypes = ["fp32", "bf16"] if (device == "cuda" or mb.bf16_is_fast(device)) else ["fp32"]
    if device == "cuda":
        dtypes.append("fp16")
    # Rates: each benchmark runs in ROUNDS interleaved rounds and keeps its median round, so that a burst of load
    # from another process (or a clock excursion) during one round does not set a ceiling.
    benches: list[tuple[str, str, int, int, str, Any]] = []
    for dtype in dtypes:
        benches.append(("matmul", dtype, 3 * n * n * mb.element_bytes(dtype), n, _unit(dtype),
                        lambda dtype=dtype: mb.matmul_throughput(device, dtype, n, budget)))
    if device == "cpu":
        # Few-row matmuls (the half-performance row count) and the softmax's exponentials.
        sn = QUICK_MATMUL_N if quick else SKINNY_N
        for dtype in dtypes:
            benches.append(("skinny_matmul", dtype, (SKINNY_M + sn) * sn * mb.element_bytes(dtype), sn,
                            "gemm_half_rows",
                            lambda dtype=dtype: mb.skinny_matmul_throughput(device, dtype, SKINNY_M, sn, budget)))
            # A GEMV over the same cached weight: the one-row kernel's own ceiling
            benches.append(("gemv", dtype, (1 + sn) * sn * mb.element_bytes(dtype), sn, "gemv_flops_per_s",
                            lambda dtype=dtype: mb.skinny_matmul_throughput(device, dtype, 1, sn, budget)))
        benches.append(("exp", "fp32", 0, 1 << 18, "exps_per_s", lambda: mb.exp_throughput(device, budget=budget)))
        if not quick:
            fresh, reused = mb.first_touch(device, FIRST_TOUCH_BYTES, budget)
            rows.append(_row("fill_fresh", "fp32", FIRST_TOUCH_BYTES, 0, "", "page_fault_bytes_per_s", fresh,
                             gb=FIRST_TOUCH_BYTES / fresh.median_s / 1e9))
            rows.append(_row("fill_reused", "fp32", FIRST_TOUCH_BYTES, 0, "", "page_fault_bytes_per_s", reused,
                             gb=FIRST_TOUCH_BYTES / reused.median_s / 1e9))
    rounds = 1 if quick else ROUNDS
    results: list[list[tuple[mb.Timing, float]]] = [[] for _ in benches]
    for _ in range(rounds):
        for i, bench_ in enumerate(benches):
            results[i].append(bench_[-1]())
    for (kind, dtype, size, nn, used_for, _), runs in zip(benches, results):
        t, rate = sorted(runs, key=lambda r: r[1])[len(runs) // 2]
        rows.append(_row(kind, dtype, size, nn, "", used_for, t, gflop=rate / 1e9))
    return relabel(hw, pd.DataFrame(rows, columns=list(COLUMNS)))


def _unit(dtype: str) -> str:
    return "vector" if dtype == "fp32" else "tensor"


def _row(kind, dtype, size, n, level, used_for, t: mb.Timing, gb=float("nan"), gflop=float("nan")) -> dict:
    return {"kind": kind, "dtype": dtype, "size_bytes": int(size), "n": int(n), "level": level,
            "used_for": used_for, "seconds": t.median_s, "q1_s": t.q1_s, "q3_s": t.q3_s, "min_s": t.min_s,
            "reps": t.reps, "gb_per_s": gb, "gflop_per_s": gflop}


def bandwidth_ceilings(hw: Hardware, table: pd.DataFrame) -> tuple[dict[str, float], list[str]]:
    """Measured bandwidth (B/s) of each level with clean copy sizes, nearest level never slower; plus notes."""
    notes: list[str] = []
    streams = table[table.kind.isin(STREAM_KINDS)]
    kind = str(streams.kind.iloc[0]) if len(streams) else "copy"
    tiny = table[table.kind == ("tiny_sum" if kind == "read" else "tiny_copy")]
    t0 = float(tiny.seconds.iloc[0]) if len(tiny) else 0.0
    measured: dict[str, float] = {}
    for name in cache_level_names(hw):
        sizes = streams[streams.used_for == name]
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


def half_rows(table: pd.DataFrame, square: dict[str, float]) -> dict[str, float]:
    """Hockney's half-performance row count per dtype from the skinny matmuls: rate(m) = rate(∞)·m/(m + m½), so
    m½ = m·(rate(∞)/rate(m) − 1), with the square matmul's rate as rate(∞)."""
    out = {}
    for row in table[table.kind == "skinny_matmul"].itertuples():
        if row.dtype in square and row.gflop_per_s > 0:
            out[row.dtype] = round(max(SKINNY_M * (square[row.dtype] / (row.gflop_per_s * 1e9) - 1.0), 0.0), 3)
    return out


def build_spec(base: Hardware, table: pd.DataFrame, *, device: str, name: str, sidecar: str,
               extra_notes: list[str] | None = None) -> Calibration:
    """The calibrated spec: ``base`` with measured efficiency (and nominal peaks raised where beaten)."""
    data = base.to_dict()
    notes: list[str] = list(extra_notes or [])
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
    if "tiny_decode_attention" in tiny:  # a CPU: the kernels its attention rows run (microbench.tiny_op_times)
        eff["attention_overhead_s"] = max(0.0, float(tiny["tiny_decode_attention"]) - launch)
        eff["prefill_attention_overhead_s"] = max(0.0, float(tiny["tiny_prefill_attention"]) - launch)
    half = half_rows(table, flops)
    if half:
        eff["gemm_half_rows"] = half
    gemv = {r.dtype: float(r.gflop_per_s * 1e9) for r in table[table.kind == "gemv"].itertuples()
            if r.gflop_per_s > 0}
    if gemv:
        eff["gemv_flops_per_s"] = gemv
    exps = table[table.kind == "exp"]
    if len(exps):
        eff["exps_per_s"] = float(exps.gflop_per_s.iloc[0]) * 1e9
    fresh, reused = table[table.kind == "fill_fresh"], table[table.kind == "fill_reused"]
    if len(fresh) and len(reused):
        extra = float(fresh.seconds.iloc[0]) - float(reused.seconds.iloc[0])
        if extra > 0:
            eff["page_fault_bytes_per_s"] = float(fresh.size_bytes.iloc[0]) / extra
        else:
            notes.append("first touch of a fresh allocation cost nothing measurable: page faults not charged")

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
    host_notes: list[str] = []
    if device == "cpu":
        import torch

        hw, host_notes = host_spec(hw, torch.get_num_threads())
    table = run_microbenchmarks(device, hw, quick=quick, budget=budget)
    if device == "cpu":
        cap, note = effective_llc(hw, table)
        if cap is not None:
            data = hw.to_dict()
            data["memory"][cache_level_names(hw)[-2]]["capacity_bytes"] = cap
            from perfmodel.specs.base import validate

            hw = validate(Hardware, data, f"host spec from {hw.name}")
            table = relabel(hw, table)
            host_notes.append(note)
    return build_spec(hw, table, device=device, name=name or out.stem, sidecar=sidecar_path(out).name,
                      extra_notes=host_notes)


def write_calibration(cal: Calibration, path: str | Path) -> tuple[Path, Path]:
    """Write the spec YAML (checked by loading it back) and the sidecar CSV; returns both paths."""
    import yaml

    from perfmodel.files import write_atomic

    path = Path(path)
    header = (f"# {cal.hardware.name}: written by `perfmodel calibrate`; nominal numbers from the base spec,\n"
              "# efficiency measured by microbenchmarks (see efficiency.note and the sidecar CSV).\n")
    write_atomic(path, header + yaml.safe_dump(cal.hardware.to_dict(), sort_keys=False, width=120))
    load_hardware(path)
    csv = sidecar_path(path)
    write_atomic(csv, lambda tmp: cal.table.to_csv(tmp, index=False))
    return path, csv
