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
    "ids_info",
    "log_wr",
    "offsets_from_sorted",
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


# a float32 zero: ``0.0 if eq else v`` would make float32 ``v`` float64 (and the exp
# the float64 one); with this it stays in the input dtype
_Z32 = np.float32(0.0)


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
