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
from .keys import _BLOCK, _FM, _SMALL, _cttz
from .scan import _LEV, _as_float

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
    """The entries of ``wv[:L]`` / ``ww[:L]`` in ``[a, b)`` (``cnt`` of them), in order,
    into new arrays of ``cnt + 1`` (the last slot a spare).  Branch-free: every entry
    is stored at the next free slot, which advances only on a hit; a branch per entry
    mispredicted on a hit (about 1 in 8) and cost 25-70 us of a [1, 262144] top-p call
    whose predictors had not just seen the same row (``docs/vocab.md``)."""
    nv = np.empty(cnt + 1)
    nw = np.empty(cnt + 1)
    k = 0
    for c in range(L):
        v = wv[c]
        nv[k] = v
        nw[k] = ww[c]
        k = min(k + ((v >= a) & (v < b)), cnt)
    return nv, nw


_MAG = np.int64(0x7FFFFFFFFFFFFFFF)


@njit(cache=True, nogil=True)
def _min_finite(cv, C):
    """``min(cv[:C])`` (``inf`` for ``C = 0``) of NaN-free float64 values: integer min
    of the order keys of the bits (``scan._key_max``), which vectorises where the
    float ``min`` chain did not (15479 values: 8.7 -> 1.5 us).  The same value, but
    that of ``+0.0`` and ``-0.0`` either may come out (compared equal below)."""
    if C == 0:
        return np.inf
    b = cv[:C].view(np.int64)
    lo = _MAG
    for j in range(C):
        v = b[j]
        lo = min(lo, v ^ ((v >> np.int64(63)) & _MAG))
    return _as_float(lo ^ ((lo >> np.int64(63)) & _MAG))


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
    a = _min_finite(cv, C)
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


_BAND_MIN = 1.0  # a bracket of the threshold wider than this (in d) is refined
_NB = 8  # the bands between the bracketing depths (``_band_counts``)
_MARGIN = 1e-9  # relative: the band bound must certify this much more than P s


@njit(cache=True, nogil=True)
def _bracket(n, m, s_row, lev, P):
    """``(target, dlo, dup, mup)``: the top-p mass ``P s`` and a bracket of the
    threshold's depth ``d = v - m``: at least ``dlo`` (the tokens below
    ``m + log((1 - P) s / n)`` hold at most ``(1 - P) s``; a depth whose mass reaches
    ``P s`` bounds it too), below ``dup``, the deepest level whose mass ``mup`` is short
    of ``P s`` (``dup = dlo``: nothing to refine)."""
    target = P * s_row
    dlo = math.log((1.0 - P) * s_row / n) - 1e-6
    dup = 0.0
    mup = 0.0
    for k in range(len(_LEV)):
        if lev[k] >= target * (1.0 + 1e-12):
            dlo = max(dlo, _LEV[k])
            break
        dup = _LEV[k]
        mup = lev[k]
    if mup == 0.0 or dup <= dlo:
        dup = dlo
    return target, dlo, dup, mup


@njit(cache=True, nogil=True, fastmath=_FM)
def _band_counts(xr, X, out):
    """``out[k] += #{x >= X[k]}`` for the ``_NB + 1`` values ``X`` of the input dtype
    (``_band_depths``), vectorised compares
    counted in float32 lanes (exact: a block has at most ``_BLOCK`` < 2^24 entries)."""
    c0 = np.float32(0.0)
    c1 = np.float32(0.0)
    c2 = np.float32(0.0)
    c3 = np.float32(0.0)
    c4 = np.float32(0.0)
    c5 = np.float32(0.0)
    c6 = np.float32(0.0)
    c7 = np.float32(0.0)
    c8 = np.float32(0.0)
    for j in range(xr.shape[0]):
        x = xr[j]
        c0 += np.float32(1.0) if x >= X[0] else np.float32(0.0)
        c1 += np.float32(1.0) if x >= X[1] else np.float32(0.0)
        c2 += np.float32(1.0) if x >= X[2] else np.float32(0.0)
        c3 += np.float32(1.0) if x >= X[3] else np.float32(0.0)
        c4 += np.float32(1.0) if x >= X[4] else np.float32(0.0)
        c5 += np.float32(1.0) if x >= X[5] else np.float32(0.0)
        c6 += np.float32(1.0) if x >= X[6] else np.float32(0.0)
        c7 += np.float32(1.0) if x >= X[7] else np.float32(0.0)
        c8 += np.float32(1.0) if x >= X[8] else np.float32(0.0)
    out[0] += np.int64(c0)
    out[1] += np.int64(c1)
    out[2] += np.int64(c2)
    out[3] += np.int64(c3)
    out[4] += np.int64(c4)
    out[5] += np.int64(c5)
    out[6] += np.int64(c6)
    out[7] += np.int64(c7)
    out[8] += np.int64(c8)


@njit(cache=True, nogil=True)
def _x_at(xr, T, unit, m, t, up):
    """A value of the input dtype near the least ``x`` with ``_v(x) - m >= t``: above
    it (``up``: every ``x >= X`` has ``d >= t``) or below it (every entry with
    ``d >= t`` has ``x >= X``), by a margin of ``1e-6 (|m| + |t|) T``, far above the
    rounding of ``x / T - m`` and of the dtype."""
    big = np.finfo(xr.dtype).max
    g = (m + t) if unit else (m + t) * T
    eps = 1e-6 * (abs(m) + abs(t)) * (1.0 if unit else T)
    g = g + eps if up else g - eps
    if not (g < big):
        return xr.dtype.type(np.inf)
    if not (g > -big):
        return xr.dtype.type(-np.inf)
    X = xr.dtype.type(g)
    if up and X < g:
        X = np.nextafter(X, xr.dtype.type(np.inf))
    if not up and X > g:
        X = np.nextafter(X, xr.dtype.type(-np.inf))
    return X


@njit(cache=True, nogil=True)
def _band_depths(xr, T, unit, m, dlo, dup):
    """The depths ``dup = t[0] > ... > t[_NB] = dlo`` of the bands and the values
    ``X[k]`` of the input dtype the counts compare against: ``X[0]`` at or below the
    level's least value (its count covers the level's entries, maybe a few more) and
    ``X[k >= 1]`` above the least value at ``t[k]`` (every entry counted is at that
    depth or above).  An entry is then counted in one band at most, with at most its
    weight: the band bound of ``_refine`` stays a lower bound."""
    t = np.empty(_NB + 1)
    X = np.empty(_NB + 1, dtype=xr.dtype)
    for k in range(_NB + 1):
        t[k] = dup - (dup - dlo) * k / _NB
    t[_NB] = dlo
    for k in range(_NB + 1):
        X[k] = _x_at(xr, T, unit, m, t[k], k > 0)
    return t, X


@njit(cache=True, nogil=True)
def _band_blocks(xr, X, cnt, b0, b1):
    """``_band_counts`` of the blocks ``[b0, b1)`` into ``cnt[b]`` (integers: any
    merge order gives the same totals)."""
    n = xr.shape[0]
    for b in range(b0, b1):
        j0 = b * _BLOCK
        cnt[b, :] = 0
        _band_counts(xr[j0 : min(n, j0 + _BLOCK)], X, cnt[b])


@njit(cache=True, nogil=True)
def _band_totals(cnt):
    """The band counts summed over the blocks: ``tot[k] = sum_b cnt[b, k]``."""
    tot = np.zeros(_NB + 1, dtype=np.int64)
    for b in range(cnt.shape[0]):
        for k in range(_NB + 1):
            tot[k] += cnt[b, k]
    return tot


@njit(cache=True, nogil=True)
def _refine(t, cnt, mup, target):
    """The deepest-first bracket refined by the band counts: the mass at depth
    ``t[k]`` or more is at least ``mup + sum_{i <= k} (c_i - c_{i-1}) exp(t[i])``
    (``c_0`` = the level's own count); the shallowest ``t[k]`` certified to reach
    ``P s`` (with a ``_MARGIN``) bounds the threshold from below."""
    tot = _band_totals(cnt)
    mass = mup
    for k in range(1, _NB + 1):
        mass += (tot[k] - tot[k - 1]) * math.exp(t[k]) * (1.0 - _MARGIN)
        if mass >= target * (1.0 + _MARGIN):
            return t[k]
    return t[_NB]


@njit(cache=True, nogil=True)
def _x_lower(xr, T, unit, m, dlo):
    """``dlo`` as a value of the input dtype at or below every candidate: ``x >= xlo``
    gathers a superset of ``v - m >= dlo``."""
    lo = m + dlo
    xl = lo if unit else lo * T
    xl -= abs(xl) * 1e-6
    lowest = np.finfo(xr.dtype).min
    return xr.dtype.type(xl) if math.isfinite(xl) and xl > lowest else lowest


@njit(cache=True, nogil=True)
def _lower_bound(xr, T, unit, m, s_row, lev, P):
    """``(target, xlo)`` of a whole row on one thread (``_bracket``, the band counts
    block by block, ``_refine``, ``_x_lower``): what the chunked path computes with
    the blocks on several threads."""
    n = xr.shape[0]
    target, dlo, dup, mup = _bracket(n, m, s_row, lev, P)
    if dup - dlo > _BAND_MIN:
        t, X = _band_depths(xr, T, unit, m, dlo, dup)
        nb = (n + _BLOCK - 1) // _BLOCK
        cnt = np.empty((nb, _NB + 1), dtype=np.int64)
        _band_blocks(xr, X, cnt, 0, nb)
        dlo = _refine(t, cnt, mup, target)
    return target, _x_lower(xr, T, unit, m, dlo)


@njit(cache=True, nogil=True, fastmath=_FM)
def _gather(xr, xlo, ci, cv, j0):
    """Compaction of ``xr[j] >= xlo``: indices ``j0 + j`` into ``ci``, values (as
    float64, not yet divided by ``T``) into ``cv``, in index order.

    Per group of 64 entries the compares are packed into a bit mask (vectorised: a
    few instructions per 16 entries) and only the set bits are visited (``_cttz``):
    0.15 -> 0.05 ms on a [1, 262144] row with 8 % candidates, against a branch-free
    store per entry; the run written is the same."""
    n = xr.shape[0]
    n64 = n - n % 64
    c = 0
    for g in range(0, n64, 64):
        mask = np.uint64(0)
        for k in range(64):
            mask |= np.uint64(xr[g + k] >= xlo) << np.uint64(k)
        while mask:
            j = g + np.int64(_cttz(mask))
            ci[c] = j0 + j
            cv[c] = np.float64(xr[j])
            c += 1
            mask &= mask - np.uint64(1)
    for j in range(n64, n):
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
