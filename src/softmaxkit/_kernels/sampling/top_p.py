"""Top-p without a small top-k: gather the candidates ``v >= lo`` (branch-free
compaction), their weights ``exp(v - m)``, and find the threshold where the
cumulative mass crosses ``P s`` by bisection on the value (masked sums over a band
that is compacted as it shrinks; the last ``_SMALL`` sorted).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from ..exp import exp_
from .keys import _BLOCK, _FM, _SMALL
from .scan import _LEV

# --------------------------------------------------------------------------- top-p


@njit(cache=True, nogil=True, fastmath=_FM)
def _band_mass(wv, ww, L, t, b):
    """Mass and count of the entries of ``wv[:L]`` in ``[t, b)`` and count in the rest
    of the band below ``t`` (vectorised masked sums)."""
    up = 0.0
    nup = 0
    for c in range(L):
        v = wv[c]
        hit = (v >= t) & (v < b)
        up += ww[c] if hit else 0.0
        nup += hit
    return up, nup


@njit(cache=True, nogil=True, fastmath=_FM)
def _band_count(wv, L, a, b):
    cnt = 0
    for c in range(L):
        cnt += (wv[c] >= a) & (wv[c] < b)
    return cnt


@njit(cache=True, nogil=True)
def _band_compact(wv, ww, L, a, b, cnt):
    nv = np.empty(cnt)
    nw = np.empty(cnt)
    k = 0
    for c in range(L):
        v = wv[c]
        if v >= a and v < b:
            nv[k] = v
            nw[k] = ww[c]
            k += 1
    return nv, nw


@njit(cache=True, nogil=True)
def _top_p_threshold(cv, cw, C, m, target):
    """The largest ``tp`` among the candidates with ``sum_{cv >= tp} cw >= target``
    (the top-p crossing; every entry equal to ``tp`` is kept with it).

    Bisection on the value: the band ``[a, b)`` holds the crossing, with
    ``A = mass(v >= b) < target <= mass(v >= a)``; each step is one vectorised masked
    sum over the current arrays, which are compacted into new (smaller) ones when the
    band holds at most an eighth of them; once the band holds at most ``_SMALL``
    entries (or cannot be split), it is sorted and walked from ``A``.
    """
    a = np.inf
    for c in range(C):
        a = min(a, cv[c])
    b = m + 1.0
    A = 0.0
    wv = cv
    ww = cw
    L = C
    band = C
    for _ in range(200):
        if band <= _SMALL:
            break
        t = 0.5 * (a + b)
        if not (a < t < b):
            break  # no float between: the band is one value
        up, nup = _band_mass(wv, ww, L, t, b)
        if A + up >= target:
            a = t
            band = nup
        else:
            A += up
            b = t
            band -= nup
        if band * 8 <= L and band > _SMALL:
            wv, ww = _band_compact(wv, ww, L, a, b, band)
            L = band
    if band != L:
        wv, ww = _band_compact(wv, ww, L, a, b, band)
        L = band
    vals = np.empty(L)
    for q in range(L):
        vals[q] = -wv[q]
    order = np.argsort(vals)
    cum = A
    last = a
    for q in range(L):
        c = order[q]
        cum += ww[c]
        last = wv[c]
        if cum >= target:
            return last
    return last  # rounding: the target is not reached; keep every candidate


@njit(cache=True, nogil=True)
def _lower_bound(xr, T, unit, m, s_row, lev, P):
    """``(target, xlo)``: the top-p mass ``P s`` and, in the input dtype, a value at
    or below every candidate of the threshold (``x >= xlo`` gathers a superset).

    The tokens below ``m + log((1 - P) s / n)`` hold at most ``(1 - P) s``, and a
    depth whose mass reaches ``P s`` bounds the threshold too."""
    n = xr.shape[0]
    target = P * s_row
    lo = m + math.log((1.0 - P) * s_row / n) - 1e-6
    for k in range(len(_LEV)):
        if lev[k] >= target * (1.0 + 1e-12):
            lo = max(lo, m + _LEV[k])
            break
    xl = lo if unit else lo * T
    xl -= abs(xl) * 1e-6
    lowest = np.finfo(xr.dtype).min
    xlo = xr.dtype.type(xl) if math.isfinite(xl) and xl > lowest else lowest
    return target, xlo


@njit(cache=True, nogil=True, fastmath=_FM)
def _gather(xr, xlo, ci, cv, j0):
    """Branch-free compaction of ``xr[j] >= xlo``: indices ``j0 + j`` into ``ci``,
    values (as float64, not yet divided by ``T``) into ``cv``."""
    c = 0
    for j in range(xr.shape[0]):
        x = xr[j]
        ci[c] = j0 + j
        cv[c] = np.float64(x)
        c += x >= xlo
    return c


@njit(cache=True, nogil=True)
def _gather_blocks(xr, xlo, ci, cv, cnt, b0, b1):
    """``_gather`` of the blocks ``[b0, b1)``, each into its own slot
    ``[b _BLOCK, ...)`` of ``ci``/``cv``; ``cnt[b]`` its count."""
    n = xr.shape[0]
    for b in range(b0, b1):
        j0 = b * _BLOCK
        j1 = min(n, j0 + _BLOCK)
        cnt[b] = _gather(xr[j0:j1], xlo, ci[j0:j1], cv[j0:j1], j0)


@njit(cache=True, nogil=True)
def _join_blocks(ci, cv, cnt):
    """Move the blocks' candidates down to one run ``[0, C)`` in index order (what one
    ``_gather`` over the row writes); returns ``C``."""
    C = 0
    for b in range(cnt.shape[0]):
        j0 = b * _BLOCK
        k = cnt[b]
        if j0 != C:
            for c in range(k):
                ci[C + c] = ci[j0 + c]
                cv[C + c] = cv[j0 + c]
        C += k
    return C


@njit(cache=True, nogil=True, fastmath=_FM)
def _kept_mass(cv, cw, C, m, theta, logq):
    """``Z``: the mass of the kept candidates (``v >= theta``, ``v - m >= logq``), a
    vectorised masked sum over the run (the same floats on every path)."""
    z = 0.0
    for c in range(C):
        v = cv[c]
        z += cw[c] if (v >= theta) & (v - m >= logq) else 0.0
    return z


@njit(cache=True, nogil=True, fastmath=_FM)
def _fill(C, T, unit, m, cv, cw):
    """Keys and weights of the gathered candidates (contiguous, vectorised)."""
    for c in range(C):
        v = cv[c] if unit else cv[c] / T
        cv[c] = v
        cw[c] = exp_(v - m)


@njit(cache=True, nogil=True, fastmath=_FM)
def _compact(cv, n, lo, ci):
    """In-place compaction of the stored values ``cv[:n] >= lo`` (large-``K`` path)."""
    c = 0
    for j in range(n):
        v = cv[j]
        ci[c] = j
        cv[c] = v
        c += v >= lo
    return c


@njit(cache=True, nogil=True, fastmath=_FM)
def _weights(cv, C, m, cw):
    for c in range(C):
        cw[c] = exp_(cv[c] - m)
