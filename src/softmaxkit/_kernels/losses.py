"""Fused loss + gradient row kernels (Numba): cross-entropy and linear cross-entropy.

Kernels see 2-D C-contiguous rows ``x[R, C]`` (the class axis last).  ``mask`` has
the same shape but may be a broadcast view; callers without a mask pass a
broadcast ``True`` and ``has_mask=False``.  No user-facing errors are raised here:
the public layer (``softmaxkit.losses``) has validated targets and options.

Per-row outputs shared by every cross-entropy kernel:

* ``lse[i]``: logsumexp of the included ``v = x / T`` (float64);
* ``ce[i]``: the *unweighted* smoothed cross-entropy ``H(q_i, p_i)`` for index
  targets, or the class-weighted ``sum_c w_c q_c (lse - v_c)`` for probability
  targets (float64);
* ``grad[i, :]`` (when ``want_grad``) ``= invT * (a_i (W_i p - w*q) + b_i 2 z lse_i p)``
  where ``a_i`` and ``b_i`` are the per-row scales of the cross-entropy and
  z-loss parts chosen by the caller for the reduction.

Accumulators: float64 for every input dtype.  Exponentials: on the fast path of
float32 rows (no mask, every value finite) the vectorised float32 ``exp_`` of
``_kernels/exp.py`` (1 ulp; the same exp as the dense kernels, guarded by
``tests/test_kernels.py::test_exp32_exhaustive`` and, as used here,
``tests/test_losses.py::test_fast_exp_accuracy``); otherwise ``math.exp`` in float64.
The argument ``x / T - m`` is a plain float32 value here (the dense kernels carry it
exactly).  fastmath never includes ``nnan``/``ninf``.

Pass structure of the fused cross-entropy kernels, per row (a 32000-class float32
row is 128 KB and stays in L2 between passes, so memory traffic is one read of
the logits and one write of the gradient):

* pass 1: raw max ``m``, min and the plain sum of the row (a non-finite sum, or a
  range / ``|x|/T`` that could overflow a difference or a sum (``LIM32``/``LIM64``),
  sends the row to the exact scalar path, which handles NaN / +-inf per the dense
  contract); the differences are ``(x - m) / T``, exactly 0 at the max;
* pass 2: ``s = sum exp(v - m)`` and ``sum (v - m)`` (label smoothing); when a
  gradient is wanted the exponentials are stored in ``grad`` (so ``out=logits``
  works: the logits of the row are no longer needed after this pass);
* pass 3: scale the stored exponentials into the gradient in place.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, types
from numba.extending import overload

from ._parallel import over_rows
from .exp import exp_, fmax
from .view import row

# never nnan / ninf.  No "contract" in the cross-entropy kernels: a row's max and
# each difference must be formed the same way, or FMA contraction of ``x * invT - m``
# makes the max's own difference the product's rounding error (not 0) and exp
# overflows at extreme temperatures (issue 18 item 2; guarded by
# tests/test_loss_extremes.py).  The differences are ``(x - max x) * invT``, as in the
# dense kernels: exactly 0 at the max whatever LLVM does with them.
_FM = {"nsz", "arcp", "afn", "reassoc"}
_FMC = _FM | {"contract"}  # VJP and hinge kernels: no max/difference pairing there

# Fast-path bound on |x - max| / T (and on max / T, min / T): below it no difference,
# no scaled value and no sum of differences can overflow (float32 differences are
# formed in float32; every sum is float64).  Rows beyond it take the exact path.
LIM32 = 1e37
LIM64 = 1e300
# lce_state_update keeps sum (v - m) times SD_SCALE: differences near -1.8e308
# (finfo.min used as a mask) would overflow the plain sum of a few of them
SD_SCALE = 2.0**-60


@njit(cache=True, nogil=True)
def row_nonempty(x, mask, has_mask, out):
    """out[i] = True when row i has an included entry that is not -inf (NaN counts).

    Scans each row only until the first such entry: O(R) for ordinary rows.
    """
    for i in range(x.shape[0]):
        found = False
        for j in range(x.shape[1]):
            if has_mask and not mask[i, j]:
                continue
            if not (x[i, j] == -np.inf):
                found = True
                break
        out[i] = found


# ---------------------------------------------------------------------------
# Fast path: no mask, finite row.  Separate float32 / float64 row helpers.
# ---------------------------------------------------------------------------


@njit(cache=True, nogil=True, fastmath=_FM)
def _max_min_sum_row(xr):
    # raw max and min of the row (not scaled: the differences are (x - max) / T) and
    # the plain sum (not finite: a NaN / inf somewhere, or a huge row)
    m = -np.inf
    mn = np.inf
    tot = 0.0
    for j in range(xr.shape[0]):
        v = xr[j]
        m = max(m, v)
        mn = min(mn, v)
        tot += v
    return np.float64(m), np.float64(mn), tot


@njit(cache=True, nogil=True)
def _fast_ok(m, mn, tot, invT, n, lim):
    """True when the row's fast path cannot overflow (see ``LIM32``/``LIM64``)."""
    if not (math.isfinite(tot) and math.isfinite(m) and math.isfinite(mn)):
        return False
    rng = m - mn
    big = max(abs(m), abs(mn))
    return rng < lim and rng * invT * n < lim and big * invT < lim


@njit(cache=True, nogil=True, fastmath=_FM)
def _sum_exp_f32(xr, invT, m, gr, store):
    """(sum exp(v - m), sum (v - m)) over a float32 row; stores exp in gr if ``store``."""
    t32 = np.float32(invT)
    m32 = np.float32(m)
    s = 0.0
    sd = 0.0
    if t32 == np.float32(1.0):
        if store:
            for j in range(xr.shape[0]):
                d = xr[j] - m32
                e = exp_(d)
                gr[j] = e
                s += e
                sd += d
        else:
            for j in range(xr.shape[0]):
                d = xr[j] - m32
                s += exp_(d)
                sd += d
        return s, sd
    # T != 1: d = (x - m) / T with two float32 roundings (|d| 1.2e-7 relative; the
    # exactly carried argument of the dense kernels' expd cost 12% here, measured)
    if store:
        for j in range(xr.shape[0]):
            d = (xr[j] - m32) * t32
            e = exp_(d)
            gr[j] = e
            s += e
            sd += d
    else:
        for j in range(xr.shape[0]):
            d = (xr[j] - m32) * t32
            s += exp_(d)
            sd += d
    return s, sd


@njit(cache=True, nogil=True, fastmath=_FM)
def _sum_exp_inplace_f32(gr, invT, m):
    """As ``_sum_exp_f32`` with the row overwritten by its exponentials.

    One array only: with two arguments that alias (``out=logits``), LLVM's runtime
    overlap check fails and the loop runs scalar (measured 5-10x slower).
    """
    t32 = np.float32(invT)
    m32 = np.float32(m)
    s = 0.0
    sd = 0.0
    if t32 == np.float32(1.0):
        for j in range(gr.shape[0]):
            d = gr[j] - m32
            e = exp_(d)
            gr[j] = e
            s += e
            sd += d
        return s, sd
    for j in range(gr.shape[0]):
        d = (gr[j] - m32) * t32
        e = exp_(d)
        gr[j] = e
        s += e
        sd += d
    return s, sd


@njit(cache=True, nogil=True, fastmath=_FM)
def _sum_exp_inplace_f64(gr, invT, m):
    s = 0.0
    sd = 0.0
    for j in range(gr.shape[0]):
        d = (gr[j] - m) * invT
        e = math.exp(d)
        gr[j] = e
        s += e
        sd += d
    return s, sd


def _sum_exp_inplace(gr, invT, m):
    """Dispatch on the row dtype."""


@overload(_sum_exp_inplace, jit_options={"fastmath": _FM})
def _sum_exp_inplace_impl(gr, invT, m):
    if gr.dtype == types.float32:
        return lambda gr, invT, m: _sum_exp_inplace_f32(gr, invT, m)
    return lambda gr, invT, m: _sum_exp_inplace_f64(gr, invT, m)


@njit(cache=True, nogil=True, fastmath=_FM)
def _sum_exp_f64(xr, invT, m, gr, store):
    s = 0.0
    sd = 0.0
    for j in range(xr.shape[0]):
        d = (xr[j] - m) * invT
        e = math.exp(d)
        if store:
            gr[j] = e
        s += e
        sd += d
    return s, sd


def _sum_exp(xr, invT, m, gr, store):
    """Dispatch on the row dtype (float32: the vectorised ``exp_``; else ``math.exp``)."""


@overload(_sum_exp, jit_options={"fastmath": _FM})
def _sum_exp_impl(xr, invT, m, gr, store):
    if xr.dtype == types.float32:
        return lambda xr, invT, m, gr, store: _sum_exp_f32(xr, invT, m, gr, store)
    return lambda xr, invT, m, gr, store: _sum_exp_f64(xr, invT, m, gr, store)


@njit(cache=True, nogil=True, fastmath=_FM)
def _scale_shift_row(gr, c, off):
    """gr = gr * c - off, in the row's dtype (in float64 when c or off does not fit
    it: float32 at T = 1e-30 with a z-loss, where 0 * inf would give NaN)."""
    cc = gr.dtype.type(c)
    oo = gr.dtype.type(off)
    if math.isfinite(cc) and math.isfinite(oo):
        for j in range(gr.shape[0]):
            gr[j] = gr[j] * cc - oo
    else:
        for j in range(gr.shape[0]):
            gr[j] = np.float64(gr[j]) * c - off


# ---------------------------------------------------------------------------
# Exact scalar path for one row (mask, -inf, +inf, NaN), index targets.
# ---------------------------------------------------------------------------


@njit(cache=True, nogil=True)
def _index_row_general(x, mask, has_mask, i, t, invT, eps, z, a, b, want_grad, grad):
    """Returns (ce, lse) of row i and writes its gradient (exact scalar code)."""
    n = x.shape[1]
    m = -np.inf
    nan = False
    ninf = 0  # number of included +inf entries
    cnt = 0
    for j in range(n):
        if has_mask and not mask[i, j]:
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
    t_in = (not has_mask) or mask[i, t]
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
                inc = (not has_mask) or mask[i, j]
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
        if has_mask and not mask[i, j]:
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
            if has_mask and not mask[i, j]:
                grad[i, j] = 0.0
                continue
            p = math.exp(x[i, j] * invT - m) * inv_s
            q = eps / cnt + ((1.0 - eps) if j == t else 0.0)
            grad[i, j] = invT * (a * (p - q) + b * 2.0 * z * lse * p)
    return ce, lse


# no fastmath on this dispatcher: the exact row path (_index_row_general) must not be
# reassociated ((v/2 - m/2) -> (v - m)/2 overflows; the fast helpers carry their own)
@over_rows(cost=8)
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
            ce[i] = 0.0
            lse[i] = -np.inf
            if want_grad:
                for j in range(n):
                    grad[i, j] = 0.0
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


@over_rows(cost=8)
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
            ce[i] = 0.0
            lse[i] = -np.inf
            if want_grad:
                for j in range(n):
                    grad[i, j] = 0.0
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
        m = -np.inf
        nan = False
        ninf = 0
        cnt = 0
        for j in range(n):
            if has_mask and not mask[i, j]:
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
            inc = (not has_mask) or mask[i, j]
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
                inc = (not has_mask) or mask[i, j]
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


# ---------------------------------------------------------------------------
# Linear cross-entropy: chunk kernels (logits chunk [N, c] from a BLAS matmul).
# ---------------------------------------------------------------------------


# no fastmath: reassoc would factor SD_SCALE out of the sum (overflowing it again);
# the chunk's matmul dominates this kernel's time
@over_rows(cost=8)
@njit(cache=True, nogil=True)
def lce_state_update(zc, mask, has_mask, invT, m, s, sd, cnt, tloc, vt, r0, r1):
    """Fold a logits chunk into the per-row online state (m, s) and sum(v - m).

    ``sd`` holds ``sum (v - m)`` relative to the current ``m`` (shifted when m
    grows: ``sd += cnt * (m_old - m_new)``).  Masked entries are skipped;
    ``cnt`` counts included entries.  Non-finite values follow the (m, s) merge
    conventions of ``softmaxkit._core.state`` (NaN wins; +inf rows get m = +inf).
    ``vt[i]`` gets the target's ``v`` where ``tloc[i] >= 0`` (its column in this
    chunk): the same product as the row max's, so ``v_t - m`` is 0 at the argmax.
    """
    c = zc.shape[1]
    for i in range(r0, r1):
        if tloc[i] >= 0:
            vt[i] = zc[i, tloc[i]] * invT
        mi = m[i]
        cmax = -np.inf
        k = 0
        nan = False
        for j in range(c):
            if has_mask and not mask[i, j]:
                continue
            v = zc[i, j] * invT
            k += 1
            if v != v:
                nan = True
            cmax = max(cmax, v)
        if nan or mi != mi:
            m[i] = np.nan
            s[i] = np.nan
            sd[i] = np.nan
            continue
        if k == 0:
            continue
        mn = max(mi, cmax)
        if mn == -np.inf:
            cnt[i] += k
            continue
        if mn == np.inf:
            # +inf rows: s counts the +inf entries (exact merge convention)
            add = 0.0
            for j in range(c):
                if has_mask and not mask[i, j]:
                    continue
                if zc[i, j] * invT == np.inf:
                    add += 1.0
            s[i] = (s[i] if mi == np.inf else 0.0) + add
            sd[i] = -np.inf
            m[i] = np.inf
            cnt[i] += k
            continue
        scale = 1.0 if mi == mn else math.exp(mi - mn)
        acc = 0.0
        accd = 0.0
        for j in range(c):
            if has_mask and not mask[i, j]:
                continue
            d = zc[i, j] * invT - mn
            acc += math.exp(d)
            accd += d * SD_SCALE
        if cnt[i] > 0 and mi != mn:
            sd[i] += cnt[i] * ((mi - mn) * SD_SCALE)
        s[i] = s[i] * scale + acc
        sd[i] += accd
        cnt[i] += k
        m[i] = mn


@over_rows(cost=8)
@njit(cache=True, nogil=True, fastmath=_FM)
def lce_grad_chunk(zc, mask, has_mask, tloc, invT, eps, lse, cnt, a, b, z, active, out, r0, r1):
    """Turn a logits chunk into its gradient in place: ``out = dloss/dlogits``.

    ``tloc[i]`` is the target's column inside this chunk or -1; ``lse`` the final
    per-row logsumexp.  Same formula as ``ce_index_rows``.
    """
    c = zc.shape[1]
    for i in range(r0, r1):
        if not active[i]:
            for j in range(c):
                out[i, j] = 0.0
            continue
        L = lse[i]
        ai = a[i]
        cz = ai + 2.0 * b[i] * z * L
        off = ai * eps / cnt[i] if cnt[i] > 0 else 0.0
        for j in range(c):
            if has_mask and not mask[i, j]:
                out[i, j] = 0.0
                continue
            v = zc[i, j] * invT
            if L == np.inf:
                p = 0.0 if v != np.inf else np.nan  # caller handles +inf rows exactly
            else:
                p = math.exp(v - L)
            out[i, j] = invT * (cz * p - off)
        t = tloc[i]
        if t >= 0:
            out[i, t] -= invT * ai * (1.0 - eps)


# ---------------------------------------------------------------------------
# VJPs of the dense ops, from the forward output y.
# ---------------------------------------------------------------------------


@njit(cache=True, nogil=True, fastmath=_FMC)
def _vjp_reduce(y, g, m, has_mask, log):
    # pass 1 of a row (1-D views): softmax sum_j g_j y_j over included y_j != 0;
    # log_softmax sum_j g_j over included entries, and the count of included
    # y_j != -inf.  Selects, not branches, so the loops vectorise; the mask loops are
    # separate so that the unmasked ones read no mask.
    acc = 0.0
    cnt = 0
    n = y.shape[0]
    if log:
        if has_mask:
            for j in range(n):
                acc += np.float64(g[j]) if m[j] else 0.0
                cnt += 1 if (m[j] and y[j] != -np.inf) else 0
        else:
            for j in range(n):
                acc += np.float64(g[j])
                cnt += 1 if y[j] != -np.inf else 0
    elif has_mask:
        for j in range(n):
            yj = y[j]
            acc += np.float64(g[j]) * yj if (m[j] and yj != 0) else 0.0
    else:
        for j in range(n):
            yj = y[j]
            acc += np.float64(g[j]) * yj if yj != 0 else 0.0
    return acc, cnt


@njit(cache=True, nogil=True, fastmath=_FMC)
def _vjp_write(y, g, m, has_mask, log, acc, invT, out):
    # pass 2 of a row: the gradient, 0 on masked entries (and, for softmax, where
    # y == 0, so an inf g there gives 0, not NaN)
    n = y.shape[0]
    if log:
        if has_mask:
            for j in range(n):
                v = (g[j] - exp_(y[j]) * acc) * invT
                out[j] = v if m[j] else 0.0
        else:
            for j in range(n):
                out[j] = (g[j] - exp_(y[j]) * acc) * invT
    elif has_mask:
        for j in range(n):
            yj = y[j]
            v = yj * (g[j] - acc) * invT
            out[j] = v if (m[j] and yj != 0) else 0.0
    else:
        for j in range(n):
            yj = y[j]
            v = yj * (g[j] - acc) * invT
            out[j] = v if yj != 0 else 0.0


@over_rows(cost=2)
@njit(cache=True, nogil=True, fastmath=_FMC)
def softmax_vjp_rows(y, g, mask, has_mask, invT, log, out, r0, r1):
    """Row VJP from the forward output ``y`` (float64 row accumulator).

    softmax: ``out = y (g - sum_j g_j y_j) / T``; entries with ``y == 0`` (masked,
    -inf, underflow) get exactly 0, so an empty row gives 0 even where ``g`` is
    inf.  log_softmax: ``out = (g - exp(y) sum_j g_j) / T`` (``exp`` of
    ``_kernels.exp``, 1 ulp); a row whose included ``y`` are all -inf (empty / fully
    masked) gives 0.  Masked entries give 0.  Two passes per row: the reduction,
    then the write (``out`` may be ``y`` or ``g`` itself: entry ``j`` is read before
    it is written).  Rows go to helpers as reference-free views (``view.row``).
    """
    for i in range(r0, r1):
        yr = row(y, i)
        gr = row(g, i)
        mr = row(mask, i)
        orow = row(out, i)
        acc, cnt = _vjp_reduce(yr, gr, mr, has_mask, log)
        if log and cnt == 0:
            orow[:] = 0.0
        else:
            _vjp_write(yr, gr, mr, has_mask, log, acc, invT, orow)


# ---------------------------------------------------------------------------
# Multiclass hinge losses (Weston-Watkins, Crammer-Singer), per row.
# ---------------------------------------------------------------------------


@njit(cache=True, nogil=True, fastmath=_FMC)
def _ww_row(xr, ti, w, mg, p, want_grad, scale, gr):
    # sum_{j != t} max(0, mg - x_t + x_j)^p, times w / C; max keeps NaN (as
    # np.maximum).  Returns (loss, has_nan).  The gradient (when wanted):
    # d_j = p h_j^(p-1) w / C where the violation is > 0, and -sum d at the target.
    C = xr.shape[0]
    xt = np.float64(xr[ti])
    acc = 0.0
    nan = 0
    for j in range(C):
        v = (mg - xt) + xr[j]
        h = 0.0 if v <= 0 else v
        hp = h if p == 1 else h * h
        acc += 0.0 if j == ti else hp
        nan += 1 if xr[j] != xr[j] else 0
    if want_grad:
        f = w / C
        sd = 0.0
        for j in range(C):
            v = (mg - xt) + xr[j]
            d = (1.0 if p == 1 else 2.0 * v) * f
            d = d if (v > 0 and j != ti) else 0.0
            sd += d
            gr[j] = d * scale
        gr[ti] = -sd * scale
    return w * acc / C, nan


@njit(cache=True, nogil=True, fastmath=_FMC)
def _cs_row(xr, ti, w, mg, p, want_grad, scale, gr):
    # w max(0, mg + max_{j != t} x_j - x_t)^p; the first maximising j gets the
    # gradient p h^(p-1) w, the target minus it.  Returns (loss, has_nan).
    C = xr.shape[0]
    xt = np.float64(xr[ti])
    best = -np.inf
    nan = 0
    for j in range(C):  # vectorised: max over j != t (maxnum skips NaN), NaN count
        v = np.float64(xr[j])
        best = fmax(best, -np.inf if j == ti else v)
        nan += 1 if v != v else 0
    js = 0  # the first maximising j (np.argmax's choice; only used when viol > 0)
    if best > -np.inf:
        for j in range(C):
            if j != ti and xr[j] == best:
                js = j
                break
    viol = (mg + best) - xt
    h = 0.0 if viol <= 0 else viol
    loss = w * (h if p == 1 else h * h)
    if want_grad:
        for j in range(C):
            gr[j] = 0.0
        if C > 1 and viol > 0:
            dv = (1.0 if p == 1 else 2.0 * h) * w
            gr[js] += dv * scale
            gr[ti] -= dv * scale
    return loss, nan


@over_rows(cost=2)
@njit(cache=True, nogil=True)
def hinge_rows(x, t, wt, mg, p, crammer_singer, want_grad, scale, per, grad, r0, r1):
    """Multiclass hinge loss per row into ``per`` (float64) and, when wanted, the
    gradient times ``scale`` into ``grad`` (rows C-contiguous, classes last).  A row
    holding a NaN gets NaN loss and gradient.  Float64 arithmetic for every dtype.
    """
    for i in range(r0, r1):
        xr = row(x, i)
        gr = row(grad, i)
        if crammer_singer:
            loss, nan = _cs_row(xr, t[i], wt[i], mg, p, want_grad, scale, gr)
        else:
            loss, nan = _ww_row(xr, t[i], wt[i], mg, p, want_grad, scale, gr)
        per[i] = np.nan if nan else loss
        if nan and want_grad:
            _fill_nan(gr)


@njit(cache=True, nogil=True)
def _fill_nan(gr):
    for j in range(gr.shape[0]):
        gr[j] = np.nan
