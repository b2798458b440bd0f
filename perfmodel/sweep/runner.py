"""Running a sweep: every point of a grid (hardware variants × models × scenarios × parameters) into one table.

Like a print shop with a job ticket per sheet: the grid is cut into chunks, each chunk is printed (evaluated)
and filed as its own part file under ``<output>.parts/`` named by the hash of its points; when every part is
filed they are bound into the output table. A sweep that is interrupted finds its filed parts on the next run
and prints only the missing ones.

The analytic engine evaluates a chunk as arrays in this process (see :mod:`perfmodel.sweep.evaluation`); the event
engine, and analytic grids above ``DASK_THRESHOLD`` points, run their chunks as Dask tasks on a local cluster or
on the scheduler given. Every row equals what :func:`perfmodel.api.predict` returns for that point. In memory
(:func:`evaluate`) the chunks' rows are bound into the table once, at the end (:mod:`perfmodel.sweep.table`).
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import pandas as pd

from perfmodel.aggregate import METRICS
from perfmodel.sweep.evaluation import Memo, chunk_rows, evaluate_chunk
from perfmodel.sweep.grid import Chunk, Grid, chunks, grid_from_dict, load_grid
from perfmodel.sweep.table import BOUND_PREFIX, CONTEXT, bind

ENGINES = ("analytic", "event")
DEFAULT_CHUNK = {"analytic": 20_000, "event": 8}
DASK_THRESHOLD = 5_000_000
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class SweepResult:
    """What a sweep did: the table, where it was written, and how much of it a previous run had done."""

    table: pd.DataFrame
    output: Path | None
    points: int
    chunks: int
    resumed_chunks: int
    resumed_points: int
    used_dask: bool


def parts_dir(output: str | Path) -> Path:
    """Folder holding the part files of a sweep written to ``output``."""
    return Path(f"{output}.parts")


def order_columns(df: pd.DataFrame, grid: Grid) -> pd.DataFrame:
    """Rows by point number; columns: point, entries, parameters (grid order), context, metrics, bound shares."""
    df = df.sort_values("point", kind="stable").reset_index(drop=True)
    fractions = sorted(c for c in df.columns if c.startswith(BOUND_PREFIX))
    df[fractions] = df[fractions].fillna(0.0)
    lead = ["point", "hardware", "model", "scenario", "method", "engine", *grid.columns]
    lead += [c for c in CONTEXT if c not in lead]
    rest = [c for c in df.columns if c not in lead and c not in METRICS and c not in fractions]
    return df[[c for c in lead if c in df.columns] + rest + list(METRICS) + fractions]


def _check_engine(engine: str) -> None:
    if engine not in ENGINES:
        raise ValueError(f"engine {engine!r}: expected one of {', '.join(ENGINES)}")
    if engine == "event":
        try:
            import perfmodel.engines.event  # noqa: F401
        except ImportError as exc:
            raise ValueError(f"engine 'event' needs perfmodel.engines.event, which does not import here "
                             f"({exc})") from None


def evaluate(grid: Grid | dict, engine: str = "analytic", chunk_size: int | None = None) -> pd.DataFrame:
    """Every point of ``grid`` in this process, without files: one row per point, ordered by point number."""
    if isinstance(grid, dict):
        grid = grid_from_dict(grid)
    _check_engine(engine)
    size = chunk_size or DEFAULT_CHUNK[engine]
    if engine == "analytic":
        memo = Memo()
        return bind([chunk_rows(c, memo) for c in chunks(grid, size, engine)], grid.columns)
    frames = [evaluate_chunk(c, engine) for c in chunks(grid, size, engine)]
    return order_columns(pd.concat(frames, ignore_index=True), grid)


def _write_atomic(df: pd.DataFrame, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    df.to_parquet(tmp, index=False)
    os.replace(tmp, path)


def _read_part(path: Path, chunk: Chunk, grid: Grid, engine: str) -> pd.DataFrame:
    """A filed part, or the chunk evaluated again (and refiled) when the part is unreadable or incomplete."""
    expected = {"point", *grid.columns, *METRICS}
    try:
        df = pd.read_parquet(path)
        if len(df) == chunk.size and expected <= set(df.columns):
            return df
    except (OSError, ValueError):
        pass
    df = evaluate_chunk(chunk, engine)
    _write_atomic(df, path)
    return df


def _run_local(todo: Iterable[Chunk], engine: str, store: Callable[[Chunk, pd.DataFrame], None]) -> None:
    memo = Memo()
    for chunk in todo:
        store(chunk, evaluate_chunk(chunk, engine, memo))


def _run_dask(todo: list[Chunk], engine: str, store: Callable[[Chunk, pd.DataFrame], None],
              scheduler: str | None, workers: int | None) -> None:
    from dask.distributed import Client, LocalCluster, as_completed

    cluster = None
    if scheduler:
        client = Client(scheduler)
    else:
        cluster = LocalCluster(n_workers=workers or os.cpu_count() or 1, threads_per_worker=1, processes=True,
                               dashboard_address=None)
        client = Client(cluster)
    try:
        by_key = {c.key: c for c in todo}
        futures = [client.submit(evaluate_chunk, c, engine, key=f"perfmodel-chunk-{c.key}") for c in todo]
        for fut in as_completed(futures):
            store(by_key[fut.key[len("perfmodel-chunk-"):]], fut.result())
            fut.release()
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def run_sweep(grid: Grid | str | Path, output: str | Path | None = None, *, engine: str = "analytic",
              chunk_size: int | None = None, use_dask: bool | None = None, scheduler: str | None = None,
              workers: int | None = None, progress: Progress | None = None, keep_parts: bool = False) -> SweepResult:
    """Evaluate a grid into ``output`` (Parquet), resuming from the part files of an interrupted run.

    ``use_dask``: True runs the chunks as Dask tasks, False in this process, None decides (the event engine and
    grids above DASK_THRESHOLD points go to Dask). ``scheduler`` is the address of an existing Dask scheduler
    (default: a local cluster of ``workers`` processes). ``progress(done, total)`` is called with point counts.
    Part files are removed once the output is written unless ``keep_parts``. Without ``output`` nothing is
    written and nothing resumes.
    """
    if not isinstance(grid, Grid):
        grid = load_grid(grid)
    _check_engine(engine)
    size = chunk_size or DEFAULT_CHUNK[engine]
    plan = list(chunks(grid, size, engine))
    total = sum(c.size for c in plan)
    if use_dask is None:
        use_dask = engine == "event" or total > DASK_THRESHOLD or scheduler is not None
    parts = parts_dir(output) if output is not None else None
    frames: dict[str, pd.DataFrame] = {}
    done_keys: set[str] = set()
    if parts is not None:
        parts.mkdir(parents=True, exist_ok=True)
        done_keys = {c.key for c in plan if (parts / f"{c.key}.parquet").is_file()}
    resumed = sum(c.size for c in plan if c.key in done_keys)
    todo = [c for c in plan if c.key not in done_keys]
    state = {"done": resumed}
    if progress:
        progress(resumed, total)

    def store(chunk: Chunk, df: pd.DataFrame) -> None:
        if parts is not None:
            _write_atomic(df, parts / f"{chunk.key}.parquet")
        else:
            frames[chunk.key] = df
        state["done"] += chunk.size
        if progress:
            progress(state["done"], total)

    if todo:
        if use_dask:
            _run_dask(todo, engine, store, scheduler, workers)
        else:
            _run_local(todo, engine, store)
    if parts is not None:
        frames = {c.key: _read_part(parts / f"{c.key}.parquet", c, grid, engine) for c in plan}
    table = order_columns(pd.concat([frames[c.key] for c in plan], ignore_index=True), grid)
    out_path = None
    if output is not None:
        out_path = Path(output)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        _write_atomic(table, out_path)
        if not keep_parts:
            shutil.rmtree(parts, ignore_errors=True)
    return SweepResult(table, out_path, total, len(plan), len(plan) - len(todo), resumed, bool(use_dask and todo))

