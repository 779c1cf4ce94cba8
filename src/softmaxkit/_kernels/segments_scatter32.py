"""float32 segment softmax on unsorted ids, one column, in two passes with no second
exp: pass 1 (``scatter_exp32``) stores ``e = exp(v - M)`` for the call's one shift
``M`` into the output while it scatters the float64 sums; pass 2 (``scale_gather``)
multiplies each stored ``e`` by its segment's ``1 / s`` (in float64).  Against the table
gather of ``segments_scatter`` (which reads ``x`` again and takes every exp twice)
pass 2 reads the output instead of ``x`` and takes no exp (10^7 values in 10^5
groups, one thread: 21 -> 15 ms).

The stored exps are float32 (exact-argument ``expd_unit``), so the band of ``d = v -
M`` kept is narrower than ``shifted_sums``'s: a value with ``d`` outside ``[_LOW32,
_HIGH32]`` flags its segment (``-inf`` is not low: its term is exactly 0), and the
public layer recomputes a flagged segment exactly (``segments_scatter.fix_segments``
and ``refix``) when its stored terms cannot give its softmax: flagged high, or
flagged low with a sum below ``exp(_KEEP32)`` (its lost terms, each below
``exp(_LOW32)``, are then not negligible), or a sum above ``1e37``.  The driver
takes this path only when a sample of the values spans less than ``_SPAN`` units
(few flags expected: a fix needs values more than 81 below the shift); otherwise
the table path.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .exp import FASTMATH, expd_unit

__all__ = ["refix", "scale_gather", "scatter_exp32"]

_LOW32 = -80.0
_HIGH32 = 80.0
_KEEP32 = -30.0
_SPAN = 60.0
_BLK = 256
_BLK_SCATTER = 16384


@njit(nogil=True, fastmath=FASTMATH, cache=True)
def scatter_exp32(x1, ids, M, nparts, out1, pr, pf, bad, t0, t1):
    """Parts ``[t0, t1)`` of 1-D float32 ``x1``: ``out1[i] = exp(x1[i] - M)`` (float32)
    and ``pr[p, g] += out1[i]`` (float64) over the part's values, one scattered pass;
    an ``out1`` of length 0 stores nothing (the sums of ``segment_logsumexp``).
    In blocks of ``_BLK_SCATTER``: ids checked against ``[0, S)`` first (``bad[p] = 1`` and
    the part stops before scattering a block with a bad id); ``pf[p, g] |= 1`` (low)
    / ``2`` (high) for ``d`` outside ``[_LOW32, _HIGH32]``; NaN makes the sum NaN."""
    N = x1.shape[0]
    S = pr.shape[1]
    M32 = np.float32(M)
    # the band in float32 values (rounded outwards a little: a flag is only a
    # request to check the segment; exps overflow float32 only at d > 88.7)
    vlo = np.float32(M + _LOW32 - 1.0)
    vhi = np.float32(M + _HIGH32 + 1.0)
    ninf = np.float32(-np.inf)
    store = out1.shape[0] == N
    # blocks of _BLK_SCATTER: the exps of a block, then its scatter (10^7 values in
    # 10^5 groups, one thread, blocks of 256 -> 16384: sums only 19.9 -> 18.3 ms,
    # softmax 38.6 -> 32.1 ms)
    B = _BLK_SCATTER
    eb = np.empty(B, np.float32)
    for p in range(t0, t1):
        r1 = pr[p]
        f1 = pf[p]
        lo = N * p // nparts
        hi = N * (p + 1) // nparts
        for b0 in range(lo, hi, B):
            L = min(B, hi - b0)
            xs = x1[b0 : b0 + L]
            gs = ids[b0 : b0 + L]
            es = out1[b0 : b0 + L] if store else eb[:L]
            nbad = 0
            nout = 0
            for k in range(L):
                g = gs[k]
                nbad += 1 if (g < 0) | (g >= S) else 0
                v = xs[k]
                es[k] = expd_unit(v, M32)
                # float32 compares: converting to float64 here cost ~10% of the pass
                nout += 1 if ((v < vlo) & (v > ninf)) | (v > vhi) else 0
            if nbad:
                bad[p] = 1
                break
            for k in range(L):
                r1[gs[k]] += np.float64(es[k])
            if nout:
                for k in range(L):
                    v = xs[k]
                    if v > vhi:
                        f1[gs[k]] |= 2
                    elif v < vlo and v > ninf:
                        f1[gs[k]] |= 1


@njit(nogil=True, fastmath=FASTMATH, cache=True)
def scale_gather(ids, f, out1, t0, t1):
    """Values ``[t0, t1)``: ``out1[i] *= f[ids[i]]`` with float64 ``f = 1 / s``, the
    product in float64, rounded once (a segment of one value gives exactly 1; a
    float32 division took 45% longer, a float32 ``1 / s`` missed 1 by an ulp).  In
    blocks: the gathers into a buffer first, then one vectorised product."""
    b = np.empty(_BLK, np.float64)
    for b0 in range(t0, t1, _BLK):
        L = min(_BLK, t1 - b0)
        gs = ids[b0 : b0 + L]
        os = out1[b0 : b0 + L]
        for k in range(L):
            b[k] = f[gs[k]]
        for k in range(L):
            os[k] = np.float64(os[k]) * b[k]


_Z32 = np.float32(0.0)


@njit(nogil=True, fastmath=FASTMATH, cache=True)
def refix(x1, ids, fix, tab, out1, t0, t1):
    """Values ``[t0, t1)`` whose segment has ``fix[g]``: softmax ``exp(v - c) f``
    from the ``gather_table`` entry ``tab[g] = (c, f)`` (as ``gather_softmax_1d``)."""
    for i in range(t0, t1):
        g = ids[i]
        if fix[g]:
            v = x1[i]
            c = tab[g, 0]
            eq = v == c
            out1[i] = expd_unit(_Z32 if eq else v, _Z32 if eq else c) * tab[g, 1]
