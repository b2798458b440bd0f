"""One forward pass of the schedule as plain integers: where its tokens sit and what it attends to.

A work order for one pass, read off the workload builder's :class:`perfmodel.workload.passes.Pass` (an exact
schedule's pass, every field a whole number): compute ``tokens`` positions from ``start`` on, attend to
positions 0..context−1 (the computed ones fresh, the others from the cache), commit ``append`` tokens, and
produce logits for the last ``logits`` computed positions.
"""
from __future__ import annotations

from dataclasses import dataclass

from perfmodel.workload.passes import Pass


@dataclass(frozen=True)
class Step:
    phase: str
    tokens: int
    start: int
    context: int
    cached: int
    append: int
    logits: int
    mask: str

    @classmethod
    def of(cls, ps: Pass) -> "Step":
        def whole(name: str, value) -> int:
            if float(value) != int(value):
                raise ValueError(f"pass {ps.phase}: {name}={value!r}, expected a whole number (an exact schedule)")
            return int(value)

        return cls(ps.phase, whole("tokens", ps.tokens), whole("start", ps.first), whole("context", ps.context),
                   whole("cached", ps.cached), whole("append", ps.append), whole("logits", ps.logits), ps.mask)

    @property
    def end(self) -> int:
        """One past the last computed position."""
        return self.start + self.tokens
