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
applies (``_chunk32``: the chunk's first value as the shift ``M``, ``exp(v - M)``
vectorised, a float64 running sum in 8 chains, a vectorised log; 2.3x faster than
the recurrence, which stays the fallback for chunks with non-finite values or a
value more than 87 below ``M`` or 88 above it).  Long
rows are cut into blocks scanned on several threads, each starting from the merged
state of the blocks before it (``block_states`` first computes every block's own
state).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .exp import is32
from .lme import (  # noqa: F401
    direct_batched,
    direct_entries,
    direct_entries_signed,
    exp_shift_cols,
    exp_shift_rows,
    log_finish,
)
from .scan_block32 import (
    _CH,
    _CH32,
    _chunk32,
    _exp_terms,
    _log_out,
)
from .view import mrow, row

__all__ = ["block_states", "scan_rows", "scan_vjp_rows"]


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
    xb = np.empty(_CH32, xr.dtype)
    ef = np.empty(_CH32, xr.dtype)
    pp = np.empty(_CH32, np.float64)
    res = np.empty(_CH32, np.float64)
    for c0 in range(q0, q1, _CH32):
        L = min(_CH32, q1 - c0)
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
            ok, m2, s2 = _chunk32(xs, L, m, s, write, ef, pp, orow[c0 : c0 + L])
        else:
            ok, m2, s2 = _chunk32(xs, L, m, s, write, ef, pp, res)
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
                mr = mrow(m2, i0 + r)
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
        mr = mrow(m2, i)
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
        mr = mrow(m2, i)
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
