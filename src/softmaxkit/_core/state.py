"""The mergeable (max, sum) state of the online normalizer, as plain arrays.

One algorithm, several drivers (flox's chunk / combine / aggregate): the eager,
streaming, threaded and Dask drivers all reduce a row to the pair

    m = max_j v_j,        s = sum_j w_j exp(v_j - m),        v = x / T

and combine pairs with

    m = max(m1, m2),      s = s1 exp(m1 - m) + s2 exp(m2 - m)

(natural base; Milakov & Gimelshein, arXiv:1805.02867).  Conventions that make the
merge total (never NaN for valid states):

* the identity (empty row, all -inf, fully masked) is (m, s) = (-inf, 0);
* a row holding +inf is (+inf, total weight of its +inf entries);
* a row holding NaN is (NaN, NaN), and NaN wins in every merge;
* the scale ``exp(mi - m)`` is taken as exactly 1 when ``mi == m`` (so -inf/-inf and
  +inf/+inf never form ``inf - inf``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike, DTypeLike, NDArray

from ..drivers.eager import rows_view
from . import coldstart

__all__ = [
    "chunk_state",
    "finalize",
    "merge",
    "normalize_float64",
    "state_float64",
]


def chunk_state(
    x: Any,
    axes: tuple[int, ...],
    temperature: float = 1.0,
    where: Any = None,
    b: Any = None,
    compute: DTypeLike = np.float64,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """(m, s) over ``axes`` of ``x``, shaped like the batch (non-reduced) shape; float64."""
    compute = np.dtype(compute)
    if temperature != 1.0:
        # v = x / T divided once in float64, as every consumer of the state recomputes
        # it (Normalizer.softmax, the Dask and streaming normalize steps): the
        # maximum's own difference v - m is then exactly 0.  The kernel's x * (1/T)
        # differs by an ulp, which at [finfo.max, ...] / 1e30 is 3e262 and made
        # exp(v - m) inf (test_differential.py).  One float64 temporary of the chunk.
        with np.errstate(over="ignore", under="ignore"):
            x = np.asarray(x).astype(np.float64) / temperature
        temperature, compute = 1.0, np.dtype(np.float64)
    batch = tuple(n for i, n in enumerate(x.shape) if i not in axes)
    x2 = rows_view(x, axes).astype(compute, copy=False)
    m = np.full(x2.shape[0], -np.inf)
    s = np.zeros(x2.shape[0])
    if x2.size:
        mask2 = rows_view(where, axes) if where is not None else None
        b2 = rows_view(b, axes) if b is not None else None
        try:
            with coldstart.allow(x2.size):
                _state_rows(x2, mask2, b2, temperature, compute, m, s)
        except coldstart.ColdKernel:
            # the kernel compiles in the background: the same state in float64 NumPy
            m[...], s[...] = state_float64(x2, mask2, b2, temperature)
    return m.reshape(batch), s.reshape(batch)


def state_float64(x2: Any, mask2: Any, b2: Any, temperature: float) -> Any:
    """(m, s) of ``[R, n]`` rows in float64 NumPy, with the conventions above."""
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        v = x2.astype(np.float64) / temperature
    inc = np.ones(v.shape, dtype=bool) if mask2 is None else np.asarray(mask2, dtype=bool)
    w = np.ones(v.shape) if b2 is None else np.asarray(b2, dtype=np.float64)
    nan = (inc & np.isnan(v)).any(axis=-1)
    m = np.where(inc & ~np.isnan(v), v, -np.inf).max(axis=-1, initial=-np.inf)
    with np.errstate(invalid="ignore", over="ignore", under="ignore"):
        d = v - m[:, None]
        e = np.where(v == m[:, None], 1.0, np.exp(d))  # ties exactly 1; inf - inf not formed
        s = np.where(inc & ~np.isnan(v), w * e, 0.0).sum(axis=-1)
    s = np.where(m == -np.inf, 0.0, s)
    return np.where(nan, np.nan, m), np.where(nan, np.nan, s)


def normalize_float64(x2: Any, mask2: Any, T: float, m: Any, s: Any, log: bool) -> Any:
    """Rows ``x2`` normalised by the row states ``(m, s)`` (softmax, or log_softmax),
    in float64 NumPy, with the conventions above; ``mask2`` False gives 0 / -inf."""
    with np.errstate(all="ignore"):
        v = x2.astype(np.float64) / T
        mc, sc = m[:, None], s[:, None]
        d = np.where(v == mc, 0.0, v - mc)  # +inf at an +inf state: weight 1 / s
        res = d - np.log(sc) if log else np.exp(d) / sc
        res = np.where(sc == 0, -np.inf if log else 0.0, res)  # an empty state
    if mask2 is not None:
        res = np.where(mask2, res, -np.inf if log else 0.0)
    return np.where(np.isnan(m + s)[:, None], np.nan, res)  # a NaN state: all NaN


def _state_rows(x2: Any, mask2: Any, b2: Any, temperature: float, compute: Any, m: Any, s: Any):
    from .._kernels import rows as k

    ones = np.broadcast_to(np.ones(1, compute), x2.shape)
    k.state_rows(
        x2,
        mask2 if mask2 is not None else np.broadcast_to(np.ones(1, bool), x2.shape),
        b2 if b2 is not None else ones,
        # T itself stays float64 (state_rows takes 1/T in the compute dtype and
        # m = max x / T in float64, as the dense kernels do); rounding T to float32
        # here shifted m by |m| * 2**-24 (1.4e-6 .. 3e-5 relative error in the
        # probabilities of Dask float32 softmax at T = 1.3)
        float(temperature),
        mask2 is not None,
        b2 is not None,
        m,
        s,
    )


def _scale(mi, m):
    with np.errstate(invalid="ignore", over="ignore"):
        return np.where(mi == m, 1.0, np.exp(mi - m))


def merge(
    m1: ArrayLike, s1: ArrayLike, m2: ArrayLike, s2: ArrayLike
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Combine two states elementwise; associative, commutative, identity (-inf, 0)."""
    m1, s1, m2, s2 = (np.asarray(a, dtype=np.float64) for a in (m1, s1, m2, s2))
    m = np.maximum(m1, m2)  # propagates NaN
    with np.errstate(invalid="ignore"):
        s = s1 * _scale(m1, m) + s2 * _scale(m2, m)
    s = np.where(np.isnan(m), np.nan, s)
    return m, s


def finalize(m: ArrayLike, s: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """(logsumexp, sign) of a state: ``m + log|s|`` and ``sign(s)``; -inf/0 for s == 0."""
    m = np.asarray(m, dtype=np.float64)
    s = np.asarray(s, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        lse = np.where(s == 0, -np.inf, m + np.log(np.abs(s)))
        lse = np.where(np.isinf(m) & (m > 0) & (s != 0), np.inf, lse)
    sign = np.sign(s)
    # +inf entries whose weights cancel (s == 0 at m == +inf) are inf - inf: NaN,
    # as in the dense kernel; NaN states stay NaN.
    bad = np.isnan(s) | np.isnan(m) | ((m == np.inf) & (s == 0))
    lse = np.where(bad, np.nan, lse)
    sign = np.where(bad, np.nan, sign)
    return lse, sign
