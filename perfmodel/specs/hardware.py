"""Hardware specs: one YAML file per device, data not code.

A hardware spec is the device's datasheet written as a tree: compute peaks per data type and unit, the memory
hierarchy from the nearest level (shared memory / L1) to the farthest (HBM or DRAM), interconnects, power, and
an ``efficiency`` block (the achievable fraction of each peak and the launch overhead) that calibration fills.
Every group cites its numbers through ``source``, a key of the top-level ``sources`` mapping.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, PositiveFloat, PositiveInt, model_validator

from perfmodel.errors import FieldProblems, Problem, SpecError
from perfmodel.specs.base import Spec, catalog_names, load_spec, spec_source
from perfmodel.transfer import is_own, resolve

DType = Literal["fp64", "fp32", "tf32", "bf16", "fp16", "fp8", "int8", "int4", "fp4"]
DTYPES: tuple[str, ...] = ("fp64", "fp32", "tf32", "bf16", "fp16", "fp8", "int8", "int4", "fp4")

#: an achievable fraction of a peak: in (0, 1], and at least a millionth (below that the peak itself is wrong)
MIN_FRACTION = 1e-6
Fraction = Annotated[float, Field(ge=MIN_FRACTION, le=1)]
#: a time, a count or a size that must be finite and >= 0
NonNegative = Annotated[float, Field(ge=0)]
#: A spec figure a calibration was made for (perfmodel/transfer.py: FIGURES): finite, and within the ranges a
#: device's counts, rates and latencies take (a latency may be unknown: 0).
Figure = Annotated[float, Field(ge=0, le=1e18)]


class Compute(Spec):
    """Compute resources: parallel units, clock and dense peak throughput per data type."""

    units: PositiveInt = Field(description="number of parallel compute units (SMs, CUs or CPU cores)")
    unit_name: Literal["SM", "CU", "core"] = Field("SM", description="what a unit is called on this device")
    architecture: str | None = Field(
        None, description="architecture generation (ampere, ada, hopper, blackwell, blackwell-ultra, cdna3, x86, "
                          "...): devices of one generation share kernels and calibrated efficiencies "
                          "(perfmodel/transfer.py)")
    sm_version: PositiveInt | None = Field(
        None, description="CUDA SM version, compute capability x 10 (80 A100, 86 GA102, 89 Ada, 90 Hopper, 100 "
                          "B200/GB200, 103 B300, 120 GB202); selects the per-SM rates the peaks are checked against "
                          "(perfmodel/specs/sanity.py); default: the architecture's datacenter SM")
    clock_hz: PositiveFloat = Field(description="clock at which the peaks below are quoted (Hz)")
    boost_clock_hz: PositiveFloat | None = Field(
        None, description="maximum clock, where the vendor quotes the vector (CUDA-core) peaks at it and the tensor "
                          "peaks at the lower `clock_hz` (H100 SXM: 1.98 vs 1.83 GHz) (Hz); default: clock_hz")
    tensor_flops: dict[DType, PositiveFloat] = Field(
        default_factory=dict, description="dense matrix-unit peak per dtype (FLOP/s, no sparsity)")
    vector_flops: dict[DType, PositiveFloat] = Field(
        description="vector / CUDA-core peak per dtype (FLOP/s); also the fallback for dtypes without a tensor entry")
    source: str = Field(description="key in `sources` citing these numbers")

    def peak_flops(self, dtype: str, unit: str = "tensor") -> float:
        """Peak FLOP/s for ``dtype`` on ``unit`` ('tensor' or 'vector'), falling back sensibly.

        A matrix op in a dtype without a tensor peak runs on the vector units (e.g. fp32 without TF32).
        Integer/fp8 vector work without an entry runs at the fp16/fp32 vector rate.
        """
        if unit == "tensor" and dtype in self.tensor_flops:
            return self.tensor_flops[dtype]
        if dtype in self.vector_flops:
            return self.vector_flops[dtype]
        for fallback in ("fp16", "bf16", "fp32"):
            if fallback in self.vector_flops:
                return self.vector_flops[fallback]
        return max(self.vector_flops.values())


class MemoryLevel(Spec):
    """One level of the memory hierarchy."""

    capacity_bytes: PositiveFloat = Field(description="capacity (bytes); per unit when `per_unit` is true")
    bandwidth_bytes_per_s: PositiveFloat | None = Field(
        None, description="aggregate peak bandwidth of the level over all units (B/s); required for main memory; "
                          "a GPU cache left without one gets it from the transfer rule (perfmodel/transfer.py)")
    latency_s: PositiveFloat | None = Field(
        None, description="load-to-use latency (s); a GPU level left without one gets it from the transfer rule")
    per_unit: bool = Field(False, description="true when the capacity is per SM/core (shared memory, L1, L2 of a CPU core)")
    partitions: int = Field(
        1, ge=1, description="partitions that each keep their own copy of data every SM reads (the two halves of an "
                             "A100/H100 L2, the two dies of a B200): data read by the whole GPU fits in "
                             "capacity / partitions")
    source: str = Field(description="key in `sources` citing these numbers")


class Link(Spec):
    """A device-to-device or host link."""

    bandwidth_bytes_per_s: PositiveFloat = Field(description="bandwidth per direction (B/s)")
    latency_s: PositiveFloat | None = Field(None, description="one-way latency of a small message (s), if known")
    collective_efficiency: float | None = Field(
        None, ge=MIN_FRACTION, le=100,
        description="all-reduce bandwidth reached on large messages as a fraction of a ring over this link "
                    "(may exceed 1 with in-switch reduction); default: the main-memory efficiency")
    collective_half_size_bytes: float = Field(
        0.0, ge=0, description="message size at which an all-reduce reaches half that bandwidth (bytes)")
    source: str = Field(description="key in `sources` citing these numbers")


class Power(Spec):
    tdp_w: PositiveFloat = Field(description="thermal design power (W): the cap of the power model (perfmodel/power.py)")
    idle_w: PositiveFloat | None = Field(
        None, description="idle board power with a CUDA context open (W), cited under `source`; default: 10% of "
                          "tdp_w (an assumption, perfmodel/power.py)")
    source: str = Field(description="key in `sources` citing these numbers")

    @model_validator(mode="after")
    def _idle_below_tdp(self) -> "Power":
        if self.idle_w is not None and self.idle_w >= self.tdp_w:
            raise FieldProblems([Problem("idle_w", self.idle_w, f"a power below tdp_w ({self.tdp_w:g} W)")])
        return self


class Efficiency(Spec):
    """Achievable fraction of each peak, and fixed per-kernel costs; filled by calibration."""

    tensor: float = Field(0.8, ge=MIN_FRACTION, le=1, description="achievable fraction of the tensor peak on large matmuls")
    tensor_dtype: dict[str, Fraction] = Field(
        default_factory=dict, description="achievable fraction of a dtype's own tensor peak where its GEMM kernels "
                                          "reach another than `tensor` (e.g. fp8: CUTLASS scaled_mm reaches less of "
                                          "its doubled peak); default: `tensor`")
    vector: float = Field(0.7, ge=MIN_FRACTION, le=1, description="achievable fraction of the vector peak")
    memory: dict[str, Fraction] = Field(
        default_factory=dict, description="achievable fraction of each memory level's bandwidth, in (0, 1] "
                                          "(default 0.8)")
    launch_s: float = Field(4e-6, ge=0, description="fixed cost per kernel: launch plus ramp-up and tail (s)")
    attention_overhead_s: float = Field(
        0.0, ge=0, description="extra fixed cost of an attention call beyond one launch (cache write, split-KV combine, metadata) (s)")
    prefill_attention_overhead_s: float = Field(
        0.0, ge=0, description="extra fixed cost of a prefill (variable-length) attention call beyond one launch (s)")
    attention_tile_s: float | None = Field(
        None, ge=0, description="serial time of one decode-attention tile (one sequence x KV head) per SM; "
                                "default: four dependent main-memory round trips (s)")
    attention_cta_bytes_per_s: float | None = Field(
        None, gt=0, description="bandwidth one decode-attention CTA sustains (bytes in flight / latency); "
                                "default: no limit below the memory level's (B/s)")
    attention_tensor: float | None = Field(
        None, ge=MIN_FRACTION, le=1, description="achievable fraction of the tensor peak in a flash-attention mainloop "
                                      "(default: the GEMM one, `tensor`)")
    prefill_attention_tile_s: float | None = Field(
        None, ge=0, description="serial time of one prefill-attention tile (load Q, set up the K/V pipeline, "
                                "write O) (s); default: attention_tile_s")
    attention_kernel: Literal["fa2", "fa3", "trtllm"] = Field(
        "fa2", description="attention kernel family the serving stack runs on this device: 'fa3' (FlashAttention-3, "
                           "Hopper) packs the GQA group into 128-row query tiles; 'fa2' (FlashAttention-2, Ampere, "
                           "Ada) tiles 64 query rows per head; 'trtllm' (TensorRT-LLM's kernels through FlashInfer, "
                           "Blackwell) groups up to 8/16/32 heads per decode CTA (perfmodel/engines/tiling.py, "
                           "FlashKernel); default: the architecture's (perfmodel/transfer.py)")
    gemm_half_rows: dict[str, NonNegative] = Field(
        default_factory=dict, description="CPU only, per dtype: rows m at which a matmul of m rows reaches half its "
                                          "large-matmul rate (Hockney's half-performance length: rate = "
                                          "peak·m/(m + m½)); a dtype not listed takes fp32's; default: no small-m "
                                          "penalty (perfmodel/engines/cpu.py)")
    gemv_flops_per_s: dict[str, PositiveFloat] = Field(
        default_factory=dict, description="CPU only, per dtype: FLOP/s of a one-row matmul (a GEMV) whose weights sit "
                                          "in cache, the kernel's own ceiling (a bf16 GEMV converts every weight to "
                                          "fp32 first); default: the matmul rate (perfmodel/engines/cpu.py)")
    exps_per_s: float | None = Field(
        None, gt=0, description="exponentials per second a softmax sustains on the whole device; default: the fp32 "
                                "vector rate / 16 on a GPU (special-function units), / 64 on a CPU (a vectorised "
                                "polynomial)")
    page_fault_bytes_per_s: float | None = Field(
        None, gt=0, description="CPU only: bytes per second of first touch of a fresh allocation above the C "
                                "allocator's mmap threshold (page faults + zeroing), charged to ops that write a "
                                "fresh allocation (shape['fresh_output']); default: not charged")
    kernel_floor_s: float = Field(
        0.0, ge=0, description="shortest duration a profiler reports for a kernel (its blocks launched, the first "
                               "loads, the drain): the floor of a profiled kernel's time once the launch gap is "
                               "left out (s)")
    row_kernel_s: float | None = Field(
        None, ge=0, description="time of one pass of a row kernel's loop (the norm, activation and rotary kernels "
                                "that launch one block per token, and embedding lookups): a main-memory round trip "
                                "under load; a block takes one pass per block-size of its row; default: not "
                                "modelled, the op is timed by its bytes (perfmodel/engines/tiling.py) (s)")
    row_kernel_bandwidth: float | None = Field(
        None, gt=0, le=1, description="fraction of main-memory bandwidth a row kernel reaches with every SM full "
                                      "(one element per thread per pass keeps few bytes in flight): a pass then "
                                      "takes the resident blocks' bytes at this rate when that is longer than "
                                      "row_kernel_s; default: never slowed by the load")
    energy_per_flop_j: float | None = Field(
        None, gt=0, description="energy (J) per tensor FLOP at the attainable rate, idle power included: a kernel "
                                "whose FLOP rate x this exceeds power.tdp_w is slowed to the TDP once the power "
                                "limiter acts (perfmodel/engines/tiling.py, power_stretch); default: never limited")
    energy_per_flop_dtype: dict[str, PositiveFloat] = Field(
        default_factory=dict, description="energy_per_flop_j of a dtype whose FLOPs cost another energy (fp8: "
                                          "narrower multipliers, the same operand movement per tile); default: "
                                          "energy_per_flop_j")
    power_window_s: float = Field(
        0.8e-3, gt=0, description="how long a kernel runs before the power limiter slows it: a kernel of duration t "
                                  "takes the fraction t^4 / (t^4 + window^4) of the slow-down (s)")
    note: str = Field("datasheet defaults, not calibrated", description="how these numbers were obtained")
    calibrated_for: dict[str, Figure] | None = Field(
        None, description="the spec figures (SMs, clock, peak, bandwidths, latencies) this block was fit for; on a spec "
                          "whose figures differ it is carried over in device-independent units, not claimed as the "
                          "spec's own (perfmodel/transfer.py)")

    def memory_fraction(self, level: str) -> float:
        return self.memory.get(level, 0.8)

    def tensor_fraction(self, dtype: str) -> float:
        """Achievable fraction of ``dtype``'s tensor peak on GEMMs: ``tensor_dtype[dtype]``, else ``tensor``."""
        return self.tensor_dtype.get(dtype, self.tensor)

    def energy_per_flop(self, dtype: str) -> float | None:
        """``energy_per_flop_j`` of a ``dtype`` FLOP: ``energy_per_flop_dtype[dtype]``, else the bf16 figure."""
        return self.energy_per_flop_dtype.get(dtype, self.energy_per_flop_j)

    def half_rows(self, dtype: str) -> float:
        """``gemm_half_rows`` of ``dtype`` (fp32's where the dtype has none; 0 where neither is set)."""
        return self.gemm_half_rows.get(dtype, self.gemm_half_rows.get("fp32", 0.0))


class Hardware(Spec):
    """A device: the root of a hardware YAML file."""

    name: str = Field(description="catalog name, e.g. h100-sxm")
    vendor: str = Field(description="manufacturer")
    kind: Literal["gpu", "cpu", "accelerator"] = Field("gpu", description="device class")
    description: str = Field("", description="one line shown in listings")
    sources: dict[str, str] = Field(description="citation per source key: document title and URL")
    compute: Compute
    memory: dict[str, MemoryLevel] = Field(
        description="levels ordered from nearest (shared memory / L1) to farthest (HBM / DRAM); the last is main memory")
    interconnect: dict[str, Link] = Field(default_factory=dict, description="links by name (nvlink, pcie, xgmi)")
    power: Power | None = None
    price_per_hour_usd: PositiveFloat | None = Field(
        None, description="rental price per device-hour (USD), one GPU (not a node); cite provider and date under "
                          "the `price` key of `sources`")
    efficiency: Efficiency = Field(default_factory=Efficiency)

    @model_validator(mode="after")
    def _check(self) -> "Hardware":
        problems = []
        if not self.memory:
            problems.append(Problem("memory", self.memory, "at least one memory level"))
        for name, level in self.memory.items():
            if level.bandwidth_bytes_per_s is None and (name == list(self.memory)[-1] or self.kind != "gpu"):
                problems.append(Problem(f"memory.{name}.bandwidth_bytes_per_s", None,
                                        "a bandwidth (only a GPU's caches may leave it out, for the transfer rule to "
                                        "fill)"))
        problems += self._order_problems()
        cited = [("compute.source", self.compute.source)]
        cited += [(f"memory.{k}.source", v.source) for k, v in self.memory.items()]
        cited += [(f"interconnect.{k}.source", v.source) for k, v in self.interconnect.items()]
        if self.power is not None:
            cited.append(("power.source", self.power.source))
        for where, key in cited:
            if key not in self.sources:
                problems.append(Problem(where, key, f"a key of `sources` ({', '.join(sorted(self.sources))})"))
        for level in self.efficiency.memory:
            if level not in self.memory:
                problems.append(Problem(f"efficiency.memory.{level}", self.efficiency.memory[level],
                                        f"a memory level's name as the key ({level!r} is not one of {', '.join(self.memory)})"))
        if not self.compute.vector_flops:
            problems.append(Problem("compute.vector_flops", self.compute.vector_flops, "at least one dtype"))
        if problems:
            raise FieldProblems(problems)
        return self

    def _order_problems(self) -> list[Problem]:
        """The order of ``memory`` is the hierarchy (nearest first, main memory last), so a file whose levels are
        out of order (a YAML tool that sorts keys, a level added at the end) would be read as a different device:
        per-unit levels must come first and each shared level must hold more than the one before it."""
        problems, prev, shared_seen = [], None, False
        for name, level in self.memory.items():
            if level.per_unit:
                if shared_seen:
                    problems.append(Problem(f"memory.{name}", name, "per-unit levels (shared memory, L1) listed "
                                            "before the shared ones: `memory` goes from nearest to farthest"))
                continue
            shared_seen = True
            total = self.level_capacity_bytes(name)
            if prev is not None and total <= prev[1]:
                problems.append(Problem(
                    f"memory.{name}.capacity_bytes", level.capacity_bytes,
                    f"more than {prev[0]}'s {prev[1]:.4g} B, the level before it: `memory` goes from nearest to "
                    f"farthest, main memory last (is {name} listed in its place?)"))
            prev = (name, total)
        return problems

    # -- derived quantities -------------------------------------------------------------------------------
    @property
    def main_memory(self) -> str:
        """Name of the farthest level (HBM or DRAM): where weights and caches live."""
        return list(self.memory)[-1]

    @property
    def memory_capacity_bytes(self) -> float:
        return self.memory[self.main_memory].capacity_bytes

    @property
    def main_bandwidth_bytes_per_s(self) -> float:
        return self.memory[self.main_memory].bandwidth_bytes_per_s

    def level_capacity_bytes(self, level: str) -> float:
        """Total capacity of a level (per-unit capacities multiplied by the number of units)."""
        m = self.memory[level]
        return m.capacity_bytes * (self.compute.units if m.per_unit else 1)

    def shared_capacity_bytes(self, level: str) -> float:
        """Capacity of a level for data the whole device reads: the total over partitions that each keep a copy."""
        return self.level_capacity_bytes(level) / self.memory[level].partitions

    def ridge_point(self, dtype: str = "bf16", level: str | None = None) -> float:
        """FLOP per byte at which the roofline turns from memory- to compute-bound."""
        level = level or self.main_memory
        return self.compute.peak_flops(dtype) / self.memory[level].bandwidth_bytes_per_s

    def summary(self) -> dict[str, Any]:
        """A flat row for listings."""
        hbm = self.memory[self.main_memory]
        from perfmodel.power import idle_power_w

        return {
            "name": self.name,
            "vendor": self.vendor,
            "compute_units": self.compute.units,
            "unit_name": self.compute.unit_name,
            "peak_flops": self.compute.peak_flops("bf16"),
            "memory_capacity_bytes": hbm.capacity_bytes,
            "bandwidth_bytes_per_s": hbm.bandwidth_bytes_per_s,
            "ridge_point": self.ridge_point("bf16"),
            "tdp_w": self.power.tdp_w if self.power else None,
            "idle_w": idle_power_w(self),
            "price_per_hour_usd": self.price_per_hour_usd,
        }


def load_hardware(name_or_path: str | Path, overrides: dict[str, Any] | None = None, *,
                  resolve_efficiency: bool = True) -> Hardware:
    """Load a hardware spec from a catalog name (``h100-sxm``) or a YAML path, with dotted-path overrides.

    The efficiency block then follows the transfer rule (:func:`perfmodel.transfer.resolve`): a device's own
    calibration, a calibration carried to an edited spec, or one transferred from calibrated devices;
    ``resolve_efficiency=False`` returns the block as written.
    """
    if isinstance(name_or_path, Hardware):
        if not overrides:
            return name_or_path
        from perfmodel.specs.base import apply_overrides, validate

        data = apply_overrides(name_or_path.to_dict(), overrides, f"hardware {name_or_path.name} (--set)")
        hw = validate(Hardware, data, f"hardware {name_or_path.name} (--set)")
    else:
        hw = load_spec(Hardware, "hardware", name_or_path, overrides)
        from perfmodel.specs.sanity import hardware_findings, warn_findings

        warn_findings(hardware_findings(hw), f"hardware {hw.name}")
    if not resolve_efficiency:
        return hw
    try:
        return resolve(hw, catalog_calibrations)
    except SpecError as err:  # name the file the efficiency block came from, as every other spec error does
        if isinstance(name_or_path, Hardware):
            raise
        raise SpecError.from_problems(spec_source("hardware", name_or_path), err.problems) from None


@lru_cache(maxsize=1)
def catalog_calibrations() -> tuple[Hardware, ...]:
    """Every catalog GPU that carries its own calibration: the devices the transfer rule draws from."""
    out = []
    for name in hardware_names():
        hw = load_hardware(name, resolve_efficiency=False)
        if hw.kind == "gpu" and is_own(hw):
            out.append(hw)
    return tuple(out)


def hardware_names() -> list[str]:
    return catalog_names("hardware")
