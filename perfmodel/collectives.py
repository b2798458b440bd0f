"""All-reduce time on a device's interconnect, and its check against measured NCCL timings.

A ring all-reduce is a bucket brigade: p workers pass buckets around a ring, first adding their share into each
bucket (reduce-scatter), then passing the finished buckets on (all-gather). Each worker sends and receives
2(p−1)/p of the buffer over its link, and a small message pays mostly the time for the first bucket to get
around. The textbook α–β form is::

    t = launch + 2(p−1)·ℓ + V / (B·E),           V = 2(p−1)/p · S bytes per device

with ℓ the spec's link latency and B its bandwidth per direction. Measured NCCL rings (nccl-tests on DGX A100
and H100, ../shared/data/measured) depart from it in two ways, which :class:`AllReduceModel` adds and the
analytic engine uses (with η∞ and S½ from the link's ``collective_efficiency`` and
``collective_half_size_bytes``):

- small messages take about one link latency per GPU, not two per ring step: 6, 10 and 16 µs on 2, 4 and 8
  H100s (NCCL's low-latency protocol forwards each 8-byte line as it arrives, so the ring's steps overlap):
  latency term p·ℓ;
- the bandwidth reached grows with the message over tens of MB (more channels, pipelined chunks): an
  efficiency η(S) = η∞ / (1 + √(S½/S)), so t = launch + p·ℓ + V/(B·η∞) · (1 + √(S½/S)).

η∞ and S½ are fitted by :func:`fit` on a couple of large-message rows (linear least squares: the model is linear
in 1/(B·η∞) and √S½/(B·η∞)); everything else is reported, not fitted. η∞ may exceed 1 on NVSwitch systems
whose NCCL uses in-switch reduction (NVLS), which moves fewer bytes than a ring.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

LINKS = ("nvlink", "xgmi", "infinity_fabric", "pcie")
SMALL_MESSAGE_BYTES = 1e6


def ring_bytes(message_bytes: Any, devices: Any) -> Any:
    """Bytes each device sends (and receives) in a ring all-reduce of a ``message_bytes`` buffer: 2(p−1)/p·S."""
    p = np.maximum(np.asarray(devices, dtype=float), 1)
    return 2.0 * (p - 1) / p * np.asarray(message_bytes, dtype=float)


def device_link(hw):
    """The link collectives run on: the first of nvlink, xgmi, infinity_fabric, pcie the spec lists."""
    for name in LINKS:
        if name in hw.interconnect:
            return hw.interconnect[name]
    raise ValueError(f"hardware {hw.name!r}: an all-reduce needs an `interconnect` entry ({', '.join(LINKS)})")


@dataclass(frozen=True)
class AllReduceModel:
    """t = launch_s + p·link_latency_s + V/(B·efficiency)·(1 + √(half_size_bytes/S)) for a buffer of S bytes."""

    link_bandwidth_bytes_per_s: float
    link_latency_s: float
    launch_s: float
    efficiency: float
    half_size_bytes: float = 0.0

    def __post_init__(self):
        if not self.link_bandwidth_bytes_per_s > 0 or not self.efficiency > 0:
            raise ValueError(f"all-reduce model: bandwidth {self.link_bandwidth_bytes_per_s!r} and efficiency "
                             f"{self.efficiency!r}: expected positive numbers")
        if self.half_size_bytes < 0 or self.link_latency_s < 0 or self.launch_s < 0:
            raise ValueError("all-reduce model: half_size_bytes, link_latency_s and launch_s must be >= 0")

    @classmethod
    def from_hardware(cls, hw, efficiency: float | None = None, half_size_bytes: float | None = None) -> "AllReduceModel":
        """Link bandwidth, latency and collective efficiency from the spec (as the engine reads them)."""
        link = device_link(hw)
        eff = efficiency if efficiency is not None else (
            link.collective_efficiency or hw.efficiency.memory_fraction(hw.main_memory))
        half = link.collective_half_size_bytes if half_size_bytes is None else half_size_bytes
        return cls(link.bandwidth_bytes_per_s, link.latency_s or 0.0, hw.efficiency.launch_s, eff, half)

    def ramp(self, message_bytes: Any) -> Any:
        """Slow-down of the ring's streaming on a message of S bytes: 1 + √(S½/S)."""
        s = np.maximum(np.asarray(message_bytes, dtype=float), 1.0)
        return 1.0 + np.sqrt(self.half_size_bytes / s)

    def latency_time(self, devices: Any) -> Any:
        """The latency term: one link latency per GPU (p·ℓ), none on one GPU."""
        p = np.asarray(devices, dtype=float)
        return np.where(p > 1, p * self.link_latency_s, 0.0)

    def stream_time(self, message_bytes: Any, devices: Any) -> Any:
        """The bandwidth term: V/(B·η∞)·(1 + √(S½/S)) with V the ring bytes of each device."""
        s = np.maximum(np.asarray(message_bytes, dtype=float), 1.0)
        stream = ring_bytes(s, devices) / (self.link_bandwidth_bytes_per_s * self.efficiency)
        return stream * self.ramp(s)

    def time(self, message_bytes: Any, devices: Any) -> Any:
        """Seconds for an all-reduce of ``message_bytes`` over ``devices`` GPUs (arrays broadcast)."""
        return self.launch_s + self.latency_time(devices) + self.stream_time(message_bytes, devices)


def message_bytes(link_bytes: Any, devices: Any) -> Any:
    """The buffer S of an all-reduce whose ring moves ``link_bytes`` = 2(p−1)/p·S per device."""
    p = np.maximum(np.asarray(devices, dtype=float), 1)
    return np.asarray(link_bytes, dtype=float) * p / np.maximum(2.0 * (p - 1), 1e-30)


def fit(rows: pd.DataFrame, hw) -> AllReduceModel:
    """η∞ and S½ from a few measured rows (``message_bytes``, ``devices``, ``measured_s``), link from the spec.

    With u = 1/(B·η∞) and w = u·√S½ the model reads t − launch − p·ℓ = V·u + (V/√S)·w: ordinary least squares.
    """
    base = AllReduceModel.from_hardware(hw)
    s = rows["message_bytes"].to_numpy(dtype=float)
    p = rows["devices"].to_numpy(dtype=float)
    v = ring_bytes(s, p)
    y = rows["measured_s"].to_numpy(dtype=float) - base.launch_s - p * base.link_latency_s
    (u, w), *_ = np.linalg.lstsq(np.column_stack([v, v / np.sqrt(s)]), y, rcond=None)
    if u <= 0:
        raise ValueError(f"all-reduce fit on {len(rows)} rows: no positive bandwidth (rows too small or too few)")
    return AllReduceModel(base.link_bandwidth_bytes_per_s, base.link_latency_s, base.launch_s,
                          float(1.0 / (u * base.link_bandwidth_bytes_per_s)), float(max(w / u, 0.0) ** 2))


# -- measured data -----------------------------------------------------------------------------------------
def read_nccl_allreduce(path: str | Path, dtype: str = "half") -> pd.DataFrame:
    """All-reduce rows of an aiconfigurator ``nccl_perf.parquet`` (``message_size`` in elements, ``latency`` in
    ms) as ``message_bytes, devices, measured_s, source``; repeated measurements of a size are averaged."""
    df = pd.read_parquet(path)
    missing = {"op_name", "nccl_dtype", "num_gpus", "message_size", "latency"} - set(df.columns)
    if missing:
        raise ValueError(f"{path}: missing columns {sorted(missing)} of an aiconfigurator NCCL table")
    width = {"half": 2, "bfloat16": 2, "float": 4, "int8": 1}[dtype]
    d = df[(df.op_name == "all_reduce") & (df.nccl_dtype == dtype)]
    d = d.groupby(["num_gpus", "message_size"], as_index=False).latency.mean()
    return pd.DataFrame({"message_bytes": d.message_size.to_numpy(dtype=float) * width,
                         "devices": d.num_gpus.to_numpy(dtype=int), "measured_s": d.latency.to_numpy() * 1e-3,
                         "source": f"aiconfigurator:{Path(path).parts[-5] if len(Path(path).parts) >= 5 else path}"})


def read_vidur_allreduce(path: str | Path) -> pd.DataFrame:
    """Single-node rows of a vidur ``all_reduce.csv`` (``size`` in bytes, median time in ms) in the same columns."""
    df = pd.read_csv(path)
    col = "time_stats.all_reduce.median"
    missing = {"size", "num_workers", "devices_per_node", col} - set(df.columns)
    if missing:
        raise ValueError(f"{path}: missing columns {sorted(missing)} of a vidur all_reduce table")
    d = df[df.devices_per_node == df.num_workers]
    return pd.DataFrame({"message_bytes": d["size"].to_numpy(dtype=float), "devices": d.num_workers.to_numpy(dtype=int),
                         "measured_s": d[col].to_numpy() * 1e-3, "source": f"vidur:{Path(path).parent.name}"})


def error_table(rows: pd.DataFrame, predictions: dict[str, Sequence[float]]) -> pd.DataFrame:
    """Median absolute percentage error of each prediction column, by source, GPU count and message size band
    (below / from SMALL_MESSAGE_BYTES), with the number of rows."""
    df = rows.assign(band=np.where(rows.message_bytes < SMALL_MESSAGE_BYTES, "<1MB", ">=1MB"))
    for name, pred in predictions.items():
        df[name] = np.abs(np.asarray(pred, dtype=float) / df.measured_s.to_numpy() - 1.0) * 100.0
    agg = {name: (name, "median") for name in predictions}
    return df.groupby(["source", "devices", "band"]).agg(rows=("measured_s", "size"), **agg).reset_index()
