"""The common machinery of every spec kind: strict frozen models, unit strings, YAML loading, overrides.

Think of a spec as a form with printed boxes: each box has a name, a type, a unit and a one-line description,
and a form with a box left empty, an unknown box or a wrong entry is handed back with a note saying which box
and why. Each spec kind (hardware, model, scenario) is a pydantic model built on :class:`Spec`; it is loaded
by one function of its own that calls :func:`load_spec` here.
"""
from __future__ import annotations

import copy
import math
import re
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from perfmodel.errors import FieldProblems, Problem, SpecError, Summary, UnknownNameError, describe
from perfmodel.shapes import MAX_COUNT
from perfmodel.specs.problems import problems_from
from perfmodel.specs.yamlio import MAX_DEPTH, MAX_SCALAR_CHARS, read_yaml, safe_load
from perfmodel.units import parse_quantity, range_problem, unit_for_field

__all__ = ["Spec", "validate", "load_spec", "read_yaml", "safe_load", "parse_value", "apply_overrides", "resolve",
           "catalog_dir", "catalog_names", "multiplier", "resolve_multipliers"]

#: an "xF" override value: F times the spec's own value ("x2", "x0.5", "×1.5")
MULTIPLIER = re.compile(r"^\s*[x×]\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*$")

S = TypeVar("S", bound="Spec")


def _quantity(key: Any, value: Any) -> Any:
    """``value`` of field ``key`` with a unit string read as a number in the field's unit; anything that does
    not read is left as it is, for the type check to report with the field's name and the reason."""
    dimension = unit_for_field(key) if isinstance(key, str) else None
    if dimension is None:
        return value
    if isinstance(value, str):
        try:
            return parse_quantity(value, dimension)
        except ValueError:
            return value
    if isinstance(value, dict):  # a per-dtype mapping of quantities, e.g. compute.tensor_flops
        return {k: _quantity(key, v) if isinstance(v, str) else v for k, v in value.items()}
    return value


class Spec(BaseModel):
    """Base of every spec: frozen, unknown fields rejected, types strict, unit strings parsed."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, validate_default=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _parse_unit_strings(cls, data: Any) -> Any:
        # A field named ..._bytes, ..._bytes_per_s, ..._s, ..._hz, ..._w, ..._flops may be written "80 GiB",
        # "3.35 TB/s" or a quoted number ("80e9"); perfmodel.units reads them.
        if not isinstance(data, dict):
            return data
        return {key: _quantity(key, value) for key, value in data.items()}

    @model_validator(mode="after")
    def _check_ranges(self) -> "Spec":
        # Every count fits in 32 bits and every quantity with a unit lies in its dimension's range
        # (perfmodel.units.RANGES): far beyond any real device or model, and far from overflowing a prediction.
        problems = []
        for name in type(self).model_fields:
            value = getattr(self, name)
            items = value.items() if isinstance(value, dict) else (
                enumerate(value) if isinstance(value, (list, tuple)) else [(None, value)])
            dimension = unit_for_field(name)
            for key, item in items:
                field = name if key is None else f"{name}.{key}"
                if isinstance(item, bool):
                    continue
                if isinstance(item, int) and abs(item) > MAX_COUNT:
                    problems.append(Problem(field, item, f"an integer of at most {MAX_COUNT:,}"))
                elif isinstance(item, (int, float)) and dimension is not None:
                    wrong = range_problem(float(item), dimension)
                    if wrong:
                        problems.append(Problem(field, item, wrong))
        if problems:
            raise FieldProblems(problems)
        return self

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-ready dict of the spec as written (derived quantities are not included)."""
        return self.model_dump(mode="json", exclude_none=True)


def validate(cls: type[S], data: Any, source: str) -> S:
    """Build ``cls`` from raw YAML data, turning every failure into one SpecError that lists all of them."""
    if not isinstance(data, dict):
        raise SpecError(source, "<root>", data, "a mapping of field names to values")
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        raise SpecError.from_problems(source, problems_from(cls, exc)) from None


def catalog_dir(kind: str) -> Path:
    """Folder of the built-in catalog of ``kind`` ('hardware', 'models' or 'scenarios')."""
    return Path(str(resources.files(f"perfmodel.catalog.{kind}")))


def catalog_names(kind: str) -> list[str]:
    return sorted(p.stem for p in catalog_dir(kind).glob("*.yaml"))


def _is_file(path: Path) -> bool:
    """``path.is_file()``, False for a name the file system refuses (too long, invalid) rather than an OSError."""
    try:
        return path.is_file()
    except (OSError, ValueError):
        return False


def resolve(kind: str, name_or_path: str | Path) -> Path:
    """A catalog name or a path to a YAML file, as the path of the file to read."""
    text = str(name_or_path)
    path = Path(text)
    if text.endswith((".yaml", ".yml")) or _is_file(path) or "/" in text:
        if not _is_file(path):
            raise SpecError(text, "<file>", text, "an existing YAML file")
        return path
    candidate = catalog_dir(kind) / f"{text}.yaml"
    if _is_file(candidate):
        return candidate
    raise UnknownNameError(kind.rstrip("s") if kind != "hardware" else kind, text, catalog_names(kind))


def parse_value(text: str) -> Any:
    """A ``--set`` value: YAML scalar rules, plus numbers in plain exponent form ("6.7e12").

    Text that is not valid YAML (or is over the YAML reader's limits) is kept as the string it is, for the spec's
    type check to report.
    """
    if not isinstance(text, str):
        return text
    if len(text) > MAX_SCALAR_CHARS:
        return text
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
        if math.isfinite(value):
            return value
    except ValueError:
        pass
    try:
        return safe_load(text)
    except (yaml.YAMLError, ValueError, TypeError, OverflowError):
        return text


def _override_path(dotted: Any, raw: Any, source: str) -> list[str]:
    """The parts of a dotted override key, or a SpecError for a key no spec can have."""
    if not isinstance(dotted, str) or not dotted:
        raise SpecError(source, Summary(describe(dotted)), raw, "a dotted field name such as batch or kv_cache.bits")
    shown = dotted if len(dotted) <= 80 else dotted[:60] + f"... ({len(dotted):,} characters)"
    parts = dotted.split(".")
    if len(parts) > MAX_DEPTH:
        raise SpecError(source, shown, raw, f"a dotted field name of at most {MAX_DEPTH} parts, not {len(parts):,}")
    if any(not p for p in parts):
        raise SpecError(source, shown, raw, "a dotted field name without empty parts (no '..' or leading/trailing '.')")
    if len(dotted) > 200:
        raise SpecError(source, shown, raw, "a dotted field name of at most 200 characters")
    return parts


def apply_overrides(data: dict[str, Any], overrides: dict[str, Any], source: str) -> dict[str, Any]:
    """Return a copy of ``data`` with dotted-path ``overrides`` set, e.g. {"memory.hbm.bandwidth_bytes_per_s": 6.7e12}.

    Missing intermediate groups are created (a scenario's ``kv_cache`` may be absent from its YAML), so an
    unknown name is reported by validation as an unknown field; a path through a non-mapping is an error here.
    """
    out = copy.deepcopy(data)
    for dotted, raw in overrides.items():
        parts = _override_path(dotted, raw, source)
        node = out
        for i, part in enumerate(parts[:-1]):
            if not isinstance(node, dict):
                raise SpecError(source, dotted, raw, f"a path through mappings ('{'.'.join(parts[:i])}' is a value)")
            node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise SpecError(source, dotted, raw, "a path whose parent is a mapping")
        node[parts[-1]] = parse_value(raw)
    return out


def multiplier(raw: Any) -> float | None:
    """F of an "xF" override value, or None for any other value."""
    m = MULTIPLIER.match(raw) if isinstance(raw, str) else None
    return float(m.group(1)) if m else None


def resolve_multipliers(data: dict[str, Any], overrides: dict[str, Any], source: str) -> dict[str, Any]:
    """``overrides`` with every "xF" value replaced by F times the value at its dotted path in ``data`` (a spec as
    ``model_dump`` gives it, defaults included); a multiplier of a field that holds no number is a SpecError."""
    out = {}
    for key, raw in overrides.items():
        factor = multiplier(raw)
        if factor is None:
            out[key] = raw
            continue
        node: Any = data
        for part in str(key).split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, bool) or not isinstance(node, (int, float)):
            raise SpecError(source, key, raw, f"a plain value: a multiplier needs a numeric value in the spec, "
                                              f"which has {describe(node)}")
        value = node * factor
        out[key] = int(value) if isinstance(node, int) and float(value).is_integer() else value
    return out


def spec_source(kind: str, name_or_path: str | Path) -> str:
    """How errors name a spec: its path, or ``kind/file.yaml`` for a catalog entry."""
    path = resolve(kind, name_or_path)
    return str(path) if not str(path).startswith(str(catalog_dir(kind))) else f"{kind}/{path.name}"


def load_spec(cls: type[S], kind: str, name_or_path: str | Path, overrides: dict[str, Any] | None = None) -> S:
    """Load one spec of ``kind`` from a catalog name or a YAML path, apply overrides and validate."""
    path = resolve(kind, name_or_path)
    source = spec_source(kind, path)
    data = read_yaml(path)
    if not isinstance(data, dict):
        raise SpecError(source, "<root>", data, "a mapping of field names to values")
    if overrides:
        source += " with overrides"
        data = apply_overrides(data, overrides, source)
    return validate(cls, data, source)
