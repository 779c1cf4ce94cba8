"""Top-p of a long float32 row at ``T = 1`` with a float32 ``exp`` per entry and a
proof that the threshold is the serial path's (``_top_p_spec``).

The serial threshold search (``entry._sample_rows``, ``top_p``) sums
``s = sum exp(x - m)`` over the row with a float64 ``exp`` per entry: half of its
time on a [1, 262144] row (0.265 of 0.53 ms, one thread).  Here:

1. ``_mass32`` (one read): ``w_j = exp(x_j - m)`` in float32 with the argument
   carried exactly (``exp._expd32_unit``: TwoSum, 16 lanes), stored in a float32
   buffer; ``s' = sum w_j`` and the masses above the depths ``_LEV`` in float64;
2. the serial path's bracket, band counts and bound (``top_p._lower_bound``) on these
   numbers give ``xlo``, and the same counts an estimate ``xest >= xlo`` of the
   threshold (``_estimate``: fewer candidates, but not a bound; when the step 3
   certificate fails with it, step 2 and 3 are repeated with ``xlo``);
   ``top_p._gather`` (one read) the candidates ``x >= xest``, and
   ``s_lo = s' - sum over the candidates of w_j`` (read back from the buffer: the same
   floats, so ``s_lo`` is the other entries' mass up to float64 rounding);
3. the candidates' float64 weights (``_fill``), ``s = sum(cw) + s_lo``, the threshold
   ``t`` (``_top_p_threshold`` against ``P s``) and a certificate: ``E`` bounds the
   error of ``P s`` here (each ``w_j`` within ``_REL32`` of ``exp(x_j - m)``:
   ``_exp32`` is within 1 ulp = 1.2e-7, the exact argument adds 1.5e-8; ``x - m <
   -88`` flushes to 0, below 6e-39 each; float64 sums ``n + C`` roundings of
   ``_U64``) and the serial path's own (``n`` roundings for ``s``, ``n`` for a
   cumulative mass, 1 for ``P s``).  If ``mass(v >= t) >= P s + E`` and
   ``mass(v > t) <= P s - E``, every comparison ``mass >= P s`` that the serial path
   makes comes out as in exact arithmetic, hence as here: its threshold is ``t``;
   the kept set, the race and the tokens are the same.

Otherwise (``ok`` False: ``P s`` within ``E`` of a step of the cumulative mass, about
``2E`` / step of the calls, e.g. exact ties of ``P s`` with a partial mass; or ``xlo``
above the threshold) the caller runs the serial path.  ``Z`` (log-probs) is not
computed here: calls that need it take the serial path (its candidate run fixes
the rounding of ``Z``, which the chunked path reproduces).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, types
from numba.extending import overload

from ..exp import _expd32_unit
from .keys import _BLOCK, _FM
from .scan import _LEV
from .top_p import (
    _BAND_MIN,
    _NB,
    _band_blocks,
    _band_depths,
    _band_totals,
    _bracket,
    _fill,
    _gather,
    _refine,
    _top_p_threshold,
    _x_lower,
)

FAST_MIN = 1 << 15  # shorter rows take the serial path (little to gain)
_REL32 = 3.0e-7  # bound on the relative error of one w_j (module docstring), 2x margin
_ABS32 = 1e-38  # bound on the absolute error of one flushed w_j
_U64 = 2.3e-16  # one float64 exp (1 ulp) or addition, relative


def _w32(x, m32):  # pragma: no cover - replaced by the overload inside jitted code
    raise NotImplementedError


@overload(_w32)
def _w32_overload(x, m32):
    """``exp(x - m)`` in float32 (argument exact) for float32 ``x``; float64 rows
    never come here (``entry``), their version only has to compile."""
    if x == types.float32:
        return lambda x, m32: _expd32_unit(x, m32)
    return lambda x, m32: np.float32(0.0)


@njit(cache=True, nogil=True, fastmath=_FM)
def _mass32(xr, m32, wb, X, lev):
    """Pass 2: ``wb[j] = w_j``, returns ``s'`` and ``lev[k]`` = mass of ``x >= X[k]``."""
    s = 0.0
    a0 = 0.0
    a1 = 0.0
    a2 = 0.0
    a3 = 0.0
    X0 = X[0]
    X1 = X[1]
    X2 = X[2]
    X3 = X[3]
    for j in range(xr.shape[0]):
        x = xr[j]
        w = _w32(x, m32)
        wb[j] = w
        wf = np.float64(w)
        s += wf
        a0 += wf if x >= X0 else 0.0
        a1 += wf if x >= X1 else 0.0
        a2 += wf if x >= X2 else 0.0
        a3 += wf if x >= X3 else 0.0
    lev[0] = a0
    lev[1] = a1
    lev[2] = a2
    lev[3] = a3
    return s


@njit(cache=True, nogil=True, fastmath=_FM)
def _sum_at(wb, ci, C):
    """``sum wb[ci[c]]`` over the candidates (float64): the buffer's own values, so
    ``s' - this`` is the mass of the other entries up to float64 rounding."""
    s = 0.0
    for c in range(C):
        s += np.float64(wb[ci[c]])
    return s


@njit(cache=True, nogil=True, fastmath=_FM)
def _masses_at(cv, cw, C, t):
    """``(sum cw, mass of cv >= t, mass of cv > t)`` over the candidates."""
    tot = 0.0
    ge = 0.0
    gt = 0.0
    for c in range(C):
        v = cv[c]
        tot += cw[c]
        ge += cw[c] if v >= t else 0.0
        gt += cw[c] if v > t else 0.0
    return tot, ge, gt


@njit(cache=True, nogil=True)
def _estimate(t, cnt, mup, target):
    """The shallowest band depth ``t[k]`` whose *estimated* mass reaches ``target``:
    ``_refine``'s sum with each band's entries weighed at the band's middle,
    ``exp((t[k] + t[k-1]) / 2)``, instead of its floor.  Not a bound: the candidates
    it gives may miss the threshold (``_top_p_spec`` then tries ``_refine``'s bound);
    at or above ``_refine``'s depth, as each weight is at least the floor's."""
    tot = _band_totals(cnt)
    mass = mup
    for k in range(1, _NB + 1):
        mass += (tot[k] - tot[k - 1]) * math.exp(0.5 * (t[k] + t[k - 1]))
        if mass >= target:
            return t[k]
    return t[_NB]


@njit(cache=True, nogil=True)
def _lower_bounds(xr, m, s2, lev, P):
    """``(xlo, xest)``: ``top_p._lower_bound``'s ``xlo`` of a float32 row at ``T = 1``
    (every entry of the top-p set is ``>= xlo``) and ``xest >= xlo`` from the same band
    counts by ``_estimate`` (usually also at or below the threshold, with fewer
    entries above it: 21486 -> 15479 candidates of [1, 262144] std-3 normal logits,
    11993 kept)."""
    n = xr.shape[0]
    target, dlo, dup, mup = _bracket(n, m, s2, lev, P)
    dest = dlo
    if dup - dlo > _BAND_MIN:
        t, X = _band_depths(xr, 1.0, True, m, dlo, dup)
        nb = (n + _BLOCK - 1) // _BLOCK
        cnt = np.empty((nb, _NB + 1), dtype=np.int64)
        _band_blocks(xr, X, cnt, 0, nb)
        dlo = _refine(t, cnt, mup, target)
        dest = max(dlo, _estimate(t, cnt, mup, target))
    return _x_lower(xr, 1.0, True, m, dlo), _x_lower(xr, 1.0, True, m, dest)


@njit(cache=True, nogil=True)
def _certify(xr, m, m32, P, xlo, s2, ci, cv, cw, wb):
    """``(ok, theta, C)`` with the candidates ``x >= xlo`` (``_top_p_spec``)."""
    n = xr.shape[0]
    C = _gather(xr, xlo, ci, cv, 0)
    s_lo = max(0.0, s2 - _sum_at(wb, ci, C))
    _fill(C, 1.0, True, m, cv, cw)
    # the weights of the candidates, first summed alone (the candidate run's order)
    tot, _, _ = _masses_at(cv, cw, C, np.inf)
    s = tot + s_lo
    target = P * s
    theta = _top_p_threshold(cv, cw, C, m, target)
    _, ge, gt = _masses_at(cv, cw, C, theta)
    err = P * (s_lo * _REL32 + n * _ABS32)
    # float64 roundings: here s' (n), the candidates' sums (3 C), s_lo and s; the
    # float64 path's s (n), a partial mass (n) and P s; each at most _U64 of s
    err += s * (3.0 * (n + C) + 64.0) * _U64 * 1.5
    ok = ge >= target + err and gt <= target - err
    return ok, theta, C


@njit(cache=True, nogil=True)
def _top_p_spec(xr, m, P, ci, cv, cw, wb):
    """``(ok, theta, C)``: the serial path's top-p threshold of a float32 row at
    ``T = 1``, certified, with the candidates ``x >= xlo`` (all of ``v >= theta``)
    in ``ci[:C]``/``cv[:C]`` (module docstring); ``ok`` False: use the serial path.
    The candidates are first those above ``_lower_bounds``' estimate, then, when that
    is not certified, those above its bound.
    Requires ``m`` finite, no NaN; ``wb`` a float32 buffer of at least ``n``."""
    m32 = np.float32(m)
    X = np.empty(len(_LEV), dtype=np.float32)
    for k in range(len(_LEV)):
        X[k] = np.float32(m + _LEV[k])
    lev = np.empty(len(_LEV))
    s2 = _mass32(xr, m32, wb, X, lev)
    xlo, xest = _lower_bounds(xr, m, s2, lev, P)
    ok, theta, C = _certify(xr, m, m32, P, xest, s2, ci, cv, cw, wb)
    if not ok and xest > xlo:
        ok, theta, C = _certify(xr, m, m32, P, xlo, s2, ci, cv, cw, wb)
    return ok, theta, C
