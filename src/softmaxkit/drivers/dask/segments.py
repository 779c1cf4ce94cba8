"""Dask driver of the segment ops, ``logcumsumexp`` and ``logmatmulexp``, lazily.

Imported only when an input already is a dask array (the public functions check
``"dask" in sys.modules``).  The same states as the NumPy path, handed to Dask:

* segments: every block of ``x`` along the segmented axis (with its block of ids;
  a segment may span blocks) folds into a ``(3, S, ...)`` state ``(m, w, r)``
  (``segments._states``: the CSR or scatter kernels); ``dask.array.reduction``
  merges the block states in a tree (``segments._merge``); ``segment_logsumexp``
  finalises the state, ``segment_softmax`` maps every block of ``x`` with it.
* ``logcumsumexp`` along a chunked axis: each block's own log-sum-exp, an
  exclusive scan of those (one small array), then every block is scanned from its
  carry (the NumPy kernels with an entering state): two reads of ``x``.
* ``logmatmulexp``: one task per output block, merging the NumPy results of the
  blocks of the contracted axis with ``logaddexp``.
"""

from __future__ import annotations

import functools
import string

import dask.array as da
import numpy as np

from ..._core.validate import resolve_dtype, validate_temperature
from ..eager import dense_logsumexp
from ..eager_segments import (
    Segs,
    check_ids,
    finalize_lse,
    lme_batched,
    log_wr,
    merge_states,
    one_axis,
    scan_last,
    states,
)

__all__ = ["logcumsumexp", "logmatmulexp", "segment_logsumexp", "segment_softmax"]


def _prep_x(x, axis, temperature, where):
    ax = one_axis(axis, max(x.ndim, 1))
    t = validate_temperature(temperature)
    compute, out_dtype = resolve_dtype(np.dtype(x.dtype), None)
    xc = x.astype(compute)
    if t != 1.0:
        xc = (xc.astype(np.float64) / t).astype(compute)
    if where is not None:
        xc = da.where(where, xc, compute.type(-np.inf))
    return da.moveaxis(xc, ax, 0), ax, compute, out_dtype


def _ids(n, chunks, segment_ids, offsets, num_segments):
    if (segment_ids is None) == (offsets is None):
        raise TypeError("give exactly one of segment_ids and offsets")
    if offsets is not None:
        segs = Segs(n, None, np.asarray(offsets), num_segments)
        return da.from_array(segs.ids_array(), chunks=(chunks,)), segs.num
    if num_segments is None:
        raise ValueError(
            "num_segments is required with Dask input (the output shape must be known "
            "before the ids are read)"
        )
    lazy = isinstance(segment_ids, da.Array)
    ids = segment_ids if lazy else np.asarray(segment_ids)
    check_ids(ids, n)
    if not lazy:
        ids = da.from_array(ids, chunks=(chunks,))
    return ids.rechunk((chunks,)), int(num_segments)


def _block_state(xb, ib, S):
    """(1, 3, S, *rest) state of one block (``ib`` checked here, at compute time)."""
    n = xb.shape[0]
    x2 = np.ascontiguousarray(xb).reshape(n, -1)
    segs = Segs(n, ib, None, S)
    m, w, r = states(x2, segs)
    return np.stack([m, w, r]).reshape((1, 3, S, *xb.shape[1:]))


def _fold(st):
    m, w, r = st[0, 0], st[0, 1], st[0, 2]
    for k in range(1, st.shape[0]):
        m, w, r = merge_states(m, w, r, st[k, 0], st[k, 1], st[k, 2])
    return np.stack([m, w, r])[None]


def _by_block(func, out_prefix, xm, ids, *extra, **kwargs):
    """``da.blockwise`` of ``func(x_block, ids_block, *extra_blocks, **kwargs)``.

    ``xm`` has the segmented axis first (index ``i``; its other axes ``c, d, ...``),
    ``ids`` is chunked like that axis; the output's index and every index in
    ``extra`` (arrays and index prefixes, alternating) end in those other axes.
    """
    rest = string.ascii_lowercase[2 : 1 + xm.ndim]
    extra = tuple(a + rest if k % 2 else a for k, a in enumerate(extra))
    return da.blockwise(func, out_prefix + rest, xm, "i" + rest, ids, "i", *extra, **kwargs)


def _keep(b, axis, keepdims):
    return b  # chunk step: _block_state already gave each block one state


def _fold_combine(b, axis, keepdims):
    return _fold(b)


def _fold_aggregate(b, axis, keepdims):
    return _fold(b)[0]


def _state(xm, ids, S, split_every=None):
    st = _by_block(
        _block_state,
        "iks",
        xm,
        ids,
        S=S,
        new_axes={"k": 3, "s": S},
        adjust_chunks={"i": 1},
        dtype=np.float64,
        meta=np.empty((0,) * (xm.ndim + 2)),
    )
    return da.reduction(
        st,
        _keep,
        _fold_aggregate,
        combine=_fold_combine,
        axis=0,
        keepdims=False,
        dtype=np.float64,
        split_every=split_every,
        concatenate=True,
        meta=np.empty((0,) * (xm.ndim + 1)),
    )


def _lse_of_state(st):
    return finalize_lse(st[0], st[1], st[2])


def segment_logsumexp(
    x, segment_ids=None, *, offsets=None, num_segments=None, axis=0, temperature=1.0, where=None
):
    xm, ax, _compute, out_dtype = _prep_x(x, axis, temperature, where)
    ids, S = _ids(xm.shape[0], xm.chunks[0], segment_ids, offsets, num_segments)
    st = _state(xm, ids, S)
    lse = da.map_blocks(_lse_of_state, st, drop_axis=0, dtype=np.float64)
    return da.moveaxis(lse, 0, ax).astype(out_dtype)


def _softmax_block(xb, ib, st, log):
    m = st[0][ib]
    w = st[1][ib]
    r = st[2][ib]
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        d = np.where(xb == m, 0.0, xb.astype(np.float64) - m)
        if log:
            out = d - log_wr(w, r)
            out = np.where((m == -np.inf) & ~np.isnan(r), -np.inf, out)
        else:
            out = np.exp(d) / (w + r)
            out = np.where((m == -np.inf) & ~np.isnan(r), 0.0, out)
    return out.astype(xb.dtype)


def segment_softmax(
    x,
    segment_ids=None,
    *,
    offsets=None,
    num_segments=None,
    axis=0,
    temperature=1.0,
    where=None,
    log=False,
):
    xm, ax, compute, out_dtype = _prep_x(x, axis, temperature, where)
    ids, S = _ids(xm.shape[0], xm.chunks[0], segment_ids, offsets, num_segments)
    st = _state(xm, ids, S)
    out = _by_block(
        _softmax_block, "i", xm, ids, st, "ks", log=log, dtype=compute, concatenate=True
    )
    return da.moveaxis(out, 0, ax).astype(out_dtype)


# --------------------------------------------------------------------------- scans
def _block_lse(b, reverse):
    f64 = np.dtype(np.float64)
    lse, _ = dense_logsumexp(b.astype(f64), (b.ndim - 1,), 1.0, None, None, f64, need_sign=False)
    return lse[..., None]


def _exclusive(lse, reverse):
    """Exclusive running logaddexp along the last axis (the carries of the blocks)."""
    out = np.full(lse.shape, -np.inf)
    if lse.shape[-1] > 1:
        if reverse:
            out[..., :-1] = scan_last(lse[..., 1:], True, np.float64)
        else:
            out[..., 1:] = scan_last(lse[..., :-1], False, np.float64)
    return out


def _scan_block(xb, carry, reverse, out_dt):
    return scan_last(xb, reverse, out_dt, carry=carry)


def logcumsumexp(x, axis=-1, *, reverse=False, where=None, dtype=None):
    ax = one_axis(axis, max(x.ndim, 1))
    compute, out_dtype = resolve_dtype(np.dtype(x.dtype), dtype)
    xc = x.astype(compute)
    if where is not None:
        xc = da.where(where, xc, compute.type(-np.inf))
    xm = da.moveaxis(xc, ax, -1)
    nb = len(xm.chunks[-1])
    lse = da.map_blocks(
        _block_lse, xm, reverse, chunks=(*xm.chunks[:-1], (1,) * nb), dtype=np.float64
    )
    carries = da.map_blocks(_exclusive, lse.rechunk({xm.ndim - 1: -1}), reverse, dtype=np.float64)
    carries = carries.rechunk({xm.ndim - 1: 1})
    idx = string.ascii_lowercase[: xm.ndim]
    out = da.blockwise(
        _scan_block,
        idx,
        xm,
        idx,
        carries,
        idx,
        reverse=bool(reverse),
        out_dt=out_dtype,
        dtype=out_dtype,
        align_arrays=False,
        meta=np.empty((0,) * xm.ndim, out_dtype),
    )
    return da.moveaxis(out, -1, ax)


def _lme(a, b):
    """logmatmulexp of two NumPy blocks with equal batch shapes."""
    compute, _ = resolve_dtype(np.result_type(a.dtype, b.dtype), None)
    res = np.empty((*a.shape[:-2], a.shape[-2], b.shape[-1]), compute)
    lme_batched(a, b, a.shape[:-2], compute, res)
    return res


def _lme_blocks(a_blocks, b_blocks):
    parts = [_lme(a, b) for a, b in zip(a_blocks, b_blocks, strict=True)]
    with np.errstate(invalid="ignore"):
        return functools.reduce(np.logaddexp, parts)


def logmatmulexp(A, B):
    A = A if isinstance(A, da.Array) else da.from_array(np.asarray(A))
    B = B if isinstance(B, da.Array) else da.from_array(np.asarray(B))
    if A.ndim != B.ndim or A.ndim < 2:
        raise ValueError(
            f"with Dask input, A and B must both be [..., I, J] and [..., J, K] with the "
            f"same batch shape; got shapes {A.shape} and {B.shape}"
        )
    if A.shape[:-2] != B.shape[:-2] or A.shape[-1] != B.shape[-2]:
        raise ValueError(
            f"A's last axis must match B's second-to-last axis and the batch shapes must "
            f"be equal; got shapes {A.shape} and {B.shape}"
        )
    compute, _ = resolve_dtype(np.result_type(A.dtype, B.dtype), None)
    batch = string.ascii_lowercase[3 : 3 + A.ndim - 2]
    B = B.rechunk({B.ndim - 2: A.chunks[-1], **{i: A.chunks[i] for i in range(A.ndim - 2)}})
    return da.blockwise(
        _lme_blocks,
        batch + "ik",
        A,
        batch + "ij",
        B,
        batch + "jk",
        dtype=compute,
        concatenate=False,
    )
