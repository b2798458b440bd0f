"""Review files: what a design-review report compares, and over which sweeps.

A review file is the agenda of a design-review meeting written as YAML: which devices are on the table, which
model and decoding scenario stand for each method, which sweeps to plot, and which measurement tables to check
the model against. Every field but ``title``, ``hardware`` and ``methods`` has a default, so a short file gives a
full report. It is validated like every other spec: an unknown field, a wrong type or a bad name is reported with
the file, the field, the value and what was expected.

A hardware entry is a catalog name or a YAML path (``h100-sxm``), or a mapping that derives a device from another
with overrides (``{name: h200-sxm, base: h100-sxm, set: {memory.hbm.bandwidth_bytes_per_s: 4.8e12}}``): a what-if
device, or a stand-in until the catalog has its own file.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, PositiveFloat, PositiveInt, model_validator

from perfmodel.errors import FieldProblems, Problem, SpecError
from perfmodel.specs.base import Spec, read_yaml, validate
from perfmodel.specs.hardware import DType

SECTIONS: tuple[str, ...] = ("roofline", "breakdown", "methods", "quantisation", "sparse", "capacity", "validation",
                             "assumptions")
SectionName = Literal["roofline", "breakdown", "methods", "quantisation", "sparse", "capacity", "validation",
                      "assumptions"]


class HardwareEntry(Spec):
    """A device derived from another by dotted overrides (a what-if or stand-in device)."""

    name: str = Field(description="name the derived device is shown under")
    base: str = Field(description="catalog name or YAML path of the device it starts from")
    set: dict[str, Any] = Field(default_factory=dict, description="dotted overrides of the base spec")
    note: str = Field("", description="why the device is derived and where its numbers come from")


class MethodEntry(Spec):
    """One compared configuration: a label, a model and a scenario (plus scenario overrides)."""

    label: str = Field(description="name shown in legends and tables, e.g. ARM")
    model: str = Field(description="model catalog name or YAML path")
    scenario: str = Field(description="scenario catalog name or YAML path")
    set: dict[str, Any] = Field(default_factory=dict, description="dotted overrides (scenario keys, model., hardware.)")


class Sweeps(Spec):
    """Axes of the method comparison (ARM vs DLM vs block-wise)."""

    batch: list[PositiveInt] = Field([1, 4, 16, 64], min_length=1, description="batch sizes")
    context: list[PositiveInt] = Field([512, 2048, 8192, 32768], min_length=1, description="prompt lengths (tokens)")
    steps: list[PositiveInt] = Field([16, 32, 64, 128, 256], min_length=2,
                                     description="denoising steps over the whole answer (diffusion methods)")


class Quantisation(Spec):
    """KV-cache quantisation and XQuant against the fp16 cache."""

    model: str = Field("llama-3.1-8b", description="model catalog name or YAML path")
    baseline: str = Field("arm", description="scenario with the full-precision cache")
    scenarios: list[str] = Field(["kv-int8", "kv-int4", "xquant", "xquant-cl"], min_length=1,
                                 description="quantised-cache scenarios")
    bits: list[PositiveInt] = Field([2, 3, 4, 8], min_length=1, description="kv_cache.bits values of the bits sweep")
    bits_scenarios: list[str] = Field(["kv-int4", "xquant"], min_length=1,
                                      description="scenarios swept over kv_cache.bits")
    context: list[PositiveInt] = Field([1024, 4096, 16384, 32768], min_length=1, description="prompt lengths (tokens)")
    at_context: PositiveInt | None = Field(None, description="prompt length of the bits sweep (default: longest context)")
    batch: PositiveInt = Field(8, description="batch of every point")


class Sparse(Spec):
    """Sparse attention (Squeezed, Multipole) against dense attention."""

    model: str = Field("llama-3.1-8b", description="model catalog name or YAML path")
    baseline: str = Field("arm", description="scenario with dense attention")
    scenarios: list[str] = Field(["squeezed-attention", "multipole-attention"], min_length=1,
                                 description="sparse-attention scenarios")
    token_budget: list[PositiveFloat] = Field([0.02, 0.05, 0.1, 0.2, 0.5], min_length=1,
                                              description="attention.token_budget values")
    context: list[PositiveInt] = Field([4096, 16384, 65536], min_length=1, description="prompt lengths (tokens)")
    at_context: PositiveInt | None = Field(None, description="prompt length of the budget sweep (default: longest)")
    at_budget: PositiveFloat = Field(0.1, le=1, description="token budget of the context sweep")
    batch: PositiveInt = Field(8, description="batch of every point")


class Capacity(Spec):
    """Largest batch that fits per prompt length, and devices needed for a target load."""

    context: list[PositiveInt] = Field([2048, 8192, 32768, 131072], min_length=1, description="prompt lengths (tokens)")
    max_batch: PositiveInt = Field(65536, description="upper end of the batch search")
    target_batch: PositiveInt = Field(256, description="target: concurrent sequences")
    target_context: PositiveInt = Field(32768, description="target: prompt length (tokens)")


class Review(Spec):
    """The root of a review file."""

    title: str = Field(description="report title")
    description: str = Field("", description="one paragraph shown under the title")
    engine: Literal["analytic", "event"] = Field("analytic", description="engine every prediction uses")
    dtype: DType = Field("bf16", description="dtype of the compute roof drawn on the roofline charts")
    hardware: list[str | HardwareEntry] = Field(min_length=1, description="devices: names, paths or derived entries")
    methods: list[MethodEntry] = Field(min_length=1, description="compared configurations")
    sections: list[SectionName] = Field(list(SECTIONS), min_length=1, description="sections to build, in order")
    sweeps: Sweeps = Field(default_factory=Sweeps)
    quantisation: Quantisation = Field(default_factory=Quantisation)
    sparse: Sparse = Field(default_factory=Sparse)
    capacity: Capacity = Field(default_factory=Capacity)
    validation: list[str] = Field(default_factory=list,
                                  description="measurement tables (CSV or Parquet), relative to the review file")
    dpi: PositiveInt = Field(110, le=300, description="resolution of the PNG figures")

    @model_validator(mode="after")
    def _check(self) -> "Review":
        problems = []
        for field, names, what in (("methods", [m.label for m in self.methods], "method labels"),
                                   ("hardware", [h if isinstance(h, str) else h.name for h in self.hardware],
                                    "hardware names"),
                                   ("sections", list(self.sections), "sections")):
            repeated = sorted({n for n in names if names.count(n) > 1})
            if repeated:
                problems.append(Problem(field, names, f"distinct {what} ({', '.join(repeated)} repeated)"))
        if problems:
            raise FieldProblems(problems)
        return self


def load_review(path: str | Path) -> tuple[Review, Path]:
    """Read and validate a review file; return it with the folder its relative paths start from."""
    path = Path(path)
    if not path.is_file():
        raise SpecError(str(path), "<file>", str(path), "an existing review YAML file")
    data = read_yaml(path)
    return validate(Review, data, str(path)), path.resolve().parent
