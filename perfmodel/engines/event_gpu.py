"""The event engine's GPU: SMs, shared bandwidth and kernels as SimPy processes.

Picture a print shop. Jobs (kernels) arrive at the counter one after another per queue (stream); each job is
cut into sheets (tiles), and the presses (SMs) each hold a few sheets at a time. Every press pulls its paper
through the same loading docks (L2, HBM): when k presses pull at once, each gets 1/k of a dock's throughput
(processor sharing), and no press can pull faster than its own door (the SM's port). A sheet is done when its
paper has arrived and its printing is done; the two overlap, as in a double-buffered pipeline, so a tile takes
    t_tile = latency_s + serial_s + max(min_s, compute, transfer at each level)
where latency_s is the pipeline fill (the first dependent loads), serial_s steps the tile cannot overlap, min_s
a dependent chain that overlaps the streaming but bounds it, and each term is stretched by whatever
contention the other tiles cause while it runs. Only the first wave pays the fill: a later tile's first loads
are issued while the tile before it on the same slot drains (identical tiles here finish in lock-step, which
would otherwise leave the memory idle for one latency per wave, an artefact of the fluid model). Jobs pay a
fixed launch delay before their first sheet and an optional tail (a split-K reduction, a split-KV combine)
after their last.

Entities:
    - SM residency is a ``simpy.Container`` of slot units (``SLOT_UNITS`` per SM): a tile of a kernel with
      occupancy r holds SLOT_UNITS / r units, so r tiles fit per SM and kernels of different occupancy share
      the SMs exactly as far as their footprints allow. Tiles are dispatched in order (the Container serves
      requests first come, first served), so a kernel's grid runs in waves.
    - Compute and every memory level are :class:`SharedBandwidth` servers: compute in SM-seconds per second
      (rate = SMs, at most one SM per tile), memory in bytes per second (at most the port bandwidth per tile).
    - Coarsening: tiles that a kernel dispatches at the same instant from one tile class are identical, so they
      run as one weighted group: a group of n tiles is one flow of weight n at each server. This is exact, not
      an approximation (identical flows started together finish together), and it turns a 2,000-tile GEMM into
      one process per wave. ``coarsen=False`` runs one process per tile, for tests and traces.
"""
from __future__ import annotations

import heapq
import itertools
import math
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import simpy

SLOT_UNITS = 720720  # least common multiple of 1..16: every occupancy up to 16 tiles per SM divides it exactly
MAX_OCCUPANCY = 16
COMPUTE = "compute"
_REL_TOL = 1e-9  # a flow within this fraction of its size of the finish line is finished (float round-off)


def _positive(what: str, value: float) -> float:
    if not isinstance(value, (int, float)) or not value > 0 or math.isnan(value):
        raise ValueError(f"{what} must be a positive number, got {value!r}")
    return float(value)


def _non_negative(what: str, value: float) -> float:
    if not isinstance(value, (int, float)) or not value >= 0 or math.isinf(value):
        raise ValueError(f"{what} must be a finite number >= 0, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class GpuConfig:
    """A GPU as the event engine sees it.

    ``bandwidth_bytes_per_s``: attainable bandwidth of each shared memory level (name -> B/s).
    ``tile_bandwidth_bytes_per_s``: the most one tile may draw from a level (an SM's port); levels not listed
    have no per-tile ceiling.
    """

    sms: int
    bandwidth_bytes_per_s: Mapping[str, float]
    tile_bandwidth_bytes_per_s: Mapping[str, float] = field(default_factory=dict)
    launch_s: float = 0.0

    def __post_init__(self):
        if not isinstance(self.sms, int) or isinstance(self.sms, bool) or self.sms < 1:
            raise ValueError(f"sms must be an integer >= 1, got {self.sms!r}")
        if not self.bandwidth_bytes_per_s:
            raise ValueError("bandwidth_bytes_per_s must name at least one memory level, "
                             f"got {self.bandwidth_bytes_per_s!r}")
        for name, bw in self.bandwidth_bytes_per_s.items():
            if name == COMPUTE:
                raise ValueError(f"memory level name {name!r} is reserved for the SMs' compute")
            _positive(f"bandwidth_bytes_per_s[{name!r}]", bw)
        for name, bw in self.tile_bandwidth_bytes_per_s.items():
            if name not in self.bandwidth_bytes_per_s:
                raise ValueError(f"tile_bandwidth_bytes_per_s names level {name!r}, which is not one of "
                                 f"{', '.join(self.bandwidth_bytes_per_s)}")
            _positive(f"tile_bandwidth_bytes_per_s[{name!r}]", bw)
        _non_negative("launch_s", self.launch_s)
        object.__setattr__(self, "bandwidth_bytes_per_s", dict(self.bandwidth_bytes_per_s))
        object.__setattr__(self, "tile_bandwidth_bytes_per_s", dict(self.tile_bandwidth_bytes_per_s))


@dataclass(frozen=True)
class TileClass:
    """``count`` identical tiles, each needing ``compute_s`` seconds of one whole SM and moving ``bytes`` (a
    mapping level -> bytes per tile; stored as sorted (level, bytes) pairs so that kernels hash).

    ``serial_s``: time the tile spends neither computing nor streaming (dependent round trips such as loading
    its queries, rescaling, writing its output), paid before its pipeline runs. ``min_s``: a floor on the
    pipeline's time (a chain of dependent loads that overlaps the streaming but bounds it from below).
    """

    count: int
    compute_s: float = 0.0
    bytes: Mapping[str, float] | tuple = ()
    serial_s: float = 0.0
    min_s: float = 0.0

    def __post_init__(self):
        if not isinstance(self.count, int) or isinstance(self.count, bool) or self.count < 1:
            raise ValueError(f"tile count must be an integer >= 1, got {self.count!r}")
        for name in ("compute_s", "serial_s", "min_s"):
            _non_negative(f"tile {name}", getattr(self, name))
            object.__setattr__(self, name, float(getattr(self, name)))
        pairs = dict(self.bytes).items()
        for level, amount in pairs:
            _non_negative(f"tile bytes[{level!r}]", amount)
        object.__setattr__(self, "bytes", tuple(sorted((str(k), float(v)) for k, v in pairs)))


@dataclass(frozen=True)
class Kernel:
    """One launch: tile classes dispatched in order, ``occupancy`` tiles resident per SM, ``latency_s`` of
    pipeline fill for each of the first wave's tiles, ``tail_s`` after the last tile."""

    name: str
    tiles: tuple[TileClass, ...]
    occupancy: int = 1
    latency_s: float = 0.0
    tail_s: float = 0.0
    label: str = ""  # how the grid was chosen, for notes (e.g. "128x256 tiles, split-K 1")

    def __post_init__(self):
        object.__setattr__(self, "tiles", tuple(self.tiles))
        for cls in self.tiles:
            if not isinstance(cls, TileClass):
                raise TypeError(f"kernel {self.name!r}: tiles must be TileClass records, got {cls!r}")
        if not isinstance(self.occupancy, int) or not 1 <= self.occupancy <= MAX_OCCUPANCY:
            raise ValueError(f"kernel {self.name!r}: occupancy must be an integer in 1..{MAX_OCCUPANCY}, "
                             f"got {self.occupancy!r}")
        _non_negative(f"kernel {self.name!r}: latency_s", self.latency_s)
        _non_negative(f"kernel {self.name!r}: tail_s", self.tail_s)

    @classmethod
    def uniform(cls, name: str, tiles: int, compute_s: float = 0.0, bytes: Mapping[str, float] | None = None,
                **kw) -> "Kernel":
        """A kernel of ``tiles`` identical tiles (the common case)."""
        return cls(name, (TileClass(tiles, compute_s, bytes or {}),), **kw)

    @property
    def tile_count(self) -> int:
        return sum(c.count for c in self.tiles)

    def total_bytes(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for c in self.tiles:
            for level, amount in c.bytes:
                out[level] = out.get(level, 0.0) + amount * c.count
        return out

    def total_compute_s(self) -> float:
        """SM-seconds of compute over all tiles."""
        return sum(c.compute_s * c.count for c in self.tiles)


class SharedBandwidth:
    """A server shared by processor sharing: W active unit flows each move min(cap, rate / W) per second.

    Bookkeeping is by virtual time: ``_served`` is how much every unit flow has received so far; a flow that
    arrives when ``_served`` = s and needs b finishes when ``_served`` reaches s + b. Arrivals and departures
    only change the slope, so each costs O(log n) and remaining amounts never need updating.
    """

    def __init__(self, env: simpy.Environment, name: str, rate: float, cap: float = math.inf):
        self.env = env
        self.name = name
        self.rate = _positive(f"{name}: rate", rate)
        if not cap > 0:
            raise ValueError(f"{name}: per-flow cap must be positive, got {cap!r}")
        self.cap = float(cap)
        self.moved = 0.0  # total amount served (bytes, or SM-seconds for compute)
        self._served = 0.0
        self._since = env.now
        self._weight = 0
        self._finish: list[tuple[float, int, int, simpy.Event]] = []
        self._order = itertools.count()
        self._version = 0

    def _unit_rate(self) -> float:
        return min(self.cap, self.rate / self._weight) if self._weight else 0.0

    def _advance(self) -> None:
        self._served += self._unit_rate() * (self.env.now - self._since)
        self._since = self.env.now

    def transfer(self, amount: float, weight: int = 1) -> simpy.Event:
        """An event that fires once ``weight`` identical flows of ``amount`` each have been served."""
        done = self.env.event()
        if amount <= 0:
            return done.succeed()
        self._advance()
        heapq.heappush(self._finish, (self._served + amount, next(self._order), weight, done))
        self._weight += weight
        self.moved += amount * weight
        self._reschedule()
        return done

    def _reschedule(self) -> None:
        self._version += 1
        if not self._finish:
            return
        wait = max(0.0, (self._finish[0][0] - self._served) / self._unit_rate())
        version = self._version
        self.env.timeout(wait).callbacks.append(lambda _event: self._wake(version))

    def _wake(self, version: int) -> None:
        if version != self._version:  # an arrival or departure since then rescheduled us
            return
        self._advance()
        while self._finish and self._finish[0][0] - self._served <= _REL_TOL * self._finish[0][0]:
            _, _, weight, done = heapq.heappop(self._finish)
            self._weight -= weight
            done.succeed()
        self._reschedule()


@dataclass(frozen=True)
class KernelSpan:
    name: str
    stream: int
    launched: float
    started: float
    finished: float
    tiles: int
    groups: int

    @property
    def duration(self) -> float:
        return self.finished - self.launched


@dataclass(frozen=True)
class GroupSpan:
    kernel: str
    first: int
    count: int
    started: float
    finished: float


@dataclass
class Timeline:
    """What happened: kernel and tile-group spans, a log of ``(time, who, what)`` in order, totals per server."""

    kernels: list[KernelSpan]
    groups: list[GroupSpan]
    log: list[tuple[float, str, str]]
    moved: dict[str, float]  # bytes per memory level, SM-seconds for "compute"

    @property
    def end(self) -> float:
        return max((k.finished for k in self.kernels), default=0.0)


def _tag(name: str, first: int, count: int) -> str:
    return f"{name}[{first}]" if count == 1 else f"{name}[{first}:{first + count}]"


class Gpu:
    """The SimPy model: SM slots, a compute server and one bandwidth server per memory level."""

    def __init__(self, env: simpy.Environment, config: GpuConfig, coarsen: bool = True):
        self.env = env
        self.config = config
        self.coarsen = coarsen
        self.slots = simpy.Container(env, capacity=config.sms * SLOT_UNITS, init=config.sms * SLOT_UNITS)
        self.servers = {COMPUTE: SharedBandwidth(env, COMPUTE, config.sms, 1.0)}
        for name, bw in config.bandwidth_bytes_per_s.items():
            self.servers[name] = SharedBandwidth(env, name, bw, config.tile_bandwidth_bytes_per_s.get(name, math.inf))
        self.log: list[tuple[float, str, str]] = []
        self.kernel_spans: list[KernelSpan] = []
        self.group_spans: list[GroupSpan] = []

    def stream(self, kernels: Sequence[Kernel], stream: int):
        """A stream runs its kernels one after another."""
        for kernel in kernels:
            yield self.env.process(self.kernel(kernel, stream))

    def kernel(self, kernel: Kernel, stream: int):
        """Launch, dispatch the tiles in order as SM slots free up, wait for them, run the tail."""
        env = self.env
        launched = env.now
        self.log.append((env.now, kernel.name, "launch"))
        yield env.timeout(self.config.launch_s)
        started = env.now
        self.log.append((env.now, kernel.name, "start"))
        unit = SLOT_UNITS // kernel.occupancy
        running, first = [], 0
        for cls in kernel.tiles:
            left = cls.count
            while left:
                yield self.slots.get(unit)
                n = 1
                if self.coarsen and not self.slots.get_queue:
                    n += min(left - 1, self.slots.level // unit)
                    if n > 1:
                        yield self.slots.get((n - 1) * unit)
                fill = kernel.latency_s if first < self.config.sms * kernel.occupancy else 0.0
                running.append(env.process(self.group(kernel, cls, first, n, unit, fill)))
                first += n
                left -= n
        yield env.all_of(running)
        if kernel.tail_s:
            yield env.timeout(kernel.tail_s)
        self.log.append((env.now, kernel.name, "end"))
        self.kernel_spans.append(KernelSpan(kernel.name, stream, launched, started, env.now,
                                            kernel.tile_count, len(running)))

    def group(self, kernel: Kernel, cls: TileClass, first: int, n: int, unit: int, fill_s: float):
        """n identical tiles: fill the pipeline and the serial steps, then compute and stream every level at once
        (for at least ``min_s``)."""
        env = self.env
        tag = _tag(kernel.name, first, n)
        started = env.now
        self.log.append((env.now, tag, "start"))
        if fill_s + cls.serial_s:
            yield env.timeout(fill_s + cls.serial_s)
        flows = [env.timeout(cls.min_s), self.servers[COMPUTE].transfer(cls.compute_s, n)]
        flows += [self.servers[level].transfer(amount, n) for level, amount in cls.bytes]
        yield env.all_of(flows)
        self.log.append((env.now, tag, "end"))
        self.group_spans.append(GroupSpan(kernel.name, first, n, started, env.now))
        yield self.slots.put(n * unit)


def simulate(kernels: Sequence[Kernel], config: GpuConfig, streams: Sequence[int] | None = None,
             coarsen: bool = True) -> Timeline:
    """Run ``kernels`` on a GPU described by ``config``; ``streams[i]`` is kernel i's stream (default all 0).

    Kernels of one stream run in list order; streams run concurrently and contend for SMs and bandwidth.
    """
    kernels = list(kernels)
    streams = [0] * len(kernels) if streams is None else list(streams)
    if len(streams) != len(kernels):
        raise ValueError(f"streams has {len(streams)} entries for {len(kernels)} kernels; expected one per kernel")
    for s in streams:
        if not isinstance(s, int) or s < 0:
            raise ValueError(f"stream ids must be integers >= 0, got {s!r}")
    for k in kernels:
        for level in k.total_bytes():
            if level not in config.bandwidth_bytes_per_s:
                raise ValueError(f"kernel {k.name!r} moves bytes through level {level!r}, which the GPU config "
                                 f"does not have ({', '.join(config.bandwidth_bytes_per_s)})")
    env = simpy.Environment()
    gpu = Gpu(env, config, coarsen)
    by_stream: dict[int, list[Kernel]] = {}
    for k, s in zip(kernels, streams):
        by_stream.setdefault(s, []).append(k)
    for s, ks in sorted(by_stream.items()):
        env.process(gpu.stream(ks, s))
    env.run()
    moved = {name: server.moved for name, server in gpu.servers.items()}
    return Timeline(gpu.kernel_spans, gpu.group_spans, gpu.log, moved)
