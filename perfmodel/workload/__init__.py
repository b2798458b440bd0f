"""Workloads: a model and a scenario become the forward passes a decoding method runs, and those become ops."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from perfmodel.ops import Op
from perfmodel.specs.model import Model
from perfmodel.specs.scenario import Scenario
from perfmodel.workload import memory
from perfmodel.workload.layers import pass_ops
from perfmodel.workload.params import Params, Structure, from_specs
from perfmodel.workload.passes import Pass, build_passes


@dataclass(frozen=True)
class Workload:
    structure: Structure
    params: Params
    passes: list[Pass]
    ops: list[Op]
    weights_bytes: Any
    cache_bytes: Any
    activation_bytes: Any


def build(structure: Structure, params: Params) -> Workload:
    """Ops and memory footprint of a workload given by structure and (scalar or array) parameters."""
    passes = build_passes(structure, params)
    op_list = [op for ps in passes for op in pass_ops(structure, params, ps)]
    return Workload(structure, params, passes, op_list, memory.weight_bytes(structure, params),
                    memory.cache_bytes(structure, params), memory.activation_bytes(structure, params, passes))


def build_workload(model: Model, scenario: Scenario) -> Workload:
    structure, params = from_specs(model, scenario)
    return build(structure, params)


__all__ = ["Workload", "Pass", "Params", "Structure", "build", "build_workload", "from_specs"]
