"""Dask driver, dense family: ``softmax``, ``log_softmax``, ``logsumexp``.

``logsumexp`` reads ``x`` once (the state reduction, then a finalising map over
the small state); ``softmax`` and ``log_softmax`` twice (the state, then
:func:`~softmaxkit.drivers.dask._common.map_with_state` normalising every block).
"""

from __future__ import annotations

import functools

import numpy as np

from ._common import (
    _expand,
    _finalize,
    _log_s,
    _scaled64,
    align,
    map_with_state,
    prepare,
    state,
)

__all__ = ["log_softmax", "logsumexp", "softmax"]


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
