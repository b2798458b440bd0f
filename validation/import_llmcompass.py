"""Importer for LLMCompass's real-hardware operator timings (PrincetonUniversity/LLMCompass,
``ae/figure5/*/real_hardware/``).

Header-less CSVs, one per operator and GPU (``<op>_<GPU>.csv``); only ``A100`` is known (→ ``a100-sxm-80gb``;
LLMCompass models it as ``A100_80GB``, the form factor is not stated):

- ``matmul_A100.csv``: ``M, N, K, <latency>ms, <TFLOPS>Tflops`` — bf16 ``torch.matmul(A[M,K], B[K,N])``:
  gemm m=M, n=N, k=K.
- ``layernorm_A100.csv``: ``M, N, throughput`` — fp16 ``torch.layer_norm`` over the last dim of an [M, N]
  tensor (torch.compile): norm ``layernorm``, m=M, n=N.
- ``softmax_A100.csv``: ``M, N, throughput`` — fp16 eager ``torch.softmax`` over the last dim of [M, N]:
  elementwise ``softmax``, m=M, n=N.
- ``gelu_A100.csv``: ``M, throughput`` — fp16 tanh-GELU of a flat tensor of M elements (torch.compile):
  elementwise ``gelu``, m=1, n=M.

Throughputs are G elements/s as LLMCompass writes them (``elements / latency / 1e9``), so the time is
``elements / (throughput · 1e9)`` seconds. Every number is the median of host ``time.time()`` around one call
plus ``torch.cuda.synchronize()``, so it includes the launch and framework overhead; ``source`` says so. The
floor is ~13 µs for eager softmax, ~30 µs for matmul and ~50 µs for the torch.compile'd ops (the compiled
wrapper's dispatch cost). ``transformer*_A100.csv`` (whole GPT-3 layers) and ``allreduce_*`` (collectives) are
not single ops and are skipped when a folder is imported; naming one of them directly is an error.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import pandas as pd

from perfmodel.validation.importers import concat_tables, dataset_label, find_inputs, keep_valid

DATASET = "llmcompass"
GPU_NAMES = {"A100": "a100-sxm-80gb"}
KINDS = ("matmul", "layernorm", "softmax", "gelu")
PATTERNS = tuple(f"{kind}_*.csv" for kind in KINDS)
OVERHEAD_NOTE = "host timer, includes launch overhead"
_LATENCY = re.compile(r"^\s*([0-9.]+(?:[eE][-+]?[0-9]+)?)\s*(ms|us|s)\s*$")
_PER_S = {"ms": 1e3, "us": 1e6, "s": 1.0}  # units per second


def _read(path: Path, names: list[str]) -> pd.DataFrame:
    try:
        df = pd.read_csv(path, header=None, skipinitialspace=True, dtype=str)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise ValueError(f"{path}: not a readable CSV file ({exc})") from exc
    if df.shape[1] != len(names):
        raise ValueError(f"{path}: {df.shape[1]} columns, expected {len(names)} header-less columns "
                         f"({', '.join(names)})")
    df.columns = names
    for c in names:
        if c == "throughput":  # the time comes from it: a blank or unreadable one drops the row (counted)
            df[c] = pd.to_numeric(df[c], errors="coerce")
        elif c not in ("latency", "tflops"):
            num = pd.to_numeric(df[c], errors="coerce")
            if num.isna().any():
                raise ValueError(f"{path}: column '{c}': non-numeric value {df[c][num.isna()].iloc[0]!r}, "
                                 "expected a number")
            df[c] = num
    return df


def _latency_s(values: pd.Series) -> pd.Series:
    """Seconds of '0.1900ms'-style cells; NaN where a cell does not read (the row is then dropped and counted)."""
    parsed = values.astype(str).str.extract(_LATENCY)
    return pd.to_numeric(parsed[0], errors="coerce") / parsed[1].map(_PER_S)


def import_file(path: str | os.PathLike) -> pd.DataFrame:
    """One LLMCompass operator CSV as measurement rows; rows without a valid time are dropped and counted."""
    path = Path(path)
    kind, _, gpu = path.stem.partition("_")
    if kind not in KINDS:
        raise ValueError(f"{path}: not a single-op LLMCompass file, expected one of {', '.join(PATTERNS)} "
                         "(transformer layers and all-reduce are not single ops)")
    if gpu not in GPU_NAMES:
        raise ValueError(f"{path}: unknown GPU {gpu!r} in the file name, expected one of {', '.join(GPU_NAMES)}")
    hardware = GPU_NAMES[gpu]
    label = dataset_label(path, DATASET)
    if kind == "matmul":
        df = _read(path, ["M", "N", "K", "latency", "tflops"])
        out = pd.DataFrame({"op": "gemm", "dtype": "bf16", "m": df["M"], "n": df["N"], "k": df["K"],
                            "measured_s": _latency_s(df["latency"]),
                            "source": f"{label}:torch.matmul ({OVERHEAD_NOTE})"})
    elif kind == "gelu":
        df = _read(path, ["M", "throughput"])
        out = pd.DataFrame({"op": "elementwise", "variant": "gelu", "dtype": "fp16", "m": 1, "n": df["M"],
                            "measured_s": df["M"] / (df["throughput"] * 1e9),
                            "source": f"{label}:torch.compile gelu(tanh) ({OVERHEAD_NOTE})"})
    else:
        df = _read(path, ["M", "N", "throughput"])
        op, what = (("norm", "torch.compile torch.layer_norm") if kind == "layernorm"
                    else ("elementwise", "eager torch.softmax"))
        out = pd.DataFrame({"op": op, "variant": kind, "dtype": "fp16", "m": df["M"], "n": df["N"],
                            "measured_s": df["M"] * df["N"] / (df["throughput"] * 1e9),
                            "source": f"{label}:{what} ({OVERHEAD_NOTE})"})
    out.insert(0, "hardware", hardware)
    return keep_valid(out, path)


def import_path(path: str | os.PathLike) -> pd.DataFrame:
    """The matmul / layernorm / softmax / gelu CSVs at ``path`` (a file or a folder, recursively), normalized."""
    return concat_tables([import_file(f) for f in find_inputs(path, PATTERNS, DATASET)])
