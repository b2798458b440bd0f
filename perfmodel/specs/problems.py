"""Validation failures in the project's own words: every problem of a spec at once, each with its field path.

pydantic reports what went wrong in its vocabulary ("Input should be greater than 0", locations with union
member names in them). This module is the interpreter between it and the user: it walks each error's location
through the spec's own field types to give the dotted path a user writes in YAML, says what was expected in plain
terms, suggests the field a misspelled name was meant to be, and reports a misspelled required field as the
misspelling (not as a missing field plus an unknown one).
"""
from __future__ import annotations

import types
import typing
from difflib import get_close_matches
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

from perfmodel.errors import MISSING, FieldProblems, Problem, describe
from perfmodel.units import expected_quantity, parse_quantity, unit_for_field

_WORDS = {
    "int_type": "an integer", "int_parsing": "an integer", "int_from_float": "a whole number",
    "float_type": "a number", "float_parsing": "a number", "finite_number": "a finite number",
    "bool_type": "true or false", "bool_parsing": "true or false",
    "string_type": "text (a string)", "dict_type": "a mapping of names to values", "list_type": "a list",
    "model_type": "a mapping of field names to values", "model_attributes_type": "a mapping of field names to values",
    "none_required": "nothing (null)", "is_instance_of": "a value of the right kind",
}


def _unwrap(ann: Any) -> Any:
    """The annotation without ``Annotated[...]`` and without ``None`` from ``X | None``."""
    while get_origin(ann) is typing.Annotated:
        ann = get_args(ann)[0]
    if get_origin(ann) in (Union, types.UnionType):
        members = [a for a in get_args(ann) if a is not type(None)]
        if len(members) == 1:
            return _unwrap(members[0])
    return ann


def _member_name(ann: Any) -> str:
    ann = _unwrap(ann)
    return getattr(ann, "__name__", str(ann))


def walk(root: type[BaseModel], loc: tuple) -> tuple[list[str], Any]:
    """The user's field path of a pydantic location, and the annotation found at its end (None when unknown).

    Union member tags (``str``, ``HardwareEntry``) and dict-key markers (``[key]``) are dropped from the path.
    """
    parts, ann, _ = _walk(root, loc)
    return parts, ann


def _is_tag(item: Any, member: Any) -> bool:
    """Whether a location item names union member ``member`` (pydantic may wrap the name in a validator tag,
    e.g. ``function-after[_check(), HardwareEntry]``)."""
    name = _member_name(member)
    return isinstance(item, str) and (item == name or item.endswith(f", {name}]"))


def _walk(root: type[BaseModel], loc: tuple) -> tuple[list[str], Any, int | None]:
    """As :func:`walk`, plus the length of the path at the last union member tag dropped (None when none)."""
    union_at = None
    parts: list[str] = []
    ann: Any = root
    i = 0
    while i < len(loc):
        item = loc[i]
        ann = _unwrap(ann)
        origin = get_origin(ann)
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            parts.append(str(item))
            info = ann.model_fields.get(str(item))
            ann = info.annotation if info is not None else None
        elif origin is dict:
            key_type, value_type = get_args(ann) or (Any, Any)
            parts.append(str(item))
            if i + 1 < len(loc) and loc[i + 1] == "[key]":
                i += 1
                ann = key_type
            else:
                ann = value_type
        elif origin in (list, tuple):
            parts.append(str(item))
            ann = (get_args(ann) or (Any,))[0]
        elif origin in (Union, types.UnionType):
            members = [a for a in get_args(ann) if a is not type(None)]
            ann = next((m for m in members if _is_tag(item, m)), None)
            if ann is None:  # not a tag after all: keep it
                parts.append(str(item))
            else:
                union_at = len(parts)
        else:
            parts.append(str(item))
            ann = None
        i += 1
    return parts, ann, union_at


def _literal_values(ann: Any) -> list[str]:
    ann = _unwrap(ann)
    return [str(v) for v in get_args(ann)] if get_origin(ann) is Literal else []


def _field_names(root: type[BaseModel], loc: tuple) -> list[str]:
    _, ann = walk(root, loc)
    ann = _unwrap(ann)
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return list(ann.model_fields)
    return []


def _suggest(word: Any, options: list[str]) -> str:
    if not isinstance(word, str) or not options:
        return ""
    close = get_close_matches(word, options, n=1, cutoff=0.7)
    return f" (did you mean {close[0]}?)" if close else ""


def _number_bound(err: dict, ann: Any) -> str:
    ctx = err.get("ctx") or {}
    words = {"greater_than": ("greater than", "gt"), "greater_than_equal": ("at least", "ge"),
             "less_than": ("less than", "lt"), "less_than_equal": ("at most", "le")}
    text, key = words[err["type"]]
    bound = ctx.get(key)
    shown = f"{bound:g}" if isinstance(bound, float) else str(bound)
    return f"{'an integer' if _unwrap(ann) is int else 'a number'} {text} {shown}"


def _expected(err: dict, path: list[str], ann: Any) -> str:
    kind = err["type"]
    value = err.get("input")
    ctx = err.get("ctx") or {}
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        return _number_bound(err, ann)
    if kind == "literal_error":
        options = _literal_values(ann)
        shown = ", ".join(options) if options else str(ctx.get("expected", "a listed value"))
        return f"one of: {shown}{_suggest(value, options)}"
    if kind in ("too_short", "too_long"):
        n = ctx.get("min_length" if kind == "too_short" else "max_length")
        return f"{'at least' if kind == 'too_short' else 'at most'} {n} item{'s' if n != 1 else ''}"
    if kind in ("value_error", "assertion_error"):
        msg = str(err.get("msg", ""))
        for prefix in ("Value error, ", "Assertion failed, "):
            if msg.startswith(prefix):
                return msg[len(prefix):]
        return msg
    dimension = unit_for_field(path[-1]) if path else None
    if dimension is None and len(path) >= 2:
        dimension = unit_for_field(path[-2])  # a value inside a per-dtype mapping such as compute.tensor_flops
    if isinstance(value, str) and dimension is not None and kind in ("float_type", "float_parsing", "int_type"):
        try:
            parse_quantity(value, dimension)
        except (ValueError, TypeError) as exc:
            return str(exc)
        return expected_quantity(dimension)
    if kind in _WORDS:
        return _WORDS[kind]
    msg = str(err.get("msg", "a valid value"))
    return msg[len("Input should be "):] if msg.startswith("Input should be ") else msg[:1].lower() + msg[1:]


def problems_from(root: type[BaseModel], exc: ValidationError) -> list[Problem]:
    """Every error of ``exc`` (raised validating ``root``) as a :class:`Problem` in the project's words.

    A value that matches no member of a union (``str | HardwareEntry``) is reported once: as the member it was
    evidently meant to be when it got past that member's type check (its errors are inside it), else as one
    problem listing what each member expects.
    """
    problems: list[Problem] = []
    missing: dict[tuple, Problem] = {}
    extra: list[tuple[tuple, str, Any]] = []
    unions: dict[str, list[tuple[bool, Problem | None]]] = {}
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])
        path, ann, union_at = _walk(root, loc)
        field = ".".join(path) or "<root>"
        kind = err["type"]
        if kind == "value_error" and isinstance((err.get("ctx") or {}).get("error"), FieldProblems):
            prefix = field + "." if path else ""
            found = [Problem(prefix + p.field, p.value, p.expected) for p in err["ctx"]["error"].problems]
        elif kind == "missing":
            found = [Problem(field, MISSING, "a value (the field is required)")]
            missing[loc] = found[0]
        elif kind == "extra_forbidden":
            extra.append((loc, field, err.get("input")))
            if union_at is not None:  # an unknown field inside a member: the value was meant as that member
                unions.setdefault(".".join(path[:union_at]), []).append((True, None))
            continue
        else:
            found = [Problem(field, err.get("input"), _expected(err, path, ann))]
        if union_at is not None:
            unions.setdefault(".".join(path[:union_at]), []).extend(
                (len(path) > union_at, p) for p in found)
        problems += found
    for key, entries in unions.items():  # one report per value that matched no member of a union
        deeper = [p for inside, p in entries if inside]
        shallow = [p for inside, p in entries if not inside]
        drop = shallow if deeper else shallow[1:]
        if not deeper and shallow:
            expected = " or ".join(dict.fromkeys(p.expected for p in shallow))
            problems[problems.index(shallow[0])] = Problem(key, shallow[0].value, expected)
        problems = [p for p in problems if not any(p is d for d in drop)]
    for loc, field, value in extra:
        options = _field_names(root, loc[:-1])
        name = str(loc[-1])
        close = get_close_matches(name, options, n=1, cutoff=0.7)
        absent = missing.get(loc[:-1] + (close[0],)) if close else None
        if absent is not None:  # a misspelled required field: one problem, named after the misspelling
            problems[problems.index(absent)] = Problem(
                field, value, f"a known field name: {describe(name)} is an unknown field; did you mean {close[0]}? "
                              f"({close[0]} is required and absent)")
            continue
        hint = f"; did you mean {close[0]}?" if close else (
            f" (fields here: {', '.join(options)})" if options and len(options) <= 12 else "")
        problems.append(Problem(field, value, f"a known field name: {describe(name)} is an unknown field{hint}"))
    return problems
