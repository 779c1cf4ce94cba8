"""Fused row kernels for softmax, log_softmax, logsumexp and the (m, s) state (Numba).

Kernels see 2-D arrays ``x[R, n]`` whose rows are the reductions (C-contiguous
rows: the driver guarantees it).  ``x`` is float32, float64 or uint16 (the bits
of float16, widened to float32 in registers block by block: Numba has no CPU
float16).  The computation dtype is the dtype of the ``invT`` argument; ``out``
is float32, float64 or uint16 (float16 bits, one correct rounding).  ``mask`` and
``b`` are 2-D arrays of any strides (zero strides for broadcasting); callers
without one pass a dummy and ``has_mask`` / ``has_b`` = False.  No user-facing
errors are raised here.

Per row (or per chunk of a long row) we keep the online state

    m  = max of the included x                 (compute dtype; -inf when none)
    r  = sum_{x_j < m} w_j exp((x_j - m) / T)  (float64)
    w0 = sum_{x_j == m} w_j                    (float64: the weight of the ties)

so the row's sum is ``S = w0 + r`` and ``log S = log(w0) + log1p(r / w0)`` keeps
full relative accuracy when the maximum dominates (``log(S)`` would round
``1 + 1e-20`` to 0; guarded by ``tests/test_kernels.py::test_log1p_dominant``).
Special rows fall out of the same formulas with no branch in the hot loops:
``x_j >= m`` excludes the max terms, ``-inf - -inf`` and ``inf - inf`` (never
NaN in the sum); an included NaN fails ``x_j >= m`` and makes ``r`` NaN; a row
with ``+inf`` has ``m = inf``, ``r = 0`` and ``w0`` = weight of its +inf entries.
float32 blocks whose running max is finite skip the tie split: they return
``(S, 0)``, the plain sum of every exp (``_bsum``; docs/dense.md §6 on why the
float32 contract does not need it).

Pass structure (per row): pass 1 reads the row once, block by block (``_BLOCK``
values, L1-resident): a vectorised max of the block (``llvm.maxnum``), a rescale
of (r, w0) when the max grew, then the vectorised sum of ``exp`` over the same
block from L1; pass 2 (softmax / log_softmax only) writes the output (softmax:
pass 1 stores the exps and pass 2 rescales them, at every row length).  A few
long rows are split into chunks reduced in parallel and merged with the (max,
sum) rule.  Accumulators: the block sum in the compute dtype (at most
``_BLOCK / 16`` terms per SIMD lane), blocks combined in float64.  The exp is
``exp.expd``: for float32, 16 float32 lanes with the argument ``(x - m) / T``
carried exactly as a float32 pair (``exp._expd32``; ``exp._expd32_unit`` when
``T = 1``).  Rows are taken a group at a time where a log per row is needed, so
that ``log(w0 + r)`` is one vectorised loop (``exp.log_sum_array``).  Outputs of
32 MiB and more are written with streaming stores (``nt.py``) in the write pass of
unmasked rows longer than L2 that recomputes its values from ``x``: log_softmax, and
softmax in place.  Kernels hand rows to their helpers as ``view.row(x, i)``, not
``x[i]``: a view that holds no reference, so no atomic reference-count update per row
(rows of 128 float32, one thread, cache-resident, per row: log_softmax 85 -> 47 ns,
softmax 64 -> 46 ns).  Threads: the range kernels are serial and ``nogil``;
``_parallel.run`` splits their task ranges over ``numba.get_num_threads()``
threads.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, types
from numba.extending import overload

from .exp import FASTMATH, expd, expd_unit, f16_to_f32, f32_to_f16, fmax, is32, log_sum_array
from .nt import NT_MIN_BYTES, nt_copy
from .view import row

_BLOCK = 2048  # 8 KiB of float32: the max and the sum sub-passes share L1

# Row classification codes.
FINITE = 0
EMPTY = 1  # no included value, all included values -inf, or m / T overflows to -inf
POSINF = 2  # an included +inf (or m / T overflows to +inf)
NAN = 3  # an included NaN (in x or in the weight b)


# --------------------------------------------------------------------------- conversions
def ld(v, like):  # pragma: no cover - jitted code only
    """``v`` (float16 bits, float32, float64) converted to the type of ``like``."""
    raise NotImplementedError


@overload(ld)
def _ld_ov(v, like):
    if v == types.uint16:
        if like == types.float32:
            return lambda v, like: f16_to_f32(v)
        return lambda v, like: np.float64(f16_to_f32(v))
    if like == types.float32:
        return lambda v, like: np.float32(v)
    return lambda v, like: np.float64(v)


def st(v, o):  # pragma: no cover - jitted code only
    """``v`` converted to the element type of array ``o`` (uint16 = float16 bits)."""
    raise NotImplementedError


@overload(st)
def _st_ov(v, o):
    if o.dtype == types.uint16:
        return lambda v, o: f32_to_f16(np.float32(v))
    if o.dtype == types.float32:
        return lambda v, o: np.float32(v)
    return lambda v, o: np.float64(v)


# --------------------------------------------------------------------------- hot loops
# Small @njit helpers: loops written inline in a prange body do not vectorise.
@njit(fastmath=FASTMATH, cache=True)
def _bmax(xr, lo, hi, ninf):
    # loops run over slices from index 0: with an arbitrary start LLVM cannot drop
    # Numba's negative-index wraparound and the loads become gathers (10x slower)
    xs = xr[lo:hi]
    m = ninf
    for j in range(xs.shape[0]):
        m = fmax(m, ld(xs[j], ninf))
    return m


@njit(fastmath=FASTMATH, cache=True)
def _bmax_m(xr, mr, br, has_mask, has_b, lo, hi, ninf):
    xs, ms, bs = xr[lo:hi], mr[lo:hi], br[lo:hi]
    m = ninf
    for j in range(xs.shape[0]):
        inc = (not has_mask or ms[j]) and (not has_b or bs[j] != 0)
        m = fmax(m, ld(xs[j], ninf) if inc else ninf)
    return m


@njit(fastmath=FASTMATH, cache=True)
def _sum_all(xs, m, invT):
    s = ld(0.0, m)
    for j in range(xs.shape[0]):
        s += expd(ld(xs[j], m), m, invT)
    return s


@njit(fastmath=FASTMATH, cache=True)
def _sum_all_unit(xs, m):
    s = ld(0.0, m)
    for j in range(xs.shape[0]):
        s += expd_unit(ld(xs[j], m), m)
    return s


@njit(fastmath=FASTMATH, cache=True)
def _bsum(xr, lo, hi, m, invT, split):
    z = ld(0.0, m)
    one = ld(1.0, m)
    xs = xr[lo:hi]
    if (is32(m) or not split) and m > -np.inf and m < np.inf:
        # float32 with a finite max: the plain sum of every exp (the max terms are
        # exactly 1), returned as (S, 0).  The tie weight w0 only serves the log1p
        # split, whose gain (relative accuracy of log S ~ r when r < 2^-24) is below
        # float32's absolute contract of 1e-6 (1 + |value|); 18% faster per value.
        # Rows whose max is +-inf keep the tie count below (their w0 is the answer).
        # float64 takes this path too when the caller needs only S (softmax, whose
        # 1 / S has no log1p to serve: ``split`` False): 0.86 -> 0.68 ns per value.
        if invT == one:
            return _sum_all_unit(xs, m), z
        return _sum_all(xs, m, invT), z
    s = z
    c = z
    for j in range(xs.shape[0]):
        v = ld(xs[j], m)
        e = expd(v, m, invT)
        s += z if v >= m else e
        c += one if v == m else z
    return s, c


@njit(fastmath=FASTMATH, cache=True)
def _bsum_m(xr, mr, br, has_mask, has_b, lo, hi, m, invT):
    s = 0.0
    c = 0.0
    xs, ms, bs = xr[lo:hi], mr[lo:hi], br[lo:hi]
    for j in range(xs.shape[0]):
        inc = not has_mask or ms[j]
        w = 1.0
        if has_b:
            w = np.float64(bs[j])
            inc = inc and w != 0
        v = ld(xs[j], m)
        e = expd(v, m, invT)
        s += w * e if inc and not v >= m else 0.0
        c += w if inc and v == m else 0.0
    return s, c


@njit(fastmath=FASTMATH, cache=True)
def _wsm(xr, orow, lo, hi, m, invT, invS):
    xs, os = xr[lo:hi], orow[lo:hi]
    if invT == ld(1.0, invT):
        for j in range(xs.shape[0]):
            os[j] = st(expd_unit(ld(xs[j], m), m) * invS, os)
        return
    for j in range(xs.shape[0]):
        os[j] = st(expd(ld(xs[j], m), m, invT) * invS, os)


@njit(fastmath=FASTMATH, cache=True)
def _wlsm(xr, orow, lo, hi, m, invT, lS):
    xs, os = xr[lo:hi], orow[lo:hi]
    for j in range(xs.shape[0]):
        os[j] = st((ld(xs[j], m) - m) * invT - lS, os)


@njit(fastmath=FASTMATH, cache=True)
def _wsm_m(xr, mr, orow, lo, hi, m, invT, invS, log):
    zero = ld(0.0, m)
    ninf = ld(-np.inf, m)
    xs, ms, os = xr[lo:hi], mr[lo:hi], orow[lo:hi]
    for j in range(xs.shape[0]):
        v = ld(xs[j], m)
        if log:
            os[j] = st((v - m) * invT - invS if ms[j] else ninf, os)
        else:
            os[j] = st(expd(v, m, invT) * invS if ms[j] else zero, os)


# --------------------------------------------------------------------------- row pieces
@njit(fastmath=FASTMATH, cache=True)
def _chunk_state(xr, mr, br, has_mask, has_b, lo, hi, invT, split):
    """(m, r, w0) of ``xr[lo:hi]``: one read of the data, blockwise online max+sum.

    ``split`` False (softmax: only ``S = w0 + r`` is used): a finite max may give
    ``(m, S, 0)`` instead of the tie split (see ``_bsum``).
    """
    ninf = ld(-np.inf, invT)
    m = ninf
    r = 0.0
    w0 = 0.0
    inv64 = np.float64(invT)
    plain = not has_mask and not has_b
    for blo in range(lo, hi, _BLOCK):
        bhi = min(blo + _BLOCK, hi)
        if plain:
            bm = _bmax(xr, blo, bhi, ninf)
        else:
            bm = _bmax_m(xr, mr, br, has_mask, has_b, blo, bhi, ninf)
        if bm > m:
            # the old max and its ties become ordinary terms (exp(-inf) = 0 for the
            # first block without a libm call; a NaN in r survives the product)
            if m == ninf:
                r = (r + w0) * 0.0
            else:
                r = (r + w0) * math.exp((np.float64(m) - np.float64(bm)) * inv64)
            w0 = 0.0
            m = bm
        if plain:
            # a block whose max is below the running max has no tie with it: its plain
            # sum is r's share exactly (w0 += 0), so only blocks holding the running
            # max pay for the tie split (float64 logsumexp [1, 1e6], one thread:
            # 0.92-0.97 -> 0.78-0.82 ms)
            bs, bc = _bsum(xr, blo, bhi, m, invT, split and bm == m)
            r += np.float64(bs)
            w0 += np.float64(bc)
        else:
            bs, bc = _bsum_m(xr, mr, br, has_mask, has_b, blo, bhi, m, invT)
            r += bs
            w0 += bc
    return m, r, w0


@njit(cache=True)
def _merge(M, Rr, W, base, nch, inv64):
    """Merge the chunk states ``base .. base+nch-1`` with the (max, sum) rule."""
    m = M[base]
    for c in range(1, nch):
        m = max(m, M[base + c])
    r = 0.0
    w0 = 0.0
    for c in range(nch):
        mc = M[base + c]
        if mc == m:
            r += Rr[base + c]
            w0 += W[base + c]
        else:
            r += (Rr[base + c] + W[base + c]) * math.exp((mc - m) * inv64)
    return m, r, w0


@njit(cache=True)
def _winf_ovf(xr, mr, br, has_mask, has_b, T):
    """Total weight of the entries with x / T == +inf (m finite, m / T overflowed)."""
    wi = 0.0
    for j in range(xr.shape[0]):
        if has_mask and not mr[j]:
            continue
        w = 1.0
        if has_b:
            w = np.float64(br[j])
            if w == 0:
                continue
        if ld(xr[j], 0.0) / T == np.inf:
            wi += w
    return wi


@njit(cache=True)
def _finite_state(mT, r, w0):
    """``_classify(...)[0] == FINITE`` given ``mT = m / T``, branch-free (non-short-
    circuit ``&``) so that loops over many rows' states stay vectorised."""
    return (r == r) & (w0 == w0) & (mT > -np.inf) & (mT < np.inf)


@njit(cache=True)
def _classify(m, r, w0, T):
    """(code, m / T) of a merged row state."""
    if r != r or w0 != w0 or m != m:
        return NAN, np.nan
    mT = np.float64(m) / T
    if mT == -np.inf:
        return EMPTY, mT
    if mT == np.inf:
        return POSINF, mT
    return FINITE, mT


@njit(cache=True)
def _log_sum(r, w0):
    """(log|w0 + r|, sign) with the log1p split on the tie weight ``w0``."""
    total = w0 + r
    if total == 0:
        return -np.inf, 0.0
    sgn = 1.0 if total > 0 else -1.0
    if w0 == 1.0:  # the common case (one maximum, no weights): one libm call
        if r > -1.0 and r <= 1.0:  # (r < -1: signed weights, S < 0; log1p would be NaN)
            return math.log1p(r), sgn
        return math.log(abs(total)), sgn
    if w0 != 0:
        ratio = r / w0
        if ratio > -1.0 and ratio <= 1.0:
            return math.log(abs(w0)) + math.log1p(ratio), sgn
    return math.log(abs(total)), sgn


@njit(fastmath=FASTMATH, cache=True)
def _write_row(xr, mr, orow, has_mask, lo, hi, m, r, w0, T, invT, log):
    """Pass 2 for ``xr[lo:hi]`` given the merged row state."""
    code, _mT = _classify(m, r, w0, T)
    if code == FINITE:
        lS, _ = _log_sum(r, w0)
        if log:
            c = ld(lS, invT)
            if has_mask:
                _wsm_m(xr, mr, orow, lo, hi, m, invT, c, True)
            else:
                _wlsm(xr, orow, lo, hi, m, invT, c)
        else:
            c = ld(1.0 / (w0 + r), invT)
            if has_mask:
                _wsm_m(xr, mr, orow, lo, hi, m, invT, c, False)
            else:
                _wsm(xr, orow, lo, hi, m, invT, c)
    elif code == NAN:
        for j in range(lo, hi):
            orow[j] = st(np.nan, orow)
    elif code == EMPTY:
        v = -np.inf if log else 0.0
        for j in range(lo, hi):
            orow[j] = st(v, orow)
    else:
        # +inf row: 1/k (or -log k) at the +inf entries of x / T, 0 (-inf) elsewhere
        winf = w0 if m == np.inf else _winf_ovf(xr, mr, mr, has_mask, False, T)
        hitv = -math.log(winf) if log else 1.0 / winf
        other = -np.inf if log else 0.0
        for j in range(lo, hi):
            hit = ld(xr[j], 0.0) / T == np.inf and (not has_mask or mr[j])
            orow[j] = st(hitv if hit else other, orow)


@njit(fastmath=FASTMATH, cache=True)
def _write_row_nt(xr, orow, lo, hi, m, r, w0, T, invT, log, sb):
    """``_write_row`` (no mask) with streaming stores: each block is computed into the
    L1 scratch ``sb`` and copied to ``orow`` by ``nt.nt_copy`` (no write-allocate)."""
    code, _mT = _classify(m, r, w0, T)
    if code != FINITE:
        _write_row(xr, xr, orow, False, lo, hi, m, r, w0, T, invT, log)
        return
    if log:
        lS, _ = _log_sum(r, w0)
        c = ld(lS, invT)
    else:
        c = ld(1.0 / (w0 + r), invT)
    for blo in range(lo, hi, _BLOCK):
        bhi = min(blo + _BLOCK, hi)
        k = bhi - blo
        if log:
            _wlsm(xr[blo:bhi], sb, 0, k, m, invT, c)
        else:
            _wsm(xr[blo:bhi], sb, 0, k, m, invT, c)
        nt_copy(sb, orow, blo, bhi)


@njit(fastmath=FASTMATH, cache=True)
def _bsum_store(xr, orow, lo, hi, m, invT, split):
    """``_bsum`` that also stores ``exp((x - m) / T)`` into ``orow[lo:hi]``."""
    z = ld(0.0, m)
    one = ld(1.0, m)
    xs, os = xr[lo:hi], orow[lo:hi]
    if (is32(m) or not split) and m > -np.inf and m < np.inf:  # as in _bsum: (S, 0)
        if invT == one:
            return _store_all_unit(xs, os, m), z
        return _store_all(xs, os, m, invT), z
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
def _store_all(xs, os, m, invT):
    s = ld(0.0, m)
    for j in range(xs.shape[0]):
        e = expd(ld(xs[j], m), m, invT)
        os[j] = e
        s += e
    return s


@njit(fastmath=FASTMATH, cache=True)
def _store_all_unit(xs, os, m):
    s = ld(0.0, m)
    for j in range(xs.shape[0]):
        e = expd_unit(ld(xs[j], m), m)
        os[j] = e
        s += e
    return s


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
        # _store_all* + _scale instead of the two loops, 10% slower again
        s = ld(0.0, m)
        if invT == ld(1.0, invT):
            for j in range(n):
                e = expd_unit(ld(xr[j], m), m)
                orow[j] = e
                s += e
        else:
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


@njit(fastmath=FASTMATH, cache=True)
def _softmax_row(i, x, mask, out, has_mask, T, invT):
    """softmax of row i (two passes; log_softmax rows go through log_softmax_range)."""
    n = x.shape[1]
    xr = row(x, i)
    mr = row(mask, i) if has_mask else row(mask, 0)
    m, r, w0 = _chunk_state(xr, mr, mr, has_mask, False, 0, n, invT, False)
    _write_row(xr, mr, row(out, i), has_mask, 0, n, m, r, w0, T, invT, False)


@njit(cache=True)
def _task_span(t, nch, cs, n):
    """(row, lo, hi) of task t when each row of n values is cut into nch chunks of cs."""
    lo = (t % nch) * cs
    return t // nch, lo, min(lo + cs, n)


@njit(fastmath=FASTMATH, cache=True)
def _chunk_task(t, x, mask, b, has_mask, has_b, nch, cs, invT, M, Rr, W, split):
    i, lo, hi = _task_span(t, nch, cs, x.shape[1])
    mr = row(mask, i) if has_mask else row(mask, 0)
    br = row(b, i) if has_b else row(b, 0)
    m, r, w0 = _chunk_state(row(x, i), mr, br, has_mask, has_b, lo, hi, invT, split)
    M[t] = m
    Rr[t] = r
    W[t] = w0


@njit(fastmath=FASTMATH, cache=True)
def _write_task(t, x, mask, out, has_mask, nch, cs, T, invT, log, M, Rr, W, nt, sb):
    """Pass 2 of chunk t: merge its row's chunk states, write the chunk (streaming
    stores through the scratch ``sb`` when ``nt``)."""
    i, lo, hi = _task_span(t, nch, cs, x.shape[1])
    m, r, w0 = _merge(M, Rr, W, i * nch, nch, np.float64(invT))
    if nt:
        _write_row_nt(row(x, i), row(out, i), lo, hi, ld(m, invT), r, w0, T, invT, log, sb)
    else:
        mr = row(mask, i) if has_mask else row(mask, 0)
        _write_row(row(x, i), mr, row(out, i), has_mask, lo, hi, ld(m, invT), r, w0, T, invT, log)


@njit(cache=True)
def _lse_finish(i, x, mask, b, has_mask, has_b, m, r, w0, T, lse, sign):
    code, mT = _classify(m, r, w0, T)
    if code == NAN:
        lse[i] = np.nan
        if sign.shape[0]:
            sign[i] = np.nan
    elif code == EMPTY:
        lse[i] = -np.inf
        if sign.shape[0]:
            sign[i] = 0.0
    elif code == POSINF:
        winf = w0
        if m != np.inf:
            mr = row(mask, i) if has_mask else row(mask, 0)
            br = row(b, i) if has_b else row(b, 0)
            winf = _winf_ovf(row(x, i), mr, br, has_mask, has_b, T)
        if winf != winf or winf == 0:  # +inf entries whose weights cancel: inf - inf
            lse[i] = np.nan
            if sign.shape[0]:
                sign[i] = np.nan
        else:
            lse[i] = np.inf
            if sign.shape[0]:
                sign[i] = 1.0 if winf > 0 else -1.0
    else:
        la, sg = _log_sum(r, w0)
        lse[i] = mT + la if sg != 0 else -np.inf
        if sign.shape[0]:
            sign[i] = sg


@njit(fastmath=FASTMATH, cache=True)
def _lse_row(i, x, mask, b, has_mask, has_b, T, invT, lse, sign):
    mr = row(mask, i) if has_mask else row(mask, 0)
    br = row(b, i) if has_b else row(b, 0)
    m, r, w0 = _chunk_state(row(x, i), mr, br, has_mask, has_b, 0, x.shape[1], invT, True)
    _lse_finish(i, x, mask, b, has_mask, has_b, m, r, w0, T, lse, sign)


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
def _fill(a, lo, hi, v):
    s = a[lo:hi]
    for j in range(s.shape[0]):
        s[j] = v


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
    for k in range(mc.shape[0]):
        v = col[k]
        m = mc[k]
        e = expd(v, m, invT)
        sc[k] += z if v >= m else e
        cc[k] += one if v == m else z
        if store:
            col[k] = e


@njit(fastmath=FASTMATH, cache=True)
def _tile_states(x, i0, i1, invT, store):
    """Rows i0:i1 of short rows transposed into ``tb[n, nr]`` (compute dtype), their
    maxima ``M`` and float64 ``Rr`` (sum below the max) and ``W`` (tie count);
    ``store``: ``tb`` then holds the exps instead of x."""
    n = x.shape[1]
    nr = i1 - i0
    dt = np.full(1, invT).dtype
    tb = np.empty((n, nr), dtype=dt)
    if n < (_COLWISE32 if is32(invT) else _COLWISE64) and same_dtype(x, invT):
        # a column of the tile at a time (strided loads).  The copy alone, 1e6 rows of
        # 10, one thread: float32 8.0 -> 5.1 ms, float64 14.7 -> 8.8 ms; whole
        # logsumexp of rows of 10, float32: 16.3 -> 12.7 ns per row.  Longer rows
        # (float32 16, float64 15: 8-10% slower in the whole op) and float16 bits (at
        # every n) copy faster a row at a time, below.
        for j in range(n):
            tj = tb[j]
            xc = x[i0:i1, j]
            for r in range(nr):
                tj[r] = xc[r]
    else:
        xs = x[i0:i1]
        for r in range(nr):
            xr = xs[r]
            for j in range(n):
                tb[j, r] = ld(xr[j], invT)
    M = np.full(nr, -np.inf, dtype=dt)
    for j in range(n):
        _col_max(tb[j], M)
    Sc = np.zeros(nr, dtype=dt)
    Cc = np.zeros(nr, dtype=dt)
    # with the tie split kept: a plain float32 sum per lane (40 terms in one lane,
    # the max's 1 included) measured 4.7e-7 in test_expd32_argument_is_exact
    for j in range(n):
        _col_sum(tb[j], M, Sc, Cc, invT, store)
    return tb, M, Sc.astype(np.float64), Cc.astype(np.float64)


@njit(fastmath=FASTMATH, cache=True)
def _softmax_tile(t, x, out, T, invT, log, rows_per_tile):
    """softmax / log_softmax of a tile of short rows, via ``_tile_states``.

    Measured against the row-major tile it replaces (per-row max / state loops of 10
    values): [1e6, 10] float32 softmax 21 -> 13 ms, float64 log_softmax 27 -> 17.5
    ms (2 threads).
    """
    R, n = x.shape
    i0 = t * rows_per_tile
    i1 = min(i0 + rows_per_tile, R)
    nr = i1 - i0
    tb, M, Rr, W = _tile_states(x, i0, i1, invT, not log)
    L = np.empty(nr if log else 0)
    if log:
        log_sum_array(W, Rr, L)
    C = np.empty(nr, dtype=M.dtype)  # per row: log S, or 1 / S
    bad = 0
    for k in range(nr):
        C[k] = ld(L[k], invT) if log else ld(1.0 / (W[k] + Rr[k]), invT)
        mT = np.float64(M[k]) / T
        bad += 0 if _finite_state(mT, Rr[k], W[k]) else 1
    # special rows (NaN, +-inf) are computed from x into a scratch first and copied in
    # after the tile write: with out = x (in place) the tile write overwrites x
    sp = np.empty((bad, n), dtype=out.dtype)
    k = 0
    for r in range(nr if bad else 0):
        code, _ = _classify(M[r], Rr[r], W[r], T)
        if code != FINITE:
            _write_row(x[i0 + r], x[i0 + r], sp[k], False, 0, n, M[r], Rr[r], W[r], T, invT, log)
            k += 1
    # back to row-major, a column at a time (strided stores: faster here than a row
    # at a time with strided loads, 20 against 24 ms single-thread)
    os = out[i0:i1].reshape(nr * n)
    for j in range(n):
        tj = tb[j]
        if log:
            for r in range(nr):
                os[r * n + j] = st((tj[r] - M[r]) * invT - C[r], os)
        else:
            for r in range(nr):
                os[r * n + j] = st(tj[r] * C[r], os)
    k = 0
    for r in range(nr if bad else 0):
        code, _ = _classify(M[r], Rr[r], W[r], T)
        if code != FINITE:
            out[i0 + r, :] = sp[k]
            k += 1


@njit(fastmath=FASTMATH, cache=True)
def _lse_tile(t, x, T, invT, rows_per_tile, lse, sign):
    """logsumexp of a tile of short rows, via ``_tile_states`` (``log(w0 + r)`` is one
    vectorised loop per tile)."""
    R = x.shape[0]
    i0 = t * rows_per_tile
    i1 = min(i0 + rows_per_tile, R)
    _tb, M, Rr, W = _tile_states(x, i0, i1, invT, False)
    L = np.empty(i1 - i0)
    log_sum_array(W, Rr, L)
    _lse_finish_group(x, x, x, False, i0, i1, M, Rr, W, L, T, lse, sign)


# --------------------------------------------------------------------------- range kernels
# Every kernel below is serial and nogil and works on a task range [t0, t1); the
# runner (``_parallel.run``) splits the tasks over ``numba.get_num_threads()`` Python
# threads.  We tried ``parallel=True`` + ``prange``: same speed, but every parfor
# recompiles its inlined body (measured 4-15 s per kernel and dtype against 1-3 s).
_KW = {"fastmath": FASTMATH, "cache": True, "nogil": True}


@njit(**_KW)
def softmax_short_range(x, out, T, invT, log, rows_per_tile, t0, t1):
    """softmax / log_softmax of short rows (n <= SHORT), tiles t0:t1 of rows."""
    for t in range(t0, t1):
        _softmax_tile(t, x, out, T, invT, log, rows_per_tile)


@njit(**_KW)
def logsumexp_short_range(x, T, invT, rows_per_tile, lse, sign, t0, t1):
    """logsumexp of short rows (n <= SHORT), tiles t0:t1 of rows."""
    for t in range(t0, t1):
        _lse_tile(t, x, T, invT, rows_per_tile, lse, sign)


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
                if touch:
                    if invT == one:
                        r = np.float64(_store_all_unit(row(x, i), row(out, i), m))
                    else:
                        r = np.float64(_store_all(row(x, i), row(out, i), m, invT))
                elif invT == one:
                    r = np.float64(_sum_all_unit(row(x, i), m))
                else:
                    r = np.float64(_sum_all(row(x, i), m, invT))
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
        mr = row(mask, i) if has_mask else row(mask, 0)
        if touch:
            m, r, w0 = _state_store(row(x, i), row(out, i), 0, n, invT, mbs, True)
        else:
            m, r, w0 = _chunk_state(row(x, i), mr, mr, has_mask, False, 0, n, invT, True)
        M[i - g0] = m
        Rr[i - g0] = r
        W[i - g0] = w0
    log_sum_array(W, Rr, L[: g1 - g0])


def same_dtype(o, v):  # pragma: no cover - replaced by the overload inside jitted code
    """True (a compile-time constant) when array ``o`` has the type of scalar ``v``."""
    raise NotImplementedError


@overload(same_dtype)
def _same_dtype_ov(o, v):
    if o.dtype == v:
        return lambda o, v: True
    return lambda o, v: False


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
        for i in range(g0, g1):
            k = i - g0
            code, _mT = _classify(M[k], Rr[k], W[k], T)
            if code != FINITE:
                mr = row(mask, i) if has_mask else row(mask, 0)
                _write_row(
                    row(x, i), mr, row(out, i), has_mask, 0, n, M[k], Rr[k], W[k], T, invT, True
                )
            elif has_mask:
                _wsm_m(row(x, i), row(mask, i), row(out, i), 0, n, M[k], invT, ld(L[k], invT), True)
            elif nt:
                _write_row_nt(row(x, i), row(out, i), 0, n, M[k], Rr[k], W[k], T, invT, True, sb)
            else:
                _wlsm(row(x, i), row(out, i), 0, n, M[k], invT, ld(L[k], invT))


@njit(**_KW)
def softmax_store_range(x, out, T, invT, t0, t1):
    """Rows t0:t1 of softmax by store-then-scale (no mask, out in the compute dtype).

    Rows of at most ``_BLOCK`` values take the max of row i + 1 before the exps of row
    i: independent work that overlaps the latency of each row's max reduction (rows
    of 128, one thread, cache-resident: 71.7 -> 64.4 ns per row).
    """
    n = x.shape[1]
    if n > _BLOCK:
        for i in range(t0, t1):
            _softmax_row_store(row(x, i), row(out, i), T, invT)
        return
    ninf = ld(-np.inf, invT)
    m = _bmax(x[t0], 0, n, ninf) if t1 > t0 else ninf
    for i in range(t0, t1):
        mn = _bmax(row(x, i + 1), 0, n, ninf) if i + 1 < t1 else ninf
        _softmax_block_store(row(x, i), row(out, i), T, invT, m)
        m = mn


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


@njit(cache=True)
def _lse_finish_group(x, mask, b, has_mask, g0, g1, M, Rr, W, L, T, lse, sign):
    """logsumexp of rows g0:g1 from their states and L = log(w0 + r) (no weights)."""
    # one vectorised loop for the finite rows (the common case), then the special
    # rows one by one: a branchy _classify per row cost ~2.5 ns of the ~17 per row of
    # logsumexp over rows of 10
    nr = g1 - g0
    ls = lse[g0:g1]
    bad = 0
    for k in range(nr):
        mT = np.float64(M[k]) / T
        ls[k] = mT + L[k]
        bad += 0 if _finite_state(mT, Rr[k], W[k]) else 1
    if sign.shape[0]:
        sign[g0:g1] = 1.0
    if bad:
        for i in range(g0, g1):
            k = i - g0
            code, _mT = _classify(M[k], Rr[k], W[k], T)
            if code != FINITE:
                _lse_finish(i, x, mask, b, has_mask, False, M[k], Rr[k], W[k], T, lse, sign)


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
        mr = row(mask, i) if has_mask else row(mask, 0)
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


# --------------------------------------------------------------------------- entry points
CHUNK_MIN = 1 << 15  # shortest chunk worth a task of its own
# softmax by store-then-scale wherever it applies (no mask, out in the compute dtype,
# not in place): pass 2 rescales the stored exps instead of a second exp per value.
# False only in tests, to reach the two-exp paths with plain arrays.
STORE = True


def _dummy2(dtype):
    # read-only and non-contiguous, so it has the same Numba type as a broadcast mask
    return np.lib.stride_tricks.as_strided(np.ones(2, dtype), (1, 1), (0, 2), writeable=False)


_DUMMY_MASK = _dummy2(np.bool_)
_DUMMY_B = _dummy2(np.float64)


def n_chunks(R: int, n: int, nt: int) -> int:
    """How many parallel chunks to split each row into (1: rows are enough work)."""
    if nt == 1 or R >= 4 * nt or n < 2 * CHUNK_MIN:
        return 1
    return max(1, min(-(-4 * nt // R), n // CHUNK_MIN))


def _chunking(n, nch):
    cs = -(-n // nch)
    cs = -(-cs // 64) * 64
    return cs, -(-n // cs)


def inv_temperature(T: float, compute: np.dtype):
    """``1/T`` in the compute dtype, or None when it is not a finite normal number."""
    if T == 1.0:
        return compute.type(1.0)
    with np.errstate(over="ignore", divide="ignore"):
        inv = compute.type(np.float64(1.0) / np.float64(T))
    if not (np.isfinite(inv) and inv >= np.finfo(compute).tiny):
        return None
    return inv


def softmax_rows2d(x, mask, out, T, invT, log):
    """softmax / log_softmax over the rows of C-contiguous ``x[R, n]`` into ``out``."""
    from ._parallel import run, threads_for

    has_mask = mask is not None
    mask = _DUMMY_MASK if mask is None else mask
    R, n = x.shape
    T = np.float64(T)
    nt = threads_for(x.size, invT.itemsize)
    # In place (out is x): the store paths overwrite x in pass 1, and a special row
    # (+inf) is rewritten from x afterwards; they are skipped, as is the "touch".
    inplace = np.may_share_memory(x, out)
    store = STORE and not log and not has_mask and out.dtype == invT.dtype and not inplace
    if n <= SHORT and not has_mask and not (store and n >= SHORT_STORE):
        rpt = max(1, _TILE // n)
        run(softmax_short_range, -(-R // rpt), nt, x, out, T, invT, log, rpt)
        return
    # softmax with ``store`` is store-then-scale at every row length, split or not:
    # pass 2 re-reads the stored exps (from L2, L3 or memory) and multiplies, where the
    # two-exp path computes every exp twice.  That costs more memory traffic (the
    # output is read once more and write-allocated in pass 1) but the exp is the
    # bottleneck: out=, medians, two-exp + streaming stores -> store-then-scale,
    # [1, 3.2e7] float32 17.2 -> 13.9 ms, float64 47.5 -> 31.2 ms; [16, 2e6] float32
    # 13.0 -> 7.8, float64 39.5 -> 26.6; [256, 131072] float64 36.1 -> 22.1.
    # Streaming stores for outputs bigger than the last-level cache (see nt.py), in the
    # write pass of the other unmasked rows too long for L2 (log_softmax; softmax in
    # place): measured [1, 3.2e7] float32 log_softmax out= 20 -> 13 ms.  Rows that
    # fit in L2 keep plain stores: log_softmax's pass 1 already write-allocates the
    # output while it computes exps (the "touch"), which measured faster than streaming
    # from a scratch row.
    stream = out.nbytes >= NT_MIN_BYTES and out.dtype == invT.dtype and n > L2_ROW
    nch = n_chunks(R, n, nt)
    if inplace and T < 1:
        # a finite x whose x / T overflows makes a +inf row, whose write pass counts
        # the overflowing entries over the whole row (_winf_ovf): with the row split,
        # other tasks may already have overwritten their chunks.  Rows stay whole.
        nch = 1
    if nch == 1 and store:
        run(softmax_store_range, R, nt, x, out, T, invT)
        return
    if nch == 1:
        if log:
            args = (x, mask, out, has_mask, T, invT, stream, not inplace)
            run(log_softmax_range, R, nt, *args)
        else:
            run(softmax_range, R, nt, x, mask, out, has_mask, T, invT, stream)
        return
    cs, nch = _chunking(n, nch)
    M, Rr, W = np.empty(R * nch), np.empty(R * nch), np.empty(R * nch)
    if store:
        MB = np.empty((R * nch, -(-cs // _BLOCK)))
        run(chunk_store_range, R * nch, nt, x, out, nch, cs, invT, M, Rr, W, MB)
        # the rescale is ~0.06 ns per value: below 4M values a thread hand-off (~55 us
        # here) costs more than it saves ([1, 1e6] float32: 94 -> 64 us)
        nts = 1 if x.size < (1 << 22) else nt
        run(chunk_scale_range, R * nch, nts, x, out, nch, cs, T, invT, M, Rr, W, MB)
        return
    args = (x, mask, mask, has_mask, False, nch, cs, invT, M, Rr, W, log)
    run(chunk_states_range, R * nch, nt, *args)
    # log_softmax's write pass has no exp (~0.1 ns per value): one thread below 4M values
    nts = 1 if (log and x.size < (1 << 22)) else nt
    run(
        chunk_write_range,
        R * nch,
        nts,
        *(x, mask, out, has_mask, nch, cs, T, invT, log, M, Rr, W, stream),
    )


def logsumexp_rows2d(x, mask, b, T, invT, lse, sign):
    """(log|sum|, sign) over the rows of C-contiguous ``x[R, n]``.

    ``lse`` is float64 or the compute dtype (the float64 result rounded once);
    ``sign`` is float64, or empty when the caller does not need it.
    """
    from ._parallel import run, threads_for

    has_mask = mask is not None
    has_b = b is not None
    mask = _DUMMY_MASK if mask is None else mask
    b = _DUMMY_B if b is None else b
    R, n = x.shape
    T = np.float64(T)
    nt = threads_for(x.size, invT.itemsize)
    if n <= SHORT and not has_mask and not has_b:
        rpt = max(1, _TILE // n)
        run(logsumexp_short_range, -(-R // rpt), nt, x, T, invT, rpt, lse, sign)
        return
    nch = n_chunks(R, n, nt)
    if nch == 1:
        run(logsumexp_range, R, nt, x, mask, b, has_mask, has_b, T, invT, lse, sign)
        return
    cs, nch = _chunking(n, nch)
    M, Rr, W = np.empty(R * nch), np.empty(R * nch), np.empty(R * nch)
    args = (x, mask, b, has_mask, has_b, nch, cs, invT, M, Rr, W, True)
    run(chunk_states_range, R * nch, nt, *args)
    chunk_lse_finish(x, mask, b, has_mask, has_b, nch, T, invT, M, Rr, W, lse, sign)


def state_rows(x, mask, b, T, has_mask, has_b, m_out, s_out):
    """The mergeable (m, s) state of each row of ``x[R, n]``, in float64.

    ``m`` is the max of the included ``x / T`` and ``s = sum_j w_j exp(x_j / T - m)``.
    Special rows: empty or all ``-inf`` -> (-inf, 0); ``+inf`` present -> (+inf, total
    weight of the +inf entries); NaN -> (NaN, NaN).  See ``softmaxkit._core.state``.
    Same pass as logsumexp (one read of ``x``); ``s = w0 + r``.
    """
    from ._parallel import run, threads_for

    x = np.asarray(x)
    if x.dtype == np.float16:
        x = x.view(np.uint16)
    compute = np.dtype(np.float64) if x.dtype == np.float64 else np.dtype(np.float32)
    if x.dtype not in (np.float32, np.float64, np.uint16):
        x = x.astype(np.float64)
        compute = np.dtype(np.float64)
    T = float(T)
    invT = inv_temperature(T, compute)
    if invT is None:
        with np.errstate(over="ignore", under="ignore"):
            x = (x.view(np.float16) if x.dtype == np.uint16 else x).astype(np.float64) / T
        T, invT = 1.0, np.float64(1.0)
    if not x.flags.c_contiguous:
        x = np.ascontiguousarray(x)
    R = x.shape[0]
    if R == 0:
        return
    if x.shape[1] == 0:
        m_out[:] = -np.inf
        s_out[:] = 0.0
        return
    mask = mask if has_mask else _DUMMY_MASK
    b = b if has_b else _DUMMY_B
    run(
        state_range,
        R,
        threads_for(x.size, invT.itemsize),
        x,
        mask,
        b,
        has_mask,
        has_b,
        np.float64(T),
        invT,
        m_out,
        s_out,
    )
