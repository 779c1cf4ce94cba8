"""Integer softmax kernels of other runtimes: ONNX Runtime, QNNPACK/XNNPACK, float route.

Private (``softmaxkit.quantized._runtimes`` derives the tables and validates).  Each
kernel is a serial ``nogil`` function over the row range ``[r0, r1)`` of a
C-contiguous ``x[R, n]`` (int8 or uint8), dispatched on several threads by
``_parallel.run``; inside a row the order of every float32 sum is the runtime's
(sequential), which is what keeps them bit-exact.

Every 8-bit kernel indexes its table by the difference ``d = max - x`` (0..255):
``table[d]`` is the runtime's table entry for ``x = max - d``.

Pass structure per row: pass 1 row max and min; pass 2 sum of table entries
(uint32 sum for QNNPACK, float32 sequential for ONNX Runtime, float32 of ``exp``
for the float route), in the runtime's order; then the output of every
difference ``d`` in ``[0, max - min]`` (at most 256 values: one rounding or
division per value instead of per element); pass 3 gathers it.  The results are
the per-element formulas' (each output depends on ``d`` only).  Tests:
``tests/test_quant_runtimes.py`` (vectors recorded from onnxruntime and torch).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from .fixedpoint import mul_by_quantized_multiplier


@njit(cache=True, nogil=True, inline="always")
def _maxmin(x, r):
    m = np.int32(x[r, 0])
    lo = m
    for j in range(1, x.shape[1]):
        v = np.int32(x[r, j])
        m = max(m, v)
        lo = min(lo, v)
    return m, lo


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
    otab = np.empty(256, dtype=np.int64)
    for r in range(r0, r1):
        m, lo = _maxmin(x, r)
        s = np.float32(0.0)
        for j in range(n):
            s = np.float32(s + table[m - np.int32(x[r, j])])
        f = np.float32(y_scale / s)
        for d in range(m - lo + 1):
            q = np.int64(np.rint(np.float32(table[d] * f))) + zp
            otab[d] = min(max(q, qmin), qmax)
        for j in range(n):
            out[r, j] = otab[m - np.int32(x[r, j])]


@njit(cache=True, nogil=True)
def lut32norm_rows(x, table, out, r0, r1):
    """QNNPACK / XNNPACK ``u8lut32norm``: uint32 table, uint32 sum, rounded division.

    ``y = min(((t << 8) + sum // 2) // sum, 255)`` with ``t = table[max - x]``.
    """
    n = x.shape[1]
    otab = np.empty(256, dtype=np.uint64)
    for r in range(r0, r1):
        m, lo = _maxmin(x, r)
        s = np.uint64(0)
        for j in range(n):
            s += np.uint64(table[m - np.int32(x[r, j])])
        s = s & np.uint64(0xFFFFFFFF)  # uint32 sum (the table keeps it below 2^32)
        half = s >> np.uint64(1)
        for d in range(m - lo + 1):
            q = ((np.uint64(table[d]) << np.uint64(8)) + half) // s
            otab[d] = min(q, np.uint64(255))
        for j in range(n):
            out[r, j] = otab[m - np.int32(x[r, j])]


@njit(cache=True, nogil=True, inline="always")
def _dequant(xv, in_scale, in_zp, premul, fma_deq):
    if fma_deq:
        return np.float32(np.float64(in_scale) * np.float64(xv) + np.float64(premul))
    return np.float32(np.float32(xv - in_zp) * in_scale)


@njit(cache=True, nogil=True)
def float_route_rows(
    x, in_scale, in_zp, fma_deq, inv_out, out_zp, half_even, recip, qmin, qmax, out, r0, r1
):
    """Dequantise, float32 softmax, requantise; per row, sequential float32 sum.

    Dequantise ``(x - zp) * s`` (or ``fma(s, x, -zp * s)`` when ``fma_deq``, one
    rounding of the exact value), ``e = exp(v - max)``, ``p = e / sum`` (or ``e *
    (1 / sum)`` when ``recip``), ``q = round(p * inv_out) + zp`` clamped, rounding
    halves to even (``nearbyint``) or away from zero (``std::round``).  ``v - max``
    depends on ``d = max - x`` only, so ``e`` is tabulated per row over ``d``.
    """
    n = x.shape[1]
    etab = np.empty(256, dtype=np.float32)
    otab = np.empty(256, dtype=np.int64)
    premul = np.float32(-np.float32(in_zp) * in_scale)
    for r in range(r0, r1):
        m, lo = _maxmin(x, r)
        vm = _dequant(m, in_scale, in_zp, premul, fma_deq)
        for d in range(m - lo + 1):
            etab[d] = np.exp(np.float32(_dequant(m - d, in_scale, in_zp, premul, fma_deq) - vm))
        s = np.float32(0.0)
        for j in range(n):
            s = np.float32(s + etab[m - np.int32(x[r, j])])
        rs = np.float32(np.float32(1.0) / s)
        for d in range(m - lo + 1):
            p = np.float32(etab[d] * rs) if recip else np.float32(etab[d] / s)
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
            otab[d] = min(max(np.int64(q) + out_zp, qmin), qmax)
        for j in range(n):
            out[r, j] = otab[m - np.int32(x[r, j])]


@njit(cache=True, nogil=True)
def _quantize_multiplier(real):
    """TFLite ``QuantizeMultiplier`` of a double: ``real = q * 2^shift``, q Q0.31."""
    if real == 0.0:
        return np.int64(0), np.int64(0)
    frac, shift = math.frexp(real)
    a = abs(frac * 2147483648.0)
    q = math.floor(a)
    if a - q >= 0.5:  # std::round: halves away from zero
        q += 1.0
    qi = np.int64(q) if frac >= 0 else -np.int64(q)
    sh = np.int64(shift)
    if qi == 2147483648:
        qi //= 2
        sh += 1
    if sh < -31:
        return np.int64(0), np.int64(0)
    return qi, sh


@njit(cache=True, nogil=True)
def lut16_rows(x, table, out_scale, zp, qmin, qmax, out, r0, r1):
    """TFLite ``optimized_ops::SoftmaxInt8LUT`` (ARM64 builds): uint16 exp table, int32 sum.

    ``inv = 1.0f / (float(sum) * out_scale)``, ``(mult, shift) =
    QuantizeMultiplier(inv)``, ``y = clamp(MultiplyByQuantizedMultiplier(t[d],
    mult, shift) + zp)``, the sum wrapping at 32 bits.  Bit-exact against the aarch64
    LiteRT 2.3.0 wheel run under qemu-user: ``tests/test_quant_arm64.py``.
    """
    n = x.shape[1]
    otab = np.empty(256, dtype=np.int64)
    for r in range(r0, r1):
        m, lo = _maxmin(x, r)
        s = np.int64(0)
        for j in range(n):
            s += np.int64(table[m - np.int32(x[r, j])])
        s = ((s + 2147483648) & 0xFFFFFFFF) - 2147483648  # int32 accumulator
        inv = np.float32(np.float32(1.0) / np.float32(np.float32(s) * out_scale))
        mult, shift = _quantize_multiplier(np.float64(inv))
        for d in range(m - lo + 1):
            q = mul_by_quantized_multiplier(np.int64(table[d]), mult, shift) + zp
            otab[d] = min(max(q, qmin), qmax)
        for j in range(n):
            out[r, j] = otab[m - np.int32(x[r, j])]
