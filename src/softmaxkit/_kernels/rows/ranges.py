"""Range kernels: serial, ``nogil`` Numba kernels over a task range ``[t0, t1)`` (rows,
tiles of short rows, or chunks of split rows) that ``_parallel.run`` splits over
threads.  softmax / log_softmax / logsumexp / the (m, s) state, whole rows or chunks
(pass 1: chunk states; pass 2: merge and write).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from ..exp import FASTMATH, is32
from ..logsum import log_sum_array
from ..view import mrow, row
from .blocks import (
    _BLOCK,
    _SUB,
    EMPTY,
    FINITE,
    NAN,
    POSINF,
    _bmax,
    _bsum,
    _sum_run,
    _sum_terms,
    _wlsm,
    _wsm_m,
    ld,
    same_dtype,
)
from .pieces import (
    _chunk_state,
    _chunk_task,
    _classify,
    _finite_state,
    _log_sum,
    _lse_finish,
    _lse_finish_group,
    _lse_row,
    _merge,
    _softmax_row,
    _task_span,
    _winf_ovf,
    _write_row,
    _write_row_nt,
    _write_task,
)
from .store import (
    L2_ROW,
    _run_terms,
    _scale,
    _scale_blocks,
    _softmax_block_store,
    _softmax_row_store,
    _state_store,
    _store_sum,
)
from .tiles import _lse_tile, _scratch, _softmax_tile

# --------------------------------------------------------------------------- range kernels
# Every kernel below is serial and nogil and works on a task range [t0, t1); the
# runner (``_parallel.run``) splits the tasks over ``numba.get_num_threads()`` Python
# threads.  We tried ``parallel=True`` + ``prange``: same speed, but every parfor
# recompiles its inlined body (measured 4-15 s per kernel and dtype against 1-3 s).
_KW = {"fastmath": FASTMATH, "cache": True, "nogil": True}


@njit(**_KW)
def softmax_short_range(x, out, T, invT, log, rows_per_tile, t0, t1):
    """softmax / log_softmax of short rows (n <= SHORT), tiles t0:t1 of rows."""
    scr = _scratch(x.shape[1], rows_per_tile, invT, True)
    for t in range(t0, t1):
        _softmax_tile(t, x, out, T, invT, log, rows_per_tile, scr)


@njit(**_KW)
def logsumexp_short_range(x, T, invT, rows_per_tile, lse, sign, t0, t1):
    """logsumexp of short rows (n <= SHORT), tiles t0:t1 of rows."""
    scr = _scratch(x.shape[1], rows_per_tile, invT, False)
    for t in range(t0, t1):
        _lse_tile(t, x, T, invT, rows_per_tile, lse, sign, scr)


_GROUP = 256  # rows whose log(w0 + r) are taken together by the vectorised log


@njit(fastmath=FASTMATH, cache=True)
def _group_states(x, mask, has_mask, g0, g1, invT, M, Rr, W, L, out, touch, mbs):
    """States of rows g0:g1 (no weights) into M, Rr, W[0:g1-g0]; L = log(W + Rr).

    ``touch``: pass 1 also stores its exps into ``out`` (``_state_store``).  The values
    are overwritten in pass 2; the point is the write-allocate: the output lines are
    fetched while pass 1 computes exps, not in the store-only pass 2 (log_softmax of
    [4096, 32000] float32: 53 -> 34 ms).
    """
    n = x.shape[1]
    if n <= _BLOCK and not has_mask:
        # Rows of one block: the max of row i + 1 before the exps of row i (as in
        # softmax_store_range), and the sum loops called from this loop.  Through a
        # per-row helper holding the special-row fallback (the former _state_small)
        # the look-ahead gained nothing.  Rows of 128, one thread, cache-resident, per
        # row: float32 pass 1 73 -> 58 ns (with the touch 75 -> 63), whole
        # log_softmax 101 -> 90; float64 log_softmax 190-210 -> 175-192, logsumexp
        # 154-179 -> 141-159.
        ninf = ld(-np.inf, invT)
        one = ld(1.0, invT)
        mn = _bmax(row(x, g0), 0, n, ninf)
        for i in range(g0, g1):
            m = mn
            mn = _bmax(row(x, i + 1), 0, n, ninf) if i + 1 < g1 else ninf
            w0 = 0.0
            if m > ninf and m < -ninf and not is32(invT):  # the tie split (log1p)
                bs, bc = _bsum(row(x, i), 0, n, m, invT, True)
                r = np.float64(bs)
                w0 = np.float64(bc)
            elif m > ninf and m < -ninf:
                # float32: (S, 0), the loops _bsum / _bsum_store would pick, called
                # directly: through them (their slices and split branch) log_softmax
                # took 100-106 instead of 89 ns per row, logsumexp 70 instead of 61
                # (rows of up to _SUB values call the loops themselves: through
                # _sum_terms and _store_sum rows of 128 took 5-7 ns more each)
                if touch:
                    if invT == one and n <= _SUB:
                        r = np.float64(_run_terms(row(x, i), row(out, i), m, m, 1))
                    elif invT == one:
                        r = np.float64(_store_sum(row(x, i), row(out, i), m, m, 1))
                    elif n <= _SUB:
                        r = np.float64(_run_terms(row(x, i), row(out, i), m, invT, 0))
                    else:
                        r = np.float64(_store_sum(row(x, i), row(out, i), m, invT, 0))
                elif invT == one and n <= _SUB:
                    r = np.float64(_sum_run(row(x, i), m, m, 1))
                elif invT == one:
                    r = np.float64(_sum_terms(row(x, i), m, m, 1))
                elif n <= _SUB:
                    r = np.float64(_sum_run(row(x, i), m, invT, 0))
                else:
                    r = np.float64(_sum_terms(row(x, i), m, invT, 0))
            else:  # a special row (max +-inf or NaN): the general state
                m, r, w0 = _chunk_state(
                    row(x, i), row(x, i), row(x, i), False, False, 0, n, invT, True
                )
            M[i - g0] = m
            Rr[i - g0] = r
            W[i - g0] = w0
        log_sum_array(W, Rr, L[: g1 - g0])
        return
    for i in range(g0, g1):
        mr = mrow(mask, i) if has_mask else mrow(mask, 0)
        if touch:
            m, r, w0 = _state_store(row(x, i), row(out, i), 0, n, invT, mbs, True)
        else:
            m, r, w0 = _chunk_state(row(x, i), mr, mr, has_mask, False, 0, n, invT, True)
        M[i - g0] = m
        Rr[i - g0] = r
        W[i - g0] = w0
    log_sum_array(W, Rr, L[: g1 - g0])


@njit(fastmath=FASTMATH, cache=True, error_model="numpy")
def _n_special(M, Rr, W, T, nr):
    """How many of the first ``nr`` row states are not finite (one vectorised loop)."""
    bad = 0
    for k in range(nr):
        bad += 0 if _finite_state(np.float64(M[k]) / T, Rr[k], W[k]) else 1
    return bad


_TOUCH_BYTES = 1 << 18  # rows per group in pass 1 + 2 whose output stays in L2


@njit(**_KW)
def softmax_range(x, mask, out, has_mask, T, invT, nt, t0, t1):
    """softmax of rows t0:t1: pass 1 (online max+sum), pass 2 (write)."""
    n = x.shape[1]
    nt = nt and same_dtype(out, invT) and not has_mask
    sb = np.empty(_BLOCK if nt else 0, dtype=out.dtype)
    for i in range(t0, t1):
        if nt:
            xr = row(x, i)
            m, r, w0 = _chunk_state(xr, xr, xr, False, False, 0, n, invT, False)
            _write_row_nt(xr, row(out, i), 0, n, m, r, w0, T, invT, False, sb)
        else:
            _softmax_row(i, x, mask, out, has_mask, T, invT)


@njit(**_KW)
def log_softmax_range(x, mask, out, has_mask, T, invT, nt, touch_ok, t0, t1):
    """log_softmax of rows t0:t1, a group of rows at a time: pass 1 for the group, one
    vectorised ``log(w0 + r)`` for the group (instead of a libm call per row), pass 2.

    ``nt``: streaming stores in pass 2; ``touch_ok``: pass 1 may write ``out`` (not in
    place), see ``_group_states``.
    """
    n = x.shape[1]
    nt = nt and same_dtype(out, invT) and not has_mask
    sb = np.empty(_BLOCK if nt else 0, dtype=out.dtype)
    touch = touch_ok and same_dtype(out, invT) and not has_mask and n <= L2_ROW
    G = min(_GROUP, t1 - t0)
    if touch:  # the group's output rows must still be in L2 for pass 2
        G = max(1, min(G, _TOUCH_BYTES // max(1, n * out.itemsize)))
    M = np.empty(G, dtype=np.full(1, invT).dtype)
    Rr = np.empty(G)
    W = np.empty(G)
    L = np.empty(G)
    mbs = np.empty(-(-n // _BLOCK))
    for g0 in range(t0, t1, G):
        g1 = min(g0 + G, t1)
        _group_states(x, mask, has_mask, g0, g1, invT, M, Rr, W, L, out, touch, mbs)
        if not has_mask and not nt and _n_special(M, Rr, W, T, g1 - g0) == 0:
            # every row of the group finite (the common case): no branchy per-row
            # _classify ([65536, 128] float32, one thread, CPU time: 5.04 -> 4.88 ms)
            for i in range(g0, g1):
                k = i - g0
                _wlsm(row(x, i), row(out, i), 0, n, M[k], invT, ld(L[k], invT))
            continue
        for i in range(g0, g1):
            k = i - g0
            code, _mT = _classify(M[k], Rr[k], W[k], T)
            if code != FINITE:
                mr = mrow(mask, i) if has_mask else mrow(mask, 0)
                _write_row(
                    row(x, i), mr, row(out, i), has_mask, 0, n, M[k], Rr[k], W[k], T, invT, True
                )
            elif has_mask:
                _wsm_m(
                    row(x, i), mrow(mask, i), row(out, i), 0, n, M[k], invT, ld(L[k], invT), True
                )
            elif nt:
                _write_row_nt(row(x, i), row(out, i), 0, n, M[k], Rr[k], W[k], T, invT, True, sb)
            else:
                _wlsm(row(x, i), row(out, i), 0, n, M[k], invT, ld(L[k], invT))


@njit(**_KW)
def log_softmax_rows_range(x, out, T, invT, t0, t1):
    """log_softmax of rows of one block (no mask; ``entry.LOG_ROWS_N``: 24-256 float32,
    32-2048 float64 values), one row at a time, as ``softmax_store_range``: the max
    of row i + 1 before the sum of row i, then row i - 1 written, then row i's libm
    ``log S`` (after the write, which does not wait on the sum's reduction: float32
    [65536, 128], one thread, 1.14x the groups this way, 1.03x with the log first).
    Rows stay in L1 between their passes (the groups re-read theirs from L2).  float64
    keeps the tie split (``log1p``), float32 sums every term, as the groups do.  In
    place is fine: row i - 1 is written after rows i and i + 1 were read."""
    n = x.shape[1]
    ninf = ld(-np.inf, invT)
    one = ld(1.0, invT)
    m = _bmax(row(x, t0), 0, n, ninf) if t1 > t0 else ninf
    prev = -1  # the row whose write (x - m) / T - log S is pending
    mprev = m
    lprev = one
    for i in range(t0, t1):
        mn = _bmax(row(x, i + 1), 0, n, ninf) if i + 1 < t1 else ninf
        mT = np.float64(m) / T
        if mT > -np.inf and mT < np.inf:
            # finite: S >= 1 (the max's own term) and no NaN (it would make m NaN)
            if not is32(invT):
                bs, bc = _bsum(row(x, i), 0, n, m, invT, True)
            elif invT == one:
                bs, bc = _sum_run(row(x, i), m, m, 1), ld(0.0, invT)
            else:
                bs, bc = _sum_run(row(x, i), m, invT, 0), ld(0.0, invT)
            if prev >= 0:
                _wlsm(row(x, prev), row(out, prev), 0, n, mprev, invT, lprev)
            if is32(invT):  # one libm log (through _log_sum's branches: 1.14 -> 1.03x)
                lprev = ld(math.log(np.float64(bs)), invT)
            else:
                lprev = ld(_log_sum(np.float64(bs), np.float64(bc))[0], invT)
            mprev = m
            prev = i
        else:  # a special row (max or max / T not finite): its state, then written
            xr = row(x, i)
            ms, r, w0 = _chunk_state(xr, xr, xr, False, False, 0, n, invT, True)
            _write_row(xr, xr, row(out, i), False, 0, n, ms, r, w0, T, invT, True)
        m = mn
    if prev >= 0:
        _wlsm(row(x, prev), row(out, prev), 0, n, mprev, invT, lprev)


@njit(**_KW)
def softmax_store_range(x, out, T, invT, t0, t1):
    """Rows t0:t1 of softmax by store-then-scale (no mask, out in the compute dtype).

    Rows of at most ``_BLOCK`` values take the max of row i + 1 before the exps of row
    i: independent work that overlaps the latency of each row's max reduction (rows
    of 128, one thread, cache-resident: 71.7 -> 64.4 ns per row).  The scale of row
    i - 1 comes after the exps of row i: it waits on row i - 1's sum reduction and
    ``1 / S``, a latency chain that otherwise stalls every row ([65536, 128] float32,
    one thread, CPU time: 4.19 -> 3.85 ms).
    """
    n = x.shape[1]
    if n > _BLOCK:
        for i in range(t0, t1):
            _softmax_row_store(row(x, i), row(out, i), T, invT)
        return
    ninf = ld(-np.inf, invT)
    one = ld(1.0, invT)
    m = _bmax(x[t0], 0, n, ninf) if t1 > t0 else ninf
    prev = -1  # the row whose scale by fprev is pending
    fprev = one
    for i in range(t0, t1):
        mn = _bmax(row(x, i + 1), 0, n, ninf) if i + 1 < t1 else ninf
        mT = np.float64(m) / T
        if mT > -np.inf and mT < np.inf:
            # a finite row state (a NaN entry makes S NaN, hence the row NaN)
            if invT == one and n <= _SUB:
                s = _run_terms(row(x, i), row(out, i), m, m, 1)
            elif invT == one:
                s = _store_sum(row(x, i), row(out, i), m, m, 1)
            elif n <= _SUB:
                s = _run_terms(row(x, i), row(out, i), m, invT, 0)
            else:
                s = _store_sum(row(x, i), row(out, i), m, invT, 0)
            if prev >= 0:
                _scale(row(out, prev), 0, n, fprev)
            fprev = ld(1.0 / np.float64(s), invT)
            prev = i
        else:  # a special row: written whole from its state
            _softmax_block_store(row(x, i), row(out, i), T, invT, m)
        m = mn
    if prev >= 0:
        _scale(row(out, prev), 0, n, fprev)


@njit(**_KW)
def logsumexp_range(x, mask, b, has_mask, has_b, T, invT, lse, sign, t0, t1):
    """Rows t0:t1 of logsumexp: one read of each row (groups of rows without ``b``)."""
    if has_b:  # signed weights: the scalar log with its sign and log1p split
        for i in range(t0, t1):
            _lse_row(i, x, mask, b, has_mask, has_b, T, invT, lse, sign)
        return
    G = min(_GROUP, t1 - t0)
    M = np.empty(G, dtype=np.full(1, invT).dtype)
    Rr = np.empty(G)
    W = np.empty(G)
    L = np.empty(G)
    nowrite = np.empty((1, 1), dtype=M.dtype)  # logsumexp writes no row (touch=False)
    for g0 in range(t0, t1, G):
        g1 = min(g0 + G, t1)
        _group_states(x, mask, has_mask, g0, g1, invT, M, Rr, W, L, nowrite, False, M)
        _lse_finish_group(x, mask, b, has_mask, g0, g1, M, Rr, W, L, T, lse, sign)


@njit(**_KW)
def chunk_states_range(x, mask, b, has_mask, has_b, nch, cs, invT, M, Rr, W, split, t0, t1):
    """Long rows split in ``nch`` chunks of ``cs`` values: states of tasks t0:t1
    (``split``: the tie split of ``_chunk_state``, False for softmax)."""
    for t in range(t0, t1):
        _chunk_task(t, x, mask, b, has_mask, has_b, nch, cs, invT, M, Rr, W, split)


@njit(**_KW)
def chunk_store_range(x, out, nch, cs, invT, M, Rr, W, MB, t0, t1):
    """Store-then-scale pass 1 of split rows: states of tasks t0:t1, exps into ``out``.

    ``MB[t, b]`` receives the running max after block b of task t.
    """
    n = x.shape[1]
    for t in range(t0, t1):
        i, lo, hi = _task_span(t, nch, cs, n)
        mb = MB[t, : -(-(hi - lo) // _BLOCK)]
        m, r, w0 = _state_store(row(x, i), row(out, i), lo, hi, invT, mb, False)
        M[t] = m
        Rr[t] = r
        W[t] = w0


@njit(**_KW)
def chunk_scale_range(x, out, nch, cs, T, invT, M, Rr, W, MB, t0, t1):
    """Store-then-scale pass 2 of split rows: merge the row's states, rescale chunk t."""
    n = x.shape[1]
    inv64 = np.float64(invT)
    for t in range(t0, t1):
        i, lo, hi = _task_span(t, nch, cs, n)
        m, r, w0 = _merge(M, Rr, W, i * nch, nch, inv64)
        mc = ld(m, invT)
        code, _mT = _classify(mc, r, w0, T)
        if code != FINITE:
            _write_row(row(x, i), row(x, i), row(out, i), False, lo, hi, mc, r, w0, T, invT, False)
        else:
            _scale_blocks(
                row(out, i), lo, hi, m, 1.0 / (w0 + r), invT, MB[t, : -(-(hi - lo) // _BLOCK)]
            )


@njit(**_KW)
def chunk_write_range(x, mask, out, has_mask, nch, cs, T, invT, log, M, Rr, W, nt, t0, t1):
    """Pass 2 of split rows: merge the row's chunk states, write chunk t."""
    nt = nt and same_dtype(out, invT) and not has_mask
    sb = np.empty(_BLOCK if nt else 0, dtype=out.dtype)
    for t in range(t0, t1):
        _write_task(t, x, mask, out, has_mask, nch, cs, T, invT, log, M, Rr, W, nt, sb)


@njit(**_KW)
def chunk_lse_finish(x, mask, b, has_mask, has_b, nch, T, invT, M, Rr, W, lse, sign):
    inv64 = np.float64(invT)
    for i in range(x.shape[0]):
        m, r, w0 = _merge(M, Rr, W, i * nch, nch, inv64)
        _lse_finish(i, x, mask, b, has_mask, has_b, ld(m, invT), r, w0, T, lse, sign)


@njit(**_KW)
def state_range(x, mask, b, has_mask, has_b, T, invT, m_out, s_out, t0, t1):
    """(m, s) state rows t0:t1 in float64 (``softmaxkit._core.state`` conventions)."""
    for i in range(t0, t1):
        mr = mrow(mask, i) if has_mask else mrow(mask, 0)
        br = row(b, i) if has_b else row(b, 0)
        m, r, w0 = _chunk_state(row(x, i), mr, br, has_mask, has_b, 0, x.shape[1], invT, True)
        code, mT = _classify(m, r, w0, T)
        if code == NAN:
            m_out[i] = np.nan
            s_out[i] = np.nan
        elif code == EMPTY:
            m_out[i] = -np.inf
            s_out[i] = 0.0
        elif code == POSINF:
            m_out[i] = np.inf
            s_out[i] = w0 if m == np.inf else _winf_ovf(row(x, i), mr, br, has_mask, has_b, T)
        else:
            m_out[i] = mT
            s_out[i] = w0 + r
