"""Fuzz the spec loaders and ``predict`` with mutated specs and ``--set`` overrides; print what came back.

Each case starts from a catalog spec (hardware, model or scenario) and applies one class of mutation: a hostile
value in a field, a deleted, misspelled or unknown field, a group replaced by a scalar, a unit string (of the
field's dimension, of another dimension, or outside the grammar: expressions, powers, containers, emoji,
percent, 100 kB), a YAML document over a limit (alias bomb, deep nesting, huge integer, long scalar, big file,
bad UTF-8, a Python tag), or a ``--set`` override (hostile value, misspelled, unknown or absurdly deep key). The
case then runs ``perfmodel.api.predict`` (the CLI's path) and is classified:

- answered: a prediction came back; its latency and throughput must be finite and positive, and a unit string
  of the field's own dimension must have been read to the value an independent table here gives;
- rejected: a ``ValueError`` (SpecError, UnknownNameError); it must name a field (and we count how often the
  mutated one);
- traceback: any other exception; slow: more than ``--limit`` seconds (2 by default).

Usage: ``python benchmarks/fuzz_specs.py [--n 10000] [--seed 0] [--json]``. The counts the issue asks for are
tracebacks 0, slow 0, rejections without a field 0, out-of-dimension unit strings accepted 0.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import random
import signal
import sys
import tempfile
import time
import warnings
from collections import Counter
from pathlib import Path

import yaml

from perfmodel.api import predict
from perfmodel.errors import SpecError
from perfmodel.specs.base import catalog_dir
from perfmodel.specs.hardware import load_hardware
from perfmodel.specs.model import load_model
from perfmodel.specs.scenario import load_scenario

BASES = {"hardware": ["h100-sxm", "a100-sxm-80gb", "mi300x", "cpu-generic"], "models": ["llama-3.1-8b", "llada-8b"],
         "scenarios": ["arm", "block-dlm", "xquant", "squeezed-attention"]}
LOADERS = {"hardware": load_hardware, "models": load_model, "scenarios": load_scenario}
PREFIX = {"hardware": "hardware.", "models": "model.", "scenarios": ""}
HOSTILE = [None, True, False, 0, -1, -1e-300, 1e-300, 1e300, 10**25, 2**31, 2**63, float("nan"), float("inf"),
           "", "x", "💥", "1" * 1000, [], [1, 2], {}, {"a": 1}, "0x10", "1e999", "NaN", "null", 3.5, 2**31 - 1,
           "<script>alert(1)</script>", "../../etc/passwd"]

# An oracle written apart from perfmodel.units: prefixes and units per dimension, in SI.
_SI = {"": 1.0, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15}
_BIN = {"Ki": 2.0**10, "Mi": 2.0**20, "Gi": 2.0**30, "Ti": 2.0**40}
ORACLE = {
    "data size": {**{f"{p}B": f for p, f in {**_SI, **_BIN}.items()}, **{f"{p}bit": f / 8 for p, f in _SI.items()}},
    "data rate": {**{f"{p}B/s": f for p, f in {**_SI, **_BIN}.items()}, **{f"{p}b/s": f / 8 for p, f in _SI.items()
                                                                           if p}},
    "compute rate": {**{f"{p}FLOP/s": f for p, f in _SI.items()}, **{f"{p}FLOPS": f for p, f in _SI.items()}},
    "frequency": {f"{p}Hz": f for p, f in _SI.items()},
    "time": {"s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9},
    "power": {"W": 1.0, "kW": 1e3},
}
DIMENSION = [("_bytes_per_s", "data rate"), ("_bytes", "data size"), ("_flops", "compute rate"),
             ("_hz", "frequency"), ("_s", "time"), ("_w", "power")]
BAD_GRAMMAR = ["9**9**9 B", "[1,2] B", "{} B", "💥 GB", "1" * 100_000 + " B", "2*40 GB", "(80) GB", "80 GB + 1 GB",
               "80 GB/s/s", "eval('1')", "__import__('os')", "1e99999 B", "nan GB", "inf B", "80 G B", " ", "GB",
               "100 %", "5 furlongs", "80 gb", "1,000 GB", "0x50 GB", "80 GB\n80 GB"]


def dimension_of(key: str) -> str | None:
    if key.endswith("_per_s") and not key.endswith("_bytes_per_s"):
        return None  # an event rate: the oracle has no table for it
    return next((d for suffix, d in DIMENSION if key.endswith(suffix)), None)


def paths(data, prefix=()):
    for k, v in data.items():
        yield prefix + (k,), v
        if isinstance(v, dict):
            yield from paths(v, prefix + (k,))


def typo(word: str, rng: random.Random) -> str:
    if len(word) < 3:
        return word + "x"
    i = rng.randrange(len(word) - 1)
    return rng.choice([word[:i] + word[i + 1:], word[:i] + word[i + 1] + word[i] + word[i + 2:],
                       word[:i] + "x" + word[i:]])


def unit_string(dimension: str, rng: random.Random) -> tuple[str, float]:
    unit, factor = rng.choice(list(ORACLE[dimension].items()))
    number = rng.choice(["80", "3.35", "1e3", "0.5", "989", "1.98", "2e-3", "700"])
    return f"{number}{rng.choice(['', ' '])}{unit}", float(number) * factor


def yaml_bomb(kind: str, rng: random.Random) -> str:
    if kind == "alias bomb":
        levels = rng.randint(4, 9)
        lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
        lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, levels + 1)]
        return "\n".join(lines) + f"\nname: *a{levels}\n"
    if kind == "deep nesting":
        depth = rng.choice([40, 500, 1500, 5000])
        return "name: " + "[" * depth + "]" * depth + "\n"
    if kind == "huge integer":
        return f"hidden_size: {'9' * rng.choice([31, 400, 5000])}\n"
    if kind == "long scalar":
        return f"name: '{'x' * rng.choice([10_001, 200_000])}'\n"
    if kind == "big file":
        return "# " + "x" * (1 << 20) + "\n"
    if kind == "python tag":
        return "!!python/object/apply:os.system ['echo pwned']\n"
    if kind == "merge bomb":
        lines = ["b0: &b0 {k0: 1, k1: 2}"] + [f"b{i}: &b{i} {{<<: [" + ", ".join([f"*b{i - 1}"] * 8) + "]}"
                                                for i in range(1, 8)]
        return "\n".join(lines) + "\nname: x\n"
    return "name: 2024-13-45\nhidden_size: [unclosed\n"


class Case:
    """One mutated input: which spec, what was done, the file or overrides, and what a correct answer is."""

    def __init__(self, kind: str, base: str, klass: str, field: str = "", file_text: str | bytes | None = None,
                 overrides: dict | None = None, expect_value: float | None = None, must_reject: bool = False):
        self.kind, self.base, self.klass, self.field = kind, base, klass, field
        self.file_text, self.overrides = file_text, overrides or {}
        self.expect_value, self.must_reject = expect_value, must_reject


def make_case(rng: random.Random) -> Case:
    kind = rng.choice(list(BASES))
    base = rng.choice(BASES[kind])
    data = yaml.safe_load((catalog_dir(kind) / f"{base}.yaml").read_text())
    leaves = [(p, v) for p, v in paths(data)]
    klass = rng.choice(["hostile value", "delete", "misspell", "unknown field", "group to scalar", "unit string",
                        "unit string", "wrong dimension", "bad unit grammar", "yaml", "override", "override",
                        "override unit", "override key"])
    path, value = rng.choice(leaves)
    field = ".".join(map(str, path))
    mutated = copy.deepcopy(data)
    node = mutated
    for p in path[:-1]:
        node = node[p]
    last = path[-1]
    dim_leaves = [(p, v) for p, v in leaves if dimension_of(str(p[-1])) and not isinstance(v, dict)]
    if klass == "yaml":
        sub = rng.choice(["alias bomb", "deep nesting", "huge integer", "long scalar", "big file", "python tag",
                          "merge bomb", "syntax"])
        text = yaml_bomb(sub, rng)
        return Case(kind, base, f"yaml: {sub}", "<file>", text if rng.random() < 0.9 else b"name: \xff\xfe\n")
    if klass.startswith("override"):
        prefix = PREFIX[kind]
        if klass == "override key":
            choice = rng.choice(["typo", "deep", "empty part", "unknown"])
            key = {"typo": typo(field, rng), "deep": ".".join(["a"] * rng.choice([33, 1500])),
                   "empty part": field + "..x", "unknown": field + ".bogus"}[choice]
            return Case(kind, base, f"override key: {choice}", prefix + key, overrides={prefix + key: "1"})
        if klass == "override unit" and dim_leaves:
            path, _ = rng.choice(dim_leaves)
            text, expect = unit_string(dimension_of(str(path[-1])), rng)
            key = prefix + ".".join(map(str, path))
            return Case(kind, base, "override unit", key, overrides={key: text}, expect_value=expect)
        raw = rng.choice(HOSTILE + BAD_GRAMMAR[:6])
        key = prefix + field
        return Case(kind, base, "override value", key, overrides={key: str(raw)})
    if klass == "hostile value":
        node[last] = rng.choice(HOSTILE)
    elif klass == "delete":
        node.pop(last)
    elif klass == "misspell":
        new = typo(str(last), rng)
        node[new] = node.pop(last)
        field = ".".join(map(str, path[:-1] + (new,)))
    elif klass == "unknown field":
        node[f"{last}_extra"] = 1
        field = ".".join(map(str, path[:-1] + (f"{last}_extra",)))
    elif klass == "group to scalar":
        groups = [(p, v) for p, v in leaves if isinstance(v, dict)] or [(path, value)]
        path, _ = rng.choice(groups)
        field = ".".join(map(str, path))
        node = mutated
        for p in path[:-1]:
            node = node[p]
        node[path[-1]] = rng.choice([3, "x", [1], None])
    elif klass in ("unit string", "wrong dimension", "bad unit grammar") and dim_leaves:
        path, _ = rng.choice(dim_leaves)
        field = ".".join(map(str, path))
        node = mutated
        for p in path[:-1]:
            node = node[p]
        dimension = dimension_of(str(path[-1]))
        if klass == "unit string":
            node[path[-1]], expect = unit_string(dimension, rng)
            return Case(kind, base, klass, field, yaml.safe_dump(mutated, allow_unicode=True, sort_keys=False), expect_value=expect)
        if klass == "wrong dimension":
            other = rng.choice([d for d in ORACLE if d != dimension])
            node[path[-1]] = unit_string(other, rng)[0]
        else:
            node[path[-1]] = rng.choice(BAD_GRAMMAR)
        return Case(kind, base, klass, field, yaml.safe_dump(mutated, allow_unicode=True, sort_keys=False), must_reject=True)
    else:
        node[last] = rng.choice(HOSTILE)
        klass = "hostile value"
    return Case(kind, base, klass, field, yaml.safe_dump(mutated, allow_unicode=True, sort_keys=False))


class TooSlow(Exception):
    pass


def _alarm(signum, frame):
    raise TooSlow


def run_case(case: Case, folder: Path, hard_limit: float) -> tuple[str, float, str]:
    """(outcome, seconds, detail) of one case."""
    specs = {"hardware": "h100-sxm", "models": "llama-3.1-8b", "scenarios": "arm"}
    specs[case.kind] = case.base
    if case.file_text is not None:
        path = folder / f"{case.kind}.yaml"
        path.write_bytes(case.file_text if isinstance(case.file_text, bytes) else case.file_text.encode())
        specs[case.kind] = str(path)
    signal.setitimer(signal.ITIMER_REAL, hard_limit)
    start = time.perf_counter()
    try:
        pred = predict(specs["hardware"], specs["models"], specs["scenarios"], case.overrides)
        s = pred.summary
        if not (math.isfinite(s["latency_s"]) and s["latency_s"] > 0 and math.isfinite(s["tokens_per_s"])):
            return "non-finite answer", time.perf_counter() - start, f"latency {s['latency_s']}"
        if case.must_reject:
            return "out-of-dimension accepted", time.perf_counter() - start, case.field
        if case.expect_value is not None:
            loaded = LOADERS[case.kind](specs[case.kind], {k[len(PREFIX[case.kind]):]: v
                                                           for k, v in case.overrides.items()})
            got = loaded.model_dump()
            for part in case.field[len(PREFIX[case.kind]) if case.overrides else 0:].split("."):
                got = got[part]
            if not math.isclose(got, case.expect_value, rel_tol=1e-9):
                return "unit read wrong", time.perf_counter() - start, f"{case.field}: {got} != {case.expect_value}"
        return "answered", time.perf_counter() - start, ""
    except TooSlow:
        return "slow", time.perf_counter() - start, case.klass
    except ValueError as exc:
        fields = [p.field for p in exc.problems] if isinstance(exc, SpecError) else []
        named = bool(fields) and all(f and f != "<root>" for f in fields)
        if not isinstance(exc, SpecError):
            named = "unknown" in str(exc)  # UnknownNameError names the catalog entry instead of a field
        mutated = case.field.removeprefix(PREFIX[case.kind]) if case.overrides else case.field
        hit = bool(mutated) and any(
            mutated == f or mutated.startswith(f + ".") or f.startswith(mutated + ".") or f.endswith("." + mutated)
            or (mutated == "<file>" and f in ("<file>", "<yaml>")) or (len(mutated) > 80 and f[:30] == mutated[:30])
            for f in fields)
        outcome = "rejected, mutated field named" if hit else "rejected, a field named" if named else \
            "rejected, no field named"
        return outcome, time.perf_counter() - start, str(exc)[:200]
    except Exception as exc:  # noqa: BLE001 - a traceback is what is being counted
        return "traceback", time.perf_counter() - start, f"{case.klass} {case.field}: {type(exc).__name__}: {exc}"[:300]
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000, help="cases (default 10000)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--limit", type=float, default=2.0, help="seconds an answer may take (default 2)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    rng = random.Random(args.seed)
    signal.signal(signal.SIGALRM, _alarm)
    outcomes, classes, examples = Counter(), Counter(), {}
    slowest, slow = 0.0, 0
    unit_cases = Counter()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(args.n):
            case = make_case(rng)
            outcome, seconds, detail = run_case(case, Path(tmp), max(10.0, 5 * args.limit))
            slowest = max(slowest, seconds)
            slow += seconds > args.limit
            outcomes[outcome] += 1
            classes[(case.klass, outcome)] += 1
            verdict = "answered" if outcome == "answered" else "rejected" if outcome.startswith("rejected") else outcome
            if case.must_reject:
                unit_cases[f"unit strings of another dimension or outside the grammar: {verdict}"] += 1
            if case.expect_value is not None:
                unit_cases[f"unit strings of the field's dimension: {verdict}"] += 1
            if outcome in ("traceback", "slow", "non-finite answer", "out-of-dimension accepted", "unit read wrong",
                           "rejected, no field named"):
                examples.setdefault(outcome, []).append(detail)
    rejected = sum(v for k, v in outcomes.items() if k.startswith("rejected"))
    report = {
        "cases": args.n, "seed": args.seed, "seconds": round(time.perf_counter() - start, 1),
        "answered": outcomes["answered"], "rejected": rejected,
        "rejected_naming_a_field": rejected - outcomes["rejected, no field named"],
        "rejected_naming_the_mutated_field": outcomes["rejected, mutated field named"],
        "tracebacks": outcomes["traceback"], "slower_than_limit": slow, "limit_s": args.limit,
        "slowest_s": round(slowest, 3), "non_finite_answers": outcomes["non-finite answer"],
        "out_of_dimension_unit_strings_accepted": outcomes["out-of-dimension accepted"],
        "unit_strings_read_wrong": outcomes["unit read wrong"], "unit_cases": dict(unit_cases),
        "by_class": {f"{k} -> {o}": v for (k, o), v in sorted(classes.items())},
        "examples": {k: v[:5] for k, v in examples.items()},
    }
    if args.json:
        json.dump(report, sys.stdout, indent=2)
        print()
    else:
        print(f"fuzz_specs: {args.n} cases (seed {args.seed}) in {report['seconds']} s")
        for key in ("answered", "rejected", "rejected_naming_a_field", "rejected_naming_the_mutated_field",
                    "tracebacks", "slower_than_limit", "slowest_s", "non_finite_answers",
                    "out_of_dimension_unit_strings_accepted", "unit_strings_read_wrong"):
            print(f"  {key:40s} {report[key]}")
        for key, value in sorted(unit_cases.items()):
            print(f"  {key:40s} {value}")
        for outcome, details in report["examples"].items():
            print(f"  e.g. {outcome}: " + " | ".join(details[:3]))
    bad = (report["tracebacks"] + slow + report["non_finite_answers"] + report["out_of_dimension_unit_strings_accepted"]
           + report["unit_strings_read_wrong"] + outcomes["rejected, no field named"])
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
