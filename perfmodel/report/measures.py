"""Quantities the report reads off a Prediction: the ops of one step, time per step by op class, attention cost.

A Prediction lists op groups per phase, with the growing-context steps of a phase grouped into segments (see
``perfmodel.workload.passes``). Every function here only sums or selects rows of ``Prediction.ops`` and divides by
``summary["steps"]``: no number is made up on the way.
"""
from __future__ import annotations

import pandas as pd

from perfmodel.prediction import Prediction
from perfmodel.report.context import PREFILL
from perfmodel.report.style import OP_CLASSES, op_class

ATTENTION_KINDS = OP_CLASSES["attention"]


def generation_ops(pred: Prediction) -> pd.DataFrame:
    """Rows of every generation phase (all phases but the prefill): they add up to ``decode_s``."""
    return pred.ops[pred.ops.phase != PREFILL]


def main_phase(pred: Prediction) -> str:
    """The generation phase that takes the most time (decode for ARM, denoise for diffusion methods)."""
    gen = generation_ops(pred)
    if gen.empty:
        return PREFILL
    return str(gen.groupby("phase").total_time_s.sum().idxmax())


def step_ops(pred: Prediction) -> pd.DataFrame:
    """The ops of one representative step: each op of the main phase at its middle segment (median context)."""
    rows = pred.ops[pred.ops.phase == main_phase(pred)]
    occurrence = rows.groupby("name").cumcount()
    middle = rows.groupby("name").name.transform("size").sub(1).floordiv(2)
    return rows[occurrence == middle]


def per_step_by_class(pred: Prediction) -> dict[str, float]:
    """Generation time per step (s) by op class; the classes add up to ``time_per_step_s``."""
    gen = generation_ops(pred)
    steps = pred.summary["steps"] or 1.0
    by_kind = gen.groupby("kind").total_time_s.sum()
    out = {cls: 0.0 for cls in OP_CLASSES}
    for kind, seconds in by_kind.items():
        out[op_class(str(kind))] += float(seconds) / steps
    return out


def step_work(pred: Prediction, level: str) -> tuple[float, float]:
    """(FLOPs, bytes at memory ``level``) of the generation phases per step."""
    gen = generation_ops(pred)
    steps = pred.summary["steps"] or 1.0
    flops = float((gen.flops * gen["count"]).sum()) / steps
    col = f"bytes_{level}"
    nbytes = float((gen[col] * gen["count"]).sum()) / steps if col in gen else float("nan")
    return flops, nbytes


def attention_per_step(pred: Prediction, level: str) -> tuple[float, float]:
    """(seconds, bytes at memory ``level``) per generation step of the attention-class ops
    (attention, centroid lookup, top-k, gathers)."""
    gen = generation_ops(pred)
    att = gen[gen.kind.isin(ATTENTION_KINDS)]
    steps = pred.summary["steps"] or 1.0
    col = f"bytes_{level}"
    return float(att.total_time_s.sum()) / steps, float((att[col] * att["count"]).sum()) / steps


def cache_bytes_per_token(pred: Prediction) -> float:
    """Cache bytes per cached token of one sequence (all layers): cache / (batch × (prompt + generated))."""
    c = pred.summary["context"]
    return pred.summary["memory"]["cache_bytes"] / (c["batch"] * (c["prompt_len"] + c["gen_len"]))
