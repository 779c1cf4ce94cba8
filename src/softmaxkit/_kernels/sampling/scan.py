"""Pass 1 of a row: ``v = x / T`` (``_v``), the vectorised maximum and its first index,
the NaN check, the masses above the top-p depths ``_LEV`` (``_sum_levels``), a
float64 copy of ``v`` (large top-k), and the sorted top-k buffer (``_heap``).
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic, overload

from ..exp import exp_, fmax
from .keys import _BLOCK, _FM, _TILE

# --------------------------------------------------------------------------- pass 1


@njit(cache=True, nogil=True, inline="always")
def _v(x, T, unit):
    """The key ``v = x / T`` in float64, the one expression every pass uses (``unit``:
    ``T == 1``, the division skipped; loop-invariant, so LLVM unswitches the loops)."""
    return np.float64(x) if unit else np.float64(x) / T


@njit(cache=True, nogil=True, fastmath=_FM)
def _max16(xs, acc):
    """``max(xs)`` ignoring NaN (``-inf`` for an empty or all ``-inf`` slice), in the
    dtype of ``xs``, with 16 partial maxima in ``acc`` (``llvm.maxnum`` chains do not
    vectorise as a reduction: one chain measured 1.1 ns per float32, 16 0.28 ns)."""
    acc[:] = -np.inf
    n = xs.shape[0]
    n16 = n - n % 16
    for j in range(0, n16, 16):
        for k in range(16):
            acc[k] = fmax(acc[k], xs[j + k])
    mx = acc[0]
    for k in range(16):
        mx = fmax(mx, acc[k])
    for j in range(n16, n):
        mx = fmax(mx, xs[j])
    return mx


@intrinsic
def _as_float(typingctx, k):
    """The float32 (float64) whose bits are the int32 (int64) ``k`` (a bitcast)."""
    if k not in (types.int32, types.int64):
        return None
    fty = types.float32 if k == types.int32 else types.float64

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.FloatType() if k == types.int32 else ir.DoubleType())

    return fty(k), codegen


def _key_max(xr):  # pragma: no cover - replaced by the overload inside jitted code
    raise NotImplementedError


def _key(bits: int, width: int) -> int:
    """The order key of a float's bits as a signed int (see ``_key_max``)."""
    return bits ^ ((bits >> (width - 1)) & ((1 << (width - 1)) - 1))


@overload(_key_max)
def _key_max_overload(xr):
    """``(max(xr) or NaN, whether xr holds NaN)`` by integer keys: the bits ``b`` of
    each float read as a signed integer, ``b ^ ((b >> (w - 1)) & (2^(w-1) - 1))``
    (negative floats' magnitude bits flipped), order the floats as their values (with
    ``-0.0`` just below ``+0.0``) and put NaN above ``+inf`` (sign bit clear) or below
    ``-inf`` (set).  One pass of integer max and min, which vectorise without fast-math
    (a float max must carry NaN through: its selects vectorised less well, 0.051 ->
    0.027 ms on a [262144] float32 row, the NaN count fused)."""
    if xr.dtype == types.float32:
        ity, fty, w = np.int32, np.float32, 32
    else:
        ity, fty, w = np.int64, np.float64, 64
    bits = np.array([np.inf, -np.inf], dtype=fty).view(ity)
    kinf = ity(_key(int(bits[0]), w))
    kninf = ity(_key(int(bits[1]), w))
    sh = ity(w - 1)
    mag = ity((1 << (w - 1)) - 1)

    def impl(xr):
        b = xr.view(ity)
        hi = kninf
        lo = kinf
        for j in range(b.shape[0]):
            v = b[j]
            k = ity(v ^ ((v >> sh) & mag))
            hi = max(hi, k)
            lo = min(lo, k)
        nan = hi > kinf or lo < kninf
        return _as_float(ity(hi ^ ((hi >> sh) & mag))), nan

    return impl


@njit(cache=True, nogil=True)
def _max_nan(xr):
    """``(max(xr) ignoring NaN, whether xr holds NaN)`` in one call: pass 1 of a row.

    ``_key_max`` (integer keys, one vectorised pass); a row with NaN (rare: the caller
    then reports it) takes ``_max_sel`` for its NaN-skipping maximum.  The maximum is
    exact, the same value as ``_max_sel`` except that of ``+0.0`` and ``-0.0`` either
    may come out (``v - m`` is the same)."""
    mx, nan = _key_max(xr)
    if nan:
        return _max_sel(xr)
    return mx, False


@njit(cache=True, nogil=True, fastmath=_FM)
def _max_sel(xr):
    """``(max(xr) ignoring NaN, whether xr holds NaN)`` by compare-and-select.

    Sixteen named running maxima updated by compare-and-select (one vector register,
    a ``vmaxps``-like select per 16 entries) instead of ``_max16``'s ``llvm.maxnum``
    on an array (0.075 -> 0.039 ms on a [262144] float32 row; the NaN count, a second
    loop, 0.015 -> 0.013).  A maximum is exact: the same value as ``_max16`` (NaN
    entries are skipped by both: ``x > a`` is false for NaN), except that of
    ``+0.0`` and ``-0.0`` either may come out (``v - m`` is the same)."""
    n = xr.shape[0]
    ninf = xr.dtype.type(-np.inf)
    a0 = ninf
    a1 = ninf
    a2 = ninf
    a3 = ninf
    a4 = ninf
    a5 = ninf
    a6 = ninf
    a7 = ninf
    a8 = ninf
    a9 = ninf
    a10 = ninf
    a11 = ninf
    a12 = ninf
    a13 = ninf
    a14 = ninf
    a15 = ninf
    n16 = n - n % 16
    for j in range(0, n16, 16):
        x0 = xr[j + 0]
        a0 = x0 if x0 > a0 else a0
        x1 = xr[j + 1]
        a1 = x1 if x1 > a1 else a1
        x2 = xr[j + 2]
        a2 = x2 if x2 > a2 else a2
        x3 = xr[j + 3]
        a3 = x3 if x3 > a3 else a3
        x4 = xr[j + 4]
        a4 = x4 if x4 > a4 else a4
        x5 = xr[j + 5]
        a5 = x5 if x5 > a5 else a5
        x6 = xr[j + 6]
        a6 = x6 if x6 > a6 else a6
        x7 = xr[j + 7]
        a7 = x7 if x7 > a7 else a7
        x8 = xr[j + 8]
        a8 = x8 if x8 > a8 else a8
        x9 = xr[j + 9]
        a9 = x9 if x9 > a9 else a9
        x10 = xr[j + 10]
        a10 = x10 if x10 > a10 else a10
        x11 = xr[j + 11]
        a11 = x11 if x11 > a11 else a11
        x12 = xr[j + 12]
        a12 = x12 if x12 > a12 else a12
        x13 = xr[j + 13]
        a13 = x13 if x13 > a13 else a13
        x14 = xr[j + 14]
        a14 = x14 if x14 > a14 else a14
        x15 = xr[j + 15]
        a15 = x15 if x15 > a15 else a15
    mx = ninf
    mx = fmax(mx, a0)
    mx = fmax(mx, a1)
    mx = fmax(mx, a2)
    mx = fmax(mx, a3)
    mx = fmax(mx, a4)
    mx = fmax(mx, a5)
    mx = fmax(mx, a6)
    mx = fmax(mx, a7)
    mx = fmax(mx, a8)
    mx = fmax(mx, a9)
    mx = fmax(mx, a10)
    mx = fmax(mx, a11)
    mx = fmax(mx, a12)
    mx = fmax(mx, a13)
    mx = fmax(mx, a14)
    mx = fmax(mx, a15)
    for j in range(n16, n):
        mx = fmax(mx, xr[j])
    cnt = 0
    for j in range(n):
        cnt += xr[j] != xr[j]
    return mx, cnt > 0


@njit(cache=True, nogil=True, fastmath=_FM)
def _has_nan(xr):
    cnt = 0
    for j in range(xr.shape[0]):
        cnt += xr[j] != xr[j]
    return cnt > 0


@njit(cache=True, nogil=True, fastmath=_FM)
def _first_eq(xr, xm):
    """The first ``j`` with ``xr[j] == xm`` (tiles counted vectorised, then scanned)."""
    n = xr.shape[0]
    for t0 in range(0, n, _TILE):
        tn = min(_TILE, n - t0)
        hit = 0
        for j in range(tn):
            hit += xr[t0 + j] == xm
        if hit:
            for j in range(tn):
                if xr[t0 + j] == xm:
                    return t0 + j
    return 0


_LEV = (-1.5, -3.0, -5.0, -8.0)  # the depths d = v - m of the top-p bracketing masses


@njit(cache=True, nogil=True, fastmath=_FM)
def _sum_levels(xr, T, unit, m, lev):
    """``s = sum exp(v - m)`` (float64, vectorised exp) and ``lev[k] = sum over
    v - m >= _LEV[k]`` of the same terms: if ``lev[k] >= P s`` the top-p threshold is
    at least ``m + _LEV[k]``."""
    s = 0.0
    a0 = 0.0
    a1 = 0.0
    a2 = 0.0
    a3 = 0.0
    for j in range(xr.shape[0]):
        d = _v(xr[j], T, unit) - m
        w = exp_(d)
        s += w
        a0 += w if d >= _LEV[0] else 0.0
        a1 += w if d >= _LEV[1] else 0.0
        a2 += w if d >= _LEV[2] else 0.0
        a3 += w if d >= _LEV[3] else 0.0
    lev[0] = a0
    lev[1] = a1
    lev[2] = a2
    lev[3] = a3
    return s


@njit(cache=True, nogil=True)
def _block_levels(xr, T, unit, m, part, b0, b1):
    """``_sum_levels`` of the blocks ``[b0, b1)`` of ``_BLOCK`` entries of the row:
    ``part[b] = (s_b, lev_b)``, merged by :func:`_merge_levels`."""
    n = xr.shape[0]
    lev = np.empty(len(_LEV))
    for b in range(b0, b1):
        j0 = b * _BLOCK
        part[b, 0] = _sum_levels(xr[j0 : min(n, j0 + _BLOCK)], T, unit, m, lev)
        for k in range(len(_LEV)):
            part[b, 1 + k] = lev[k]


@njit(cache=True, nogil=True)
def _merge_levels(part, lev):
    """The row's ``s`` and level masses from the block partials, summed in block
    order (the same floats whichever threads made the partials)."""
    s = 0.0
    lev[:] = 0.0
    for b in range(part.shape[0]):
        s += part[b, 0]
        for k in range(len(_LEV)):
            lev[k] += part[b, 1 + k]
    return s


@njit(cache=True, nogil=True)
def _sum_blocks(xr, T, unit, m, lev):
    """``s`` and the level masses of a whole row, block by block (``_block_levels``
    then ``_merge_levels``): what the chunked path computes on several threads."""
    nb = (xr.shape[0] + _BLOCK - 1) // _BLOCK
    part = np.empty((nb, 1 + len(_LEV)))
    _block_levels(xr, T, unit, m, part, 0, nb)
    return _merge_levels(part, lev)


@njit(cache=True, nogil=True, fastmath=_FM)
def _store_v(xr, T, unit, cv):
    for j in range(xr.shape[0]):
        cv[j] = _v(xr[j], T, unit)


@njit(cache=True, nogil=True)
def _heap(xr, T, unit, K, bufv, bufi, acc):
    """Pass 1 of the small-``K`` path: the ``K`` largest ``v`` in decreasing order (ties
    by increasing index) in ``bufv``/``bufi``, and ``neq``, the number of entries equal
    to the ``K``-th value that are not in the buffer (they all come after the buffer's
    own entries of that value).  A tile whose maximum is below the ``K``-th value is
    skipped after its vectorised maximum.  Requires ``K < n`` and no NaN."""
    n = xr.shape[0]
    cnt = 0
    neq = 0
    for t0 in range(0, n, _TILE):
        tn = min(_TILE, n - t0)
        xs = xr[t0 : t0 + tn]
        if cnt == K and _v(_max16(xs, acc), T, unit) < bufv[K - 1]:
            continue  # nothing in this tile can enter or tie
        for j in range(tn):
            key = _v(xs[j], T, unit)
            if cnt < K:
                pos = cnt
                while pos > 0 and key > bufv[pos - 1]:
                    bufv[pos] = bufv[pos - 1]
                    bufi[pos] = bufi[pos - 1]
                    pos -= 1
                bufv[pos] = key
                bufi[pos] = t0 + j
                cnt += 1
            elif key > bufv[K - 1]:
                old = bufv[K - 1]
                pos = K - 1
                while pos > 0 and key > bufv[pos - 1]:
                    bufv[pos] = bufv[pos - 1]
                    bufi[pos] = bufi[pos - 1]
                    pos -= 1
                bufv[pos] = key
                bufi[pos] = t0 + j
                # the evicted entry (value old) still ties the new K-th only if equal
                neq = neq + 1 if bufv[K - 1] == old else 0
            elif key == bufv[K - 1]:
                neq += 1
    return neq
