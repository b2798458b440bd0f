"""The rules every size obeys, wherever it comes from: a spec, a ``--set`` override, ``perfmodel op`` arguments or a
row of a measurement table. One home for each rule, so that ``predict`` and ``validate`` accept the same shapes.

- A size (tokens, widths, heads, a batch) is a whole number from 1 to :data:`MAX_COUNT` (2**31 - 1): far beyond
  any real model or kernel, and small enough that no product of a few sizes overflows a 64-bit integer.
- Query heads are a whole multiple of key/value heads (each KV head serves the same number of query heads).

Each rule has a scalar form (for specs and CLI arguments) and a vectorised one (for table columns).
"""
from __future__ import annotations

from typing import Any

import numpy as np

MAX_COUNT = 2**31 - 1
COUNT_EXPECTED = f"a whole number from 1 to {MAX_COUNT:,}"


def count_problem(value: Any) -> str | None:
    """What is wrong with ``value`` as a size (None when it is one)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        if isinstance(value, (float, np.floating)) and float(value).is_integer():
            value = int(value)
        else:
            return COUNT_EXPECTED
    if not 1 <= int(value) <= MAX_COUNT:
        return COUNT_EXPECTED
    return None


def heads_problem(heads: int, kv_heads: int) -> str | None:
    """What is wrong with ``kv_heads`` key/value heads serving ``heads`` query heads (None when they fit)."""
    if heads % kv_heads:
        return f"a divisor of the query heads ({heads})"
    return None


def bad_counts(values: Any) -> np.ndarray:
    """Mask of the entries of a numeric array (NaN = absent, not checked) that are not sizes."""
    num = np.asarray(values, dtype=float)
    given = ~np.isnan(num)
    with np.errstate(invalid="ignore"):  # inf % 1 is NaN: not a whole number, as intended
        ok = (num >= 1) & (num <= MAX_COUNT) & (np.mod(num, 1) == 0)
    return given & ~ok


def bad_heads(heads: Any, kv_heads: Any) -> np.ndarray:
    """Mask of the rows whose ``kv_heads`` do not divide ``heads`` (rows with either absent are not checked)."""
    h = np.asarray(heads, dtype=float)
    kv = np.asarray(kv_heads, dtype=float)
    given = ~np.isnan(h) & ~np.isnan(kv) & (kv >= 1)
    with np.errstate(invalid="ignore"):
        rem = np.mod(h, np.where(given, kv, 1.0))
    return given & (rem != 0)
