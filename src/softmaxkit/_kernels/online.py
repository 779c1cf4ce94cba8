"""Numba kernels of the online normalizer: state folding, normalising, fused top-k.

Kernels see 2-D arrays ``x[R, n]`` whose rows are (parts of) the reductions; a
mask has the same shape (possibly a broadcast view) and is only read when
``has_mask``.  Values are ``v = x / T`` computed in float64.  No user-facing
errors are raised here; the drivers validate.

The state conventions are those of ``softmaxkit._core.state``: ``(m, s)`` with
``s = sum_j exp(v_j - m)``, identity ``(-inf, 0)``, ``(+inf, count of +inf)``
for rows holding ``+inf`` and ``(NaN, NaN)`` for rows holding NaN.

``fold_rows`` and ``normalize_rows`` are serial (``nogil=True``, no ``prange``):
the streaming driver runs them on several Python threads at once, one chunk each.
``topk_rows`` is an eager kernel: a serial kernel over a row range that
``_parallel.over_rows`` runs on the library's thread pool (no ``parallel=True``
anywhere: fork safety, see ``_parallel``).

Accumulator: float64 everywhere, with block summation (``_BLOCK`` terms per
partial sum, error ~ (_BLOCK + n/_BLOCK) eps rather than n eps).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from ._parallel import over_rows
from .exp import FASTMATH, exp_
from .topk import gt as topk_gt
from .topk import insert as topk_insert

_BLOCK = 256


@njit(cache=True, nogil=True, inline="always")
def _merge1(m1, s1, m2, s2):
    """Merge two scalar states.  ``exp(mi - m)`` is exactly 1 when ``mi == m`` so that
    -inf/-inf (empty + empty) and +inf/+inf never form ``inf - inf`` (guarded by
    ``tests/test_online.py::test_empty_merge_empty_is_empty``)."""
    if m1 != m1 or m2 != m2 or s1 != s1 or s2 != s2:
        return np.nan, np.nan
    m = m1 if m1 >= m2 else m2
    a = 1.0 if m1 == m else math.exp(m1 - m)
    b = 1.0 if m2 == m else math.exp(m2 - m)
    return m, s1 * a + s2 * b


@njit(cache=True, nogil=True)
def fold_rows(x, mask, has_mask, T, m, s):
    """Fold the rows of ``x[R, n]`` into the states ``m[R]``, ``s[R]`` in place.

    Pass structure per row: pass 1 max of the included ``v`` (NaN and +inf
    detected), pass 2 the block-summed ``sum exp(v - max)``; then one merge into
    the running state.  The chunk is small (bounded by the memory budget) so the
    second pass reads from cache.
    """
    R, n = x.shape
    for i in range(R):
        mx = -np.inf
        nan = False
        ninf = 0.0
        for j in range(n):
            if has_mask and not mask[i, j]:
                continue
            v = np.float64(x[i, j]) / T
            if v != v:
                nan = True
                break
            if v > mx:
                mx = v
            if v == np.inf:
                ninf += 1.0
        if nan:
            cm, cs = np.nan, np.nan
        elif mx == -np.inf:
            cm, cs = -np.inf, 0.0
        elif mx == np.inf:
            cm, cs = np.inf, ninf
        else:
            total = 0.0
            block = 0.0
            c = 0
            for j in range(n):
                if has_mask and not mask[i, j]:
                    continue
                block += math.exp(np.float64(x[i, j]) / T - mx)
                c += 1
                if c == _BLOCK:
                    total += block
                    block = 0.0
                    c = 0
            cm, cs = mx, total + block
        m[i], s[i] = _merge1(m[i], s[i], cm, cs)


@njit(cache=True, nogil=True)
def normalize_rows(x, mask, has_mask, T, m, s, log, out):
    """``out[i, j] = exp(v_ij - m_i) / s_i`` (or ``v_ij - m_i - log s_i`` when ``log``).

    One pass, writing.  By state: NaN -> NaN; empty (-inf, 0) -> 0 / -inf; +inf
    state -> ``1/s`` (``-log s``) at the +inf entries, 0 (-inf) elsewhere; masked
    entries -> 0 / -inf.
    """
    R, n = x.shape
    for i in range(R):
        mi = m[i]
        si = s[i]
        if mi != mi or si != si:
            for j in range(n):
                out[i, j] = np.nan
        elif mi == -np.inf:
            for j in range(n):
                out[i, j] = -np.inf if log else 0.0
        elif mi == np.inf:
            for j in range(n):
                hit = np.float64(x[i, j]) / T == np.inf and (not has_mask or mask[i, j])
                if log:
                    out[i, j] = -math.log(si) if hit else -np.inf
                else:
                    out[i, j] = 1.0 / si if hit else 0.0
        else:
            ls = math.log(si)
            for j in range(n):
                if has_mask and not mask[i, j]:
                    out[i, j] = -np.inf if log else 0.0
                    continue
                d = np.float64(x[i, j]) / T - mi
                if log:
                    out[i, j] = d - ls
                else:
                    out[i, j] = math.exp(d) / si


@njit(cache=True, nogil=True, fastmath=FASTMATH)
def _sum_exp(vt, cnt, m):
    """sum_{j < cnt} exp(vt[j] - m) for m finite and vt[j] <= m: the row kernels'
    vectorised exp (``exp.exp_``, float64, 1 ulp; -inf terms give exactly 0)."""
    vs = vt[:cnt]
    acc = 0.0
    for j in range(vs.shape[0]):
        acc += exp_(vs[j] - m)
    return acc


_TILE = 512


@over_rows(cost=8)
@njit(cache=True, nogil=True, fastmath={"reassoc", "contract", "nsz", "arcp"})
def topk_rows(x, mask, has_mask, T, k, probs, idx, r0, r1):
    """Top-k of the softmax of each row of ``x[R, n]``, in one pass over the row.

    The row is read once, in tiles of ``_TILE`` values held in cache.  Per tile: the
    tile maximum (NaN detected); the online normalizer update of Milakov &
    Gimelshein (arXiv:1805.02867): when the maximum grows, ``s <- s exp(m_old -
    m_new)``, then ``s += sum exp(v - m)`` over the tile (vectorised exp, float64);
    and, only when the tile maximum beats the current k-th best key, an insertion
    of the tile's entries into a sorted buffer of the ``k`` best keys.  Keys are
    ``v = x / T`` (masked entries rank as ``-inf``, NaN above ``+inf`` as in
    ``torch.topk``); an entry enters only when strictly greater than the current
    k-th, so ties stay ordered by index.  Afterwards the ``k`` probabilities are
    ``exp(v - m) / s``.  Accumulator float64.
    """
    n = x.shape[1]
    for i in range(r0, r1):
        bufv = np.empty(k, dtype=np.float64)
        bufi = np.empty(k, dtype=np.int64)
        vt = np.empty(_TILE, dtype=np.float64)
        cnt = 0
        m = -np.inf
        s = 0.0
        nan = False
        for t0 in range(0, n, _TILE):
            tn = min(_TILE, n - t0)
            tmax = -np.inf
            tnan = False
            if has_mask:
                for j in range(tn):
                    v = np.float64(x[i, t0 + j]) / T
                    v = v if mask[i, t0 + j] else -np.inf
                    vt[j] = v
                    tmax = v if v > tmax else tmax
                    tnan |= v != v
            else:
                for j in range(tn):
                    v = np.float64(x[i, t0 + j]) / T
                    vt[j] = v
                    tmax = v if v > tmax else tmax
                    tnan |= v != v
            # -- top-k insertion (rare once the buffer is full) --
            if tnan or cnt < k or tmax > bufv[k - 1]:
                for j in range(tn):
                    key = vt[j]
                    if has_mask and not mask[i, t0 + j]:
                        key = -np.inf
                    # the test here, not only inside topk_insert: the call then
                    # happens only on an insertion (topk_softmax [1024, 32000] k=50:
                    # 2.2 s with a call per entry against 0.64 s)
                    if cnt < k or topk_gt(key, bufv[k - 1]):
                        cnt = topk_insert(bufv, bufi, cnt, k, key, t0 + j)
            # -- online normalizer --
            if tnan:
                nan = True
            if nan or tmax == -np.inf:
                continue
            if tmax == np.inf or m == np.inf:
                if m != np.inf:
                    m = np.inf
                    s = 0.0
                for j in range(tn):
                    if vt[j] == np.inf:
                        s += 1.0
                continue
            if tmax > m:
                s *= math.exp(m - tmax)  # exp(-inf) = 0 for the first tile
                m = tmax
            s += _sum_exp(vt, tn, m)
        for q in range(k):
            v = bufv[q]
            idx[i, q] = bufi[q]
            if nan:
                probs[i, q] = np.nan
            elif m == -np.inf:
                probs[i, q] = 0.0
            elif m == np.inf:
                probs[i, q] = 1.0 / s if v == np.inf else 0.0
            else:
                probs[i, q] = math.exp(v - m) / s
