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

from ..exp import (
    FASTMATH,
    expd,
    expsum_unit,
    f16_to_f32,
    f32_to_f16,
    fmax,
    fmaximum,
    is32,
)

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


# float32 sums keep at most 8 terms per lane accumulator.  The sum loops run 16 lanes x
# 4 accumulators, and one accumulator over a block of 2048 took 32 terms, rounding each
# time at up to half an ulp of its running sum: on adversarial rows (the max's exact 1
# in a lane, equal small terms whose sum with 1 rounds the same way each time) log S was
# off by 1.8e-6, beyond the float32 contract of 1e-6 (1 + |value|).  Sums of more than
# _SUB terms now add four interleaved quarters, (e0 + e1) + (e2 + e3), per accumulator
# step (_sum4: no extra operation per value); the loops that also store their terms
# (store.py) sum pieces of _SUB and add them in float64.
_SUB = 512


@njit(fastmath=FASTMATH, cache=True)
def _term(v, m, invT, mode):
    """One exp of a sum: ``expd`` (``mode`` 0: the argument ``(x - m) / T`` carried
    exactly) or ``expsum_unit`` (1: ``T = 1``, the plain argument, for terms that are
    summed or stored as softmax outputs, see ``exp.expsum_unit``).  ``mode`` is a
    constant at every call, so each caller compiles one branch."""
    if mode == 0:
        return expd(v, m, invT)
    return expsum_unit(v, m)


@njit(fastmath=FASTMATH, cache=True)
def _sum_run(xs, m, invT, mode):
    """The sum of the terms (``_term``) of ``xs``, one accumulator per lane: for at most
    ``_SUB`` float32 values."""
    s = ld(0.0, m)
    for j in range(xs.shape[0]):
        s += _term(ld(xs[j], m), m, invT, mode)
    return s


@njit(fastmath={"contract"}, cache=True)
def _add4(a, b, c, d):
    """``(a + b) + (c + d)`` in this order: compiled without ``reassoc`` so that LLVM,
    inlining it into a reassociating loop, keeps the tree (see ``_SUB``)."""
    return (a + b) + (c + d)


@njit(fastmath=FASTMATH, cache=True)
def _sum4(xs, m, invT, mode):
    q = xs.shape[0] // 4
    a, b, c, d = xs[:q], xs[q : 2 * q], xs[2 * q : 3 * q], xs[3 * q : 4 * q]
    s = ld(0.0, m)
    for j in range(q):
        s += _add4(
            _term(ld(a[j], m), m, invT, mode),
            _term(ld(b[j], m), m, invT, mode),
            _term(ld(c[j], m), m, invT, mode),
            _term(ld(d[j], m), m, invT, mode),
        )
    return s


@njit(fastmath=FASTMATH, cache=True)
def _sum_terms(xs, m, invT, mode):
    """The sum of the terms (``_term``) of ``xs``, in the dtype of ``m`` (float32 rows
    longer than ``_SUB``: four interleaved quarters, see ``_SUB``)."""
    n = xs.shape[0]
    if not is32(m) or n <= _SUB:
        return _sum_run(xs, m, invT, mode)
    return _sum4(xs, m, invT, mode) + _sum_run(xs[n - n % 4 :], m, invT, mode)


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
            return _sum_terms(xs, m, m, 1), z
        return _sum_terms(xs, m, invT, 0), z
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
    if invT == ld(1.0, invT):  # the plain argument (exp.expsum_unit: one rounding)
        for j in range(xs.shape[0]):
            os[j] = st(expsum_unit(ld(xs[j], m), m) * invS, os)
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
