"""Sweeps: predict every point of a grid (hardware variants × models × scenarios × parameters) into one table.

    grid.py        what a grid file says; its points, groups and chunks
    workload.py    a chunk's workload with the repeated passes of a phase stacked
    blocks.py      its ops as cache-sized stacks, each timed once per hardware spec
    evaluation.py  one chunk into rows (vectorised analytic engine, or predict point by point)
    table.py       chunks' rows bound into one table, in point order
    runner.py      chunks run in this process or on Dask, filed as part files, resumed, bound into a table

Every row equals what :func:`perfmodel.api.predict` returns for that point; both total a prediction with
:func:`perfmodel.aggregate.aggregate`.
"""
from __future__ import annotations

from perfmodel.sweep.grid import Grid, grid_from_dict, load_grid
from perfmodel.sweep.runner import SweepResult, evaluate, parts_dir, run_sweep

__all__ = ["Grid", "SweepResult", "evaluate", "grid_from_dict", "load_grid", "parts_dir", "run_sweep"]
