"""The build context: the review's devices loaded once, and a memoised ``predict`` shared by all sections.

Think of it as the meeting's whiteboard: the devices on the table, the configurations being compared, and every
prediction already worked out, so that a section asking for a point another section computed reads it back
instead of recomputing it. Sections read numbers only from the Prediction objects this context returns.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Mapping

from perfmodel.prediction import Prediction
from perfmodel.report.review import HardwareEntry, MethodEntry, Review
from perfmodel.report.style import SeriesStyle, line_styles, series_styles
from perfmodel.specs.base import resolve
from perfmodel.specs.hardware import Hardware, load_hardware
from perfmodel.specs.scenario import Scenario, load_scenario

PREFILL = "prefill"  # the one phase that is not part of generation (every other phase is a step of the method)


@dataclass(frozen=True)
class Device:
    """A loaded device and where its spec came from (file, overrides applied, note)."""

    hardware: Hardware
    spec_file: Path
    overrides: Mapping[str, Any]
    note: str

    @property
    def name(self) -> str:
        return self.hardware.name


def load_device(entry: str | HardwareEntry, base_dir: Path) -> Device:
    """A review hardware entry as a Device: a catalog name or path, or a base device with overrides."""
    if isinstance(entry, str):
        name = resolve_name(entry, base_dir)
        return Device(load_hardware(name), resolve("hardware", name), {}, "")
    base = resolve_name(entry.base, base_dir)
    overrides = {"name": entry.name, **entry.set}
    return Device(load_hardware(base, overrides), resolve("hardware", base), dict(entry.set), entry.note)


def resolve_name(name: str, base_dir: Path) -> str:
    """A spec name as given in a review file: a path (ends in .yaml or contains '/') is taken relative to the
    review file's folder; a catalog name is returned unchanged."""
    if name.endswith((".yaml", ".yml")) or "/" in name:
        path = Path(name)
        return str(path if path.is_absolute() else base_dir / path)
    return name


@dataclass
class Context:
    """Everything a section needs: the review, its devices and a memoised predictor."""

    review: Review
    base_dir: Path
    devices: list[Device]
    _cache: dict[tuple, Prediction] = field(default_factory=dict, repr=False)
    _scenarios: dict[tuple, Scenario] = field(default_factory=dict, repr=False)
    _limits: dict[str, int | None] = field(default_factory=dict, repr=False)
    _within: dict[int, bool] = field(default_factory=dict, repr=False)
    #: (model, longest context it supports) of every point asked for beyond it: left out of the tables and plots
    beyond_context: dict[str, int] = field(default_factory=dict, repr=False)

    @classmethod
    def from_review(cls, review: Review, base_dir: Path) -> "Context":
        return cls(review, base_dir, [load_device(h, base_dir) for h in review.hardware])

    @property
    def method_styles(self) -> dict[str, SeriesStyle]:
        """Colour and marker of each compared configuration, the same in every section."""
        return series_styles([m.label for m in self.review.methods])

    @property
    def device_linestyles(self) -> dict[str, str]:
        """Line style of each device, the same in every section."""
        return line_styles([d.name for d in self.devices])

    @property
    def predictions(self) -> int:
        """How many distinct predictions were computed so far."""
        return len(self._cache)

    def predict(self, device: Device, model: str, scenario: str, overrides: Mapping[str, Any] | None = None
                ) -> Prediction:
        """``perfmodel.api.predict`` for a device of the review, memoised on all its arguments."""
        from perfmodel.api import predict

        overrides = dict(overrides or {})
        key = (device.name, model, scenario, tuple(sorted((k, repr(v)) for k, v in overrides.items())))
        if key not in self._cache:
            with warnings.catch_warnings():  # a point beyond the model's context is flagged (within_context)
                warnings.filterwarnings("ignore", message=".*max_position_embeddings")
                pred = predict(device.hardware, resolve_name(model, self.base_dir),
                               resolve_name(scenario, self.base_dir), overrides, self.review.engine)
            self._cache[key] = pred
            self._within[id(pred)] = self._check_context(model, pred)
        return self._cache[key]

    def within_context(self, pred: Prediction) -> bool:
        """Whether a prediction's prompt (and generation) fit its model's max_position_embeddings (a point
        beyond is left out of the report's tables and plots, and listed in :attr:`beyond_context`)."""
        return self._within[id(pred)]

    def _check_context(self, model: str, pred: Prediction) -> bool:
        from perfmodel.specs.model import load_model
        from perfmodel.specs.sanity import prompt_findings

        if model not in self._limits:
            self._limits[model] = load_model(resolve_name(model, self.base_dir)).max_position_embeddings
        c = pred.summary["context"]
        limit = self._limits[model]
        spec = SimpleNamespace(name=c["model"], max_position_embeddings=limit)
        if prompt_findings(spec, SimpleNamespace(prompt_len=c["prompt_len"], gen_len=c["gen_len"])):
            self.beyond_context[c["model"]] = int(limit)
            return False
        return True

    def predict_method(self, device: Device, method: MethodEntry, overrides: Mapping[str, Any] | None = None
                       ) -> Prediction:
        """Predict a compared configuration with its own overrides, then ``overrides`` on top."""
        return self.predict(device, method.model, method.scenario, {**method.set, **(overrides or {})})

    def scenario(self, name: str, overrides: Mapping[str, Any] | None = None) -> Scenario:
        """The scenario spec a name (and scenario overrides) stands for: its method, block size, gen_len."""
        from perfmodel.api import split_overrides

        scenario_overrides = split_overrides(overrides)[2]
        key = ("scenario", name, tuple(sorted((k, repr(v)) for k, v in scenario_overrides.items())))
        if key not in self._scenarios:
            self._scenarios[key] = load_scenario(resolve_name(name, self.base_dir), scenario_overrides)
        return self._scenarios[key]

    def method_kind(self, method: MethodEntry) -> str:
        """The decoding method (arm, dlm, block-dlm, ...) of a compared configuration."""
        return self.scenario(method.scenario, method.set).method
