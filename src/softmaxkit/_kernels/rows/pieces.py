"""Row pieces: the online state ``(m, r, w0)`` of a row or chunk (``_chunk_state``),
the merge of chunk states, the classification of special rows, ``log(w0 + r)``, the
write pass of a row (plain or streaming stores), and the per-row / per-task helpers
of the range kernels (``_softmax_row``, ``_chunk_task``, ``_write_task``,
``_lse_row``, ``_lse_finish``).  Accumulators: float64 across blocks.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from ..exp import FASTMATH
from ..nt import nt_copy
from ..view import mrow, row
from .blocks import (
    _BLOCK,
    EMPTY,
    FINITE,
    NAN,
    POSINF,
    _bmax,
    _bmax_m,
    _bsum,
    _bsum_m,
    _wlsm,
    _wsm,
    _wsm_m,
    ld,
    st,
)


# --------------------------------------------------------------------------- row pieces
@njit(fastmath=FASTMATH, cache=True)
def _chunk_state(xr, mr, br, has_mask, has_b, lo, hi, invT, split):
    """(m, r, w0) of ``xr[lo:hi]``: one read of the data, blockwise online max+sum.

    ``split`` False (softmax: only ``S = w0 + r`` is used): a finite max may give
    ``(m, S, 0)`` instead of the tie split (see ``_bsum``).
    """
    ninf = ld(-np.inf, invT)
    m = ninf
    r = 0.0
    w0 = 0.0
    inv64 = np.float64(invT)
    plain = not has_mask and not has_b
    for blo in range(lo, hi, _BLOCK):
        bhi = min(blo + _BLOCK, hi)
        if plain:
            bm = _bmax(xr, blo, bhi, ninf)
        else:
            bm = _bmax_m(xr, mr, br, has_mask, has_b, blo, bhi, ninf)
        if bm > m:
            # the old max and its ties become ordinary terms (exp(-inf) = 0 for the
            # first block without a libm call; a NaN in r survives the product)
            if m == ninf:
                r = (r + w0) * 0.0
            else:
                r = (r + w0) * math.exp((np.float64(m) - np.float64(bm)) * inv64)
            w0 = 0.0
            m = bm
        if plain:
            # a block whose max is below the running max has no tie with it: its plain
            # sum is r's share exactly (w0 += 0), so only blocks holding the running
            # max pay for the tie split (float64 logsumexp [1, 1e6], one thread:
            # 0.92-0.97 -> 0.78-0.82 ms)
            bs, bc = _bsum(xr, blo, bhi, m, invT, split and bm == m)
            r += np.float64(bs)
            w0 += np.float64(bc)
        else:
            bs, bc = _bsum_m(xr, mr, br, has_mask, has_b, blo, bhi, m, invT)
            r += bs
            w0 += bc
    return m, r, w0


@njit(cache=True)
def _merge(M, Rr, W, base, nch, inv64):
    """Merge the chunk states ``base .. base+nch-1`` with the (max, sum) rule."""
    m = M[base]
    for c in range(1, nch):
        m = max(m, M[base + c])
    r = 0.0
    w0 = 0.0
    for c in range(nch):
        mc = M[base + c]
        if mc == m:
            r += Rr[base + c]
            w0 += W[base + c]
        else:
            r += (Rr[base + c] + W[base + c]) * math.exp((mc - m) * inv64)
    return m, r, w0


@njit(cache=True)
def _winf_ovf(xr, mr, br, has_mask, has_b, T):
    """Total weight of the entries with x / T == +inf (m finite, m / T overflowed)."""
    wi = 0.0
    for j in range(xr.shape[0]):
        if has_mask and not mr[j]:
            continue
        w = 1.0
        if has_b:
            w = np.float64(br[j])
            if w == 0:
                continue
        if ld(xr[j], 0.0) / T == np.inf:
            wi += w
    return wi


@njit(cache=True)
def _finite_state(mT, r, w0):
    """``_classify(...)[0] == FINITE`` given ``mT = m / T``, branch-free (non-short-
    circuit ``&``) so that loops over many rows' states stay vectorised."""
    return (r == r) & (w0 == w0) & (mT > -np.inf) & (mT < np.inf)


@njit(cache=True)
def _classify(m, r, w0, T):
    """(code, m / T) of a merged row state."""
    if r != r or w0 != w0 or m != m:
        return NAN, np.nan
    mT = np.float64(m) / T
    if mT == -np.inf:
        return EMPTY, mT
    if mT == np.inf:
        return POSINF, mT
    return FINITE, mT


@njit(cache=True)
def _log_sum(r, w0):
    """(log|w0 + r|, sign) with the log1p split on the tie weight ``w0``."""
    total = w0 + r
    if total == 0:
        return -np.inf, 0.0
    sgn = 1.0 if total > 0 else -1.0
    if w0 == 1.0:  # the common case (one maximum, no weights): one libm call
        if r > -1.0 and r <= 1.0:  # (r < -1: signed weights, S < 0; log1p would be NaN)
            return math.log1p(r), sgn
        return math.log(abs(total)), sgn
    if w0 != 0:
        ratio = r / w0
        if ratio > -1.0 and ratio <= 1.0:
            return math.log(abs(w0)) + math.log1p(ratio), sgn
    return math.log(abs(total)), sgn


@njit(fastmath=FASTMATH, cache=True)
def _write_row(xr, mr, orow, has_mask, lo, hi, m, r, w0, T, invT, log):
    """Pass 2 for ``xr[lo:hi]`` given the merged row state."""
    code, _mT = _classify(m, r, w0, T)
    if code == FINITE:
        lS, _ = _log_sum(r, w0)
        if log:
            c = ld(lS, invT)
            if has_mask:
                _wsm_m(xr, mr, orow, lo, hi, m, invT, c, True)
            else:
                _wlsm(xr, orow, lo, hi, m, invT, c)
        else:
            c = ld(1.0 / (w0 + r), invT)
            if has_mask:
                _wsm_m(xr, mr, orow, lo, hi, m, invT, c, False)
            else:
                _wsm(xr, orow, lo, hi, m, invT, c)
    elif code == NAN:
        for j in range(lo, hi):
            orow[j] = st(np.nan, orow)
    elif code == EMPTY:
        v = -np.inf if log else 0.0
        for j in range(lo, hi):
            orow[j] = st(v, orow)
    else:
        # +inf row: 1/k (or -log k) at the +inf entries of x / T, 0 (-inf) elsewhere
        winf = w0 if m == np.inf else _winf_ovf(xr, mr, mr, has_mask, False, T)
        hitv = -math.log(winf) if log else 1.0 / winf
        other = -np.inf if log else 0.0
        for j in range(lo, hi):
            hit = ld(xr[j], 0.0) / T == np.inf and (not has_mask or mr[j])
            orow[j] = st(hitv if hit else other, orow)


@njit(fastmath=FASTMATH, cache=True)
def _write_row_nt(xr, orow, lo, hi, m, r, w0, T, invT, log, sb):
    """``_write_row`` (no mask) with streaming stores: each block is computed into the
    L1 scratch ``sb`` and copied to ``orow`` by ``nt.nt_copy`` (no write-allocate)."""
    code, _mT = _classify(m, r, w0, T)
    if code != FINITE:
        _write_row(xr, xr, orow, False, lo, hi, m, r, w0, T, invT, log)
        return
    if log:
        lS, _ = _log_sum(r, w0)
        c = ld(lS, invT)
    else:
        c = ld(1.0 / (w0 + r), invT)
    for blo in range(lo, hi, _BLOCK):
        bhi = min(blo + _BLOCK, hi)
        k = bhi - blo
        if log:
            _wlsm(xr[blo:bhi], sb, 0, k, m, invT, c)
        else:
            _wsm(xr[blo:bhi], sb, 0, k, m, invT, c)
        nt_copy(sb, orow, blo, bhi)


@njit(fastmath=FASTMATH, cache=True)
def _softmax_row(i, x, mask, out, has_mask, T, invT):
    """softmax of row i (two passes; log_softmax rows go through log_softmax_range)."""
    n = x.shape[1]
    xr = row(x, i)
    mr = mrow(mask, i) if has_mask else mrow(mask, 0)
    m, r, w0 = _chunk_state(xr, mr, mr, has_mask, False, 0, n, invT, False)
    _write_row(xr, mr, row(out, i), has_mask, 0, n, m, r, w0, T, invT, False)


@njit(cache=True)
def _task_span(t, nch, cs, n):
    """(row, lo, hi) of task t when each row of n values is cut into nch chunks of cs."""
    lo = (t % nch) * cs
    return t // nch, lo, min(lo + cs, n)


@njit(fastmath=FASTMATH, cache=True)
def _chunk_task(t, x, mask, b, has_mask, has_b, nch, cs, invT, M, Rr, W, split):
    i, lo, hi = _task_span(t, nch, cs, x.shape[1])
    mr = mrow(mask, i) if has_mask else mrow(mask, 0)
    br = row(b, i) if has_b else row(b, 0)
    m, r, w0 = _chunk_state(row(x, i), mr, br, has_mask, has_b, lo, hi, invT, split)
    M[t] = m
    Rr[t] = r
    W[t] = w0


@njit(fastmath=FASTMATH, cache=True)
def _write_task(t, x, mask, out, has_mask, nch, cs, T, invT, log, M, Rr, W, nt, sb):
    """Pass 2 of chunk t: merge its row's chunk states, write the chunk (streaming
    stores through the scratch ``sb`` when ``nt``)."""
    i, lo, hi = _task_span(t, nch, cs, x.shape[1])
    m, r, w0 = _merge(M, Rr, W, i * nch, nch, np.float64(invT))
    if nt:
        _write_row_nt(row(x, i), row(out, i), lo, hi, ld(m, invT), r, w0, T, invT, log, sb)
    else:
        mr = mrow(mask, i) if has_mask else mrow(mask, 0)
        _write_row(row(x, i), mr, row(out, i), has_mask, lo, hi, ld(m, invT), r, w0, T, invT, log)


@njit(cache=True)
def _lse_finish(i, x, mask, b, has_mask, has_b, m, r, w0, T, lse, sign):
    code, mT = _classify(m, r, w0, T)
    if code == NAN:
        lse[i] = np.nan
        if sign.shape[0]:
            sign[i] = np.nan
    elif code == EMPTY:
        lse[i] = -np.inf
        if sign.shape[0]:
            sign[i] = 0.0
    elif code == POSINF:
        winf = w0
        if m != np.inf:
            mr = mrow(mask, i) if has_mask else mrow(mask, 0)
            br = row(b, i) if has_b else row(b, 0)
            winf = _winf_ovf(row(x, i), mr, br, has_mask, has_b, T)
        if winf != winf or winf == 0:  # +inf entries whose weights cancel: inf - inf
            lse[i] = np.nan
            if sign.shape[0]:
                sign[i] = np.nan
        else:
            lse[i] = np.inf
            if sign.shape[0]:
                sign[i] = 1.0 if winf > 0 else -1.0
    else:
        la, sg = _log_sum(r, w0)
        lse[i] = mT + la if sg != 0 else -np.inf
        if sign.shape[0]:
            sign[i] = sg


@njit(fastmath=FASTMATH, cache=True)
def _lse_row(i, x, mask, b, has_mask, has_b, T, invT, lse, sign):
    mr = mrow(mask, i) if has_mask else mrow(mask, 0)
    br = row(b, i) if has_b else row(b, 0)
    m, r, w0 = _chunk_state(row(x, i), mr, br, has_mask, has_b, 0, x.shape[1], invT, True)
    _lse_finish(i, x, mask, b, has_mask, has_b, m, r, w0, T, lse, sign)


@njit(cache=True)
def _lse_finish_group(x, mask, b, has_mask, g0, g1, M, Rr, W, L, T, lse, sign):
    """logsumexp of rows g0:g1 from their states and L = log(w0 + r) (no weights)."""
    # one vectorised loop for the finite rows (the common case), then the special
    # rows one by one: a branchy _classify per row cost ~2.5 ns of the ~17 per row of
    # logsumexp over rows of 10
    nr = g1 - g0
    ls = lse[g0:g1]
    bad = 0
    for k in range(nr):
        mT = np.float64(M[k]) / T
        ls[k] = mT + L[k]
        bad += 0 if _finite_state(mT, Rr[k], W[k]) else 1
    if sign.shape[0]:
        sign[g0:g1] = 1.0
    if bad:
        for i in range(g0, g1):
            k = i - g0
            code, _mT = _classify(M[k], Rr[k], W[k], T)
            if code != FINITE:
                _lse_finish(i, x, mask, b, has_mask, False, M[k], Rr[k], W[k], T, lse, sign)
