"""Embedding lookup: the first kernel of every forward pass, one row of the embedding table per token.

Picture a card catalogue: each token id is a card number and the kernel copies that card's row (hidden values)
onto the desk. There is no arithmetic, only a gather of rows, so its time is the bytes moved. Serving stacks run
torch's own gather (vLLM's ``VocabParallelEmbedding`` calls ``F.embedding``), and so does this wrapper, on CPU
and CUDA alike.

Shapes: ids int [...], table [vocab, hidden]; returns [..., hidden] in the table's dtype.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from perfmodel import ops
from perfmodel.kernels._common import FLOAT_DTYPES, check_same_device, check_tensor, dtype_name, kernel_launch


def _embedding_op(ids, table):
    return embedding_op(tokens=ids.numel(), hidden=table.shape[1], dtype=dtype_name(table.dtype))


@kernel_launch(_embedding_op)
def embedding(ids: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Rows ``table[ids]``: ids int32/int64 of any shape, table [vocab, hidden]."""
    check_tensor("ids", ids, dtypes=(torch.int32, torch.int64))
    check_tensor("table", table, ndim=2, dtypes=FLOAT_DTYPES)
    check_same_device(ids=ids, table=table)
    if not ids.is_cuda and ids.numel() and (ids.min() < 0 or ids.max() >= table.shape[0]):
        raise ValueError(f"ids: expected values in [0, {table.shape[0]}), got [{int(ids.min())}, {int(ids.max())}]")
    return F.embedding(ids, table)


def embedding_op(*, tokens, hidden, dtype: str = "fp16", name: str = "embedding") -> ops.Op:
    """One row read and written per token, plus its 4-byte id (as the workloads count it)."""
    return ops.embedding(name, tokens, hidden, dtype)


def embedding_reference(ids: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    return table.index_select(0, ids.reshape(-1).long()).reshape(*ids.shape, table.shape[1])
