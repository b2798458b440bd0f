"""What every kernel module shares: the optional Triton import, the choice of implementation, and input checks.

Triton is optional. ``perfmodel.kernels`` modules import it through here inside ``try``: without it ``jit`` leaves
the kernel functions as plain Python (never launched) and every wrapper runs its torch reference. On CPU tensors
the Triton path runs only under the interpreter, which Triton reads from ``TRITON_INTERPRET=1`` when it is
imported, so that variable must be set before the first kernel module is imported (tests/kernels/conftest.py
does so).
"""
from __future__ import annotations

import functools
import os
import time
from typing import Any, Callable, Iterable

import torch

try:  # Triton is an optional dependency (pyproject extra "kernels").
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - exercised only where triton is absent
    triton = None
    tl = None

IMPLS = ("triton", "torch")
DTYPE_NAMES = {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32", torch.float64: "fp64"}
FLOAT_DTYPES = tuple(DTYPE_NAMES)


def jit(fn):
    """``triton.jit`` when Triton is installed; otherwise the function itself (wrappers never launch it then)."""
    return triton.jit(fn) if triton is not None else fn


def interpreting() -> bool:
    """Whether Triton runs kernels in its CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0").lower() not in ("", "0", "false", "off")


def resolve_impl(impl: str | None, *tensors: torch.Tensor) -> str:
    """Pick ``"triton"`` or ``"torch"``: Triton on CUDA tensors, the torch reference on CPU, unless ``impl`` says.

    ``impl="triton"`` on CPU tensors needs the interpreter; asking for it without raises rather than letting
    Triton fail later with a driver error.
    """
    if impl not in (None, *IMPLS):
        raise ValueError(f"impl={impl!r}: expected None, 'triton' or 'torch'")
    on_cuda = all(t.is_cuda for t in tensors)
    if impl is None:
        return "triton" if (on_cuda and triton is not None) else "torch"
    if impl == "triton":
        if triton is None:
            raise ValueError("impl='triton': the triton package is not installed "
                             "(the [kernels] extra: pip install -e '.[kernels]')")
        if not on_cuda and not interpreting():
            raise ValueError("impl='triton' on CPU tensors: expected TRITON_INTERPRET=1 in the environment before "
                             "triton is imported (the Triton CPU interpreter); got it unset")
    return impl


def dtype_name(dtype: torch.dtype) -> str:
    """The perfmodel dtype name ("fp16", "bf16", ...) of a torch floating dtype."""
    try:
        return DTYPE_NAMES[dtype]
    except KeyError:
        raise TypeError(f"dtype {dtype}: expected one of {', '.join(map(str, DTYPE_NAMES))}") from None


def check_tensor(name: str, t: Any, *, ndim: int | None = None, dtypes: Iterable[torch.dtype] | None = None,
                 shape: tuple[int | None, ...] | None = None) -> torch.Tensor:
    """Raise TypeError/ValueError naming ``name`` unless ``t`` is a tensor of the expected rank, dtype and shape.

    ``shape`` entries of None match any size.
    """
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if ndim is not None and t.dim() != ndim:
        raise ValueError(f"{name}: expected {ndim} dimensions, got shape {tuple(t.shape)}")
    if dtypes is not None:
        dtypes = tuple(dtypes)
        if t.dtype not in dtypes:
            raise TypeError(f"{name}: expected dtype in ({', '.join(map(str, dtypes))}), got {t.dtype}")
    if shape is not None:
        if len(shape) != t.dim() or any(s is not None and s != ts for s, ts in zip(shape, t.shape)):
            want = "[" + ", ".join("*" if s is None else str(s) for s in shape) + "]"
            raise ValueError(f"{name}: expected shape {want}, got {list(t.shape)}")
    return t


def check_same_device(**tensors: torch.Tensor) -> None:
    """Raise ValueError unless all named tensors live on one device."""
    devices = {name: t.device for name, t in tensors.items() if t is not None}
    if len(set(devices.values())) > 1:
        listing = ", ".join(f"{n} on {d}" for n, d in devices.items())
        raise ValueError(f"expected all tensors on one device, got {listing}")


def next_power_of_2(n: int) -> int:
    """Smallest power of two ≥ n (tile extents of ``tl.arange`` must be powers of two)."""
    return 1 << max(int(n) - 1, 0).bit_length()


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def default_sm_scale(head_dim: int, sm_scale: float | None) -> float:
    """Softmax scale 1/√d unless given; it must be a positive finite number."""
    if sm_scale is None:
        return head_dim ** -0.5
    if not (isinstance(sm_scale, (int, float)) and 0 < sm_scale < float("inf")):
        raise ValueError(f"sm_scale={sm_scale!r}: expected a positive finite number")
    return float(sm_scale)


def compute_dtype_for(dtype: torch.dtype, compute_dtype: torch.dtype | None) -> torch.dtype:
    """The dtype a torch reference computes in: fp64 for fp64 inputs, else fp32, unless ``compute_dtype`` says."""
    if compute_dtype is not None:
        return compute_dtype
    return torch.float64 if dtype == torch.float64 else torch.float32


def dot_precision(dtype: torch.dtype) -> str:
    """``tl.dot`` input precision: exact IEEE products for fp32 operands (TF32 would lose 13 mantissa bits)."""
    return "ieee" if dtype in (torch.float32, torch.float64) else "tf32"


def tensor_bytes(*tensors: torch.Tensor | None) -> int:
    """Bytes held by the given tensors (``numel · element_size``), None skipped: the traffic of reading or
    writing each once."""
    return sum(t.numel() * t.element_size() for t in tensors if t is not None)


# ---------------------------------------------------------------------------------------------------------------
# Launch reports: what a recorder (perfmodel.reference.recorder) hears
_LISTENERS: list[Callable[[list, float], None]] = []
_DEPTH = [0]
_CLOCK: list[Callable[[], float]] = [time.perf_counter]


def set_clock(clock: Callable[[], float]) -> Callable[[], float]:
    """Use ``clock`` to time launches for listeners (default ``time.perf_counter``); returns the previous one."""
    previous = _CLOCK[0]
    _CLOCK[0] = clock
    return previous


def listen(callback: Callable[[list, float], None]) -> None:
    """Call ``callback(ops, seconds)`` after every kernel launch: the perfmodel.ops.Op list describing it and the
    host time the wrapper took (the kernel's time on a CPU; on CUDA only its launch, the device runs on)."""
    _LISTENERS.append(callback)


def unlisten(callback: Callable[[list, float], None]) -> None:
    _LISTENERS.remove(callback)


def inside_kernel() -> bool:
    """Whether a kernel wrapper is running (torch work now belongs to that launch)."""
    return _DEPTH[0] > 0


def kernel_launch(describe: Callable[..., Any]):
    """Mark a wrapper as one kernel launch, described by ``describe(*args, **kwargs)``: an Op, or a list of Ops
    for a fused kernel that does the work of several (each part as the model counts it).

    While anyone listens (:func:`listen`), a wrapper called from another wrapper is part of its caller's
    launch and is not reported again; with nobody listening the wrapper runs as it is.
    """
    def decorate(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            if not _LISTENERS:
                return fn(*args, **kwargs)
            outer = _DEPTH[0] == 0
            _DEPTH[0] += 1
            start = _CLOCK[0]()
            try:
                result = fn(*args, **kwargs)
            finally:
                _DEPTH[0] -= 1
            if outer:
                seconds = _CLOCK[0]() - start
                found = describe(*args, **kwargs)
                found = list(found) if isinstance(found, (list, tuple)) else [found]
                for callback in list(_LISTENERS):
                    callback(found, seconds)
            return result
        return wrapper
    return decorate
