"""Kernel tests run Triton on the CPU through its interpreter.

Triton reads ``TRITON_INTERPRET`` when it is imported, so it is set here, at import time, before any test module
imports a kernel module (which imports triton). An explicit ``TRITON_INTERPRET=0`` in the environment is kept:
on a CUDA machine that runs the compiled kernels (tests marked cuda) and skips the interpreted ones.
"""
from __future__ import annotations

import os

os.environ.setdefault("TRITON_INTERPRET", "1")
