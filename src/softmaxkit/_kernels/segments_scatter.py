"""Scatter kernels of the segment family: unsorted ids (two-pass and one-pass float32
states), and the gathers that write segment softmax from per-segment tables.

Split from ``segments.py`` (the CSR / sorted-id kernels and the shared helpers), whose
conventions they follow.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .exp import FASTMATH, exp_, expd_unit, fmax
from .segments import _HIGH, _LOW, _Z32, _gather_row, log_wr
from .view import row

__all__ = [
    "fix_segments",
    "gather_softmax",
    "gather_softmax_1d",
    "gather_table",
    "scatter_state",
    "shifted_sums",
]


_BLK = 256


@njit(fastmath=FASTMATH, cache=True, inline="always")
def _exp_block(d, e, L):
    for k in range(L):
        e[k] = exp_(d[k])


@njit(fastmath=FASTMATH, cache=True, inline="always")
def _scatter_max_1d(x1, ids, lo, hi, m1, S):
    """Pass 1: ``m1[g] = maxnum(m1[g], v)``; False (nothing more done) at an id
    outside ``[0, S)`` -- the bounds check of the ids, fused with this pass."""
    for i in range(lo, hi):
        g = ids[i]
        if g < 0 or g >= S:
            return False
        m1[g] = fmax(m1[g], x1[i])
    return True


@njit(fastmath=FASTMATH, cache=True, inline="always")
def _scatter_sum_1d(x1, ids, lo, hi, m1, w1, r1, d, e, tl):
    """Pass 2: for blocks of ``_BLK`` values, gather ``v - m[g]`` (listing the ties
    ``v == m``), take the exps vectorised, then scatter ``r += e`` without a branch
    (``e = 0`` at the ties) and ``w += 1`` over the ties only.  The block's values and
    ids are sliced first: indexing ``x1[b0 + k]`` directly kept the loads scalar."""
    for b0 in range(lo, hi, _BLK):
        L = min(_BLK, hi - b0)
        xs = x1[b0 : b0 + L]
        gs = ids[b0 : b0 + L]
        nt = 0
        for k in range(L):
            v = xs[k]
            m = m1[gs[k]]
            d[k] = v - m  # unused where v == m (also inf - inf)
            tl[nt] = k
            nt += 1 if v == m else 0
        _exp_block(d, e, L)
        for j in range(nt):
            e[tl[j]] = 0.0
        for k in range(L):
            r1[gs[k]] += e[k]
        for j in range(nt):
            w1[gs[tl[j]]] += 1.0


@njit(nogil=True, cache=True)
def scatter_state(x2, ids, nparts, pm, pw, pr, bad, t0, t1):
    """Parts ``[t0, t1)`` of the rows of ``x2`` [N, C] into ``pm, pw, pr`` [nparts, S, C].

    Two passes over the part (both scatter into the part's own ``[S, C]`` states):
    1. the max of every segment (``maxnum``: NaN is skipped here and makes ``r`` NaN
       in pass 2), which also checks every id against ``[0, S)``: at the first id
       outside, ``bad[p] = 1`` and the part stops (the caller raises); 2.
       ``w += (v == m)``, ``r += exp(v - m)`` for the others.  For one column, pass 2
       gathers ``v - m`` for 256 values, takes their exps vectorised, then scatters
       the sums (one exp per value; ``w`` is touched only at ties).  Accumulators
       float64 (``w``, ``r``), max and exps in the input dtype.
    """
    N = x2.shape[0]
    C = x2.shape[1]
    S = pm.shape[1]
    d = np.empty(_BLK, x2.dtype)
    e = np.empty(_BLK, x2.dtype)
    tl = np.empty(_BLK, np.int64)
    for p in range(t0, t1):
        pmp = pm[p]
        pwp = pw[p]
        prp = pr[p]
        lo = N * p // nparts
        hi = N * (p + 1) // nparts
        if C == 1:
            m1 = pmp[:, 0]
            w1 = pwp[:, 0]
            r1 = prp[:, 0]
            x1 = x2[:, 0]
            if not _scatter_max_1d(x1, ids, lo, hi, m1, S):
                bad[p] = 1
                continue
            _scatter_sum_1d(x1, ids, lo, hi, m1, w1, r1, d, e, tl)
            continue
        ok = True
        for i in range(lo, hi):
            g = ids[i]
            if g < 0 or g >= S:
                ok = False
                break
            xr = row(x2, i)
            mg = row(pmp, g)
            for c in range(C):
                mg[c] = fmax(mg[c], xr[c])
        if not ok:
            bad[p] = 1
            continue
        for i in range(lo, hi):
            g = ids[i]
            xr = row(x2, i)
            mg = row(pmp, g)
            wg = row(pwp, g)
            rg = row(prp, g)
            for c in range(C):
                v = xr[c]
                m = mg[c]
                if v == m:
                    wg[c] += 1.0
                else:
                    rg[c] += exp_(v - m)


@njit(nogil=True, fastmath=FASTMATH, cache=True)
def shifted_sums(x1, ids, M, nparts, pr, pf, bad, t0, t1):
    """Parts ``[t0, t1)`` of 1-D ``x1``: ``pr[p, g] += exp(v - M)`` (float64) over the
    part's values, one scattered pass.  In blocks of ``_BLK``: the ids are checked
    against ``[0, S)`` (``bad[p] = 1`` and the part stops at a bad one, before its
    block is scattered), the float64 exps are taken vectorised, then scattered;
    ``pf[p, g] |= 1`` (low) / ``2`` (high) for a value outside ``[M + _LOW, M + _HIGH]``
    (``-inf`` is not low: its term is exactly 0; NaN makes the sum NaN)."""
    N = x1.shape[0]
    S = pr.shape[1]
    e = np.empty(_BLK, np.float64)
    for p in range(t0, t1):
        r1 = pr[p]
        f1 = pf[p]
        lo = N * p // nparts
        hi = N * (p + 1) // nparts
        for b0 in range(lo, hi, _BLK):
            L = min(_BLK, hi - b0)
            xs = x1[b0 : b0 + L]
            gs = ids[b0 : b0 + L]
            # one vectorised loop: the exps, the id check, the out-of-band count
            # (the check in a loop of its own cost ~15% more, 10^7 / 10^5)
            nbad = 0
            nout = 0
            for k in range(L):
                g = gs[k]
                nbad += 1 if (g < 0) | (g >= S) else 0
                d = np.float64(xs[k]) - M
                e[k] = exp_(d)
                nout += 1 if ((d < _LOW) & (d > -np.inf)) | (d > _HIGH) else 0
            if nbad:
                bad[p] = 1
                break
            for k in range(L):
                r1[gs[k]] += e[k]
            if nout:
                for k in range(L):
                    d = np.float64(xs[k]) - M
                    if d > _HIGH:
                        f1[gs[k]] |= 2
                    elif d < _LOW and d > -np.inf:
                        f1[gs[k]] |= 1


@njit(nogil=True, fastmath=FASTMATH, cache=True)
def fix_segments(x1, ids, fix, m, r):
    """Exact ``(m, r)`` (ties summed as their exact 1 in ``r``) of the segments with
    ``fix[g]``, two passes over all of ``x1`` (serial; only after a flag of
    ``shifted_sums``, i.e. values spread over more than 650 units)."""
    for i in range(x1.shape[0]):
        g = ids[i]
        if fix[g]:
            m[g] = fmax(m[g], np.float64(x1[i]))
    for i in range(x1.shape[0]):
        g = ids[i]
        if fix[g]:
            v = np.float64(x1[i])
            mg = m[g]
            r[g] += 1.0 if v == mg else exp_(v - mg)


@njit(nogil=True, cache=True)
def gather_softmax(x2, ids, m, s, ls, out2, log, t0, t1):
    """Rows ``[t0, t1)``: softmax / log_softmax of each value from its segment's
    max ``m``, sum ``s`` and ``ls = log(s)``."""
    for i in range(t0, t1):
        g = ids[i]
        _gather_row(row(x2, i), row(out2, i), row(m, g), row(s, g), row(ls, g), log)


@njit(nogil=True, fastmath=FASTMATH, cache=True)
def gather_softmax_1d(x1, ids, tab, out1, log, t0, t1):
    """Values ``[t0, t1)`` of 1-D ``x1``: softmax (``log``: log_softmax) from the
    table ``tab`` [S, 2] in the compute dtype: per segment a shift ``c`` and a factor
    ``f``, ``softmax = exp(v - c) * f`` and ``log_softmax = (v - c) - f`` (the public
    layer builds it: ``_segments_common._gather_table``).  ``v == c`` gives exactly
    ``exp(0) = 1`` / 0, so a ``+inf`` shift never forms ``inf - inf``.

    In blocks of ``_BLK`` values: gather the segment's shift and factor (side by
    side: one cache line per value), then one vectorised loop of exps (float32:
    the exact-argument ``expd_unit``) and products into the output.
    """
    b = np.empty(_BLK, x1.dtype)
    sc = np.empty(_BLK, x1.dtype)
    for b0 in range(t0, t1, _BLK):
        L = min(_BLK, t1 - b0)
        xs = x1[b0 : b0 + L]
        gs = ids[b0 : b0 + L]
        os = out1[b0 : b0 + L]
        for k in range(L):  # the gathers alone: ~30% faster than with the selects
            g = gs[k]
            b[k] = tab[g, 0]
            sc[k] = tab[g, 1]
        if log:
            for k in range(L):  # in float64: fastmath may form c + f first
                v = xs[k]
                c = b[k]
                eq = v == c
                os[k] = (0.0 if eq else np.float64(v) - np.float64(c)) - np.float64(sc[k])
        else:
            for k in range(L):
                v = xs[k]
                c = b[k]
                eq = v == c
                os[k] = expd_unit(_Z32 if eq else v, _Z32 if eq else c) * sc[k]


@njit(cache=True)
def gather_table(m, w, r, log, shift32, tab):
    """The [S, 2] table of ``gather_softmax_1d`` from the float64 states ``(m, w, r)``
    (1-D): a shift ``c`` and a factor ``f`` per segment.  Segments empty by the
    contract (log-sum-exp ``-inf``): ``(0, 1)`` / ``(0, 0)``.  ``shift32`` (float32
    output, states maybe from one shift for all segments): ``c`` the log-sum-exp
    rounded to float32, ``f = exp(c - lse)`` (``lse - c``) with ``c - lse`` taken as
    ``(c - m) - log s`` (``log 2`` survives next to ``m = -1e30``), where finite.
    Otherwise ``(m, 1 / s)`` / ``(m, log s)``: the dominant log-probability keeps its
    relative accuracy (float64), ``+inf`` segments work."""
    for g in range(m.shape[0]):
        c, f = _table_entry(m[g], w[g], r[g], log, shift32)
        tab[g, 0] = c
        tab[g, 1] = f


@njit(cache=True)
def _table_entry(mg, wg, rg, log, shift32):
    """``(c, f)`` of one segment for ``gather_table``.  Only called from kernels
    compiled without fastmath: reassociation turns ``(c - m) - log s`` into
    ``c - (m + log s) = 0`` (guarded by
    test_segments_scatter.py::test_shifted_pass_recomputes_far_segments)."""
    ls = log_wr(wg, rg)
    lse = -np.inf if (mg == -np.inf and rg == rg) else mg + ls
    if lse == -np.inf:
        return 0.0, (0.0 if log else 1.0)
    if shift32:
        c = np.float64(np.float32(mg + ls))
        delta = (c - mg) - ls
        if np.isfinite(c) and np.isfinite(delta):
            return c, (-delta if log else np.exp(delta))
    return mg, (ls if log else 1.0 / (wg + rg))
