"""bfloat16 row kernels: softmax / log_softmax and their VJPs on the raw bits.

NumPy has no bfloat16, so the arrays arrive as ``uint16`` bit patterns (a bfloat16
is the upper half of a float32).  Each value is widened to float32 in registers
(exact), computed in float32 and rounded once to bfloat16 (``bf16_math.py``: the
conversions, and the short exp :func:`exp_bf` that suffices before that rounding),
so the input is read from memory once and the output written once: no float32 copy
of the tensor.  Accumulator: float32 (the sums' rounding, about ``sqrt(n) 2^-24``,
is far below the output's ``2^-9``).

Pass structure per row (every pass a small helper over a 1-D row view from index
0, so that LLVM vectorises it: 16 float32 lanes, the widening and the rounding in
32-bit integer lanes; the previous version, with the loops inline over ``x[i, j]``
and a uint32/float32 double view of the row buffer, ran at 1.7 ns a value against
0.6 here):

* softmax: ``e = exp(v - c)`` into a float32 row buffer + sum; write
  ``round(e / s)``;
* log_softmax: sum of ``exp(v - c)``; write ``round(v - c - log s)`` (no
  buffer: ``v`` is recomputed from the bits);
* rows of up to ``PAIR_MAX`` values are shifted by their first value ``c = x[0] /
  T`` (no max pass; conditions below ``_S_MAX``), longer rows, and short rows the
  first value does not suit, by their max ``m`` after a max pass;
* with ``v = x * (1/T)`` rounded to float32 and ``m = max(x) * (1/T)``: rounding
  is monotone, so ``m`` is exactly the largest ``v`` and the max entry's own
  difference ``v - m`` is exactly 0 (no FMA contraction: the flags leave out
  ``contract``).  A scaled max that overflows to ``+inf`` takes the ``+inf`` rule.

Edge cases follow ``docs/dense.md``: NaN row -> NaN, all ``-inf`` (or empty) -> 0 /
``-inf``, ``k`` entries ``+inf`` -> ``1/k`` / ``-log k`` there and 0 / ``-inf``
elsewhere.  ``fmax`` ignores NaN, so a NaN is found by the sum (``exp(NaN - m)`` is
NaN) when the max is finite and by a scalar scan of the (rare) rows whose max is
``+-inf``.

Serial ``nogil`` range kernels ``f(..., t0, t1)`` over rows ``[t0, t1)``, run on
several threads by ``_parallel.run``.  Guarded by tests/test_torch.py
(``test_bfloat16_*``).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

# _FM: never nnan / ninf (NaN rows and -inf entries must go through); no "contract":
# no FMA between a product and a later difference (``x * t - m`` must see the same
# rounded ``x * t`` as the max did)
from .bf16_math import _FM, _QNAN, bf16_to_f32, exp_bf, f32_to_bf16
from .exp import exp_, fmax
from .view import row

__all__ = ["PAIR_MAX", "lse_range", "lse_vjp_range", "softmax_range", "vjp_range"]

_NEG_INF = np.uint16(0xFF80)


# ----------------------------------------------------------------- row passes
@njit(cache=True, nogil=True, fastmath=_FM)
def _max(xr):
    m = np.float32(-np.inf)
    for j in range(xr.shape[0]):
        m = fmax(m, bf16_to_f32(xr[j]))
    return m


@njit(cache=True, nogil=True, fastmath=_FM)
def _exp_store_sum(xr, t, m, fb):
    s = np.float32(0.0)
    for j in range(xr.shape[0]):
        e = exp_bf(bf16_to_f32(xr[j]) * t - m)
        fb[j] = e
        s += e
    return s


@njit(cache=True, nogil=True, fastmath=_FM)
def _exp_sum(xr, t, m):
    s = np.float32(0.0)
    for j in range(xr.shape[0]):
        s += exp_bf(bf16_to_f32(xr[j]) * t - m)
    return s


@njit(cache=True, nogil=True, fastmath=_FM)
def _write_scaled(fb, r, orow):
    for j in range(orow.shape[0]):
        orow[j] = f32_to_bf16(fb[j] * r)


@njit(cache=True, nogil=True, fastmath=_FM)
def _write_shifted(xr, t, c, orow):
    for j in range(orow.shape[0]):
        orow[j] = f32_to_bf16(bf16_to_f32(xr[j]) * t - c)


@njit(cache=True, nogil=True)
def _special_row(xr, t, m, log, orow):
    """A row whose max ``m`` is ``+-inf`` (or that is empty): NaN, 0 / ``-inf``, or ``1/k``."""
    n = xr.shape[0]
    k = 0
    for j in range(n):
        v = bf16_to_f32(xr[j]) * t
        if v != v:
            for jj in range(n):
                orow[jj] = np.uint16(_QNAN)
            return
        k += v == np.inf
    miss = _NEG_INF if log else np.uint16(0)
    if m == -np.inf or k == 0:
        for j in range(n):
            orow[j] = miss
        return
    hit = f32_to_bf16(np.float32(-math.log(k)) if log else np.float32(1.0 / k))
    for j in range(n):
        orow[j] = hit if bf16_to_f32(xr[j]) * t == np.inf else miss


# Short rows, two at a time: each pass of a row ends in a horizontal reduction and
# the next pass waits for it (max -> exp and sum -> 1/s -> write), ~70 ns a row of
# latency that out-of-order execution cannot hide behind a 128-value row.  Running
# the passes of two rows in one loop overlaps their chains: [65536, 128] softmax,
# one thread, 27-31 -> 17-21 ms (min of 20, on the loaded VM).  Long rows keep the
# one-row passes (their latency is amortised).  Only the float32 sums' order can
# change (1 ulp of bfloat16 on 19 of 8.4M values).
PAIR_MAX = 2048


@njit(cache=True, nogil=True, fastmath=_FM)
def _max2(xa, xb):
    ma = np.float32(-np.inf)
    mb = np.float32(-np.inf)
    for j in range(xa.shape[0]):
        ma = fmax(ma, bf16_to_f32(xa[j]))
        mb = fmax(mb, bf16_to_f32(xb[j]))
    return ma, mb


@njit(cache=True, nogil=True, fastmath=_FM)
def _exp_store_sum2(xa, xb, t, ma, mb, fa, fb):
    sa = np.float32(0.0)
    sb = np.float32(0.0)
    for j in range(xa.shape[0]):
        ea = exp_bf(bf16_to_f32(xa[j]) * t - ma)
        eb = exp_bf(bf16_to_f32(xb[j]) * t - mb)
        fa[j] = ea
        fb[j] = eb
        sa += ea
        sb += eb
    return sa, sb


@njit(cache=True, nogil=True, fastmath=_FM)
def _exp_sum2(xa, xb, t, ma, mb):
    sa = np.float32(0.0)
    sb = np.float32(0.0)
    for j in range(xa.shape[0]):
        sa += exp_bf(bf16_to_f32(xa[j]) * t - ma)
        sb += exp_bf(bf16_to_f32(xb[j]) * t - mb)
    return sa, sb


@njit(cache=True, nogil=True, fastmath=_FM)
def _write_scaled2(fa, fb, ra, rb, oa, ob):
    for j in range(oa.shape[0]):
        oa[j] = f32_to_bf16(fa[j] * ra)
        ob[j] = f32_to_bf16(fb[j] * rb)


@njit(cache=True, nogil=True, fastmath=_FM)
def _write_shifted2(xa, xb, t, ca, cb, oa, ob):
    for j in range(oa.shape[0]):
        oa[j] = f32_to_bf16(bf16_to_f32(xa[j]) * t - ca)
        ob[j] = f32_to_bf16(bf16_to_f32(xb[j]) * t - cb)


# The paired rows are shifted by their first value ``c = x[0] t`` instead of their
# max, which saves the max pass (and its reduction's latency): the row's own
# ``exp(0) = 1`` makes ``s >= 1``, so nothing that matters underflows (an entry
# whose ``v - c < -88`` has softmax below ``e^-88``).  Accepted when the sums show the
# shift was safe, else the row pair is redone with its max: softmax when ``s`` is
# finite and below ``2^100`` (so ``1/s`` is a normal float32; an entry with
# ``v - c`` above 88 makes ``s`` infinite; a NaN entry, or a non-finite ``c``, makes it
# NaN); log_softmax when ``s < 2^40``, i.e. ``max - c < 27.7``, so that
# ``v - c - log s`` near the max loses at most ``2 * 28 * 2^-24 = 3.4e-6`` to
# cancellation (the contract: ``2^-8 (1 + |v|)``).  The argument ``v - c`` carries
# ``|v - c| 2^-24 <= 5.3e-6`` relative error into each exp, as ``v - max`` does for
# entries far below the max.
_S_MAX = np.float32(2.0**100)
_S_MAX_LOG = np.float32(2.0**40)


@njit(cache=True, nogil=True, fastmath=_FM)
def _pair(x, t, log, out, i, fa, fb):
    """Rows ``i`` and ``i + 1`` through the paired passes; False (nothing written)
    when the first-value shift was not safe for either row (see above: those rows
    take the one-row code, shifted by their max)."""
    xa = row(x, i)
    xb = row(x, i + 1)
    if xa.shape[0] == 0:
        return False
    ma = bf16_to_f32(xa[0]) * t
    mb = bf16_to_f32(xb[0]) * t
    oa = row(out, i)
    ob = row(out, i + 1)
    if log:
        sa, sb = _exp_sum2(xa, xb, t, ma, mb)
        if not (sa < _S_MAX_LOG and sb < _S_MAX_LOG):
            return False
        ca = ma + np.float32(math.log(sa))
        cb = mb + np.float32(math.log(sb))
        _write_shifted2(xa, xb, t, ca, cb, oa, ob)
    else:
        sa, sb = _exp_store_sum2(xa, xb, t, ma, mb, fa, fb)
        if not (sa < _S_MAX and sb < _S_MAX):
            return False
        _write_scaled2(fa, fb, np.float32(1.0) / sa, np.float32(1.0) / sb, oa, ob)
    return True


@njit(cache=True, nogil=True, fastmath=_FM)
def softmax_range(x, invT, log, out, t0, t1):
    """``out[i] = (log_)softmax(x[i] * invT)`` for rows ``t0 <= i < t1`` (bits in, bits out)."""
    n = x.shape[1]
    fb = np.empty(n, dtype=np.float32)
    t = np.float32(invT)
    if n <= PAIR_MAX:
        fa = np.empty(n, dtype=np.float32)
        i = t0
        while i + 1 < t1:
            if not _pair(x, t, log, out, i, fa, fb):
                _rows(x, t, log, out, i, i + 2, fb)  # each row: its first value, else max
            i += 2
        _rows(x, t, log, out, i, t1, fb)
        return
    _rows(x, t, log, out, t0, t1, fb)


@njit(cache=True, nogil=True, fastmath=_FM)
def _first(xr, t, log, orow, fb):
    """One short row shifted by its first value (the pair code's rule, so a row gives
    the same bits alone as in a pair, whatever the thread ranges); False (nothing
    written) when that shift is not safe."""
    if xr.shape[0] == 0:
        return False
    c = bf16_to_f32(xr[0]) * t
    if log:
        s = _exp_sum(xr, t, c)
        if not s < _S_MAX_LOG:
            return False
        _write_shifted(xr, t, c + np.float32(math.log(s)), orow)
    else:
        s = _exp_store_sum(xr, t, c, fb)
        if not s < _S_MAX:
            return False
        _write_scaled(fb, np.float32(1.0) / s, orow)
    return True


@njit(cache=True, nogil=True, fastmath=_FM)
def _rows(x, t, log, out, t0, t1, fb):
    """One row at a time (rows ``[t0, t1)``; ``t`` the float32 ``1/T``)."""
    short = x.shape[1] <= PAIR_MAX
    for i in range(t0, t1):
        xr = row(x, i)
        orow = row(out, i)
        if short and _first(xr, t, log, orow, fb):
            continue
        # rounding is monotone and t > 0: max(round(x t)) == round(max(x) t), the same
        # float32 that each value's x * t gives for the max entry (no FMA: no "contract")
        m = _max(xr) * t
        if not (m > -np.inf and m < np.inf):
            _special_row(xr, t, m, log, orow)
            continue
        if log:
            s = _exp_sum(xr, t, m)
            c = m + np.float32(math.log(s))  # s NaN (a NaN entry): c NaN, row NaN
            _write_shifted(xr, t, c, orow)
        else:
            s = _exp_store_sum(xr, t, m, fb)
            _write_scaled(fb, np.float32(1.0) / s, orow)


# ----------------------------------------------------------------- logsumexp
@njit(cache=True, nogil=True)
def _special_lse(xr, t, m):
    """logsumexp of a row whose scaled max ``m`` is ``+-inf`` (or that is empty):
    NaN if any entry is NaN (``fmax`` skipped it), else ``m``."""
    for j in range(xr.shape[0]):
        v = bf16_to_f32(xr[j])
        if v != v:
            return np.float32(np.nan)
    return m


@njit(cache=True, nogil=True, fastmath=_FM)
def lse_range(x, invT, out, t0, t1):
    """``out[i] = log(sum(exp(x[i] * invT)))`` (float32) for rows ``t0 <= i < t1``.

    Bits in, float32 out (one value a row): max, then the sum of ``exp(v - m)``,
    ``m + log(s)``; short rows two at a time (the paired passes above).  A NaN entry
    gives NaN, an all ``-inf`` (or empty) row ``-inf``, a ``+inf`` entry ``+inf``.
    """
    t = np.float32(invT)
    i = t0
    if x.shape[1] <= PAIR_MAX:
        while i + 1 < t1:
            xa = row(x, i)
            xb = row(x, i + 1)
            ma, mb = _max2(xa, xb)
            ma *= t
            mb *= t
            if ma > -np.inf and ma < np.inf and mb > -np.inf and mb < np.inf:
                sa, sb = _exp_sum2(xa, xb, t, ma, mb)
                out[i] = ma + np.float32(math.log(sa))
                out[i + 1] = mb + np.float32(math.log(sb))
            else:
                _lse_rows(x, t, out, i, i + 2)
            i += 2
    _lse_rows(x, t, out, i, t1)


@njit(cache=True, nogil=True, fastmath=_FM)
def _lse_rows(x, t, out, t0, t1):
    for i in range(t0, t1):
        xr = row(x, i)
        m = _max(xr) * t
        if m > -np.inf and m < np.inf:
            out[i] = m + np.float32(math.log(_exp_sum(xr, t, m)))  # NaN entry: s NaN
        else:
            out[i] = _special_lse(xr, t, m)


# ----------------------------------------------------------------- logsumexp VJP
# ``exp(v - l)`` with ``l`` the row's float32 logsumexp: ``l`` rounded to float32 puts
# ``|l| 2^-24`` into the exponent, below 2.5e-4 relative for ``|l| < 2^12`` (the
# output's half ulp is 2^-9); larger ``|l|`` and non-finite ``l`` (NaN, inf and all
# ``-inf`` rows) take the softmax row (max shift, the contract's edge rows), scaled.
_L_MAX = np.float32(2.0**12)


@njit(cache=True, nogil=True, fastmath=_FM)
def _write_exp_scaled(xr, t, lse, c, orow):
    for j in range(orow.shape[0]):
        orow[j] = f32_to_bf16(exp_bf(bf16_to_f32(xr[j]) * t - lse) * c)


@njit(cache=True, nogil=True, fastmath=_FM)
def _scale_bits(orow, c):
    for j in range(orow.shape[0]):
        orow[j] = f32_to_bf16(bf16_to_f32(orow[j]) * c)


@njit(cache=True, nogil=True, fastmath=_FM)
def lse_vjp_range(x, invT, lse, gs, out, t0, t1):
    """``out[i] = softmax(x[i] * invT) * gs[i]`` (bits) for rows ``t0 <= i < t1``.

    The logsumexp VJP in one pass: ``lse`` (float32, a value a row) is the forward's
    ``log(sum(exp(x[i] * invT)))``, ``gs`` (float32) the output gradient over ``T``;
    each value is ``exp(v - lse) gs`` rounded once, from one read of ``x``.
    """
    t = np.float32(invT)
    fb = np.empty(x.shape[1], dtype=np.float32)
    for i in range(t0, t1):
        li = lse[i]
        orow = row(out, i)
        if li > -_L_MAX and li < _L_MAX:
            _write_exp_scaled(row(x, i), t, li, gs[i], orow)
        else:
            _rows(x, t, False, out, i, i + 1, fb)
            _scale_bits(orow, gs[i])


# ----------------------------------------------------------------- VJPs
@njit(cache=True, nogil=True, fastmath=_FM)
def _dot_nz(yr, gr):
    # sum(y g) over y != 0 (so an infinite g where y == 0 does not make it NaN)
    s = np.float32(0.0)
    for j in range(yr.shape[0]):
        y = bf16_to_f32(yr[j])
        s += y * bf16_to_f32(gr[j]) if y != 0 else np.float32(0.0)
    return s


@njit(cache=True, nogil=True, fastmath=_FM)
def _write_softmax_vjp(yr, gr, s, t, orow):
    for j in range(orow.shape[0]):
        y = bf16_to_f32(yr[j])
        v = y * (bf16_to_f32(gr[j]) - s) * t
        orow[j] = f32_to_bf16(v if y != 0 else np.float32(0.0))


@njit(cache=True, nogil=True, fastmath=_FM)
def _sum_live(yr, gr):
    # (sum(g), any y != -inf)
    s = np.float32(0.0)
    live = False
    for j in range(yr.shape[0]):
        s += bf16_to_f32(gr[j])
        live |= yr[j] != _NEG_INF
    return s, live


@njit(cache=True, nogil=True, fastmath=_FM)
def _write_log_softmax_vjp(yr, gr, s, t, orow):
    for j in range(orow.shape[0]):
        orow[j] = f32_to_bf16((bf16_to_f32(gr[j]) - exp_(bf16_to_f32(yr[j])) * s) * t)


@njit(cache=True, nogil=True, fastmath=_FM)
def vjp_range(y, g, invT, log, out, t0, t1):
    """VJP of (log_)softmax from its output ``y`` and upstream ``g`` (bits), rows ``[t0, t1)``.

    softmax: ``y (g - sum(y g)) / T``, 0 where ``y == 0`` (even for infinite ``g``);
    log_softmax: ``(g - e^y sum(g)) / T``, 0 on rows whose ``y`` are all ``-inf``.
    Two passes (a reduction, then the write), each vectorised.
    """
    t = np.float32(invT)
    for i in range(t0, t1):
        yr = row(y, i)
        gr = row(g, i)
        orow = row(out, i)
        if log:
            s, live = _sum_live(yr, gr)
            if live:
                _write_log_softmax_vjp(yr, gr, s, t, orow)
            else:
                for j in range(orow.shape[0]):
                    orow[j] = np.uint16(0)
        else:
            _write_softmax_vjp(yr, gr, _dot_nz(yr, gr), t, orow)
