"""Dask driver: the softmax family on ``dask.array.Array`` inputs, lazily.

Ops: ``softmax``, ``log_softmax``, ``logsumexp`` (dispatched from the public
functions), and ``topk_softmax``, ``cross_entropy``, ``softmax_vjp``,
``log_softmax_vjp``, ``logsumexp_vjp`` with the signatures of the NumPy functions
of the online and losses families (plus ``split_every=`` everywhere).

Imported only when the input already is a dask array (``softmax._foreign``), so
``import softmaxkit`` never imports dask.  One algorithm, several drivers: every
op here is built from the mergeable ``(m, s)`` state of :mod:`softmaxkit._core.state`
in three steps (flox's chunk / combine / aggregate):

1. **chunk** -- :func:`block_states`: one ``blockwise`` task per block of ``x`` runs
   :func:`softmaxkit._core.state.chunk_state` (the same Numba kernel as the NumPy path)
   and returns the block's state with size-1 reduced axes;
2. **combine / aggregate** -- :func:`state`: ``dask.array.reduction`` merges the
   states along the reduced axes in a tree (``split_every`` honoured, from the
   argument or ``dask.config``), with :func:`softmaxkit._core.state.merge`;
3. **finalize** -- reductions (``logsumexp``) map :func:`softmaxkit._core.state.finalize`
   over the state; elementwise outputs (``softmax``) use :func:`map_with_state`, a
   ``blockwise`` map that hands each block of ``x`` its rows' final state.

So ``logsumexp`` reads the data once and ``softmax`` twice (the state reduction,
then the normalising map).  The state travels as a structured array
(:data:`STATE`, fields ``m`` and ``s``, float64), so dask concatenates, pickles
and ships it like any other array.

Adding an op: see ``docs/scaling.md`` ("Adding an op to the Dask driver").
"""

from __future__ import annotations

import contextlib
import functools
import math
from dataclasses import dataclass
from typing import Any

import dask.array as da
import numpy as np

from ..._core.losscommon import _at, check_real, check_reduction, class_indices
from ..._core.state import chunk_state, finalize, merge
from ..._core.validate import (
    as_input_array,
    normalize_axis,
    resolve_dtype,
    validate_temperature,
)

__all__ = [
    "STATE",
    "Prepared",
    "align",
    "block_states",
    "cross_entropy",
    "log_softmax",
    "log_softmax_vjp",
    "logsumexp",
    "logsumexp_vjp",
    "map_with_state",
    "prepare",
    "softmax",
    "softmax_vjp",
    "state",
    "topk_softmax",
]

#: dtype of a lazily reduced state: running max ``m`` and scaled sum ``s``.
# w, r: the split of s that keeps logsumexp's relative accuracy (the eager kernels'
# log1p split): w = total weight of the entries exactly at the maximum m (each exp(0)
# = 1, exact), r = the rest of the sum, carried separately so that log s =
# log w + log1p(r / w) never rounds r away against w (logsumexp([0, -40]) is 4.2e-18,
# not 0).  w = 0 means "not split" (finalize then uses s alone).
STATE = np.dtype([("m", np.float64), ("s", np.float64), ("w", np.float64), ("r", np.float64)])


# --------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class Prepared:
    """Validated arguments of an op on a dask array ``x``.

    ``where`` (if any) is a boolean dask array with exactly ``x``'s shape and chunks.
    ``axes`` is sorted and non-negative; ``compute``/``out_dtype`` follow the dense
    dtype policy (:func:`softmaxkit._core.validate.resolve_dtype`).
    """

    x: Any
    axes: tuple[int, ...]
    temperature: float
    where: Any
    compute: np.dtype
    out_dtype: np.dtype

    @property
    def batch_axes(self) -> tuple[int, ...]:
        return tuple(i for i in range(self.x.ndim) if i not in self.axes)


def _check_dtype(dt: np.dtype, name: str) -> None:
    # Reuse the NumPy path's dtype rules (and messages) on a 0-size stand-in.
    as_input_array(np.empty((0,), dtype=dt), name)


def _no_out(out: Any) -> None:
    if out is not None:
        raise TypeError(
            "out is not supported for dask arrays (results are lazy: use .compute() or "
            f"dask.array.store); got out of type {type(out).__name__}"
        )


def known_shape(a: Any, name: str) -> None:
    """Raise a named ValueError for a dask array whose chunk sizes are unknown (NaN)."""
    if isinstance(a, da.Array) and any(math.isnan(n) for n in a.shape):
        raise ValueError(
            f"{name} has unknown chunk sizes (shape {a.shape}, e.g. after boolean "
            f"indexing); call {name}.compute_chunk_sizes() first"
        )


def align(a: Any, x: Any, name: str, *, dtype: Any = None, kind: str = "any") -> Any:
    """Turn ``a`` (NumPy array-like or dask array) into a dask array shaped and chunked like ``x``.

    Broadcasting follows NumPy.  ``kind="bool"`` requires a boolean dtype (``where``),
    ``kind="real"`` a real numeric one (``b``).  A small NumPy operand stays small in
    the graph: it is broadcast lazily, never materialised at ``x``'s size.
    """
    known_shape(x, "x")
    known_shape(a, name)
    if not isinstance(a, da.Array):
        a = np.asarray(a)
    if kind == "bool" and a.dtype != np.bool_:
        raise TypeError(f"{name} must be a boolean array; got dtype {a.dtype}")
    if kind == "real":
        _check_dtype(a.dtype, name)
    try:
        if np.broadcast_shapes(a.shape, x.shape) != x.shape:
            raise ValueError
    except ValueError:
        raise ValueError(
            f"{name} with shape {a.shape} cannot be broadcast to the input shape {x.shape}"
        ) from None
    if dtype is not None and a.dtype != dtype:
        a = a.astype(dtype)
    a = da.asarray(a)
    lead = x.ndim - a.ndim
    if lead:
        a = a[(None,) * lead]
    chunks = tuple(
        x.chunks[i] if a.shape[i] == x.shape[i] else (1,) * len(a.chunks[i]) for i in range(x.ndim)
    )
    if a.chunks != chunks:
        a = a.rechunk(chunks)
    if a.shape != x.shape:
        a = da.broadcast_to(a, x.shape, chunks=x.chunks)
    return a


def prepare(x, axis, temperature, where, dtype, out=None) -> Prepared:
    """Validate the arguments shared by every op (same rules and messages as NumPy)."""
    _check_dtype(x.dtype, "x")
    _no_out(out)
    axes = normalize_axis(axis, x.ndim)
    t = validate_temperature(temperature)
    compute, out_dtype = resolve_dtype(x.dtype, dtype)
    w = None if where is None else align(where, x, "where", kind="bool")
    return Prepared(x, axes, t, w, compute, out_dtype)


# --------------------------------------------------------------------- state reduction


@contextlib.contextmanager
def _one_numba_thread():
    """Run the block's Numba kernel on the calling thread only.

    Dask already runs one task per worker thread; letting every task also fan out
    to Numba's thread pool oversubscribes the cores, and the pool's start-up costs
    ~4 ms per call on small blocks (measured: 3.7 ms vs 0.19 ms for a 24-element
    block).  ``set_num_threads`` is thread-local; the previous value is restored so
    an eager call on the same thread (synchronous scheduler) is unaffected.
    """
    import numba

    before = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        yield
    finally:
        numba.set_num_threads(before)


def _block_state(xb, *rest, axes, temperature, compute, has_where, has_b):
    """chunk step: the block's (m, s) as a STATE array with size-1 reduced axes."""
    rest = list(rest)
    wb = rest.pop(0) if has_where else None
    bb = rest.pop(0) if has_b else None
    with _one_numba_thread():
        m, s = chunk_state(xb, axes, temperature, wb, bb, compute)
    shape = tuple(1 if i in axes else n for i, n in enumerate(xb.shape))
    out = np.empty(shape, dtype=STATE)
    out["m"] = m.reshape(shape)
    out["s"] = s.reshape(shape)
    out["w"], out["r"] = _split(xb, wb, bb, out["m"], axes, temperature)
    return out


def _split(xb, wb, bb, m, axes, temperature):
    """(w, r) of a block: the weight at the maximum and the sum of the other terms.

    One float64 pass over the block (Dask path only).  Rows whose maximum is not
    finite, or whose maximum the recomputed ``x / T`` does not reproduce exactly,
    get w = 0 ("not split").
    """
    with np.errstate(over="ignore", under="ignore", invalid="ignore", divide="ignore"):
        v = xb.astype(np.float64) / temperature
        if wb is not None:
            v = np.where(wb, v, -np.inf)
        wt = 1.0 if bb is None else np.asarray(bb, dtype=np.float64)
        fin = np.isfinite(m)
        at = (v == m) & fin
        w = np.sum(np.where(at, wt, 0.0), axis=axes, keepdims=True)
        rest = np.where(at | ~fin | (v == -np.inf), 0.0, wt * np.exp(v - np.where(fin, m, 0.0)))
        r = np.sum(rest, axis=axes, keepdims=True)
    w = np.where(fin, w, 0.0)
    return w, np.where(w != 0, r, 0.0)


def block_states(p: Prepared, b: Any = None) -> Any:
    """Per-block states (one blockwise task per block of ``x``), size 1 along ``p.axes``.

    ``b`` is an optional weight array already aligned with :func:`align`.
    """
    ind = tuple(range(p.x.ndim))
    args: list[Any] = [p.x, ind]
    if p.where is not None:
        args += [p.where, ind]
    if b is not None:
        args += [b, ind]
    return da.blockwise(
        _block_state,
        ind,
        *args,
        adjust_chunks={a: 1 for a in p.axes},
        dtype=STATE,
        meta=np.empty((0,) * p.x.ndim, dtype=STATE),
        axes=p.axes,
        temperature=p.temperature,
        compute=p.compute,
        has_where=p.where is not None,
        has_b=b is not None,
    )


def _identity(a, axis=None, keepdims=None):
    return a  # block_states already reduced every block to size 1 along ``axis``


def _merge_along(a, axis, keepdims):
    """combine / aggregate step: merge the states of ``a`` along ``axis`` (a tuple)."""
    axis = tuple(sorted(axis))
    k = len(axis)
    moved = np.moveaxis(a, axis, tuple(range(a.ndim - k, a.ndim)))
    batch = moved.shape[: a.ndim - k]
    flat = moved.reshape((*batch, int(np.prod(moved.shape[a.ndim - k :], dtype=np.int64))))
    m = np.full(batch, -np.inf)
    s = np.zeros(batch)
    for j in range(flat.shape[-1]):  # at most split_every states
        m, s = merge(m, s, flat[..., j]["m"], flat[..., j]["s"])
    # the split: states whose maximum is the merged one keep w and r as they are; the
    # others add their whole sum, scaled, to r.  Any unsplit state at the maximum
    # leaves the merged state unsplit (w = 0).
    w = np.zeros(batch)
    r = np.zeros(batch)
    unsplit = np.zeros(batch, dtype=bool)
    with np.errstate(over="ignore", invalid="ignore", under="ignore"):
        for j in range(flat.shape[-1]):
            f = flat[..., j]
            top = f["m"] == m
            unsplit |= top & (f["w"] == 0) & (f["s"] != 0)
            w = w + np.where(top, f["w"], 0.0)
            scale = np.exp(np.where(top | ~np.isfinite(m), 0.0, f["m"] - m))
            r = r + np.where(top, f["r"], np.where(f["s"] == 0, 0.0, f["s"] * scale))
    bad = unsplit | ~np.isfinite(m) | (w == 0)
    shape = tuple(1 if i in axis else n for i, n in enumerate(a.shape)) if keepdims else batch
    out = np.empty(shape, dtype=STATE)
    out["m"] = m.reshape(shape)
    out["s"] = s.reshape(shape)
    out["w"] = np.where(bad, 0.0, w).reshape(shape)
    out["r"] = np.where(bad, 0.0, r).reshape(shape)
    return out


def state(p: Prepared, b: Any = None, *, keepdims: bool = False, split_every: Any = None) -> Any:
    """The lazy (m, s) state of every row of ``p.x`` over ``p.axes`` (a STATE dask array).

    Shaped like the batch (reduced axes dropped, or size 1 with ``keepdims``) and
    chunked like ``x`` along the batch axes.  Reads ``x`` once.
    """
    blocks = block_states(p, b)
    if not p.axes:
        return blocks
    return da.reduction(
        blocks,
        chunk=_identity,
        combine=_merge_along,
        aggregate=_merge_along,
        axis=p.axes,
        keepdims=keepdims,
        dtype=STATE,
        split_every=split_every,
        concatenate=True,
        meta=np.empty((0,) * (p.x.ndim if keepdims else p.x.ndim - len(p.axes)), dtype=STATE),
        name="softmaxkit-state",
    )


def map_with_state(func, p: Prepared, st: Any, *operands: Any, dtype: Any, **kwargs: Any) -> Any:
    """Map ``func(x_block, state_block, *operand_blocks, **kwargs)`` over the blocks of ``x``.

    ``st`` is the output of :func:`state` (``keepdims=False``); each call receives
    the state of its block's rows (batch shape of the block, reduced axes dropped) and
    the matching blocks of ``operands`` (aligned like ``x``, or None to skip).  The
    result has ``x``'s shape and chunks.
    """
    ind = tuple(range(p.x.ndim))
    args: list[Any] = [p.x, ind, st, p.batch_axes]
    flags = []
    for op in operands:
        flags.append(op is not None)
        if op is not None:
            args += [op, ind]
    return da.blockwise(
        func,
        ind,
        *args,
        dtype=dtype,
        meta=np.empty((0,) * p.x.ndim, dtype=dtype),
        present=tuple(flags),
        **kwargs,
    )


def _expand(a, axes):
    return np.expand_dims(a, axes) if axes else a


# ------------------------------------------------------------------------ dense ops


def _scaled64(xb, temperature):
    """``x / T`` of a block in float64, rounded like the state's maximum ``m``.

    A float32 ``x / T`` against the float64 ``m`` leaves the maximum's own argument
    ``v - m`` away from 0: 6.6e-7 relative on a dominant probability (found by
    hypothesis in test_equals_numpy_path_on_random_chunkings; 1.4e-6 in
    ``topk_softmax``, test_topk_softmax_float32_temperature).
    """
    v = xb.astype(np.float64, copy=False)
    if temperature == 1.0:
        return v
    with np.errstate(over="ignore", under="ignore"):  # x / T overflowing to +-inf: the
        return v / temperature  # reference's value too (the dense contract, section 1.4)


def _normalize_block(xb, st, *rest, present, axes, temperature, out_dtype, log):
    """Softmax / log_softmax of one block given its rows' final state (NumPy, float64).

    Regular rows take two passes over a float64 temporary (``v - m``, then ``exp`` and
    ``/ s``, or ``- log s``); the contract cells (+inf, empty and NaN rows, masked
    entries) are then assigned, never computed, and only when present.
    """
    wb = rest[0] if present[0] else None
    m = _expand(st["m"], axes)
    s = _expand(st["s"], axes)
    v = _scaled64(xb, temperature)
    empty = -np.inf if log else 0.0
    # Local errstate: in +inf, empty (m = -inf) and NaN rows, ``v - m`` forms
    # inf - inf; those rows are overwritten below with the contract values
    # (guarded by test_dask.py::test_contract_cells).
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        res = np.asarray(np.subtract(v, m, dtype=np.float64))  # 0-d blocks give scalars
        if log:
            res -= _expand(_log_s(st), axes)
        else:
            np.exp(res, out=res)
            res /= s
        special = ~np.isfinite(st["m"])
        if special.any():
            m_b = np.broadcast_to(m, res.shape)
            hit = v == np.inf
            if wb is not None:
                hit &= wb
            inf_val = -np.log(s) if log else 1.0 / s
            posinf = m_b == np.inf
            np.copyto(res, np.where(hit, inf_val, empty), where=posinf)
            np.copyto(res, empty, where=m_b == -np.inf)
            np.copyto(res, np.nan, where=np.isnan(m_b))
    if wb is not None:
        np.copyto(res, empty, where=~wb & ~np.isnan(np.broadcast_to(m, res.shape)))
    return res.astype(out_dtype, copy=False)


def _softmax(x, axis, temperature, where, dtype, out, split_every, log):
    p = prepare(x, axis, temperature, where, dtype, out)
    st = state(p, split_every=split_every)
    return map_with_state(
        _normalize_block,
        p,
        st,
        p.where,
        dtype=p.out_dtype,
        axes=p.axes,
        temperature=p.temperature,
        out_dtype=p.out_dtype,
        log=log,
    )


def softmax(x, /, axis=-1, *, temperature=1.0, where=None, dtype=None, out=None, split_every=None):
    """Lazy :func:`softmaxkit.softmax` of a dask array (two reads of ``x``).

    ``where`` may be a NumPy or dask boolean array broadcastable to ``x``; ``out`` must
    be None.  ``split_every`` is passed to the state's tree reduction (default: dask's
    ``split_every`` config).
    """
    return _softmax(x, axis, temperature, where, dtype, out, split_every, log=False)


def log_softmax(
    x, /, axis=-1, *, temperature=1.0, where=None, dtype=None, out=None, split_every=None
):
    """Lazy :func:`softmaxkit.log_softmax` of a dask array (two reads of ``x``)."""
    return _softmax(x, axis, temperature, where, dtype, out, split_every, log=True)


def _finalize(st):
    # finalize maps (m = +inf, s = 0) -- +inf entries whose weights cancel -- to NaN, as
    # the NumPy kernel does; guarded by test_dask.py::test_contract_cells.
    lse, sign = finalize(st["m"], st["s"])
    with np.errstate(invalid="ignore"):  # inf - inf in special rows, not selected
        lse = np.where(np.isfinite(st["m"]) & (sign != 0), st["m"] + _log_s(st), lse)
    return lse, sign


def _log_s(st):
    """log|s| of finite states, with the log1p split where the state carries one.

    w > 0 and |r| <= w: log s = log w + log1p(r / w), exact for a dominant maximum
    (test_dask.py::test_logsumexp_log1p_split); else log|s|.
    """
    w, r, s = st["w"], st["r"], st["s"]
    with np.errstate(divide="ignore", invalid="ignore"):
        ok = (w > 0) & (np.abs(r) <= w)
        split = np.log(np.where(ok, w, 1.0)) + np.log1p(np.where(ok, r / w, 0.0))
        return np.where(ok, split, np.log(np.abs(s)))


def _lse_block(st, out_dtype, keep_negative):
    lse, sign = _finalize(st)
    if not keep_negative:
        lse = np.where(sign < 0, np.nan, lse)  # SciPy: log of a negative sum is NaN
    return lse.astype(out_dtype, copy=False)


def _sign_block(st, out_dtype):
    return _finalize(st)[1].astype(out_dtype, copy=False)


def logsumexp(
    x,
    /,
    axis=-1,
    *,
    b=None,
    keepdims=False,
    return_sign=False,
    temperature=1.0,
    where=None,
    dtype=None,
    out=None,
    split_every=None,
):
    """Lazy :func:`softmaxkit.logsumexp` of a dask array (one read of ``x``).

    Returns a dask array (0-d for a full reduction), or two with ``return_sign``.
    ``b`` and ``where`` may be NumPy or dask arrays; ``out`` must be None.
    """
    p = prepare(x, axis, temperature, where, dtype, out)
    bb = None if b is None else align(b, x, "b", dtype=p.compute, kind="real")
    st = state(p, bb, keepdims=keepdims, split_every=split_every)
    meta = np.empty((0,) * st.ndim, dtype=p.out_dtype)
    lse = st.map_blocks(
        functools.partial(_lse_block, out_dtype=p.out_dtype, keep_negative=return_sign),
        dtype=p.out_dtype,
        meta=meta,
    )
    if not return_sign:
        return lse
    sign = st.map_blocks(
        functools.partial(_sign_block, out_dtype=p.out_dtype), dtype=p.out_dtype, meta=meta
    )
    return lse, sign


# ----------------------------------------------------------------------------- top-k

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
    best = da.reduction(
        cand,
        chunk=_identity,
        combine=merge_k,
        aggregate=merge_k,
        axis=ax,
        keepdims=True,
        dtype=TOPK,
        split_every=split_every,
        output_size=k,
        meta=np.empty((0,) * x.ndim, dtype=TOPK),
        name="softmaxkit-topk",
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


# ------------------------------------------------------------------------ cross-entropy
def _check_index_block(t, n_classes, ignore_index, block_info=None):
    """Validate a block of class-index targets at compute time; return it as int64.

    Errors name the first bad position in the whole target array (dask cannot
    know the values while building the graph).
    """
    offset = [lo for lo, _ in block_info[0]["array-location"]] if block_info else [0] * t.ndim
    if t.dtype.kind == "f":
        with np.errstate(invalid="ignore"):
            bad = ~np.isfinite(t) | (np.floor(t) != t) | (np.abs(t) >= 2.0**62)
        if bad.any():
            pos = np.argwhere(bad)[0]
            raise ValueError(
                f"class-index target must hold integers in [0, {n_classes}); "
                f"{_at(pos + offset)} = {t[tuple(pos)].item()!r}"
            )
    return class_indices(t, n_classes, ignore_index, offset)


def _q_block(cls, tgt, wb, ninc, cw, *, ax, eps, kind, ignore_index, n_classes):
    """(q, cls_w) of one block: the smoothed target and the per-class weight (or None).

    ``cls`` holds the global class indices of the block (1-D, along ``ax``), ``tgt``
    the index targets (batch shape) or the probability block, ``wb`` the mask block,
    ``ninc`` the number of included classes per row (batch shape; None = all
    ``n_classes``), ``cw`` the block's class weights (or None).
    """
    ndim = np.ndim(tgt) + (kind == "index")
    clsx = np.expand_dims(cls, tuple(i for i in range(ndim) if i != ax))
    if kind == "index":
        t = np.expand_dims(tgt, ax)
        if ignore_index is not None:
            t = np.where(t == ignore_index, 0, t)
        a = (clsx == t).astype(np.float64)
    else:
        a = tgt.astype(np.float64, copy=False)
    q = a
    if eps:
        u = 1.0 / (np.expand_dims(np.maximum(ninc, 1), ax) if ninc is not None else n_classes)
        u = np.broadcast_to(u, np.broadcast_shapes(np.shape(u), a.shape, clsx.shape))
        if wb is not None:
            u = np.where(wb, u, 0.0)
        q = (1 - eps) * a + eps * u
    cls_w = None
    if kind == "prob" and cw is not None:
        cls_w = np.expand_dims(cw, tuple(i for i in range(q.ndim) if i != ax))
    return q, cls_w


def _unpack(rest, present):
    it = iter(rest)
    return [next(it) if flag else None for flag in present]


def _block_terms(xb, st, cls, tgt, rest, present, ax, eps, kind, ignore_index, n_classes, T, log):
    """What the loss and the gradient blocks share: the mask ``wb``, the block's
    log-probabilities (``log``) or probabilities in float64, and ``(q, cls_w)``."""
    wb, ninc, cw = _unpack(rest, present)
    lp = _normalize_block(
        xb,
        st,
        wb,
        present=(wb is not None,),
        axes=(ax,),
        temperature=T,
        out_dtype=np.float64,
        log=log,
    )
    q, cls_w = _q_block(
        cls,
        tgt,
        wb,
        ninc,
        cw,
        ax=ax,
        eps=eps,
        kind=kind,
        ignore_index=ignore_index,
        n_classes=n_classes,
    )
    return wb, lp, q, cls_w


def _ce_block(xb, st, cls, tgt, *rest, present, ax, eps, kind, ignore_index, n_classes, T):
    """Per block: the partial row sums of ``cls_w q (-log_softmax)`` and ``cls_w q``."""
    _wb, lp, q, cls_w = _block_terms(
        xb, st, cls, tgt, rest, present, ax, eps, kind, ignore_index, n_classes, T, True
    )
    wq = q if cls_w is None else cls_w * q
    with np.errstate(invalid="ignore"):  # q == 0 at -inf log-probabilities: excluded
        terms = np.where(q != 0, wq * -lp, 0.0)
    out = np.empty(tuple(1 if i == ax else n for i, n in enumerate(terms.shape)), dtype=_CE)
    out["ce"] = terms.sum(axis=ax, keepdims=True)
    out["wq"] = np.broadcast_to(wq, terms.shape).sum(axis=ax, keepdims=True)
    return out


_CE = np.dtype([("ce", np.float64), ("wq", np.float64)])
_ROWS = np.dtype(
    [
        ("part", np.float64),
        ("zpart", np.float64),
        ("active", np.bool_),
        ("row_w", np.float64),
        ("lse", np.float64),
    ]
)


def _ce_rows(sums, st, *rest, present, z, ignore_index, kind, w):
    """Per-row loss pieces: ``part = w_t ce``, ``zpart = z lse^2``, ``active``, ``w_t``."""
    (t,) = _unpack(rest, present)
    lse = _finalize(st)[0]
    ce = sums["ce"]
    ignored = np.zeros(ce.shape, bool) if t is None or ignore_index is None else t == ignore_index
    if kind == "index" and w is not None:
        row_w = w[np.where(ignored, 0, t)]
    else:
        row_w = np.ones(ce.shape)
    empty = ~(lse > -np.inf) & ~np.isnan(lse)
    active = ~ignored & ~empty
    out = np.empty(ce.shape, dtype=_ROWS)
    with np.errstate(invalid="ignore", over="ignore"):
        out["part"] = np.where(active & (row_w != 0), row_w * ce, 0.0)
        out["zpart"] = np.where(active, z * lse**2, 0.0) if z > 0 else 0.0
    out["active"] = active
    out["row_w"] = row_w
    out["lse"] = lse
    return out


def _ce_grad_block(
    xb,
    st,
    rows,
    wq,
    sa,
    sb,
    cls,
    tgt,
    *rest,
    present,
    ax,
    eps,
    kind,
    ignore_index,
    n_classes,
    T,
    z,
    out_dtype,
):
    """Per block: ``(sa w_t (wq p - cls_w q) + sb 2 z lse p) / T`` (0 off the active rows)."""
    wb, p, q, cls_w = _block_terms(
        xb, st, cls, tgt, rest, present, ax, eps, kind, ignore_index, n_classes, T, False
    )
    row_w = np.expand_dims(rows["row_w"], ax)
    active = np.expand_dims(rows["active"], ax)
    lse = np.expand_dims(rows["lse"], ax)
    with np.errstate(invalid="ignore", over="ignore"):
        g_ce = row_w * (np.expand_dims(wq, ax) * p - (q if cls_w is None else cls_w * q))
        g = sa * g_ce
        if z > 0:
            g = g + sb * np.where(p > 0, 2 * z * lse * p, 0.0)
        g = g / T
    if wb is not None:
        g = np.where(wb, g, 0.0)
    g = np.where(active, g, 0.0)
    g = np.where(np.isnan(lse) & active, np.nan, g)
    return g.astype(out_dtype, copy=False)


def cross_entropy(
    logits,
    target,
    /,
    *,
    axis=-1,
    weight=None,
    ignore_index=None,
    label_smoothing=0.0,
    reduction="mean",
    z_loss=0.0,
    temperature=1.0,
    where=None,
    return_grad=False,
    out=None,
    split_every=None,
):
    """Lazy ``softmaxkit.cross_entropy`` of dask logits (loss, and the gradient).

    Same formulas and conventions as the NumPy path (docs/losses.md): index or
    probability targets (NumPy or dask), class ``weight``, ``ignore_index``,
    ``label_smoothing`` (uniform over the included classes), ``reduction``,
    ``z_loss``, ``temperature``, ``where``.  Passes: the ``(m, s)`` state (one read
    of the logits), then one blockwise pass that sums ``q (-log_softmax)`` per row
    (and, with ``return_grad``, writes the gradient from the same blocks).  The loss
    is a lazy 0-d array (``"mean"``/``"sum"``) or batch-shaped (``"none"``).  Bad
    class indices raise ``ValueError`` naming the position when computed.
    """
    known_shape(logits, "logits")
    known_shape(target, "target")
    x = logits
    if (isinstance(axis, tuple | list) and len(axis) != 1) or axis is None:
        raise TypeError(f"axis must be a single int (the class axis) for losses; got {axis!r}")
    if x.ndim == 0:
        raise ValueError("logits must have at least one dimension (the classes); got a 0-d array")
    p = prepare(x, axis, temperature, where, None, out)
    (ax,) = p.axes
    reduction = check_reduction(reduction)
    eps = check_real("label_smoothing", label_smoothing, 0.0, 1.0)
    z = check_real("z_loss", z_loss, 0.0)
    if ignore_index is not None and (
        isinstance(ignore_index, bool) or not isinstance(ignore_index, int | np.integer)
    ):
        raise TypeError(f"ignore_index must be an int or None; got {ignore_index!r}")
    ii = None if ignore_index is None else int(ignore_index)
    C = x.shape[ax]
    w = None
    if weight is not None:
        w = as_input_array(np.asarray(weight), "weight").astype(np.float64)
        if w.shape != (C,):
            raise ValueError(f"weight must have shape ({C},) (one per class); got {w.shape}")
        if not np.all(np.isfinite(w)):
            bad = int(np.argwhere(~np.isfinite(w))[0][0])
            raise ValueError(f"weight must be finite; weight[{bad}] = {w[bad]}")
    batch = tuple(n for i, n in enumerate(x.shape) if i != ax)
    bchunks = tuple(c for i, c in enumerate(x.chunks) if i != ax)
    ind = tuple(range(x.ndim))
    bind = tuple(i for i in ind if i != ax)
    tshape = tuple(np.shape(target))
    tdtype = target.dtype if isinstance(target, da.Array) else np.asarray(target).dtype
    if tshape == x.shape and tshape != batch:
        kind = "prob"
        if tdtype.kind not in "biuf":
            raise TypeError(f"probability target must be real numbers; got dtype {tdtype}")
        tgt = align(target, x, "target", dtype=np.float64)
        tind = ind
    elif tshape == batch:
        kind = "index"
        if tdtype.kind not in "iuf":
            raise TypeError(f"class-index target must have an integer dtype; got dtype {tdtype}")
        tgt = da.asarray(target)
        if tgt.chunks != bchunks:
            tgt = tgt.rechunk(bchunks)
        tgt = tgt.map_blocks(
            _check_index_block, C, ii, dtype=np.int64, meta=np.empty((0,) * len(batch), np.int64)
        )
        tind = bind
    else:
        raise ValueError(
            f"target has shape {tshape}; expected {batch} (class indices) or "
            f"{tuple(x.shape)} (class probabilities) for logits of shape {tuple(x.shape)} "
            f"with class axis {ax}"
        )
    st = state(p, split_every=split_every)
    ninc = None
    if p.where is not None and eps:
        ninc = p.where.sum(axis=ax, dtype=np.int64, split_every=split_every)
    cls = da.arange(C, chunks=(x.chunks[ax],), dtype=np.int64)
    cw = None if w is None or kind == "index" else da.from_array(w, chunks=(x.chunks[ax],))
    opt_args: list[Any] = []
    present = []
    for arr, idx in ((p.where, ind), (ninc, bind), (cw, (ax,))):
        present.append(arr is not None)
        if arr is not None:
            opt_args += [arr, idx]
    common = dict(
        present=tuple(present),
        ax=ax,
        eps=eps,
        kind=kind,
        ignore_index=ii,
        n_classes=C,
        T=p.temperature,
    )
    partial = da.blockwise(
        _ce_block,
        ind,
        x,
        ind,
        st,
        bind,
        cls,
        (ax,),
        tgt,
        tind,
        *opt_args,
        adjust_chunks={ax: 1},
        dtype=_CE,
        meta=np.empty((0,) * x.ndim, dtype=_CE),
        **common,
    )
    sums = da.reduction(
        partial,
        chunk=_identity,
        combine=_sum_fields,
        aggregate=_sum_fields,
        axis=ax,
        keepdims=False,
        dtype=_CE,
        split_every=split_every,
        concatenate=True,
        meta=np.empty((0,) * len(batch), dtype=_CE),
        name="softmaxkit-ce",
    )
    rows = da.blockwise(
        _ce_rows,
        bind,
        sums,
        bind,
        st,
        bind,
        *((tgt, bind) if kind == "index" else ()),
        dtype=_ROWS,
        meta=np.empty((0,) * len(batch), dtype=_ROWS),
        present=(kind == "index",),
        z=z,
        ignore_index=ii,
        kind=kind,
        w=w,
    )
    active = rows["active"]
    count = active.sum(split_every=split_every)
    part_sum = rows["part"].sum(split_every=split_every)
    z_sum = rows["zpart"].sum(split_every=split_every)
    if kind == "index":
        wsum = da.where(active, rows["row_w"], 0.0).sum(split_every=split_every)
    else:
        wsum = count.astype(np.float64)
    if reduction == "mean":
        sa = da.where(wsum != 0, 1.0 / da.where(wsum != 0, wsum, 1.0), 0.0)
        sb = da.where(count != 0, 1.0 / da.maximum(count, 1), 0.0)
        loss = part_sum * sa + z_sum * sb
    elif reduction == "sum":
        sa = sb = da.asarray(1.0)
        loss = part_sum + z_sum
    else:
        sa = sb = da.asarray(1.0)
        loss = rows["part"] + rows["zpart"]
    loss = loss.astype(p.out_dtype)
    if not return_grad:
        return loss
    grad = da.blockwise(
        _ce_grad_block,
        ind,
        x,
        ind,
        st,
        bind,
        rows,
        bind,
        sums["wq"],
        bind,
        sa,
        (),
        sb,
        (),
        cls,
        (ax,),
        tgt,
        tind,
        *opt_args,
        dtype=p.out_dtype,
        meta=np.empty((0,) * x.ndim, dtype=p.out_dtype),
        z=z,
        out_dtype=p.out_dtype,
        **common,
    )
    return loss, grad


def _sum_fields(a, axis, keepdims):
    out = np.empty(
        tuple(1 if i in axis else n for i, n in enumerate(a.shape))
        if keepdims
        else tuple(n for i, n in enumerate(a.shape) if i not in axis),
        dtype=a.dtype,
    )
    for f in a.dtype.names:
        out[f] = a[f].sum(axis=axis, keepdims=keepdims)
    return out


# -------------------------------------------------------------------------------- VJPs


def _vjp_terms(y, g, *rest, present, log):
    """Per block: the row-sum terms of the VJP (``g y`` where ``y != 0``, or ``g``)."""
    (wb,) = _unpack(rest, present)
    inc = np.ones(y.shape, bool) if wb is None else wb
    with np.errstate(invalid="ignore", over="ignore"):  # inf * 0 at y == 0: excluded
        t = np.where(inc, g, 0.0) if log else np.where(inc & (y != 0), g * y, 0.0)
    nonempty = inc & (y != -np.inf)
    out = np.empty(y.shape, dtype=_VJP)
    out["acc"] = t
    out["nonempty"] = nonempty
    return out


_VJP = np.dtype([("acc", np.float64), ("nonempty", np.bool_)])


def _vjp_write(y, g, acc, *rest, present, axes, log, invT, out_dtype):
    (wb,) = _unpack(rest, present)
    a = _expand(acc["acc"], axes)
    with np.errstate(invalid="ignore", over="ignore"):
        if log:
            res = (g - np.exp(y) * a) * invT
            res = np.where(_expand(acc["nonempty"], axes), res, 0.0)
        else:
            res = np.where(y != 0, y * (g - a) * invT, 0.0)
    if wb is not None:
        res = np.where(wb, res, 0.0)
    return res.astype(out_dtype, copy=False)


def _sum_vjp(a, axis, keepdims):
    shape = (
        tuple(1 if i in axis else n for i, n in enumerate(a.shape))
        if keepdims
        else tuple(n for i, n in enumerate(a.shape) if i not in axis)
    )
    out = np.empty(shape, dtype=_VJP)
    out["acc"] = a["acc"].sum(axis=axis, keepdims=keepdims)
    out["nonempty"] = a["nonempty"].any(axis=axis, keepdims=keepdims)
    return out


def _vjp(y, g, axis, temperature, where, out, split_every, log):
    p = prepare(y, axis, temperature, where, None, out)
    gd = align(g, y, "g", dtype=np.float64, kind="real")
    ind = tuple(range(y.ndim))
    opt = [] if p.where is None else [p.where, ind]
    present = (p.where is not None,)
    terms = da.blockwise(
        _vjp_terms, ind, y, ind, gd, ind, *opt, dtype=_VJP,
        meta=np.empty((0,) * y.ndim, dtype=_VJP), present=present, log=log,
    )  # fmt: skip
    acc = da.reduction(
        terms, chunk=_sum_vjp, combine=_sum_vjp, aggregate=_sum_vjp, axis=p.axes,
        keepdims=False, dtype=_VJP, split_every=split_every, concatenate=True,
        meta=np.empty((0,) * (y.ndim - len(p.axes)), dtype=_VJP), name="softmaxkit-vjp",
    )  # fmt: skip
    return da.blockwise(
        _vjp_write, ind, y, ind, gd, ind, acc, p.batch_axes, *opt, dtype=p.out_dtype,
        meta=np.empty((0,) * y.ndim, dtype=p.out_dtype), present=present, axes=p.axes,
        log=log, invT=1.0 / p.temperature, out_dtype=p.out_dtype,
    )  # fmt: skip


def softmax_vjp(y, g, /, axis=-1, *, temperature=1.0, where=None, out=None, split_every=None):
    """Lazy ``softmaxkit.softmax_vjp``: ``y (g - sum_j g_j y_j) / T``, 0 where ``y == 0``.

    One read of ``y`` and ``g`` for the row sums, one for the write.
    """
    return _vjp(y, g, axis, temperature, where, out, split_every, log=False)


def log_softmax_vjp(y, g, /, axis=-1, *, temperature=1.0, where=None, out=None, split_every=None):
    """Lazy ``softmaxkit.log_softmax_vjp``: ``(g - exp(y) sum_j g_j) / T``; 0 for empty rows."""
    return _vjp(y, g, axis, temperature, where, out, split_every, log=True)


def _lse_vjp_block(xb, lse, sign, bb, *rest, present, temperature):
    (wb,) = _unpack(rest, present)
    v = _scaled64(xb, temperature)
    with np.errstate(invalid="ignore", over="ignore"):
        r = bb * np.exp(v - lse) * sign
    ok = np.isfinite(lse) & (bb != 0)
    if wb is not None:
        ok &= wb
    r = np.where(ok, r, np.where(np.isnan(lse), np.nan, 0.0))
    return r


def logsumexp_vjp(
    x, g, /, axis=-1, *, b=None, keepdims=False, temperature=1.0, where=None, split_every=None
):
    """Lazy ``softmaxkit.logsumexp_vjp``: ``g b e^{x/T - lse} sign / T`` (``g softmax / T``).

    ``g`` has the forward output's shape (NumPy or dask).  One state reduction, then
    a blockwise write.
    """
    known_shape(x, "x")
    known_shape(g, "g")
    p = prepare(x, axis, temperature, where, None)
    gd = g if isinstance(g, da.Array) else np.asarray(g, dtype=np.float64)
    if not keepdims and p.axes:
        expand = da.expand_dims if isinstance(gd, da.Array) else np.expand_dims
        gd = expand(gd, p.axes)
    try:
        np.broadcast_shapes(np.shape(gd), x.shape)
    except ValueError:
        raise ValueError(f"g with shape {np.shape(g)} does not match the reduced shape") from None
    gd = align(gd, x, "g", dtype=np.float64, kind="real")
    if b is None:
        sm = softmax(x, axis=p.axes, temperature=p.temperature, where=where, dtype=p.compute)
        res = gd * sm.astype(np.float64) / p.temperature
        return res.astype(p.out_dtype)
    bb = align(b, x, "b", dtype=np.float64, kind="real")
    lse, sign = logsumexp(
        x, axis=p.axes, b=bb, keepdims=False, return_sign=True, temperature=p.temperature,
        where=where, dtype=np.float64, split_every=split_every,
    )  # fmt: skip
    ind = tuple(range(x.ndim))
    opt = [] if p.where is None else [p.where, ind]
    r = da.blockwise(
        _lse_vjp_block, ind, x, ind, _expand_lazy(lse, p), ind, _expand_lazy(sign, p), ind,
        bb, ind, *opt, dtype=np.float64, meta=np.empty((0,) * x.ndim, dtype=np.float64),
        present=(p.where is not None,), temperature=p.temperature,
    )  # fmt: skip
    return (gd * r / p.temperature).astype(p.out_dtype)


def _expand_lazy(a, p):
    """A batch-shaped lazy array with size-1 reduced axes, chunked to broadcast over x."""
    a = da.expand_dims(a, p.axes) if p.axes else a
    return da.broadcast_to(a, p.x.shape, chunks=p.x.chunks)
