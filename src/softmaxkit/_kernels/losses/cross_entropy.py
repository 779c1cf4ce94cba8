"""Fused cross-entropy + gradient rows: class-index targets (``ce_index_rows``: the
fast path of ``fast.py`` or the exact scalar row ``_index_row_general``) and
probability targets (``ce_prob_rows``: three vectorised passes, or an exact scalar
loop).  Pass structure and outputs: see the package docstring.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from .._parallel import over_rows
from ..exp import exp_, fmax
from ..view import mrow, row
from .common import _FM, LIM64, _inactive_row
from .fast import _fast_ok, _max_min_sum_row, _scale_shift_row, _sum_exp, _sum_exp_inplace

# ---------------------------------------------------------------------------
# Exact scalar path for one row (mask, -inf, +inf, NaN), index targets.
# ---------------------------------------------------------------------------


@njit(cache=True, nogil=True)
def _index_row_general(x, mask, has_mask, i, t, invT, eps, z, a, b, want_grad, grad):
    """Returns (ce, lse) of row i and writes its gradient (exact scalar code)."""
    n = x.shape[1]
    mr = mrow(mask, i)  # read only when has_mask (a mask with a unit last stride)
    m = -np.inf
    nan = False
    ninf = 0  # number of included +inf entries
    cnt = 0
    for j in range(n):
        if has_mask and not mr[j]:
            continue
        v = x[i, j] * invT
        cnt += 1
        if v != v:
            nan = True
        elif v > m:
            m = v
        if v == np.inf:
            ninf += 1
    if nan:
        if want_grad:
            for j in range(n):
                grad[i, j] = np.nan
        return np.nan, np.nan
    vt = x[i, t] * invT
    t_in = (not has_mask) or mr[t]
    if ninf > 0:
        # softmax is 1/k on the k +inf entries, 0 elsewhere; lse = +inf
        lk = math.log(ninf)
        ce = 0.0
        if 1.0 - eps > 0:
            ce += (1.0 - eps) * (lk if (t_in and vt == np.inf) else np.inf)
        if eps > 0:
            ce += np.inf if cnt > ninf else eps * lk
        if want_grad:
            for j in range(n):
                inc = (not has_mask) or mr[j]
                if not inc:
                    grad[i, j] = 0.0
                    continue
                p = 1.0 / ninf if x[i, j] * invT == np.inf else 0.0
                q = eps / cnt + ((1.0 - eps) if j == t else 0.0)
                gz = 2.0 * z * np.inf * p if (z > 0 and p > 0) else 0.0
                grad[i, j] = invT * (a * (p - q) + b * gz)
        return ce, np.inf
    s = 0.0
    sdm = 0.0  # mean of (v - m), as sum (v/2 - m/2) (2 / cnt): no overflow of a
    c2 = 2.0 / cnt  # partial sum where the mean itself is finite ([1e308, -1e308, 0])
    for j in range(n):
        if has_mask and not mr[j]:
            continue
        v = x[i, j] * invT
        s += math.exp(v - m)
        sdm += (0.5 * v - 0.5 * m) * c2
    ls = math.log(s)
    lse = m + ls
    ce = 0.0
    if 1.0 - eps > 0:  # (never 0 * inf)
        ce += (1.0 - eps) * ((ls - (vt - m)) if t_in else np.inf)
    if eps > 0:
        ce += eps * (ls - sdm)
    if want_grad:
        inv_s = 1.0 / s
        for j in range(n):
            if has_mask and not mr[j]:
                grad[i, j] = 0.0
                continue
            p = math.exp(x[i, j] * invT - m) * inv_s
            q = eps / cnt + ((1.0 - eps) if j == t else 0.0)
            grad[i, j] = invT * (a * (p - q) + b * 2.0 * z * lse * p)
    return ce, lse


# no fastmath on this dispatcher: the exact row path (_index_row_general) must not be
# reassociated ((v/2 - m/2) -> (v - m)/2 overflows; the fast helpers carry their own)
@over_rows(cost=8, strided=(2,))  # the mask: one compiled variant for every layout
@njit(cache=True, nogil=True)
def ce_index_rows(
    x,
    tgt,
    mask,
    has_mask,
    invT,
    eps,
    z,
    a,
    b,
    active,
    want_grad,
    grad,
    ce,
    lse,
    inplace,
    lim,
    r0,
    r1,
):
    """Fused cross-entropy with class-index targets, per row (see the module docstring).

    ``tgt[i]`` is a valid class index for active rows.  Inactive rows (ignored or
    empty) get ``ce = 0``, ``lse = -inf`` and a zero gradient.  Index targets with
    smoothing ``eps`` use ``q = (1 - eps) onehot(t) + eps / C_i`` with ``C_i`` the
    number of included classes.  ``inplace``: ``grad`` is ``x`` itself
    (``out=logits``); the fast path then reads and writes through one array.
    ``lim``: ``LIM32`` for float32 rows, ``LIM64`` for float64 (the fast-path bound).
    ``invT`` must be a normal number of the row dtype (callers divide ``x / T``
    themselves otherwise, as the dense driver does).
    """
    n = x.shape[1]
    for i in range(r0, r1):
        if not active[i]:
            _inactive_row(i, ce, lse, want_grad, grad)
            continue
        t = tgt[i]
        if has_mask:
            ce[i], lse[i] = _index_row_general(
                x, mask, has_mask, i, t, invT, eps, z, a[i], b[i], want_grad, grad
            )
            continue
        xr = x[i]
        m, mn, tot = _max_min_sum_row(xr)
        if not _fast_ok(m, mn, tot, invT, n, lim):
            ce[i], lse[i] = _index_row_general(
                x, mask, has_mask, i, t, invT, eps, z, a[i], b[i], want_grad, grad
            )
            continue
        # the target's (v_t - max v), formed as the kernels' differences: exactly 0
        # when t is the argmax; read before the row may be overwritten (out=logits)
        dt = (np.float64(xr[t]) - m) * invT
        gr = grad[i]
        if inplace and want_grad:
            s, sd = _sum_exp_inplace(gr, invT, m)
        else:
            s, sd = _sum_exp(xr, invT, m, gr, want_grad)
        ls = math.log(s)
        lrow = m * invT + ls
        lse[i] = lrow
        cei = 0.0
        if eps < 1.0:  # each term only when its weight is not 0 (never 0 * inf)
            cei += (1.0 - eps) * (ls - dt)
        if eps > 0.0:
            cei += eps * (ls - sd / n)
        ce[i] = cei
        if want_grad:
            # grad_j = invT (c p_j - a q_j), c = a + 2 b z lse, p_j = e_j / s
            c = a[i] + 2.0 * b[i] * z * lrow
            _scale_shift_row(gr, invT * c / s, invT * a[i] * eps / n)
            gr[t] -= invT * a[i] * (1.0 - eps)


# ---------------------------------------------------------------------------
# Probability targets (exact scalar code, float64 accumulation).
# ---------------------------------------------------------------------------


@njit(cache=True, nogil=True, fastmath=_FM)
def _prob_scan(xr, yr):
    # fast-path pass 1 of a probability-target row: raw max and min of x, and the
    # plain sums of x and y (finite sums mean no NaN / inf anywhere in the row)
    m = -np.inf
    mn = np.inf
    sv = 0.0
    sy = 0.0
    for j in range(xr.shape[0]):
        v = np.float64(xr[j])
        m = fmax(m, v)
        mn = min(mn, v)
        sv += v
        sy += yr[j]
    return m, mn, sv, sy


@njit(cache=True, nogil=True, fastmath=_FM)
def _prob_sums(xr, yr, cw, has_w, invT, m, c1, c0):
    # fast-path pass 2: s = sum e^(v - m), wq = sum w q, acc = sum w q (v - m), with
    # q = c1 y + c0 (every v finite, so a q == 0 term adds exactly 0, as on the
    # exact path)
    s = 0.0
    wq = 0.0
    acc = 0.0
    n = xr.shape[0]
    if has_w:
        for j in range(n):
            d = (xr[j] - m) * invT
            t = cw[j] * (c1 * yr[j] + c0)
            s += exp_(d)
            wq += t
            acc += t * d
    else:
        for j in range(n):
            d = (xr[j] - m) * invT
            t = c1 * yr[j] + c0
            s += exp_(d)
            wq += t
            acc += t * d
    return s, wq, acc


@njit(cache=True, nogil=True, fastmath=_FM)
def _prob_grad(xr, yr, cw, has_w, invT, m, c1, c0, inv_s, wq, ai, gz, gr):
    # fast-path pass 3: invT (a (wq p - w q) + gz p), p = e^(v - m) / s,
    # gz = b 2 z lse (the z-loss part)
    n = xr.shape[0]
    if has_w:
        for j in range(n):
            p = exp_((xr[j] - m) * invT) * inv_s
            gr[j] = invT * (ai * (wq * p - cw[j] * (c1 * yr[j] + c0)) + gz * p)
    else:
        for j in range(n):
            p = exp_((xr[j] - m) * invT) * inv_s
            gr[j] = invT * (ai * (wq * p - (c1 * yr[j] + c0)) + gz * p)


@over_rows(cost=8, strided=(4,))
@njit(cache=True, nogil=True)
def ce_prob_rows(
    x, y, cw, has_w, mask, has_mask, invT, eps, z, a, b, active, want_grad, grad, ce, lse, r0, r1
):
    """Fused cross-entropy with probability targets ``y`` (same shape as ``x``).

    ``q = (1 - eps) y + eps / C_i`` on included classes; terms with ``q == 0`` are
    0 even where ``log p = -inf``.  ``ce = sum_c w_c q_c (lse - v_c)``; the gradient
    of the cross-entropy part is ``(sum_c w_c q_c) p - w * q``.

    Rows without a mask whose logits and targets are all finite take a fast path of
    three vectorised helper passes (max and sums; sum of exponentials and of the
    weighted targets; the gradient) on reference-free row views, with the float64
    ``exp`` of ``_kernels.exp`` (1 ulp).  Other rows take the exact scalar loop below.
    """
    n = x.shape[1]
    for i in range(r0, r1):
        if not active[i]:
            _inactive_row(i, ce, lse, want_grad, grad)
            continue
        if not has_mask:
            xr = row(x, i)
            yr = row(y, i)
            m, mn, sv, sy = _prob_scan(xr, yr)
            if math.isfinite(sy) and _fast_ok(m, mn, sv, invT, n, LIM64):
                c1 = 1.0 - eps
                c0 = eps / n
                s, wq, acc = _prob_sums(xr, yr, cw, has_w, invT, m, c1, c0)
                ls = math.log(s)
                lrow = m * invT + ls
                ce[i] = wq * ls - acc
                lse[i] = lrow
                if want_grad:
                    gr = row(grad, i)
                    gz = b[i] * 2.0 * z * lrow
                    _prob_grad(xr, yr, cw, has_w, invT, m, c1, c0, 1.0 / s, wq, a[i], gz, gr)
                continue
        mr = mrow(mask, i)  # read only when has_mask (a mask with a unit last stride)
        m = -np.inf
        nan = False
        ninf = 0
        cnt = 0
        for j in range(n):
            if has_mask and not mr[j]:
                continue
            v = x[i, j] * invT
            cnt += 1
            if v != v or y[i, j] != y[i, j]:
                nan = True
            elif v > m:
                m = v
            if v == np.inf:
                ninf += 1
        if nan:
            ce[i] = np.nan
            lse[i] = np.nan
            if want_grad:
                for j in range(n):
                    grad[i, j] = np.nan
            continue
        s = 0.0
        wq = 0.0
        acc = 0.0  # sum w q (v/2 - m/2) over q != 0 (halves: no overflow of v - m)
        bad = False  # q > 0 on a class with p == 0 (masked, or -inf while finite max)
        for j in range(n):
            w = cw[j] if has_w else 1.0
            inc = (not has_mask) or mr[j]
            q = ((1.0 - eps) * y[i, j] + eps / cnt) if inc else (1.0 - eps) * y[i, j]
            if q == 0:
                if inc and ninf == 0:
                    s += math.exp(x[i, j] * invT - m)
                continue
            # target mass on a masked class counts as on a -inf logit: it is in
            # sum w q (so the gradient is (sum w q) p - w q, the reference's) and the
            # loss is +inf (issue 18 item 4; tests/test_loss_extremes.py)
            wq += w * q
            if not inc:
                bad = True
                continue
            v = x[i, j] * invT
            if ninf > 0:
                if v != np.inf:
                    bad = True
                continue
            s += math.exp(v - m)
            if v == -np.inf:
                bad = True
            else:
                acc += w * q * (0.5 * v - 0.5 * m)
        if ninf > 0:
            lrow = np.inf
            ls = math.log(ninf)  # -log p on the +inf entries
            ce[i] = np.inf if bad else wq * ls
        else:
            ls = math.log(s)
            lrow = m + ls
            ce[i] = np.inf if bad else wq * ls - acc * 2.0
        lse[i] = lrow
        if want_grad:
            for j in range(n):
                inc = (not has_mask) or mr[j]
                if not inc:
                    grad[i, j] = 0.0
                    continue
                w = cw[j] if has_w else 1.0
                q = (1.0 - eps) * y[i, j] + eps / cnt
                v = x[i, j] * invT
                if ninf > 0:
                    p = 1.0 / ninf if v == np.inf else 0.0
                    gz = 2.0 * z * np.inf * p if (z > 0 and p > 0) else 0.0
                else:
                    p = math.exp(v - m) / s
                    gz = 2.0 * z * lrow * p
                grad[i, j] = invT * (a[i] * (wq * p - w * q) + b[i] * gz)
