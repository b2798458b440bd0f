"""Decoding methods as sequences of forward passes: the only place where method logic lives.

A method is a schedule: which tokens go through the model at each step, which keys they attend to, which
positions produce logits, and what is written to the cache. A :class:`Pass` describes one group of identical
passes (``count`` of them). Steps whose context grows (ARM decode, block after block) are grouped into
``SEGMENTS`` equal spans evaluated at their mean context: every cost that is linear in the context (bytes and
FLOPs of attention over a growing cache) is then summed exactly; only a change of bound inside a span is
smoothed over. ``build_passes(..., exact=True)`` lists every step as its own pass instead (scalar parameters
only): the schedule the reference implementation (:mod:`perfmodel.reference`) runs, step by step.

Where tokens sit: a pass computes ``tokens`` consecutive positions starting at ``start`` (by default right after
the ``cached`` ones) and attends to positions 0..context−1, the computed ones fresh, the others from the cache.
Methods with a cache write every computed token's keys and values into it (where the attention reads them);
``append`` counts the tokens the pass commits (that later passes read as cached).

References: LLaDA (Nie et al., arXiv:2502.09992) and Dream for vanilla DLM; BD3-LM (Arriola et al.,
arXiv:2503.09573), SDAR and CDLM for block-causal caches; Fast-dLLM (Wu et al., arXiv:2505.22618) for the
prefix and dual caches.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from perfmodel.workload.params import Params, Structure

SEGMENTS = 16


@dataclass(frozen=True)
class Pass:
    """A group of ``count`` identical forward passes over ``batch`` sequences.

    tokens: query tokens per sequence computed by the pass; context: keys each query may attend to (cached +
    computed); cached: of those, how many come from the cache; logits: positions whose logits are produced
    (the last ``logits`` computed ones); append: tokens the pass commits to the cache (keys/values or X);
    mask: attention mask of the pass. start: position of the first computed token (default: ``cached``);
    stride: growth of ``cached`` from one instance of the group to the next (a span of growing steps is
    described at its mean; stride says how far its first and last instances lie from it).
    """

    phase: str
    tokens: Any
    context: Any
    cached: Any
    logits: Any
    append: Any
    mask: str
    count: Any
    generation: bool = True
    start: Any = None
    stride: Any = 0

    @property
    def first(self) -> Any:
        """Position of the first computed token (``start``, else right after the cached tokens)."""
        return self.cached if self.start is None else self.start


def segments(n: Any, parts: int = SEGMENTS) -> list[tuple[Any, Any]]:
    """Split steps 0..n-1 into ``parts`` consecutive spans: (count, mean step index) of each.

    Span i covers [⌊i·n/S⌋, ⌊(i+1)·n/S⌋); an empty span has count 0. Works elementwise on arrays.
    """
    n = np.asarray(n, dtype=float)
    out = []
    for i in range(parts):
        start = np.floor(i * n / parts)
        end = np.floor((i + 1) * n / parts)
        out.append((end - start, (start + end - 1) / 2.0))
    return out


def _spans(n: Any, exact: bool) -> list[tuple[Any, Any]]:
    """:func:`segments`, or with ``exact`` one span per step: (1, j) for j = 0..n−1."""
    if not exact:
        return segments(n)
    if np.ndim(n) or float(n) != int(n):
        raise ValueError(f"exact passes need a whole, scalar number of steps, got {n!r}")
    return [(1, j) for j in range(int(n))]


def build_passes(s: Structure, p: Params, *, exact: bool = False) -> list[Pass]:
    """The forward passes a method runs, in order; with ``exact`` every step its own pass (scalar parameters)."""
    match s.method:
        case "arm":
            return _arm(p, exact)
        case "dlm":
            return _dlm(s, p, exact)
        case "block-dlm":
            return _block_dlm(s, p, exact)
        case "fast-dllm-prefix" | "fast-dllm-dual":
            return _fast_dllm(s, p, exact)
    raise ValueError(f"method {s.method!r}: expected arm, dlm, block-dlm, fast-dllm-prefix or fast-dllm-dual")


def _arm(p: Params, exact: bool) -> list[Pass]:
    # Prefill: the prompt, causal, logits of the last position give the first token.
    passes = [Pass("prefill", p.prompt_len, p.prompt_len, 0 * p.prompt_len, 1, p.prompt_len, "causal", 1, False)]
    # Decode step j (0-based, gen_len - 1 of them) feeds token j+1: it attends to prompt + j + 1 keys.
    for count, j in _spans(p.gen_len - 1, exact):
        ctx = p.prompt_len + j + 1
        passes.append(Pass("decode", 1, ctx, ctx - 1, 1, 1, "causal", count, stride=1))
    return passes


def _blocks(p: Params) -> Any:
    return np.ceil(p.gen_len / p.block_size)


def _dlm(s: Structure, p: Params, exact: bool) -> list[Pass]:
    seq = p.prompt_len + p.gen_len
    if not (s.semi_autoregressive and s.truncate_suffix):
        # Every step is a full bidirectional pass over prompt + answer; logits at every position; no cache.
        # LLaDA's semi-autoregressive reference (generate.py) is this too: blocks only decide which masked
        # positions a step may unmask, the model still runs the whole sequence every step.
        return [Pass("denoise", seq, seq, 0 * seq, seq, 0, "bidirectional", p.steps)]
    # The cheaper truncated variant (not LLaDA's reference): block j's steps run over prompt + blocks 0..j only,
    # the masked blocks after it dropped from the input.
    nb = _blocks(p)
    per_block = p.steps / nb
    passes = []
    for count, j in _spans(nb, exact):
        t = np.minimum(p.prompt_len + (j + 1) * p.block_size, seq)
        passes.append(Pass("denoise", t, t, 0 * t, t, 0, "bidirectional", count * per_block))
    return passes


def _block_dlm(s: Structure, p: Params, exact: bool) -> list[Pass]:
    # The prompt is encoded once with the block-causal mask and cached.
    passes = [Pass("prefill", p.prompt_len, p.prompt_len, 0 * p.prompt_len, 0, p.prompt_len, "block_causal", 1,
                   False)]
    for count, j in _spans(_blocks(p), exact):
        cached = p.prompt_len + j * p.block_size
        ctx = cached + p.block_size
        # Each step recomputes only the block's B tokens against the cache (bidirectional within the block).
        passes.append(Pass("denoise", p.block_size, ctx, cached, p.block_size, 0, "bidirectional",
                           count * p.block_steps))
        if s.commit_pass:
            # The finished (clean) block goes through once more to write its keys and values.
            passes.append(Pass("commit", p.block_size, ctx, cached, 0, p.block_size, "bidirectional", count,
                               stride=p.block_size))
    return passes


def _fast_dllm(s: Structure, p: Params, exact: bool) -> list[Pass]:
    seq = p.prompt_len + p.gen_len
    passes = []
    for count, j in _spans(_blocks(p), exact):
        done = p.prompt_len + j * p.block_size
        # Once per block: a full pass over the whole sequence refreshes the cache (prefix, and suffix for dual).
        passes.append(Pass("refresh", seq, seq, 0 * seq, seq, seq, "bidirectional", count))
        rest = np.maximum(p.block_steps - 1, 0) * count
        if s.method == "fast-dllm-prefix":
            # Later steps run the current block and everything after it against the cached prefix.
            t = seq - done
            passes.append(Pass("denoise", t, seq, done, t, 0, "bidirectional", rest))
        else:
            # Dual cache: only the block's tokens run; prefix and suffix both come from the cache.
            passes.append(Pass("denoise", p.block_size, seq, seq - p.block_size, p.block_size, 0,
                               "bidirectional", rest, start=done))
    return passes
