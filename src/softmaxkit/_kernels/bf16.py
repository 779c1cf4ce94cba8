"""bfloat16 row kernels: softmax / log_softmax and their VJPs on the raw bits.

NumPy has no bfloat16, so the arrays arrive as ``uint16`` bit patterns (a bfloat16
is the upper half of a float32).  Each row is widened into a float32 row buffer
(``bits << 16``, exact), computed in float32 and rounded once to bfloat16
(round-to-nearest-even on the float32 bits; NaN stays a quiet NaN), so the input
is read from memory once and the output written once: no float32 copy of the whole
tensor.  Accumulator: float32 (the sums' rounding, about ``sqrt(n) 2^-24``, is far
below the output's ``2^-9``).

Pass structure per row (the row buffer stays in cache): widen + scale + max (NaN
flag), ``e = exp(v - m)`` stored + sum, write (softmax: ``e / s``; log_softmax:
``v - m - log s``).  Edge cases follow ``docs/dense.md``: NaN row -> NaN, all
``-inf`` (or empty) -> 0 / ``-inf``, ``k`` entries ``+inf`` -> ``1/k`` / ``-log k``
there and 0 / ``-inf`` elsewhere.

Serial ``nogil`` range kernels ``f(..., t0, t1)`` over rows ``[t0, t1)``, run on
several threads by ``_parallel.run``.  Guarded by tests/test_torch.py
(``test_bfloat16_*``).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from .exp import exp_, fmax

_FM = {"nsz", "arcp", "contract", "afn", "reassoc"}  # never nnan / ninf
_QNAN = np.uint16(0x7FC0)
_NEG_INF = np.uint16(0xFF80)


@njit(cache=True, nogil=True, inline="always")
def _round(bits):
    """bfloat16 bits of the float32 with bits ``bits`` (uint32), nearest-even."""
    if (bits & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000):
        return _QNAN
    r = bits + np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))
    return np.uint16(r >> np.uint32(16))


@njit(cache=True, nogil=True, fastmath=_FM)
def softmax_range(x, invT, log, out, t0, t1):
    """``out[i] = (log_)softmax(x[i] * invT)`` for rows ``t0 <= i < t1`` (bits in, bits out)."""
    n = x.shape[1]
    ub = np.empty(n, dtype=np.uint32)
    fb = ub.view(np.float32)
    t = np.float32(invT)
    for i in range(t0, t1):
        for j in range(n):
            ub[j] = np.uint32(x[i, j]) << np.uint32(16)
        m = np.float32(-np.inf)
        nan = False
        for j in range(n):
            v = fb[j] * t
            fb[j] = v
            nan |= v != v
            m = fmax(m, v)
        if nan:
            for j in range(n):
                out[i, j] = _QNAN
            continue
        if m == -np.inf:
            z = _NEG_INF if log else np.uint16(0)
            for j in range(n):
                out[i, j] = z
            continue
        if m == np.inf:
            k = 0
            for j in range(n):
                k += fb[j] == np.inf
            hit = np.float32(-math.log(k)) if log else np.float32(1.0 / k)
            hb = np.empty(1, dtype=np.float32)
            hb[0] = hit
            hbits = _round(hb.view(np.uint32)[0])
            miss = _NEG_INF if log else np.uint16(0)
            for j in range(n):
                out[i, j] = hbits if fb[j] == np.inf else miss
            continue
        s = np.float32(0.0)
        if log:
            for j in range(n):
                s += exp_(fb[j] - m)
            c = m + np.float32(math.log(s))
            for j in range(n):
                fb[j] = fb[j] - c
        else:
            for j in range(n):
                e = exp_(fb[j] - m)
                fb[j] = e
                s += e
            r = np.float32(1.0) / s
            for j in range(n):
                fb[j] = fb[j] * r
        for j in range(n):
            out[i, j] = _round(ub[j])


@njit(cache=True, nogil=True, fastmath=_FM)
def vjp_range(y, g, invT, log, out, t0, t1):
    """VJP of (log_)softmax from its output ``y`` and upstream ``g`` (bits), rows ``[t0, t1)``.

    softmax: ``y (g - sum(y g)) / T``, 0 where ``y == 0`` (even for infinite ``g``);
    log_softmax: ``(g - e^y sum(g)) / T``, 0 on rows whose ``y`` are all ``-inf``.
    """
    n = y.shape[1]
    yu = np.empty(n, dtype=np.uint32)
    yf = yu.view(np.float32)
    gu = np.empty(n, dtype=np.uint32)
    gf = gu.view(np.float32)
    t = np.float32(invT)
    for i in range(t0, t1):
        for j in range(n):
            yu[j] = np.uint32(y[i, j]) << np.uint32(16)
            gu[j] = np.uint32(g[i, j]) << np.uint32(16)
        s = np.float32(0.0)
        if log:
            live = False
            for j in range(n):
                live |= yf[j] != -np.inf
                s += gf[j]
            for j in range(n):
                yf[j] = (gf[j] - exp_(yf[j]) * s) * t if live else np.float32(0.0)
        else:
            for j in range(n):
                if yf[j] != 0:
                    s += yf[j] * gf[j]
            for j in range(n):
                yf[j] = yf[j] * (gf[j] - s) * t if yf[j] != 0 else np.float32(0.0)
        for j in range(n):
            out[i, j] = _round(yu[j])
