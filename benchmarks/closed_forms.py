"""Print every closed-form and paper check of perfmodel.checks; exit 1 if any fails.

    python benchmarks/closed_forms.py
"""
from __future__ import annotations

import sys

from perfmodel.checks import run_all


def main() -> int:
    checks = run_all()
    width = max(len(c.name) for c in checks)
    for c in checks:
        print(f"{'ok  ' if c.ok else 'FAIL'}  {c.name:{width}s}  expected {c.expected:14s} got {c.got:,.3f}")
    failed = sum(not c.ok for c in checks)
    print(f"{len(checks) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
