"""Eager NumPy driver: lay the reduced axes out as contiguous rows, call a kernel.

The public layer (``softmax.py``) has validated every argument; this module only
moves data.  Kernels are imported lazily so that ``import softmaxkit`` does not
import Numba.
"""

from __future__ import annotations

import numpy as np

__all__ = ["dense_logsumexp", "dense_softmax", "rows_view"]


def _kernels():
    from ._kernels import rows

    return rows


def rows_view(a: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    """Return ``a`` with ``axes`` moved last and flattened: shape ``[R, n]``.

    A view when the layout allows it (always for C-contiguous input reduced over
    its trailing axes), else a copy.
    """
    k = len(axes)
    moved = np.moveaxis(a, axes, tuple(range(a.ndim - k, a.ndim))) if k else a
    batch = moved.shape[: a.ndim - k]
    n = int(np.prod(moved.shape[a.ndim - k :], dtype=np.int64))
    r = int(np.prod(batch, dtype=np.int64))
    return moved.reshape(r, n)


def _shares(a: np.ndarray | None, b: np.ndarray | None) -> bool:
    return a is not None and b is not None and np.may_share_memory(a, b)


def _same_view(a: np.ndarray, b: np.ndarray) -> bool:
    return (
        a.__array_interface__["data"][0] == b.__array_interface__["data"][0]
        and a.strides == b.strides
        and a.shape == b.shape
    )


def _dummy(shape: tuple[int, int], dtype) -> np.ndarray:
    return np.broadcast_to(np.ones(1, dtype=dtype), shape)


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
    x2 = rows_view(x, axes).astype(compute, copy=False)
    mask2 = rows_view(where, axes) if where is not None else None
    out2 = rows_view(out, axes)
    direct = out.dtype == compute and np.may_share_memory(out2, out)
    if direct and _shares(x2, out2) and not _same_view(x2, out2):
        x2 = x2.copy()  # out overlaps the input in another layout: read a private copy
    target = out2 if direct else np.empty(x2.shape, dtype=compute)
    k = _kernels()
    k.softmax_rows(
        x2,
        mask2 if mask2 is not None else _dummy(x2.shape, np.bool_),
        _dummy(x2.shape, compute),
        np.float64(temperature),  # float64: float32(T) can round to 0 or inf
        mask2 is not None,
        log,
        target,
    )
    if target is not out2:
        moved = np.moveaxis(out, axes, tuple(range(out.ndim - len(axes), out.ndim)))
        # Rounding to a narrower out dtype may overflow (log_softmax -7e4 -> float16
        # -inf): the correctly rounded value, so the cast warning is silenced.
        with np.errstate(over="ignore", under="ignore"):
            moved[...] = target.reshape(moved.shape)
    return out


def dense_logsumexp(
    x: np.ndarray,
    axes: tuple[int, ...],
    temperature: float,
    where: np.ndarray | None,
    b: np.ndarray | None,
    compute: np.dtype,
) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(lse, sign)`` in ``compute`` dtype, shaped like the batch (reduced) shape."""
    batch = tuple(s for i, s in enumerate(x.shape) if i not in axes)
    x2 = rows_view(x, axes).astype(compute, copy=False)
    r = x2.shape[0]
    lse = np.empty(r, dtype=np.float64)
    sign = np.empty(r, dtype=np.float64)
    if x2.shape[1] == 0:
        lse.fill(-np.inf)
        sign.fill(0.0)
    elif r:
        mask2 = rows_view(where, axes) if where is not None else None
        b2 = rows_view(b, axes) if b is not None else None
        _kernels().logsumexp_rows(
            x2,
            mask2 if mask2 is not None else _dummy(x2.shape, np.bool_),
            b2 if b2 is not None else _dummy(x2.shape, compute),
            np.float64(temperature),  # float64: float32(T) can round to 0 or inf
            mask2 is not None,
            b2 is not None,
            lse,
            sign,
        )
    return lse.reshape(batch), sign.reshape(batch)
