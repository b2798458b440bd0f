"""FlashAttention's split-KV heuristic: into how many pieces a call's key/value cache is cut so that its CTAs fill
the GPU.

Like dividing a long queue of parcels among the free counters of a post office: with few customers (tiles) the
queue is split so that more counters work at once, but only into pieces that change the parcels per counter, and
no finer than needed to come within 85% of the best use of the counters. :mod:`perfmodel.engines.tiling` applies
it per FlashAttention generation (``FlashKernel.splits``).

A sweep meets the same (tiles, key blocks) pairs in every chunk and on every hardware variant with the same
number of SMs: each pair is searched once per process, and a table of pairs looked up whole when it recurs.
"""
from __future__ import annotations

from typing import Any

import numpy as np

MAX_SPLITS = 128


def _num_splits_unique(tiles: np.ndarray, n_blocks: np.ndarray, slots: float, min_blocks: float) -> np.ndarray:
    s = np.arange(1, MAX_SPLITS + 1, dtype=float).reshape((-1,) + (1,) * tiles.ndim)
    limit = np.minimum(min(MAX_SPLITS, slots), n_blocks)
    prev = np.ceil(n_blocks / np.maximum(s - 1, 1))
    eligible = ((s == 1) | (np.ceil(n_blocks / s) != prev)) & (s <= limit)
    waves = tiles * s / slots
    eff = np.where(eligible, waves / np.maximum(np.ceil(waves), 1), 0.0)
    ok = eligible & (eff >= 0.85 * eff.max(axis=0))
    first = np.argmax(ok, axis=0) + 1.0
    return np.where((tiles >= 0.8 * slots) | (n_blocks <= min_blocks), 1.0, first)


def num_splits_heuristic(tiles: Any, n_blocks: Any, slots: float, min_blocks: float = 0) -> Any:
    """FlashAttention's ``num_splits_heuristic``: no split when the tiles fill 80% of the slots (or the cache has
    at most ``min_blocks`` key blocks); else the fewest splits whose wave efficiency (waves / ⌈waves⌉) is
    within 85% of the best over the eligible splits (those that change the blocks per split), at most
    min(128, slots, key blocks). Evaluated once per distinct (tiles, key blocks) pair of a sweep grid."""
    tiles = np.asarray(tiles, dtype=float)
    n_blocks = np.maximum(np.asarray(n_blocks, dtype=float), 1.0)
    if tiles.ndim == 0 and n_blocks.ndim == 0:
        return _num_splits_unique(tiles, n_blocks, slots, min_blocks)
    # A table over the distinct values of each argument (each on its own axes of a sweep grid), then looked up
    # at every point: the tiles vary with the batch, the key blocks with the context.
    ut, ti = np.unique(tiles, return_inverse=True)
    un, ni = np.unique(n_blocks, return_inverse=True)
    # Only the pairs the heuristic may split need its search: full grids and short caches take 1.
    rows, cols = ut < 0.8 * slots, un > min_blocks
    table = np.ones((len(ut), len(un)))
    if rows.any() and cols.any():
        table[np.ix_(rows, cols)] = _searched_splits(ut[rows], un[cols], slots, min_blocks)
    return table.ravel().take(ti.reshape(tiles.shape) * len(un) + ni.reshape(n_blocks.shape))


# The heuristic's answer for every (tiles, key blocks) pair searched so far, per (slots, min_blocks): a sweep meets
# the same pairs in every chunk and on every hardware variant of equal SM count.
_SPLITS_FOUND: dict[tuple[float, float], dict[tuple[float, float], float]] = {}
_SPLITS_FOUND_MAX = 100_000


_SPLIT_TABLES: dict[Any, np.ndarray] = {}
_SPLIT_TABLES_MAX = 512


def _searched_splits(tiles: np.ndarray, n_blocks: np.ndarray, slots: float, min_blocks: float) -> np.ndarray:
    """:func:`_num_splits_unique` over every pair of ``tiles`` × ``n_blocks`` (1-D), each pair searched once (and
    each whole table of pairs looked up once)."""
    key = (float(slots), float(min_blocks), tiles.tobytes(), n_blocks.tobytes())
    table = _SPLIT_TABLES.get(key)
    if table is None:
        if len(_SPLIT_TABLES) >= _SPLIT_TABLES_MAX:
            _SPLIT_TABLES.clear()
        table = _SPLIT_TABLES[key] = _searched_pairs(tiles, n_blocks, slots, min_blocks)
    return table


def _searched_pairs(tiles: np.ndarray, n_blocks: np.ndarray, slots: float, min_blocks: float) -> np.ndarray:
    found = _SPLITS_FOUND.setdefault((float(slots), float(min_blocks)), {})
    pairs = [(t, b) for t in tiles.tolist() for b in n_blocks.tolist()]
    values = [found.get(p) for p in pairs]
    missing = [p for p, v in zip(pairs, values) if v is None]
    if missing:
        if len(found) + len(missing) > _SPLITS_FOUND_MAX:
            found.clear()
        new = _num_splits_unique(np.array([p[0] for p in missing]), np.array([p[1] for p in missing]), slots,
                                 min_blocks).tolist()
        found.update(zip(missing, new))
        values = [found[p] for p in pairs]
    return np.array(values, dtype=float).reshape(len(tiles), len(n_blocks))
