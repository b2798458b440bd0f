"""Greedy sampling: the most likely token of each row of logits and its probability.

Picture a judge scoring every entrant once: keep the best score so far and where it came from, and a running
total of how far everyone lags behind the best (Σ exp(x − max)); at the end the winner's share of the total is
its probability. ARM decoding keeps the winner; diffusion decoding also needs the share, its confidence, to
decide which masked positions to unmask (LLaDA's low-confidence remasking). One pass over the logits, nothing
the size of the vocabulary written: the op the workloads count as ``sample`` (a softmax's reads and FLOPs).

Shapes: logits [..., vocab] (fp16/bf16/fp32); returns token int64 [...] (the first maximum on ties) and
confidence fp32 [...] = softmax(logits)[token] = 1 / Σ exp(x − max).
"""
from __future__ import annotations

import torch

from perfmodel import ops
from perfmodel.kernels._common import (FLOAT_DTYPES, check_tensor, dtype_name, jit, kernel_launch, next_power_of_2,
                                       resolve_impl, tl)


# ---------------------------------------------------------------------------------------------------------------
# Triton kernel
@jit
def _greedy_kernel(Logits, Token, Conf, V, stride_row, BLOCK: tl.constexpr):
    """One program per row. Each lane keeps its own running maximum, the index where it first saw it and its
    sum of exp(x − maximum); the lanes are merged at the end (the smallest index among the maxima)."""
    row = tl.program_id(0)
    base = Logits + row.to(tl.int64) * stride_row
    offs = tl.arange(0, BLOCK)
    m_vec = tl.full([BLOCK], float("-inf"), tl.float32)
    s_vec = tl.zeros([BLOCK], tl.float32)
    i_vec = tl.zeros([BLOCK], tl.int32)
    for start in range(0, V, BLOCK):
        idx = start + offs
        x = tl.load(base + idx, mask=idx < V, other=float("-inf")).to(tl.float32)
        new_m = tl.maximum(m_vec, x)
        # A lane that has seen only −inf (past the end) subtracts 0 instead, so exp gives 0 rather than NaN.
        safe = tl.where(new_m == float("-inf"), 0.0, new_m)
        s_vec = s_vec * tl.exp(m_vec - safe) + tl.exp(x - safe)
        i_vec = tl.where(x > m_vec, idx, i_vec)
        m_vec = new_m
    m = tl.max(m_vec, 0)
    total = tl.sum(tl.where(m_vec == float("-inf"), 0.0, s_vec * tl.exp(m_vec - m)), 0)
    token = tl.min(tl.where(m_vec == m, i_vec, V), 0)
    tl.store(Token + row, token.to(tl.int64))
    tl.store(Conf + row, 1.0 / total)


# ---------------------------------------------------------------------------------------------------------------
# Wrapper
def _greedy_op(logits, **_):
    rows = logits.numel() // max(logits.shape[-1], 1)
    return greedy_op(rows=rows, vocab=logits.shape[-1], dtype=dtype_name(logits.dtype))


@kernel_launch(_greedy_op)
def greedy(logits: torch.Tensor, *, impl: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(token, confidence) of every row of ``logits`` [..., vocab]."""
    check_tensor("logits", logits, dtypes=FLOAT_DTYPES)
    if logits.dim() < 1 or logits.shape[-1] < 1:
        raise ValueError(f"logits: expected [..., vocab] with vocab ≥ 1, got shape {list(logits.shape)}")
    if resolve_impl(impl, logits) == "torch":
        return greedy_torch(logits)
    lead, vocab = logits.shape[:-1], logits.shape[-1]
    flat = logits.reshape(-1, vocab)
    if flat.stride(-1) != 1:
        flat = flat.contiguous()
    rows = flat.shape[0]
    token = torch.empty(rows, dtype=torch.int64, device=logits.device)
    conf = torch.empty(rows, dtype=torch.float32, device=logits.device)
    if rows:
        _greedy_kernel[(rows,)](flat, token, conf, vocab, flat.stride(0),
                                BLOCK=min(4096 if logits.is_cuda else 1024, next_power_of_2(vocab)))
    return token.reshape(lead), conf.reshape(lead)


CHUNK_BYTES = 2 << 20  # fp32 probabilities of this many bytes at a time: they stay in the CPU's cache


def greedy_torch(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The torch path: an fp32 softmax and its maximum (value and first index), a few rows at a time so that the
    fp32 probabilities never leave the cache (one pass over the logits, as the fused kernel makes)."""
    lead, vocab = logits.shape[:-1], logits.shape[-1]
    flat = logits.reshape(-1, vocab)
    rows = max(1, CHUNK_BYTES // (4 * vocab))
    conf, token = [], []
    for chunk in flat.split(rows):
        c, t = torch.softmax(chunk, -1, dtype=torch.float32).max(-1)
        conf.append(c)
        token.append(t)
    if not conf:
        return (torch.empty(lead, dtype=torch.int64, device=logits.device),
                torch.empty(lead, dtype=torch.float32, device=logits.device))
    return torch.cat(token).reshape(lead), torch.cat(conf).reshape(lead)


def greedy_op(*, rows, vocab, dtype: str = "fp16", name: str = "sample") -> ops.Op:
    """The logits read once; ≈5 FLOPs per element (compare, subtract, exp, add, and the running rescale); the
    token and confidence per row (12 bytes) are not counted, as in the workloads' ``sample`` op."""
    return ops.elementwise(name, rows, vocab, dtype, inputs=1, outputs=0, flops_per_element=5, variant="softmax")


# ---------------------------------------------------------------------------------------------------------------
# Reference
def greedy_reference(logits: torch.Tensor, *, compute_dtype: torch.dtype = torch.float64):
    """argmax (first on ties) and the softmax probability at it, in ``compute_dtype``."""
    x = logits.to(compute_dtype)
    p = torch.softmax(x, dim=-1)
    token = torch.argmax(x, dim=-1)
    return token, p.gather(-1, token[..., None])[..., 0]
