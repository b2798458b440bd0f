"""Reading YAML with limits: every spec, review and grid file goes through :func:`read_yaml`.

A YAML file is read like a parcel through a scanner at the door: its size is checked before it is opened,
and while it is unpacked (composed) every node is counted, aliases included, so that a small file that expands
into billions of nodes (a "billion laughs" alias bomb) is refused after a bounded amount of work. Nesting depth,
the length of a string and the digits of an integer are bounded too. Only the safe loader is used: YAML tags
never construct Python objects.

The limits are far above anything a spec needs (the largest catalog file is a few kB, four levels deep):

- :data:`MAX_FILE_BYTES`: file size, checked before reading.
- :data:`MAX_DEPTH`: nesting of mappings and lists.
- :data:`MAX_NODES`: nodes of the document with every alias expanded.
- :data:`MAX_SCALAR_CHARS`: characters of one scalar (a string, a number, a key).
- :data:`MAX_INT_DIGITS`: digits of an integer literal.
"""
from __future__ import annotations

import copy
import os
import re
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, ScalarNode, SequenceNode

from perfmodel.errors import SpecError, Summary

MAX_FILE_BYTES = 1 << 20
MAX_DEPTH = 32
MAX_NODES = 100_000
MAX_SCALAR_CHARS = 10_000
MAX_INT_DIGITS = 30


class InputLimitError(yaml.YAMLError):
    """A YAML document over one of the limits of this module."""


class _Loader(yaml.SafeLoader):
    """``safe_load`` with limits while composing and YAML 1.2 floats ("1.83e9" and "3.35e12" read as numbers)."""

    def __init__(self, stream: Any):
        super().__init__(stream)
        self._depth = 0
        self._sizes: dict[int, int] = {}

    def _where(self) -> str:
        mark = getattr(self.peek_event(), "start_mark", None) if self.check_event() else None
        return f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise InputLimitError(f"nesting deeper than {MAX_DEPTH} levels{self._where()}")
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        if id(node) not in self._sizes:  # an alias returns a node already counted
            self._sizes[id(node)] = self._size(node)
        return node

    def _size(self, node: Any) -> int:
        """Nodes of ``node`` with every alias expanded (its children were counted when they were composed)."""
        if isinstance(node, ScalarNode):
            if len(node.value) > MAX_SCALAR_CHARS:
                raise InputLimitError(f"a scalar of {len(node.value):,} characters, more than {MAX_SCALAR_CHARS:,}"
                                      f"{_mark(node)}")
            return 1
        if isinstance(node, SequenceNode):
            children = node.value
        elif isinstance(node, MappingNode):
            children = [child for pair in node.value for child in pair]
        else:  # pragma: no cover - the composer builds only these three kinds
            return 1
        size = 1 + sum(self._sizes.get(id(child), 1) for child in children)
        if size > MAX_NODES:
            raise InputLimitError(f"a document that expands to more than {MAX_NODES:,} nodes (aliases included)"
                                  f"{_mark(node)}")
        return size

    def construct_yaml_int(self, node: Any) -> int:
        digits = sum(ch.isdigit() for ch in node.value)
        if digits > MAX_INT_DIGITS:
            raise InputLimitError(f"an integer of {digits:,} digits, more than {MAX_INT_DIGITS}{_mark(node)}")
        return super().construct_yaml_int(node)


def _mark(node: Any) -> str:
    mark = getattr(node, "start_mark", None)
    return f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""


_Loader.add_constructor("tag:yaml.org,2002:int", _Loader.construct_yaml_int)
_Loader.yaml_implicit_resolvers = {k: list(v) for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                    |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                    |[-+]?\.(?:inf|Inf|INF)
                    |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."),
)


def safe_load(text: str) -> Any:
    """Load YAML text with the safe loader and the limits of this module; raises ``yaml.YAMLError``
    (:class:`InputLimitError` for a document over a limit)."""
    if len(text) > MAX_FILE_BYTES:
        raise InputLimitError(f"a document of {len(text):,} characters, more than {MAX_FILE_BYTES:,}")
    loader = _Loader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


# Documents parsed so far, by their text: a sweep, a report or a validation reads the same few spec files many
# times. Callers get a copy of the cached data, so that none sees another's changes.
_PARSED: dict[str, Any] = {}
_PARSED_MAX = 256


def _parsed(text: str) -> Any:
    """:func:`safe_load` of ``text``, parsed once per distinct text (errors are raised again each time)."""
    if text not in _PARSED:
        data = safe_load(text)
        if len(_PARSED) >= _PARSED_MAX:
            _PARSED.clear()
        _PARSED[text] = data
    return _PARSED[text]


def read_yaml(path: str | os.PathLike) -> Any:
    """The data of a YAML file, or a :class:`SpecError` naming the file and what is wrong with it."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise SpecError(str(path), "<file>", Summary(f"{size:,} bytes"),
                            f"a YAML file of at most {MAX_FILE_BYTES:,} bytes")
        with open(path, "rb") as fh:
            raw = fh.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise SpecError(str(path), "<file>", str(path), f"a readable file ({exc.strerror or exc})") from None
    if len(raw) > MAX_FILE_BYTES:
        raise SpecError(str(path), "<file>", Summary(f"over {MAX_FILE_BYTES:,} bytes"),
                        f"a YAML file of at most {MAX_FILE_BYTES:,} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        bad = exc.object[exc.start:exc.start + 1]
        raise SpecError(str(path), "<file>", Summary(f"byte {bad!r} at offset {exc.start}"), "UTF-8 text") from None
    try:
        return copy.deepcopy(_parsed(text))
    except InputLimitError as exc:
        raise SpecError(str(path), "<yaml>", Summary("a document over the input limits"),
                        f"a YAML file within them: {exc}") from None
    except yaml.YAMLError as exc:
        raise SpecError(str(path), "<yaml>", Summary("text that does not parse"),
                        "valid YAML (" + " ".join(str(exc).split()) + ")") from None
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:  # e.g. a date such as 2024-13-45
        raise SpecError(str(path), "<yaml>", Summary("a value YAML cannot construct"),
                        f"valid YAML values ({type(exc).__name__}: {str(exc)[:200]})") from None
