"""The recorder: every kernel launch of a reference run, with its op kind, name and shape.

Like a flight recorder wired into every instrument: each kernel wrapper of :mod:`perfmodel.kernels` reports
the ops it performs (:func:`perfmodel.kernels._common.kernel_launch`), the reference names each call site
(:func:`named`, ``layer.qkv_proj``, the workload builder's names) and marks where each forward pass starts
(:func:`pass_section`); the recorder keeps them in order. With ``strict=True`` it also watches every torch
operation (a ``TorchDispatchMode``) and lists those that do work outside any kernel wrapper: a reference whose
launches are the op list must not compute anything else, except the decoding policy's small bookkeeping,
which runs inside :func:`untracked` and is listed apart.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field, replace
from typing import Any, Iterator

from perfmodel.ops import Op

_ACTIVE: list["Recorder"] = []
_NAMES: list[tuple[str, ...]] = []
_UNTRACKED: list[str] = []

# torch operations that only make views, read metadata or allocate: no kernel launch.
NO_WORK = frozenset({
    "view", "_unsafe_view", "slice", "select", "permute", "transpose", "expand", "unsqueeze", "squeeze", "t",
    "as_strided", "alias", "detach", "split", "split_with_sizes", "chunk", "unbind", "empty", "empty_like",
    "empty_strided", "lift_fresh", "reshape", "narrow", "diagonal", "unfold", "_reshape_alias", "sym_size",
    "sym_stride", "sym_numel", "sym_storage_offset", "is_contiguous", "_local_scalar_dense", "set_",
    "resize_", "new_empty", "new_empty_strided", "dim", "size", "stride", "numel", "view_as_real",
    "view_as_complex", "_to_copy_noop",
})


@dataclass(frozen=True)
class Launch:
    """One reported part of a kernel launch, in order: the pass it belongs to (index and instance), the op, and
    the host time of the whole launch (on its first part; 0 on the others of a fused kernel)."""

    pass_index: int
    instance: int
    op: Op
    seconds: float = 0.0


@dataclass
class Recorder:
    """Collects :class:`Launch` records while active (``with Recorder() as rec:``); ``clock`` (e.g.
    ``time.process_time``) times the launches instead of ``time.perf_counter``."""

    strict: bool = False
    clock: Any = None
    launches: list[Launch] = field(default_factory=list)
    outside: list[str] = field(default_factory=list)
    untracked_ops: dict[str, int] = field(default_factory=dict)
    _pass: tuple[int, int] = (-1, 0)
    _mode: Any = None

    def __enter__(self) -> "Recorder":
        from perfmodel.kernels import _common

        _common.listen(self._heard)
        _ACTIVE.append(self)
        self._previous_clock = _common.set_clock(self.clock) if self.clock is not None else None
        if self.strict:
            self._mode = _watcher(self)
            self._mode.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        from perfmodel.kernels import _common

        if self._mode is not None:
            self._mode.__exit__(*exc)
            self._mode = None
        if self._previous_clock is not None:
            _common.set_clock(self._previous_clock)
        _ACTIVE.remove(self)
        _common.unlisten(self._heard)

    def _heard(self, parts: list[Op], seconds: float) -> None:
        names = _NAMES[-1] if _NAMES else tuple(op.name for op in parts)
        if len(names) != len(parts):
            raise AssertionError(f"a launch of {len(parts)} part(s) ({', '.join(op.name for op in parts)}) named "
                                 f"{names!r}: expected one name per part")
        for i, (name, op) in enumerate(zip(names, parts)):
            self.launches.append(Launch(*self._pass, replace(op, name=name), seconds if i == 0 else 0.0))

    def by_pass(self) -> dict[tuple[int, int], list[Op]]:
        """Launches grouped by (pass index, instance), in order."""
        out: dict[tuple[int, int], list[Op]] = {}
        for launch in self.launches:
            out.setdefault((launch.pass_index, launch.instance), []).append(launch.op)
        return out


@contextlib.contextmanager
def named(*names: str) -> Iterator[None]:
    """Name the launch made inside (one name per part of a fused kernel's report)."""
    _NAMES.append(names)
    try:
        yield
    finally:
        _NAMES.pop()


@contextlib.contextmanager
def pass_section(index: int, instance: int) -> Iterator[None]:
    """Launches made inside belong to instance ``instance`` of pass ``index`` of the schedule."""
    saved = [rec._pass for rec in _ACTIVE]
    for rec in _ACTIVE:
        rec._pass = (index, instance)
    try:
        yield
    finally:
        for rec, old in zip(_ACTIVE, saved):
            rec._pass = old


@contextlib.contextmanager
def untracked(reason: str) -> Iterator[None]:
    """Small host-side work that is no kernel of the model (the decoding policy): counted apart, by reason."""
    _UNTRACKED.append(reason)
    try:
        yield
    finally:
        _UNTRACKED.pop()


def _watcher(rec: Recorder):
    """A dispatch mode listing the torch operations that do work outside any kernel wrapper."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from perfmodel.kernels._common import inside_kernel

    class Watcher(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            name = func.overloadpacket.__name__
            if not inside_kernel() and name not in NO_WORK:
                if _UNTRACKED:
                    rec.untracked_ops[_UNTRACKED[-1]] = rec.untracked_ops.get(_UNTRACKED[-1], 0) + 1
                else:
                    rec.outside.append(name)
            return func(*args, **(kwargs or {}))

    return Watcher()
