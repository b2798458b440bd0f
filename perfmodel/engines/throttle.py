"""The power limiter: how much longer a tensor-core kernel runs because the board is held at its TDP.

Like a fuse that lets a brief surge through but trips on a sustained one: a kernel drawing more than the allowed
power is slowed only in proportion to how long it runs against the limiter's window. Both engines apply it to
GEMMs and attention (:mod:`perfmodel.engines.analytic`, :mod:`perfmodel.engines.event`).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

#: Dynamic power goes as f·V² and, over the range a GPU's clock moves in, the voltage with the clock: power as f³.
#: A kernel asking x times the allowed power gets the clock lowered by x^(1/3), not by x.
DVFS_EXPONENT = 3.0


def energy_weights(dtypes: Sequence[str], eff: Any) -> np.ndarray | None:
    """Each kernel's energy per FLOP relative to ``efficiency.energy_per_flop_j`` (its dtype's
    ``energy_per_flop_dtype`` over it), to weight its FLOPs by; None when every dtype costs the same."""
    if not eff.energy_per_flop_dtype or not eff.energy_per_flop_j:
        return None
    return np.array([eff.energy_per_flop(d) / eff.energy_per_flop_j for d in dtypes], dtype=float)


def power_excess(flops: Any, time: Any, energy_per_flop: float | None, tdp_w: float | None) -> Any:
    """(x − 1)⁺ of :func:`power_stretch` for every kernel, or None where it is 0 everywhere (and w finite, so that
    the stretch is exactly 1): without an energy figure or a TDP, when the largest FLOPs over the shortest time
    stay below the TDP with room for rounding (x is then not computed kernel by kernel), or when no x exceeds 1."""
    if not energy_per_flop or not tdp_w:
        return None
    time = np.asarray(time, dtype=float)
    flops = np.asarray(flops, dtype=float)
    finite = time.max(initial=0.0) < 1e75
    bound = energy_per_flop * flops.max(initial=0.0) / (max(time.min(initial=1.0), 1e-30) * tdp_w)
    if finite and bound <= 1.0 - 1e-9:
        return None
    x = energy_per_flop * flops / (np.maximum(time, 1e-30) * tdp_w)
    excess = np.maximum(x - 1.0, 0.0)
    return None if finite and not excess.any() else excess


def power_stretch(flops: Any, time: Any, energy_per_flop: float | None, tdp_w: float | None,
                  window_s: float) -> Any:
    """How much longer a tensor-core kernel runs because the power limiter holds the board at its TDP.

    At its unthrottled pace the kernel draws x = energy_per_flop · (flops / time) / TDP of the allowed power; with
    x > 1 the clock, and with it the FLOP rate, drops by x^(1/3) (:data:`DVFS_EXPONENT`: power as the cube of the
    clock). The limiter acts over a window: a kernel of duration t (repeated back to back, as a benchmark or a
    serving loop runs it) takes the fraction w = t⁴ / (t⁴ + window⁴) of the slow-down:
    time × (1 + (max(x, 1)^(1/3) − 1) · w). 1 without an energy
    figure or a TDP."""
    if not energy_per_flop or not tdp_w:
        return 1.0 + 0.0 * np.asarray(time, dtype=float)
    excess = power_excess(flops, time, energy_per_flop, tdp_w)
    if excess is None:
        return np.ones(np.broadcast_shapes(np.shape(flops), np.shape(time)))
    return stretch_of(excess, time, window_s)


def stretch_of(excess: Any, time: Any, window_s: float) -> Any:
    """1 + (x^(1/3) − 1) · w of :func:`power_stretch`, from its :func:`power_excess` (x − 1)⁺."""
    time = np.maximum(np.asarray(time, dtype=float), 1e-30)
    t4 = time ** 4
    w = t4 / (t4 + window_s ** 4)
    return 1.0 + ((1.0 + np.asarray(excess, dtype=float)) ** (1.0 / DVFS_EXPONENT) - 1.0) * w
