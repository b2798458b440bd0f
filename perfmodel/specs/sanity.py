"""Sanity of specs: numbers that load fine one by one but contradict each other or the hardware they describe.

Think of a proof-reader who knows a few physical constants: a datasheet may say anything in each box, but a
tensor peak that is not SMs x clock x what one SM of that design does per clock, an efficiency above one, or a
prompt longer than the model was built to read are misprints until someone explains them. Each check is a pure
function returning a list of :class:`Finding` (field, value, what was expected); nothing here prints or raises.
:func:`warn_findings` turns findings into :class:`SpecWarning` warnings where specs are loaded.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

from perfmodel.errors import Problem

#: relative difference above which a quoted peak contradicts units x clock x per-SM rate. NVIDIA's own tables
#: differ from that product by up to 2.8% through rounding and clocks (L40S bf16 -1.2%, B200 tf32 -2.2%, HGX
#: B300 fp4 -2.8%, B300 fp32 at its 2,032 MHz boost -2.6%); a sparse figure taken for a dense one is off by 100%.
PEAK_TOLERANCE = 0.05


class SpecWarning(UserWarning):
    """A spec loaded but one of its numbers contradicts another or a known constant (see :mod:`sanity`)."""


class Finding(Problem):
    """One contradiction: the dotted field, the value found and what was expected instead (a :class:`Problem` that
    is warned about, not raised)."""

    def __str__(self) -> str:
        return f"{self.field} = {self.value!r}: expected {self.expected}"


@dataclass(frozen=True)
class SMRates:
    """Dense throughput of one SM design per clock: tensor FLOP by dtype, and FP32 FMA lanes."""

    name: str
    tensor: dict[str, float]
    fp32_lanes: int
    source: str


# Dense (no sparsity) tensor FLOP per clock per SM, FP32 accumulate for fp16/bf16, and FP32 FMA lanes per SM.
# FP32 lanes: CUDA C++ Programming Guide, "Arithmetic Instructions" throughput table (32-bit floating-point
# add/multiply/fma results per clock per SM: 64 on compute capability 8.0, 128 on 8.6, 8.9, 9.0, 10.x, 12.0).
# FP64 is left out: NVIDIA quotes it at a different clock from the tensor peaks (H100 SXM: 66.9 TFLOPS =
# 132 x 256 x 1.98 GHz) and it does not enter LLM inference.
SM_RATES: dict[int, SMRates] = {
    80: SMRates("GA100 (A100)", {"tf32": 1024, "bf16": 2048, "fp16": 2048, "int8": 4096}, 64,
                "A100 whitepaper: 312 TFLOPS dense FP16 = 108 SMs x 1.41 GHz x 2048 (2048.9)"),
    86: SMRates("GA102 professional (RTX A6000)", {"tf32": 512, "bf16": 1024, "fp16": 1024, "int8": 2048}, 128,
                "GA102 whitepaper v2.0: RTX A6000 154.8 TFLOPS FP16/BF16 with FP32 accumulate = 84 SMs x 1.8 GHz "
                "x 1024 (1023.8); GeForce GA102 runs FP32 accumulate at half that (RTX 3090: 71 TFLOPS = 82 x "
                "1.695 GHz x 512)"),
    89: SMRates("AD102 professional (L40S, RTX 6000 Ada)", {"tf32": 512, "bf16": 1024, "fp16": 1024, "fp8": 2048,
                                                          "int8": 2048}, 128,
                "L40S datasheet: FP8 733 TFLOPS = 142 SMs x 2.52 GHz x 2048 (2048.4); BF16 362.05 TFLOPS gives "
                "1011.8 (-1.2%), exactly 1024 at the L40's 2.49 GHz boost; GeForce AD102 runs FP32 accumulate "
                "at half rate (RTX 4090: 165.2 TFLOPS = 128 x 2.52 GHz x 512)"),
    90: SMRates("GH100 (H100, H200)", {"tf32": 2048, "bf16": 4096, "fp16": 4096, "fp8": 8192, "int8": 8192}, 128,
                "H100 whitepaper v1.04: 989.4 TFLOPS dense FP16 = 132 SMs x 1.83 GHz x 4096 (4095.9)"),
    100: SMRates("GB100 (B200, GB200)", {"tf32": 4096, "bf16": 8192, "fp16": 8192, "fp8": 16384, "int8": 16384,
                                        "fp4": 32768}, 128,
                 "GB200 NVL72: 2.5 PFLOPS dense BF16 per GPU = 148 SMs x 2.06 GHz x 8192; a B300 (same BF16 "
                 "tensor core) sustains 2,242 TFLOPS in cuBLAS at <= 2.032 GHz (ademeure/QuickRunCUDA, "
                 "b300_clean/B300_TRUE_REFERENCE.md), at least 7,455 per SM per clock, so twice Hopper's 4096; "
                 "FP8 = 2x and FP4 = 4x BF16 as in NVIDIA's HGX B200 table (4.5 : 9 : 18 PFLOPS sparse)"),
    103: SMRates("GB110 Blackwell Ultra (B300, GB300)", {"tf32": 4096, "bf16": 8192, "fp16": 8192, "fp8": 16384,
                                                        "fp4": 49152}, 128,
                 "as sm_100 for TF32/BF16/FP8 (HGX B300 table: same 2.25 PFLOPS dense BF16 as B200); FP4 1.5x "
                 "Blackwell (NVIDIA, Inside Blackwell Ultra: 15 PFLOPS dense NVFP4; GB300 NVL72 FP4 = 6 x BF16); "
                 "INT8 is cut down on this SM and left out"),
    120: SMRates("GB202 professional (RTX PRO 6000 Blackwell)", {"tf32": 512, "bf16": 1024, "fp16": 1024,
                                                                 "fp8": 2048, "fp4": 4096}, 128,
                 "RTX 5090 (GB202): 3,352 AI TOPS FP4 sparse = 1,676 dense = 170 SMs x 2.407 GHz x 4096; BF16 = "
                 "FP4 / 4; the professional cards run FP32 accumulate at full rate (a torch BF16 GEMM measures "
                 "417 TFLOPS on an RTX PRO 6000 Server Edition, zzc0721/torch-performance-test-data issue #161, "
                 "above the 240 a half rate would allow)"),
}

#: the SM a spec's architecture implies when it names no sm_version (the datacenter part of each generation)
ARCHITECTURE_SM: dict[str, int] = {"ampere": 80, "ada": 89, "hopper": 90, "blackwell": 100, "blackwell-ultra": 103}


def sm_rates(compute: Any) -> SMRates | None:
    """The per-SM rates a spec's compute block is checked against (None: no NVIDIA SM design known for it)."""
    if compute.unit_name != "SM":
        return None
    version = compute.sm_version or ARCHITECTURE_SM.get(compute.architecture or "")
    return SM_RATES.get(version) if version else None


def _off(got: float, want: float) -> bool:
    return abs(got / want - 1) > PEAK_TOLERANCE


def efficiency_findings(hw: Any) -> list[Finding]:
    """Achievable fractions above 1 (collective_efficiency is exempt: in-switch reduction may exceed a ring)."""
    eff = hw.efficiency
    out = []
    fractions = {"efficiency.tensor": eff.tensor, "efficiency.vector": eff.vector,
                 "efficiency.attention_tensor": eff.attention_tensor}
    fractions.update({f"efficiency.memory.{k}": v for k, v in eff.memory.items()})
    for field, value in fractions.items():
        if value is not None and value > 1:
            out.append(Finding(field, value, "a fraction of the peak, at most 1 (a measurement above the peak "
                                             "means the peak is wrong: raise the peak instead)"))
    return out


def tensor_peak_findings(hw: Any) -> list[Finding]:
    """Tensor peaks that differ from units x clock x the SM design's dense rate by more than PEAK_TOLERANCE."""
    c = hw.compute
    rates = sm_rates(c)
    if rates is None:
        return []
    out = []
    for dtype, peak in c.tensor_flops.items():
        per_clock = rates.tensor.get(dtype)
        if per_clock is None:
            continue
        want = c.units * c.clock_hz * per_clock
        if _off(peak, want):
            out.append(Finding(
                f"compute.tensor_flops.{dtype}", peak,
                f"{want:.4g} = {c.units} SMs x {c.clock_hz:.4g} Hz x {per_clock:g} dense FLOP/clock/SM of "
                f"{rates.name} (within {PEAK_TOLERANCE:.0%}; {peak / (c.units * c.clock_hz):.0f} given; a sparse "
                f"figure is twice the dense one)"))
    return out


def vector_peak_findings(hw: Any) -> list[Finding]:
    """An FP32 vector peak that differs from units x boost clock x FP32 lanes x 2 by more than PEAK_TOLERANCE."""
    c = hw.compute
    rates = sm_rates(c)
    peak = c.vector_flops.get("fp32")
    if rates is None or peak is None:
        return []
    clock = c.boost_clock_hz or c.clock_hz
    want = c.units * clock * rates.fp32_lanes * 2
    if not _off(peak, want):
        return []
    which = "boost_clock_hz" if c.boost_clock_hz else "clock_hz"
    return [Finding("compute.vector_flops.fp32", peak,
                    f"{want:.4g} = {c.units} SMs x {clock:.4g} Hz ({which}) x {rates.fp32_lanes} FP32 lanes x 2 "
                    f"(within {PEAK_TOLERANCE:.0%}; set compute.boost_clock_hz where the vendor quotes CUDA-core "
                    f"peaks at a higher clock than tensor peaks)")]


def price_findings(hw: Any) -> list[Finding]:
    """A price without its citation (provider and date under the `price` source key)."""
    if hw.price_per_hour_usd is not None and "price" not in hw.sources:
        return [Finding("price_per_hour_usd", hw.price_per_hour_usd,
                        "a `price` key in `sources` naming the provider and the date of the price")]
    return []


def hardware_findings(hw: Any) -> list[Finding]:
    """Every finding on a hardware spec."""
    return efficiency_findings(hw) + tensor_peak_findings(hw) + vector_peak_findings(hw) + price_findings(hw)


def prompt_findings(model: Any, scenario: Any) -> list[Finding]:
    """A prompt (or prompt plus generation) longer than the model's max_position_embeddings."""
    limit = model.max_position_embeddings
    if limit is None:
        return []
    if scenario.prompt_len > limit:
        return [Finding("scenario.prompt_len", scenario.prompt_len,
                        f"at most {model.name}'s max_position_embeddings ({limit})")]
    if scenario.prompt_len + scenario.gen_len > limit:
        return [Finding("scenario.gen_len", scenario.gen_len,
                        f"prompt_len ({scenario.prompt_len}) + gen_len at most {model.name}'s "
                        f"max_position_embeddings ({limit})")]
    return []


def warn_findings(findings: list[Finding], where: str) -> None:
    """Emit each finding as a SpecWarning naming the spec (Python shows each distinct message once)."""
    for finding in findings:
        warnings.warn(f"{where}: {finding}", SpecWarning, stacklevel=3)
