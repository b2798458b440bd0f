"""A kernel alone on the GPU, in closed form: the time :func:`perfmodel.engines.event_gpu.simulate` gives it,
where that time can be written down without running the simulation.

Picture one job in an empty print shop. If all its sheets are alike, the presses run it in identical rounds
(waves) and the job's time is a sum of round times. If its sheets differ but every sheet takes a time that
no other sheet can change (each press prints at its own pace, and the loading docks are never the
bottleneck even with every press busy), the job is a queue of known durations dealt to free presses in order:
list scheduling, no simulation needed. Anything else (sheets slowing each other down at a shared dock while
presses free up at different times) is what the SimPy model is for: :func:`exact_time` returns None and the
caller simulates.

    lone_kernel_time(kernel, config)  the per-wave rule: exact for one tile class, close for several
    exact_time(kernel, config)        the simulated time where a closed form is exact, else None

Both are exact only for a kernel alone on the GPU; concurrent kernels (streams) are always simulated.
"""
from __future__ import annotations

import heapq
import math
from dataclasses import replace

from perfmodel.engines.event_gpu import GpuConfig, Kernel, TileClass


def lone_kernel_time(kernel: Kernel, config: GpuConfig) -> float:
    """Time of ``kernel`` alone on the GPU, in closed form: what :func:`event_gpu.simulate` returns for it.

    Alone, a grid of identical tiles runs in identical waves of w = min(tiles left, SMs × occupancy) tiles, and
    in a wave every tile gets min(1, SMs/w) of an SM and min(port, bandwidth/w) of each level, so a wave takes
    serial + max(floor, compute · max(1, w/SMs), bytes_level / min(port, bandwidth_level / w)); the first wave
    adds the fill.
    """
    slots = config.sms * kernel.occupancy
    total = config.launch_s + kernel.tail_s + (kernel.latency_s if kernel.tiles else 0.0)
    for cls in kernel.tiles:  # each class dispatched after the previous: exact for one class, close for more
        full, rest = divmod(cls.count, slots)
        for w, waves in ((slots, full), (rest, 1 if rest else 0)):
            if not waves:
                continue
            t = max(cls.min_s, cls.compute_s * max(1.0, w / config.sms))
            for level, amount in cls.bytes:
                share = config.bandwidth_bytes_per_s[level] / w
                t = max(t, amount / min(share, config.tile_bandwidth_bytes_per_s.get(level, math.inf)))
            total += waves * (cls.serial_s + t)
    return total


def merged_classes(tiles: tuple[TileClass, ...]) -> tuple[TileClass, ...]:
    """The tile classes with consecutive identical ones (count aside) made one.

    The simulation dispatches two such classes exactly as one: tiles dispatched at the same instant start
    identical flows together, which finish together, and the slots they free are taken in the same order.
    """
    out: list[TileClass] = []
    runs: list[int] = []
    for cls in tiles:
        if out and _work(out[-1]) == _work(cls):
            runs[-1] += cls.count
        else:
            out.append(cls)
            runs.append(cls.count)
    return tuple(c if c.count == n else replace(c, count=n) for c, n in zip(out, runs))


def _work(cls: TileClass) -> tuple:
    return cls.compute_s, cls.bytes, cls.serial_s, cls.min_s


def own_pace_times(classes: tuple[TileClass, ...], resident: int, config: GpuConfig) -> list[float] | None:
    """How long one tile of each class computes and streams when at most ``resident`` tiles share the GPU, if no
    other tile can change it; None if sharing might, for any class.

    A term is fixed when its rate does not depend on how many tiles share the resource: the floor, the compute
    while resident ≤ SMs (every tile has a whole SM), a level whose per-tile port is at most bandwidth / resident
    (the port, not the share, limits it). A shared term is at worst stretched to the share of ``resident``
    tiles; if the longest fixed term is at least the worst of the shared ones, the tile takes exactly the fixed
    term, whatever the others do.
    """
    compute_fixed = resident <= config.sms
    stretch = max(1.0, resident / config.sms)
    rate, fixed_level = {}, {}
    for level, bw in config.bandwidth_bytes_per_s.items():
        port = config.tile_bandwidth_bytes_per_s.get(level, math.inf)
        share = bw / resident
        rate[level], fixed_level[level] = min(port, share), port <= share
    paces = []
    for cls in classes:
        pace, worst = cls.min_s, 0.0
        if compute_fixed:
            pace = max(pace, cls.compute_s)
        else:
            worst = cls.compute_s * stretch
        for level, amount in cls.bytes:
            t = amount / rate[level]
            if fixed_level[level]:
                pace = max(pace, t)
            else:
                worst = max(worst, t)
        if pace < worst:
            return None
        paces.append(pace)
    return paces


def _list_schedule(kernel: Kernel, classes: tuple[TileClass, ...], paces: list[float], config: GpuConfig) -> float:
    """Tiles of known durations dealt in order to the first free slots, as the simulation dispatches them: the
    initial dispatch (the first SMs × occupancy tiles, at the launch) pays the fill; the kernel ends when its
    last tile does, plus its tail."""
    slots = config.sms * kernel.occupancy
    free = [(config.launch_s, slots)]  # (when, how many slots free up then)
    first = 0
    pop, push = heapq.heappop, heapq.heappush
    for cls, pace in zip(classes, paces):
        left = cls.count
        run = cls.serial_s + pace
        while left:
            when, n = pop(free)
            while free and free[0][0] == when:  # slots freed at the same instant are dispatched together
                n += pop(free)[1]
            take = n if n <= left else left
            if n > take:
                push(free, (when, n - take))
            if first < slots:
                push(free, (when + (kernel.latency_s + cls.serial_s) + pace, take))
            else:
                push(free, (when + run, take))
            first += take
            left -= take
    return max(free)[0] + kernel.tail_s


def exact_time(kernel: Kernel, config: GpuConfig) -> float | None:
    """The time :func:`event_gpu.simulate` gives ``kernel`` alone on the GPU, where a closed form is exact:

    - one tile class (identical consecutive classes merged, :func:`merged_classes`): :func:`lone_kernel_time`;
    - several classes, each tile's time fixed whatever the others do (:func:`own_pace_times`): list scheduling.

    None otherwise (tiles whose shared bandwidth or compute depends on what else runs): simulate it.
    """
    classes = merged_classes(kernel.tiles)
    if len(classes) <= 1:
        return lone_kernel_time(replace(kernel, tiles=classes), config)
    resident = min(config.sms * kernel.occupancy, sum(c.count for c in classes))
    paces = own_pace_times(classes, resident, config)
    if paces is None:
        return None
    return _list_schedule(kernel, classes, paces, config)
