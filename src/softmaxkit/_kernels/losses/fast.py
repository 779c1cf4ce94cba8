"""Fast path of the cross-entropy rows (no mask, every value finite): max / min / sum
of a row, the overflow check against ``LIM32`` / ``LIM64``, the vectorised
``sum exp((x - m) / T)`` (float32 ``exp_`` on float32 rows, stored into the gradient
row when wanted, or in place for ``out=logits``) and the gradient's scale-and-shift.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, types
from numba.extending import overload

from ..exp import exp_, fmaximum, fminimum
from .common import _FM

# ---------------------------------------------------------------------------
# Fast path: no mask, finite row.  Separate float32 / float64 row helpers.
# ---------------------------------------------------------------------------


@njit(cache=True, nogil=True, fastmath=_FM)
def _max_min_sum_row(xr):
    # raw max and min of the row (not scaled: the differences are (x - max) / T) and
    # the plain sum (not finite: a NaN / inf somewhere, or a huge row).  fmaximum /
    # fminimum (NaN-propagating: a NaN row fails _fast_ok either way) reduce as
    # vector trees; Numba's max / min or a compare-and-select did not vectorise
    # ([32, 32000] float32, one thread: 0.73 -> ~0.1 ns per value)
    n = xr.shape[0]
    if n == 0:
        return -np.inf, np.inf, 0.0
    m = xr[0]
    mn = xr[0]
    tot = 0.0
    for j in range(n):
        v = xr[j]
        m = fmaximum(m, v)
        mn = fminimum(mn, v)
        tot += v
    return np.float64(m), np.float64(mn), tot


@njit(cache=True, nogil=True)
def _fast_ok(m, mn, tot, invT, n, lim):
    """True when the row's fast path cannot overflow (see ``LIM32``/``LIM64``)."""
    if not (math.isfinite(tot) and math.isfinite(m) and math.isfinite(mn)):
        return False
    rng = m - mn
    big = max(abs(m), abs(mn))
    return rng < lim and rng * invT * n < lim and big * invT < lim


@njit(cache=True, nogil=True, fastmath=_FM)
def _sum_exp_f32(xr, invT, m, gr, store):
    """(sum exp(v - m), sum (v - m)) over a float32 row; stores exp in gr if ``store``."""
    t32 = np.float32(invT)
    m32 = np.float32(m)
    s = 0.0
    sd = 0.0
    if t32 == np.float32(1.0):
        if store:
            for j in range(xr.shape[0]):
                d = xr[j] - m32
                e = exp_(d)
                gr[j] = e
                s += e
                sd += d
        else:
            for j in range(xr.shape[0]):
                d = xr[j] - m32
                s += exp_(d)
                sd += d
        return s, sd
    # T != 1: d = (x - m) / T with two float32 roundings (|d| 1.2e-7 relative; the
    # exactly carried argument of the dense kernels' expd cost 12% here, measured)
    if store:
        for j in range(xr.shape[0]):
            d = (xr[j] - m32) * t32
            e = exp_(d)
            gr[j] = e
            s += e
            sd += d
    else:
        for j in range(xr.shape[0]):
            d = (xr[j] - m32) * t32
            s += exp_(d)
            sd += d
    return s, sd


@njit(cache=True, nogil=True, fastmath=_FM)
def _sum_exp_inplace_f32(gr, invT, m):
    """As ``_sum_exp_f32`` with the row overwritten by its exponentials.

    One array only: with two arguments that alias (``out=logits``), LLVM's runtime
    overlap check fails and the loop runs scalar (measured 5-10x slower).
    """
    t32 = np.float32(invT)
    m32 = np.float32(m)
    s = 0.0
    sd = 0.0
    if t32 == np.float32(1.0):
        for j in range(gr.shape[0]):
            d = gr[j] - m32
            e = exp_(d)
            gr[j] = e
            s += e
            sd += d
        return s, sd
    for j in range(gr.shape[0]):
        d = (gr[j] - m32) * t32
        e = exp_(d)
        gr[j] = e
        s += e
        sd += d
    return s, sd


@njit(cache=True, nogil=True, fastmath=_FM)
def _sum_exp_inplace_f64(gr, invT, m):
    s = 0.0
    sd = 0.0
    for j in range(gr.shape[0]):
        d = (gr[j] - m) * invT
        e = math.exp(d)
        gr[j] = e
        s += e
        sd += d
    return s, sd


def _sum_exp_inplace(gr, invT, m):
    """Dispatch on the row dtype."""


@overload(_sum_exp_inplace, jit_options={"fastmath": _FM})
def _sum_exp_inplace_impl(gr, invT, m):
    if gr.dtype == types.float32:
        return lambda gr, invT, m: _sum_exp_inplace_f32(gr, invT, m)
    return lambda gr, invT, m: _sum_exp_inplace_f64(gr, invT, m)


@njit(cache=True, nogil=True, fastmath=_FM)
def _sum_exp_f64(xr, invT, m, gr, store):
    s = 0.0
    sd = 0.0
    for j in range(xr.shape[0]):
        d = (xr[j] - m) * invT
        e = math.exp(d)
        if store:
            gr[j] = e
        s += e
        sd += d
    return s, sd


def _sum_exp(xr, invT, m, gr, store):
    """Dispatch on the row dtype (float32: the vectorised ``exp_``; else ``math.exp``)."""


@overload(_sum_exp, jit_options={"fastmath": _FM})
def _sum_exp_impl(xr, invT, m, gr, store):
    if xr.dtype == types.float32:
        return lambda xr, invT, m, gr, store: _sum_exp_f32(xr, invT, m, gr, store)
    return lambda xr, invT, m, gr, store: _sum_exp_f64(xr, invT, m, gr, store)


@njit(cache=True, nogil=True, fastmath=_FM)
def _scale_shift_row(gr, c, off):
    """gr = gr * c - off, in the row's dtype (in float64 when c or off does not fit
    it: float32 at T = 1e-30 with a z-loss, where 0 * inf would give NaN)."""
    cc = gr.dtype.type(c)
    oo = gr.dtype.type(off)
    if math.isfinite(cc) and math.isfinite(oo):
        for j in range(gr.shape[0]):
            gr[j] = gr[j] * cc - oo
    else:
        for j in range(gr.shape[0]):
            gr[j] = np.float64(gr[j]) * c - off
