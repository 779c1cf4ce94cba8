"""Kernels of the running log-sum-exp (``logcumsumexp``) and of ``logmatmulexp``.

Scan state: the online normalizer's pair ``(m, s)`` with ``m`` the running max and
``s = sum exp(v - m)`` (``_state``), kept in float64.  One step with a new value ``v``
and the previous max ``p``:

    up = v > p:      s = s * exp(p - v) + 1,   m = v
    else:            s = s + exp(v - p)

which is ``s = s * A + B`` with ``e = exp(-|v - p|)`` (``0`` when ``v == p``, so
``-inf == -inf`` and ``+inf == +inf`` never form ``inf - inf``), ``A = up ? e : 1``
and ``B = up ? 1 : e``: one exp per value.  A NaN value never becomes the max
(comparisons are false) and makes ``B`` NaN, so ``s`` and every later output is
NaN.  A prefix of ``-inf`` has ``m = -inf`` and ``s >= 1``: its output
``m + log(s)`` is ``-inf``, never NaN.  ``s`` is 0 only before the first included
value (a ``where``-masked prefix): output ``-inf``.

Pass structure of a row segment, in chunks of ``_CH`` values (local buffers):
(a) load in scan order (reversed for ``reverse``), masked values as ``-inf``;
(b) the running max, sequential (a max chain); (c) ``A``, ``B``: one exp per value
in the compute dtype (float32 for float32 input: the difference of two float32
values, exact up to half an ulp of the difference), vectorised; (d) ``s = s*A + B``,
sequential float64 FMA chain; (e) ``m + log(s)`` with a vectorised float64 log,
written in the output dtype.  float32 rows take the block form of each chunk where it
applies (``_chunk32``: chunk max ``M``, ``exp(v - M)`` vectorised, a float64
running sum in 8 chains, a vectorised log; 2.3x faster than the recurrence, which
stays the fallback for chunks with non-finite values or a span over 87).  Long
rows are cut into blocks scanned on several threads, each starting from the merged
state of the blocks before it (``block_states`` first computes every block's own
state).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .exp import FASTMATH, _log_split, _log_sum_pair, exp_, expd_unit, is32, log_sum_array
from .view import row

__all__ = ["block_states", "scan_rows", "scan_vjp_rows"]

_CH = 256


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
    # [1, n].  exp.log_sum_array is vectorised inside its own loop (1.1 ns per value);
    # calling its per-value helper from this module was not inlined (5 ns per value).
    log_sum_array(ss[:L], zeros[:L], res[:L])
    for k in range(L):
        res[k] = mm[k] + res[k]


# Smallest normal float32: the block path of a float32 chunk (``_chunk32``) is taken
# when every exp(v - M) is at least this (a normal float32 keeps its relative
# accuracy; exp32 flushes below -87.3), which also rules out NaN and +-inf values.
_TINY32 = np.float32(1.1754944e-38)


@njit(fastmath=FASTMATH, cache=True)
def _chunk_max(xb, L):
    # the chunk's max in 8 independent lanes (a single maxnum chain cost ~5 ns per
    # value); NaN is skipped here and caught by _chunk_exps
    h0 = h1 = h2 = h3 = h4 = h5 = h6 = h7 = xb[0]
    q = L >> 3
    for j in range(q):
        k = 8 * j
        v = xb[k]
        h0 = v if v > h0 else h0
        v = xb[k + 1]
        h1 = v if v > h1 else h1
        v = xb[k + 2]
        h2 = v if v > h2 else h2
        v = xb[k + 3]
        h3 = v if v > h3 else h3
        v = xb[k + 4]
        h4 = v if v > h4 else h4
        v = xb[k + 5]
        h5 = v if v > h5 else h5
        v = xb[k + 6]
        h6 = v if v > h6 else h6
        v = xb[k + 7]
        h7 = v if v > h7 else h7
    for k in range(8 * q, L):
        v = xb[k]
        h0 = v if v > h0 else h0
    h0 = h1 if h1 > h0 else h0
    h2 = h3 if h3 > h2 else h2
    h4 = h5 if h5 > h4 else h4
    h6 = h7 if h7 > h6 else h6
    h0 = h2 if h2 > h0 else h0
    h4 = h6 if h6 > h4 else h4
    return h4 if h4 > h0 else h0


@njit(fastmath=FASTMATH, cache=True)
def _chunk_exps(xb, M, ef, L):
    # exp(v - M) with the exact difference (expd_unit: TwoSum argument): the block
    # max M can lie far above an early value's running max, and a float32 rounded
    # difference would cost |v - M| * 6e-8 relative there.  Returns the number of
    # results that are not normal floats (below _TINY32 or NaN: a value more than
    # 87 below M, -inf, +inf (inf - inf), NaN).
    bad = 0
    for k in range(L):
        e = expd_unit(xb[k], M)
        ef[k] = e
        bad += 0 if e >= _TINY32 else 1
    return bad


_LN2 = 0.6931471805599453
# 1 / (2j + 1), j = 1..5: the atanh series of log f to s^11 (|s| <= 0.1716:
# truncation 2 s^13 / 13 < 2e-11), enough under the float32 scan's exps (6e-8)
_B1, _B2, _B3, _B4, _B5 = 1.0 / 3, 1.0 / 5, 1.0 / 7, 1.0 / 9, 1.0 / 11


@njit(fastmath={"contract"}, cache=True, error_model="numpy")
def _log_out32(cc, pp, R, res, L):
    # res[k] = R + log(cc[k] + pp[k]) for the float32 block path, where the sum is a
    # positive normal finite float64: with R = M, pp[k] >= _TINY32; with R = m > M,
    # cc[k] = s >= 1 (a state with a finite max holds at least its max's term 1).
    # A shorter vectorised log than exp.log_sum_array's (1e-11 relative instead of
    # 3 ulp, no libm fallback), far under the float32 exps' 6e-8.  error_model
    # "numpy": the "python" model's zero-division check stops the vectoriser.
    for k in range(L):
        u = cc[k] + pp[k]
        f, kf, _ = _log_split(u)
        t = (f - 1.0) / (f + 1.0)
        z = t * t
        q = _B5
        q = q * z + _B4
        q = q * z + _B3
        q = q * z + _B2
        q = q * z + _B1
        t2 = t + t
        res[k] = R + (kf * _LN2 + (t2 + t2 * z * q))


@njit(fastmath={"contract"}, cache=True)
def _prefix(ef, pp, L):
    # float64 running sum of the chunk's exps as 8 chains of q = L // 8 values held
    # in registers (one chain is add-latency bound: 2.5 ns per value through memory),
    # then each chain offset by the totals before it; positive terms, so the error
    # stays <= L * 2^-53 relative
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
def _chunk32(xb, L, m, s, write, ef, pp, cc, res):
    """Block form of a float32 chunk from the state ``(m, s)``: ``M`` the chunk max,
    ``e_k = exp(v_k - M)`` (float32, vectorised), ``P_k`` their float64 running sum;
    with ``R = max(m, M)`` the scan is ``R + log(s exp(m - R) + P_k exp(M - R))``
    (two scalar exps per chunk, a vectorised float64 log).  Returns
    ``(ok, m', s')``; ``ok`` False (nothing written) when an exp is not a normal float32
    (``_chunk_exps``): the caller then runs the per-value
    recurrence.  Guarded by test_scan_block32.py::test_float32_block_path_matches_float64.
    """
    if s != s or m == np.inf:  # a NaN or +inf entered before: the recurrence keeps it
        return False, m, s
    M = _chunk_max(xb, L)
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
    for k in range(L):
        cc[k] = cs
        pp[k] = pp[k] * cp
    if write:
        _log_out32(cc, pp, R, res, L)
    return True, R, cs + pp[L - 1]


@njit(nogil=True, cache=True, fastmath={"contract"})
def _scan_segment(xr, mr, use_mask, orow, q0, q1, reverse, m, s, write, bufs):
    """Scan the scan-order positions ``[q0, q1)`` of one row from state (m, s)."""
    n = xr.shape[0]
    xb, mp, mm, a, b, ss, res, zb, zeros = bufs
    zero = zb[0]
    for c0 in range(q0, q1, _CH):
        L = min(_CH, q1 - c0)
        # (a) load in scan order
        if reverse:
            base = n - 1 - c0
            for k in range(L):
                xb[k] = xr[base - k]
            if use_mask:
                for k in range(L):
                    if not mr[base - k]:
                        xb[k] = -np.inf
        else:
            for k in range(L):
                xb[k] = xr[c0 + k]
            if use_mask:
                for k in range(L):
                    if not mr[c0 + k]:
                        xb[k] = -np.inf
        # (b) running max; mp[k] is the max before value k
        for k in range(L):
            mp[k] = m
            v = xb[k]
            m = v if v > m else m
            mm[k] = m
        _exp_terms(xb, mp, a, b, L, zero)
        # (d) the sequential recurrence in float64
        for k in range(L):
            s = s * a[k] + b[k]
            ss[k] = s
        if write:
            _log_out(mm, ss, zeros, res, L)
            if reverse:
                base = n - 1 - c0
                for k in range(L):
                    orow[base - k] = res[k]
            else:
                for k in range(L):
                    orow[c0 + k] = res[k]
    return m, s


@njit(nogil=True, cache=True, fastmath={"contract"})
def _scan_segment32(xr, mr, use_mask, orow, q0, q1, reverse, m, s, write, bufs):
    """``_scan_segment`` for float32 rows: each chunk by the block form
    (``_chunk32``) where it applies, else by ``_scan_segment``'s per-value recurrence.
    The block buffers are local arrays (not unpacked from a tuple), so LLVM knows
    they do not alias and vectorises the chunk loops (from a tuple: 21 ns per value
    instead of ~6, [128, 32000] float32, one thread)."""
    n = xr.shape[0]
    xb = np.empty(_CH, xr.dtype)
    ef = np.empty(_CH, xr.dtype)
    pp = np.empty(_CH, np.float64)
    cc = np.empty(_CH, np.float64)
    res = np.empty(_CH, np.float64)
    for c0 in range(q0, q1, _CH):
        L = min(_CH, q1 - c0)
        base = n - 1 - c0
        direct = not reverse and not use_mask
        if not direct:
            if reverse:
                for k in range(L):
                    xb[k] = xr[base - k]
                if use_mask:
                    for k in range(L):
                        if not mr[base - k]:
                            xb[k] = -np.inf
            else:
                for k in range(L):
                    xb[k] = xr[c0 + k]
                for k in range(L):
                    if not mr[c0 + k]:
                        xb[k] = -np.inf
        # forward without a mask: read the row and write the output in place
        xs = xr[c0 : c0 + L] if direct else xb[:L]
        if direct and write:
            ok, m2, s2 = _chunk32(xs, L, m, s, write, ef, pp, cc, orow[c0 : c0 + L])
        else:
            ok, m2, s2 = _chunk32(xs, L, m, s, write, ef, pp, cc, res)
        if not ok:
            m, s = _scan_segment(xr, mr, use_mask, orow, c0, c0 + L, reverse, m, s, write, bufs)
            continue
        m = m2
        s = s2
        if write and not direct:
            if reverse:
                for k in range(L):
                    orow[base - k] = res[k]
            else:
                for k in range(L):
                    orow[c0 + k] = res[k]
    return m, s


@njit(nogil=True, cache=True)
def _make_bufs(x2):
    xb = np.empty(_CH, x2.dtype)
    mp = np.empty(_CH, x2.dtype)
    mm = np.empty(_CH, np.float64)
    a = np.empty(_CH, np.float64)
    b = np.empty(_CH, np.float64)
    ss = np.empty(_CH, np.float64)
    res = np.empty(_CH, np.float64)
    zb = np.zeros(1, x2.dtype)
    zeros = np.zeros(_CH, np.float64)
    return xb, mp, mm, a, b, ss, res, zb, zeros


@njit(nogil=True, cache=True)
def _make_bufs4(x2):
    xb = np.empty((4, _CH), x2.dtype)
    mp = np.empty((4, _CH), x2.dtype)
    mm = np.empty((4, _CH), np.float64)
    a = np.empty((4, _CH), np.float64)
    b = np.empty((4, _CH), np.float64)
    ss = np.empty((4, _CH), np.float64)
    res = np.empty((4, _CH), np.float64)
    zb = np.zeros(1, x2.dtype)
    zeros = np.zeros(_CH, np.float64)
    return xb, mp, mm, a, b, ss, res, zb, zeros


@njit(nogil=True, cache=True, fastmath={"contract"})
def _scan4(x2, m2, use_mask, out2, i0, reverse, cm, cs, B):
    """Whole rows ``i0 .. i0 + 3`` scanned together: the two sequential chains of a
    chunk (running max, ``s = s*A + B``) of four rows interleaved, so the core
    overlaps their latencies (one row's chains are latency-bound)."""
    n = x2.shape[1]
    xb, mp, mm, a, b, ss, res, zb, zeros = B
    zero = zb[0]
    m0 = cm[i0, 0]
    m1 = cm[i0 + 1, 0]
    m2_ = cm[i0 + 2, 0]
    m3 = cm[i0 + 3, 0]
    s0 = cs[i0, 0]
    s1 = cs[i0 + 1, 0]
    s2 = cs[i0 + 2, 0]
    s3 = cs[i0 + 3, 0]
    for c0 in range(0, n, _CH):
        L = min(_CH, n - c0)
        for r in range(4):
            xr = row(x2, i0 + r)
            xbr = row(xb, r)
            if reverse:
                base = n - 1 - c0
                for k in range(L):
                    xbr[k] = xr[base - k]
            else:
                for k in range(L):
                    xbr[k] = xr[c0 + k]
            if use_mask:
                mr = row(m2, i0 + r)
                for k in range(L):
                    j = n - 1 - c0 - k if reverse else c0 + k
                    if not mr[j]:
                        xbr[k] = -np.inf
        for k in range(L):
            mp[0, k] = m0
            v = xb[0, k]
            m0 = v if v > m0 else m0
            mm[0, k] = m0
            mp[1, k] = m1
            v = xb[1, k]
            m1 = v if v > m1 else m1
            mm[1, k] = m1
            mp[2, k] = m2_
            v = xb[2, k]
            m2_ = v if v > m2_ else m2_
            mm[2, k] = m2_
            mp[3, k] = m3
            v = xb[3, k]
            m3 = v if v > m3 else m3
            mm[3, k] = m3
        for r in range(4):
            _exp_terms(row(xb, r), row(mp, r), row(a, r), row(b, r), L, zero)
        for k in range(L):
            s0 = s0 * a[0, k] + b[0, k]
            ss[0, k] = s0
            s1 = s1 * a[1, k] + b[1, k]
            ss[1, k] = s1
            s2 = s2 * a[2, k] + b[2, k]
            ss[2, k] = s2
            s3 = s3 * a[3, k] + b[3, k]
            ss[3, k] = s3
        for r in range(4):
            rr = row(res, r)
            _log_out(row(mm, r), row(ss, r), zeros, rr, L)
            orow = row(out2, i0 + r)
            if reverse:
                base = n - 1 - c0
                for k in range(L):
                    orow[base - k] = rr[k]
            else:
                for k in range(L):
                    orow[c0 + k] = rr[k]


@njit(nogil=True, cache=True)
def scan_rows(x2, m2, use_mask, out2, reverse, nblk, cm, cs, t0, t1):
    """Tasks ``t`` in ``[t0, t1)``: block ``t % nblk`` of row ``t // nblk``.

    ``x2`` [R, n] float32/float64 C rows, ``m2`` bool mask rows (read when
    ``use_mask``), ``out2`` [R, n] float32/float64; ``cm, cs`` [R, nblk] float64: the
    state entering each block (scan order).
    """
    n = x2.shape[1]
    bufs = _make_bufs(x2)
    if nblk == 1 and not is32(bufs[7][0]):
        bufs4 = _make_bufs4(x2)
        while t0 + 4 <= t1:
            _scan4(x2, m2, use_mask, out2, t0, reverse, cm, cs, bufs4)
            t0 += 4
    for t in range(t0, t1):
        i = t // nblk
        k = t % nblk
        xr = row(x2, i)
        mr = row(m2, i)
        orow = row(out2, i)
        q0 = n * k // nblk
        q1 = n * (k + 1) // nblk
        if is32(bufs[7][0]):
            _scan_segment32(xr, mr, use_mask, orow, q0, q1, reverse, cm[i, k], cs[i, k], True, bufs)
        else:
            _scan_segment(xr, mr, use_mask, orow, q0, q1, reverse, cm[i, k], cs[i, k], True, bufs)


@njit(nogil=True, cache=True)
def block_states(x2, m2, use_mask, reverse, nblk, bm, bs, t0, t1):
    """The own state (m, s) of every block (as in ``scan_rows``), into ``bm, bs``."""
    n = x2.shape[1]
    bufs = _make_bufs(x2)
    for t in range(t0, t1):
        i = t // nblk
        k = t % nblk
        xr = row(x2, i)
        mr = row(m2, i)
        q0 = n * k // nblk
        q1 = n * (k + 1) // nblk
        if is32(bufs[7][0]):
            m, s = _scan_segment32(
                xr, mr, use_mask, bufs[6], q0, q1, reverse, -np.inf, 0.0, False, bufs
            )
        else:
            m, s = _scan_segment(
                xr, mr, use_mask, bufs[6], q0, q1, reverse, -np.inf, 0.0, False, bufs
            )
        bm[i, k] = m
        bs[i, k] = s


@njit(nogil=True, cache=True)
def scan_vjp_rows(x2, y2, g2, out2, reverse, t0, t1):
    """VJP of the scan, rows ``[t0, t1)``, float64.

    ``grad_k = sum_{j >= k} g_j exp(x_k - y_j) = exp(x_k - y_k) Q_k`` with
    ``Q_k = g_k + exp(y_k - y_{k+1}) Q_{k+1}`` (scan order): ``y`` never decreases
    along the scan, so every factor is <= 1 and nothing overflows.  A prefix holding
    ``c_j >= 1`` entries ``+inf`` has the softmax ``1/c_j`` there and 0 elsewhere
    (the dense contract), so an ``+inf`` entry gets ``U_k = sum_{j >= k} g_j / c_j``
    and the finite entries after the first ``+inf`` get 0.  ``-inf`` (masked)
    entries get 0; NaN in ``x`` makes the row NaN through ``y``.
    """
    n = x2.shape[1]
    for i in range(t0, t1):
        xr = row(x2, i)
        yr = row(y2, i)
        gr = row(g2, i)
        orow = row(out2, i)
        total_inf = 0
        for j in range(n):
            if xr[j] == np.inf:
                total_inf += 1
        q = 0.0
        u = 0.0
        after = 0  # +inf entries strictly after position j (scan order)
        ynext = np.nan
        for p in range(n - 1, -1, -1):  # scan positions, last first
            j = n - 1 - p if reverse else p
            xv = xr[j]
            yv = yr[j]
            gv = gr[j]
            c = total_inf - after  # +inf entries up to and including j
            if c > 0:
                u += gv / c
                q = 0.0
            else:
                if p == n - 1 or ynext == np.inf:
                    f = 0.0
                elif yv == ynext:
                    f = 1.0
                else:
                    f = np.exp(yv - ynext)
                q = gv + f * q
            if xv == np.inf:
                orow[j] = u
                after += 1
            elif c > 0 or xv == -np.inf:
                orow[j] = 0.0 if yv == yv else np.nan
            else:
                orow[j] = np.exp(xv - yv) * q
            ynext = yv
        last = n - 1 if not reverse else 0
        if n and yr[last] != yr[last]:  # a NaN was included: every gradient is NaN
            for j in range(n):
                orow[j] = np.nan


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
