"""Kernels of ``logmatmulexp``: exps of shifted rows / columns for the BLAS product, the
log finish, and the direct entries (re-exported by ``_kernels/scan.py``)."""

from __future__ import annotations

import numpy as np
from numba import njit

from .exp import FASTMATH, exp_
from .logsum import _log_sum_pair
from .view import row


# --------------------------------------------------------------------------- logmatmulexp
@njit(nogil=True, cache=True, fastmath=FASTMATH)
def exp_shift_rows(src, shift, dst, t0, t1):
    """``dst[i, j] = exp(src[i, j] - shift[i])`` for rows ``[t0, t1)``."""
    for i in range(t0, t1):
        sr = row(src, i)
        dr = row(dst, i)
        sh = shift[i]
        for j in range(sr.shape[0]):
            dr[j] = exp_(sr[j] - sh)


@njit(nogil=True, cache=True, fastmath=FASTMATH)
def exp_shift_cols(src, shift, dst, t0, t1):
    """``dst[j, k] = exp(src[j, k] - shift[k])`` for rows ``[t0, t1)``."""
    for j in range(t0, t1):
        sr = row(src, j)
        dr = row(dst, j)
        for k in range(sr.shape[0]):
            dr[k] = exp_(sr[k] - shift[k])


@njit(nogil=True, cache=True, fastmath={"contract"})
def log_finish(S, a, b, t0, t1):
    """In place: ``S[i, k] = log(S[i, k]) + a[i] + b[k]`` (float64 log) for rows [t0, t1)."""
    for i in range(t0, t1):
        sr = row(S, i)
        ai = a[i]
        for k in range(sr.shape[0]):
            s = np.float64(sr[k])
            lg = _log_sum_pair(s, 0.0)
            ok = s >= 2.2250738585072014e-308 and s < np.inf
            sr[k] = (lg if ok else np.log(s)) + ai + b[k]


@njit(nogil=True, cache=True, inline="always")
def _direct(A, B, i, k):
    """``log sum_j exp(A[i, j] + B[j, k])`` in float64, as the naive form: NaN when a
    sum ``A[i, j] + B[j, k]`` is NaN (``+inf + -inf`` included), else ``+-inf`` when
    the largest is, else ``m + log(sum exp(v - m))``."""
    J = A.shape[1]
    m = -np.inf
    nan = False
    for j in range(J):
        v = np.float64(A[i, j]) + np.float64(B[j, k])
        if v > m:
            m = v
        elif v != v:
            nan = True
    if nan:
        return np.nan
    if m == -np.inf or m == np.inf:
        return m
    s = 0.0
    for j in range(J):
        s += np.exp(np.float64(A[i, j]) + np.float64(B[j, k]) - m)
    return m + np.log(s)


@njit(nogil=True, cache=True)
def direct_entries(A, B, ii, kk, res, t0, t1):
    """``res[t] = log sum_j exp(A[ii[t], j] + B[j, kk[t]])`` (float64) for ``[t0, t1)``."""
    for t in range(t0, t1):
        res[t] = _direct(A, B, ii[t], kk[t])


@njit(nogil=True, cache=True)
def direct_batched(A3, B3, out3):
    """Every entry of small products directly: ``out3[n, i, k] = log sum_j exp(A3[n, i,
    j] + B3[n, j, k])`` (``_direct``, rounded once to ``out3``'s dtype)."""
    for n in range(A3.shape[0]):
        An = A3[n]
        Bn = B3[n]
        on = out3[n]
        for i in range(An.shape[0]):
            for k in range(Bn.shape[1]):
                on[i, k] = _direct(An, Bn, i, k)


@njit(nogil=True, cache=True)
def direct_entries_signed(A, B, sA, sB, ii, kk, res, sgn, t0, t1):
    """Signed ``direct_entries``: ``S = sum_j sA[i, j] sB[j, k] exp(A[i, j] + B[j, k])``
    as ``res[t] = log|S|``, ``sgn[t] = sign(S)`` (float64) for ``[t0, t1)``.

    ``A``/``B`` hold ``-inf`` where the sign is 0 (the caller's convention).  The
    terms ``exp(v - m)`` (``m`` the largest ``v``) are summed with Neumaier's
    compensation, so a cancelling sum keeps the accuracy of its terms (an exact
    zero gives ``-inf`` and sign 0).  ``+inf`` terms of one sign give ``+inf`` with
    that sign, of both signs NaN; a NaN value or sign gives NaN.
    """
    J = A.shape[1]
    for t in range(t0, t1):
        i = ii[t]
        k = kk[t]
        m = -np.inf
        nan = False
        for j in range(J):
            v = np.float64(A[i, j]) + np.float64(B[j, k])
            g = np.float64(sA[i, j]) * np.float64(sB[j, k])
            if v != v or g != g:
                nan = True
            elif v > m:
                m = v
        if nan:
            res[t] = np.nan
            sgn[t] = np.nan
        elif m == -np.inf:
            res[t] = -np.inf
            sgn[t] = 0.0
        elif m == np.inf:
            pos = False
            neg = False
            for j in range(J):
                v = np.float64(A[i, j]) + np.float64(B[j, k])
                if v == np.inf:
                    g = np.float64(sA[i, j]) * np.float64(sB[j, k])
                    pos = pos or g > 0
                    neg = neg or g < 0
            res[t] = np.nan if pos and neg else np.inf
            sgn[t] = np.nan if pos and neg else (1.0 if pos else -1.0)
        else:
            s = 0.0
            c = 0.0
            for j in range(J):
                v = np.float64(A[i, j]) + np.float64(B[j, k])
                term = np.float64(sA[i, j]) * np.float64(sB[j, k]) * np.exp(v - m)
                u = s + term
                if abs(s) >= abs(term):
                    c += (s - u) + term
                else:
                    c += (term - u) + s
                s = u
            s += c
            if s == 0.0:
                res[t] = -np.inf
                sgn[t] = 0.0
            else:
                res[t] = m + np.log(abs(s))
                sgn[t] = 1.0 if s > 0 else -1.0
