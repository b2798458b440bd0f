"""Power, energy per token and cost per million tokens of a prediction.

A GPU draws power like a car burns fuel: some just to keep the engine running (idle power), more the harder it
works, and never more than the tank can deliver per second (the datasheet TDP, where the power limiter slows the
clocks). The model is the linear idle-to-peak power model of servers (Fan, Weber and Barroso, "Power Provisioning
for a Warehouse-sized Computer", ISCA 2007: P = P_idle + (P_peak - P_idle) · u), with the utilisation u split
between the two units a transformer keeps busy:

    u_compute = FLOPs / (latency · tensor peak of the dtype · efficiency.tensor)        (busy at the attainable rate)
    u_memory  = main-memory bytes / (latency · main-memory bandwidth · its efficiency)
    u         = min(1, (1 - MEMORY_SHARE) · u_compute + MEMORY_SHARE · u_memory)
    P         = idle_w + (tdp_w - idle_w) · u                                          (at most tdp_w)

Both utilisations come from the prediction itself (its FLOPs, main-memory bytes and latency against the device's
attainable rates), so a what-if device or a calibrated efficiency block changes the power too.

- MEMORY_SHARE = 0.35: the share of the dynamic power a main memory saturated alone draws. Memory-bound decode
  saturates HBM bandwidth yet draws only 137-300 W on a 700 W H200 (Ma, Afzal, Eitzinger and Wellein, "The
  Illusion of Power Capping in LLM Decode", arXiv:2605.11999, 2026): with u_compute near 0 and u_memory near 1,
  (300 - 70) / (700 - 70) = 0.37 at the top of that range; 0.35 keeps decode within it.
- Idle power: the spec's ``power.idle_w`` where given; otherwise DEFAULT_IDLE_FRACTION = 0.10 of the TDP. This is an
  assumption, not a measurement: it lies below the lowest decode power above (137 W = 0.20 of 700 W) and allows for
  the 26-50 W an HBM GPU draws above bare idle once a CUDA context is open (Vadari, "The Model Parking Tax",
  arXiv:2605.23918, 2026).

The hardware specs' ``efficiency.energy_per_flop_j`` (the engines' power limiter, perfmodel/engines/tiling.py) is not
used here: it is fitted on a few devices to slow long GEMMs down, not to predict board power, and this model must
give an answer on every device with a TDP.

Energy per generated token counts the whole request (prefill included) over every GPU of the replica:
``power_w · tensor_parallel / tokens_per_s``. Cost per million generated tokens rents those GPUs for that time:
``price_per_hour_usd · tensor_parallel / 3600 / tokens_per_s · 1e6``. A device without ``power.tdp_w`` has no
power and no energy; one without ``price_per_hour_usd`` has no cost (never a made-up number).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # for annotations only: the hardware spec reads this module's idle power
    from perfmodel.specs.hardware import Hardware

MEMORY_SHARE = 0.35
DEFAULT_IDLE_FRACTION = 0.10


def idle_power_w(hw: Hardware) -> float | None:
    """The idle board power of the device (W): the spec's ``power.idle_w`` or DEFAULT_IDLE_FRACTION of the TDP."""
    if hw.power is None:
        return None
    return hw.power.idle_w if hw.power.idle_w is not None else DEFAULT_IDLE_FRACTION * hw.power.tdp_w


def utilisation(hw: Hardware, flops: Any, main_bytes: Any, latency_s: Any, dtype: str = "bf16") -> np.ndarray:
    """u of the module docstring (arrays broadcast; a zero latency gives 0)."""
    eff = hw.efficiency
    rate = hw.compute.peak_flops(dtype) * eff.tensor_fraction(dtype)
    bandwidth = hw.main_bandwidth_bytes_per_s * eff.memory_fraction(hw.main_memory)
    latency = np.asarray(latency_s, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        u_compute = np.where(latency > 0, np.asarray(flops, dtype=float) / (latency * rate), 0.0)
        u_memory = np.where(latency > 0, np.asarray(main_bytes, dtype=float) / (latency * bandwidth), 0.0)
    u = (1 - MEMORY_SHARE) * np.clip(u_compute, 0, 1) + MEMORY_SHARE * np.clip(u_memory, 0, 1)
    return np.clip(u, 0.0, 1.0)


def economics(hw: Hardware, *, flops: Any, main_bytes: Any, latency_s: Any, tokens_per_s: Any, gpus: Any = 1,
              dtype: str = "bf16") -> dict[str, Any]:
    """``power_w``, ``energy_per_token_j``, ``price_per_hour_usd`` (all GPUs) and ``cost_per_million_tokens_usd``
    of one replica on ``gpus`` devices; values the spec cannot give (no TDP, no price) are None. ``flops`` and
    ``main_bytes`` are per GPU, as the predictions give them."""
    tokens = np.asarray(tokens_per_s, dtype=float)
    gpus = np.asarray(gpus, dtype=float)
    out: dict[str, Any] = {"power_w": None, "energy_per_token_j": None, "price_per_hour_usd": None,
                           "cost_per_million_tokens_usd": None}
    with np.errstate(divide="ignore", invalid="ignore"):
        if hw.power is not None:
            idle = idle_power_w(hw)
            power = idle + (hw.power.tdp_w - idle) * utilisation(hw, flops, main_bytes, latency_s, dtype)
            out["power_w"] = power
            out["energy_per_token_j"] = np.where(tokens > 0, power * gpus / tokens, np.nan)
        if hw.price_per_hour_usd is not None:
            out["price_per_hour_usd"] = hw.price_per_hour_usd * gpus
            out["cost_per_million_tokens_usd"] = np.where(
                tokens > 0, hw.price_per_hour_usd * gpus / 3600.0 / tokens * 1e6, np.nan)
    return {k: (float(v) if v is not None and np.ndim(v) == 0 else v) for k, v in out.items()}
