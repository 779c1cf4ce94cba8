"""Masked rows folded into a copy: ``where(mask, x, -inf)`` gives the same result entry
for entry as the mask under the edge-case contract (a masked NaN or ``+inf`` is
excluded either way; a fully masked row is all ``-inf``), so the masked ops copy each
row (or group of rows) into a scratch with its masked entries set to ``-inf`` and run
the unmasked code on it, whose loops stay vectorised (the masked two-pass code tested
the mask in every pass and its loops stayed scalar).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ..exp import FASTMATH, is32
from ..view import mrow, row
from .blocks import _BLOCK, _SUB, _bmax, ld
from .pieces import _lse_finish_group
from .ranges import _GROUP, _KW, _group_states
from .store import (
    _run_terms,
    _scale,
    _softmax_block_store,
    _softmax_row_store,
    _store_sum,
)


@njit(fastmath=FASTMATH, cache=True)
def _where_row(xr, mr, xs, ninf):
    """``xs = where(mr, xr, -inf)`` in the compute dtype (a vectorised select)."""
    for j in range(xs.shape[0]):
        xs[j] = ld(xr[j], ninf) if mr[j] else ninf


@njit(**_KW)
def where_range(x, mask, out, invT, t0, t1):
    """``out = where(mask, x, -inf)`` over rows t0:t1, in the compute dtype."""
    ninf = ld(-np.inf, invT)
    for i in range(t0, t1):
        _where_row(row(x, i), mrow(mask, i), row(out, i), ninf)


@njit(**_KW)
def softmax_masked_store_range(x, mask, out, T, invT, t0, t1):
    """Rows t0:t1 (of at most ``L2_ROW`` values) of a masked softmax: each row is first
    copied into an L1 scratch row with its masked entries set to ``-inf``
    (``softmax(x, where=m) == softmax(where(m, x, -inf))`` entry for entry: masked
    NaN and ``+inf`` are excluded either way, a fully masked row is all ``-inf``, which
    gives zeros), then written by ``softmax_store_range``'s store-then-scale from the
    scratch.  The masked two-pass path evaluated the mask in every pass and kept its
    loops scalar: [65536, 128] float32, one thread, 14.9 ms against 3.5 unmasked.
    Longer rows (up to ``L2_ROW`` values: the scratch row stays in L2) go through the
    long-row store-then-scale (``_softmax_row_store``) from their scratch row."""
    n = x.shape[1]
    ninf = ld(-np.inf, invT)
    one = ld(1.0, invT)
    xa = np.empty(n, dtype=out.dtype)
    if n > _BLOCK:
        for i in range(t0, t1):
            _where_row(row(x, i), mrow(mask, i), xa, ninf)
            _softmax_row_store(xa, row(out, i), T, invT)
        return
    xb = np.empty(n, dtype=out.dtype)
    m = ninf
    if t1 > t0:
        _where_row(row(x, t0), mrow(mask, t0), xa, ninf)
        m = _bmax(xa, 0, n, ninf)
    prev = -1  # the row whose scale by fprev is pending
    fprev = one
    for i in range(t0, t1):
        even = (i - t0) % 2 == 0
        cur = xa if even else xb
        nxt = xb if even else xa
        mn = ninf
        if i + 1 < t1:
            _where_row(row(x, i + 1), mrow(mask, i + 1), nxt, ninf)
            mn = _bmax(nxt, 0, n, ninf)
        mT = np.float64(m) / T
        if mT > -np.inf and mT < np.inf:
            # the same four calls as softmax_store_range, written out in both: through
            # one shared helper the float32 rows took 7-13% longer (one thread, CPU
            # time, minima of 31: [65536, 128] 3.46-3.58 -> 3.89 ms, [16384, 64]
            # 0.55-0.58 -> 0.68)
            if invT == one and n <= _SUB:
                s = _run_terms(cur, row(out, i), m, m, 1)
            elif invT == one:
                s = _store_sum(cur, row(out, i), m, m, 1)
            elif n <= _SUB:
                s = _run_terms(cur, row(out, i), m, invT, 0)
            else:
                s = _store_sum(cur, row(out, i), m, invT, 0)
            if prev >= 0:
                _scale(row(out, prev), 0, n, fprev)
            fprev = ld(1.0 / np.float64(s), invT)
            prev = i
        else:  # a special row (+inf, NaN, all masked): written whole from its state
            _softmax_block_store(cur, row(out, i), T, invT, m)
        m = mn
    if prev >= 0:
        _scale(row(out, prev), 0, n, fprev)


_SCRATCH_BYTES = 1 << 17  # a group's scratch rows (L2)


@njit(**_KW)
def logsumexp_masked_range(x, mask, b, T, invT, lse, sign, t0, t1):
    """Rows t0:t1 (of at most ``L2_ROW`` values) of a masked logsumexp without weights:
    a group of rows (up to 256, at most ``_SCRATCH_BYTES``) is copied into a scratch
    with its masked entries set to ``-inf``, then reduced by the unmasked group code
    (``_group_states``: one vectorised ``log`` per group) and finished as unmasked
    rows.  ``b`` is the placeholder for "no weights".  The masked path kept its loops
    scalar: one thread, CPU time, float32 [65536, 128] 8.7 ms against 2.7 unmasked."""
    n = x.shape[1]
    ninf = ld(-np.inf, invT)
    G = max(1, min(_GROUP, t1 - t0, _SCRATCH_BYTES // max(1, n * (4 if is32(invT) else 8))))
    xs = np.empty((G, n), dtype=np.full(1, invT).dtype)
    M = np.empty(G, dtype=xs.dtype)
    Rr = np.empty(G)
    W = np.empty(G)
    L = np.empty(G)
    nowrite = np.empty((1, 1), dtype=xs.dtype)
    for g0 in range(t0, t1, G):
        g1 = min(g0 + G, t1)
        for i in range(g0, g1):
            _where_row(row(x, i), mrow(mask, i), row(xs, i - g0), ninf)
        nr = g1 - g0
        _group_states(xs, mask, False, 0, nr, invT, M, Rr, W, L, nowrite, False, M)
        # (an empty ``sign``, not asked for, stays empty when sliced)
        _lse_finish_group(xs, mask, b, False, 0, nr, M, Rr, W, L, T, lse[g0:g1], sign[g0:g1])
