"""Eager NumPy driver: find a copy-free row or column layout, call a fused kernel.

The public layer (``softmax.py``) has validated every argument; this module only
moves data.  Kernels are imported lazily so that ``import softmaxkit`` does not
import Numba.

Layouts.  The array is looked at in memory order (axes sorted by stride, size-1
axes dropped); when it is dense in that order and the reduced axes form one run,
it is viewed without a copy as ``[P, n, Q]`` (reduce the middle axis):

* ``Q == 1``: rows (C order, reduced axes trailing) -> the row kernels;
* ``Q > 1``: columns (e.g. axis 0 of a C array, or the last axis of an F array)
  -> the column kernels, which stream over the ``n`` reduced rows with per-column
  state, ``Q`` values at a time (no transpose);
* otherwise (non-dense strides, several separated runs of reduced axes) the
  reduced axes are moved last into one contiguous copy of the input.

float16 is read and written as its bits (uint16) and converted inside the kernels.
Integer and bool inputs are converted to float64 first (one temporary).
Peak extra memory is therefore zero beyond the output for float16/32/64 input in a
dense layout (plus O(rows) float64 state when long rows are split), otherwise one
input-sized temporary (and one output-sized temporary when ``out`` has a layout
different from the input's).
"""

from __future__ import annotations

import functools
import itertools
import math

import numpy as np

__all__ = [
    "dense_logsumexp",
    "dense_softmax",
    "direct_rows",
    "last_axis_logsumexp",
    "last_axis_softmax",
    "rows_view",
    "same_memory",
]

_KERNELS = None


def _kernels():
    global _KERNELS
    if _KERNELS is None:
        from .._kernels import cols, rows

        _KERNELS = (rows, cols)
    return _KERNELS


def rows_view(a: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    """Return ``a`` with ``axes`` moved last and flattened: shape ``[R, n]``.

    A view when the layout allows it (always for C-contiguous input reduced over
    its trailing axes), else a copy.
    """
    k = len(axes)
    last = tuple(range(a.ndim - k, a.ndim))
    # (np.moveaxis costs ~2 us even when there is nothing to move)
    moved = np.moveaxis(a, axes, last) if k and tuple(axes) != last else a
    batch = moved.shape[: a.ndim - k]
    n = math.prod(moved.shape[a.ndim - k :])
    r = math.prod(batch)
    return moved.reshape(r, n)


def direct_rows(out: np.ndarray, axes: tuple[int, ...], dtype) -> np.ndarray | None:
    """``rows_view(out, axes)`` when it is a view of ``out`` a kernel can write as
    C-contiguous ``[R, n]`` rows of ``dtype``, else None (the caller uses a temporary).
    """
    if out.dtype != dtype:
        return None
    view = rows_view(out, axes)
    if view.flags.c_contiguous and view.flags.writeable and np.may_share_memory(view, out):
        return view
    return None


def same_memory(a: np.ndarray, b: np.ndarray) -> bool:
    """True when ``a`` and ``b`` are the same elements in the same layout."""
    return (
        a.__array_interface__["data"][0] == b.__array_interface__["data"][0]
        and a.strides == b.strides
        and a.shape == b.shape
    )


def plan(a: np.ndarray, axes: tuple[int, ...]):
    """``(P, n, Q, order)`` when ``a`` is a dense ``[P, n, Q]`` block in memory order.

    ``order`` (a tuple) is the axis order (largest stride first) that makes ``a``
    C-contiguous; None when the layout needs a copy.  Memoised on the layout: the
    search cost about 2 us a call, and each call plans ``x`` and ``out``.
    """
    return _plan(a.shape, a.strides, a.itemsize, tuple(axes))


@functools.lru_cache(maxsize=512)
def _plan(shape: tuple[int, ...], strides: tuple[int, ...], itemsize: int, axes: tuple[int, ...]):
    ndim = len(shape)
    keep = [i for i in range(ndim) if shape[i] != 1]
    order = tuple(sorted(keep, key=lambda i: -strides[i]))
    step = itemsize
    for i in reversed(order):
        if strides[i] != step:
            return None
        step *= shape[i]
    runs: list[list] = []
    for i in order:
        red = i in axes
        if runs and runs[-1][0] == red:
            runs[-1][1] *= shape[i]
        else:
            runs.append([red, shape[i]])
    kinds = [r[0] for r in runs]
    sizes = [r[1] for r in runs]
    if kinds == []:
        return 1, 1, 1, order
    if kinds == [True]:
        return 1, sizes[0], 1, order
    if kinds == [False]:
        return sizes[0], 1, 1, order
    if kinds == [False, True]:
        return sizes[0], sizes[1], 1, order
    if kinds == [True, False]:
        return 1, sizes[0], sizes[1], order
    if kinds == [False, True, False]:
        return sizes[0], sizes[1], sizes[2], order
    return None


def _block_view(a: np.ndarray, P: int, n: int, Q: int, order) -> np.ndarray:
    """The dense ``[P, n, Q]`` view of an array whose plan is (P, n, Q, order)."""
    if a.flags.c_contiguous:
        return a.reshape(P, n, Q)
    full = list(order) + [i for i in range(a.ndim) if i not in order]
    return a.transpose(full).reshape(P, n, Q)  # C-contiguous after the transpose: a view


def _aux_view(w: np.ndarray, order, axes, P: int, n: int, Q: int) -> np.ndarray:
    """``where``/``b`` (same shape as x, any strides, usually broadcast) as ``[P, n, Q]``.

    Merges the axes of each run of ``order`` when their strides allow it (dense or all
    zero); else a dense copy in the input's memory order (one bool/float temporary).
    """
    groups: list[list[int]] = []
    for i in order:
        red = i in axes
        if groups and (groups[-1][0] in axes) == red:
            groups[-1].append(i)
        else:
            groups.append([i])
    strides = []
    for g in groups:
        if all(w.strides[k] == 0 for k in g):
            strides.append(0)
            continue
        if any(w.strides[a] != w.strides[b] * w.shape[b] for a, b in itertools.pairwise(g)):
            full = list(order) + [i for i in range(w.ndim) if i not in order]
            return np.ascontiguousarray(w.transpose(full)).reshape(P, n, Q)
        strides.append(w.strides[g[-1]])
    kinds = [g[0] in axes for g in groups]
    sp, sn, sq = 0, 0, 0
    k = 0
    if k < len(kinds) and not kinds[k]:
        sp = strides[k]
        k += 1
    if k < len(kinds) and kinds[k]:
        sn = strides[k]
        k += 1
    if k < len(kinds):
        sq = strides[k]
    return np.lib.stride_tricks.as_strided(w, (P, n, Q), (sp, sn, sq), writeable=False)


def _compute_input(x: np.ndarray, compute: np.dtype) -> np.ndarray:
    """The array the kernels read: float16 as bits, float32/64 as is, others cast."""
    if not x.dtype.isnative:  # Numba reads native byte order only
        x = x.astype(x.dtype.newbyteorder("="))
    c = x.dtype.char  # (compared as characters: a dtype == type test costs ~0.3 us)
    if c == "f" or c == "d":
        return x
    if c == "e":
        return x.view(np.uint16) if compute.char == "f" else x.astype(compute)
    return x.astype(compute)


def _shares(a: np.ndarray | None, b: np.ndarray | None) -> bool:
    return a is not None and b is not None and np.may_share_memory(a, b)


def _prepare(x, axes, temperature, compute):
    """(xk, T, invT, compute) with the tiny-temperature fallback applied."""
    rows, _ = _kernels()
    invT = rows.inv_temperature(temperature, compute)
    if invT is None:
        # 1/T overflows (or underflows) the compute dtype: divide once in float64 and
        # use T = 1 -- exactly the reference's x / T, including overflow to +-inf.
        with np.errstate(over="ignore", under="ignore"):
            xk = x.astype(np.float64) / temperature
        return xk, 1.0, np.float64(1.0), np.dtype(np.float64)
    return _compute_input(x, compute), float(temperature), invT, compute


def dense_softmax(
    x: np.ndarray,
    axes: tuple[int, ...],
    temperature: float,
    where: np.ndarray | None,
    compute: np.dtype,
    out: np.ndarray,
    log: bool,
) -> np.ndarray:
    """Write softmax (or log_softmax) of ``x`` over ``axes`` into ``out`` and return it."""
    if x.size == 0:
        return out
    rows, cols = _kernels()
    xk, T, invT, compute = _prepare(x, axes, temperature, compute)
    outk = out
    if out.dtype == np.float16:
        # float16 is written as its bits from float32; from float64 NumPy does the one
        # correct rounding (LLVM has no double -> half conversion here)
        outk = out.view(np.uint16) if compute == np.float32 else out
    p = plan(xk, axes)
    copied = p is None
    if copied:
        # no copy-free layout: one contiguous copy with the reduced axes last
        xk = np.ascontiguousarray(rows_view(xk, axes))
        P, n = xk.shape
        Q = 1
        x3 = xk.reshape(P, n, 1)
        m3 = None if where is None else np.ascontiguousarray(rows_view(where, axes))[:, :, None]
        tdt = compute if outk.dtype == np.float16 else outk.dtype.newbyteorder("=")
        target = np.empty(xk.shape, dtype=tdt)
        o3 = target.reshape(P, n, 1)
    else:
        P, n, Q, order = p
        x3 = _block_view(xk, P, n, Q, order)
        m3 = None if where is None else _aux_view(where, order, axes, P, n, Q)
        target = outk
        if (
            plan(outk, axes) != p
            or (_shares(xk, outk) and not same_memory(xk, outk))
            or _shares(where, outk)
            or outk.dtype == np.float16
            or not outk.dtype.isnative
        ):
            # out in another layout, or overlapping x (or where) in any way but as
            # exactly the same view (as NumPy's ufuncs): write a private buffer in x's
            # layout, then copy
            tdt = compute if outk.dtype == np.float16 else outk.dtype.newbyteorder("=")
            target = np.empty_like(xk, dtype=tdt)
            if plan(target, axes) != p:  # pragma: no cover - empty_like keeps the order
                target = np.ascontiguousarray(target)
        o3 = _block_view(target, P, n, Q, order)
    if Q == 1:
        rows.softmax_rows2d(
            x3[:, :, 0], None if m3 is None else m3[:, :, 0], o3[:, :, 0], T, invT, log
        )
    else:
        cols.softmax_cols3d(x3, m3, o3, T, invT, log)
    if target is not outk:
        # rounding to a narrower out dtype may overflow: the correctly rounded inf
        with np.errstate(over="ignore"):
            if copied:
                moved = np.moveaxis(outk, axes, tuple(range(out.ndim - len(axes), out.ndim)))
                moved[...] = target.reshape(moved.shape)
            else:
                outk[...] = target
    return out


_NO_SIGN = np.empty(0)  # logsumexp without its sign


def last_axis_softmax(x: np.ndarray, out: np.ndarray, log: bool, temperature: float) -> np.ndarray:
    """``dense_softmax`` over the last axis for a C-contiguous float32 or float64 ``x``
    and an ``out`` of its shape and dtype that does not overlap it, at a temperature
    in ``[1e-30, 1e30]`` (the public layer's fast path has checked all that): the row
    kernels directly."""
    rows, _ = _kernels()
    n = x.shape[-1]
    invT = rows.inv_temperature(temperature, x.dtype)
    rows.softmax_rows2d(x.reshape(-1, n), None, out.reshape(-1, n), temperature, invT, log)
    return out


def last_axis_logsumexp(x: np.ndarray, lse: np.ndarray, temperature: float) -> None:
    """``dense_logsumexp`` over the last axis into ``lse`` (the batch shape,
    C-contiguous, ``x``'s dtype), for the inputs of ``last_axis_softmax``."""
    rows, _ = _kernels()
    n = x.shape[-1]
    invT = rows.inv_temperature(temperature, x.dtype)
    x2 = x.reshape(-1, n)
    rows.logsumexp_rows2d(x2, None, None, temperature, invT, lse.reshape(-1), _NO_SIGN)


def dense_logsumexp(
    x: np.ndarray,
    axes: tuple[int, ...],
    temperature: float,
    where: np.ndarray | None,
    b: np.ndarray | None,
    compute: np.dtype,
    out_dtype: np.dtype | None = None,
    need_sign: bool = True,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Return ``(lse, sign)`` shaped like the batch (reduced) shape.

    ``lse`` is float64, or ``out_dtype`` when that is float32/float64 (the float64
    result rounded once, written by the kernel: no float64 temporary); ``sign`` is
    float64, or None when ``need_sign`` is False.
    """
    batch = tuple(s for i, s in enumerate(x.shape) if i not in axes)
    nbatch = math.prod(batch)
    ldt = out_dtype if out_dtype in (np.dtype(np.float32), np.dtype(np.float64)) else None
    lse = np.empty(nbatch, dtype=ldt or np.float64)
    sign = np.empty(nbatch if need_sign else 0, dtype=np.float64)
    if x.size == 0:
        lse.fill(-np.inf)
        sign.fill(0.0)
        return lse.reshape(batch), (sign.reshape(batch) if need_sign else None)
    rows, cols = _kernels()
    xk, T, invT, compute = _prepare(x, axes, temperature, compute)
    p = plan(xk, axes)
    if p is None:
        xk = np.ascontiguousarray(rows_view(xk, axes))
        P, n = xk.shape
        Q = 1
        order = [i for i in range(x.ndim) if i not in axes] + list(axes)
        x3 = xk.reshape(P, n, 1)
        m3 = None if where is None else np.ascontiguousarray(rows_view(where, axes))[:, :, None]
        b3 = None if b is None else np.ascontiguousarray(rows_view(b, axes))[:, :, None]
    else:
        P, n, Q, order = p
        x3 = _block_view(xk, P, n, Q, order)
        m3 = None if where is None else _aux_view(where, order, axes, P, n, Q)
        b3 = None if b is None else _aux_view(b, order, axes, P, n, Q)
    kept = [i for i in order if i not in axes]
    if Q == 1 and kept == sorted(kept):
        # the kept axes are in axis order: the kernel writes the results in place
        rows.logsumexp_rows2d(
            x3[:, :, 0],
            None if m3 is None else m3[:, :, 0],
            None if b3 is None else b3[:, :, 0],
            T,
            invT,
            lse,
            sign,
        )
        return lse.reshape(batch), (sign.reshape(batch) if need_sign else None)
    buf_l = np.empty((P, Q))
    buf_s = np.empty((P, Q))
    if Q == 1:
        rows.logsumexp_rows2d(
            x3[:, :, 0],
            None if m3 is None else m3[:, :, 0],
            None if b3 is None else b3[:, :, 0],
            T,
            invT,
            buf_l[:, 0],
            buf_s[:, 0],
        )
    else:
        cols.logsumexp_cols3d(x3, m3, b3, T, invT, buf_l, buf_s)
    # (P, Q) follows the memory order of the kept axes: put them back in axis order
    kshape = [x.shape[i] for i in kept]
    perm = tuple(int(k) for k in np.argsort(kept))
    with np.errstate(over="ignore"):  # a float32 lse may round to +-inf: correct
        lse[...] = buf_l.reshape(kshape).transpose(perm).reshape(-1)
    if not need_sign:
        return lse.reshape(batch), None
    sign[...] = buf_s.reshape(kshape).transpose(perm).reshape(-1)
    return lse.reshape(batch), sign.reshape(batch)
