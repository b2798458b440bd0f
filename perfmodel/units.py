"""Unit handling: one place where strings such as "3.35 TB/s" or "80 GiB" become SI numbers.

Internally every quantity is a plain float in SI base units (seconds, bytes, FLOP/s, bytes/s, watts, hertz);
the unit lives in the field name (``bandwidth_bytes_per_s``). Spec files may give either a number (already in
that unit, quoted or not) or a string of a number and a unit of the field's dimension, read here.

The reader is a ticket inspector, not a calculator: a quantity is one decimal number, optionally followed by one
unit from the table below, and nothing else. There are no expressions, powers, containers or unit arithmetic,
so reading a string takes time proportional to its length (and strings longer than :data:`MAX_CHARS` are refused
unread). Prefixes are decimal (1 TB = 1e12 B, 1 GHz = 1e9 Hz); binary prefixes only where written
(1 GiB = 2**30 B). Bits are bits only where written as bits (``Gb``, ``Gbit``: 1 Gb = 1.25e8 B); ``B`` is a byte.
"""
from __future__ import annotations

import functools
import math
import re

#: dimension of each field-name suffix, longest suffix first
SUFFIX_DIMENSIONS: dict[str, str] = {
    "_bytes_per_s": "data rate",
    "_per_s": "event rate",
    "_bytes": "data size",
    "_flops": "compute rate",
    "_hz": "frequency",
    "_s": "time",
    "_w": "power",
}
#: what a plain number means in each dimension, and an example of a quantity with a unit
SI_UNIT: dict[str, tuple[str, str]] = {
    "data rate": ("bytes per second", "3.35 TB/s"),
    "data size": ("bytes", "80 GB' or '80 GiB"),
    "event rate": ("events per second", "1.2e11 /s"),
    "compute rate": ("FLOP/s", "989 TFLOP/s"),
    "frequency": ("hertz", "1.98 GHz"),
    "time": ("seconds", "4 us"),
    "power": ("watts", "700 W"),
}
#: the range a nonzero quantity of each dimension must lie in, in its SI unit: wide enough for any device, narrow
#: enough that no prediction overflows (a bandwidth of 1e-300 B/s would make every time infinite)
RANGES: dict[str, tuple[float, float]] = {
    "data rate": (1.0, 1e24),
    "event rate": (1.0, 1e24),
    "data size": (1e-3, 1e24),
    "compute rate": (1.0, 1e24),
    "frequency": (1.0, 1e15),
    "time": (1e-15, 1e6),
    "power": (1e-3, 1e9),
}
MAX_CHARS = 64

_DECIMAL = {"": 1.0, "k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18}
_BINARY = {"Ki": 2.0**10, "Mi": 2.0**20, "Gi": 2.0**30, "Ti": 2.0**40, "Pi": 2.0**50, "Ei": 2.0**60}
_SMALL = {"": 1.0, "m": 1e-3, "u": 1e-6, "µ": 1e-6, "μ": 1e-6, "n": 1e-9, "p": 1e-12}


def _unit_table() -> dict[str, tuple[str, float]]:
    """Every accepted unit token: (dimension, factor to the SI unit of the dimension)."""
    table: dict[str, tuple[str, float]] = {}
    sizes: dict[str, float] = {"byte": 1.0, "bytes": 1.0, "bit": 0.125, "bits": 0.125}
    for prefix, factor in {**_DECIMAL, **_BINARY}.items():
        sizes[f"{prefix}B"] = factor
        sizes[f"{prefix}bit"] = factor / 8
        if prefix:
            sizes[f"{prefix}b"] = factor / 8
    for token, factor in sizes.items():
        table[token] = ("data size", factor)
        table[f"{token}/s"] = ("data rate", factor)
    for prefix, factor in _DECIMAL.items():
        for flops in ("FLOP/s", "FLOPS", "flop/s", "flops", "OP/s", "OPS"):
            table[f"{prefix}{flops}"] = ("compute rate", factor)
        table[f"{prefix}Hz"] = ("frequency", factor)
        table[f"{prefix}W"] = ("power", factor)
        table[f"{prefix}/s"] = ("event rate", factor)
    for prefix, factor in _SMALL.items():
        table[f"{prefix}s"] = ("time", factor)
    table["sec"] = ("time", 1.0)
    table["mW"] = ("power", 1e-3)
    return table


UNITS: dict[str, tuple[str, float]] = _unit_table()
_QUANTITY = re.compile(r"([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]{1,3})?) *(\S*)")


@functools.lru_cache(maxsize=4096)
def unit_for_field(field: str) -> str | None:
    """The dimension a field's name promises ('data size', 'data rate', ...), or None when it carries no unit."""
    for suffix, dimension in SUFFIX_DIMENSIONS.items():
        if field.endswith(suffix):
            return dimension
    return None


def expected_quantity(dimension: str) -> str:
    """What a field of ``dimension`` accepts, in words (the 'expected' part of an error message)."""
    si, example = SI_UNIT[dimension]
    return f"a number in {si} or a quantity with a unit of {dimension} (e.g. '{example}')"


def _units_of(dimension: str) -> str:
    shown = [t for t, (d, _) in UNITS.items() if d == dimension and not t.startswith(("E", "P", "K", "µ", "μ"))]
    return ", ".join(shown[:12]) + (", ..." if len(shown) > 12 else "")


def parse_quantity(text: str, dimension: str) -> float:
    """Read ``text`` ("3.35 TB/s", "80 GiB", "80e9") as a number in the SI unit of ``dimension``.

    Raises ValueError saying what is wrong: not a number and unit, a unit of another dimension (with its name),
    an unknown unit, a value too large to represent, or a string longer than :data:`MAX_CHARS`.
    """
    if dimension not in SI_UNIT:
        raise ValueError(f"dimension {dimension!r}: expected one of {', '.join(SI_UNIT)}")
    if not isinstance(text, str):
        raise TypeError(f"quantity {type(text).__name__}: expected a string")
    if len(text) > MAX_CHARS:
        raise ValueError(f"a quantity of at most {MAX_CHARS} characters: {expected_quantity(dimension)}")
    match = _QUANTITY.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"{expected_quantity(dimension)}; a number and one unit, nothing else")
    number, unit = match.groups()
    if unit == "":
        scale = 1.0
    elif unit not in UNITS:
        raise ValueError(f"{expected_quantity(dimension)}; {unit!r} is not a unit this reader knows "
                         f"(units of {dimension}: {_units_of(dimension)})")
    else:
        found, scale = UNITS[unit]
        if found != dimension:
            raise ValueError(f"{expected_quantity(dimension)}; {unit!r} is a unit of {found}")
    value = float(number) * scale
    if not math.isfinite(value):
        raise ValueError(f"a finite number: {expected_quantity(dimension)}")
    return value


def range_problem(value: float, dimension: str) -> str | None:
    """What is wrong with ``value`` as a quantity of ``dimension`` (outside :data:`RANGES`), or None."""
    low, high = RANGES[dimension]
    if value != 0 and not low <= abs(value) <= high:
        si = SI_UNIT[dimension][0]
        return f"a quantity of {dimension} between {low:g} and {high:g} {si} (or 0 where the field allows it)"
    return None


def format_si(value: float, unit: str = "", digits: int = 3) -> str:
    """Human-readable decimal-prefixed value: format_si(3.35e12, 'B/s') -> '3.35 TB/s'."""
    if value is None:
        return "-"
    v = float(value)
    if v == 0:
        return f"0 {unit}".strip()
    prefixes = [(1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"), (1, ""), (1e-3, "m"), (1e-6, "µ"), (1e-9, "n")]
    for scale, p in prefixes:
        if abs(v) >= scale:
            return f"{v / scale:.{digits}g} {p}{unit}".strip()
    return f"{v:.{digits}g} {unit}".strip()
