"""softmax by store-then-scale: pass 1 stores ``exp((x - m_b) / T)`` with the running
max ``m_b`` of each block while it sums; pass 2 rescales each block by
``exp((m_b - m) / T) / S`` (one multiply per value instead of a second exp).
``L2_ROW``: the row length up to which a row stays in L2 between the passes.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from ..exp import FASTMATH, expd, expsum_unit, is32
from .blocks import _BLOCK, _SUB, FINITE, _bmax, _bsum, _fill, _term, ld
from .pieces import _classify, _write_row


@njit(fastmath=FASTMATH, cache=True)
def _bsum_store(xr, orow, lo, hi, m, invT, split):
    """``_bsum`` that also stores ``exp((x - m) / T)`` into ``orow[lo:hi]``."""
    z = ld(0.0, m)
    one = ld(1.0, m)
    xs, os = xr[lo:hi], orow[lo:hi]
    if (is32(m) or not split) and m > -np.inf and m < np.inf:  # as in _bsum: (S, 0)
        if invT == one:
            return _store_sum(xs, os, m, m, 1), z
        return _store_sum(xs, os, m, invT, 0), z
    s = z
    c = z
    for j in range(xs.shape[0]):
        v = ld(xs[j], m)
        e = expd(v, m, invT)
        os[j] = e
        s += z if v >= m else e
        c += one if v == m else z
    return s, c


@njit(fastmath=FASTMATH, cache=True)
def _run_terms(xs, os, m, invT, mode):
    """Store the terms (``_term``) of ``xs`` into ``os`` and return their sum, one
    float32 accumulator per lane: for at most ``_SUB`` values (see ``blocks._SUB``)."""
    s = ld(0.0, m)
    for j in range(xs.shape[0]):
        e = _term(ld(xs[j], m), m, invT, mode)
        os[j] = e
        s += e
    return s


@njit(fastmath=FASTMATH, cache=True)
def _store_pieces(xs, os, m, invT, mode):
    """float32: store the terms (``_term``) into ``os`` and return their sum, as float32
    sums of pieces of ``_SUB`` added in float64 (see ``blocks._SUB``).  The pieces are
    an inner loop of constant length: through the loop helpers on slices, softmax of
    [4096, 32000] took 8% longer than before the pieces, this way about 5%; four
    interleaved output streams as in ``blocks._sum4`` were slower still."""
    nb = xs.shape[0] // _SUB
    tot = 0.0
    for b in range(nb):
        s = ld(0.0, m)
        base = b * _SUB
        for j in range(_SUB):
            e = _term(ld(xs[base + j], m), m, invT, mode)
            os[base + j] = e
            s += e
        tot += np.float64(s)
    return tot, nb * _SUB


@njit(fastmath=FASTMATH, cache=True)
def _store_sum(xs, os, m, invT, mode):
    """Store the terms (``blocks._term``: 0 ``exp((x - m) / T)`` with the exact
    argument, 1 ``exp(fl(x - m))`` at ``T = 1``) into ``os`` and return their sum
    (float32: pieces, ``_store_pieces``)."""
    if not is32(m):
        return _run_terms(xs, os, m, invT, mode)
    tot, r = _store_pieces(xs, os, m, invT, mode)
    return ld(tot + np.float64(_run_terms(xs[r:], os[r:], m, invT, mode)), m)


@njit(fastmath=FASTMATH, cache=True)
def _scale(orow, lo, hi, f):
    os = orow[lo:hi]
    for j in range(os.shape[0]):
        os[j] = os[j] * f


L2_ROW = 1 << 16  # rows up to 256 KiB of float32 stay in L2 between the two passes


@njit(fastmath=FASTMATH, cache=True)
def _softmax_row_store(xr, orow, T, invT):
    """softmax of one row of more than ``_BLOCK`` values: pass 1 stores the exps, pass 2
    rescales (rows of one block: ``_softmax_block_store``).

    Pass 1 writes ``exp((x - m_b) / T)`` with the running max ``m_b`` of each block;
    pass 2 multiplies block b by ``exp((m_b - m) / T) / S`` -- one multiply per value
    instead of a second exp (the input is still read once; ``out`` is re-read, from
    L2 for rows that fit there, else from L3 or memory).
    """
    n = xr.shape[0]
    mbs = np.empty(-(-n // _BLOCK))
    m, r, w0 = _state_store(xr, orow, 0, n, invT, mbs, False)
    code, _mT = _classify(m, r, w0, T)
    if code != FINITE:
        _write_row(xr, xr, orow, False, 0, n, m, r, w0, T, invT, False)
        return
    _scale_blocks(orow, 0, n, m, 1.0 / (w0 + r), invT, mbs)


@njit(fastmath=FASTMATH, cache=True)
def _softmax_block_store(xr, orow, T, invT, m):
    """softmax of one row of at most ``_BLOCK`` values whose max ``m`` is known: stored
    exps + sum, then scale (no scratch, no libm call)."""
    n = xr.shape[0]
    mT = np.float64(m) / T
    if mT > -np.inf and mT < np.inf:
        # a finite row state (a NaN entry makes s NaN, hence the row NaN): the sum
        # and scale loops written out here, not in helpers (_bsum_store, _scale):
        # 0.76 -> 0.63 ns per value on rows of 128 (one thread, cache-resident); with
        # _store_sum + _scale instead of the two loops, 10% slower again.  Rows longer
        # than _SUB: the pieces of _store_sum (see blocks._SUB).
        if n > _SUB and is32(m):
            if invT == ld(1.0, invT):
                s = _store_sum(xr, orow, m, m, 1)
            else:
                s = _store_sum(xr, orow, m, invT, 0)
        elif invT == ld(1.0, invT):
            s = ld(0.0, m)
            for j in range(n):
                e = expsum_unit(ld(xr[j], m), m)
                orow[j] = e
                s += e
        else:
            s = ld(0.0, m)
            for j in range(n):
                e = expd(ld(xr[j], m), m, invT)
                orow[j] = e
                s += e
        f = ld(1.0 / np.float64(s), invT)
        for j in range(n):
            orow[j] *= f
        return
    # a special row (max or max / T not finite): _write_row writes it from the
    # state; the tie count w0 is the weight of the +inf entries
    bs, bc = _bsum(xr, 0, n, m, invT, False)
    _write_row(xr, xr, orow, False, 0, n, m, np.float64(bs), np.float64(bc), T, invT, False)


@njit(fastmath=FASTMATH, cache=True)
def _state_store(xr, orow, lo, hi, invT, mbs, split):
    """(m, r, w0) of ``xr[lo:hi]`` while storing ``exp((x - m_b) / T)`` into ``orow``.

    ``m_b`` is the running max after block b, recorded in ``mbs[b]`` (blocks of
    ``_BLOCK`` values from ``lo``) for :func:`_scale_blocks`.
    """
    ninf = ld(-np.inf, invT)
    m = ninf
    r = 0.0
    w0 = 0.0
    inv64 = np.float64(invT)
    for b in range(mbs.shape[0]):
        blo = lo + b * _BLOCK
        bhi = min(blo + _BLOCK, hi)
        bm = _bmax(xr, blo, bhi, ninf)
        if bm > m:
            if m == ninf:
                r = (r + w0) * 0.0
            else:
                r = (r + w0) * math.exp((np.float64(m) - np.float64(bm)) * inv64)
            w0 = 0.0
            m = bm
        mbs[b] = m
        # the tie split only where the block holds the running max (see _chunk_state)
        bs, bc = _bsum_store(xr, orow, blo, bhi, m, invT, split and bm == m)
        r += np.float64(bs)
        w0 += np.float64(bc)
    return m, r, w0


@njit(fastmath=FASTMATH, cache=True)
def _scale_blocks(orow, lo, hi, m, invS, invT, mbs):
    """Pass 2 of store-then-scale: block b of ``orow[lo:hi]`` times ``e^((m_b - m)/T) / S``."""
    inv64 = np.float64(invT)
    for b in range(mbs.shape[0]):
        blo = lo + b * _BLOCK
        bhi = min(blo + _BLOCK, hi)
        if mbs[b] == -np.inf:
            # every value of the block so far was -inf (the stored exps are NaN)
            _fill(orow, blo, bhi, ld(0.0, invT))
            continue
        f = invS if mbs[b] == m else math.exp((mbs[b] - np.float64(m)) * inv64) * invS
        _scale(orow, blo, bhi, ld(f, invT))
