"""Reference twins of the segment ops, the running log-sum-exp and logmatmulexp.

float64 NumPy, written for clarity: each segment goes through the dense
reference twins (``_dense``); the scan keeps the running state ``(m, s)`` with a
Neumaier-compensated sum in a Python loop; ``logmatmulexp`` forms
``A[i, :, None] + B`` one row ``i`` at a time (a [J, K] temporary, never [I, J, K]).
"""

from __future__ import annotations

import math
from typing import Any, Literal, overload

import numpy as np

from .._core.typing import ArrayLike, FloatArray
from .._core.validate import as_input_array, validate_where
from . import _dense

__all__ = [
    "logcumsumexp",
    "logmatmulexp",
    "segment_log_softmax",
    "segment_logsumexp",
    "segment_softmax",
]


def _ids(n: Any, segment_ids: Any, offsets: Any, num_segments: Any) -> Any:
    if offsets is not None:
        o = np.asarray(offsets, dtype=np.int64)
        return np.repeat(np.arange(o.size - 1), np.diff(o)), o.size - 1
    ids = np.asarray(segment_ids, dtype=np.int64)
    num = int(ids.max()) + 1 if num_segments is None and ids.size else (num_segments or 0)
    return ids, num


def segment_logsumexp(
    x: ArrayLike,
    /,
    segment_ids: ArrayLike | None = None,
    *,
    offsets: ArrayLike | None = None,
    num_segments: int | None = None,
    axis: int = 0,
    temperature: float = 1.0,
    where: ArrayLike | None = None,
) -> FloatArray:
    """Per-segment :func:`softmaxkit.reference.logsumexp` along ``axis``."""
    a = as_input_array(x).astype(np.float64)
    ax = axis % a.ndim
    ids, num = _ids(a.shape[ax], segment_ids, offsets, num_segments)
    w = validate_where(where, a.shape)
    parts = []
    for g in range(num):
        sel = np.flatnonzero(ids == g)
        wg = None if w is None else np.take(w, sel, axis=ax)
        parts.append(
            _dense.logsumexp(
                np.take(a, sel, axis=ax),
                axis=ax,
                temperature=temperature,
                where=wg,
                keepdims=True,
            )
        )
    if not parts:
        shape = list(a.shape)
        shape[ax] = 0
        return np.empty(shape)
    return np.concatenate(parts, axis=ax)


def _segment_softmax(
    x: Any,
    segment_ids: Any,
    offsets: Any,
    num_segments: Any,
    axis: Any,
    temperature: Any,
    where: Any,
    op: Any,
) -> Any:
    a = as_input_array(x).astype(np.float64)
    ax = axis % a.ndim
    ids, num = _ids(a.shape[ax], segment_ids, offsets, num_segments)
    w = validate_where(where, a.shape)
    out = np.empty(a.shape)
    for g in range(num):
        sel = np.flatnonzero(ids == g)
        if sel.size == 0:
            continue
        wg = None if w is None else np.take(w, sel, axis=ax)
        r = op(np.take(a, sel, axis=ax), axis=ax, temperature=temperature, where=wg)
        idx = [slice(None)] * a.ndim
        idx[ax] = sel
        out[tuple(idx)] = r
    return out


def segment_softmax(
    x: ArrayLike,
    /,
    segment_ids: ArrayLike | None = None,
    *,
    offsets: ArrayLike | None = None,
    num_segments: int | None = None,
    axis: int = 0,
    temperature: float = 1.0,
    where: ArrayLike | None = None,
) -> FloatArray:
    """Per-segment :func:`softmaxkit.reference.softmax` along ``axis``."""
    return _segment_softmax(
        x, segment_ids, offsets, num_segments, axis, temperature, where, _dense.softmax
    )


def segment_log_softmax(
    x: ArrayLike,
    /,
    segment_ids: ArrayLike | None = None,
    *,
    offsets: ArrayLike | None = None,
    num_segments: int | None = None,
    axis: int = 0,
    temperature: float = 1.0,
    where: ArrayLike | None = None,
) -> FloatArray:
    """Per-segment :func:`softmaxkit.reference.log_softmax` along ``axis``."""
    return _segment_softmax(
        x, segment_ids, offsets, num_segments, axis, temperature, where, _dense.log_softmax
    )


def _scan_row(v: Any) -> Any:
    """Running log-sum-exp of a 1-D float64 row: state (m, s + c) with Neumaier's sum."""
    out = np.empty(v.size)
    m, s, c = -math.inf, 0.0, 0.0
    nan = False
    for j, x in enumerate(v.tolist()):
        if math.isnan(x) or nan:
            nan = True
            out[j] = math.nan
            continue
        if x > m:
            scale = 0.0 if m == -math.inf else math.exp(m - x)
            s, c = s * scale, c * scale
            term, m = 1.0, x
        else:
            term = 1.0 if x == m else math.exp(x - m)
        t = s + term  # Neumaier: keep the rounding error of every addition in c
        c += (s - t) + term if abs(s) >= abs(term) else (term - t) + s
        s = t
        tot = s + c
        out[j] = -math.inf if m == -math.inf else (m if m == math.inf else m + math.log(tot))
    return out


def logcumsumexp(
    x: ArrayLike, /, axis: int = -1, *, reverse: bool = False, where: ArrayLike | None = None
) -> FloatArray:
    """``log(cumsum(exp(x)))`` along ``axis`` (float64, see :func:`softmaxkit.logcumsumexp`)."""
    a = as_input_array(x).astype(np.float64)
    if a.ndim == 0:
        return a.copy()
    if where is not None:
        mask: Any = validate_where(where, a.shape)  # an array: where is not None
        a = np.where(mask, a, -np.inf)
    moved = np.moveaxis(a, axis, -1)
    rows = moved.reshape(math.prod(moved.shape[:-1]), moved.shape[-1])
    out = np.empty(rows.shape)
    for i, r in enumerate(rows):
        out[i] = _scan_row(r[::-1])[::-1] if reverse else _scan_row(r)
    return np.moveaxis(out.reshape(moved.shape), -1, axis)


@overload
def logmatmulexp(
    A: ArrayLike,
    B: ArrayLike,
    /,
    *,
    a_sign: ArrayLike | None = None,
    b_sign: ArrayLike | None = None,
    return_sign: Literal[False] = False,
) -> FloatArray: ...


@overload
def logmatmulexp(
    A: ArrayLike,
    B: ArrayLike,
    /,
    *,
    a_sign: ArrayLike | None = None,
    b_sign: ArrayLike | None = None,
    return_sign: Literal[True],
) -> tuple[FloatArray, FloatArray]: ...


def logmatmulexp(
    A: ArrayLike,
    B: ArrayLike,
    /,
    *,
    a_sign: ArrayLike | None = None,
    b_sign: ArrayLike | None = None,
    return_sign: bool = False,
) -> FloatArray | tuple[FloatArray, FloatArray]:
    """``log(sum_j exp(A[..., i, j] + B[..., j, k]))`` via the dense reference logsumexp.

    With signs (see :func:`softmaxkit.logmatmulexp`): ``log|S|`` of
    ``S = sum_j sign(a_sign) sign(b_sign) exp(A + B)``, each sum shifted by its
    largest exponent and added with ``math.fsum`` (correctly rounded: a cancelling
    sum keeps the accuracy of its float64 terms); ``return_sign`` adds ``sign(S)``.
    """
    a = as_input_array(A, "A").astype(np.float64)
    b = as_input_array(B, "B").astype(np.float64)
    batch = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    a = np.broadcast_to(a, batch + a.shape[-2:])
    b = np.broadcast_to(b, batch + b.shape[-2:])
    out = np.empty((*batch, a.shape[-2], b.shape[-1]))
    if a_sign is None and b_sign is None:
        for idx in np.ndindex(*batch):
            for i in range(a.shape[-2]):
                out[(*idx, i)] = _dense.logsumexp(a[(*idx, i)][:, None] + b[idx], axis=0)
        if not return_sign:
            return out
        sgn = np.where(out == -np.inf, 0.0, np.where(np.isnan(out), np.nan, 1.0))
        return out, sgn
    sa = np.broadcast_to(np.sign(np.asarray(1.0 if a_sign is None else a_sign, float)), a.shape)
    sb = np.broadcast_to(np.sign(np.asarray(1.0 if b_sign is None else b_sign, float)), b.shape)
    sgn = np.empty(out.shape)
    for idx in np.ndindex(*out.shape):
        *bi, i, k = idx
        g = sa[(*bi, i)] * sb[(*bi, slice(None), k)]
        with np.errstate(invalid="ignore"):  # inf + -inf: NaN, as the naive form
            v = np.where(g != 0, a[(*bi, i)] + b[(*bi, slice(None), k)], -np.inf)
        v = np.where(np.isnan(g), np.nan, v)
        if np.isnan(v).any():
            out[idx], sgn[idx] = np.nan, np.nan
            continue
        m = v.max(initial=-np.inf)
        if m == -np.inf:
            out[idx], sgn[idx] = -np.inf, 0.0
        elif m == np.inf:
            s = set(np.sign(g[v == np.inf]).tolist())
            out[idx], sgn[idx] = (np.nan, np.nan) if len(s) > 1 else (np.inf, s.pop())
        else:
            tot = math.fsum((g * np.exp(v - m)).tolist())
            out[idx] = m + math.log(abs(tot)) if tot else -np.inf
            sgn[idx] = float(np.sign(tot))
    if return_sign:
        return out, sgn
    return np.where(sgn < 0, np.nan, out)
