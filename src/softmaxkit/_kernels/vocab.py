"""Per-token vocabulary outputs in one pass (Numba): lse, entropy, target log-prob,
argmax, top-K, the cross-entropy, and the fused gradient of a weighted sum of them.

Kernels see 2-D C-contiguous rows ``x[R, V]`` (vocabulary last); ``mask`` has the
same shape and a unit last stride (read through ``view.mrow``), or is a broadcast
``True`` with ``has_mask=False`` (never read); it reaches ``vocab_rows`` typed as a
strided array whatever its layout (``over_rows(strided=)``).  No user-facing
errors here (``softmaxkit._vocab`` validates).

Per row ``i`` the transformed logits are ``v_j = c tanh(x_j / c) / T_i`` (softcap
``c > 0``; ``c = 0`` means none), formed in float64.  Accumulators: float64.

Pass structure, per row: the row is read once in tiles of ``_TILE`` values held in
a small float64 buffer.  Per tile: the tile max (NaN and +inf detected), argmax and
top-K insertion into a sorted buffer of ``k`` keys (only when the tile max beats the
k-th key, as ``online.topk_rows``); then the online state ``(m, s, E)`` with
``s = sum exp(v - m)`` and ``E = sum exp(v - m) (v - m)``, rescaled when ``m``
grows from ``m`` to ``m'`` by ``s <- s e^{m - m'}``,
``E <- e^{m - m'} (E + s (m - m'))``.  Then ``lse = m + log s`` and the entropy
``H = log s - E / s``.  With a gradient, a second sweep over the same row (in cache
for ordinary vocabularies) writes it (in place when ``grad`` is ``x``).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from ._parallel import over_rows
from .exp import FASTMATH, exp_
from .topk import gt as topk_gt
from .topk import insert as topk_insert
from .view import mrow

# never nnan / ninf: -inf and NaN are data here
_FM = FASTMATH
_TILE = 512

# columns of the float64 per-row output ``st``
LSE, ENT, LP, CE, NINF, CNT = 0, 1, 2, 3, 4, 5
NST = 6


@njit(cache=True, nogil=True, inline="always")
def _tv(x, cap, T):
    """The transformed logit ``c tanh(x / c) / T`` (``c = 0``: ``x / T``), float64."""
    y = np.float64(x)
    if cap > 0.0:
        y = cap * math.tanh(y / cap)
    return y / T


@njit(cache=True, nogil=True, fastmath=_FM)
def _tile_sums(vt, tn, m, want_sd):
    """(sum e, sum e d, sum d) over the tile, d = v - m, e = exp(d); -inf terms 0."""
    s = 0.0
    e_acc = 0.0
    sd = 0.0
    for j in range(tn):
        d = vt[j] - m
        e = exp_(d)
        s += e
        # e d is 0 * -inf = NaN for -inf entries: their term is 0
        e_acc += e * d if e != 0.0 else 0.0
    if want_sd:
        for j in range(tn):
            sd += vt[j] - m
    return s, e_acc, sd


@njit(cache=True, nogil=True, fastmath=_FM)
def _fill_tile(xs, vt, cap, T):
    """vt[:n] = c tanh(xs / c) / T (float64); returns (sum, max) of the tile."""
    tot = 0.0
    mx = -np.inf
    if cap > 0.0:
        for j in range(xs.shape[0]):
            vt[j] = cap * math.tanh(np.float64(xs[j]) / cap) / T
    elif T == 1.0:
        for j in range(xs.shape[0]):
            vt[j] = np.float64(xs[j])
    else:
        for j in range(xs.shape[0]):
            vt[j] = np.float64(xs[j]) / T
    for j in range(xs.shape[0]):
        tot += vt[j]
        mx = max(mx, vt[j])
    return tot, mx


@njit(cache=True, nogil=True, fastmath=_FM)
def _grad_fast(xr, gr, T, cap, lse, H, c1, q, be, al):
    """The gradient of a row without mask and +inf entries (see ``vocab_rows``)."""
    ca = c1 - al
    for j in range(xr.shape[0]):
        xj = np.float64(xr[j])
        v = cap * math.tanh(xj / cap) / T if cap > 0.0 else xj / T
        lp = v - lse
        p = exp_(lp)
        hp = p * (lp + H) if p != 0.0 else 0.0  # (0 * -inf for -inf entries)
        g = (ca * p - q - be * hp) / T
        if cap > 0.0:
            th = math.tanh(xj / cap)
            g *= 1.0 - th * th
        gr[j] = g


@njit(cache=True, nogil=True, fastmath=_FM)
def _grad_fast_inplace(gr, T, cap, lse, H, c1, q, be, al):
    """``_grad_fast`` with the row overwritten (one array: no aliasing check)."""
    ca = c1 - al
    for j in range(gr.shape[0]):
        xj = np.float64(gr[j])
        v = cap * math.tanh(xj / cap) / T if cap > 0.0 else xj / T
        lp = v - lse
        p = exp_(lp)
        hp = p * (lp + H) if p != 0.0 else 0.0
        g = (ca * p - q - be * hp) / T
        if cap > 0.0:
            th = math.tanh(xj / cap)
            g *= 1.0 - th * th
        gr[j] = g


@njit(cache=True, nogil=True)
def _fold_row(x, mask, has_mask, i, T, cap, k, bufv, bufi, vt, incl, want_sd):
    """One read of row i: returns (m, s, E, sd, cnt, ninf, nan, amax) and fills the
    top-k buffers ``bufv``/``bufi`` (sorted, keys ``v``; masked entries rank -inf)."""
    n = x.shape[1]
    mr = mrow(mask, i)  # read only when has_mask (a mask with a unit last stride)
    m = -np.inf
    s = 0.0
    E = 0.0
    sd = 0.0  # sum (v - m) over included entries, relative to the current m
    cnt = 0
    ninf = 0
    nan = False
    am = -1
    amv = -np.inf
    kc = 0
    for t0 in range(0, n, _TILE):
        tn = min(_TILE, n - t0)
        tmax = -np.inf
        tnan = False
        tcnt = 0
        clean = False
        if not has_mask:
            # fast tile: vectorised transform, sum and max; a finite sum means no
            # NaN / inf in the tile (else the exact per-entry scan below redoes it;
            # test_grad_fast_and_exact_paths_agree compares the two paths)
            tsum, tmax = _fill_tile(x[i, t0 : t0 + tn], vt, cap, T)
            clean = math.isfinite(tsum)
            if clean:
                tcnt = tn
                if am < 0 or tmax > amv:
                    for j in range(tn):
                        if vt[j] == tmax:
                            am = t0 + j
                            amv = tmax
                            break
            else:
                tmax = -np.inf
        if not clean:
            for j in range(tn):
                inc = (not has_mask) or mr[t0 + j]
                incl[j] = inc
                if inc:
                    v = _tv(x[i, t0 + j], cap, T)
                    tcnt += 1
                    if am < 0 or topk_gt(v, amv):
                        am = t0 + j
                        amv = v
                    if v != v:
                        tnan = True
                    elif v > tmax:
                        tmax = v
                    if v == np.inf:
                        ninf += 1
                else:
                    v = -np.inf
                vt[j] = v
        if k > 0 and (tnan or kc < k or tmax > bufv[k - 1]):
            for j in range(tn):
                # tested here too: the call happens only on an insertion (see online.py)
                if kc < k or topk_gt(vt[j], bufv[k - 1]):
                    kc = topk_insert(bufv, bufi, kc, k, vt[j], t0 + j)
        nan |= tnan
        if nan or tcnt == 0:
            cnt += tcnt
            continue
        if tmax == np.inf or m == np.inf:
            m = np.inf  # +inf rows are finished from ninf
            cnt += tcnt
            continue
        if tmax == -np.inf and m == -np.inf:
            if want_sd:
                sd = -np.inf
            cnt += tcnt
            continue
        if tmax > m:
            if m == -np.inf:
                sd = sd if cnt == 0 else -np.inf
            else:
                # E = sum e^{v - m}(v - m) moved to the new max: each term gains
                # the factor e^{dm} and its (v - m) the shift dm, i.e. s dm in all
                # (tests/test_vocab_outputs.py::test_entropy_rescale_rule_long_rows)
                dm = m - tmax
                sc = math.exp(dm)
                E = sc * (E + s * dm)
                s *= sc
                sd += cnt * dm
            m = tmax
        if has_mask:
            # masked slots hold -inf: compact the included ones for the sums
            w = 0
            for j in range(tn):
                if incl[j]:
                    vt[w] = vt[j]
                    w += 1
            ts, te, tsd = _tile_sums(vt, w, m, want_sd)
        else:
            ts, te, tsd = _tile_sums(vt, tn, m, want_sd)
        s += ts
        E += te
        sd += tsd
        cnt += tcnt
    return m, s, E, sd, cnt, ninf, nan, am


@over_rows(cost=10, strided=(1,))
@njit(cache=True, nogil=True)
def vocab_rows(
    x,
    mask,
    has_mask,
    T,
    cap,
    tgt,
    active,
    eps,
    k,
    st,
    amax,
    topv,
    topi,
    want_grad,
    cz,
    ca,
    cbeta,
    calpha,
    grad,
    inplace,
    r0,
    r1,
):
    """Per-row outputs and (``want_grad``) the gradient w.r.t. ``x``, see the module doc.

    ``T[i]``: the row's temperature; ``tgt[i]``: a class index (any valid index on
    inactive rows).  Writes ``st[i, LSE/ENT/LP/CE/NINF/CNT]`` (``CE`` the unweighted
    smoothed cross-entropy), ``amax[i]`` (-1 when nothing is included) and
    ``topv[i, :k]`` (log-probabilities), ``topi[i, :k]``.

    The gradient w.r.t. ``v_j``, with ``p = softmax(v)``, ``a = ca[i]``, ``b2 = cz[i]
    = 2 b_i z`` and ``q_j = a eps / cnt + a (1 - eps) 1[j = t]``, is
    ``g_j = (a + b2 lse) p_j - q_j - cbeta_i p_j (log p_j + H_i) + calpha_i (1[j=t] - p_j)``,
    then ``dx_j = g_j (1 - tanh^2(x_j / c)) / T_i``.
    Inactive rows get a zero gradient.
    """
    n = x.shape[1]
    bufv = np.empty(max(k, 1), dtype=np.float64)
    bufi = np.empty(max(k, 1), dtype=np.int64)
    vt = np.empty(_TILE, dtype=np.float64)
    incl = np.empty(_TILE, dtype=np.bool_)
    want_sd = eps > 0.0
    for i in range(r0, r1):
        Ti = T[i]
        t = tgt[i]
        m, s, E, sd, cnt, ninf, nan, am = _fold_row(
            x, mask, has_mask, i, Ti, cap, k, bufv, bufi, vt, incl, want_sd
        )
        t_in = (not has_mask) or mrow(mask, i)[t]
        x_t = x[i, t]  # read before an in-place gradient overwrites the row
        v_t = _tv(x_t, cap, Ti)
        amax[i] = am
        st[i, NINF] = ninf
        st[i, CNT] = cnt
        if nan:
            lse = np.nan
            H = np.nan
            lp = np.nan
            ce = np.nan
        elif ninf > 0:
            lk = math.log(ninf)
            lse = np.inf
            H = lk
            lp = -lk if (t_in and v_t == np.inf) else -np.inf
            ce = 0.0
            if eps < 1.0:
                ce += (1.0 - eps) * (-lp)
            if eps > 0.0:
                ce += np.inf if cnt > ninf else eps * lk
        elif m == -np.inf:
            lse = -np.inf
            H = 0.0
            lp = -np.inf
            ce = 0.0
        else:
            ls = math.log(s)
            lse = m + ls
            H = ls - E / s
            lp = ((v_t - m) - ls) if t_in else -np.inf
            ce = 0.0
            if eps < 1.0:  # never 0 * inf
                ce += (1.0 - eps) * (-lp)
            if eps > 0.0:
                ce += eps * (ls - sd / cnt)
        st[i, LSE] = lse
        st[i, ENT] = H
        st[i, LP] = lp
        st[i, CE] = ce
        for q in range(k):
            key = bufv[q]
            topi[i, q] = bufi[q]
            if nan:
                topv[i, q] = np.nan
            elif ninf > 0:
                topv[i, q] = -math.log(ninf) if key == np.inf else -np.inf
            elif m == -np.inf:
                topv[i, q] = -np.inf
            else:
                topv[i, q] = (key - m) - math.log(s)
        if not want_grad:
            continue
        if not active[i]:
            for j in range(n):
                grad[i, j] = 0.0
            continue
        if nan:
            for j in range(n):
                grad[i, j] = np.nan
            continue
        a = ca[i]
        b2 = cz[i]  # 2 b z
        c1 = a + b2 * lse if b2 != 0.0 else a
        be = cbeta[i]
        al = calpha[i]
        inv_c = 1.0 / cnt if cnt > 0 else 0.0
        lk = math.log(ninf) if ninf > 0 else 0.0
        if not has_mask and ninf == 0:
            q0 = a * eps * inv_c
            if inplace:
                _grad_fast_inplace(grad[i], Ti, cap, lse, H, c1, q0, be, al)
            else:
                _grad_fast(x[i], grad[i], Ti, cap, lse, H, c1, q0, be, al)
            fix = al - a * (1.0 - eps)  # the target's own terms
            if cap > 0.0:
                th = math.tanh(np.float64(x_t) / cap)
                fix *= 1.0 - th * th
            grad[i, t] += fix / Ti
            continue
        mr = mrow(mask, i)
        for j in range(n):
            if has_mask and not mr[j]:
                grad[i, j] = 0.0
                continue
            xj = np.float64(x[i, j])
            v = _tv(xj, cap, Ti)
            q = a * eps * inv_c
            if ninf > 0:
                p = 1.0 / ninf if v == np.inf else 0.0
                g = a * p - q
                if b2 != 0.0 and p > 0.0:
                    g += b2 * np.inf * p  # the z-loss' 2 z lse p with lse = +inf
                lpj = -lk
            else:
                lpj = v - lse
                p = math.exp(lpj)
                g = c1 * p - q
            if p > 0.0:
                g -= be * p * (lpj + H)
                g -= al * p
            if j == t:
                g -= a * (1.0 - eps)
                g += al
            g /= Ti
            if cap > 0.0:
                th = math.tanh(xj / cap)
                g *= 1.0 - th * th
            grad[i, j] = g
