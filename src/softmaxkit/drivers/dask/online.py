"""Dask driver, online family: ``topk_softmax``.

Two tree reductions over one read of ``x``: the ``(m, s)`` state and the ``k`` best
candidates of each block (structured :data:`TOPK` arrays carrying their global
index), merged pairwise; a blockwise map turns the best candidates into
probabilities with the state.
"""

from __future__ import annotations

import functools
from typing import Any

import dask.array as da
import numpy as np

from ._common import _scaled64, prepare, state, tree_reduce

__all__ = ["TOPK", "topk_softmax"]


#: dtype of a top-k candidate: the key ``v = x / T`` (-inf when masked), a NaN flag
#: (NaN ranks above +inf, as in torch.topk) and the global index along the axis.
TOPK = np.dtype([("v", np.float64), ("nan", np.bool_), ("i", np.int64)])
_SENTINEL_INDEX = np.iinfo(np.int64).max  # pads blocks shorter than k; ranks last


def _best_k(c, k, axis):
    """The ``k`` best candidates of ``c`` along ``axis``: NaN first, then by
    decreasing ``v``, ties by increasing index."""
    c = np.moveaxis(c, axis, -1)
    order = np.lexsort((c["i"], -c["v"], ~c["nan"]), axis=-1)[..., :k]
    best = np.take_along_axis(c, order, axis=-1)
    if best.shape[-1] < k:  # a block shorter than k: pad with sentinels
        pad = np.empty((*best.shape[:-1], k - best.shape[-1]), dtype=TOPK)
        pad["v"], pad["nan"], pad["i"] = -np.inf, False, _SENTINEL_INDEX
        best = np.concatenate([best, pad], axis=-1)
    return np.moveaxis(best, -1, axis)


def _block_topk(xb, ib, *rest, present, axis, k, temperature):
    """Per block: the block's ``k`` best candidates along ``axis`` (size ``k``)."""
    wb = rest[0] if present[0] else None
    v = _scaled64(xb, temperature)
    c = np.empty(xb.shape, dtype=TOPK)
    isnan = np.isnan(v)
    if wb is not None:
        isnan &= wb
    c["nan"] = isnan
    # masked entries rank as -inf (tie with real -inf entries by index)
    c["v"] = v if wb is None else np.where(wb, v, -np.inf)
    c["v"][isnan] = 0.0  # NaN entries are ordered by the flag, then by index
    c["i"] = np.expand_dims(ib, tuple(a for a in range(xb.ndim) if a != axis))
    return _best_k(c, k, axis)


def _topk_combine(c, axis, keepdims, k):
    (ax,) = axis if isinstance(axis, tuple) else (axis,)
    return _best_k(c, k, ax)


def _topk_probs(c, st, *, axis, out_dtype):
    m = np.expand_dims(st["m"], axis)
    s = np.expand_dims(st["s"], axis)
    v = c["v"]
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        p = np.exp(v - np.where(np.isfinite(m), m, 0.0)) / np.where(s > 0, s, 1.0)
        p = np.where(m == np.inf, np.where(v == np.inf, 1.0 / np.where(s > 0, s, 1.0), 0.0), p)
    p = np.where(m == -np.inf, 0.0, p)
    p = np.where(np.isnan(m), np.nan, p)
    return p.astype(out_dtype, copy=False)


def topk_softmax(x, k, /, axis=-1, *, temperature=1.0, where=None, split_every=None):
    """Lazy ``softmaxkit.topk_softmax`` of a dask array: ``(probabilities, indices)``.

    Two tree reductions over one read of ``x`` (fused per block): the ``(m, s)``
    state, and the ``k`` best candidates of each block merged pairwise (the
    candidates carry their global index).  Ranking: decreasing ``x / T``, NaN above
    ``+inf``, masked entries as ``-inf``, ties by increasing index.  The result has
    ``x``'s shape and chunks except ``axis``: one chunk of size ``k``.
    """
    if isinstance(axis, bool) or not isinstance(axis, int | np.integer):
        raise TypeError(f"axis must be an int (topk_softmax reduces one axis); got {axis!r}")
    p = prepare(x, axis, temperature, where, None)
    (ax,) = p.axes
    n = x.shape[ax]
    if isinstance(k, bool) or not isinstance(k, int | np.integer):
        raise TypeError(f"k must be an int; got {k!r}")
    if not 0 <= k <= n:
        raise ValueError(f"k must satisfy 0 <= k <= x.shape[axis] = {n}; got k={k}")
    k = int(k)
    oshape = tuple(k if i == ax else s for i, s in enumerate(x.shape))
    ochunks = tuple((k,) if i == ax else c for i, c in enumerate(x.chunks))
    if k == 0:
        return (
            da.zeros(oshape, dtype=p.out_dtype, chunks=ochunks),
            da.zeros(oshape, dtype=np.int64, chunks=ochunks),
        )
    ind = tuple(range(x.ndim))
    args: list[Any] = [x, ind, da.arange(n, chunks=(x.chunks[ax],), dtype=np.int64), (ax,)]
    if p.where is not None:
        args += [p.where, ind]
    cand = da.blockwise(
        _block_topk,
        ind,
        *args,
        adjust_chunks={ax: k},
        dtype=TOPK,
        meta=np.empty((0,) * x.ndim, dtype=TOPK),
        present=(p.where is not None,),
        axis=ax,
        k=k,
        temperature=p.temperature,
    )
    merge_k = functools.partial(_topk_combine, k=k)
    best = tree_reduce(
        cand, merge_k, ax, keepdims=True, split_every=split_every, name="topk", output_size=k
    )
    st = state(p, split_every=split_every)
    bind = tuple(i for i in ind if i != ax)
    probs = da.blockwise(
        _topk_probs,
        ind,
        best,
        ind,
        st,
        bind,
        dtype=p.out_dtype,
        meta=np.empty((0,) * x.ndim, dtype=p.out_dtype),
        axis=ax,
        out_dtype=p.out_dtype,
    )
    idx = best.map_blocks(_indices, dtype=np.int64, meta=np.empty((0,) * x.ndim, np.int64))
    return probs, idx


def _indices(c):
    return c["i"]
