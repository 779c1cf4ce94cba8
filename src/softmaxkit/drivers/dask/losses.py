"""Dask driver, losses family: ``cross_entropy`` (loss and gradient).

The ``(m, s)`` state of the logits (one read), then one blockwise pass that sums
``q (-log_softmax)`` per row and tree-reduces the partial sums; with
``return_grad`` the gradient is written from the same blocks.  The per-block
log-probabilities are the dense family's :func:`~softmaxkit.drivers.dask.dense._normalize_block`.
"""

from __future__ import annotations

from typing import Any

import dask.array as da
import numpy as np

from ..._core.losscommon import _at, check_real, check_reduction, class_indices
from ..._core.validate import as_input_array
from ._common import (
    _finalize,
    _sum_fields,
    _unpack,
    align,
    known_shape,
    prepare,
    state,
    tree_reduce,
)
from .dense import _normalize_block

__all__ = ["cross_entropy"]


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
    sums = tree_reduce(partial, _sum_fields, ax, keepdims=False, split_every=split_every, name="ce")
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
