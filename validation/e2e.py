"""The end-to-end suite: whole decoding steps and whole runs of the reference implementation, timed.

A time trial over a whole course, not a sprint per stretch: each case is a model and a scenario that the
reference (:mod:`perfmodel.reference`) runs for real, pass by pass, on the package's kernels. Every pass is
timed; the rows are, per case, the mean time of one step of each phase of the run (prefill, decode step,
denoising step, block commit, cache refresh: ``op = "step"``, ``variant`` = the phase) and the time of the
whole run (``op = "run"``). ``perfmodel validate`` predicts each with :func:`perfmodel.predict` on the same
hardware spec (:mod:`perfmodel.validation.e2e_predict`): a step row against the predicted time of that phase's
passes divided by their number, like for like.

Robust timing on a shared machine: every case runs once untimed first (warm-up: allocator, caches, Triton
compilation), then ``repeats`` timed runs; the cases of one model take turns (round-robin), so that a slow
minute slows every method a little rather than one a lot; a row is the median over the repeats (its quartiles
are kept beside it). On a CPU shared with other work, ``clock="process"`` with torch on one thread times each
pass by the CPU time the process got (``time.process_time``), which leaves out the slices the operating system
gave to other processes (the source then ends in ``clock=process``). Weights are random, made once per model
and shared by its cases.

Rows carry what the prediction needs: ``scenario`` (catalog name), ``model``, ``layers``, ``phase``,
``steps`` (instances of the phase in one run), ``spec`` (the model and scenario as JSON, exactly as run),
``timing`` and the spread ``q1_s``, ``q3_s``, ``repeats``. ``timing`` is ``eager`` (wall clock around each
pass, synchronised: what a Python serving loop sees, launch gaps included) or, on CUDA with
``graph_replays``, ``graphs``: each pass captured in a CUDA graph and timed as the median of its replays
(kernels back to back), for the methods whose passes can be replayed (not the clustered ones).
"""
from __future__ import annotations

import json
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from perfmodel.specs.model import Model, load_model
from perfmodel.specs.scenario import Scenario, load_scenario

if TYPE_CHECKING:  # the runner's result type, shared with the kernel runner (validation/measure.py)
    from perfmodel.validation.measure import MeasureResult

SOURCE_PREFIX = "perfmodel-e2e"
E2E_COLUMNS = ("scenario", "model", "layers", "phase", "steps", "spec", "timing", "q1_s", "q3_s", "repeats")


@dataclass(frozen=True)
class Case:
    """One model (optionally with fewer layers) and one catalog scenario with overrides."""

    model: str
    scenario: str
    overrides: tuple[tuple[str, Any], ...] = ()
    layers: int | None = None

    @classmethod
    def make(cls, model: str, scenario: str, layers: int | None = None, **overrides: Any) -> "Case":
        return cls(model, scenario, tuple(sorted(overrides.items())), layers)

    def specs(self) -> tuple[Model, Scenario]:
        model_over = {"num_hidden_layers": self.layers} if self.layers else None
        return load_model(self.model, model_over), load_scenario(self.scenario, dict(self.overrides))

    def spec_json(self) -> str:
        model, scenario = self.specs()
        return json.dumps({"model": model.to_dict(), "scenario": scenario.to_dict()}, sort_keys=True)

    def label(self) -> str:
        shape = f"{self.model}" + (f" ({self.layers} layers)" if self.layers else "")
        over = ", ".join(f"{k}={v}" for k, v in self.overrides)
        return f"{self.scenario} on {shape}" + (f" [{over}]" if over else "")


# Shapes that run in minutes on a 2-core CPU: a real 8B layer shape with 2 layers (every matrix, the KV cache
# per layer and the LM head at full size) and a ~1B model whole.
_ARM = dict(prompt_len=128, gen_len=16)
_LONG = dict(prompt_len=512, gen_len=16)
_QUANT = dict(prompt_len=256, gen_len=16)
_DIFF = dict(prompt_len=64, gen_len=32, block_size=16, steps_per_block=4)
CPU_CASES: tuple[Case, ...] = (
    Case.make("llama-3.1-8b", "arm", 2, **_ARM),
    Case.make("llama-3.1-8b", "kv-int4", 2, **_QUANT),
    Case.make("llama-3.1-8b", "xquant", 2, **_QUANT),
    Case.make("llama-3.1-8b", "squeezed-attention", 2, **_LONG),
    Case.make("llama-3.1-8b", "multipole-attention", 2, **_LONG),
    Case.make("llada-8b", "dlm", 2, prompt_len=64, gen_len=32, steps=8),
    Case.make("llada-8b", "block-dlm", 2, **_DIFF),
    Case.make("llada-8b", "fast-dllm-prefix", 2, **_DIFF),
    Case.make("llada-8b", "fast-dllm-dual", 2, **_DIFF),
    Case.make("llama-3.2-1b", "arm", None, **_ARM),
    Case.make("llama-3.2-1b", "dlm", None, prompt_len=64, gen_len=32, steps=8),
)

# The real models on one GPU (bf16, every layer): under 8 minutes on an H100/H200 with 3 repeats.
_G_ARM = dict(prompt_len=1024, gen_len=128)
_G_LONG = dict(prompt_len=8192, gen_len=128)
_G_DIFF = dict(prompt_len=512, gen_len=256, block_size=32, steps_per_block=8)
CUDA_CASES: tuple[Case, ...] = (
    Case.make("llama-3.1-8b", "arm", None, **_G_ARM),
    Case.make("llama-3.1-8b", "kv-int4", None, **_G_ARM),
    Case.make("llama-3.1-8b", "xquant", None, **_G_ARM),
    Case.make("llama-3.1-8b", "xquant", None, **_G_ARM, **{"kv_cache.remat": "unfused"}),
    Case.make("llama-3.1-8b", "squeezed-attention", None, **_G_LONG),
    Case.make("llama-3.1-8b", "multipole-attention", None, **_G_LONG),
    Case.make("llada-8b", "dlm", None, prompt_len=512, gen_len=256, steps=64),
    Case.make("llada-8b", "block-dlm", None, **_G_DIFF),
    Case.make("llada-8b", "fast-dllm-prefix", None, **_G_DIFF),
    Case.make("llada-8b", "fast-dllm-dual", None, **_G_DIFF),
    Case.make("dream-7b", "dlm", None, prompt_len=512, gen_len=256, steps=64),
)


def suite_cases(device: str) -> tuple[Case, ...]:
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device {device!r}: expected 'cpu' or 'cuda'")
    return CPU_CASES if device == "cpu" else CUDA_CASES


def source_string(device: str, repeats: int, clock: str = "wall") -> str:
    """``perfmodel-e2e:<device>:<device name>:torch=<v>[:threads=<n>]:repeats=<r>[:clock=process]``."""
    import torch

    from perfmodel.validation import microbench as mb

    parts = [SOURCE_PREFIX, device, mb.device_name(device), f"torch={torch.__version__}"]
    if device == "cpu":
        parts.append(f"threads={torch.get_num_threads()}")
    parts.append(f"repeats={repeats}")
    if clock != "wall":
        parts.append(f"clock={clock}")
    return ":".join(parts)


def _quartiles(values: Sequence[float]) -> tuple[float, float, float]:
    if len(values) == 1:
        return values[0], values[0], values[0]
    q = statistics.quantiles(values, n=4, method="inclusive")
    return q[0], statistics.median(values), q[2]


def case_rows(case: Case, runs: list, hardware: str, source: str, *, timing: str = "eager",
              with_run: bool = True) -> list[dict[str, Any]]:
    """Measurement rows of one case from its timed runs (:class:`perfmodel.reference.RunResult`)."""
    from perfmodel.validation.table import ALL_COLUMNS

    model, scenario = case.specs()
    spec = case.spec_json()
    phases: dict[str, list[list[float]]] = {}
    for run in runs:
        per_phase: dict[str, list[float]] = {}
        for t in run.times:
            per_phase.setdefault(t.phase, []).append(t.seconds)
        for phase, times in per_phase.items():
            phases.setdefault(phase, []).append(times)
    base: dict[str, Any] = {c: None for c in ALL_COLUMNS}
    base.update(hardware=hardware, dtype=scenario.compute_dtype, source=source, batch=scenario.batch,
                scenario=scenario.name, model=case.model, layers=model.num_hidden_layers, spec=spec,
                repeats=len(runs), timing=timing)
    rows = []
    for phase, per_run in phases.items():
        means = [sum(t) / len(t) for t in per_run]
        q1, med, q3 = _quartiles(means)
        rows.append({**base, "op": "step", "variant": phase, "phase": phase, "steps": len(per_run[0]),
                     "measured_s": med, "q1_s": q1, "q3_s": q3})
    if not with_run:
        return rows
    q1, med, q3 = _quartiles([run.run_s for run in runs])
    steps = sum(len(times[0]) for times in phases.values())
    rows.append({**base, "op": "run", "variant": "", "phase": "", "steps": steps, "measured_s": med,
                 "q1_s": q1, "q3_s": q3})
    return rows


def measured_specs(path: Path, hardware: str) -> set[str]:
    """``spec`` of the cases already in the table for ``hardware`` (to resume)."""
    from perfmodel.validation.table import read_table

    if not path.is_file() or path.stat().st_size == 0:
        return set()
    df = read_table(path)
    if "spec" not in df:
        return set()
    mine = df[(df["hardware"] == hardware) & df["op"].isin(["step", "run"])]
    return set(mine["spec"].dropna().astype(str))


def measure_e2e(cases: Sequence[Case], output: str | Path, *, device: str = "cpu",
                hardware: str | Path | None = None, repeats: int = 3, warmup: int = 1, resume: bool = True,
                graph_replays: int = 0, clock: str = "wall", progress: bool = True,
                on_row: Callable[[dict[str, Any]], None] | None = None) -> MeasureResult:
    """Time ``cases`` on ``device`` and append their step and run rows to the table at ``output``; on CUDA with
    ``graph_replays`` > 0 also one run of each replayable case timed from CUDA graph replays."""
    import torch
    from tqdm import tqdm

    from perfmodel.reference import Reference, check_supported
    from perfmodel.reference.runner import TORCH_DTYPES, capacity
    from perfmodel.reference.weights import random_weights
    from perfmodel.validation import microbench as mb
    from perfmodel.validation.measure import MeasureResult, device_hardware, hardware_label
    from perfmodel.validation.table import append_rows, table_format

    mb.check_device(device)
    if repeats < 1 or warmup < 0 or graph_replays < 0:
        raise ValueError(f"repeats={repeats}, warmup={warmup}, graph_replays={graph_replays}: expected repeats >= 1, "
                         "warmup >= 0 and graph_replays >= 0")
    if graph_replays and device != "cuda":
        raise ValueError(f"graph_replays={graph_replays} on {device}: CUDA graphs need --device cuda")
    hardware = device_hardware(device, hardware, f"measure --device {device} --suite e2e")
    label = hardware_label(hardware)
    path = Path(output)
    table_format(path)
    if not resume and path.exists():
        path.unlink()
    done = measured_specs(path, label) if resume else set()
    todo = [c for c in cases if c.spec_json() not in done]
    result = MeasureResult(path, skipped=len(cases) - len(todo))
    from perfmodel.reference.runner import clock_function

    clock_function(clock, torch.device(device))  # a clock the device cannot use is refused before any run
    source = source_string(device, repeats, clock)
    by_model: dict[tuple[str, int | None], list[Case]] = {}
    for case in todo:
        by_model.setdefault((case.model, case.layers), []).append(case)
    total = sum(len(v) for v in by_model.values()) * (warmup + repeats)
    bar = tqdm(total=total, desc=f"e2e {device}", unit="run", file=sys.stderr, disable=not progress,
               dynamic_ncols=True)
    for group in by_model.values():
        specs = [c.specs() for c in group]
        for m, s in specs:
            check_supported(m, s)
        dtypes = {s.compute_dtype for _, s in specs}
        if len(dtypes) != 1:
            raise ValueError(f"cases of model {group[0].model}: expected one compute_dtype, got {sorted(dtypes)}")
        positions = max(capacity(m, s) for m, s in specs)
        weights = random_weights(specs[0][0], positions=positions, dtype=TORCH_DTYPES[dtypes.pop()], device=device)
        refs = [Reference(m, s, device=device, weights=weights) for m, s in specs]
        runs: list[list] = [[] for _ in group]
        for round_ in range(warmup + repeats):
            for i, (case, ref) in enumerate(zip(group, refs)):
                bar.set_postfix_str(case.label(), refresh=False)
                run = ref.run(clock=clock)
                if round_ >= warmup:
                    runs[i].append(run)
                bar.update(1)
        for case, ref, case_runs in zip(group, refs, runs):
            rows = case_rows(case, case_runs, label, source)
            if graph_replays and ref.replayable:
                graphed = ref.run(graph_replays=graph_replays)
                rows += case_rows(case, [graphed], label, f"{source}:graphs={graph_replays}", timing="graphs",
                                  with_run=False)
            append_rows(path, rows)
            result.rows += rows
            result.measured += 1
            for row in rows:
                if on_row is not None:
                    on_row(row)
        del refs, weights
        if device == "cuda":
            torch.cuda.empty_cache()
    bar.close()
    return result

