"""The Dask driver's toolkit, shared by every family module of the package.

Inputs (:class:`Prepared`, :func:`prepare`, :func:`align`), the lazy ``(m, s)``
state of every row in flox's three steps (chunk: :func:`block_states`; combine /
aggregate: :func:`state`; finalize: :func:`map_with_state` or ``map_blocks`` of
:func:`_finalize`) and the small per-block helpers the families share.  See the
package docstring (:mod:`softmaxkit.drivers.dask`) for the algorithm.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Any

import dask.array as da
import numpy as np

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
    "known_shape",
    "map_with_state",
    "prepare",
    "state",
    "tree_reduce",
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
    return tree_reduce(
        blocks, _merge_along, p.axes, keepdims=keepdims, split_every=split_every, name="state"
    )


def tree_reduce(a: Any, combine, axis: Any, *, keepdims: bool, split_every: Any, name: str, **kw):
    """Tree-reduce per-block partials ``a`` (already size 1 per block along ``axis``).

    ``dask.array.reduction`` with ``combine`` as both the combine and the aggregate
    step (it must be associative) and no chunk step; the result keeps ``a``'s dtype.
    The graph keys are named ``softmaxkit-<name>``; ``kw`` goes to the reduction
    (e.g. ``output_size``).
    """
    naxes = len(axis) if isinstance(axis, tuple) else 1
    return da.reduction(
        a,
        chunk=_identity,
        combine=combine,
        aggregate=combine,
        axis=axis,
        keepdims=keepdims,
        dtype=a.dtype,
        split_every=split_every,
        concatenate=True,
        meta=np.empty((0,) * (a.ndim if keepdims else a.ndim - naxes), dtype=a.dtype),
        name=f"softmaxkit-{name}",
        **kw,
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


def _unpack(rest, present):
    it = iter(rest)
    return [next(it) if flag else None for flag in present]


def _sum_fields(a, axis, keepdims):
    """Sum every field of the structured array ``a`` along ``axis`` (a tuple).

    A reduction step of per-row partial sums; a bool field becomes "any" (its count
    is cast back to bool).
    """
    out = np.empty(
        tuple(1 if i in axis else n for i, n in enumerate(a.shape))
        if keepdims
        else tuple(n for i, n in enumerate(a.shape) if i not in axis),
        dtype=a.dtype,
    )
    for f in a.dtype.names:
        out[f] = a[f].sum(axis=axis, keepdims=keepdims)
    return out
