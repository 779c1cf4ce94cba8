"""Kernels of the segment (grouped) softmax family.

Every segment reduces to the online normalizer's state, split as ``(m, w, r)``:
``m`` the max of its values, ``w`` the number of values equal to ``m`` (each
term exactly 1, so ``+inf == +inf`` and ``-inf == -inf`` never form
``exp(inf - inf)``) and ``r = sum exp(v_j - m)`` over the others; ``s = w + r``.
Keeping ``w`` apart gives ``log s = log1p(r)`` for one maximum (``log_wr``): the
dominant log-probability keeps its relative accuracy.  A segment of only ``-inf``
(or masked, given as ``-inf``) values has ``m = -inf``: the public layer reads it
as empty (logsumexp ``-inf``, softmax 0) unless ``r`` is NaN.  NaN makes ``r`` NaN
(the max skips NaN: ``[-inf, NaN]`` has ``m = -inf`` and ``r`` NaN).
States are float64; the exps run in the input dtype (float32 exps for float32
input) and are accumulated in float64.  The shifted kernels (float32, one column)
give ``(M, 0, r)`` instead: ``m`` is the call's shift, not the segment's max, the
ties are inside ``r``, and ``m + log(w + r)`` is still the log-sum-exp (the merge
rule and the public layer need nothing more).

Paths (the public layer picks one):

* CSR (sorted ids or ``offsets``): one task per segment, whose values are
  contiguous: pass 1 the max (vectorised ``maxnum``), pass 2 the sum of exps, and
  for softmax pass 3 the write -- the segment is read from cache after pass 1.
  float32 logsumexp with one column: ``csr_shifted_1d``, one pass per segment.
* scatter (unsorted ids): the values are cut into ``nparts`` contiguous parts,
  one per thread, each scattering into its own state arrays.  float32 with one
  column: ``shifted_sums``, ONE pass of float64 ``exp(v - M)`` for one shift ``M``
  of the call (segments far from ``M`` flagged, then ``fix_segments``); otherwise
  ``scatter_state``, two passes (the max, then the sums); the parts' states are
  merged afterwards, then softmax makes one more pass that gathers each value's
  segment entry (``gather_softmax_1d`` / ``gather_softmax``).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .exp import FASTMATH, exp_, expd_unit, fmax
from .view import row

__all__ = [
    "csr_shifted_1d",
    "csr_softmax_1d",
    "csr_softmax_2d",
    "csr_state_1d",
    "csr_state_2d",
    "csr_write_1d",
    "fix_segments",
    "gather_softmax",
    "gather_softmax_1d",
    "gather_table",
    "ids_info",
    "ids_sorted",
    "log_wr",
    "offsets_from_sorted",
    "scatter_state",
    "shifted_sums",
]


# One-pass shifted sums (float32 input, one column): every term is exp(v - M) in
# float64 for ONE shift M of the whole call.  A value with d = v - M outside
# [_LOW, _HIGH] flags its segment: below, the term may be lost to underflow (float64
# exp leaves the normal range at -708); above, a sum of up to 2^31 such terms could
# overflow.  Flagged segments whose sum is below exp(_KEEP) (low) -- or any flagged
# high -- are recomputed exactly by ``fix_segments``; a segment flagged low whose
# sum is above exp(_KEEP) has lost terms below exp(_LOW - _KEEP) = e^-50 of it each.
_LOW = -650.0
_HIGH = 650.0
_KEEP = -600.0


@njit(nogil=True, cache=True)
def ids_info(ids):
    """(min, max, sorted) of a 1-D integer array in one pass (0, -1, True when empty)."""
    n = ids.shape[0]
    if n == 0:
        return 0, -1, True
    lo = ids[0]
    hi = ids[0]
    ok = True
    for i in range(1, n):
        v = ids[i]
        lo = min(lo, v)
        hi = max(hi, v)
        ok = ok and v >= ids[i - 1]
    return lo, hi, ok


@njit(nogil=True, cache=True)
def ids_sorted(ids):
    """Whether 1-D integer ``ids`` are non-decreasing; stops at the first descent
    (random ids: after a few values), so unsorted ids cost no pass here."""
    for i in range(1, ids.shape[0]):
        if ids[i] < ids[i - 1]:
            return False
    return True


@njit(cache=True, inline="always")
def log_wr(w, r):
    """``log(w + r)`` for ``w`` ties at the max (each exactly 1) and the rest ``r``:
    ``log1p(r)`` for one tie keeps the relative accuracy of log-probabilities near 0
    (``log(1 + r)`` rounds ``r`` to the ulp of 1; guarded by
    test_segments.py::test_paths_match_reference)."""
    if w == 1.0:
        return np.log1p(r)
    if w == 0.0:
        return -np.inf if r == 0.0 else np.log(r)
    return np.log(w) + np.log1p(r / w)


@njit(fastmath=FASTMATH, cache=True, inline="always")
def _seg_state(xs):
    # pass 1: max (maxnum skips NaN, which then makes r NaN in pass 2)
    m = xs[0]
    for j in range(xs.shape[0]):
        m = fmax(m, xs[j])
    w = 0.0
    r = 0.0
    for j in range(xs.shape[0]):
        v = xs[j]
        w += 1.0 if v == m else 0.0
        r += 0.0 if v == m else exp_(v - m)
    return m, w, r


@njit(nogil=True, cache=True)
def csr_state_1d(x, offs, outm, outw, outr, t0, t1):
    """Segments ``[t0, t1)`` of 1-D ``x``: ``x[offs[k]:offs[k+1]]`` -> (m, w, r)."""
    for k in range(t0, t1):
        lo = offs[k]
        hi = offs[k + 1]
        if hi <= lo:
            outm[k] = -np.inf
            outw[k] = 0.0
            outr[k] = 0.0
            continue
        m, w, r = _seg_state(x[lo:hi])
        outm[k] = m
        outw[k] = w
        outr[k] = r


@njit(nogil=True, fastmath=FASTMATH, cache=True)
def csr_shifted_1d(x, offs, M, outm, outw, outr, t0, t1):
    """Segments ``[t0, t1)`` of 1-D float32 ``x`` in ONE vectorised pass each:
    ``r = sum exp(v - M)`` in float64 for the call's single shift ``M``, state
    ``(M, 0, r)``.  A segment holding a value outside ``[M + _LOW, M + _HIGH]``
    (``-inf`` aside) is recomputed exactly from cache (``_seg_state``: its max, then
    its sum).  The max pass of ``csr_state_1d`` is skipped for all the others."""
    for k in range(t0, t1):
        lo = offs[k]
        hi = offs[k + 1]
        xs = x[lo:hi]
        r = 0.0
        nout = 0
        for j in range(xs.shape[0]):
            d = np.float64(xs[j]) - M
            r += exp_(d)
            nout += 1 if ((d < _LOW) & (d > -np.inf)) | (d > _HIGH) else 0
        if nout:
            m, w, r = _seg_state(xs)
            outm[k] = m
            outw[k] = w
            outr[k] = r
        else:
            outm[k] = M
            outw[k] = 0.0
            outr[k] = r


@njit(fastmath=FASTMATH, cache=True, inline="always")
def _write_1d(xs, os, m, w, r, log):
    if m == -np.inf and r == r:  # empty by the contract: all -inf / masked (no NaN)
        fill = -np.inf if log else 0.0
        for j in range(xs.shape[0]):
            os[j] = fill
    elif log:
        ls = log_wr(w, r)
        for j in range(xs.shape[0]):
            v = xs[j]
            os[j] = (v - m if v != m else 0.0) - ls
    else:
        inv = 1.0 / (w + r)
        for j in range(xs.shape[0]):
            v = xs[j]
            os[j] = (exp_(v - m) if v != m else 1.0) * inv


@njit(fastmath=FASTMATH, cache=True, inline="always")
def _seg_softmax_1d(xs, os):
    """softmax of one segment with one exp per value: pass 2 of ``_seg_state``
    also stores its terms (1 at the ties) in ``os``, pass 3 scales them by ``1 / s``
    (the write pass took the exps again: 10^7 float32 values in 10^5 segments)."""
    m = xs[0]
    for j in range(xs.shape[0]):
        m = fmax(m, xs[j])
    w = 0.0
    r = 0.0
    for j in range(xs.shape[0]):
        v = xs[j]
        t = 1.0 if v == m else exp_(v - m)
        os[j] = t
        w += 1.0 if v == m else 0.0
        r += 0.0 if v == m else t
    if m == -np.inf and r == r:  # empty by the contract: all -inf / masked (no NaN)
        for j in range(xs.shape[0]):
            os[j] = 0.0
        return
    inv = 1.0 / (w + r)
    for j in range(xs.shape[0]):
        os[j] = os[j] * inv


@njit(nogil=True, cache=True)
def csr_softmax_1d(x, offs, out, log, t0, t1):
    """softmax (``log``: log_softmax) of each segment ``[t0, t1)`` of 1-D ``x``."""
    for k in range(t0, t1):
        lo = offs[k]
        hi = offs[k + 1]
        if hi <= lo:
            continue
        xs = x[lo:hi]
        if log:
            m, w, r = _seg_state(xs)
            _write_1d(xs, out[lo:hi], m, w, r, log)
        else:
            _seg_softmax_1d(xs, out[lo:hi])


@njit(fastmath=FASTMATH, cache=True, inline="always")
def _seg_state_2d(x2, lo, hi, mrow, wrow, rrow):
    C = x2.shape[1]
    for c in range(C):
        mrow[c] = -np.inf
        wrow[c] = 0.0
        rrow[c] = 0.0
    if hi <= lo:
        return
    xr = row(x2, lo)
    for c in range(C):
        mrow[c] = xr[c]
    for i in range(lo, hi):
        xr = row(x2, i)
        for c in range(C):
            mrow[c] = fmax(mrow[c], xr[c])
    for i in range(lo, hi):
        xr = row(x2, i)
        for c in range(C):
            v = xr[c]
            m = mrow[c]
            wrow[c] += 1.0 if v == m else 0.0
            rrow[c] += 0.0 if v == m else exp_(v - m)


@njit(nogil=True, cache=True)
def csr_state_2d(x2, offs, outm, outw, outr, t0, t1):
    """Segments of the rows of ``x2`` [N, C]: rows ``offs[k]:offs[k+1]`` -> [S, C]."""
    for k in range(t0, t1):
        mrow = row(outm, k)
        wrow = row(outw, k)
        rrow = row(outr, k)
        _seg_state_2d(x2, offs[k], offs[k + 1], mrow, wrow, rrow)


@njit(nogil=True, cache=True)
def csr_softmax_2d(x2, offs, out2, log, t0, t1):
    """softmax / log_softmax of the row segments of ``x2`` [N, C] into ``out2``."""
    C = x2.shape[1]
    mrow = np.empty(C, x2.dtype)
    wrow = np.empty(C)
    rrow = np.empty(C)
    srow = np.empty(C)
    lrow = np.empty(C)
    for k in range(t0, t1):
        lo = offs[k]
        hi = offs[k + 1]
        _seg_state_2d(x2, lo, hi, mrow, wrow, rrow)
        for c in range(C):
            srow[c] = wrow[c] + rrow[c]
            lrow[c] = log_wr(wrow[c], rrow[c])
        for i in range(lo, hi):
            _gather_row(row(x2, i), row(out2, i), mrow, srow, lrow, log)


@njit(fastmath=FASTMATH, cache=True, inline="always")
def _gather_row(xr, orow, mrow, srow, lrow, log):
    for c in range(xr.shape[0]):
        v = xr[c]
        m = mrow[c]
        if m == -np.inf and srow[c] == srow[c]:  # all -inf / masked, no NaN
            orow[c] = -np.inf if log else 0.0
        elif log:
            orow[c] = (v - m if v != m else 0.0) - lrow[c]
        else:
            orow[c] = (exp_(v - m) if v != m else 1.0) / srow[c]


_BLK = 256
# a float32 zero: ``0.0 if eq else v`` would make float32 ``v`` float64 (and the exp
# the float64 one); with this it stays in the input dtype
_Z32 = np.float32(0.0)


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


@njit(nogil=True, fastmath=FASTMATH, cache=True)
def csr_write_1d(x, offs, tab, out, log, t0, t1):
    """softmax / log_softmax of the segments ``[t0, t1)`` of 1-D ``x`` from the
    ``gather_table`` entries ``tab[k] = (c, f)``: ``exp(v - c) f`` / ``(v - c) - f``.
    float32 sorted path: the states come from ``csr_shifted_1d`` (one pass, no max
    pass) and the table from ``gather_table`` -- built apart, without fastmath:
    inside this kernel LLVM reassociated ``(c - m) - log s`` to 0 (guarded by
    test_segments_scatter.py::test_shifted_pass_recomputes_far_segments)."""
    for k in range(t0, t1):
        lo = offs[k]
        hi = offs[k + 1]
        xs = x[lo:hi]
        os = out[lo:hi]
        c = tab[k, 0]
        f = tab[k, 1]
        if log:
            for j in range(xs.shape[0]):  # in float64: fastmath may form c + f first
                v = xs[j]
                eq = v == c
                os[j] = (0.0 if eq else np.float64(v) - np.float64(c)) - np.float64(f)
        else:
            for j in range(xs.shape[0]):
                v = xs[j]
                eq = v == c
                os[j] = expd_unit(_Z32 if eq else v, _Z32 if eq else c) * f


@njit(nogil=True, cache=True)
def offsets_from_sorted(ids, num, offs):
    """CSR ``offs`` [num + 1] of sorted ids in ``[0, num)`` (one pass over ``ids``)."""
    n = ids.shape[0]
    k = 0
    for i in range(n):
        g = ids[i]
        while k <= g:
            offs[k] = i
            k += 1
    while k <= num:
        offs[k] = n
        k += 1
