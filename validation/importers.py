"""Importers of public kernel-timing datasets into the measurement table (:mod:`perfmodel.validation.table`).

One module per dataset, each exposing ``import_path(path, **options) -> DataFrame`` that returns a normalized
table; ``path`` is one file of the dataset or a folder searched recursively:

- ``aiconfigurator``: :mod:`perfmodel.validation.import_aiconfigurator` (GEMM, prefill and decode attention)
- ``vidur``: :mod:`perfmodel.validation.import_vidur` (per-operator times of a Llama-2-7B block)
- ``llmcompass``: :mod:`perfmodel.validation.import_llmcompass` (matmul, softmax, layernorm, gelu on A100)
- ``llmservingsim``: :mod:`perfmodel.validation.import_llmservingsim` (per-layer times of Llama-3.1-8B on H100)
- ``ncu``: :mod:`perfmodel.validation.import_ncu` (an Nsight Compute CSV export, shapes given by the caller)

This module holds the registry (:func:`import_source`) and the helpers the importers share: finding the input
files, reading the GPU from a path, labelling rows with their provenance, and dropping invalid rows with a count
by reason (:func:`keep_valid`: a row without a finite positive time is dropped in every importer alike).
"""
from __future__ import annotations

import fnmatch
import importlib
import os
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

SOURCES: dict[str, str] = {
    "aiconfigurator": "perfmodel.validation.import_aiconfigurator",
    "vidur": "perfmodel.validation.import_vidur",
    "llmcompass": "perfmodel.validation.import_llmcompass",
    "llmservingsim": "perfmodel.validation.import_llmservingsim",
    "ncu": "perfmodel.validation.import_ncu",
}


class SkippedInput(UserWarning):
    """A file (or part of one) an importer left out, with the reason; the CLI prints each one."""


def import_source(source: str, path: str | os.PathLike, **options: Any) -> pd.DataFrame:
    """Import one dataset (a key of ``SOURCES``) from a file or folder; returns a normalized table."""
    if source not in SOURCES:
        raise ValueError(f"unknown measurement source {source!r}, expected one of: {', '.join(SOURCES)}")
    module = importlib.import_module(SOURCES[source])
    return module.import_path(path, **options)


def find_inputs(path: str | os.PathLike, patterns: Iterable[str], dataset: str) -> list[Path]:
    """The dataset files at ``path``: the file itself, or every file under the folder whose name matches.

    ``patterns`` are shell-style file-name patterns (``gemm_perf.parquet``, ``matmul_*.csv``). Raises
    ``ValueError`` when the path does not exist, a file's name matches no pattern or a folder holds none.
    """
    path = Path(path)
    patterns = tuple(patterns)
    wanted = ", ".join(patterns)
    if not path.exists():
        raise ValueError(f"{path}: no such file or directory, expected a {dataset} file ({wanted}) "
                         "or a folder containing them")
    if path.is_file():
        if not any(fnmatch.fnmatchcase(path.name, p) for p in patterns):
            raise ValueError(f"{path}: not a {dataset} file, expected a file named {wanted}")
        return [path]
    found = sorted(p for p in path.rglob("*")
                   if p.is_file() and any(fnmatch.fnmatchcase(p.name, pat) for pat in patterns))
    if not found:
        raise ValueError(f"{path}: no {dataset} files under this folder, expected files named {wanted}")
    return found


def gpu_from_path(path: Path, names: Mapping[str, str], dataset: str) -> tuple[str, int]:
    """(catalog hardware name, index of the path component) of the deepest component that names a GPU."""
    parts = path.parts
    lowered = {k.lower(): v for k, v in names.items()}
    for i in range(len(parts) - 1, -1, -1):
        hit = lowered.get(parts[i].lower())
        if hit is not None:
            return hit, i
    raise ValueError(f"{path}: cannot tell the GPU of this {dataset} file, expected a folder named one of "
                     f"{', '.join(names)} in its path")


def dataset_label(path: Path, dataset: str, start: int | None = None) -> str:
    """Provenance label ``<dataset>/<path inside the dataset>``.

    The part after the last path component named ``dataset`` when there is one (the layout of the shared
    copies), else the components from index ``start`` (e.g. the GPU folder), else the file name.
    """
    parts = path.parts
    lowered = [p.lower() for p in parts]
    if dataset.lower() in lowered:
        i = len(lowered) - 1 - lowered[::-1].index(dataset.lower())
        tail = parts[i + 1:]
    elif start is not None:
        tail = parts[start:]
    else:
        tail = (path.name,)
    return "/".join((dataset,) + tuple(tail))


def require_columns(df: pd.DataFrame, columns: Iterable[str], path: Path, what: str) -> None:
    """Raise ``ValueError`` naming the file and the first missing column."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: missing column '{missing[0]}', expected a {what} with columns "
                         f"{', '.join(columns)} (found: {', '.join(map(str, df.columns))})")


def keep_valid(rows: pd.DataFrame, where: str | os.PathLike) -> pd.DataFrame:
    """The rows that obey the measurement table's rules, normalized; the others are dropped and counted by reason
    in a :class:`SkippedInput` warning naming ``where`` (public tables hold blanks, NaN or zeros for failed runs).

    Every importer ends with this, so that one rule decides in all of them (a row without a finite positive time
    is dropped and counted, never kept and never fatal), and it is the rule ``read_table`` enforces.
    """
    from perfmodel.validation.table import valid_rows

    kept, dropped = valid_rows(rows, str(where))
    if dropped:
        warnings.warn(SkippedInput(dropped), stacklevel=3)
    return kept


def concat_tables(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Normalized concatenation of importer outputs (an empty table when there are none)."""
    from perfmodel.validation.table import empty_table, normalize

    frames = [f for f in frames if not f.empty]
    if not frames:
        return empty_table()
    return normalize(pd.concat(frames, ignore_index=True))
