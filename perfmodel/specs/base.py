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

from perfmodel.errors import SpecError, UnknownNameError
from perfmodel.units import parse_quantity, unit_for_field

S = TypeVar("S", bound="Spec")


class Spec(BaseModel):
    """Base of every spec: frozen, unknown fields rejected, types strict, unit strings parsed."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, validate_default=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _parse_unit_strings(cls, data: Any) -> Any:
        # A field named ..._bytes, ..._bytes_per_s, ..._s, ..._hz, ..._w may be written "80 GiB", "3.35 TB/s".
        if not isinstance(data, dict):
            return data
        out = dict(data)
        for key, value in data.items():
            if isinstance(key, str) and isinstance(value, str):
                unit = unit_for_field(key)
                if unit is not None:
                    try:
                        out[key] = parse_quantity(value, unit)
                    except ValueError:
                        pass  # left as a string: the type check reports it with the field's name
        return out

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-ready dict of the spec as written (derived quantities are not included)."""
        return self.model_dump(mode="json", exclude_none=True)


def _source_name(source: str | Path) -> str:
    return str(source)


def spec_error_from_validation(exc: ValidationError, source: str) -> SpecError:
    """The first error pydantic found, as a SpecError naming file, field, value and expectation."""
    err = exc.errors()[0]
    field = ".".join(str(p) for p in err["loc"]) or "<root>"
    msg = err["msg"]
    value = err.get("input")
    if err["type"] == "missing":
        value = None
        msg = "a value (the field is required)"
    elif err["type"] == "extra_forbidden":
        msg = "no such field (unknown field; check the spelling)"
    elif msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    elif isinstance(value, str) and err["loc"] and unit_for_field(str(err["loc"][-1])):
        unit = unit_for_field(str(err["loc"][-1]))
        msg = f"a number in {unit} or a quantity with a unit that converts to it (e.g. '80 GB', '3.35 TB/s')"
    return SpecError(source, field, value, msg)


def validate(cls: type[S], data: Any, source: str) -> S:
    """Build ``cls`` from raw YAML data, turning every failure into a SpecError."""
    if not isinstance(data, dict):
        raise SpecError(source, "<root>", data, "a mapping of field names to values")
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        raise spec_error_from_validation(exc, source) from None


def catalog_dir(kind: str) -> Path:
    """Folder of the built-in catalog of ``kind`` ('hardware', 'models' or 'scenarios')."""
    return Path(str(resources.files(f"perfmodel.catalog.{kind}")))


def catalog_names(kind: str) -> list[str]:
    return sorted(p.stem for p in catalog_dir(kind).glob("*.yaml"))


def resolve(kind: str, name_or_path: str | Path) -> Path:
    """A catalog name or a path to a YAML file, as the path of the file to read."""
    text = str(name_or_path)
    path = Path(text)
    if text.endswith((".yaml", ".yml")) or path.is_file() or "/" in text:
        if not path.is_file():
            raise SpecError(text, "<file>", text, "an existing YAML file")
        return path
    candidate = catalog_dir(kind) / f"{text}.yaml"
    if candidate.is_file():
        return candidate
    raise UnknownNameError(kind.rstrip("s") if kind != "hardware" else kind, text, catalog_names(kind))


class _Loader(yaml.SafeLoader):
    """``safe_load`` with YAML 1.2 floats: "1.83e9" and "3.35e12" read as numbers, as a reader expects."""


_Loader.yaml_implicit_resolvers = {k: list(v) for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                    |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                    |[-+]?\.(?:inf|Inf|INF)
                    |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."),
)


def safe_load(text_or_stream: Any) -> Any:
    """Load YAML with the safe loader only (no object construction), with YAML 1.2 number syntax."""
    return yaml.load(text_or_stream, Loader=_Loader)  # noqa: S506 - _Loader derives from SafeLoader


def read_yaml(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as fh:
            return safe_load(fh)
    except yaml.YAMLError as exc:
        raise SpecError(str(path), "<yaml>", None, f"valid YAML ({exc})".replace("\n", " ")) from None
    except UnicodeDecodeError as exc:
        raise SpecError(str(path), "<file>", None, f"UTF-8 text ({exc})") from None


def parse_value(text: str) -> Any:
    """A ``--set`` value: YAML scalar rules, plus numbers in plain exponent form ("6.7e12")."""
    if not isinstance(text, str):
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
    except yaml.YAMLError:
        return text


def apply_overrides(data: dict[str, Any], overrides: dict[str, Any], source: str) -> dict[str, Any]:
    """Return a copy of ``data`` with dotted-path ``overrides`` set, e.g. {"memory.hbm.bandwidth_bytes_per_s": 6.7e12}.

    Missing intermediate groups are created (a scenario's ``kv_cache`` may be absent from its YAML), so an
    unknown name is reported by validation as an unknown field; a path through a non-mapping is an error here.
    """
    out = copy.deepcopy(data)
    for dotted, raw in overrides.items():
        parts = dotted.split(".")
        node = out
        for i, part in enumerate(parts[:-1]):
            if not isinstance(node, dict):
                raise SpecError(source, dotted, raw, f"a path through mappings ('{'.'.join(parts[:i])}' is a value)")
            node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise SpecError(source, dotted, raw, "a path whose parent is a mapping")
        node[parts[-1]] = parse_value(raw)
    return out


def load_spec(cls: type[S], kind: str, name_or_path: str | Path, overrides: dict[str, Any] | None = None) -> S:
    """Load one spec of ``kind`` from a catalog name or a YAML path, apply overrides and validate."""
    path = resolve(kind, name_or_path)
    source = str(path) if not str(path).startswith(str(catalog_dir(kind))) else f"{kind}/{path.name}"
    data = read_yaml(path)
    if not isinstance(data, dict):
        raise SpecError(source, "<root>", data, "a mapping of field names to values")
    if overrides:
        source += " with overrides"
        data = apply_overrides(data, overrides, source)
    return validate(cls, data, source)
