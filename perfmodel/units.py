"""Unit handling: one place where strings such as "3.35 TB/s" or "80 GiB" become SI numbers.

Internally every quantity is a plain float in SI base units (seconds, bytes, FLOP/s, bytes/s, watts, hertz);
the unit lives in the field name (``bandwidth_bytes_per_s``). Spec files may give either a number (already in
that unit) or a string with a unit, which is parsed here with pint (decimal prefixes: 1 TB = 1e12 B;
binary prefixes only when written: 1 GiB = 2**30 B).
"""
from __future__ import annotations

from functools import lru_cache

# Base unit expected for each field-name suffix.
SUFFIX_UNITS: dict[str, str] = {
    "_bytes_per_s": "byte / second",
    "_bytes": "byte",
    "_flops": "1 / second",  # FLOP/s
    "_hz": "hertz",
    "_s": "second",
    "_w": "watt",
}


@lru_cache(maxsize=1)
def _registry():
    import pint  # imported only when a unit string appears

    ureg = pint.UnitRegistry()
    ureg.define("FLOP = [] = flop")
    ureg.define("FLOPS = FLOP / second = flops")
    return ureg


def unit_for_field(field: str) -> str | None:
    """The SI unit a field's name promises, or None when it carries no unit."""
    for suffix, unit in SUFFIX_UNITS.items():
        if field.endswith(suffix):
            return unit
    return None


def parse_quantity(text: str, unit: str) -> float:
    """Parse ``text`` (e.g. "3.35 TB/s") and return its magnitude in ``unit``.

    Raises ValueError with the text and the unit expected when it does not parse or has the wrong dimension.
    """
    ureg = _registry()
    try:
        q = ureg.Quantity(text.replace("TFLOPS", "TFLOP/s").replace("GFLOPS", "GFLOP/s"))
        return float(q.to(unit).magnitude)
    except Exception as exc:  # pint's parser can raise anything from tokenize errors to KeyError on odd text
        raise ValueError(f"cannot read {text!r} as a quantity in {unit}: {exc}") from None


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
