"""The float32 block form of the running logsumexp (``logcumsumexp``): a row is read in
chunks of ``_CH32`` values; per chunk the exps of the exact differences from its first
value, a float64 running sum and a vectorised log (used by ``scan._scan_segment32``)."""

from __future__ import annotations

import numpy as np
from numba import njit

from .exp import FASTMATH, exp_, expd_unit
from .logsum import _log_split, log_sum_array

_CH = 256
# Chunk of the float32 block form (``scan._scan_segment32``): 1024 values amortise the
# per-chunk work (max reduction, two scalar exps, loop set-up) better than 256 or 512
# while the buffers (4 KiB of float32 exps, 8 KiB of float64 sums, 8 KiB of results)
# stay in L1 -- [512, 32000] float32, one thread: 1.61-1.66 ns per value at 512,
# 1.56-1.64 at 1024 (medians of 9, shared 2-core host, load 6).
_CH32 = 1024


@njit(fastmath=FASTMATH, cache=True, inline="always")
def _exp_terms(xb, mp, a, b, L, zero):
    # (c): one exp per value, vectorised (guarded by test_scan.py::test_special_values)
    for k in range(L):
        v = xb[k]
        p = mp[k]
        d = v - p
        d = -abs(d) if v != p else zero  # v == p: exactly 0, also for +-inf
        e = exp_(d)
        up = v > p
        a[k] = e if up else 1.0
        b[k] = 1.0 if up else e


@njit(fastmath=FASTMATH, cache=True, inline="always")
def _log_out(mm, ss, zeros, res, L):
    # (e): m + log(s).  s is 0 (nothing included yet: log gives -inf), NaN, or in
    # [1, n].  logsum.log_sum_array is vectorised inside its own loop (1.1 ns per value);
    # calling its per-value helper from this module was not inlined (5 ns per value).
    log_sum_array(ss[:L], zeros[:L], res[:L])
    for k in range(L):
        res[k] = mm[k] + res[k]


# Smallest normal float32: the block path of a float32 chunk (``_chunk32``) is taken
# when every exp(v - M) is at least this (a normal float32 keeps its relative
# accuracy; exp32 flushes below -87.3), which also rules out NaN and +-inf values.
_TINY32 = np.float32(1.1754944e-38)
_HUGE32 = np.float32(3.4028235e38)


@njit(fastmath=FASTMATH, cache=True)
def _chunk_exps(xb, M, ef, L):
    # exp(v - M) with the exact difference (expd_unit: TwoSum argument): the shift M
    # can lie far above an early value's running max, and a float32 rounded
    # difference would cost |v - M| * 6e-8 relative there.  Returns the number of
    # results that are not finite normal floats (below _TINY32, above _HUGE32 or
    # NaN: a value more than 87 below M or 88 above it, -inf, +inf, NaN).
    bad = 0
    for k in range(L):
        e = expd_unit(xb[k], M)
        ef[k] = e
        bad += 0 if (e >= _TINY32) & (e <= _HUGE32) else 1
    return bad


_LN2 = 0.6931471805599453
# 1 / (2j + 1), j = 1..5: the atanh series of log f to s^11 (|s| <= 0.1716:
# truncation 2 s^13 / 13 < 2e-11), enough under the float32 scan's exps (6e-8)
_B1, _B2, _B3, _B4, _B5 = 1.0 / 3, 1.0 / 5, 1.0 / 7, 1.0 / 9, 1.0 / 11


@njit(fastmath={"contract"}, cache=True, error_model="numpy", inline="always")
def _log32(u, R):
    # R + log(u) for a positive normal finite float64 u: a shorter vectorisable log
    # than logsum.log_sum_array's (1e-11 relative instead of 3 ulp, no libm fallback),
    # far under the float32 scan's exps (6e-8)
    f, kf, _ = _log_split(u)
    t = (f - 1.0) / (f + 1.0)
    z = t * t
    q = _B5
    q = q * z + _B4
    q = q * z + _B3
    q = q * z + _B2
    q = q * z + _B1
    t2 = t + t
    return R + (kf * _LN2 + (t2 + t2 * z * q))


@njit(fastmath={"contract"}, cache=True, error_model="numpy")
def _log_out32(pp, L, cs, cp, R, res):
    # res[k] = R + log(cs + pp[k] cp) for the float32 block path (pp: _prefix's
    # running sums).  The sum is a positive normal finite float64: with R = M (cp =
    # 1) it is >= 1 (the first value's own term, exp(0)); with R = m > M, cs = s >= 1
    # (a state with a finite m holds the term of the value m came from, 1).
    # Scaling here rather than in a pass of its own: ~0.14 ns per value less
    # ([512, 32000], one thread).  error_model "numpy": the "python" model's
    # zero-division check stops the vectoriser.
    for k in range(L):
        res[k] = _log32(cs + pp[k] * cp, R)


@njit(fastmath={"contract"}, cache=True)
def _prefix(ef, pp, L):
    # float64 running sum of the chunk's exps as 8 chains of q = L // 8 values held
    # in registers (one chain is add-latency bound: 2.5 ns per value through memory),
    # then each chain offset by the totals before it; positive terms, so the error
    # stays <= L * 2^-53 relative.  (Offsetting the chains inside _log_out32's loop
    # instead, 8 loops of q, stopped it vectorising: 0.6 -> 2 ns per value.)
    q = L >> 3
    a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = 0.0
    for k in range(q):
        a0 += np.float64(ef[k])
        pp[k] = a0
        a1 += np.float64(ef[q + k])
        pp[q + k] = a1
        a2 += np.float64(ef[2 * q + k])
        pp[2 * q + k] = a2
        a3 += np.float64(ef[3 * q + k])
        pp[3 * q + k] = a3
        a4 += np.float64(ef[4 * q + k])
        pp[4 * q + k] = a4
        a5 += np.float64(ef[5 * q + k])
        pp[5 * q + k] = a5
        a6 += np.float64(ef[6 * q + k])
        pp[6 * q + k] = a6
        a7 += np.float64(ef[7 * q + k])
        pp[7 * q + k] = a7
    for j in range(1, 8):
        off = pp[j * q - 1]  # total up to chain j (chain j - 1 already offset)
        for k in range(j * q, (j + 1) * q):
            pp[k] += off
    off = pp[8 * q - 1] if q else 0.0
    for k in range(8 * q, L):
        off += np.float64(ef[k])
        pp[k] = off


@njit(fastmath={"contract"}, cache=True, inline="always")
def _chunk32(xb, L, m, s, write, ef, pp, res):
    """Block form of a float32 chunk from the state ``(m, s)``: ``M`` the chunk's first
    value (any of its values serves as the shift; a separate max pass cost 0.17 ns
    per value, ~10% of the chunk), ``e_k = exp(v_k - M)`` (float32, vectorised),
    ``P_k`` their float64 running sum; with ``R = max(m, M)`` the scan is
    ``R + log(s exp(m - R) + P_k exp(M - R))`` (two scalar exps per chunk, a
    vectorised float64 log).  Returns
    ``(ok, m', s')``; ``ok`` False (nothing written) when an exp is not a normal float32
    (``_chunk_exps``): the caller then runs the per-value
    recurrence.  Guarded by test_scan_block32.py::test_float32_block_path_matches_float64.
    """
    if s != s or m == np.inf:  # a NaN or +inf entered before: the recurrence keeps it
        return False, m, s
    M = xb[0]
    if _chunk_exps(xb, M, ef, L):
        return False, m, s
    _prefix(ef, pp, L)
    Md = np.float64(M)
    if Md >= m:
        R = Md
        cs = s * np.exp(m - Md) if s != 0.0 else 0.0  # m = -inf: s exp(-inf) = 0
        cp = 1.0
    else:
        R = m
        cs = s
        cp = np.exp(Md - m)
    if write:
        _log_out32(pp, L, cs, cp, R, res)
    return True, R, cs + pp[L - 1] * cp
