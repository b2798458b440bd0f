"""Run a decoding method for real: the exact schedule of the workload builder, pass by pass, on real kernels.

A conductor with the score in hand: the score is :func:`perfmodel.workload.passes.build_passes` with
``exact=True`` (every step its own pass), the orchestra the kernels of :mod:`perfmodel.kernels` (torch on a
CPU, Triton on CUDA) playing :func:`perfmodel.reference.transformer.forward` with the cache the scenario names.
Method logic stays in the builder: the runner only executes its passes in order, ``count`` times each, feeds
each pass the token ids the policy (:mod:`perfmodel.reference.policy`) has chosen, and times it.

What the reference runs (anything else is a ValueError naming the field): one device (tensor_parallel 1);
weights in the compute dtype (bf16 or fp16); fp16/bf16 K/V caches for every method; int8/int4
(KIVI) and XQuant / XQuant-CL caches with method ``arm``; Squeezed and Multipole attention (flat centroids,
updated every step) over an fp16/bf16 cache with method ``arm``, clustered after the prefill (timed apart:
the workload model leaves the offline clustering out); gated (SwiGLU) MLPs; block-wise methods with gen_len a
multiple of block_size.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from perfmodel.reference.dense import KVCache, NoCache
from perfmodel.reference.policy import Policy
from perfmodel.reference.recorder import pass_section, untracked
from perfmodel.reference.step import Step
from perfmodel.reference.transformer import forward
from perfmodel.reference.weights import Weights, random_weights
from perfmodel.specs.model import Model
from perfmodel.specs.scenario import Scenario
from perfmodel.workload import from_specs
from perfmodel.workload.passes import Pass, build_passes

TORCH_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


@dataclass(frozen=True)
class PassTime:
    """The measured time of one instance of one pass of the schedule."""

    index: int
    instance: int
    phase: str
    seconds: float


@dataclass
class RunResult:
    ids: torch.Tensor
    passes: list[Pass]
    times: list[PassTime] = field(default_factory=list)
    run_s: float = 0.0
    offline_s: float = 0.0


def check_supported(model: Model, sc: Scenario) -> None:
    """Raise ValueError naming the field when the reference cannot run this model and scenario."""
    fmt, kind = sc.kv_cache.format, sc.attention.kind

    def no(field_name: str, value, expected: str):
        raise ValueError(f"{field_name} {value!r}: the reference runs {expected}")

    if sc.tensor_parallel != 1:
        no("tensor_parallel", sc.tensor_parallel, "on one device (1)")
    if sc.compute_dtype not in ("bf16", "fp16"):
        no("compute_dtype", sc.compute_dtype, "bf16 or fp16")
    if sc.weight_dtype != sc.compute_dtype:
        no("weight_dtype", sc.weight_dtype, f"weights in the compute dtype ({sc.compute_dtype})")
    if fmt == "fp8":
        no("kv_cache.format", fmt, "fp16/bf16, int8/int4 and xquant/xquant-cl caches")
    if fmt not in ("fp16", "bf16") and sc.method != "arm":
        no("kv_cache.format", fmt, "quantised and XQuant caches with method 'arm'")
    if kind != "dense":
        if fmt not in ("fp16", "bf16"):
            no("kv_cache.format", fmt, f"{kind} attention over an fp16/bf16 cache")
        if sc.attention.hierarchical:
            no("attention.hierarchical", True, "flat centroids")
        if not sc.attention.update_clusters:
            no("attention.update_clusters", False, "clusters updated every decode step")
    if not model.gated_mlp:
        no("model.gated_mlp", False, "gated (SwiGLU) MLPs")
    blockwise = sc.method != "arm" and not (sc.method == "dlm" and not sc.semi_autoregressive)
    if blockwise and sc.gen_len % sc.block_size:
        no("gen_len", sc.gen_len, f"whole blocks (a multiple of block_size {sc.block_size})")


def capacity(model: Model, scenario: Scenario) -> int:
    """Positions a run of ``scenario`` needs (the longest context of its schedule, or prompt + answer)."""
    s, p = from_specs(model, scenario)
    longest = max(int(ps.context) for ps in build_passes(s, p, exact=True))
    return max(longest, int(p.prompt_len + p.gen_len))


class Reference:
    """A model with random weights, ready to run a scenario's method any number of times."""

    def __init__(self, model: Model, scenario: Scenario, *, device: str | torch.device = "cpu", seed: int = 0,
                 weights: Weights | None = None):
        check_supported(model, scenario)
        self.model, self.scenario = model, scenario
        self.structure, self.params = from_specs(model, scenario)
        self.passes = build_passes(self.structure, self.params, exact=True)
        self.capacity = capacity(model, scenario)
        self.dtype = TORCH_DTYPES[scenario.compute_dtype]
        self.device = torch.device(device)
        self.seed = seed
        self.weights = weights or random_weights(model, positions=self.capacity, dtype=self.dtype,
                                                 device=self.device, seed=seed)
        self._svd = None

    def new_cache(self):
        s, p, m, sc = self.structure, self.params, self.model, self.scenario
        batch, kvh, d = int(p.batch), m.num_key_value_heads, m.d_head
        args = (m.num_hidden_layers, batch, kvh, self.capacity, d, self.dtype, self.device)
        block = int(p.block_size)
        if s.method == "dlm":
            return NoCache(block)
        fmt = s.cache_format
        if fmt in ("int8", "int4"):
            from perfmodel.reference.kivi import KIVICache

            return KIVICache(*args, bits=int(p.bits), group=int(p.group_size), residual=int(p.residual_window),
                             block_size=block)
        if fmt in ("xquant", "xquant-cl"):
            from perfmodel.reference.xcache import XCache, svd_weights

            if s.latent == "svd" and fmt == "xquant" and self._svd is None:
                self._svd = svd_weights(self.weights, m.q_dim, m.kv_dim)
            return XCache(self.weights, fmt=fmt, latent=s.latent, remat=s.remat, bits=int(p.bits),
                          group=int(p.group_size), batch=batch, capacity=self.capacity, kv_heads=kvh, head_dim=d,
                          svd=self._svd)
        if s.attention_kind != "dense":
            from perfmodel.reference.sparse import SparseCache

            return SparseCache(*args, kind=s.attention_kind, token_budget=sc.attention.token_budget,
                               centroid_ratio=sc.attention.centroid_ratio, block_size=block, seed=self.seed)
        return KVCache(*args, block)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @property
    def replayable(self) -> bool:
        """Whether a pass can run twice with the same effect (a CUDA graph replayed to time it): not with
        clusters, whose update folds the new key into running means."""
        return self.structure.attention_kind == "dense"

    def _graph_pass(self, cache, step: Step, policy: Policy, replays: int):
        """Capture the pass in a CUDA graph, replay it once to run it, then ``replays`` times to time it; returns
        (median replay seconds, the pass's output). Capturing runs the Python side once (cache bookkeeping);
        the replays run the kernels."""
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = forward(self.model, self.weights, cache, step, policy.inputs(step))
        graph.replay()
        events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(replays)]
        for begin, end in events:
            begin.record()
            graph.replay()
            end.record()
        torch.cuda.synchronize(self.device)
        times = sorted(begin.elapsed_time(end) * 1e-3 for begin, end in events)
        if out is not None:
            out = tuple(t.clone() for t in out)
        del graph
        return times[len(times) // 2], out

    def run(self, on_pass: Callable[[PassTime], None] | None = None, *, graph_replays: int = 0,
            clock: str = "wall") -> RunResult:
        """One whole decoding run; every pass instance timed (synchronised on CUDA).

        ``graph_replays`` > 0 (CUDA, :attr:`replayable` methods): every pass instance is captured in a CUDA
        graph and its time is the median of that many replays, without the launch gaps of eager PyTorch;
        ``run_s`` then includes the captures and is not a run time. ``clock``: ``wall`` (``time.perf_counter``)
        or, on a CPU running torch on one thread, ``process`` (``time.process_time``: the CPU time the process
        got, which leaves out the time the operating system gave to other processes on a shared machine).
        """
        if graph_replays and (self.device.type != "cuda" or not self.replayable):
            raise ValueError(f"graph_replays={graph_replays}: expected a CUDA device and a method whose passes can be "
                             f"replayed (dense attention), got {self.device.type} and attention.kind "
                             f"{self.structure.attention_kind!r}")
        now = clock_function(clock, self.device)
        with untracked("run setup"):
            cache = self.new_cache()
            policy = Policy(self.structure, self.params, self.capacity, self.model.vocab_size,
                            int(self.params.batch), self.device, self.seed)
        result = RunResult(policy.ids, self.passes)
        self._sync()
        start = now()
        for index, ps in enumerate(self.passes):
            step = Step.of(ps)
            for instance in range(int(ps.count)):
                t0 = now()
                if graph_replays:
                    seconds, out = self._graph_pass(cache, step, policy, graph_replays)
                else:
                    with pass_section(index, instance):
                        out = forward(self.model, self.weights, cache, step, policy.inputs(step))
                with untracked("decoding policy"):
                    if out is not None:
                        policy.update(step, *out)
                self._sync()
                if not graph_replays:
                    seconds = now() - t0
                timing = PassTime(index, instance, ps.phase, seconds)
                result.times.append(timing)
                if on_pass is not None:
                    on_pass(timing)
            if ps.phase == "prefill" and hasattr(cache, "cluster"):
                t0 = now()
                with untracked("offline clustering"):
                    cache.cluster(int(self.params.prompt_len), int(self.params.kmeans_iterations))
                self._sync()
                result.offline_s += now() - t0
        result.run_s = now() - start - result.offline_s
        return result


CLOCKS = ("wall", "process")


def clock_function(clock: str, device: torch.device) -> Callable[[], float]:
    """``time.perf_counter`` for ``wall``; ``time.process_time`` for ``process``, which only a CPU running torch
    on one thread may use (the process time of several threads adds up their CPU time)."""
    if clock == "wall":
        return time.perf_counter
    if clock != "process":
        raise ValueError(f"clock={clock!r}: expected one of {', '.join(CLOCKS)}")
    if device.type != "cpu" or torch.get_num_threads() != 1:
        raise ValueError(f"clock='process' on {device.type} with {torch.get_num_threads()} torch threads: expected a "
                         "CPU running torch on one thread (perfmodel measure --threads 1)")
    return time.process_time
