"""Dask driver, gradients: ``softmax_vjp``, ``log_softmax_vjp``, ``logsumexp_vjp``.

The softmax VJPs: one read of ``y`` and ``g`` for the row sums (a tree reduction
of structured partial sums), one for the write.  ``logsumexp_vjp``: the dense
family's state reduction (``softmax`` or, with ``b``, ``logsumexp``), then a
blockwise write.
"""

from __future__ import annotations

import dask.array as da
import numpy as np

from ._common import _expand, _scaled64, _sum_fields, _unpack, align, known_shape, prepare
from .dense import logsumexp, softmax

__all__ = ["log_softmax_vjp", "logsumexp_vjp", "softmax_vjp"]


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
        terms, chunk=_sum_fields, combine=_sum_fields, aggregate=_sum_fields, axis=p.axes,
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
