"""Block loops of the row kernels: load/store conversions (``ld``, ``st``, float16 bits),
the row classification codes, and the vectorised max / sum / write loops over one
block (``_BLOCK`` values, L1-resident) that every other ``rows`` module calls.

Loops run over slices from index 0 and are small ``@njit`` helpers: loops written
inline in a larger body do not vectorise (see the package docstring).
"""

from __future__ import annotations

import numpy as np
from numba import njit, types
from numba.extending import overload

from ..exp import FASTMATH, expd, expd_unit, f16_to_f32, f32_to_f16, fmax, fmaximum, is32

_BLOCK = 2048  # 8 KiB of float32: the max and the sum sub-passes share L1

# Row classification codes.
FINITE = 0
EMPTY = 1  # no included value, all included values -inf, or m / T overflows to -inf
POSINF = 2  # an included +inf (or m / T overflows to +inf)
NAN = 3  # an included NaN (in x or in the weight b)


# --------------------------------------------------------------------------- conversions
def ld(v, like):  # pragma: no cover - jitted code only
    """``v`` (float16 bits, float32, float64) converted to the type of ``like``."""
    raise NotImplementedError


@overload(ld)
def _ld_ov(v, like):
    if v == types.uint16:
        if like == types.float32:
            return lambda v, like: f16_to_f32(v)
        return lambda v, like: np.float64(f16_to_f32(v))
    if like == types.float32:
        return lambda v, like: np.float32(v)
    return lambda v, like: np.float64(v)


def st(v, o):  # pragma: no cover - jitted code only
    """``v`` converted to the element type of array ``o`` (uint16 = float16 bits)."""
    raise NotImplementedError


@overload(st)
def _st_ov(v, o):
    if o.dtype == types.uint16:
        return lambda v, o: f32_to_f16(np.float32(v))
    if o.dtype == types.float32:
        return lambda v, o: np.float32(v)
    return lambda v, o: np.float64(v)


# --------------------------------------------------------------------------- hot loops
# Small @njit helpers: loops written inline in a prange body do not vectorise.
@njit(fastmath=FASTMATH, cache=True)
def _bmax(xr, lo, hi, ninf):
    # loops run over slices from index 0: with an arbitrary start LLVM cannot drop
    # Numba's negative-index wraparound and the loads become gathers (10x slower)
    # fmaximum (NaN-propagating) reduces as a vector tree; maxnum's reduction ends in
    # a serial scalar chain (exp.fmaximum): a NaN in the block gives a NaN max
    xs = xr[lo:hi]
    m = ninf
    for j in range(xs.shape[0]):
        m = fmaximum(m, ld(xs[j], ninf))
    return m


@njit(fastmath=FASTMATH, cache=True)
def _bmax_m(xr, mr, br, has_mask, has_b, lo, hi, ninf):
    xs, ms, bs = xr[lo:hi], mr[lo:hi], br[lo:hi]
    m = ninf
    for j in range(xs.shape[0]):
        inc = (not has_mask or ms[j]) and (not has_b or bs[j] != 0)
        m = fmax(m, ld(xs[j], ninf) if inc else ninf)
    return m


@njit(fastmath=FASTMATH, cache=True)
def _sum_all(xs, m, invT):
    s = ld(0.0, m)
    for j in range(xs.shape[0]):
        s += expd(ld(xs[j], m), m, invT)
    return s


@njit(fastmath=FASTMATH, cache=True)
def _sum_all_unit(xs, m):
    s = ld(0.0, m)
    for j in range(xs.shape[0]):
        s += expd_unit(ld(xs[j], m), m)
    return s


@njit(fastmath=FASTMATH, cache=True)
def _bsum(xr, lo, hi, m, invT, split):
    z = ld(0.0, m)
    one = ld(1.0, m)
    xs = xr[lo:hi]
    if (is32(m) or not split) and m > -np.inf and m < np.inf:
        # float32 with a finite max: the plain sum of every exp (the max terms are
        # exactly 1), returned as (S, 0).  The tie weight w0 only serves the log1p
        # split, whose gain (relative accuracy of log S ~ r when r < 2^-24) is below
        # float32's absolute contract of 1e-6 (1 + |value|); 18% faster per value.
        # Rows whose max is +-inf keep the tie count below (their w0 is the answer).
        # float64 takes this path too when the caller needs only S (softmax, whose
        # 1 / S has no log1p to serve: ``split`` False): 0.86 -> 0.68 ns per value.
        if invT == one:
            return _sum_all_unit(xs, m), z
        return _sum_all(xs, m, invT), z
    s = z
    c = z
    for j in range(xs.shape[0]):
        v = ld(xs[j], m)
        e = expd(v, m, invT)
        s += z if v >= m else e
        c += one if v == m else z
    return s, c


@njit(fastmath=FASTMATH, cache=True)
def _bsum_m(xr, mr, br, has_mask, has_b, lo, hi, m, invT):
    s = 0.0
    c = 0.0
    xs, ms, bs = xr[lo:hi], mr[lo:hi], br[lo:hi]
    for j in range(xs.shape[0]):
        inc = not has_mask or ms[j]
        w = 1.0
        if has_b:
            w = np.float64(bs[j])
            inc = inc and w != 0
        v = ld(xs[j], m)
        e = expd(v, m, invT)
        s += w * e if inc and not v >= m else 0.0
        c += w if inc and v == m else 0.0
    return s, c


@njit(fastmath=FASTMATH, cache=True)
def _wsm(xr, orow, lo, hi, m, invT, invS):
    xs, os = xr[lo:hi], orow[lo:hi]
    if invT == ld(1.0, invT):
        for j in range(xs.shape[0]):
            os[j] = st(expd_unit(ld(xs[j], m), m) * invS, os)
        return
    for j in range(xs.shape[0]):
        os[j] = st(expd(ld(xs[j], m), m, invT) * invS, os)


@njit(fastmath=FASTMATH, cache=True)
def _wlsm(xr, orow, lo, hi, m, invT, lS):
    xs, os = xr[lo:hi], orow[lo:hi]
    for j in range(xs.shape[0]):
        os[j] = st((ld(xs[j], m) - m) * invT - lS, os)


@njit(fastmath=FASTMATH, cache=True)
def _wsm_m(xr, mr, orow, lo, hi, m, invT, invS, log):
    zero = ld(0.0, m)
    ninf = ld(-np.inf, m)
    xs, ms, os = xr[lo:hi], mr[lo:hi], orow[lo:hi]
    for j in range(xs.shape[0]):
        v = ld(xs[j], m)
        if log:
            os[j] = st((v - m) * invT - invS if ms[j] else ninf, os)
        else:
            os[j] = st(expd(v, m, invT) * invS if ms[j] else zero, os)


@njit(fastmath=FASTMATH, cache=True)
def _fill(a, lo, hi, v):
    s = a[lo:hi]
    for j in range(s.shape[0]):
        s[j] = v


def same_dtype(o, v):  # pragma: no cover - replaced by the overload inside jitted code
    """True (a compile-time constant) when array ``o`` has the type of scalar ``v``."""
    raise NotImplementedError


@overload(same_dtype)
def _same_dtype_ov(o, v):
    if o.dtype == v:
        return lambda o, v: True
    return lambda o, v: False
