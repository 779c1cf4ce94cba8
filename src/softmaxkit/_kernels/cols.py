"""Column kernels: reduce the middle axis of a dense ``x[P, n, Q]`` without a transpose.

Used for a non-last reduction axis of a C array (``axis=0`` of ``[n, Q]``), the last
axis of an F array, and any dense layout whose reduced axes form one run in memory.
Each task owns ``QB`` adjacent columns of one ``p`` (and, when there are too few such
tasks for the threads, a chunk of the ``n`` rows, merged afterwards with the (max,
sum) rule).  It streams over the reduced rows in tiles of ``JB`` rows with
per-column state -- the same state as the row kernels (``rows/``):
``m`` (compute dtype), ``r = sum_{x<m} w exp((x-m)/T)`` and ``w0 = sum_{x==m} w``
(float64, tile sums in the compute dtype) -- all loops vectorised along ``q``
(contiguous; the sweeps are in ``colsweeps.py``).  Pass 1, unmasked: tiles of
``JBF`` rows in one sweep each against the running max (``colsweeps.fused_tile``),
falling back to two sub-passes per tile of ``JB`` rows (column max, rescale, column
sums: the tile is cache-resident for the second) where that does not apply.  Pass 2
(softmax / log_softmax): write; an output larger than the last-level cache is
streamed with non-temporal stores (``colsweeps.stream_rows8``).  The exp is
``exp.expd`` (float32: all-float32 lanes with the argument ``(x - m) / T`` carried
exactly, see ``exp._expd32``).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from .colsweeps import (
    JBF,
    NT_ROW,
    _all_finite,
    _cmax,
    _cmax_plain,
    _csum,
    _csum_all,
    _csum_all_unit,
    _csum_plain,
    _cwrite,
    _cwrite_m,
    _rescale,
    fused_tile,
    stream_rows8,
)
from .exp import FASTMATH, is32
from .nt import NT_MIN_BYTES
from .rows.blocks import EMPTY, FINITE, NAN, ld, same_dtype, st
from .rows.pieces import _classify, _log_sum, _winf_ovf
from .view import any_layout, mslice, readonly, unit_last

QB = 4096  # columns per task: 16 KiB of float32 per row slice.  Measured on [8192, 4096]
# float32 axis=0 (softmax / log_softmax / logsumexp, ms): QB 256 x JB 32: 66 / 64 / 23;
# 1024 x 128: 39 / 39 / 16; 4096 x 32: 28.5 / 29 / 11.5.  Short slices at a power-of-two
# row stride land in the same cache sets and defeat the prefetchers.
_CSUB = 8  # rows per float32 lane sum before it is added in float64
JB = 32  # rows per tile (a float32 tile of 512 KiB stays in L2 for the sum sub-pass)


@njit(fastmath=FASTMATH, cache=True)
def _col_state(x, mask, b, has_mask, has_b, p, q0, q1, j0, j1, invT, m, r, w0, split):
    """Fill (m, r, w0) for columns q0:q1 of block p over reduced rows j0:j1.

    ``split`` False (softmax, which uses only ``S = w0 + r``): float64 columns with a
    finite max take the plain sum too (``w0`` 0), as float32 always does.
    """
    nq = q1 - q0
    ninf = ld(-np.inf, invT)
    inv64 = np.float64(invT)
    bm = np.full(nq, ninf)
    bs = np.zeros(nq, dtype=m.dtype)  # plain path: tile sums in the compute dtype
    bc = np.zeros(nq, dtype=m.dtype)
    plain = not has_mask and not has_b
    fuse = plain and (is32(invT) or not split)  # the sums below without ties (w0)
    # weighted / masked path: float64 sums and ties (unmasked: bs64 holds the fused
    # tiles' sums)
    bs64 = np.zeros(nq)
    bc64 = np.zeros(0 if plain else nq)
    m[:] = ninf
    r[:] = 0.0
    w0[:] = 0.0
    # tiles of JBF rows in one sweep against the running max where that applies (every
    # column max finite so far, no tie counts); else, and where the sweep's tile is
    # refused (colsweeps.fused_tile), two sub-passes per tile of JB rows
    for f0 in range(j0, j1, JBF):
        f1 = min(f0 + JBF, j1)
        if fuse and _all_finite(m) and fused_tile(x, p, q0, q1, f0, f1, invT, m, bm, bs, bs64):
            for q in range(nq):
                r[q] += bs64[q]
            _rescale(bm, m, r, w0, inv64)
            continue
        scr = (bm, bs, bc, bs64, bc64)
        _col_tiles(x, mask, b, has_mask, has_b, p, q0, q1, f0, f1, invT, m, r, w0, split, scr)


@njit(fastmath=FASTMATH, cache=True)
def _col_tiles(x, mask, b, has_mask, has_b, p, q0, q1, j0, j1, invT, m, r, w0, split, scr):
    """``_col_state``'s rows j0:j1 in tiles of ``JB`` rows, two sub-passes each (max,
    then sums); ``scr``: the tile max and sums (``_col_state``)."""
    bm, bs, bc, bs64, bc64 = scr
    nq = q1 - q0
    ninf = ld(-np.inf, invT)
    inv64 = np.float64(invT)
    plain = not has_mask and not has_b
    for t0 in range(j0, j1, JB):
        t1 = min(t0 + JB, j1)
        bm[:] = ninf
        for j in range(t0, t1):
            if plain:
                _cmax_plain(x[p, j, q0:q1], bm, ninf)
            else:
                mr = mslice(mask, p, j, q0, q1) if has_mask else mslice(mask, 0, 0, 0, nq)
                br = b[p, j, q0:q1] if has_b else b[0, 0, :nq]
                _cmax(x[p, j, q0:q1], mr, br, has_mask, has_b, bm, ninf)
        _rescale(bm, m, r, w0, inv64)
        if plain:
            bs[:] = 0.0
            bc[:] = 0.0
            if (is32(invT) or not split) and _all_finite(m):
                # float32 (or softmax), every column max finite: plain sums of every
                # exp (the max terms exactly 1, w0 stays 0), at most _CSUB rows per
                # float32 lane sum (32 put log S 1.8e-6 off: rows/blocks.py::_SUB)
                for s0 in range(t0, t1, _CSUB):
                    for j in range(s0, min(s0 + _CSUB, t1)):
                        if invT == 1:
                            _csum_all_unit(x[p, j, q0:q1], m, bs)
                        else:
                            _csum_all(x[p, j, q0:q1], m, invT, bs)
                    if t1 - s0 > _CSUB:
                        for q in range(nq):
                            r[q] += np.float64(bs[q])
                        bs[:] = 0.0
            else:
                for j in range(t0, t1):
                    _csum_plain(x[p, j, q0:q1], m, invT, bs, bc)
            for q in range(nq):
                r[q] += np.float64(bs[q])
                w0[q] += np.float64(bc[q])
        else:
            bs64[:] = 0.0
            bc64[:] = 0.0
            for j in range(t0, t1):
                mr = mslice(mask, p, j, q0, q1) if has_mask else mslice(mask, 0, 0, 0, nq)
                br = b[p, j, q0:q1] if has_b else b[0, 0, :nq]
                _csum(x[p, j, q0:q1], mr, br, has_mask, has_b, m, invT, bs64, bc64)
            for q in range(nq):
                r[q] += bs64[q]
                w0[q] += bc64[q]


@njit(fastmath=FASTMATH, cache=True)
def _write_rows(x, mask, out, has_mask, p, q0, q1, j0, j1, mm, invT, c, log):
    for j in range(j0, j1):
        if has_mask:
            _cwrite_m(
                x[p, j, q0:q1], mslice(mask, p, j, q0, q1), out[p, j, q0:q1], mm, invT, c, log
            )
        else:
            _cwrite(x[p, j, q0:q1], out[p, j, q0:q1], mm, invT, c, log)


@njit(fastmath=FASTMATH, cache=True)
def _col_write(x, mask, out, has_mask, p, q0, q1, j0, j1, T, invT, log, m, r, w0):
    """Pass 2 for columns q0:q1 of block p, rows j0:j1, given merged column states."""
    nq = q1 - q0
    mm = np.full(nq, invT)
    c = np.full(nq, invT)
    nspecial = 0
    for q in range(nq):
        code, _ = _classify(m[q], r[q], w0[q], T)
        if code == FINITE:
            mm[q] = m[q]
            lS, _s = _log_sum(r[q], w0[q])
            c[q] = ld(lS, invT) if log else ld(1.0 / (w0[q] + r[q]), invT)
        else:
            mm[q] = ld(0.0, invT)
            c[q] = ld(0.0, invT)
            nspecial += 1
    # +inf columns: which entries are +inf (and their count) is read from x before the
    # write loop, which overwrites x when out is x (in place)
    hits = np.zeros((j1 - j0, nspecial), dtype=np.bool_)
    winfs = np.zeros(nspecial)
    k = 0
    for q in range(nq if nspecial else 0):
        code, _ = _classify(m[q], r[q], w0[q], T)
        if code == FINITE:
            continue
        if code != NAN and code != EMPTY:
            qq = q0 + q
            winfs[k] = w0[q]
            if m[q] != np.inf:
                mc = mask[p, :, qq] if has_mask else mask[0, 0, :]
                winfs[k] = _winf_ovf(x[p, :, qq], mc, mc, has_mask, False, T)
            for j in range(j0, j1):
                hit = ld(x[p, j, qq], 0.0) / T == np.inf and (not has_mask or mask[p, j, qq])
                hits[j - j0, k] = hit
        k += 1
    # an unmasked output larger than the last-level cache, rows of at least NT_ROW
    # bytes: streamed eight rows at a time (colsweeps.py), the rest one row at a time
    big = out.nbytes >= NT_MIN_BYTES and nq * out.itemsize >= NT_ROW
    big = big and not has_mask and same_dtype(out, invT)
    sb = np.empty((8 if big else 0, nq), dtype=out.dtype)
    jr = stream_rows8(x, out, p, q0, q1, j0, j1, mm, invT, c, log, sb) if big else j0
    _write_rows(x, mask, out, has_mask, p, q0, q1, jr, j1, mm, invT, c, log)
    k = 0
    for q in range(nq if nspecial else 0):
        code, _ = _classify(m[q], r[q], w0[q], T)
        if code == FINITE:
            continue
        qq = q0 + q
        if code == NAN:
            for j in range(j0, j1):
                out[p, j, qq] = st(np.nan, out)
        elif code == EMPTY:
            v = -np.inf if log else 0.0
            for j in range(j0, j1):
                out[p, j, qq] = st(v, out)
        else:
            hitv = -math.log(winfs[k]) if log else 1.0 / winfs[k]
            other = -np.inf if log else 0.0
            for j in range(j0, j1):
                out[p, j, qq] = st(hitv if hits[j - j0, k] else other, out)
        k += 1


@njit(fastmath=FASTMATH, cache=True)
def _merge_cols(M, Rr, W, p, q0, q1, njc, inv64, m, r, w0):
    """Merge the njc row-chunk states of columns q0:q1 (arrays [P, njc, Q])."""
    for q in range(q1 - q0):
        mx = M[p, 0, q0 + q]
        for c in range(1, njc):
            mx = max(mx, M[p, c, q0 + q])
        rs = 0.0
        ws = 0.0
        for c in range(njc):
            mc = M[p, c, q0 + q]
            if mc == mx:
                rs += Rr[p, c, q0 + q]
                ws += W[p, c, q0 + q]
            else:
                rs += (Rr[p, c, q0 + q] + W[p, c, q0 + q]) * math.exp((mc - mx) * inv64)
        m[q] = mx
        r[q] = rs
        w0[q] = ws


@njit(fastmath=FASTMATH, cache=True)
def _task_bounds(t, Q, n, nqb, njc, jcs):
    pq = t // njc
    jc = t % njc
    p = pq // nqb
    q0 = (pq % nqb) * QB
    q1 = min(q0 + QB, Q)
    j0 = jc * jcs
    j1 = min(j0 + jcs, n)
    return p, q0, q1, j0, j1, jc


@njit(fastmath=FASTMATH, cache=True)
def _sm_task(t, x, mask, out, has_mask, T, invT, log, nqb, njc, jcs, M, Rr, W, phase):
    """One (p, column block, row chunk) task; phase 0 fused, 1 state only, 2 merge+write."""
    _P, n, Q = x.shape
    p, q0, q1, j0, j1, jc = _task_bounds(t, Q, n, nqb, njc, jcs)
    nq = q1 - q0
    m = np.full(nq, invT)
    r = np.zeros(nq)
    w0 = np.zeros(nq)
    if phase != 2:
        _col_state(x, mask, mask, has_mask, False, p, q0, q1, j0, j1, invT, m, r, w0, log)
    if phase == 1:
        for q in range(nq):
            M[p, jc, q0 + q] = m[q]
            Rr[p, jc, q0 + q] = r[q]
            W[p, jc, q0 + q] = w0[q]
        return
    if phase == 2:
        m64 = np.zeros(nq)
        _merge_cols(M, Rr, W, p, q0, q1, njc, np.float64(invT), m64, r, w0)
        for q in range(nq):
            m[q] = ld(m64[q], invT)
    _col_write(x, mask, out, has_mask, p, q0, q1, j0, j1, T, invT, log, m, r, w0)


_KW = {"fastmath": FASTMATH, "cache": True, "nogil": True}


@njit(**_KW)
def softmax_range(x, mask, out, has_mask, T, invT, log, nqb, njc, jcs, M, Rr, W, phase, t0, t1):
    """Tasks t0:t1 of softmax over axis 1 of x[P, n, Q] (phase: see ``_sm_task``)."""
    for t in range(t0, t1):
        _sm_task(t, x, mask, out, has_mask, T, invT, log, nqb, njc, jcs, M, Rr, W, phase)


@njit(fastmath=FASTMATH, cache=True)
def _lse_task(t, x, mask, b, has_mask, has_b, invT, nqb, njc, jcs, M, Rr, W):
    _P, n, Q = x.shape
    p, q0, q1, j0, j1, jc = _task_bounds(t, Q, n, nqb, njc, jcs)
    nq = q1 - q0
    m = np.full(nq, invT)
    r = np.zeros(nq)
    w0 = np.zeros(nq)
    _col_state(x, mask, b, has_mask, has_b, p, q0, q1, j0, j1, invT, m, r, w0, True)
    for q in range(nq):
        M[p, jc, q0 + q] = m[q]
        Rr[p, jc, q0 + q] = r[q]
        W[p, jc, q0 + q] = w0[q]


@njit(**_KW)
def logsumexp_range(x, mask, b, has_mask, has_b, invT, nqb, njc, jcs, M, Rr, W, t0, t1):
    """Column states of tasks t0:t1 into M, Rr, W[P, njc, Q]."""
    for t in range(t0, t1):
        _lse_task(t, x, mask, b, has_mask, has_b, invT, nqb, njc, jcs, M, Rr, W)


@njit(**_KW)
def logsumexp_finish_range(x, mask, b, has_mask, has_b, T, invT, njc, M, Rr, W, lse, sign, t0, t1):
    """Merge the row-chunk states and finalise lse[p, :], sign[p, :] for p in t0:t1."""
    _P, _n, Q = x.shape
    inv64 = np.float64(invT)
    m = np.zeros(Q)
    r = np.zeros(Q)
    w0 = np.zeros(Q)
    for p in range(t0, t1):
        _merge_cols(M, Rr, W, p, 0, Q, njc, inv64, m, r, w0)
        for q in range(Q):
            code, mT = _classify(ld(m[q], invT), r[q], w0[q], T)
            if code == NAN:
                lse[p, q] = np.nan
                sign[p, q] = np.nan
            elif code == EMPTY:
                lse[p, q] = -np.inf
                sign[p, q] = 0.0
            elif code == FINITE:
                la, sg = _log_sum(r[q], w0[q])
                lse[p, q] = mT + la if sg != 0 else -np.inf
                sign[p, q] = sg
            else:
                winf = w0[q]
                if m[q] != np.inf:
                    mc = mask[p, :, q] if has_mask else mask[0, 0, :]
                    bc = b[p, :, q] if has_b else b[0, 0, :]
                    winf = _winf_ovf(x[p, :, q], mc, bc, has_mask, has_b, T)
                if winf != winf or winf == 0:
                    lse[p, q] = np.nan
                    sign[p, q] = np.nan
                else:
                    lse[p, q] = np.inf
                    sign[p, q] = 1.0 if winf > 0 else -1.0


# Placeholders for "no mask" / "no weights", read-only.  The mask one is strided (stride
# 0), the Numba type every mask has when it reaches a kernel (view.any_layout); the
# weights keep their layout (rows/entry.py).
_DUMMY_MASK = np.lib.stride_tricks.as_strided(
    np.ones(QB, np.bool_), (2, 1, QB), (0, 0, 1), writeable=False
)
_DUMMY_B = np.lib.stride_tricks.as_strided(
    np.ones(QB, np.float64), (1, 1, QB), (0, 0, 8), writeable=False
)


def _split(P, n, Q, nt):
    nqb = -(-Q // QB)
    base = P * nqb
    njc = 1
    if nt > 1 and base < 4 * nt and n >= 2 * 256:
        njc = min(-(-4 * nt // base), n // 256)
    jcs = -(-n // njc)
    njc = -(-n // jcs)
    return nqb, njc, jcs


def softmax_cols3d(x, mask, out, T, invT, log):
    """softmax / log_softmax over axis 1 of dense ``x[P, n, Q]`` into ``out``."""
    from ._parallel import run, threads_for

    x = readonly(x)  # one compiled variant (view.readonly)
    P, n, Q = x.shape
    nt = threads_for(x.size, invT.itemsize)
    nqb, njc, jcs = _split(P, n, Q, nt)
    if T < 1 and np.may_share_memory(x, out):
        # in place: a +inf column from finite x / T overflowing is counted over the
        # whole column in the write pass (rows.softmax_rows2d): columns stay whole
        njc, jcs = 1, n
    has_mask = mask is not None
    mask = _DUMMY_MASK if mask is None else readonly(unit_last(mask))
    T = np.float64(T)
    ntask = P * nqb * njc
    if njc == 1:
        M = np.empty((1, 1, 1))
        args = (x, mask, out, has_mask, T, invT, log, nqb, 1, n, M, M, M, 0)
        run(any_layout(softmax_range, args, (1,)), ntask, nt, *args)
        return
    M, Rr, W = (np.empty((P, njc, Q)) for _ in range(3))
    for phase in (1, 2):
        args = (x, mask, out, has_mask, T, invT, log, nqb, njc, jcs, M, Rr, W, phase)
        run(any_layout(softmax_range, args, (1,)), ntask, nt, *args)


def logsumexp_cols3d(x, mask, b, T, invT, lse, sign):
    """logsumexp over axis 1 of dense ``x[P, n, Q]`` -> ``lse[P, Q]``, ``sign[P, Q]``."""
    from ._parallel import run, threads_for

    x = readonly(x)  # one compiled variant (view.readonly)
    P, n, Q = x.shape
    nt = threads_for(x.size, invT.itemsize)
    nqb, njc, jcs = _split(P, n, Q, nt)
    has_mask, has_b = mask is not None, b is not None
    mask = _DUMMY_MASK if mask is None else readonly(unit_last(mask))
    b = _DUMMY_B if b is None else readonly(b)
    T = np.float64(T)
    M, Rr, W = (np.empty((P, njc, Q)) for _ in range(3))
    args = (x, mask, b, has_mask, has_b, invT, nqb, njc, jcs, M, Rr, W)
    run(any_layout(logsumexp_range, args, (1,)), P * nqb * njc, nt, *args)
    args = (x, mask, b, has_mask, has_b, T, invT, njc, M, Rr, W, lse, sign)
    run(any_layout(logsumexp_finish_range, args, (1,)), P, nt if P > 1 else 1, *args)
