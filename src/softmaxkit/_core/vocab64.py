"""Float64 NumPy twin of the vocabulary kernel ``_kernels.vocab.vocab_rows``.

The cold-start path of :func:`softmaxkit.cross_entropy` with per-token outputs
(``return_lse``, ``topk``, ``softcap``, per-token temperature, entropy / log-prob
weights): while ``vocab_rows`` compiles in the background, a small call fills the
same outputs (``st``, ``amax``, ``topv``, ``topi`` and the gradient) from these
whole-array float64 formulas, with the kernel's edge-case rules (module doc of
``_kernels/vocab.py``): masked entries excluded (ranked ``-inf`` in the top-K), a NaN
makes the row NaN, ``k`` entries at ``+inf`` share the mass (``lse = +inf``,
entropy ``log k``), a row with nothing above ``-inf`` has ``lse = -inf`` and entropy
0, argmax is the first NaN or the first maximum (-1 when nothing is included), the
top-K ranks NaN first, then by value, ties by index.  Peak extra memory: a few
float64 copies of the logits (only used for calls of at most
:data:`softmaxkit._core.coldstart.SMALL` values).
"""

from __future__ import annotations

import numpy as np

# columns of ``st`` (as ``_kernels.vocab``; kept equal by tests/test_coldstart.py)
LSE, ENT, LP, CE, NINF, CNT = 0, 1, 2, 3, 4, 5


def _topk(vm: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k keys and ids per row: NaN first, then by value descending, ties by index."""
    R, V = vm.shape
    nan = np.isnan(vm)
    idx = np.broadcast_to(np.arange(V), (R, V))
    # keys, last primary: NaN first, then by value descending, then by index
    order = np.lexsort((idx, np.where(nan, 0.0, -vm), ~nan), axis=-1)[:, :k]
    return np.take_along_axis(vm, order, axis=1), order.astype(np.int64)


def vocab_rows_float64(
    x: np.ndarray, mask: np.ndarray | None, T: np.ndarray, cap: float, tgt: np.ndarray,
    active: np.ndarray, eps: float, k: int, st: np.ndarray, amax: np.ndarray,
    topv: np.ndarray, topi: np.ndarray, want_grad: bool, cz: np.ndarray, ca: np.ndarray,
    cbeta: np.ndarray, calpha: np.ndarray, grad: np.ndarray,
) -> None:  # fmt: skip
    """Fill the outputs of ``vocab_rows`` (same arguments, no ``has_mask``/row range)."""
    R, V = x.shape
    xf = np.asarray(x, dtype=np.float64)
    Tc = np.asarray(T, dtype=np.float64)[:, None]
    with np.errstate(all="ignore"):
        v = (cap * np.tanh(xf / cap) if cap > 0.0 else xf) / Tc
    inc = np.ones((R, V), dtype=np.bool_) if mask is None else np.asarray(mask, np.bool_)
    vm = np.where(inc, v, -np.inf)
    rows = np.arange(R)
    nan = np.isnan(vm).any(axis=1)
    pinf = vm == np.inf
    ninf = pinf.sum(axis=1)
    cnt = inc.sum(axis=1)
    # argmax: the first NaN, else the first maximum; -1 when nothing is included
    first_nan = np.argmax(np.isnan(vm), axis=1)
    am = np.where(nan, first_nan, np.argmax(np.where(np.isnan(vm), -np.inf, vm), axis=1))
    # a row whose included entries are all -inf: its first included entry
    am = np.where(np.isneginf(vm).all(axis=1) & ~nan, np.argmax(inc, axis=1), am)
    amax[...] = np.where(cnt > 0, am, -1)
    with np.errstate(all="ignore"):
        m = np.where(nan, np.nan, np.max(np.where(np.isnan(vm), -np.inf, vm), axis=1))
        finite_m = np.isfinite(m)
        d = vm - np.where(finite_m, m, 0.0)[:, None]
        e = np.where(finite_m[:, None], np.exp(d), 0.0)
        s = e.sum(axis=1)
        E = np.where(e > 0, e * d, 0.0).sum(axis=1)
        ls = np.log(s)
        lse = m + ls
        H = ls - E / s
        sd = np.where(inc, d, 0.0).sum(axis=1)
        t_in = inc[rows, tgt]
        v_t = v[rows, tgt]
        lp = np.where(t_in, (v_t - m) - ls, -np.inf)
        ce = np.zeros(R)
        if eps < 1.0:
            ce = ce + (1.0 - eps) * (-lp)
        if eps > 0.0:
            ce = ce + eps * (ls - sd / np.maximum(cnt, 1))
        # +inf rows: the mass shared by the k entries at +inf
        lk = np.log(np.maximum(ninf, 1))
        lp_inf = np.where(t_in & (v_t == np.inf), -lk, -np.inf)
        ce_inf = np.zeros(R)
        if eps < 1.0:
            ce_inf = ce_inf + (1.0 - eps) * (-lp_inf)
        if eps > 0.0:
            ce_inf = ce_inf + np.where(cnt > ninf, np.inf, eps * lk)
    hasinf = (ninf > 0) & ~nan
    empty = (m == -np.inf) & ~nan & ~hasinf
    for col, normal, inf_v, empty_v in (
        (LSE, lse, np.inf, -np.inf),
        (ENT, H, lk, 0.0),
        (LP, lp, lp_inf, -np.inf),
        (CE, ce, ce_inf, 0.0),
    ):
        sel = np.where(hasinf, inf_v, np.where(empty, empty_v, normal))
        st[:, col] = np.where(nan, np.nan, sel)
    st[:, NINF] = ninf
    st[:, CNT] = cnt
    if k > 0:
        keys, ids = _topk(vm, k)
        topi[...] = ids
        with np.errstate(invalid="ignore"):
            normal_v = (keys - m[:, None]) - ls[:, None]
        tv = np.where(hasinf[:, None], np.where(keys == np.inf, -lk[:, None], -np.inf), normal_v)
        tv = np.where(empty[:, None], -np.inf, tv)
        topv[...] = np.where(nan[:, None], np.nan, tv)
    if not want_grad:
        return
    with np.errstate(all="ignore"):
        lse_c = st[:, LSE][:, None]
        Hc = st[:, ENT][:, None]
        a = np.asarray(ca, np.float64)[:, None]
        b2 = np.asarray(cz, np.float64)[:, None]
        be = np.asarray(cbeta, np.float64)[:, None]
        al = np.asarray(calpha, np.float64)[:, None]
        q = a * eps * np.where(cnt > 0, 1.0 / np.maximum(cnt, 1), 0.0)[:, None]
        c1 = np.where(b2 != 0.0, a + b2 * lse_c, a)
        # ordinary rows
        lpj = v - lse_c
        p = np.exp(lpj)
        g = c1 * p - q
        # rows with +inf entries
        hi = hasinf[:, None]
        p_inf = np.where(v == np.inf, 1.0 / np.maximum(ninf, 1)[:, None], 0.0)
        g_inf = a * p_inf - q + np.where((b2 != 0.0) & (p_inf > 0.0), b2 * np.inf * p_inf, 0.0)
        p = np.where(hi, p_inf, p)
        g = np.where(hi, g_inf, g)
        lpj = np.where(hi, -lk[:, None], lpj)
        g = np.where(p > 0.0, g - be * p * (lpj + Hc) - al * p, g)
        onehot = np.zeros((R, V), dtype=np.bool_)
        if V:
            onehot[rows, tgt] = True
        g = np.where(onehot, g - a * (1.0 - eps) + al, g)
        g = g / Tc
        if cap > 0.0:
            th = np.tanh(xf / cap)
            g = g * (1.0 - th * th)
        g = np.where(inc, g, 0.0)
        g = np.where(nan[:, None], np.nan, g)
        g = np.where(np.asarray(active, np.bool_)[:, None], g, 0.0)
        grad[...] = g
