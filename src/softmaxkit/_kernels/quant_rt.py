"""Integer softmax kernels of other runtimes: ONNX Runtime, QNNPACK/XNNPACK, float route.

Private (``softmaxkit._quant_runtimes`` derives the tables and validates).  Each
kernel is a serial ``nogil`` function over the row range ``[r0, r1)`` of a
C-contiguous ``x[R, n]`` (int8 or uint8), dispatched on several threads by
``_parallel.run``; inside a row the order of every float32 sum is the runtime's
(sequential), which is what keeps them bit-exact.

Every 8-bit kernel indexes its table by the difference ``d = max - x`` (0..255):
``table[d]`` is the runtime's table entry for ``x = max - d``.

Pass structure per row: pass 1 row max; pass 2 sum of table entries (uint32
wrapping sum for QNNPACK, float32 sequential for ONNX Runtime, float32 of
``exp`` for the float route); pass 3 write.  Tests:
``tests/test_quant_runtimes.py`` (vectors recorded from onnxruntime and torch).
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def lut_float_rows(x, table, y_scale, zp, qmin, qmax, out, r0, r1):
    """ONNX Runtime ``QlinearSoftmaxCPU``: float32 table, float32 sum, ``nearbyintf``.

    ``y = clamp(nearbyintf(table[d] * (y_scale / sum)) + zp, qmin, qmax)``.  The
    order of the product and the clamp are fixed by onnxruntime 1.32 itself (the
    source's ``(t * y_scale) / sum`` would overflow to inf where 1.32 does not,
    and its int8 cast would wrap 128 to -128 where 1.32 saturates):
    ``tests/test_quant_runtimes.py::test_onnxruntime_vectors``.
    """
    n = x.shape[1]
    for r in range(r0, r1):
        m = np.int32(x[r, 0])
        for j in range(1, n):
            v = np.int32(x[r, j])
            if v > m:
                m = v
        s = np.float32(0.0)
        for j in range(n):
            s = np.float32(s + table[m - np.int32(x[r, j])])
        f = np.float32(y_scale / s)
        for j in range(n):
            q = np.int64(np.rint(np.float32(table[m - np.int32(x[r, j])] * f))) + zp
            if q < qmin:
                q = qmin
            if q > qmax:
                q = qmax
            out[r, j] = q


@njit(cache=True, nogil=True)
def lut32norm_rows(x, table, out, r0, r1):
    """QNNPACK / XNNPACK ``u8lut32norm``: uint32 table, uint32 sum, rounded division.

    ``y = min(((t << 8) + sum // 2) // sum, 255)`` with ``t = table[max - x]``.
    """
    n = x.shape[1]
    for r in range(r0, r1):
        m = np.int32(x[r, 0])
        for j in range(1, n):
            v = np.int32(x[r, j])
            if v > m:
                m = v
        s = np.uint64(0)
        for j in range(n):
            s += np.uint64(table[m - np.int32(x[r, j])])
        s = s & np.uint64(0xFFFFFFFF)  # uint32 sum (the table keeps it below 2^32)
        half = s >> np.uint64(1)
        for j in range(n):
            t = np.uint64(table[m - np.int32(x[r, j])])
            q = ((t << np.uint64(8)) + half) // s
            out[r, j] = 255 if q > 255 else q


@njit(cache=True, nogil=True)
def float_route_rows(
    x, in_scale, in_zp, fma_deq, inv_out, out_zp, half_even, recip, qmin, qmax, out, r0, r1
):
    """Dequantise, float32 softmax, requantise; per row, sequential float32 sum.

    Dequantise ``(x - zp) * s`` (or ``fma(s, x, -zp * s)`` when ``fma_deq``, one
    rounding of the exact value), ``e = exp(v - max)``, ``p = e / sum`` (or ``e *
    (1 / sum)`` when ``recip``), ``q = round(p * inv_out) + zp`` clamped, rounding
    halves to even (``nearbyint``) or away from zero (``std::round``).
    """
    n = x.shape[1]
    v = np.empty(n, dtype=np.float32)
    premul = np.float32(-np.float32(in_zp) * in_scale)
    for r in range(r0, r1):
        for j in range(n):
            if fma_deq:
                v[j] = np.float32(np.float64(in_scale) * np.float64(x[r, j]) + np.float64(premul))
            else:
                v[j] = np.float32(np.float32(np.int32(x[r, j]) - in_zp) * in_scale)
        m = v[0]
        for j in range(1, n):
            if v[j] > m:
                m = v[j]
        s = np.float32(0.0)
        for j in range(n):
            e = np.exp(np.float32(v[j] - m))
            v[j] = e
            s = np.float32(s + e)
        rs = np.float32(np.float32(1.0) / s)
        for j in range(n):
            p = np.float32(v[j] * rs) if recip else np.float32(v[j] / s)
            t = np.float32(p * inv_out)
            if half_even:
                q = np.rint(t)
            else:  # std::round: halves away from zero (exact: no float add)
                a = np.abs(t)
                q = np.floor(a)
                if a - q >= np.float32(0.5):
                    q += np.float32(1.0)
                if t < 0:
                    q = -q
            qi = np.int64(q) + out_zp
            if qi < qmin:
                qi = qmin
            if qi > qmax:
                qi = qmax
            out[r, j] = qi
