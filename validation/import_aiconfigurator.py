"""Importer for aiconfigurator's measured vLLM kernel tables (ai-dynamo/aiconfigurator, ``systems/``).

Layout: ``<gpu>/gemm/vllm/<ver>/gemm_perf.parquet`` and ``<gpu>/attention/vllm/<ver>/{context,generation}_
attention_perf.parquet``; the GPU is the folder name or, when the path does not say, the ``device`` column, both
mapped to a catalog name by one table, :data:`KNOWN_GPUS`. A table of a GPU not in it is skipped with a
:class:`~perfmodel.validation.importers.SkippedInput` warning when a folder is imported (an error when the file is
named on its own). ``latency`` is milliseconds per call (mean of 6 CUDA-graph replays); it becomes seconds.

Each table holds several kernel sources; one is picked per table so that a table is one kernel family:

- ``gemm_perf``: ``gemm_dtype == "bfloat16"`` rows of the plain bf16 GEMM, ``torch.nn.functional.linear``
  (cuBLAS) on H100 (vLLM 0.24). The other H100 sources are fp8 / fp8 block-scaled kernels (Cutlass, DeepGEMM,
  FlashInfer). The A100 table (vLLM 0.14) has a single source, ``vllm_default`` (bf16 ``F.linear``, vLLM's
  default unquantized linear), which is taken there. Rows: m, n, k as in C[m,n] = A[m,k]·B[k,n].
- ``context_attention_perf`` (prefill, causal, ``q_len = kv_len = isl``): the kernel vLLM runs by default on
  each GPU: ``vllm_flash_attn_fa3`` (FlashAttention-3) on H100 (FA4 rows there cover only head_dim 512, which FA3
  lacks, and are left out), ``vllm_flash_attn`` (FlashAttention-2) on A100, ``vllm_flash_attn_fa2`` on L40S
  (its FlashInfer rows hold fp8 caches only), ``vllm_flashinfer_trtllmprefill`` (FlashInfer calling TensorRT-LLM's
  Blackwell kernels) on GB200, whose one-token "prefills" (``isl`` = 1) run the decode kernel and are left
  out. Kept: ``kv_cache_dtype == "bfloat16"`` (the fp8-cache rows are a different kernel path),
  ``window_size == 0`` (no sliding window; 128 / 1024 / 8192 are windowed layers; A100 tables have no such
  column and no windows), ``beam_width == 1``.
- ``generation_attention_perf`` (decode, one query token per sequence): the same families
  (``vllm_flashinfer_trtllmdecode`` on GB200) and filters; ``q_len`` = 1 and ``kv_len`` = ``step``. The collector builds sequences of ``step`` tokens of which ``step - 1`` are
  already cached and one is new, so ``step`` is the number of keys each query attends over.

Options override the choices: ``gemm_kernel``, ``gemm_dtype``, ``attention_kernel``, ``kv_cache_dtype``.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import pandas as pd

from perfmodel.validation.importers import (
    SkippedInput, concat_tables, dataset_label, find_inputs, gpu_from_path, keep_valid, require_columns,
)

DATASET = "aiconfigurator"
#: every GPU this importer knows: its folder name in the dataset -> (catalog name, the tables' ``device`` string)
KNOWN_GPUS: dict[str, tuple[str, str]] = {
    "h100_sxm": ("h100-sxm", "NVIDIA H100 80GB HBM3"),
    "a100_sxm": ("a100-sxm-80gb", "NVIDIA A100-SXM4-80GB"),
    "h200_sxm": ("h200-sxm", "NVIDIA H200"),
    "b200_sxm": ("b200-sxm", "NVIDIA B200"),
    "gb200": ("gb200", "NVIDIA GB200"),
    "l40s": ("l40s", "NVIDIA L40S"),
}
GPU_NAMES = {folder: name for folder, (name, _) in KNOWN_GPUS.items()}
DEVICE_NAMES = {device: name for name, device in KNOWN_GPUS.values()}
GEMM_FILE = "gemm_perf.parquet"
CONTEXT_FILE = "context_attention_perf.parquet"
GENERATION_FILE = "generation_attention_perf.parquet"
FILES = (GEMM_FILE, CONTEXT_FILE, GENERATION_FILE)
#: preferred kernel sources, first present wins (see the module docstring)
GEMM_KERNELS = ("torch.nn.functional.linear", "vllm_default")
ATTENTION_KERNELS = ("vllm_flash_attn_fa3", "vllm_flash_attn", "vllm_flash_attn_fa2")
CONTEXT_KERNELS = ATTENTION_KERNELS + ("vllm_flashinfer_trtllmprefill",)
GENERATION_KERNELS = ATTENTION_KERNELS + ("vllm_flashinfer_trtllmdecode",)
DTYPES = {"bfloat16": "bf16", "float16": "fp16", "fp8": "fp8", "fp8_block": "fp8", "float32": "fp32"}

GEMM_COLUMNS = ("kernel_source", "gemm_dtype", "m", "n", "k", "latency")
ATTENTION_COLUMNS = ("kernel_source", "batch_size", "isl", "num_heads", "num_key_value_heads", "head_dim",
                     "attn_dtype", "step", "latency")


class KernelNotFound(ValueError):
    """A requested kernel source or dtype is absent from one table (skipped when a folder is imported)."""


class UnknownGpu(ValueError):
    """A table of a GPU that :data:`KNOWN_GPUS` does not map (skipped when a folder is imported)."""


def _hardware(path: Path, df: pd.DataFrame) -> tuple[str, int | None]:
    try:
        return gpu_from_path(path, GPU_NAMES, DATASET)
    except ValueError:
        devices = df["device"].dropna().unique() if "device" in df.columns else []
        if len(devices) == 1 and str(devices[0]) in DEVICE_NAMES:
            return DEVICE_NAMES[str(devices[0])], None
        found = f" (its 'device' column says {', '.join(map(str, devices))})" if len(devices) else ""
        raise UnknownGpu(f"{path}: unknown GPU{found}: expected a folder named one of {', '.join(GPU_NAMES)} "
                         f"in the path or a 'device' column naming one of {', '.join(DEVICE_NAMES)}; add it to "
                         "KNOWN_GPUS in perfmodel/validation/import_aiconfigurator.py") from None


def _pick_kernel(df: pd.DataFrame, preferred: tuple[str, ...], explicit: str | None, path: Path,
                 option: str) -> str:
    available = sorted(df["kernel_source"].dropna().astype(str).unique())
    if explicit is not None:
        if explicit not in available:
            raise KernelNotFound(f"{path}: column 'kernel_source' has no {explicit!r} rows (after the dtype "
                             f"filters), expected one of: {', '.join(available) or '(none)'}")
        return explicit
    for name in preferred:
        if name in available:
            return name
    raise ValueError(f"{path}: column 'kernel_source' has none of the default kernels {', '.join(preferred)}; "
                     f"available: {', '.join(available) or '(none)'}; choose one with {option}")


def _dtype(value: str, path: Path, column: str) -> str:
    if value not in DTYPES:
        raise ValueError(f"{path}: column '{column}': got {value!r}, expected one of {', '.join(DTYPES)}")
    return DTYPES[value]


def _gemm(df: pd.DataFrame, path: Path, hardware: str, label: str, kernel: str | None,
          gemm_dtype: str) -> pd.DataFrame:
    require_columns(df, GEMM_COLUMNS, path, "aiconfigurator GEMM table")
    rows = df[df["gemm_dtype"].astype(str) == gemm_dtype]
    if rows.empty:
        found = ", ".join(sorted(df["gemm_dtype"].astype(str).unique()))
        raise KernelNotFound(f"{path}: column 'gemm_dtype' has no {gemm_dtype!r} rows, expected one of: {found}")
    kernel = _pick_kernel(rows, GEMM_KERNELS, kernel, path, "gemm_kernel / --gemm-kernel")
    rows = rows[rows["kernel_source"] == kernel]
    out = pd.DataFrame({
        "hardware": hardware, "op": "gemm", "dtype": _dtype(gemm_dtype, path, "gemm_dtype"),
        "m": rows["m"], "n": rows["n"], "k": rows["k"],
        "measured_s": pd.to_numeric(rows["latency"], errors="coerce") / 1e3,
        "source": f"{label}:{kernel}",
    })
    return keep_valid(out, path)


def _attention(df: pd.DataFrame, path: Path, hardware: str, label: str, kernel: str | None,
               kv_cache_dtype: str, decode: bool) -> pd.DataFrame:
    require_columns(df, ATTENTION_COLUMNS, path, "aiconfigurator attention table")
    rows = df
    if "kv_cache_dtype" in rows.columns:
        rows = rows[rows["kv_cache_dtype"].astype(str) == kv_cache_dtype]
    elif kv_cache_dtype != "bfloat16":
        raise ValueError(f"{path}: missing column 'kv_cache_dtype', expected it to select {kv_cache_dtype!r} "
                         "KV-cache rows (files without it hold bfloat16 caches only)")
    if "window_size" in rows.columns:
        rows = rows[pd.to_numeric(rows["window_size"], errors="coerce") == 0]
    if "beam_width" in rows.columns:
        rows = rows[pd.to_numeric(rows["beam_width"], errors="coerce") == 1]
    if rows.empty:
        raise ValueError(f"{path}: no full-attention rows with kv_cache_dtype {kv_cache_dtype!r}, "
                         "expected rows with window_size 0 and beam_width 1")
    kernel = _pick_kernel(rows, GENERATION_KERNELS if decode else CONTEXT_KERNELS, kernel, path,
                          "attention_kernel / --attention-kernel")
    rows = rows[rows["kernel_source"] == kernel]
    seq = rows["step"] if decode else rows["isl"]
    out = pd.DataFrame({
        "hardware": hardware, "op": "attention",
        "dtype": rows["attn_dtype"].astype(str).map(lambda v: _dtype(v, path, "attn_dtype")),
        "batch": rows["batch_size"], "q_len": 1 if decode else rows["isl"], "kv_len": seq,
        "heads": rows["num_heads"], "kv_heads": rows["num_key_value_heads"], "head_dim": rows["head_dim"],
        "causal": True,
        "measured_s": pd.to_numeric(rows["latency"], errors="coerce") / 1e3,
        "source": f"{label}:{kernel}:kv_cache={kv_cache_dtype}",
    })
    return keep_valid(out, path)


def import_file(path: str | os.PathLike, *, gemm_kernel: str | None = None, gemm_dtype: str = "bfloat16",
                attention_kernel: str | None = None, kv_cache_dtype: str = "bfloat16") -> pd.DataFrame:
    """One aiconfigurator parquet file (by its name) as measurement rows; rows without a valid time are dropped
    and counted."""
    path = Path(path)
    try:
        df = pd.read_parquet(path)
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: not a readable parquet file ({exc})") from exc
    hardware, start = _hardware(path, df)
    label = dataset_label(path, DATASET, start)
    if path.name == GEMM_FILE:
        return _gemm(df, path, hardware, label, gemm_kernel, gemm_dtype)
    if path.name in (CONTEXT_FILE, GENERATION_FILE):
        return _attention(df, path, hardware, label, attention_kernel, kv_cache_dtype,
                          decode=path.name == GENERATION_FILE)
    raise ValueError(f"{path}: not an aiconfigurator table, expected one of {', '.join(FILES)}")


def import_path(path: str | os.PathLike, **options) -> pd.DataFrame:
    """All GEMM and attention tables at ``path`` (a file or a folder searched recursively), normalized.

    Options: ``gemm_kernel``, ``gemm_dtype`` (default ``bfloat16``), ``attention_kernel``, ``kv_cache_dtype``
    (default ``bfloat16``); kernel defaults are in ``GEMM_KERNELS`` / ``CONTEXT_KERNELS`` /
    ``GENERATION_KERNELS``. In a folder, tables that lack an explicitly requested kernel or GEMM dtype, and tables
    of GPUs not in :data:`KNOWN_GPUS`, are skipped, each with a ``SkippedInput`` warning (an error if all of them
    are).
    """
    files = find_inputs(path, FILES, DATASET)
    frames, skipped = [], []
    for f in files:
        try:
            frames.append(import_file(f, **options))
        except (KernelNotFound, UnknownGpu) as exc:
            if len(files) == 1:
                raise
            skipped.append(str(exc))
            warnings.warn(SkippedInput(f"skipped {exc}"), stacklevel=2)
    if not frames:
        raise ValueError("no table at this path has the requested kernel / dtype: " + "; ".join(skipped))
    return concat_tables(frames)
