"""Row kernels for softmax, log_softmax and logsumexp (Numba).

Kernels see 2-D arrays ``x[R, n]`` whose rows are the reductions.  ``mask`` and
``b`` have the same shape but may be broadcast views (zero strides); when a
caller has no mask or no weights it passes a broadcast ``True`` / ``1`` and sets
``has_mask`` / ``has_b`` to False so the loads are skipped.  No user-facing
errors are raised here.

Pass structure (per row):

* pass 1: max ``m`` of the included values ``v = x / T`` and the index ``k`` of its
  first occurrence; NaN detection (``NaN`` wins over everything);
* pass 2: ``r = sum_{j != k} w_j exp(v_j - m)`` (the max term excluded, so that
  ``log(s) = log(w_k) + log1p(r / w_k)`` keeps full relative accuracy when one
  value dominates -- guarded by ``test_accuracy.py::test_float64_vs_mpmath``);
* pass 3 (softmax/log_softmax only): write.

Accumulator: float64 for every input dtype, summed in blocks of ``_BLOCK``
values (error ~ (_BLOCK + n/_BLOCK) eps instead of n eps).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

_BLOCK = 256

# Row classification codes, shared with the drivers.
FINITE = 0
EMPTY = 1  # no included value, or every included value is -inf (m == -inf)
POSINF = 2  # at least one included +inf
NAN = 3  # an included NaN (in x, or in the weight b)


@njit(cache=True, nogil=True)
def _row_state(x, mask, b, i, T, has_mask, has_b):
    """Return (code, m, k, r, wk, winf) for row ``i``.

    ``winf`` is the total weight of the +inf entries (their count without ``b``).
    """
    n = x.shape[1]
    m = -np.inf
    k = -1
    winf = 0.0
    for j in range(n):
        if has_mask and not mask[i, j]:
            continue
        w = 1.0
        if has_b:
            w = b[i, j]
            if w == 0:
                continue
            if w != w:
                return NAN, np.nan, -1, np.nan, np.nan, np.nan
        v = x[i, j] / T
        if v != v:
            return NAN, np.nan, -1, np.nan, np.nan, np.nan
        if v > m:
            m = v
            k = j
        if v == np.inf:
            winf += w
    if k < 0:
        return EMPTY, -np.inf, -1, 0.0, 0.0, 0.0
    if m == np.inf:
        return POSINF, m, k, 0.0, 0.0, winf
    wk = 1.0
    if has_b:
        wk = b[i, k]
    total = 0.0
    block = 0.0
    c = 0
    for j in range(n):
        if j == k:
            continue
        if has_mask and not mask[i, j]:
            continue
        w = 1.0
        if has_b:
            w = b[i, j]
            if w == 0:
                continue
        block += w * math.exp(x[i, j] / T - m)
        c += 1
        if c == _BLOCK:
            total += block
            block = 0.0
            c = 0
    total += block
    return FINITE, m, k, total, wk, 0.0


@njit(cache=True, nogil=True, parallel=True)
def logsumexp_rows(x, mask, b, T, has_mask, has_b, lse, sign):
    """lse[i], sign[i] = log|sum_j b_ij exp(x_ij / T)| and its sign, per row."""
    for i in prange(x.shape[0]):
        code, m, _k, r, wk, winf = _row_state(x, mask, b, i, T, has_mask, has_b)
        if code == NAN:
            lse[i] = np.nan
            sign[i] = np.nan
        elif code == EMPTY:
            lse[i] = -np.inf
            sign[i] = 0.0
        elif code == POSINF:
            if winf != winf:
                lse[i] = np.nan
                sign[i] = np.nan
            elif winf == 0:
                # +inf entries whose weights cancel: inf - inf
                lse[i] = np.nan
                sign[i] = np.nan
            else:
                lse[i] = np.inf
                sign[i] = 1.0 if winf > 0 else -1.0
        else:
            total = wk + r
            if total == 0:
                lse[i] = -np.inf
                sign[i] = 0.0
            elif total != total:
                lse[i] = np.nan
                sign[i] = np.nan
            else:
                ratio = r / wk
                if ratio > -1.0 and ratio <= 1.0:
                    la = math.log(abs(wk)) + math.log1p(ratio)
                else:
                    la = math.log(abs(total))
                lse[i] = m + la
                sign[i] = 1.0 if total > 0 else -1.0


@njit(cache=True, nogil=True, parallel=True)
def softmax_rows(x, mask, dummy_b, T, has_mask, log, out):
    """out = softmax(x / T) (or log_softmax when ``log``) per row; masked -> 0 / -inf."""
    n = x.shape[1]
    for i in prange(x.shape[0]):
        code, m, _k, r, _wk, winf = _row_state(x, mask, dummy_b, i, T, has_mask, False)
        if code == NAN:
            for j in range(n):
                out[i, j] = np.nan
        elif code == EMPTY:
            for j in range(n):
                out[i, j] = -np.inf if log else 0.0
        elif code == POSINF:
            lk = math.log(winf)
            for j in range(n):
                hit = x[i, j] / T == np.inf and (not has_mask or mask[i, j])
                if log:
                    out[i, j] = -lk if hit else -np.inf
                else:
                    out[i, j] = 1.0 / winf if hit else 0.0
        else:
            s = 1.0 + r
            ls = math.log1p(r)
            for j in range(n):
                if has_mask and not mask[i, j]:
                    out[i, j] = -np.inf if log else 0.0
                    continue
                d = x[i, j] / T - m
                if log:
                    out[i, j] = d - ls
                else:
                    out[i, j] = math.exp(d) / s


@njit(cache=True, nogil=True, parallel=True)
def state_rows(x, mask, b, T, has_mask, has_b, m_out, s_out):
    """The mergeable (m, s) state of each row, in float64.

    ``m`` is the max of the included ``x / T`` and ``s = sum_j w_j exp(x_j / T - m)``.
    Special rows: empty or all ``-inf`` -> (-inf, 0); ``+inf`` present -> (+inf, total
    weight of the +inf entries); NaN -> (NaN, NaN).  See ``softmaxkit._state``.
    """
    for i in prange(x.shape[0]):
        code, m, _k, r, wk, winf = _row_state(x, mask, b, i, T, has_mask, has_b)
        if code == NAN:
            m_out[i] = np.nan
            s_out[i] = np.nan
        elif code == EMPTY:
            m_out[i] = -np.inf
            s_out[i] = 0.0
        elif code == POSINF:
            m_out[i] = np.inf
            s_out[i] = winf
        else:
            m_out[i] = m
            s_out[i] = wk + r
