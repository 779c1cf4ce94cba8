"""Sweeps over the reduced rows of a column block, for the column kernels (``cols.py``).

Each sweep runs along ``q`` (contiguous: vector loops) over one or eight rows of
``x[p, j, q0:q1]`` against per-column arrays of ``QB`` values: the running max ``m``,
the tile max and sums, the write pass's factors.  At 16 KiB of float32 per array,
three of them beside a row of ``x`` are past L1, so a sweep of one row at a time pays
a round trip to L2 per value of ``x`` on top of its exp.  The eight-row sweeps take
eight consecutive rows at once (eight sequential streams through one region of
memory) and touch the per-column arrays once per eight values.

``fused_tile`` is pass 1 of a tile in one eight-row sweep: the tile's column max and
the sums of ``exp((x - m) / T)`` against the running max ``m`` of the tiles before
it (the tile's own max is known only at its end).  Terms above ``m`` are then larger
than 1; their argument is carried exactly (``exp.expd`` / ``expd_unit``: the TwoSum
pair in float32), so they are as accurate as any other term, and the tile is
accepted when no column's max grew by more than ``GROW`` (in units of ``T``: the
terms stay far from overflow); the caller then rescales as for any tile
(``_rescale``).  Otherwise -- a first tile, a max that jumps, a ``+inf`` entry --
the caller discards the sums and runs the two sub-passes (max, then sums) on the
tile.  A NaN entry makes its column's sum NaN, as in the two sub-passes (the max
ignores it: ``fmax``), and the column's state then reads as NaN (``_classify``).

Measured on [8192, 4096] float32 ``axis=0``, one thread, CPU time, against one row
per sweep and two sub-passes per tile of 32 rows: logsumexp 17.1-21.0 -> 11.9-12.8
ms, log_softmax 32.6-35.0 -> 24.7-26.8, softmax 39.8-44.0 -> 29.2-38.0.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .exp import FASTMATH, exp_, expd, expd_unit, fmax
from .nt import nt_copy
from .rows.blocks import ld, st

GROW = 60.0  # largest accepted growth of a column max within a fused tile, in units of T
JBF = 128  # rows per fused tile (the check and the rescale run once per tile)
# the write pass streams rows of at least this many bytes (shorter ones: plain stores).
# [32768, 1024] float32 axis=0 (rows of 4 KiB) streamed, against plain stores, min CPU
# time: one thread softmax 36.3 against 25.4 ms, two threads 19.4-21.3 against
# 15.5-16.7; rows of 16 KiB ([8192, 4096]) gain from streaming on two threads
NT_ROW = 16384


@njit(fastmath=FASTMATH, cache=True)
def _cmax(xr, mr, br, has_mask, has_b, bm, ninf):
    for q in range(bm.shape[0]):
        inc = (not has_mask or mr[q]) and (not has_b or br[q] != 0)
        bm[q] = fmax(bm[q], ld(xr[q], ninf) if inc else ninf)


@njit(fastmath=FASTMATH, cache=True)
def _cmax_plain(xr, bm, ninf):
    for q in range(bm.shape[0]):
        bm[q] = fmax(bm[q], ld(xr[q], ninf))


@njit(fastmath=FASTMATH, cache=True)
def _csum_plain(xr, m, invT, bs, bc):
    z = ld(0.0, invT)
    one = ld(1.0, invT)
    for q in range(bs.shape[0]):
        v = ld(xr[q], invT)
        e = expd(v, m[q], invT)
        bs[q] += z if v >= m[q] else e
        bc[q] += one if v == m[q] else z


@njit(fastmath=FASTMATH, cache=True)
def _csum_all(xr, m, invT, bs):
    for q in range(bs.shape[0]):
        bs[q] += expd(ld(xr[q], invT), m[q], invT)


@njit(fastmath=FASTMATH, cache=True)
def _csum_all_unit(xr, m, bs):
    for q in range(bs.shape[0]):
        bs[q] += expd_unit(ld(xr[q], m[0]), m[q])


@njit(fastmath=FASTMATH, cache=True)
def _all_finite(m):
    # a count, not a short-circuit ``and``: the loop vectorises
    bad = 0
    for q in range(m.shape[0]):
        bad += 0 if (m[q] > -np.inf) & (m[q] < np.inf) else 1
    return bad == 0


@njit(fastmath=FASTMATH, cache=True)
def _rescale(bm, m, r, w0, inv64):
    """Columns whose tile max ``bm`` exceeds the running max ``m``: ``r = (r + w0) *
    exp((m - bm) / T)``, ``w0 = 0``, ``m = bm``.  Branch-free with the vectorised float64
    exp (``m = -inf`` gives the factor 0; a NaN ``bm`` fails the test): a scalar loop
    with a libm ``exp`` per grown column cost ~10 us per tile of 4096 columns."""
    for q in range(m.shape[0]):
        mq = m[q]
        b = bm[q]
        grow = b > mq
        f = exp_((np.float64(mq) - np.float64(b)) * inv64)
        r[q] = (r[q] + w0[q]) * f if grow else r[q]
        w0[q] = 0.0 if grow else w0[q]
        m[q] = b if grow else mq


@njit(fastmath=FASTMATH, cache=True)
def _csum(xr, mr, br, has_mask, has_b, m, invT, bs, bc):
    for q in range(bs.shape[0]):
        inc = not has_mask or mr[q]
        w = 1.0
        if has_b:
            w = np.float64(br[q])
            inc = inc and w != 0
        v = ld(xr[q], invT)
        e = expd(v, m[q], invT)
        bs[q] += w * e if inc and not v >= m[q] else 0.0
        bc[q] += w if inc and v == m[q] else 0.0


@njit(fastmath=FASTMATH, cache=True)
def _cwrite(xr, orow, m, invT, c, log):
    for q in range(orow.shape[0]):
        v = ld(xr[q], invT)
        if log:
            orow[q] = st((v - m[q]) * invT - c[q], orow)
        else:
            orow[q] = st(expd(v, m[q], invT) * c[q], orow)


@njit(fastmath=FASTMATH, cache=True)
def _cwrite_m(xr, mr, orow, m, invT, c, log):
    z = ld(0.0, invT)
    ninf = ld(-np.inf, invT)
    for q in range(orow.shape[0]):
        v = ld(xr[q], invT)
        if log:
            orow[q] = st((v - m[q]) * invT - c[q] if mr[q] else ninf, orow)
        else:
            orow[q] = st(expd(v, m[q], invT) * c[q] if mr[q] else z, orow)


@njit(fastmath=FASTMATH, cache=True, inline="always")
def _e(v, m, invT, unit):
    return expd_unit(v, m) if unit else expd(v, m, invT)


@njit(fastmath=FASTMATH, cache=True)
def _sweep8(x0, x1, x2, x3, x4, x5, x6, x7, m, invT, unit, bm, bs):
    """``bm = max(bm, x0..x7)``, ``bs += sum_k exp((xk - m) / T)`` per column."""
    for q in range(bs.shape[0]):
        a, b, c, d = ld(x0[q], invT), ld(x1[q], invT), ld(x2[q], invT), ld(x3[q], invT)
        e, f, g, h = ld(x4[q], invT), ld(x5[q], invT), ld(x6[q], invT), ld(x7[q], invT)
        mq = m[q]
        hi = fmax(fmax(fmax(a, b), fmax(c, d)), fmax(fmax(e, f), fmax(g, h)))
        bm[q] = fmax(bm[q], hi)
        s0 = (_e(a, mq, invT, unit) + _e(b, mq, invT, unit)) + (
            _e(c, mq, invT, unit) + _e(d, mq, invT, unit)
        )
        s1 = (_e(e, mq, invT, unit) + _e(f, mq, invT, unit)) + (
            _e(g, mq, invT, unit) + _e(h, mq, invT, unit)
        )
        bs[q] += s0 + s1


@njit(fastmath=FASTMATH, cache=True)
def _sweep1(x0, m, invT, unit, bm, bs):
    for q in range(bs.shape[0]):
        a = ld(x0[q], invT)
        bm[q] = fmax(bm[q], a)
        bs[q] += _e(a, m[q], invT, unit)


@njit(fastmath=FASTMATH, cache=True)
def _grew_little(bm, m, invT):
    """Whether every column's tile max ``bm`` is at most ``GROW * T`` above ``m`` (a
    count, so that the loop vectorises; ``+inf`` is growth)."""
    inv64 = np.float64(invT)
    bad = 0
    for q in range(m.shape[0]):
        g = (np.float64(bm[q]) - np.float64(m[q])) * inv64
        bad += 0 if g <= GROW else 1
    return bad == 0


@njit(fastmath=FASTMATH, cache=True)
def fused_tile(x, p, q0, q1, t0, t1, invT, m, bm, bs, tr):
    """Pass 1 of rows ``t0:t1`` of columns ``q0:q1`` of ``x[p]`` in one sweep (see the
    module docstring): the column max into ``bm``, the sums relative to the running
    max ``m`` (every entry finite) into ``tr`` (float64; ``bs``: float32 lane sums of
    eight rows).  Returns whether the tile is accepted (else ``tr`` is to be
    discarded and the tile done in two sub-passes)."""
    unit = invT == 1
    bm[:] = ld(-np.inf, invT)
    tr[:] = 0.0
    for s0 in range(t0, t1, 8):
        bs[:] = 0.0
        if s0 + 8 <= t1:
            _sweep8(
                x[p, s0, q0:q1],
                x[p, s0 + 1, q0:q1],
                x[p, s0 + 2, q0:q1],
                x[p, s0 + 3, q0:q1],
                x[p, s0 + 4, q0:q1],
                x[p, s0 + 5, q0:q1],
                x[p, s0 + 6, q0:q1],
                x[p, s0 + 7, q0:q1],
                m,
                invT,
                unit,
                bm,
                bs,
            )
        else:
            for j in range(s0, t1):
                _sweep1(x[p, j, q0:q1], m, invT, unit, bm, bs)
        for q in range(tr.shape[0]):
            tr[q] += np.float64(bs[q])
    return _grew_little(bm, m, invT)


@njit(fastmath=FASTMATH, cache=True)
def _write8_log(x0, x1, x2, x3, x4, x5, x6, x7, o, m, invT, c):
    for q in range(m.shape[0]):
        mq = m[q]
        cq = c[q]
        o[0, q] = (ld(x0[q], invT) - mq) * invT - cq
        o[1, q] = (ld(x1[q], invT) - mq) * invT - cq
        o[2, q] = (ld(x2[q], invT) - mq) * invT - cq
        o[3, q] = (ld(x3[q], invT) - mq) * invT - cq
        o[4, q] = (ld(x4[q], invT) - mq) * invT - cq
        o[5, q] = (ld(x5[q], invT) - mq) * invT - cq
        o[6, q] = (ld(x6[q], invT) - mq) * invT - cq
        o[7, q] = (ld(x7[q], invT) - mq) * invT - cq


@njit(fastmath=FASTMATH, cache=True)
def _write8_exp(x0, x1, x2, x3, x4, x5, x6, x7, o, m, invT, c):
    for q in range(m.shape[0]):
        mq = m[q]
        cq = c[q]
        o[0, q] = expd(ld(x0[q], invT), mq, invT) * cq
        o[1, q] = expd(ld(x1[q], invT), mq, invT) * cq
        o[2, q] = expd(ld(x2[q], invT), mq, invT) * cq
        o[3, q] = expd(ld(x3[q], invT), mq, invT) * cq
        o[4, q] = expd(ld(x4[q], invT), mq, invT) * cq
        o[5, q] = expd(ld(x5[q], invT), mq, invT) * cq
        o[6, q] = expd(ld(x6[q], invT), mq, invT) * cq
        o[7, q] = expd(ld(x7[q], invT), mq, invT) * cq


@njit(fastmath=FASTMATH, cache=True)
def stream_rows8(x, out, p, q0, q1, j0, j1, m, invT, c, log, sb):
    """The write pass over rows ``j0:j1`` of columns ``q0:q1`` of ``x[p]`` for an
    output larger than the last-level cache (in the compute dtype): eight rows at a
    time computed into the L1 block ``sb[8, q1 - q0]`` and streamed to ``out`` with
    non-temporal stores (``nt.nt_copy``: no read of each output line before it is
    written).  Returns the first row not written (fewer than eight are left, which
    the caller writes one at a time)."""
    j = j0
    nq = q1 - q0
    while j + 8 <= j1:
        r = (x[p, j, q0:q1], x[p, j + 1, q0:q1], x[p, j + 2, q0:q1], x[p, j + 3, q0:q1])
        r2 = (x[p, j + 4, q0:q1], x[p, j + 5, q0:q1], x[p, j + 6, q0:q1], x[p, j + 7, q0:q1])
        if log:
            _write8_log(*r, *r2, sb, m, invT, c)
        else:
            _write8_exp(*r, *r2, sb, m, invT, c)
        for k in range(8):
            nt_copy(sb[k], out[p, j + k, q0:q1], 0, nq)
        j += 8
    return j
