"""Fused distillation losses (KL both directions, generalised JSD) with the gradient
w.r.t. the student logits (Numba).

Kernels see two 2-D C-contiguous arrays of rows ``xs[R, C]`` (student) and
``xt[R, C]`` (teacher) of the same dtype, the class axis last; masked entries have
already been set to ``-inf`` by the public layer (``softmaxkit.distill``).  No
user-facing errors are raised here.

Per row, with ``ds = (xs - max xs) * invT`` and ``dt = (xt - max xt) * invT`` (the
differences are formed as in the cross-entropy kernels: exactly 0 at each max, no
FMA contraction between the max and the difference), ``ss = sum exp(ds)``,
``st = sum exp(dt)``, ``log p_s = ds - log ss`` and ``log p_t = dt - log st``:

* forward ``KL(p_t || p_s) = sum e^dt (dt - ds) / st - log st + log ss``;
  ``dL/dxs = invT (p_s - p_t)``;
* reverse ``KL(p_s || p_t) = sum e^ds (ds - dt) / ss - log ss + log st``;
  ``dL/dxs = invT p_s (log p_s - log p_t - KL)``;
* generalised JSD, ``M = beta p_t + (1 - beta) p_s``:
  ``sum beta p_t log p_t + (1 - beta) p_s log p_s - M log M``;
  ``dL/dxs = invT (1 - beta) p_s (log p_s - log M - KL(p_s || M))``.

A term whose weight (``e^dt`` for forward, ``e^ds`` for reverse, each probability
in the JSD) is 0 adds exactly 0 (a select, never ``0 * inf``): a teacher ``-inf``
where the student is ``-inf`` too contributes nothing, a teacher with mass where
the student is ``-inf`` gives ``+inf``.  NaN propagates through ``exp_`` and the
sums.  Rows the caller marks inactive get loss 0 and a zero gradient.

Accumulators: float64.  Differences and exponentials: in the row dtype with the
vectorised ``exp_`` of ``_kernels/exp.py`` (1 ulp); the JSD works in float64
with the vectorised ``exp_`` and ``log(a + b)`` (``_log_sum_pair``, ~3 ulp) for
``log M``, and redoes a row with libm when some ``M`` is 0 or subnormal.

Pass structure, per row (a 32000-class float32 row pair is 256 KB, in L2 between
passes): pass 1: both maxima; pass 2: both sums of exponentials and the loss
accumulator (KL); pass 3: the gradient write (recomputes the exponentials).  The
JSD has one more pass (the loss needs ``log M`` once the sums are known).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from ._parallel import over_rows
from .exp import FASTMATH_NO_FMA, exp_
from .logsum import _log_sum_pair
from .view import row

# never nnan / ninf (masked entries are -inf; NaN must propagate); no "contract"
# (the max and each difference must be formed the same way, see _kernels/losses/)
_FM = FASTMATH_NO_FMA

FORWARD = 0
REVERSE = 1
JSD = 2


@njit(cache=True, nogil=True, fastmath=_FM)
def _max2(a, b):
    ma = -np.inf
    mb = -np.inf
    for j in range(a.shape[0]):
        ma = max(ma, a[j])
        mb = max(mb, b[j])
    return np.float64(ma), np.float64(mb)


@njit(cache=True, nogil=True, fastmath=_FM)
def _sums_kl(a, b, ma, mb, invT):
    """(sum e^da, sum e^db, sum e^db (db - da)): ``b`` is the weighting model."""
    t = a.dtype.type(invT)
    ma_ = a.dtype.type(ma)
    mb_ = a.dtype.type(mb)
    sa = 0.0
    sb = 0.0
    acc = 0.0
    zero = a.dtype.type(0.0)
    inf = a.dtype.type(np.inf)
    ninf = a.dtype.type(-np.inf)
    for j in range(a.shape[0]):
        da = (a[j] - ma_) * t
        db = (b[j] - mb_) * t
        ea = exp_(da)
        eb = exp_(db)
        sa += ea
        sb += eb
        # select: a zero weight adds exactly 0 (db - da may be -inf - -inf = NaN),
        # unless it is a positive probability that underflowed (db finite: exp_ of
        # float32 flushes below FLT_MIN) against a -inf: that term is +inf, as in
        # exact arithmetic (guarded by test_underflowed_weight_against_minus_inf)
        acc += eb * (db - da) if eb != zero else (inf if (db != ninf and da == ninf) else zero)
    return sa, sb, acc


@njit(cache=True, nogil=True, fastmath=_FM)
def _grad_forward(xs, xt, ms, mt, invT, cs, ct, gr):
    # g = cs e^ds - ct e^dt with cs = c / ss, ct = c / st
    t = xs.dtype.type(invT)
    ms_ = xs.dtype.type(ms)
    mt_ = xs.dtype.type(mt)
    for j in range(xs.shape[0]):
        es = exp_((xs[j] - ms_) * t)
        et = exp_((xt[j] - mt_) * t)
        gr[j] = es * cs - et * ct


@njit(cache=True, nogil=True, fastmath=_FM)
def _grad_reverse(xs, xt, ms, mt, invT, c, inv_ss, off, gr):
    # g = c p_s (ds - dt - off), off = log ss - log st + KL; p_s = 0 gives 0
    t = xs.dtype.type(invT)
    ms_ = xs.dtype.type(ms)
    mt_ = xs.dtype.type(mt)
    for j in range(xs.shape[0]):
        ds = (xs[j] - ms_) * t
        dt = (xt[j] - mt_) * t
        es = exp_(ds)
        v = c * inv_ss * es * ((np.float64(ds) - np.float64(dt)) - off)
        gr[j] = v if es != 0 else 0.0


@njit(cache=True, nogil=True, fastmath=_FM)
def _jsd_row_fast(xs, xt, ms, mt, invT, beta, lss, lst, want_grad, gr):
    """Vectorised JSD row: float64 ``exp_`` and the vectorised ``log(a + b)`` of
    ``_kernels/exp.py`` for ``log M``.  Returns (loss, KL(p_s || M), bad) with ``bad``
    the number of entries whose ``M`` is not a positive normal number (0 where both
    probabilities underflow, or subnormal): the caller then redoes the row with the
    scalar libm loop."""
    loss = 0.0
    kqm = 0.0
    bad = 0
    b1 = 1.0 - beta
    for j in range(xs.shape[0]):
        ls = (np.float64(xs[j]) - ms) * invT - lss
        lt = (np.float64(xt[j]) - mt) * invT - lst
        ps = exp_(ls)
        pt = exp_(lt)
        a = beta * pt
        b = b1 * ps
        u = a + b
        bad += 0 if (u >= 2.2250738585072014e-308) else 1
        lm = _log_sum_pair(a, b)
        loss += a * (lt - lm) if pt > 0.0 else 0.0
        v = ls - lm
        t = ps * v if ps > 0.0 else 0.0
        kqm += t
        if want_grad:
            gr[j] = v if ps > 0.0 else 0.0
    return loss + b1 * kqm, kqm, bad


@njit(cache=True, nogil=True)
def _jsd_row_exact(xs, xt, ms, mt, invT, beta, lss, lst, want_grad, gr):
    """Scalar libm loop (rows with a zero or subnormal ``M``)."""
    loss = 0.0
    kqm = 0.0
    for j in range(xs.shape[0]):
        ls = (np.float64(xs[j]) - ms) * invT - lss
        lt = (np.float64(xt[j]) - mt) * invT - lst
        ps = math.exp(ls)
        pt = math.exp(lt)
        mm = beta * pt + (1.0 - beta) * ps
        if mm == 0.0:
            if want_grad:
                gr[j] = 0.0
            continue
        lm = math.log(mm)
        if pt > 0.0:
            loss += beta * pt * (lt - lm)
        if ps > 0.0:
            u = ls - lm
            loss += (1.0 - beta) * ps * u
            kqm += ps * u
            if want_grad:
                gr[j] = u
        elif want_grad:
            gr[j] = 0.0
    return loss, kqm


@njit(cache=True, nogil=True, fastmath=_FM)
def _jsd_grad(xs, ms, invT, lss, cc, kqm, gr):
    # gr holds log p_s - log M (0 where p_s = 0): g = cc p_s (gr - KL(p_s || M))
    for j in range(xs.shape[0]):
        ps = exp_((np.float64(xs[j]) - ms) * invT - lss)
        gr[j] = cc * ps * (gr[j] - kqm) if ps > 0.0 else 0.0


@njit(cache=True, nogil=True)
def _jsd_row(xs, xt, ms, mt, invT, beta, ss, st, c, want_grad, gr):
    """Loss of one JSD row; with ``want_grad`` writes ``c * dL/dxs`` into ``gr``
    (``gr`` must not be ``xs``: the student row is read again after ``gr`` is written)."""
    lss = math.log(ss)
    lst = math.log(st)
    loss, kqm, bad = _jsd_row_fast(xs, xt, ms, mt, invT, beta, lss, lst, want_grad, gr)
    if bad:
        loss, kqm = _jsd_row_exact(xs, xt, ms, mt, invT, beta, lss, lst, want_grad, gr)
    if want_grad:
        _jsd_grad(xs, ms, invT, lss, c * (1.0 - beta), kqm, gr)
    return loss


@over_rows(cost=10)
@njit(cache=True, nogil=True)
def distill_rows(xs, xt, invT, mode, beta, scale, active, want_grad, grad, loss, r0, r1):
    """Per-row distillation loss ``loss[i]`` (float64) and, with ``want_grad``,
    ``grad[i] = scale[i] * dL_i/dxs[i]`` (see the module docstring).  ``mode``:
    ``FORWARD``, ``REVERSE`` or ``JSD`` (``beta`` in (0, 1)).  Inactive rows: loss 0,
    gradient 0.  ``invT`` is a normal number of the row dtype."""
    n = xs.shape[1]
    for i in range(r0, r1):
        if not active[i]:
            loss[i] = 0.0
            if want_grad:
                for j in range(n):
                    grad[i, j] = 0.0
            continue
        a = row(xs, i)
        b = row(xt, i)
        ms, mt = _max2(a, b)
        c = scale[i] * invT
        if not (math.isfinite(ms) and math.isfinite(mt)):
            # one side empty (all -inf) or a +inf logit: the distribution is undefined
            loss[i] = np.nan
            if want_grad:
                for j in range(n):
                    grad[i, j] = np.nan
            continue
        if mode == JSD:
            ss, st, _ = _sums_kl(a, b, ms, mt, invT)
            if not (math.isfinite(ss) and math.isfinite(st)):  # a NaN in the row
                loss[i] = np.nan
                if want_grad:
                    for j in range(n):
                        grad[i, j] = np.nan
                continue
            gr = row(grad, i)
            loss[i] = _jsd_row(a, b, ms, mt, invT, beta, ss, st, c, want_grad, gr)
            continue
        if mode == FORWARD:
            ss, st, acc = _sums_kl(a, b, ms, mt, invT)
            li = acc / st - math.log(st) + math.log(ss)
        else:
            st, ss, acc = _sums_kl(b, a, mt, ms, invT)
            li = acc / ss - math.log(ss) + math.log(st)
        loss[i] = li
        if want_grad:
            gr = row(grad, i)
            if mode == FORWARD:
                _grad_forward(a, b, ms, mt, invT, c / ss, c / st, gr)
            else:
                off = math.log(ss) - math.log(st) + li
                _grad_reverse(a, b, ms, mt, invT, c, 1.0 / ss, off, gr)
