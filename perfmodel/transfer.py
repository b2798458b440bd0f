"""The transfer rule: a device's efficiency block from the devices that have been calibrated.

Calibration measures how far a device's kernels fall short of its datasheet (the efficiency block of its spec).
Most devices a user asks about have never been measured here. Like a tailor who has measured a few customers and
is asked for a suit for someone he has only a description of, the rule keeps what the measured devices have in
common in units that do not depend on the device's size or speed, and re-applies it to the new description:

- fractions of a peak stay fractions (``tensor``, ``vector``, the memory levels' achievable fraction, by role:
  the first cache and main memory); the attention mainloop's tensor fraction is kept relative to the GEMMs'
  (a device whose clock under load sits below its datasheet's slows both alike);
- the fixed costs of a kernel and of an attention call's extra kernels are counted in SM clock cycles: timed
  from CUDA-graph replays (as the calibration data are, and as a serving engine runs), they are the GPU's own
  work (the front end starting the grid, each CTA's prologue and epilogue, the drain), paced by its clock, not
  the host's launch path; re-applied at the new device's clock;
- the serial time of an attention tile (decode and prefill) stays seconds, a constant of the kernel family: the
  two devices that run one family's identical tiles at different memory latencies (FlashAttention-2 on A100,
  405 ns, and L40S, 254 ns) fit decode tiles of 8.1 and 7.1 us, prefill tiles of 4.0 and 3.9 us: 14% and 3% apart
  in seconds, 38% and 56% in round trips (the only pair that tells the two rules apart);
- a row kernel's pass (and the shortest kernel a profiler shows) is counted in main-memory round trips,
  re-applied with the new device's latency;
- the cache's achievable fraction comes from the devices whose GEMM kernels move operands the same way (each CTA
  its own panels, or a cluster sharing them by multicast): the fits group that way (A100 0.62 and L40S 0.68; H100
  0.90 and GB200 1.0), the devices' own cache bandwidths notwithstanding;
- the bandwidth one attention CTA sustains is counted as the share of main memory that one CTA per SM streams
  (SMs × CTA bandwidth / memory bandwidth): a kernel keeps as many bytes in flight as the device it is tuned for
  needs to fill its memory pipe (Little's law: bandwidth × latency / SMs), so a device with more bandwidth per SM
  gets deeper pipelines;
- the energy per FLOP that sets where the power limiter slows long kernels stays joules, but only between
  siblings (:data:`SIBLING_ONLY`).

The rule, in order (:func:`resolve`):

1. **own**: the spec carries a calibration made for exactly its own figures (``efficiency.calibrated_for``
   matches): used as it is;
2. **carried**: the spec carries a calibration made for other figures (a copy of a calibrated spec, edited:
   more SMs, faster memory): the calibration is normalised with the figures it was made for and re-applied to
   these, and the note says so: an edited copy never claims the original's calibration as its own;
3. **sibling**: calibrated devices of the same architecture family (``compute.architecture``: H200 from H100,
   B200 and B300 from GB200): the median of their normalised values;
4. **cross-device**: the median over every calibrated GPU of each normalised value; values that belong to the
   attention kernel family (FlashAttention-2, FlashAttention-3, TensorRT-LLM) come from calibrated devices running
   the same family when there are any, and the cache fraction from devices whose GEMMs move operands the same
   way (:data:`OPERAND_PATH_FIELDS`).

The kernel family a device runs follows its architecture (:data:`ATTENTION_KERNELS`) unless its spec names one.
The rule and the devices it drew from are written into ``efficiency.note``. ``benchmarks/transfer.py`` checks it
leave-one-GPU-out on the public measurements.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Sequence

if TYPE_CHECKING:  # for annotations only: perfmodel.specs.hardware applies this rule to the specs it loads
    from perfmodel.specs.hardware import Efficiency, Hardware

#: The attention kernel family the serving stack runs on each SM version (vLLM's defaults): FlashAttention-2 on
#: Ampere, Ada and the GB202 graphics SM, FlashAttention-3 on Hopper, FlashInfer calling TensorRT-LLM's kernels on
#: datacenter Blackwell.
ATTENTION_KERNELS = {80: "fa2", 86: "fa2", 89: "fa2", 90: "fa3", 100: "trtllm", 103: "trtllm", 120: "fa2"}
#: When no calibrated device runs a device's attention kernel family, the families whose kernels are built alike,
#: nearest first: FlashAttention-3 and TensorRT-LLM's Blackwell kernels are both warp-specialised, asynchronous
#: (TMA loads, producer and consumer warps, softmax overlapped with the matmuls) and pack the GQA group into the
#: query rows; FlashAttention-2 is synchronous.
KERNEL_LINEAGE = {"fa3": ("trtllm", "fa2"), "trtllm": ("fa3", "fa2"), "fa2": ("fa3", "trtllm")}
#: Architectures whose devices share calibrations (one SM design, one kernel generation).
FAMILIES = {"blackwell-ultra": "blackwell"}
#: The spec figures a calibration depends on: a calibration made for other values of these is carried, not own.
FIGURES: dict[str, Callable[[Hardware], float]] = {
    "units": lambda hw: float(hw.compute.units),
    "clock_hz": lambda hw: float(hw.compute.clock_hz),
    "bf16_tensor_flops": lambda hw: float(hw.compute.peak_flops("bf16", "tensor")),
    "main_bandwidth_bytes_per_s": lambda hw: float(hw.main_bandwidth_bytes_per_s),
    "main_latency_s": lambda hw: float(hw.memory[hw.main_memory].latency_s or 0.0),
    "cache_bandwidth_bytes_per_s": lambda hw: float(hw.memory[_cache(hw)].bandwidth_bytes_per_s),
    "cache_latency_s": lambda hw: float(hw.memory[_cache(hw)].latency_s or 0.0),
}
#: Fixed costs counted in SM clock cycles (normalised as ``<name>_cycles``).
CYCLE_FIELDS = ("launch_s", "attention_overhead_s", "prefill_attention_overhead_s")
#: Normalised values tied to the attention kernel family rather than to the device.
FAMILY_FIELDS = ("attention_tensor_rel", "attention_overhead_cycles", "prefill_attention_overhead_cycles",
                 "attention_tile_fam", "prefill_attention_tile_fam", "attention_cta_share")
#: Normalised values carried only between siblings: the energy per FLOP is a property of one SM design, board
#: and cooling (fit: H100 never reaches its 700 W on GEMMs, L40S and GB200 do at different energies per FLOP), so
#: another design's would invent or hide a power limit.
SIBLING_ONLY = ("energy_per_flop_j", "power_window_s")
SIBLING_ONLY_PREFIXES = ("energy_rel:",)
#: Efficiency fields the rule never carries (settings, not measurements).
SETTINGS = ("attention_kernel", "note", "calibrated_for")


def _cache(hw: Hardware) -> str:
    """The first cache between kernels (L2 on a GPU): the first level that is not per unit."""
    for name, level in hw.memory.items():
        if not (hw.kind == "gpu" and level.per_unit):
            return name
    return hw.main_memory


def figures(hw: Hardware) -> dict[str, float]:
    """The figures of ``hw`` a calibration is made for (see :data:`FIGURES`)."""
    return {k: fn(hw) for k, fn in FIGURES.items()}


def _sm(hw: Hardware) -> int | None:
    from perfmodel.engines.tiling import sm_version

    return sm_version(hw.compute.architecture, hw.compute.sm_version)


def family(hw: Hardware) -> str | None:
    """The calibration family of ``hw``: its architecture (B300's Blackwell Ultra counted with Blackwell) and SM
    design (the major SM version: the GB202 graphics SM, sm_120, is not the datacenter sm_100)."""
    arch = hw.compute.architecture
    if not arch:
        return None
    sm = _sm(hw)
    return f"{FAMILIES.get(arch, arch)}/sm{sm // 10 if sm else '?'}"


def attention_kernel(hw: Hardware) -> str:
    """The attention kernel family of ``hw``: its spec's ``efficiency.attention_kernel`` when written, else its SM
    version's (:data:`ATTENTION_KERNELS`), else FlashAttention-2."""
    if "attention_kernel" in hw.efficiency.model_fields_set:
        return hw.efficiency.attention_kernel
    return ATTENTION_KERNELS.get(_sm(hw) or 0, "fa2")


#: Normalised values tied to how the device's GEMM kernels move operands through the cache: one CTA loading its
#: own panels (Ampere and Ada's cp.async kernels) or a cluster sharing them by TMA multicast (Hopper, datacenter
#: Blackwell; :func:`perfmodel.engines.tiling.operand_sharing`).
OPERAND_PATH_FIELDS = ("memory_cache",)


def _sharing(hw: Hardware) -> tuple[float, float]:
    from perfmodel.engines.tiling import operand_sharing

    return operand_sharing(hw.compute.architecture, hw.compute.sm_version)


def _multicast(sharing: tuple[float, float]) -> bool:
    return tuple(sharing) != (1.0, 1.0)


def _latency(fig: dict[str, float]) -> float:
    return fig["main_latency_s"] or 500e-9


@dataclass(frozen=True)
class Normalised:
    """An efficiency block in device-independent units (see the module docstring), and where it came from."""

    values: dict[str, float]
    kernel: str
    device: str
    family: str | None
    sharing: tuple[float, float] = (1.0, 1.0)


def normalise(hw: Hardware, fig: dict[str, float] | None = None) -> Normalised:
    """The calibrated efficiency of ``hw`` in device-independent units, using the figures ``fig`` it was made
    for (default: the spec's own)."""
    e = hw.efficiency
    fig = fig or figures(hw)
    lat = _latency(fig)
    v: dict[str, float] = {"tensor": e.tensor, "vector": e.vector,
                           "memory_cache": e.memory_fraction(_cache(hw)), "memory_main": e.memory_fraction(hw.main_memory)}
    for key in CYCLE_FIELDS:
        v[key.replace("_s", "_cycles")] = getattr(e, key) * fig["clock_hz"]
    if e.attention_tensor is not None:  # relative to the GEMM's: a clock held below the datasheet's slows both
        v["attention_tensor_rel"] = e.attention_tensor / e.tensor
    for dtype, frac in e.tensor_dtype.items():  # another dtype's GEMMs (fp8), relative to the bf16 ones
        v[f"tensor_rel:{dtype}"] = frac / e.tensor
    if e.energy_per_flop_j:
        for dtype, energy in e.energy_per_flop_dtype.items():
            v[f"energy_rel:{dtype}"] = energy / e.energy_per_flop_j
    if e.attention_tile_s is not None:
        v["attention_tile_fam"] = e.attention_tile_s
    if e.prefill_attention_tile_s is not None:
        v["prefill_attention_tile_fam"] = e.prefill_attention_tile_s
    if e.attention_cta_bytes_per_s is not None:  # one CTA per SM streaming, as a fraction of main memory
        v["attention_cta_share"] = e.attention_cta_bytes_per_s * fig["units"] / fig["main_bandwidth_bytes_per_s"]
    if e.row_kernel_s is not None:
        v["row_kernel_rt"] = e.row_kernel_s / lat
        v["kernel_floor_rt"] = e.kernel_floor_s / lat
        if e.row_kernel_bandwidth:
            v["row_kernel_bandwidth"] = e.row_kernel_bandwidth
    if e.energy_per_flop_j is not None:
        v["energy_per_flop_j"] = e.energy_per_flop_j
        v["power_window_s"] = e.power_window_s
    return Normalised(v, attention_kernel(hw), hw.name, family(hw), _sharing(hw))


def realise(values: dict[str, float], hw: Hardware, kernel: str, note: str) -> Efficiency:
    """An efficiency block for ``hw`` from normalised ``values`` (fields absent from ``values`` keep the
    schema's defaults)."""
    fig = figures(hw)
    lat = _latency(fig)
    out: dict[str, Any] = {"attention_kernel": kernel, "note": note}
    for key in CYCLE_FIELDS:
        if key.replace("_s", "_cycles") in values:
            out[key] = values[key.replace("_s", "_cycles")] / fig["clock_hz"]
    for key in ("tensor", "vector", "energy_per_flop_j", "power_window_s"):
        if key in values:
            out[key] = values[key]
    tensor = values.get("tensor", 0.8)
    if "attention_tensor_rel" in values:
        out["attention_tensor"] = min(1.0, values["attention_tensor_rel"] * tensor)
    out["tensor_dtype"] = {k.split(":", 1)[1]: min(1.0, v * tensor) for k, v in values.items()
                           if k.startswith("tensor_rel:")}
    if "energy_per_flop_j" in values:
        out["energy_per_flop_dtype"] = {k.split(":", 1)[1]: v * values["energy_per_flop_j"]
                                        for k, v in values.items() if k.startswith("energy_rel:")}
    memory = {}
    if "memory_cache" in values:
        memory[_cache(hw)] = values["memory_cache"]
    if "memory_main" in values:
        memory[hw.main_memory] = values["memory_main"]
    out["memory"] = memory
    if "attention_tile_fam" in values:
        out["attention_tile_s"] = values["attention_tile_fam"]
    out.update(_row_terms(values, lat))
    if "prefill_attention_tile_fam" in values:
        out["prefill_attention_tile_s"] = values["prefill_attention_tile_fam"]
    if "attention_cta_share" in values:
        out["attention_cta_bytes_per_s"] = values["attention_cta_share"] * fig["main_bandwidth_bytes_per_s"] / fig["units"]
    for key, value in list(out.items()):  # a fit that drove a fixed cost to its bound of 0 left round-off
        if key.endswith("_s") and isinstance(value, float) and 0 < value < 1e-12:
            out[key] = 0.0
    return type(hw.efficiency)(**out)


def _row_terms(values: dict[str, float], lat: float) -> dict[str, float]:
    """The row-kernel terms (:data:`COMPLETED`) of normalised ``values`` at main-memory latency ``lat``."""
    out: dict[str, float] = {}
    if "row_kernel_rt" in values:
        out["row_kernel_s"] = values["row_kernel_rt"] * lat
        out["kernel_floor_s"] = values.get("kernel_floor_rt", 0.0) * lat
        if "row_kernel_bandwidth" in values:
            out["row_kernel_bandwidth"] = values["row_kernel_bandwidth"]
    return out


def calibrated(hw: Hardware) -> bool:
    """Whether ``hw`` carries a calibration (of its own or of the figures of another spec)."""
    return hw.efficiency.calibrated_for is not None


def is_own(hw: Hardware) -> bool:
    """Whether ``hw``'s calibration was made for exactly its own figures."""
    made_for = hw.efficiency.calibrated_for
    if made_for is None:
        return False
    mine = figures(hw)
    return all(abs(mine.get(k, 0.0) - float(v)) <= 1e-9 * max(abs(float(v)), 1e-30) for k, v in made_for.items())


def _changes(hw: Hardware) -> str:
    made_for = hw.efficiency.calibrated_for or {}
    mine = figures(hw)
    diffs = [f"{k} {float(v):.4g} -> {mine[k]:.4g}" for k, v in made_for.items()
             if k in mine and abs(mine[k] - float(v)) > 1e-9 * max(abs(float(v)), 1e-30)]
    return ", ".join(diffs)


def _median(values: list[float]) -> float:
    return float(statistics.median(values))


def combine(target: Hardware, sources: Sequence[Hardware]) -> tuple[dict[str, float], str]:
    """Normalised values for ``target`` from calibrated ``sources`` by the sibling / cross-device rule, and a
    one-sentence account of it."""
    if not sources:
        return {}, "no calibrated device to transfer from: datasheet defaults"
    kernel = attention_kernel(target)
    norm = [normalise(s, {k: float(v) for k, v in (s.efficiency.calibrated_for or {}).items()} or None)
            for s in sources]
    fam = family(target)
    siblings = [n for n in norm if fam is not None and n.family == fam]
    if siblings:
        pool, same_kernel = siblings, [n for n in siblings if n.kernel == kernel] or siblings
        path: list[Normalised] = []  # siblings share the operand path already
        how = f"sibling rule: median of the same-architecture device(s) {', '.join(n.device for n in siblings)}"
    else:
        pool = norm
        same_kernel, used = [], kernel
        for candidate in (kernel, *KERNEL_LINEAGE.get(kernel, ())):
            same_kernel = [n for n in norm if n.kernel == candidate]
            if same_kernel:
                used = candidate
                break
        how = (f"cross-device rule: median over {', '.join(n.device for n in norm)} in device-independent units"
               + (f"; attention-kernel values from {', '.join(n.device for n in same_kernel)} ({used}"
                  + (f", the nearest kernel design to {kernel})" if used != kernel else ")")
                  if same_kernel else f"; no calibrated device runs {kernel}: its attention values are the median too"))
        multicast = _multicast(_sharing(target))
        path = [n for n in norm if _multicast(n.sharing) == multicast]
        if path:
            how += (f"; cache fraction from {', '.join(n.device for n in path)} (GEMM operands "
                    + ("multicast" if multicast else "loaded per CTA") + ")")
    values: dict[str, float] = {}
    keys = sorted({k for n in norm for k in n.values})
    for key in keys:
        if (key in SIBLING_ONLY or key.startswith(SIBLING_ONLY_PREFIXES)) and not siblings:
            continue
        group = same_kernel if (key in FAMILY_FIELDS and same_kernel) else pool
        if key in OPERAND_PATH_FIELDS and path:
            group = path
        vals = [n.values[key] for n in group if key in n.values]
        if vals:
            values[key] = _median(vals)
    return values, how


def transfer(target: Hardware, sources: Sequence[Hardware]) -> Hardware:
    """``target`` with an efficiency block from ``sources`` (calibrated devices, never ``target`` itself) by the
    sibling or cross-device rule, the rule written into the note."""
    sources = [s for s in sources if s.name != target.name and calibrated(s) and s.kind == target.kind]
    values, how = combine(target, sources)
    kernel = attention_kernel(target)
    if not values:
        eff = target.efficiency.model_copy(update={"attention_kernel": kernel, "note": how})
    else:
        from pydantic import ValidationError

        from perfmodel.errors import SpecError

        try:
            eff = realise(values, target, kernel, f"transferred ({how}; attention kernel {kernel})")
        except (ValidationError, ValueError, ZeroDivisionError, OverflowError) as exc:
            main = f"memory.{target.main_memory}.bandwidth_bytes_per_s"
            raise SpecError(f"hardware {target.name}", main, target.main_bandwidth_bytes_per_s,
                            "figures from which the transfer rule gives a valid efficiency block (it gave: "
                            f"{' '.join(str(exc).split())[:200]})") from None
    return target.model_copy(update={"efficiency": eff})


def carry(hw: Hardware) -> Hardware:
    """``hw`` whose calibration was made for other figures: normalised with those, re-applied to its own."""
    from pydantic import ValidationError

    from perfmodel.errors import SpecError

    made_for = {k: float(v) for k, v in (hw.efficiency.calibrated_for or {}).items()}
    note = (f"calibration carried from the figures it was made for to this spec's ({_changes(hw)}) in "
            f"device-independent units (perfmodel/transfer.py); originally: {hw.efficiency.note}")
    try:
        n = normalise(hw, {**figures(hw), **made_for})
        eff = realise(n.values, hw, attention_kernel(hw), note)
    except (ValidationError, ValueError, ZeroDivisionError, OverflowError) as exc:
        raise SpecError(f"hardware {hw.name}", "efficiency.calibrated_for", made_for,
                        "the figures of the spec the calibration was made for, from which it can be carried to this "
                        f"one (it gave: {str(exc).splitlines()[0]})") from None
    return hw.model_copy(update={"efficiency": eff})


#: Terms a device's own calibration may lack (no dataset measured them there): taken by the rule from the devices
#: that have them.
COMPLETED = ("row_kernel_s", "kernel_floor_s", "row_kernel_bandwidth")


def _complete(hw: Hardware, sources: Sequence[Hardware]) -> Hardware:
    """``hw`` with the terms of :data:`COMPLETED` its calibration lacks taken from ``sources`` by the rule; a term
    the spec writes itself is kept."""
    if hw.efficiency.row_kernel_s is not None:
        return hw
    donors = [s for s in sources if s.name != hw.name and s.efficiency.row_kernel_s is not None]
    if not donors:
        return hw
    values, how = combine(hw, donors)
    update = {k: v for k, v in _row_terms(values, _latency(figures(hw))).items()
              if k not in hw.efficiency.model_fields_set}
    note = f"{hw.efficiency.note}; row-kernel terms transferred ({how})"
    return hw.model_copy(update={"efficiency": hw.efficiency.model_copy(update={**update, "note": note})})


def resolve(hw: Hardware, sources: Sequence[Hardware] | Callable[[], Sequence[Hardware]]) -> Hardware:
    """``hw`` with the efficiency block the rule gives it (see the module docstring), transferred from the
    calibrated GPUs ``sources`` (or a function returning them, called when the rule needs them:
    :func:`perfmodel.specs.hardware.load_hardware` passes the catalog's). A CPU, or a spec whose efficiency block
    is written by hand (no ``calibrated_for`` and a note other than the defaults'), is left as it is."""
    if hw.kind != "gpu":
        return hw
    if unpublished(hw):
        hw = fill_unpublished(hw, _sources(sources))
    if calibrated(hw):
        hw = hw if is_own(hw) else carry(hw)
        return _complete(hw, _sources(sources))
    if hw.efficiency.model_fields_set - {"note", "attention_kernel"}:
        return hw  # an efficiency block written by hand: the user's numbers
    sources = _sources(sources)
    return _complete(transfer(hw, sources), sources)


def _role(hw: Hardware, name: str) -> str:
    level = hw.memory[name]
    if level.per_unit:
        return "per-unit"
    return "main" if name == hw.main_memory else "cache"


def unpublished(hw: Hardware) -> list[str]:
    """Memory figures ``hw`` leaves out: ``level.latency_s`` or ``level.bandwidth_bytes_per_s`` paths."""
    out = []
    for name, level in hw.memory.items():
        if level.latency_s is None:
            out.append(f"memory.{name}.latency_s")
        if level.bandwidth_bytes_per_s is None:
            out.append(f"memory.{name}.bandwidth_bytes_per_s")
    return out


def fill_unpublished(hw: Hardware, sources: Sequence[Hardware]) -> Hardware:
    """``hw`` with the memory figures it leaves out taken from ``sources`` by the rule: the same-family devices
    where there are any, else every source; a latency as the median of theirs at the level of the same role (per-
    unit scratchpad, cache, main memory) in seconds; a cache's bandwidth as the median of theirs in bytes per SM
    per clock, times this device's SMs and clock. The spec's ``sources`` gain a ``transfer`` entry saying so."""
    donors = [s for s in sources if s.kind == hw.kind and s.name != hw.name]
    fam = family(hw)
    siblings = [s for s in donors if fam is not None and family(s) == fam]
    pool = siblings or donors
    if not pool:
        return hw
    memory = {}
    filled = []
    per_clock = hw.compute.units * hw.compute.clock_hz
    for name, level in hw.memory.items():
        role = _role(hw, name)
        same = [(d, n) for d in pool for n in d.memory if _role(d, n) == role]
        update: dict[str, Any] = {}
        if level.latency_s is None:
            lats = [d.memory[n].latency_s for d, n in same if d.memory[n].latency_s]
            if lats:
                update["latency_s"] = _median(lats)
        if level.bandwidth_bytes_per_s is None:
            rates = [d.memory[n].bandwidth_bytes_per_s / (d.compute.units * d.compute.clock_hz) for d, n in same
                     if d.memory[n].bandwidth_bytes_per_s]
            if rates:
                update["bandwidth_bytes_per_s"] = _median(rates) * per_clock
        if update:
            filled.append(f"memory.{name}: {', '.join(update)}")
            update["source"] = "transfer"
        memory[name] = level.model_copy(update=update) if update else level
    if not filled:
        return hw
    rule = (f"perfmodel/transfer.py, figures the spec leaves out ({'; '.join(filled)}): median of "
            f"{', '.join(d.name for d in pool)} ({'same family' if siblings else 'every calibrated device'}); "
            "latencies in seconds, cache bandwidth in bytes per SM per clock")
    return hw.model_copy(update={"memory": memory, "sources": {**hw.sources, "transfer": rule}})


def _sources(sources: Sequence[Hardware] | Callable[[], Sequence[Hardware]]) -> Sequence[Hardware]:
    return sources() if callable(sources) else sources
