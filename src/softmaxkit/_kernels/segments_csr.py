"""Fused kernels of the sorted-id (CSR) segment path: the ids pass and the float32
softmax.  Conventions as in ``segments.py``.

* ``csr_offsets``: ONE pass over the ids, in parts (one per task, run on several
  threads), that both checks they are non-decreasing and builds the CSR offsets.
  It replaces three scalar passes (``ids_sorted`` (removed), ``ids_info``,
  ``offsets_from_sorted``: 22 ms for 10^7 int64 ids at one thread, 40% of a
  float32 segment softmax in 10^5 groups).  Per block of ``_IB`` ids: the descents
  are counted in a vectorised loop; a block whose first and last ids are equal is
  done; otherwise each id change ``a -> b`` sets ``offs[a + 1 .. b]`` to its
  position, found by binary search in the block (few changes) or a linear scan
  (many: short segments).
* ``csr_softmax32``: float32 softmax of each segment with the values in L1 after
  the first read: the max (vectorised ``maxnum``), then ``exp(v - m)`` stored into
  the output and summed in float64, then the scale by ``1 / s``.  One read of
  ``x`` from memory and one write, no table; segments whose max is not finite
  (empty, all ``-inf``, ``+inf``, NaN) go through ``segments._write_1d``'s rules.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .exp import FASTMATH, expd_unit, fmax
from .segments import _seg_state, _write_1d

__all__ = ["csr_offsets", "csr_softmax32"]

_IB = 64  # ids per block of csr_offsets
_LIN = 8  # more id changes than this in a block: a linear scan instead of searches


@njit(cache=True, inline="always")
def _first_not_below(ids, lo, hi, g):
    """The first ``i`` in ``[lo, hi)`` with ``ids[i] >= g`` (``ids`` sorted there)."""
    while lo < hi:
        mid = (lo + hi) >> 1
        if ids[mid] < g:
            lo = mid + 1
        else:
            hi = mid
    return lo


@njit(cache=True, inline="always")
def _set(offs, a, b, pos, num):
    """``offs[g] = pos`` for ``g`` in ``(a, b]`` clipped to ``[0, num]``."""
    for g in range(max(a + 1, 0), min(b, num) + 1):
        offs[g] = pos


@njit(nogil=True, cache=True)
def csr_offsets(ids, num, nparts, offs, desc, t0, t1):
    """Parts ``[t0, t1)`` of 1-D integer ``ids`` (part ``p`` is ``ids[n p / nparts :
    n (p + 1) / nparts]``): ``offs[g]`` [num + 1] = the first position with an id
    ``>= g``, for sorted ids.  Each position ``i`` sets the ``g`` in
    ``(ids[i - 1], ids[i]]`` (part 0 also ``[0, ids[0]]``, the last part
    ``(ids[-1], num]``), so parts write disjoint entries.  ``desc[p] = 1`` and the
    part stops at a block with a descent (the ids are not sorted: ``offs`` is then
    meaningless); ids outside ``[0, num)`` are clipped here and left to the caller's
    range check (``ids[0]``, ``ids[-1]``)."""
    n = ids.shape[0]
    for p in range(t0, t1):
        lo = n * p // nparts
        hi = n * (p + 1) // nparts
        if hi <= lo:
            continue
        if lo == 0:
            _set(offs, -1, ids[0], 0, num)
            lo = 1
        for b0 in range(lo, hi, _IB):
            b1 = min(b0 + _IB, hi)
            # on slices: indexing ``ids[i - 1]`` directly kept this loop scalar (7x
            # slower: 20 ms for 10^7 int64 ids)
            prv = ids[b0 - 1 : b1 - 1]
            cur = ids[b0:b1]
            nd = 0
            for i in range(cur.shape[0]):
                nd += 1 if cur[i] < prv[i] else 0
            if nd:
                desc[p] = 1
                break
            a = ids[b0 - 1]
            z = ids[b1 - 1]
            if a == z:
                continue
            if z - a > _LIN:  # many changes: a linear scan
                prev = a
                for i in range(b0, b1):
                    v = ids[i]
                    if v != prev:
                        _set(offs, prev, v, i, num)
                        prev = v
            else:  # few: find each change by binary search
                i = b0
                prev = a
                while prev != z:
                    i = _first_not_below(ids, i, b1, prev + 1)
                    v = ids[i]
                    _set(offs, prev, v, i, num)
                    prev = v
        if hi == n and not desc[p]:
            _set(offs, ids[n - 1], num, n, num)


@njit(nogil=True, fastmath=FASTMATH, cache=True)
def csr_softmax32(x, offs, out, t0, t1):
    """softmax of the segments ``[t0, t1)`` of 1-D float32 ``x`` into ``out``.

    Finite max ``m``: ``exp(v - m)`` (exact-argument float32 exp; ``v = m`` gives
    exactly 1, ``-inf`` gives 0) is stored and summed in float64, then scaled by
    ``1 / s`` rounded once to float32 (``s >= 1``).  Otherwise (all ``-inf``: empty
    by the contract; ``+inf``; NaN only) the state and write of ``_write_1d``."""
    one = np.float32(1.0)
    for k in range(t0, t1):
        lo = offs[k]
        hi = offs[k + 1]
        if hi <= lo:
            continue
        xs = x[lo:hi]
        os = out[lo:hi]
        m = xs[0]
        for j in range(xs.shape[0]):
            m = fmax(m, xs[j])
        if not (m > -np.inf and m < np.inf):
            mm, w, r = _seg_state(xs)
            _write_1d(xs, os, mm, w, r, False)
            continue
        s = 0.0
        for j in range(xs.shape[0]):
            e = expd_unit(xs[j], m)
            os[j] = e
            s += np.float64(e)
        inv = np.float32(1.0 / s) if s == s else np.float32(np.nan)
        if inv != one:
            for j in range(os.shape[0]):
                os[j] = os[j] * inv
