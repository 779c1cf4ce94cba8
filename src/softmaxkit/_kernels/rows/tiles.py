"""Short rows (``n <= SHORT``) a tile at a time: the tile is copied transposed into an
L1 buffer so that SIMD lanes run across rows (max, exps and sums are vector loops
over rows); special rows (NaN, +-inf max) are written by the general row code.  With
AVX-512 the copies of float32 rows of 2..15 values (float64 2..10) are in-register
transposes (``transpose.py``), else strided loops.
"""

from __future__ import annotations

import numpy as np
from numba import njit
from numba.extending import overload

from ..exp import FASTMATH, expd, expsum_unit, fmax, is32
from ..logsum import log_sum_array
from ..nt import NT_MIN_BYTES, nt_copy
from ..transpose import HW_TRANSPOSE, NMAX32, NMAX64, cols_to_rows, rows_to_cols
from .blocks import FINITE, ld, same_dtype, st
from .pieces import _classify, _finite_state, _lse_finish_group, _write_row

# --------------------------------------------------------------------------- short rows
# Rows of at most SHORT values are processed a tile of ~_TILE values at a time, copied
# transposed into ``tb[n, nr]`` (L1) so that SIMD lanes run across rows: the row maxima,
# exps and sums are vector loops over ``nr`` rows at a time (a row of 10 values would
# otherwise be a scalar remainder loop, and per-row state a scalar loop each).
# softmax / log_softmax write the tile back row-major from ``tb``.  Special rows (NaN,
# +-inf max) are written by the general row code.
SHORT = 48  # measured: tiles win up to n = 48, the row kernels from n = 64
# softmax rows of at least SHORT_STORE values go to the store-then-scale row kernel
# when it applies (``softmax_rows2d``): single thread, float64, n = 24 / 32 / 48:
# 18.3 / 11.6 / 10.0 ms against the tile's 18.4 / 20.1 / 15.2 ms (float32: equal);
# at n = 16 the tile wins (21 vs 21-23 ms float64, 11 vs 15 ms float32)
SHORT_STORE = 24
_TILE = 4096
# tiles of rows shorter than this are transposed a column at a time (_tile_states)
_COLWISE32 = 16
_COLWISE64 = 11


@njit(fastmath=FASTMATH, cache=True)
def _col_max(col, mc):
    for k in range(mc.shape[0]):
        mc[k] = fmax(mc[k], col[k])


@njit(fastmath=FASTMATH, cache=True)
def _col_sum(col, mc, sc, cc, invT, store):
    """Add column ``col`` to the rows' sums ``sc`` (below the max) and tie counts ``cc``;
    ``store``: the exps replace the column (softmax writes them scaled)."""
    z = ld(0.0, invT)
    one = ld(1.0, invT)
    if invT == one:  # T = 1: the plain argument (exp.expsum_unit)
        for k in range(mc.shape[0]):
            v = col[k]
            m = mc[k]
            e = expsum_unit(v, m)
            sc[k] += z if v >= m else e
            cc[k] += one if v == m else z
            if store:
                col[k] = e
        return
    for k in range(mc.shape[0]):
        v = col[k]
        m = mc[k]
        e = expd(v, m, invT)
        sc[k] += z if v >= m else e
        cc[k] += one if v == m else z
        if store:
            col[k] = e


def tile_rows(n):
    """Rows per tile for rows of ``n`` values: about ``_TILE`` values, a multiple of 16
    rows so that every column loop is whole 16-lane vectors (no remainder loop)."""
    return max(16, (_TILE // max(n, 1)) // 16 * 16)


@njit(fastmath=FASTMATH, cache=True, error_model="numpy")
def _row_consts(M, Rr, W, L, C, T, invT, log):
    """Per row: ``C = log S`` (log) or ``1 / S``; returns the count of special rows."""
    bad = 0
    for k in range(C.shape[0]):
        C[k] = ld(L[k], invT) if log else ld(1.0 / (W[k] + Rr[k]), invT)
        mT = np.float64(M[k]) / T
        bad += 0 if _finite_state(mT, Rr[k], W[k]) else 1
    return bad


@njit(fastmath=FASTMATH, cache=True)
def _scratch(n, rpt, invT, staged):
    """The per-task scratch of the tile kernels, allocated once per task range:
    ``tb[n, rpt]``, ``M``, ``Sc``, ``Cc``, ``C`` (compute dtype), ``Rr``, ``W``, ``L``
    (float64), and a flat ``[rpt * n]`` staging buffer for streamed writes (empty
    unless ``staged``: logsumexp writes no rows)."""
    dt = np.full(1, invT).dtype
    tb = np.empty((n, rpt), dtype=dt)
    M = np.empty(rpt, dtype=dt)
    Sc = np.empty(rpt, dtype=dt)
    Cc = np.empty(rpt, dtype=dt)
    C = np.empty(rpt, dtype=dt)
    return (
        tb,
        M,
        Sc,
        Cc,
        C,
        np.empty(rpt),
        np.empty(rpt),
        np.empty(rpt),
        np.empty(n * rpt if staged else 0, dtype=dt),
    )


@njit(fastmath=FASTMATH, cache=True)
def _fill_v(a, v):
    for k in range(a.shape[0]):
        a[k] = v


@njit(fastmath=FASTMATH, cache=True)
def _widen(a, b, ra, rb):
    for k in range(a.shape[0]):
        ra[k] = np.float64(a[k])
        rb[k] = np.float64(b[k])


def _nt_rows(src, dst, hi):  # pragma: no cover - replaced by the overload inside jitted code
    """``nt_copy(src, dst, 0, hi)``; nothing where the dtypes differ (an untaken branch)."""
    raise NotImplementedError


@overload(_nt_rows)
def _nt_rows_ov(src, dst, hi):
    if src.dtype == dst.dtype:
        return lambda src, dst, hi: nt_copy(src, dst, 0, hi)
    return lambda src, dst, hi: None


@njit(fastmath=FASTMATH, cache=True)
def _lanes(invT):
    return 16 if is32(invT) else 8


@njit(fastmath=FASTMATH, cache=True)
def _vector_moves(a, invT):
    """Whether rows of ``a`` (2-D, C order) move to and from a tile as whole vectors
    (``transpose.py``): AVX-512, ``a`` in the compute dtype, ``2 <= n <= NMAX``."""
    n = a.shape[1]
    return (
        HW_TRANSPOSE and same_dtype(a, invT) and n >= 2 and n <= (NMAX32 if is32(invT) else NMAX64)
    )


@njit(fastmath=FASTMATH, cache=True, inline="always")
def _tile_states(x, i0, i1, invT, store, tb, M, Sc, Cc, Rr, W):
    """Rows i0:i1 of short rows transposed into ``tb[:, :nr]`` (compute dtype), their
    maxima ``M[:nr]`` and float64 ``Rr[:nr]`` (sum below the max) and ``W[:nr]`` (tie
    count); ``store``: ``tb`` then holds the exps instead of x.  The arrays are the
    task's scratch (``_scratch``): no allocation per tile."""
    n = x.shape[1]
    nr = i1 - i0
    Mv, Sv, Cv = M[:nr], Sc[:nr], Cc[:nr]
    _fill_v(Mv, ld(-np.inf, invT))
    r0 = 0  # rows from r0 on are copied a row at a time, below
    if _vector_moves(x, invT):
        # whole blocks of 16 (float32) / 8 (float64) rows as whole vectors
        # (transpose.py), the rest row by row
        r0 = nr // _lanes(invT) * _lanes(invT)
        rows_to_cols(
            x.reshape(x.size), i0 * n, r0 // _lanes(invT), n, tb.reshape(tb.size), tb.shape[1]
        )
    elif n < (_COLWISE32 if is32(invT) else _COLWISE64) and same_dtype(x, invT):
        # a column of the tile at a time (strided loads).  The copy alone, 1e6 rows of
        # 10, one thread: float32 8.0 -> 5.1 ms, float64 14.7 -> 8.8 ms; whole
        # logsumexp of rows of 10, float32: 16.3 -> 12.7 ns per row.  Longer rows
        # (float32 16, float64 15: 8-10% slower in the whole op) and float16 bits (at
        # every n) copy faster a row at a time, below.
        for j in range(n):
            tj = tb[j, :nr]
            xc = x[i0:i1, j]
            for r in range(nr):
                tj[r] = xc[r]
        r0 = nr
    xs = x[i0:i1]
    for r in range(r0, nr):
        xr = xs[r]
        for j in range(n):
            tb[j, r] = ld(xr[j], invT)
    for j in range(n):
        _col_max(tb[j, :nr], Mv)
    _fill_v(Sv, ld(0.0, invT))
    _fill_v(Cv, ld(0.0, invT))
    # with the tie split kept: a plain float32 sum per lane (40 terms in one lane,
    # the max's 1 included) measured 4.7e-7 in test_expd32_argument_is_exact
    for j in range(n):
        _col_sum(tb[j, :nr], Mv, Sv, Cv, invT, store)
    _widen(Sv, Cv, Rr[:nr], W[:nr])


@njit(fastmath=FASTMATH, cache=True, inline="always")
def _softmax_tile(t, x, out, T, invT, log, rows_per_tile, scr):
    """softmax / log_softmax of a tile of short rows, via ``_tile_states``.

    Measured against the row-major tile it replaces (per-row max / state loops of 10
    values): [1e6, 10] float32 softmax 21 -> 13 ms, float64 log_softmax 27 -> 17.5
    ms (2 threads).
    """
    tb, M, Sc, Cc, C, Rr, W, L, _ = scr
    R, n = x.shape
    i0 = t * rows_per_tile
    i1 = min(i0 + rows_per_tile, R)
    nr = i1 - i0
    _tile_states(x, i0, i1, invT, not log, tb, M, Sc, Cc, Rr, W)
    if log:
        log_sum_array(W[:nr], Rr[:nr], L[:nr])
    bad = _row_consts(M[:nr], Rr[:nr], W[:nr], L[:nr], C[:nr], T, invT, log)
    # special rows (NaN, +-inf) are computed from x into a scratch first and copied in
    # after the tile write: with out = x (in place) the tile write overwrites x
    sp = np.empty((bad, n), dtype=out.dtype)
    k = 0
    for r in range(nr if bad else 0):
        code, _ = _classify(M[r], Rr[r], W[r], T)
        if code != FINITE:
            _write_row(x[i0 + r], x[i0 + r], sp[k], False, 0, n, M[r], Rr[r], W[r], T, invT, log)
            k += 1
    # back to row-major
    os = out[i0:i1].reshape(nr * n)
    Mv, Cv = M[:nr], C[:nr]
    if _vector_moves(out, invT):
        # the results in place in ``tb`` (vector loops), then whole blocks of rows out
        # as whole vectors (transpose.py), the rest row by row
        for j in range(n):
            tj = tb[j, :nr]
            if log:
                for r in range(nr):
                    tj[r] = (tj[r] - Mv[r]) * invT - Cv[r]
            else:
                for r in range(nr):
                    tj[r] = tj[r] * Cv[r]
        nv = nr // _lanes(invT) * _lanes(invT)
        tf, ts, nb = tb.reshape(tb.size), tb.shape[1], nv // _lanes(invT)
        # outputs larger than the last-level cache: through an L1 scratch and streaming
        # stores (nt_copy: no read of each output line before it is written).  One
        # thread, CPU time, [1e6, 10] out=, a NumPy buffer (16 bytes past a line),
        # plain -> streaming: float32 softmax 13.9-14.1 -> 13.0-13.6 ms, float64
        # 28.1-28.7 -> 25.8-25.9.  Stored straight from the shuffles into an aligned
        # output it was 13.5 -> 12.0 (float32), but a third unrolled variant
        # (compile time, transpose.py) was not worth 1 ms.
        if out.nbytes < NT_MIN_BYTES:
            cols_to_rows(tf, ts, nb, n, os, 0)
        else:
            ob = scr[8]
            cols_to_rows(tf, ts, nb, n, ob, 0)
            _nt_rows(ob, os, nv * n)
        for r in range(nv, nr):
            for j in range(n):
                os[r * n + j] = st(tb[j, r], os)
    else:
        _write_back(tb, os, Mv, Cv, invT, log, n, nr)
    k = 0
    for r in range(nr if bad else 0):
        code, _ = _classify(M[r], Rr[r], W[r], T)
        if code != FINITE:
            out[i0 + r, :] = sp[k]
            k += 1


@njit(fastmath=FASTMATH, cache=True)
def _write_back(tb, os, Mv, Cv, invT, log, n, nr):
    """The tile's results to the flat rows ``os``, a column at a time (strided stores:
    faster here than a row at a time with strided loads, 20 against 24 ms
    single-thread; a row-major loop with the tile's values gathered does not
    vectorise: LLVM cannot rule out that the stores alias the gathered loads)."""
    for j in range(n):
        tj = tb[j, :nr]
        if log:
            for r in range(nr):
                os[r * n + j] = st((tj[r] - Mv[r]) * invT - Cv[r], os)
        else:
            for r in range(nr):
                os[r * n + j] = st(tj[r] * Cv[r], os)


@njit(fastmath=FASTMATH, cache=True, inline="always")
def _lse_tile(t, x, T, invT, rows_per_tile, lse, sign, scr):
    """logsumexp of a tile of short rows, via ``_tile_states`` (``log(w0 + r)`` is one
    vectorised loop per tile)."""
    tb, M, Sc, Cc, _C, Rr, W, L, _ = scr
    R = x.shape[0]
    i0 = t * rows_per_tile
    i1 = min(i0 + rows_per_tile, R)
    nr = i1 - i0
    _tile_states(x, i0, i1, invT, False, tb, M, Sc, Cc, Rr, W)
    log_sum_array(W[:nr], Rr[:nr], L[:nr])
    _lse_finish_group(x, x, x, False, i0, i1, M, Rr, W, L, T, lse, sign)
