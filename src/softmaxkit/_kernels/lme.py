"""Kernels of ``logmatmulexp``: exps of shifted rows / columns for the BLAS product, the
log finish, and the direct entries (re-exported by ``_kernels/scan.py``)."""

from __future__ import annotations

import numpy as np
from numba import njit

from .exp import FASTMATH, _log_sum_pair, exp_
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


@njit(nogil=True, cache=True)
def direct_entries(A, B, ii, kk, res, t0, t1):
    """``res[t] = log sum_j exp(A[ii[t], j] + B[j, kk[t]])`` (float64) for ``[t0, t1)``."""
    J = A.shape[1]
    for t in range(t0, t1):
        i = ii[t]
        k = kk[t]
        m = -np.inf
        nan = False
        for j in range(J):
            v = np.float64(A[i, j]) + np.float64(B[j, k])
            if v > m:
                m = v
            elif v != v:
                nan = True
        if nan:
            res[t] = np.nan
        elif m == -np.inf or m == np.inf:
            res[t] = m
        else:
            s = 0.0
            for j in range(J):
                s += np.exp(np.float64(A[i, j]) + np.float64(B[j, k]) - m)
            res[t] = m + np.log(s)
