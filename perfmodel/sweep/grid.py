"""Sweep grids: what a grid file says, how its points are numbered, grouped and cut into chunks.

A grid is a multi-way table laid out like an odometer: hardware × models × scenarios × one wheel per parameter,
the last wheel turning fastest; a point's number is its odometer reading. Points that share every wheel that
changes *which* ops exist (the hardware variant, the model variant, the scenario's method, cache format,
attention kind, tensor parallelism on or off, ...) form a **group**; the remaining wheels are numeric (batch,
lengths, steps, bits, ...) and a group evaluates all their combinations as arrays. A group is cut into
**chunks**, each a rectangular block of its numeric wheels, keyed by a hash of its points so that a sweep can
resume.

A grid file (YAML)::

    hardware: [h100-sxm]                    # catalog names or YAML paths
    models: [llama-3.1-8b, qwen3-8b]
    scenarios: [arm, kv-int4]
    parameters:                             # the same dotted keys as `perfmodel predict --set`
      hardware.memory.hbm.bandwidth_bytes_per_s: [x1, x1.5, x2]   # "xF" multiplies the spec's value
      batch: [1, 8, 64]
      kv_cache.bits: [4, 8]
"""
from __future__ import annotations

import functools
import hashlib
import itertools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from perfmodel import __version__
from perfmodel.aggregate import METRICS
from perfmodel.api import split_overrides
from perfmodel.errors import SpecError, UnknownNameError
from perfmodel.specs.base import parse_value, read_yaml, validate
from perfmodel.specs.hardware import load_hardware
from perfmodel.specs.model import load_model
from perfmodel.specs.scenario import Scenario, load_scenario

SCHEMA_VERSION = 1
TOP_LEVEL = ("name", "description", "hardware", "models", "scenarios", "parameters")
ALIASES = {"model": "models", "scenario": "scenarios"}
TP_KEY = "tensor_parallel"
# Scenario fields that only change sizes (the workload's numeric parameters), never which ops exist.
NUMERIC_SCENARIO_KEYS = (
    "batch", "prompt_len", "gen_len", "steps", "block_size", "steps_per_block", "tokens_per_step",
    "kv_cache.bits", "kv_cache.group_size", "kv_cache.scale_bytes", "kv_cache.residual_window",
    "attention.token_budget", "attention.centroid_ratio", TP_KEY,
)
_MULTIPLIER = re.compile(r"^\s*[x×]\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*$")


def column_of(key: str) -> str:
    """Table column of a grid parameter: the key itself, or ``scenario.<key>`` where a metric has that name
    (the scenario field ``steps`` against the metric ``steps``, the number of generation passes)."""
    return f"scenario.{key}" if key in METRICS else key


@dataclass(frozen=True)
class Grid:
    """A parsed grid file: entries per axis and the parameter values as written (lists)."""

    source: str
    hardware: tuple[str, ...]
    models: tuple[str, ...]
    scenarios: tuple[str, ...]
    parameters: Mapping[str, tuple[Any, ...]]
    name: str = ""
    description: str = ""

    @property
    def axes(self) -> list[tuple[str, tuple[Any, ...]]]:
        """(column, values) of every wheel, slowest first."""
        return [("hardware", self.hardware), ("model", self.models), ("scenario", self.scenarios),
                *self.parameters.items()]

    @property
    def columns(self) -> list[str]:
        """Table columns of the parameters, in grid order."""
        return [column_of(k) for k in self.parameters]

    @property
    def size(self) -> int:
        """Number of points."""
        return int(np.prod([len(v) for _, v in self.axes], dtype=np.int64))

    def strides(self) -> dict[str, int]:
        """Point-number weight of each wheel (C order: the last parameter turns fastest)."""
        out, step = {}, 1
        for key, values in reversed(self.axes):
            out[key] = step
            step *= len(values)
        return out


def _as_list(value: Any) -> tuple[Any, ...]:
    if isinstance(value, (list, tuple)):
        return tuple(value)
    return (value,)


def grid_from_dict(data: Any, source: str = "<grid>") -> Grid:
    """Validate raw grid data (the YAML's mapping) into a :class:`Grid`; errors name the grid field and value."""
    if not isinstance(data, dict):
        raise SpecError(source, "<root>", data, "a mapping with hardware, models, scenarios and parameters")
    data = {ALIASES.get(k, k): v for k, v in data.items()}
    for key in data:
        if key not in TOP_LEVEL:
            raise SpecError(source, str(key), data[key], f"one of the grid fields {', '.join(TOP_LEVEL)}")
    lists = {}
    for key, default in (("hardware", "h100-sxm"), ("models", "llama-3.1-8b"), ("scenarios", "arm")):
        values = _as_list(data.get(key, default))
        if not values:
            raise SpecError(source, key, data.get(key), "at least one catalog name or YAML path")
        for v in values:
            if not isinstance(v, str) or not v:
                raise SpecError(source, key, v, "a catalog name or a path to a YAML file (a string)")
        lists[key] = values
    raw = data.get("parameters") or {}
    if not isinstance(raw, dict):
        raise SpecError(source, "parameters", raw, "a mapping of dotted field names to a value or a list of values")
    params: dict[str, tuple[Any, ...]] = {}
    for key, values in raw.items():
        if not isinstance(key, str) or not key or key.startswith(".") or key.endswith("."):
            raise SpecError(source, f"parameters.{key}", values, "a dotted field name such as batch or "
                                                                 "hardware.memory.hbm.bandwidth_bytes_per_s")
        name = key[len("scenario."):] if key.startswith("scenario.") else key
        if name in ("hardware", "model", "scenario", "point") or name in params:
            raise SpecError(source, f"parameters.{key}", values, "a field name used once and not an axis name")
        vals = _as_list(values)
        if not vals:
            raise SpecError(source, f"parameters.{key}", values, "a value or a non-empty list of values")
        for v in vals:
            if isinstance(v, (dict, list)) or v is None:
                raise SpecError(source, f"parameters.{key}", v, "a number, a string or a multiplier such as 'x2'")
        params[name] = vals
    return Grid(source, lists["hardware"], lists["models"], lists["scenarios"], params,
                str(data.get("name", "")), str(data.get("description", "")))


def load_grid(path: str | Path) -> Grid:
    """Read a grid YAML file (safe loader) into a :class:`Grid`."""
    p = Path(path)
    if not p.is_file():
        raise SpecError(str(path), "<file>", str(path), "an existing grid YAML file")
    return grid_from_dict(read_yaml(p), str(path))


# -- resolving values against the specs ------------------------------------------------------------------
def get_path(data: Any, dotted: str) -> Any:
    """The value at a dotted path of nested mappings (``memory.hbm.bandwidth_bytes_per_s``), None if absent."""
    node = data
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def resolve_value(raw: Any, base: Any, source: str, key: str, spec: str = "the spec") -> Any:
    """A grid value as a spec override: "xF" becomes F × the spec's own value ``base``; others pass as written
    (strings through the ``--set`` value parser). ``spec`` names the spec in the error for a missing base."""
    if not isinstance(raw, str):
        return raw
    m = _MULTIPLIER.match(raw)
    if not m:
        return parse_value(raw)
    if isinstance(base, bool) or not isinstance(base, (int, float)):
        raise SpecError(source, f"parameters.{key}", raw,
                        f"a plain value: a multiplier needs a numeric value in {spec}, which has {base!r}")
    value = base * float(m.group(1))
    if isinstance(base, int) and float(value).is_integer():
        value = int(value)
    return value


def _wrap(exc: Exception, source: str, key: str, value: Any) -> SpecError:
    """A spec error raised while applying grid value ``value`` of ``key``, renamed to the grid field."""
    return SpecError(source, key, value, f"a value the spec accepts ({exc})")


@dataclass(frozen=True)
class NumericAxis:
    """A numeric wheel inside one group: its column, global indices and resolved values (same length)."""

    key: str
    indices: tuple[int, ...]
    values: tuple[Any, ...]
    stride: int


@dataclass(frozen=True)
class Group:
    """Points that share their ops' structure: specs resolved, fixed columns, numeric wheels."""

    entries: Mapping[str, str]          # hardware / model / scenario as written in the grid
    hardware: Any                       # perfmodel.specs.hardware.Hardware
    model: Any                          # perfmodel.specs.model.Model
    scenario: Any                       # perfmodel.specs.scenario.Scenario (structural overrides applied)
    constants: Mapping[str, Any]        # fixed parameter columns (resolved values)
    numeric: tuple[NumericAxis, ...]
    offset: int                         # point-number contribution of the fixed wheels

    @property
    def shape(self) -> tuple[int, ...]:
        """Number of values of each numeric wheel."""
        return tuple(len(ax.values) for ax in self.numeric)

    @property
    def size(self) -> int:
        """Number of points."""
        return int(np.prod(self.shape, dtype=np.int64))

    def fingerprint(self) -> dict[str, Any]:
        """JSON-ready identity of the group's specs and fixed values (for chunk keys)."""
        return dict(self._fingerprint)

    @functools.cached_property
    def _fingerprint(self) -> dict[str, Any]:
        return {"entries": dict(self.entries), "hardware": self.hardware.to_dict(), "model": self.model.to_dict(),
                "scenario": self.scenario.model_dump(mode="json"), "constants": _jsonable(self.constants),
                "offset": self.offset}


@dataclass(frozen=True)
class Chunk:
    """A rectangular block of one group's numeric wheels: ``slices[i]`` = (start, stop) on wheel i."""

    group: Group
    slices: tuple[tuple[int, int], ...]
    engine: str = "analytic"

    @functools.cached_property
    def key(self) -> str:
        """A hash of the chunk's points (its group's specs and fixed values, its wheels' values), naming its part
        file; computed when first asked for (a sweep in memory never does)."""
        base = json.dumps({"schema": SCHEMA_VERSION, "version": __version__, "engine": self.engine,
                           **self.group.fingerprint()}, sort_keys=True, default=str)
        axes = [(ax.key, ax.values[a:b], ax.indices[a:b], ax.stride)
                for ax, (a, b) in zip(self.group.numeric, self.slices)]
        return hashlib.sha256((base + json.dumps(_jsonable(axes), default=str)).encode()).hexdigest()[:24]

    @property
    def shape(self) -> tuple[int, ...]:
        """Extent of the block along each numeric wheel."""
        return tuple(b - a for a, b in self.slices)

    @property
    def size(self) -> int:
        """Number of points."""
        return int(np.prod(self.shape, dtype=np.int64))

    def axis_values(self) -> list[tuple[str, tuple[Any, ...]]]:
        """(column, values) of each numeric wheel restricted to this chunk."""
        return [(ax.key, ax.values[a:b]) for ax, (a, b) in zip(self.group.numeric, self.slices)]

    def points(self) -> np.ndarray:
        """Point numbers of the chunk's points, in C order of its block."""
        k = len(self.slices)
        total = np.full(self.shape, self.group.offset, dtype=np.int64)
        for i, (ax, (a, b)) in enumerate(zip(self.group.numeric, self.slices)):
            idx = np.asarray(ax.indices[a:b], dtype=np.int64).reshape([-1 if j == i else 1 for j in range(k)])
            total = total + idx * ax.stride
        return total.ravel()

    def overrides(self) -> Iterator[tuple[int, dict[str, Any]]]:
        """(point number, ``predict`` overrides) for every point of the chunk, in order."""
        values = [v for _, v in self.axis_values()]
        keys = [ax.key for ax in self.group.numeric]
        for point, combo in zip(self.points(), itertools.product(*values)):
            yield int(point), {**self.group.constants, **dict(zip(keys, combo))}


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


class _Resolver:
    """Loads and validates every spec variant a grid needs, once each."""

    def __init__(self, grid: Grid):
        self.grid = grid
        self.source = grid.source
        hw_keys, model_keys, sc_keys = split_overrides({k: None for k in grid.parameters})
        self.hw_keys = [f"hardware.{k}" for k in hw_keys]
        self.model_keys = [f"model.{k}" for k in model_keys]
        self.numeric_keys = [k for k in sc_keys if k in NUMERIC_SCENARIO_KEYS]
        self.structural_keys = [k for k in sc_keys if k not in NUMERIC_SCENARIO_KEYS]
        self._cache: dict[Any, Any] = {}

    def _memo(self, key: Any, make):
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def base(self, kind: str, entry: str):
        """The spec ``entry`` (catalog name or path) of ``kind`` as written, loaded once."""
        loader = {"hardware": load_hardware, "model": load_model, "scenario": load_scenario}[kind]

        def make():
            try:
                return loader(entry)
            except UnknownNameError as exc:
                raise SpecError(self.source, {"hardware": "hardware", "model": "models", "scenario": "scenarios"}[kind],
                                entry, f"a catalog name or a YAML path ({exc})") from None
        return self._memo((kind, entry), make)

    def variant(self, kind: str, entry: str, keys: Sequence[str], indices: Sequence[int]):
        """The spec ``entry`` with the grid values ``indices`` of ``keys`` applied; returns (spec, columns)."""
        loader = {"hardware": load_hardware, "model": load_model, "scenario": load_scenario}[kind]
        prefix = {"hardware": "hardware.", "model": "model.", "scenario": ""}[kind]

        def make():
            base = self.base(kind, entry)
            base_dict = base.model_dump(mode="json") if kind == "scenario" else base.to_dict()
            overrides = {}
            alone = base
            for key, i in zip(keys, indices):
                path = key[len(prefix):]
                raw = self.grid.parameters[key][i]
                value = resolve_value(raw, get_path(base_dict, path), self.source, key, f"{kind} {entry}")
                try:  # each value alone first, so that an error names the one bad field
                    alone = loader(base, {path: value})
                except (SpecError, ValueError) as exc:
                    raise _wrap(exc, self.source, f"parameters.{key}", raw) from None
                overrides[path] = value
            try:  # (one value: the spec just checked with it alone)
                spec = alone if len(overrides) <= 1 else loader(base, overrides)
            except (SpecError, ValueError) as exc:
                shown = {f"{prefix}{k}": v for k, v in overrides.items()}
                raise _wrap(exc, self.source, "parameters", shown) from None
            dumped = spec.model_dump(mode="json") if kind == "scenario" else spec.to_dict()
            columns = {key: get_path(dumped, key[len(prefix):]) for key in keys}
            return spec, columns
        return self._memo((kind, entry, tuple(keys), tuple(indices)), make)

    def numeric_values(self, scenario, entry: str, key: str) -> tuple[Any, ...]:
        """Resolved, validated values of a numeric scenario wheel for one scenario variant (each value checked as
        ``load_scenario(scenario, {key: value})`` checks it, on one dump of the scenario)."""
        def make():
            base_dict = scenario.model_dump(mode="json")
            source = f"scenario {scenario.name} with overrides"
            out = []
            for raw in self.grid.parameters[key]:
                value = resolve_value(raw, get_path(base_dict, key), self.source, key, f"scenario {entry}")
                try:
                    checked = validate(Scenario, _with_value(base_dict, key, value), source)
                except (SpecError, ValueError) as exc:
                    raise _wrap(exc, self.source, f"parameters.{key}", raw) from None
                out.append(functools.reduce(getattr, key.split("."), checked))
            return tuple(out)
        return self._memo(("numeric", entry, id(scenario), key), make)


def _with_value(data: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    """``data`` (a spec as ``model_dump`` gives it) with the field at ``dotted`` set to ``value`` as an override
    sets it (:func:`perfmodel.specs.base.apply_overrides`); only the mappings on the path are copied."""
    parts = dotted.split(".")
    out = dict(data)
    node = out
    for part in parts[:-1]:
        child = node.get(part)
        node[part] = dict(child) if isinstance(child, dict) else {}
        node = node[part]
    node[parts[-1]] = parse_value(value)
    return out


def groups(grid: Grid) -> Iterator[Group]:
    """Every group of the grid, in the order of their first points (a sweep's rows then come out in point order
    wherever the numeric wheels turn faster than the others); specs and values are validated on the way."""
    yield from sorted(_groups(grid), key=lambda group: group.offset)


def _groups(grid: Grid) -> Iterator[Group]:
    r = _Resolver(grid)
    strides = grid.strides()

    def ranges(keys: Sequence[str]) -> Iterator[tuple[int, ...]]:
        return itertools.product(*[range(len(grid.parameters[k])) for k in keys])
    for hi, hw_entry in enumerate(grid.hardware):
        for hw_idx in ranges(r.hw_keys):
            hw, hw_cols = r.variant("hardware", hw_entry, r.hw_keys, hw_idx)
            for mi, model_entry in enumerate(grid.models):
                for m_idx in ranges(r.model_keys):
                    model, m_cols = r.variant("model", model_entry, r.model_keys, m_idx)
                    for si, sc_entry in enumerate(grid.scenarios):
                        for s_idx in ranges(r.structural_keys):
                            sc, s_cols = r.variant("scenario", sc_entry, r.structural_keys, s_idx)
                            fixed = {"hardware": hi, "model": mi, "scenario": si,
                                     **dict(zip(r.hw_keys, hw_idx)), **dict(zip(r.model_keys, m_idx)),
                                     **dict(zip(r.structural_keys, s_idx))}
                            offset = sum(i * strides[k] for k, i in fixed.items())
                            entries = {"hardware": hw_entry, "model": model_entry, "scenario": sc_entry}
                            constants = {**hw_cols, **m_cols, **s_cols}
                            yield from _split_tp(r, entries, hw, model, sc, constants, offset, strides)


def _split_tp(r: _Resolver, entries, hw, model, sc, constants, offset, strides) -> Iterator[Group]:
    """One group per tensor-parallel class: tp = 1 has no all-reduce ops, tp > 1 has them."""
    axes = []
    for key in r.numeric_keys:
        values = r.numeric_values(sc, entries["scenario"], key)
        axes.append(NumericAxis(key, tuple(range(len(values))), values, strides[key]))
    tp_pos = next((i for i, ax in enumerate(axes) if ax.key == TP_KEY), None)
    if tp_pos is None:
        yield Group(entries, hw, model, sc, constants, tuple(axes), offset)
        return
    tp_axis = axes[tp_pos]
    for single in (True, False):
        keep = [i for i, v in enumerate(tp_axis.values) if (v == 1) == single]
        if not keep:
            continue
        sub = NumericAxis(TP_KEY, tuple(keep), tuple(tp_axis.values[i] for i in keep), tp_axis.stride)
        yield Group(entries, hw, model, sc, constants, tuple(axes[:tp_pos] + [sub] + axes[tp_pos + 1:]), offset)


def _blocks(sizes: Sequence[int], limit: int) -> Iterator[list[tuple[int, int]]]:
    """Cut a box of ``sizes`` into rectangular blocks of at most ``limit`` cells (whole trailing wheels first)."""
    k = len(sizes)
    inner, j = 1, k
    while j > 0 and inner * sizes[j - 1] <= limit:
        inner *= sizes[j - 1]
        j -= 1
    if j == 0:
        yield [(0, n) for n in sizes]
        return
    step = max(1, limit // inner)
    for outer in itertools.product(*[range(n) for n in sizes[:j - 1]]):
        for start in range(0, sizes[j - 1], step):
            yield ([(i, i + 1) for i in outer] + [(start, min(start + step, sizes[j - 1]))]
                   + [(0, n) for n in sizes[j:]])


def chunks(grid: Grid, chunk_size: int, engine: str = "analytic") -> Iterator[Chunk]:
    """Every chunk of the grid (at most ``chunk_size`` points each), keyed by a hash of its points."""
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size {chunk_size!r}: expected a positive integer")
    for group in groups(grid):
        for block in _blocks(group.shape, chunk_size):
            yield Chunk(group, tuple(block), engine)
