"""Recorded launches against the workload builder's ops, pass by pass: the proof that the reference runs what
the model counts.

An auditor with two ledgers: the recorder's (every kernel launch of every pass instance, named and sized by
the kernel's own formula from its real tensors) and the builder's (:func:`perfmodel.workload.layers.pass_ops`
of each exact pass, each op with a count per pass instance). For every instance, each op name must have as
many launches as the builder's count says, and every launch the same kind, shape, FLOPs and bytes (read,
written, re-read on chip, vector work) as the builder's op. An op of no work at all (a cache write of zero
tokens) is no launch. One convention is normalised: with one query, a causal and a bidirectional mask are the
same attention (the builder says causal, a decode kernel sees every key), so the mask is compared only for
several queries.
"""
from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

import numpy as np

from perfmodel.ops import Op
from perfmodel.workload.layers import pass_ops
from perfmodel.workload.params import Params, Structure
from perfmodel.workload.passes import Pass

REL_TOL = 1e-9


def _value(v: Any) -> Any:
    if isinstance(v, (str, bool)):
        return v
    return float(np.asarray(v, dtype=float))


def facts(op: Op) -> dict[str, Any]:
    """What two ops must agree on: kind, shape and every work figure."""
    shape = {k: _value(v) for k, v in op.shape.items()}
    if op.kind == "attention" and shape.get("q_len") == 1.0:
        shape.pop("mask", None)
    return {"kind": op.kind, "shape": shape, "flops": _value(op.flops), "read_bytes": _value(op.read_bytes),
            "write_bytes": _value(op.write_bytes), "l2_bytes": _value(op.l2_bytes),
            "vector_flops": _value(op.vector_flops)}


def _differences(got: dict[str, Any], want: dict[str, Any], prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(got) | set(want)):
        a, b = got.get(key), want.get(key)
        if isinstance(a, dict) or isinstance(b, dict):
            out += _differences(a or {}, b or {}, f"{prefix}{key}.")
        elif isinstance(a, float) and isinstance(b, float):
            if not np.isclose(a, b, rtol=REL_TOL, atol=0.0):
                out.append(f"{prefix}{key}: launched {a:g}, builder {b:g}")
        elif a != b:
            out.append(f"{prefix}{key}: launched {a!r}, builder {b!r}")
    return out


def expected_launches(s: Structure, p: Params, ps: Pass) -> dict[str, tuple[Op, float]]:
    """Builder ops of one pass instance: name → (op, launches per instance); ops of no work are left out."""
    out: dict[str, tuple[Op, float]] = {}
    for op in pass_ops(s, p, ps):
        work = [_value(op.flops), _value(op.read_bytes), _value(op.write_bytes)]
        per_instance = _value(op.count) / _value(ps.count)
        if not any(work) or per_instance == 0:
            continue
        if op.name in out:
            raise AssertionError(f"the builder lists {op.name!r} twice in one pass")
        out[op.name] = (op, per_instance)
    return out


def compare(launches: dict[tuple[int, int], list[Op]], s: Structure, p: Params, passes: list[Pass]) -> list[str]:
    """Every disagreement between the recorded launches (by (pass index, instance)) and the builder's ops of
    the exact schedule ``passes``; empty when they are the same."""
    problems: list[str] = []
    seen = set()
    for index, ps in enumerate(passes):
        want = expected_launches(s, p, ps)
        for instance in range(int(_value(ps.count))):
            seen.add((index, instance))
            got = launches.get((index, instance), [])
            where = f"pass {index} ({ps.phase}) instance {instance}"
            by_name: dict[str, list[Op]] = defaultdict(list)
            for op in got:
                by_name[op.name].append(op)
            for name in sorted(set(by_name) - set(want)):
                problems.append(f"{where}: launched {name!r} x{len(by_name[name])}, not in the builder's ops")
            for name, (op, count) in want.items():
                ran = by_name.get(name, [])
                if len(ran) != count:
                    problems.append(f"{where}: {name!r} launched {len(ran)} time(s), builder counts {count:g}")
                target = facts(op)
                distinct = Counter(repr(facts(r)) for r in ran)
                for r in ran[:1] if len(distinct) == 1 else ran:
                    problems += [f"{where}: {name}: {d}" for d in _differences(facts(r), target)]
    for key in sorted(set(launches) - seen):
        problems.append(f"launches recorded for pass {key[0]} instance {key[1]}, which the schedule does not have")
    return problems
