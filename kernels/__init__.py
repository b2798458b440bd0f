"""perfmodel.kernels: real torch and Triton implementations of the op kinds the workloads model.

One module per kernel family, each in the order docstring → Triton kernel(s) → wrapper → op formula →
plain-torch reference:

- ``gemm``: linear layers (GEMM/GEMV) through torch; ``elementwise``: rmsnorm, silu_mul, rope, residual add.
- ``decode_attention``: split-KV flash-decoding (GQA, ragged lengths); ``prefill_attention``: flash attention
  with causal, bidirectional and block-causal masks.
- ``quant_attention``: KIVI KV quantisation and decode attention dequantising in the kernel.
- ``xquant``: quantised X cache, fused dequantise-and-rematerialise GEMM, SVD latents for GQA, cross-layer deltas.
- ``clusters`` and ``sparse_attention``: k-means over keys, centroid lookup, cluster selection, sparse
  flash-decoding, Squeezed and Multipole attention; ``gather``: row gather.
- ``groupquant``: group-wise quantisation and bit packing shared by the quantisers.
- ``embedding``, ``sampling`` (greedy token and confidence), ``kv_write`` (a pass's K/V into the cache),
  ``selection`` (a fixed number of tokens by cluster score), ``xquant_attention`` (K and V rematerialised
  inside decode attention): the rest of a whole forward pass (:mod:`perfmodel.reference`).

Wrappers run Triton on CUDA tensors and the torch reference on CPU unless ``impl="triton"|"torch"`` is passed;
Triton on CPU needs ``TRITON_INTERPRET=1`` before triton is imported.

:data:`KERNELS` names every single-launch kernel: its op kind (a kind of :mod:`perfmodel.ops`), its wrapper,
its reference and the function building its :class:`perfmodel.ops.Op` from keyword shape arguments. Entries hold
dotted names resolved on first use, so importing this package imports neither torch nor Triton. Functions built
from several kernels (``squeezed_attention``, ``multipole_attention``, ``xquant_remat``, ``xquant_svd_remat``,
``kmeans_keys``), fused kernels that do the work of several ops (``xquant_decode_attention``,
``multipole_decode_attention``) and the in-place quantisers of a growing cache (``quantize_kv_into``,
``quantize_x_into``: the ops of ``quantize_kv`` and ``quantize_x``) live in their modules and are not entries.
Every wrapper reports its launch to a listening recorder (:func:`perfmodel.kernels._common.kernel_launch`).
"""
from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module
from typing import Any, Callable


@dataclass(frozen=True)
class KernelInfo:
    """One kernel: ``kind`` (an op kind of perfmodel.ops) and the names of its functions in ``module``.

    ``reference`` is None where the wrapper is itself the plain-torch definition (the quantisers: their tests
    check the round trip against the quantisation step instead). ``triton`` says whether the wrapper has a
    Triton path.
    """

    kind: str
    module: str
    wrapper_name: str
    reference_name: str | None
    op_for_name: str
    triton: bool

    def _get(self, name: str) -> Callable[..., Any]:
        return getattr(import_module(f"perfmodel.kernels.{self.module}"), name)

    @property
    def wrapper(self) -> Callable[..., Any]:
        return self._get(self.wrapper_name)

    @property
    def reference(self) -> Callable[..., Any] | None:
        return None if self.reference_name is None else self._get(self.reference_name)

    @property
    def op_for(self) -> Callable[..., Any]:
        """``op_for(**shape) -> perfmodel.ops.Op``."""
        return self._get(self.op_for_name)


def _entry(kind: str, module: str, wrapper: str, *, triton: bool, reference: str | None = "") -> KernelInfo:
    ref = f"{wrapper}_reference" if reference == "" else reference
    return KernelInfo(kind, module, wrapper, ref, f"{wrapper}_op", triton)


KERNELS: dict[str, KernelInfo] = {
    "linear": _entry("gemm", "gemm", "linear", triton=False),
    "rmsnorm": _entry("norm", "elementwise", "rmsnorm", triton=False),
    "silu_mul": _entry("elementwise", "elementwise", "silu_mul", triton=False),
    "rope": _entry("elementwise", "elementwise", "rope", triton=False),
    "residual_add": _entry("elementwise", "elementwise", "residual_add", triton=False),
    "decode_attention": _entry("attention", "decode_attention", "decode_attention", triton=True),
    "prefill_attention": _entry("attention", "prefill_attention", "prefill_attention", triton=True),
    "quantize_kv": _entry("quantize", "quant_attention", "quantize_kv", triton=False, reference=None),
    "dequantize_kv": _entry("dequantize", "quant_attention", "dequantize_kv", triton=False, reference=None),
    "quant_decode_attention": _entry("attention", "quant_attention", "quant_decode_attention", triton=True),
    "quantize_x": _entry("quantize", "xquant", "quantize_x", triton=False, reference=None),
    "dequantize_x": _entry("dequantize", "xquant", "dequantize_x", triton=False, reference=None),
    "dequant_matmul": _entry("gemm", "xquant", "dequant_matmul", triton=True),
    "accumulate_delta": _entry("elementwise", "xquant", "accumulate_delta", triton=True),
    "centroid_lookup": _entry("centroid_lookup", "sparse_attention", "centroid_lookup", triton=False),
    "topk_clusters": _entry("topk", "sparse_attention", "topk_clusters", triton=False),
    "gather_rows": _entry("gather", "gather", "gather_rows", triton=True),
    "sparse_decode_attention": _entry("attention", "sparse_attention", "sparse_decode_attention", triton=True),
    "embedding": _entry("embedding", "embedding", "embedding", triton=False),
    "greedy": _entry("elementwise", "sampling", "greedy", triton=True),
    "write_kv": _entry("elementwise", "kv_write", "write_kv", triton=True),
    "subtract": _entry("elementwise", "elementwise", "subtract", triton=False),
    "select_tokens": _entry("topk", "selection", "select_tokens", triton=False),
    "assign_keys": _entry("centroid_lookup", "clusters", "assign_keys", triton=False, reference=None),
}
