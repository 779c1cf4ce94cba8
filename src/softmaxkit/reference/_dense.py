"""Reference twins of the dense ops: softmax, log_softmax, logsumexp (float64 NumPy)."""

from __future__ import annotations

from typing import Any, Literal, overload

import numpy as np

from .._core.typing import ArrayLike, Axis, FloatArray
from .._core.validate import (
    as_input_array,
    normalize_axis,
    validate_temperature,
    validate_weights,
    validate_where,
)

__all__ = ["log_softmax", "logsumexp", "softmax"]


def _prepare(x: Any, axis: Any, temperature: Any, where: Any, b: Any = None) -> Any:
    arr = as_input_array(x)
    axes = normalize_axis(axis, arr.ndim)
    t = validate_temperature(temperature)
    # x / T may overflow to +-inf for a tiny T; the +inf rows of the contract then
    # apply, exactly as in the fast path (which also divides in float64).
    with np.errstate(over="ignore"):
        a = arr.astype(np.float64) / t
    include = np.ones(a.shape, dtype=bool)
    if where is not None:
        include &= validate_where(where, a.shape)
    w: Any = np.ones(a.shape)
    if b is not None:
        w = validate_weights(b, a.shape, np.float64)
        include &= w != 0
    return a, axes, include, w


def _to_rows(a: Any, axes: Any) -> Any:
    """Move ``axes`` last and flatten them: returns the [R, n] array and the moved shape."""
    k = len(axes)
    moved = np.moveaxis(a, axes, tuple(range(a.ndim - k, a.ndim)))
    rows = int(np.prod(moved.shape[: a.ndim - k], dtype=int))
    n = int(np.prod(moved.shape[a.ndim - k :], dtype=int))
    return moved.reshape(rows, n), moved.shape


def _from_rows(r: Any, axes: Any, moved_shape: Any, ndim: Any) -> Any:
    k = len(axes)
    return np.moveaxis(r.reshape(moved_shape), tuple(range(ndim - k, ndim)), axes)


def _stats(a: Any, include: Any, w: Any) -> Any:
    """Per-row statistics of 2-D ``a`` (rows = reductions), as [R, 1] columns.

    ``m``: max of the included values; ``total``: the weighted sum of
    ``exp(a - m)``; ``lse``/``sign``: its log-magnitude and sign, with the first
    maximal term split off so that ``log1p`` keeps relative accuracy.
    """
    r, n = a.shape
    with np.errstate(invalid="ignore", over="ignore", divide="ignore", under="ignore"):
        has_nan = np.any(include & (np.isnan(a) | np.isnan(w)), axis=1, keepdims=True)
        vals = np.where(include & ~np.isnan(a), a, -np.inf)
        m = np.max(vals, axis=1, keepdims=True, initial=-np.inf)
        finite_m = np.isfinite(m)
        terms = np.where(include, w * np.exp(vals - np.where(finite_m, m, 0.0)), 0.0)
        k = np.argmax(vals, axis=1)[:, None] if n else np.zeros((r, 1), dtype=int)
        first = (np.arange(n)[None, :] == k) & finite_m
        wk = np.sum(np.where(first, w, 0.0), axis=1, keepdims=True)
        rest = np.sum(np.where(first, 0.0, terms), axis=1, keepdims=True)
        total = wk + rest
        safe_wk = np.where(wk != 0, wk, 1.0)
        ratio = np.where(wk != 0, rest / safe_wk, np.inf)
        good = (ratio > -1) & (ratio <= 1)
        logabs = np.where(
            good,
            np.log(np.abs(safe_wk)) + np.log1p(np.where(good, ratio, 0.0)),
            np.log(np.abs(total)),
        )
        lse = np.where(finite_m, m + logabs, m)
        sign = np.sign(total)
        # +inf rows: the result's sign comes from the total weight of the +inf entries
        winf = np.sum(np.where(include & (a == np.inf), w, 0.0), axis=1, keepdims=True)
        posinf = m == np.inf
        lse = np.where(posinf, np.where(winf == 0, np.nan, np.inf), lse)
        sign = np.where(posinf, np.where(winf == 0, np.nan, np.sign(winf)), sign)
        sign = np.where(m == -np.inf, 0.0, sign)
        lse = np.where(has_nan, np.nan, lse)
        sign = np.where(has_nan, np.nan, sign)
    return m, total, lse, sign, has_nan, logabs


@overload
def logsumexp(
    x: ArrayLike,
    /,
    axis: Axis = -1,
    *,
    b: ArrayLike | None = None,
    keepdims: bool = False,
    return_sign: Literal[False] = False,
    temperature: float = 1.0,
    where: ArrayLike | None = None,
) -> FloatArray: ...


@overload
def logsumexp(
    x: ArrayLike,
    /,
    axis: Axis = -1,
    *,
    b: ArrayLike | None = None,
    keepdims: bool = False,
    return_sign: Literal[True],
    temperature: float = 1.0,
    where: ArrayLike | None = None,
) -> tuple[FloatArray, FloatArray]: ...


@overload
def logsumexp(
    x: ArrayLike,
    /,
    axis: Axis = -1,
    *,
    b: ArrayLike | None = None,
    keepdims: bool = False,
    return_sign: bool,
    temperature: float = 1.0,
    where: ArrayLike | None = None,
) -> FloatArray | tuple[FloatArray, FloatArray]: ...


def logsumexp(
    x: ArrayLike,
    /,
    axis: Axis = -1,
    *,
    b: ArrayLike | None = None,
    keepdims: bool = False,
    return_sign: bool = False,
    temperature: float = 1.0,
    where: ArrayLike | None = None,
) -> FloatArray | tuple[FloatArray, FloatArray]:
    """Reference ``logsumexp`` (float64).  See :func:`softmaxkit.logsumexp`."""
    a, axes, include, w = _prepare(x, axis, temperature, where, b)
    a2, moved = _to_rows(a, axes)
    _, _, lse, sign, _, _ = _stats(a2, _to_rows(include, axes)[0], _to_rows(w, axes)[0])
    if not return_sign:
        lse = np.where(sign < 0, np.nan, lse)
    batch = moved[: a.ndim - len(axes)]
    shape = tuple(1 if i in axes else s for i, s in enumerate(a.shape)) if keepdims else batch
    lse = lse.reshape(shape)
    sign = sign.reshape(shape)
    lse = lse[()] if lse.ndim == 0 else lse
    sign = sign[()] if sign.ndim == 0 else sign
    return (lse, sign) if return_sign else lse


def _softmax_like(x: Any, axis: Any, temperature: Any, where: Any, log: Any) -> Any:
    a0, axes, include0, w0 = _prepare(x, axis, temperature, where)
    a, moved = _to_rows(a0, axes)
    include = _to_rows(include0, axes)[0]
    m, total, _, _, has_nan, logabs = _stats(a, include, _to_rows(w0, axes)[0])
    with np.errstate(invalid="ignore", over="ignore", divide="ignore", under="ignore"):
        hit = include & (a == np.inf)
        count = np.maximum(np.sum(hit, axis=1, keepdims=True), 1)
        if log:
            regular = (a - m) - logabs
            infrow = np.where(hit, -np.log(count), -np.inf)
            res = np.where(m == np.inf, infrow, regular)
            res = np.where(include & (m > -np.inf), res, -np.inf)
        else:
            regular = np.exp(a - m) / total
            infrow = np.where(hit, 1.0 / count, 0.0)
            res = np.where(m == np.inf, infrow, regular)
            res = np.where(include & (m > -np.inf), res, 0.0)
        res = np.where(has_nan, np.nan, res)
    res = _from_rows(res, axes, moved, a0.ndim)
    return res[()] if res.ndim == 0 else res


def softmax(
    x: ArrayLike,
    /,
    axis: Axis = -1,
    *,
    temperature: float = 1.0,
    where: ArrayLike | None = None,
) -> FloatArray:
    """Reference ``softmax`` (float64).  See :func:`softmaxkit.softmax`."""
    return _softmax_like(x, axis, temperature, where, log=False)


def log_softmax(
    x: ArrayLike,
    /,
    axis: Axis = -1,
    *,
    temperature: float = 1.0,
    where: ArrayLike | None = None,
) -> FloatArray:
    """Reference ``log_softmax`` (float64).  See :func:`softmaxkit.log_softmax`."""
    return _softmax_like(x, axis, temperature, where, log=True)
