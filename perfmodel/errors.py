"""Errors raised on bad input.

A spec error is a signpost: it names the file, the field, the value found and what was expected, so that a
user can fix the YAML without reading the code.
"""
from __future__ import annotations

from typing import Any


class SpecError(ValueError):
    """A hardware, model or scenario spec (or an override of one) is invalid.

    Attributes keep the parts of the message so that callers (CLI, tests) can use them.
    """

    def __init__(self, source: str, field: str, value: Any, expected: str):
        self.source = source
        self.field = field
        self.value = value
        self.expected = expected
        shown = repr(value)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        super().__init__(f"{source}: field '{field}': got {shown}, expected {expected}")


class UnknownNameError(ValueError):
    """A catalog name that does not exist; the message lists the valid names."""

    def __init__(self, kind: str, name: str, valid: list[str]):
        self.kind = kind
        self.name = name
        self.valid = valid
        super().__init__(
            f"unknown {kind} {name!r}: expected a path to a YAML file or one of: {', '.join(valid)}"
        )
