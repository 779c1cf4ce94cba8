"""The race itself: ``_race_row`` over a whole row in tiles (a tile skipped when its
maximum is not kept or cannot beat every sample's best key), ``_race_one`` for one
candidate (top-k buffer, top-p candidates), ``_race_init`` from the argmax.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ..exp import exp_
from .keys import _BOUND_MAX, _CBLOCK, _FM, _SLACK, _TILE, _bound, _key, _unif
from .scan import _max16, _v

# --------------------------------------------------------------------------- races


@njit(cache=True, nogil=True)
def _race_init(S, bases, best, bestj, jmax):
    """Start every sample's race at the exact key of the argmax (``d = 0``)."""
    for s in range(S):
        best[s] = _key(0.0, _unif(bases[s], jmax))
        bestj[s] = jmax


@njit(cache=True, nogil=True, fastmath=_FM)
def _race_row(xr, T, unit, m, theta, logq, tie, S, bases, best, bestj, need_z, dt, bt, acc, acc64):
    """The race over a whole row in tiles (the "row race" and tie-mode paths).

    Kept: ``v >= theta`` and ``v - m >= logq`` (tie mode: ``v == m``, weight 1).
    Per tile: the vectorised tile maximum skips tiles with nothing kept, and (unless
    ``need_z``) tiles whose best ``d`` is ``_BOUND_MAX`` below every sample's best
    key; then ``d`` (``-inf`` where not kept) and, per sample, the vectorised bounds,
    then the exact keys where a bound beats the best.  Returns ``(Z, count)``: the
    kept mass ``sum exp(d)`` (when ``need_z``) and the kept count (tie mode).
    """
    n = xr.shape[0]
    z = 0.0
    cnt = 0
    for t0 in range(0, n, _TILE):
        tn = min(_TILE, n - t0)
        xs = xr[t0 : t0 + tn]
        vmax = _v(_max16(xs, acc), T, unit)
        if tie:
            if vmax != m:
                continue
            for j in range(tn):
                hit = _v(xs[j], T, unit) == m
                dt[j] = 0.0 if hit else -np.inf
                cnt += hit
        else:
            if vmax < theta or vmax - m < logq or vmax == -np.inf:
                continue
            if not need_z:
                bmin = np.inf
                for s in range(S):
                    bmin = min(bmin, best[s])
                if vmax - m + _BOUND_MAX <= bmin:
                    continue
            for j in range(tn):
                v = _v(xs[j], T, unit)
                d = v - m
                dt[j] = d if (v >= theta) & (d >= logq) else -np.inf
            if need_z:
                acc_z = 0.0
                for j in range(tn):
                    acc_z += exp_(dt[j])
                z += acc_z
        dmax = vmax - m if not tie else 0.0
        for s in range(S):
            b = best[s]
            if dmax + _BOUND_MAX <= b:
                continue
            base = bases[s]
            for j in range(tn):
                bt[j] = _bound(dt[j], _unif(base, t0 + j))
            if _max16(bt[:tn], acc64) <= b - _SLACK:
                continue
            bj = bestj[s]
            for j in range(tn):
                if bt[j] > b - _SLACK and dt[j] != -np.inf:
                    key = _key(dt[j], _unif(base, t0 + j))
                    if key > b or (key == b and t0 + j < bj):
                        b = key
                        bj = t0 + j
            best[s] = b
            bestj[s] = bj
    return z, cnt


@njit(cache=True, nogil=True)
def _race_one(j, d, S, bases, best, bestj):
    """Enter element ``j`` (with ``d = v - m``) into every sample's race."""
    for s in range(S):
        r = _unif(bases[s], j)
        b = best[s]
        if _bound(d, r) > b - _SLACK:
            key = _key(d, r)
            if key > b or (key == b and j < bestj[s]):
                best[s] = key
                bestj[s] = j


@njit(cache=True, nogil=True, fastmath=_FM)
def _race_cands(ci, cv, c0, c1, m, theta, logq, S, bases, best, bestj):
    """Enter the kept candidates ``c0 <= c < c1`` of a top-p run (``v >= theta``,
    ``v - m >= logq``) into every sample's race, in tiles of ``_TILE``: ``d``
    (``-inf`` where not kept) and, per sample, the vectorised bounds, then the exact
    keys where a bound beats the best.  The winner is the exact argmax of the keys
    (ties to the smaller index): the same whatever ranges the run is cut into."""
    dt = np.empty(_TILE)
    bt = np.empty(_TILE)
    for t0 in range(c0, c1, _TILE):
        tn = min(_TILE, c1 - t0)
        for c in range(tn):
            v = cv[t0 + c]
            d = v - m
            dt[c] = d if (v >= theta) & (d >= logq) else -np.inf
        for s in range(S):
            b = best[s]
            base = bases[s]
            for c in range(tn):
                bt[c] = _bound(dt[c], _unif(base, ci[t0 + c]))
            hit = 0
            for c in range(tn):
                hit += bt[c] > b - _SLACK
            if hit == 0:
                continue
            bj = bestj[s]
            for c in range(tn):
                if bt[c] > b - _SLACK and dt[c] != -np.inf:
                    j = ci[t0 + c]
                    key = _key(dt[c], _unif(base, j))
                    if key > b or (key == b and j < bj):
                        b = key
                        bj = j
            best[s] = b
            bestj[s] = bj


@njit(cache=True, nogil=True)
def _race_cblocks(ci, cv, C, m, theta, logq, S, bases, bestb, bestjb, t0, t1):
    """``_race_cands`` over the candidate blocks ``[t0, t1)`` of ``_CBLOCK``, each
    with its own best keys ``bestb[t]`` / ``bestjb[t]`` (merged by ``_race_merge``)."""
    for t in range(t0, t1):
        best = bestb[t]
        bestj = bestjb[t]
        best[:] = -np.inf
        bestj[:] = np.iinfo(np.int64).max
        c0 = t * _CBLOCK
        _race_cands(ci, cv, c0, min(C, c0 + _CBLOCK), m, theta, logq, S, bases, best, bestj)


@njit(cache=True, nogil=True)
def _race_merge(bestb, bestjb, tok):
    """Each sample's winner over the blocks: the largest key, ties to the smaller
    index (what one race over the whole run keeps)."""
    for s in range(tok.shape[0]):
        b = -np.inf
        bj = np.iinfo(np.int64).max
        for t in range(bestb.shape[0]):
            key = bestb[t, s]
            if key > b or (key == b and bestjb[t, s] < bj):
                b = key
                bj = bestjb[t, s]
        tok[s] = bj
