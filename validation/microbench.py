"""Timing kernels on the device at hand, and the microbenchmarks that calibration runs.

Timing a kernel is like timing a sprinter with a hand stopwatch: one run is shorter than the reaction time of
the watch, so the runner does laps until a lap block is long enough to time well, and the block is repeated to
see how steady the runner is. Here a *sample* is ``reps`` back-to-back calls lasting at least ``target_s``; the
result is the median per-call time over ``samples`` samples, with the interquartile range as its spread.

- CPU: ``time.perf_counter`` around each sample, after a warm-up (first touch of the pages, thread-pool start,
  allocator caches) of at least ``warmup_s``.
- CUDA: CUDA events around each sample (the device's own clock, the launch gaps between back-to-back calls
  included, as a stream of eager calls really runs), and, separately, ``torch.profiler``: the device time of the
  kernels each call launched, summed, launch gaps excluded. Throughput ceilings (calibration's copies and
  matmuls) use the kernel time: an eager loop of small kernels is paced by the host, not the GPU.

A call is given as a list of zero-argument callables, one per rotation slot: call ``i`` of a sample runs slot
``i mod len(calls)``, so that a benchmark can rotate among several copies of its inputs and keep its reuse
footprint known (``len(calls)`` × the bytes of one call).

The microbenchmarks of :mod:`perfmodel.validation.calibrate` live here too: copies over growing working sets
(bandwidth of each memory level), large square matmuls per dtype (attainable FLOP/s) and tiny ops (fixed cost
per call). torch is imported inside the functions, so importing this module is cheap.
"""
from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

Call = Callable[[], Any]


@dataclass(frozen=True)
class Budget:
    """How long to time each kernel: a sample lasts ≥ ``target_s``, after ≥ ``warmup_s`` of warm-up calls."""

    target_s: float = 0.02
    samples: int = 5
    warmup_s: float = 0.01
    max_reps: int = 1_000_000

    def __post_init__(self):
        if not (self.target_s > 0 and self.warmup_s >= 0):
            raise ValueError(f"Budget: target_s={self.target_s}, warmup_s={self.warmup_s}: expected target_s > 0 "
                             "and warmup_s >= 0")
        if self.samples < 1 or self.max_reps < 1:
            raise ValueError(f"Budget: samples={self.samples}, max_reps={self.max_reps}: expected both >= 1")


#: the method of DESIGN.md: samples of ≥ 20 ms, at least 5 of them
DEFAULT_BUDGET = Budget()
#: for tests and smoke runs: numbers are noisier, but the code path is the same
QUICK_BUDGET = Budget(target_s=0.002, samples=3, warmup_s=0.001)


@dataclass(frozen=True)
class Timing:
    """Per-call time of a kernel: median over samples, with the quartiles and the minimum."""

    median_s: float
    q1_s: float
    q3_s: float
    min_s: float
    samples: int
    reps: int

    @property
    def iqr_s(self) -> float:
        return self.q3_s - self.q1_s

    @classmethod
    def from_samples(cls, per_call: Sequence[float], reps: int) -> "Timing":
        xs = sorted(per_call)
        if len(xs) >= 2:
            q1, _, q3 = statistics.quantiles(xs, n=4, method="inclusive")
        else:
            q1 = q3 = xs[0]
        return cls(statistics.median(xs), q1, q3, xs[0], len(xs), reps)


def _sequence(calls: Sequence[Call], reps: int) -> list[Call]:
    """``reps`` calls cycling through the rotation slots (built once, so the timed loop only calls)."""
    if not calls:
        raise ValueError("timing: expected at least one callable, got none")
    return [calls[i % len(calls)] for i in range(reps)]


def _reps_for(per_call_s: float, budget: Budget) -> int:
    return int(min(budget.max_reps, max(1, math.ceil(budget.target_s / max(per_call_s, 1e-9)))))


def _timed(calls: Sequence[Call], budget: Budget, block: Callable[[list[Call]], float]) -> Timing:
    """Warm up, choose the repetitions per sample, then time ``budget.samples`` samples with ``block``.

    ``block(seq)`` runs every call of ``seq`` and returns the elapsed seconds. The repetition count comes from
    the warm-up's per-call time; a sample that comes out shorter than half the target (the warm-up was slowed by
    a one-off stall) resets the count from that sample and is discarded, at most three times.
    """
    n = len(calls)
    if n == 0:
        raise ValueError("timing: expected at least one callable, got none")
    # Warm-up: every slot at least once, then until warmup_s has passed; it also estimates the per-call time.
    done, elapsed = 0, 0.0
    while True:
        elapsed += block(list(calls))
        done += n
        if elapsed >= budget.warmup_s or done >= budget.max_reps:
            break
    reps = _reps_for(elapsed / done, budget)
    seq = _sequence(calls, reps)
    per_call: list[float] = []
    resets = 0
    while len(per_call) < budget.samples:
        t = block(seq)
        if t < 0.5 * budget.target_s and reps < budget.max_reps and resets < 3:
            resets += 1
            reps = _reps_for(t / reps, budget)
            seq = _sequence(calls, reps)
            per_call.clear()
            continue
        per_call.append(t / reps)
    return Timing.from_samples(per_call, reps)


# The CPU clock of time_cpu: wall time by default; set_cpu_clock("process") on a shared machine running torch on
# one thread times only the CPU the process got (time.process_time), not the slices other processes took.
_CPU_CLOCK = [time.perf_counter]


def set_cpu_clock(clock: str) -> None:
    """``"wall"`` (``time.perf_counter``, the default) or ``"process"`` (``time.process_time``; needs torch on one
    thread, as the process time of several threads adds up their CPU time)."""
    import torch

    if clock == "wall":
        _CPU_CLOCK[0] = time.perf_counter
    elif clock == "process":
        if torch.get_num_threads() != 1:
            raise ValueError(f"clock 'process' with {torch.get_num_threads()} torch threads: expected one thread "
                             "(--threads 1)")
        _CPU_CLOCK[0] = time.process_time
    else:
        raise ValueError(f"clock {clock!r}: expected 'wall' or 'process'")


def time_cpu(calls: Sequence[Call], budget: Budget = DEFAULT_BUDGET) -> Timing:
    """Median per-call time of ``calls`` (rotating) on the CPU: wall time with ``time.perf_counter``, or the
    process's CPU time after :func:`set_cpu_clock` ``("process")``."""
    clock = _CPU_CLOCK[0]

    def block(seq: list[Call]) -> float:
        start = clock()
        for c in seq:
            c()
        return clock() - start

    return _timed(calls, budget, block)


def time_cuda(calls: Sequence[Call], budget: Budget = DEFAULT_BUDGET) -> Timing:
    """Median per-call time of ``calls`` (rotating) on the current CUDA device, with CUDA events."""
    import torch

    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)

    def block(seq: list[Call]) -> float:
        start.record()
        for c in seq:
            c()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) * 1e-3

    return _timed(calls, budget, block)


def _kernel_seconds(seq: Sequence[Call]) -> float:
    """Summed device time (s) of every device-side event (kernels, memsets, copies) that ``seq`` launched."""
    import warnings

    import torch
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "Profiler clears events at the end of each cycle"
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for c in seq:
                c()
            torch.cuda.synchronize()
        events = prof.events()
    return sum(e.time_range.elapsed_us() for e in events if e.device_type == DeviceType.CUDA) * 1e-6


def profile_cuda_kernels(calls: Sequence[Call], n_calls: int | None = None) -> float:
    """Device time of the kernels launched by one call (s): kernel durations summed, launch gaps excluded.

    Runs ``n_calls`` calls (default: two rounds of the rotation, at least 4) under ``torch.profiler`` with the
    CUDA activity only and divides the summed duration of every device-side event (kernels, memsets, copies)
    by the number of calls. The caller warms up first (this function does not).
    """
    n_calls = n_calls or max(4, 2 * len(calls))
    return _kernel_seconds(_sequence(calls, n_calls)) / n_calls


def time_cuda_kernels(calls: Sequence[Call], budget: Budget = DEFAULT_BUDGET, max_reps: int = 200) -> Timing:
    """Median per-call kernel time of ``calls`` on CUDA from ``torch.profiler`` (the device's busy time only).

    For throughput ceilings: an eager loop of small kernels is paced by the host's dispatch, which CUDA events
    include and this excludes. Each sample profiles enough calls for ``target_s`` of kernel time (≤ ``max_reps``).
    """
    import torch

    for _ in range(2):
        for c in calls:
            c()
    torch.cuda.synchronize()
    first = profile_cuda_kernels(calls)
    reps = max(len(calls), min(max_reps, _reps_for(first, budget)))
    seq = _sequence(calls, reps)
    return Timing.from_samples([_kernel_seconds(seq) / reps for _ in range(budget.samples)], reps)


def timer_for(device: str) -> Callable[[Sequence[Call], Budget], Timing]:
    """The timing function of a device kind ('cpu' or 'cuda'): what a stream of eager calls takes."""
    if device == "cpu":
        return time_cpu
    if device == "cuda":
        return time_cuda
    raise ValueError(f"device {device!r}: expected 'cpu' or 'cuda'")


def kernel_timer_for(device: str) -> Callable[[Sequence[Call], Budget], Timing]:
    """The timing function for throughput ceilings: wall time on a CPU, kernel time on CUDA."""
    return time_cuda_kernels if device == "cuda" else timer_for(device)


# ---------------------------------------------------------------------------------------------------------------
# Devices
class DeviceUnavailable(RuntimeError):
    """The requested device does not exist on this machine (e.g. --device cuda without a GPU)."""


def check_device(device: str) -> None:
    """Raise ``ValueError`` for an unknown device kind, :class:`DeviceUnavailable` for an absent one."""
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device {device!r}: expected 'cpu' or 'cuda'")
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise DeviceUnavailable("no CUDA device: torch.cuda.is_available() is False on this machine "
                                    f"(torch {torch.__version__}); run with --device cpu")


def other_runnable(samples: int = 5, interval_s: float = 0.02, path: str = "/proc/stat") -> int | None:
    """Processes other than this one that were runnable on the CPU, the least over a few readings of the
    kernel's ``procs_running`` (so that a passing blip does not count); None where /proc/stat does not exist.
    A CPU measurement wants this at 0: torch runs one thread per core, and every parallel op waits for its
    slowest thread, so one busy core can stretch a microsecond op to a scheduler tick."""
    least = None
    for i in range(samples):
        try:
            with open(path, encoding="ascii") as f:
                running = next(int(line.split()[1]) for line in f if line.startswith("procs_running"))
        except (OSError, StopIteration, ValueError, IndexError):
            return None
        least = running - 1 if least is None else min(least, running - 1)
        if i + 1 < samples:
            time.sleep(interval_s)
    return max(least, 0) if least is not None else None


def busy_warning(device: str) -> str | None:
    """A warning to print before timing on a CPU that other processes are using, else None."""
    if device != "cpu":
        return None
    others = other_runnable()
    if not others:
        return None
    return (f"{others} other process(es) running on this CPU: CPU timings will be distorted (torch runs a thread "
            "per core and a parallel op waits for the slowest); measure on an idle machine")


def device_name(device: str) -> str:
    """A human name of the device: the CPU model or the GPU name, without ':' (used in ``source`` strings)."""
    if device == "cuda":
        import torch

        name = torch.cuda.get_device_name()
    else:
        name = _cpu_model()
    return " ".join(name.replace(":", " ").split())


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine() or "cpu"


def _cpu_flags() -> set[str] | None:
    """The CPU's feature flags from /proc/cpuinfo, or None where there is no such file."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        return None
    return None


def torch_dtype(dtype: str):
    """The torch dtype of a table dtype name ('fp32', 'bf16', 'fp16')."""
    import torch

    table = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    if dtype not in table:
        raise ValueError(f"dtype {dtype!r}: expected one of {', '.join(table)}")
    return table[dtype]


def element_bytes(dtype: str) -> int:
    return {"fp32": 4, "bf16": 2, "fp16": 2}[dtype]


def random_tensor(shape: Sequence[int], dtype: str, device: str, scale: float = 1.0):
    """Normal random values (never zeros: some units run faster on zeros), in ``dtype`` on ``device``."""
    import torch

    t = torch.empty(tuple(shape), dtype=torch_dtype(dtype), device=device)
    t.normal_(0.0, scale)
    return t


def matmul_throughput(device: str, dtype: str, n: int, budget: Budget = DEFAULT_BUDGET) -> tuple[Timing, float]:
    """Time C = A·B for n×n random matrices; returns (timing, FLOP/s at the median) with FLOPs = 2·n³.

    On CUDA the time is the kernel's (profiler), not the host's dispatch.
    """
    import torch

    a, b = random_tensor((n, n), dtype, device), random_tensor((n, n), dtype, device)
    c = torch.empty((n, n), dtype=a.dtype, device=device)
    timing = kernel_timer_for(device)([lambda: torch.mm(a, b, out=c)], budget)
    return timing, 2.0 * n ** 3 / timing.median_s


def bf16_is_fast(device: str) -> bool:
    """Whether bf16 matmuls run fast here: always on CUDA; on a CPU, when it has bf16 instructions.

    CPUs without bf16 dot-product instructions emulate bf16 far below the fp32 rate; measuring such a dtype
    adds time and nothing the model is meant to predict. The answer must not depend on the machine's load (it
    decides a suite's shapes, and a resumed run must see the same list), so it comes from the CPU's flags
    (``avx512_bf16``, ``amx_bf16``) where /proc/cpuinfo exists; elsewhere from a probe, a 512×512×512 product
    in each dtype, bf16 counting as fast at half the fp32 rate or more.
    """
    if device == "cuda":
        return True
    flags = _cpu_flags()
    if flags is not None:
        return bool(flags & {"avx512_bf16", "amx_bf16"})
    probe = Budget(target_s=0.005, samples=3, warmup_s=0.002)
    _, fp32 = matmul_throughput(device, "fp32", 512, probe)
    _, bf16 = matmul_throughput(device, "bf16", 512, probe)
    return bf16 >= 0.5 * fp32


# ---------------------------------------------------------------------------------------------------------------
# Calibration microbenchmarks
def copy_bandwidth(device: str, working_set_bytes: int, budget: Budget = DEFAULT_BUDGET) -> Timing:
    """Time ``dst.copy_(src)`` of fp32 buffers whose two halves make the working set (src + dst bytes).

    The same two buffers are copied again and again, so the working set stays resident in the nearest level
    that holds it; the bytes the op moves are the whole working set (every byte of src read, of dst written).
    On CUDA the time is the copy kernel's (profiler): small copies are otherwise paced by the host's dispatch.
    """
    import torch

    n = max(1, working_set_bytes // 8)
    src = torch.empty(n, dtype=torch.float32, device=device)
    src.uniform_(0.5, 1.5)  # written, so its pages are real (untouched pages read as the shared zero page)
    dst = torch.empty_like(src)
    dst.fill_(1.0)
    return kernel_timer_for(device)([lambda: dst.copy_(src)], budget)


def read_bandwidth(device: str, working_set_bytes: int, budget: Budget = DEFAULT_BUDGET) -> Timing:
    """Time ``torch.sum`` of one fp32 buffer of ``working_set_bytes``: a read-only stream, the access pattern of
    the kernels that dominate inference (a GEMV's weights, an attention's KV cache), with no write-allocate
    traffic. The buffer is summed again and again, so it stays in the nearest level that holds it."""
    import torch

    n = max(1, working_set_bytes // 4)
    src = torch.empty(n, dtype=torch.float32, device=device)
    src.uniform_(0.5, 1.5)
    return kernel_timer_for(device)([lambda: src.sum()], budget)


def skinny_matmul_throughput(device: str, dtype: str, m: int, n: int,
                             budget: Budget = DEFAULT_BUDGET) -> tuple[Timing, float]:
    """Time ``F.linear`` of an m-row input against an n×n weight (m ≪ n); returns (timing, FLOP/s) with
    FLOPs = 2·m·n². With few rows a CPU's matmul microkernel cannot fill its register tile and reuses each
    loaded weight only m times: the rate against the square product's gives the half-performance row count."""
    import torch.nn.functional as F

    x, w = random_tensor((m, n), dtype, device), random_tensor((n, n), dtype, device, scale=n ** -0.5)
    timing = kernel_timer_for(device)([lambda: F.linear(x, w)], budget)
    return timing, 2.0 * m * n * n / timing.median_s


def exp_throughput(device: str, n: int = 1 << 18, budget: Budget = DEFAULT_BUDGET) -> tuple[Timing, float]:
    """Time ``torch.exp(x, out=y)`` over n fp32 values that stay in cache; returns (timing, exponentials/s): the
    rate of a softmax's exponentials on the vector units."""
    import torch

    x = random_tensor((n,), "fp32", device)
    y = torch.empty_like(x)
    timing = kernel_timer_for(device)([lambda: torch.exp(x, out=y)], budget)
    return timing, n / timing.median_s


def first_touch(device: str, nbytes: int = 128 << 20, budget: Budget = DEFAULT_BUDGET) -> tuple[Timing, Timing]:
    """Time writing ``nbytes`` into a fresh allocation (``torch.empty(...).fill_``) and into a reused buffer
    (``fill_``): (fresh, reused). Above the C allocator's mmap threshold every fresh allocation is new pages from
    the kernel, and its first touch takes a page fault and the zeroing of each page; the difference is that cost."""
    import torch

    n = max(1, nbytes // 4)
    buf = torch.empty(n, dtype=torch.float32, device=device)
    buf.fill_(0.5)
    timer = kernel_timer_for(device)
    fresh = timer([lambda: torch.empty(n, dtype=torch.float32, device=device).fill_(1.0)], budget)
    reused = timer([lambda: buf.fill_(1.0)], budget)
    return fresh, reused


def tiny_op_times(device: str, budget: Budget = DEFAULT_BUDGET) -> dict[str, Timing]:
    """Fixed costs of one call: ops on 1-element (or tiny) tensors, where there is nothing to do but dispatch.

    - ``add``: ``torch.add(x, y, out=z)`` — the empty-kernel launch (``efficiency.launch_s``);
    - ``copy``: ``dst.copy_(src)`` — the fixed part of the copy microbenchmark, subtracted from its timings
      (timed like the copies: kernel time on CUDA);
    - ``attention``: ``scaled_dot_product_attention`` over one query and one key of width 8 (fp32 on a CPU; bf16
      on CUDA, where fp32 falls back to a slower non-flash kernel that GPU models do not run).
    """
    import torch
    import torch.nn.functional as F

    timer = timer_for(device)
    x, y = random_tensor((1,), "fp32", device), random_tensor((1,), "fp32", device)
    z = torch.empty_like(x)
    q = random_tensor((1, 1, 1, 8), "bf16" if device == "cuda" else "fp32", device)
    out = {
        "add": timer([lambda: torch.add(x, y, out=z)], budget),
        "copy": kernel_timer_for(device)([lambda: z.copy_(x)], budget),
        "sum": kernel_timer_for(device)([lambda: x.sum()], budget),
        "attention": timer([lambda: F.scaled_dot_product_attention(q, q, q)], budget),
    }
    if device == "cpu":
        # The kernels a CPU runs for attention (perfmodel measure): decode through perfmodel's grouped-query
        # reference (several torch ops: scores, scale, softmax, weighted sum), prefill through SDPA's causal
        # flash kernel. One query / two queries over width-8 heads: nothing to do but the fixed cost.
        from perfmodel.kernels.decode_attention import decode_attention

        qd, kd = random_tensor((1, 2, 8), "fp32", device), random_tensor((1, 1, 2, 8), "fp32", device)
        qp, kp = random_tensor((1, 1, 2, 8), "fp32", device), random_tensor((1, 1, 2, 8), "fp32", device)
        out["decode_attention"] = timer([lambda: decode_attention(qd, kd, kd)], budget)
        out["prefill_attention"] = timer([lambda: F.scaled_dot_product_attention(qp, kp, kp, is_causal=True)],
                                         budget)
    return out
