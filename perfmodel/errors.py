"""Errors raised on bad input.

A spec error is a signpost: it names the file, the field, the value found and what was expected, so that a
user can fix the YAML without reading the code. When a file has several mistakes the error lists all of them,
one line each, so that one round of editing fixes the file.

Values are shown by :func:`describe`, which looks at a bounded part of a value only: a YAML alias bomb expands
to a structure with billions of leaves, and printing it whole would never finish.
"""
from __future__ import annotations

import reprlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


class _Missing:
    """The value of a field that is absent (distinct from an explicit null)."""

    def __repr__(self) -> str:
        return "<missing>"


MISSING: Any = _Missing()


class Summary(str):
    """Text that stands for a value too large or too odd to show (e.g. "1,234,567 bytes"); shown as is."""

_SHOWN_CHARS = 80
_repr = reprlib.Repr()
_repr.maxlevel = 2
_repr.maxdict = _repr.maxlist = _repr.maxtuple = _repr.maxset = 4
_repr.maxstring = _repr.maxother = 60
_repr.maxlong = 40


def describe(value: Any) -> str:
    """A short, bounded description of ``value`` for an error message.

    Scalars are shown as written (long text and huge numbers shortened, with their size); containers by their
    first few items and their size. The cost is bounded whatever the value: at most a few dozen items are looked at.
    """
    if value is MISSING:
        return "nothing (the field is absent)"
    if isinstance(value, Summary):
        return str(value)
    if isinstance(value, bool) or value is None:
        return repr(value)
    if isinstance(value, int):
        digits = len(str(abs(value))) if value.bit_length() < 4000 else None
        if digits is None or digits > 30:
            return f"an integer of about {int(value.bit_length() * 0.30103) + 1} digits"
        return repr(value)
    if isinstance(value, str):
        if len(value) > _SHOWN_CHARS:
            return f"{value[:40]!r}... (a string of {len(value):,} characters)"
        return repr(value)
    if isinstance(value, dict):
        return f"{_bounded(value)} (a mapping of {len(value):,} keys)" if len(value) > 4 else _bounded(value)
    if isinstance(value, (list, tuple)):
        return f"{_bounded(value)} (a list of {len(value):,} items)" if len(value) > 4 else _bounded(value)
    return _bounded(value)


def _bounded(value: Any) -> str:
    try:
        shown = _repr.repr(value)
    except Exception:  # an object whose repr fails: say what it is
        shown = f"<{type(value).__name__}>"
    if len(shown) > _SHOWN_CHARS:
        shown = shown[:_SHOWN_CHARS - 3] + "..."
    return shown


@dataclass(frozen=True)
class Problem:
    """One mistake in a spec: the field's dotted path, the value found and what was expected."""

    field: str
    value: Any
    expected: str

    def text(self) -> str:
        return f"field '{self.field}': got {describe(self.value)}, expected {self.expected}"


class FieldProblems(ValueError):
    """Raised by a spec's own cross-field checks: problems whose ``field`` is a dotted path inside the spec
    checked, so that the message points at the field (not at the whole spec)."""

    def __init__(self, problems: Sequence[Problem]):
        self.problems = list(problems)
        super().__init__("; ".join(p.text() for p in self.problems))


class SpecError(ValueError):
    """A hardware, model or scenario spec (or an override of one) is invalid.

    Attributes keep the parts of the message so that callers (CLI, tests) can use them: ``field``, ``value`` and
    ``expected`` describe the first problem, ``problems`` lists every one found.
    """

    def __init__(self, source: str, field: str, value: Any, expected: str, *, more: Sequence[Problem] = ()):
        self.source = source
        self.field = field
        self.value = value
        self.expected = expected
        self.problems: list[Problem] = [Problem(field, value, expected), *more]
        if len(self.problems) == 1:
            message = f"{source}: {self.problems[0].text()}"
        else:
            message = f"{source}: {len(self.problems)} problems:" + "".join(
                f"\n  - {p.text()}" for p in self.problems)
        super().__init__(message)

    @classmethod
    def from_problems(cls, source: str, problems: Sequence[Problem]) -> "SpecError":
        first, *rest = problems
        return cls(source, first.field, first.value, first.expected, more=rest)


class UnknownNameError(ValueError):
    """A catalog name that does not exist; the message lists the valid names."""

    def __init__(self, kind: str, name: str, valid: list[str]):
        self.kind = kind
        self.name = name
        self.valid = valid
        from difflib import get_close_matches

        close = get_close_matches(str(name), valid, n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]}?)" if close else ""
        super().__init__(
            f"unknown {kind} {describe(name)}{hint}: expected a path to a YAML file or one of: {', '.join(valid)}"
        )
