"""bfloat16 cross-entropy rows on the raw bits (``softmaxkit.torch.cross_entropy``).

NumPy has no bfloat16: the logits arrive as ``uint16`` bit patterns (as in
``_kernels/bf16.py``).  Per row, into one float32 row buffer (L1 for rows of 128,
L2 for 32000 classes): widen the bits exactly (``bits << 16``) while scanning the
row's max and min, run the float32 cross-entropy row's fast-path helpers on the
buffer in place (the ``out=logits`` mode of ``ce_index_rows``: the exponentials
and then the gradient overwrite the widened row), and round the gradient once to
bfloat16 bits (round-to-nearest-even, NaN -> quiet NaN) into the output row.
Memory traffic is one read of the bf16 logits and one write of the bf16 gradient:
no float32 copy of the tensor and no float32 gradient.

``ce_index_rows_bf16``: the float32 kernel's arithmetic on the widened values
(float32 exponentials on the fast path, float64 accumulators, the exact scalar row
for NaN / +-inf / huge rows), so the loss and the float32 gradient before rounding
equal those of ``cross_entropy(logits.float(), ...)``; the only extra error is the
gradient's one bfloat16 rounding (relative ``2^-9``).  ``ce_rows_bf16`` (what
``softmaxkit.torch`` calls) runs short rows without label smoothing faster, within
one bfloat16 ulp of that (section "short rows, fast" below), and the rest through
``ce_index_rows_bf16``.  Guarded by ``tests/test_torch_ce_perf.py::test_bf16_*``.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from ..bf16 import (
    _S_MAX,
    PAIR_MAX,
    _exp_store_sum,
    _exp_store_sum2,
    _write_scaled,
    _write_scaled2,
)
from ..bf16_math import bf16_to_f32, f32_to_bf16, round_array
from ..exp import fmaximum
from ..view import row
from .common import _FM
from .cross_entropy import _index_row_general
from .fast import _fast_ok, _scale_shift_row, _sum_exp, _sum_exp_inplace


@njit(cache=True, nogil=True, fastmath=_FM)
def _widen_scan(br, fr):
    """Widen a row of bits into ``fr``; return ``(max, min, m + mn)`` in float64.

    The float32 kernel's ``_max_min_sum_row`` gives the exact max and min and a
    float64 sum that is finite exactly when every value is (a float64 sum of finite
    float32 values cannot overflow); NaN-propagating maxima (``fmaximum``, a
    vectorised tree) make ``max + min`` finite exactly then too, so ``_fast_ok``
    takes the same decision.  Numba's ``max`` / ``min`` and the float64 sum did not
    vectorise: 110 ns a row of 128 against ~15 here.
    """
    m = np.float32(-np.inf)
    nmn = np.float32(-np.inf)  # -min
    for j in range(br.shape[0]):
        v = bf16_to_f32(br[j])
        fr[j] = v
        m = fmaximum(m, v)
        nmn = fmaximum(nmn, -v)
    return np.float64(m), -np.float64(nmn), np.float64(m) - np.float64(nmn)


@njit(cache=True, nogil=True)
def ce_index_rows_bf16(xb, tgt, invT, eps, z, a, b, active, want_grad, gb, ce, lse, lim, r0, r1):
    """``ce_index_rows`` (no mask) on bfloat16 bits ``xb``, rows ``[r0, r1)``.

    ``gb``: the gradient's bits (written when ``want_grad``); ``ce``, ``lse``, ``a``,
    ``b``, ``active``, ``tgt``: as in ``ce_index_rows``.

    Per row, into one float32 row buffer (in L1 for short rows, L2 for 32000
    classes): widen the bits and scan max / min / sum in one pass; then the float32
    kernel's own fast-path helpers in its ``out=logits`` mode (``_sum_exp_inplace``
    with a gradient, ``_sum_exp`` without; ``_scale_shift_row``) and the same
    formulas, so every value equals the float32 path's bit for bit; round the row
    into ``gb``.  Rows off the fast path (NaN, +-inf, huge values) take the float32
    kernel's exact scalar row ``_index_row_general`` on the widened row.  Rows are
    handed to the helpers as ``row`` views (no reference counting): the previous
    version called the float32 kernel on blocks of 256 widened rows, whose ``x[i]``
    views and separate max / min / sum pass cost ~200 ns a row of 128.  [65536, 128],
    one thread, CPU time, medians: 16.0 -> 8.9 ms with the gradient, 13.2 -> 6.4 ms
    without; cross_entropy forward + backward [4096, 32000] 202 -> 110 ms.  Guarded
    by tests/test_torch_bf16.py::test_bf16_ce_kernel_equals_float32_path_*.
    """
    n = xb.shape[1]
    xs = np.empty((1, n), dtype=np.float32)
    fr = row(xs, 0)
    mask = np.ones((1, 1), dtype=np.bool_)  # has_mask=False: never read
    for i in range(r0, r1):
        if not active[i]:
            ce[i] = 0.0
            lse[i] = -np.inf
            if want_grad:
                gr = row(gb, i)
                for j in range(n):
                    gr[j] = np.uint16(0)
            continue
        t = tgt[i]
        m, mn, tot = _widen_scan(row(xb, i), fr)
        if not _fast_ok(m, mn, tot, invT, n, lim):
            ce[i], lse[i] = _index_row_general(
                xs, mask, False, 0, t, invT, eps, z, a[i], b[i], want_grad, xs
            )
        else:
            dt = (np.float64(fr[t]) - m) * invT
            if want_grad:
                s, sd = _sum_exp_inplace(fr, invT, m)
            else:
                s, sd = _sum_exp(fr, invT, m, fr, False)
            ls = math.log(s)
            lrow = m * invT + ls
            lse[i] = lrow
            cei = 0.0
            if eps < 1.0:
                cei += (1.0 - eps) * (ls - dt)
            if eps > 0.0:
                cei += eps * (ls - sd / n)
            ce[i] = cei
            if want_grad:
                c = a[i] + 2.0 * b[i] * z * lrow
                _scale_shift_row(fr, invT * c / s, invT * a[i] * eps / n)
                fr[t] -= invT * a[i] * (1.0 - eps)
        if want_grad:
            round_array(fr, row(gb, i))


# ----------------------------------------------------------------- short rows, fast
# Rows of up to PAIR_MAX classes without label smoothing, as the bf16 softmax kernel
# runs them (``_kernels/bf16.py``): two rows a pass, shifted by their first value (no
# max pass), the short exp, float32 sums; the gradient ``softmax * c / T`` written in
# one pass straight from the exponentials, then its target entry.  A row the shift
# does not suit (s not below 2^100: an entry 69 above the first, a NaN, an inf, a
# first value -inf), a target logit that is not finite, or an ignored row takes
# ``ce_index_rows_bf16`` (the float32 path's arithmetic).  Errors: the exponentials
# 3e-6 relative and the float32 sum; a confident row (target probability above 1/2)
# takes its loss as ``log1p(r / e_t)`` and its target gradient from ``r``, the sum of
# the other exponentials, so neither cancels (``log(s) - (v_t - c)`` and ``p_t - 1``
# would lose their digits as ``p_t -> 1``; the float32 path's do).


@njit(cache=True, nogil=True, fastmath=_FM)
def _sum_except(fr, tg):
    r = np.float32(0.0)
    for j in range(fr.shape[0]):
        r += fr[j] if j != tg else np.float32(0.0)
    return r


@njit(cache=True, nogil=True, fastmath=_FM)
def _terms(xr, fr, s, c, t, tg, z, ai, bi):
    """``(ce, lse, scale, g_t)`` of one row whose exponentials ``fr = exp(v - c)`` sum
    to ``s``: its gradient is ``fr * scale`` rounded, then ``g_t`` at the target.

    ``v_t - c`` is taken in float32, before the widening: with ``reassoc`` (which
    also reaches a helper without fast-math once it is inlined into one with it),
    ``log s - (v_t - c)`` in float64 became ``(log s - v_t) + c``, 0 at ``c = 3e38``.
    """
    et = np.float64(fr[tg])
    ls = np.float64(math.log(s))  # logf: s is float32
    lrow = np.float64(c) + ls
    confident = 2.0 * et > s
    r = np.float64(_sum_except(fr, tg)) if confident else 0.0
    if confident:
        cei = math.log1p(r / et)
    else:
        cei = ls - np.float64(bf16_to_f32(xr[tg]) * t - c)
    cz = ai + 2.0 * bi * z * lrow
    if confident:  # softmax_t - 1 = -r / s
        g = np.float64(t) * ((cz - ai) - cz * (r / s))
    else:
        g = np.float64(t) * (cz * (et / s) - ai)
    return cei, lrow, np.float32(np.float64(t) * cz / s), np.float32(g)


@njit(cache=True, nogil=True, fastmath=_FM)
def _finish(xr, fr, s, c, t, tg, z, ai, bi, want_grad, gr):
    """Loss, lse and (``want_grad``) gradient row of one row (:func:`_terms`)."""
    cei, lrow, sc, g = _terms(xr, fr, s, c, t, tg, z, ai, bi)
    if want_grad:
        _write_scaled(fr, sc, gr)
        gr[tg] = f32_to_bf16(g)
    return cei, lrow


@njit(cache=True, nogil=True, fastmath=_FM)
def _target_ok(xr, tg):
    v = bf16_to_f32(xr[tg])
    return v > -np.inf and v < np.inf


@njit(cache=True, nogil=True, fastmath=_FM)
def _one(xb, tgt, t, z, a, b, active, want_grad, gb, ce, lse, i, fr):
    """Row ``i`` shifted by its first value; False (nothing written) when unsafe."""
    xr = row(xb, i)
    tg = tgt[i]
    if not (active[i] and _target_ok(xr, tg)):
        return False
    c = bf16_to_f32(xr[0]) * t
    s = _exp_store_sum(xr, t, c, fr)
    if not s < _S_MAX:
        return False
    gr = row(gb, i if want_grad else 0)  # (gb is 1 x 1 without a gradient)
    ce[i], lse[i] = _finish(xr, fr, s, c, t, tg, z, a[i], b[i], want_grad, gr)
    return True


@njit(cache=True, nogil=True, fastmath=_FM)
def _two(xb, tgt, t, z, a, b, active, want_grad, gb, ce, lse, i, fa, fc):
    """Rows ``i`` and ``i + 1`` in one pass (as ``_one``); False when either is unsafe."""
    xa = row(xb, i)
    xc = row(xb, i + 1)
    ta = tgt[i]
    tc = tgt[i + 1]
    if not (active[i] and active[i + 1] and _target_ok(xa, ta) and _target_ok(xc, tc)):
        return False
    ca = bf16_to_f32(xa[0]) * t
    cc = bf16_to_f32(xc[0]) * t
    sa, sc = _exp_store_sum2(xa, xc, t, ca, cc, fa, fc)
    if not (sa < _S_MAX and sc < _S_MAX):
        return False
    j = i + 1
    ce[i], lse[i], sca, g_a = _terms(xa, fa, sa, ca, t, ta, z, a[i], b[i])
    ce[j], lse[j], scc, g_c = _terms(xc, fc, sc, cc, t, tc, z, a[j], b[j])
    if want_grad:  # both gradient rows in one pass, as the softmax writes its pairs
        ga = row(gb, i)
        gc = row(gb, j)
        _write_scaled2(fa, fc, sca, scc, ga, gc)
        ga[ta] = f32_to_bf16(g_a)
        gc[tc] = f32_to_bf16(g_c)
    return True


@njit(cache=True, nogil=True)
def ce_rows_bf16(xb, tgt, invT, eps, z, a, b, active, want_grad, gb, ce, lse, lim, r0, r1):
    """``ce_index_rows_bf16`` with the short-row fast path above (same arguments)."""
    n = xb.shape[1]
    if eps != 0.0 or n == 0 or n > PAIR_MAX or np.float32(invT) != invT:
        ce_index_rows_bf16(xb, tgt, invT, eps, z, a, b, active, want_grad, gb, ce, lse, lim,
                           r0, r1)  # fmt: skip
        return
    t = np.float32(invT)
    fa = np.empty(n, dtype=np.float32)
    fc = np.empty(n, dtype=np.float32)
    i = r0
    while i + 1 < r1:
        if not _two(xb, tgt, t, z, a, b, active, want_grad, gb, ce, lse, i, fa, fc):
            for k in range(i, i + 2):  # each row alone: the same rule, else the float32 path
                if not _one(xb, tgt, t, z, a, b, active, want_grad, gb, ce, lse, k, fa):
                    ce_index_rows_bf16(xb, tgt, invT, eps, z, a, b, active, want_grad, gb,
                                       ce, lse, lim, k, k + 1)  # fmt: skip
        i += 2
    if i < r1 and not _one(xb, tgt, t, z, a, b, active, want_grad, gb, ce, lse, i, fa):
        ce_index_rows_bf16(xb, tgt, invT, eps, z, a, b, active, want_grad, gb, ce, lse, lim,
                           i, i + 1)  # fmt: skip
