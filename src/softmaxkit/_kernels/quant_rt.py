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
the per-element formulas' (each output depends on ``d`` only).  The float32 sums
run four rows at a time (``_row_sums``: four independent add chains, each row in
its own order, so the same bits; the add latency had made them the bottleneck),
and the float route's ``exp`` is tabulated per row maximum (``_fill_exp``).
Tests: ``tests/test_quant_runtimes.py`` (vectors recorded from onnxruntime and
torch), ``tests/test_quant_qnnpack.py`` (torch's QNNPACK engine),
``tests/test_quant_rowblocks.py`` (rows independent of their neighbours).
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


@njit(cache=True, nogil=True, inline="always")
def _fsum4(x, r, tab, t0, t1, t2, t3, m0, m1, m2, m3):
    """Sequential float32 sums of ``tab[tk, mk - x[r + k, j]]`` over ``j``, rows
    ``r..r+3`` interleaved: four independent chains hide the add latency, and each
    row's sum keeps its own left-to-right order (the same bits as one row at a time:
    the replay tests in ``tests/test_quant_runtimes.py``).
    """
    s0 = np.float32(0.0)
    s1 = np.float32(0.0)
    s2 = np.float32(0.0)
    s3 = np.float32(0.0)
    for j in range(x.shape[1]):
        s0 = np.float32(s0 + tab[t0, m0 - np.int32(x[r, j])])
        s1 = np.float32(s1 + tab[t1, m1 - np.int32(x[r + 1, j])])
        s2 = np.float32(s2 + tab[t2, m2 - np.int32(x[r + 2, j])])
        s3 = np.float32(s3 + tab[t3, m3 - np.int32(x[r + 3, j])])
    return s0, s1, s2, s3


@njit(cache=True, nogil=True, inline="always")
def _fsum1(x, r, tab, t, m):
    s = np.float32(0.0)
    for j in range(x.shape[1]):
        s = np.float32(s + tab[t, m - np.int32(x[r, j])])
    return s


@njit(cache=True, nogil=True)
def _row_sums(x, r, g, tab, ti, ms, sums):
    """``sums[k]``: the sequential float32 sum of row ``r + k`` (``k < g``), the
    entries ``tab[ti[k], ms[k] - x]``; four rows at a time when ``g == 4``."""
    if g == 4:
        s0, s1, s2, s3 = _fsum4(x, r, tab, ti[0], ti[1], ti[2], ti[3], ms[0], ms[1], ms[2], ms[3])
        sums[0] = s0
        sums[1] = s1
        sums[2] = s2
        sums[3] = s3
    else:
        for k in range(g):
            sums[k] = _fsum1(x, r + k, tab, ti[k], ms[k])


@njit(cache=True, nogil=True)
def lut_float_rows(x, table, y_scale, zp, qmin, qmax, out, r0, r1):
    """ONNX Runtime ``QlinearSoftmaxCPU``: float32 table, float32 sum, ``nearbyintf``.

    ``y = clamp(nearbyintf(table[d] * (y_scale / sum)) + zp, qmin, qmax)``.  The
    order of the product and the clamp are fixed by onnxruntime 1.32 itself (the
    source's ``(t * y_scale) / sum`` would overflow to inf where 1.32 does not,
    and its int8 cast would wrap 128 to -128 where 1.32 saturates):
    ``tests/test_quant_runtimes.py::test_onnxruntime_vectors``.  The sequential
    sums of four rows run interleaved (``_row_sums``).
    """
    tab = table.reshape(1, 256)
    otab = np.empty(256, dtype=np.int64)
    ms = np.empty(4, dtype=np.int32)
    los = np.empty(4, dtype=np.int32)
    ti = np.zeros(4, dtype=np.int64)
    sums = np.empty(4, dtype=np.float32)
    for rb in range(r0, r1, 4):
        g = min(4, r1 - rb)
        for k in range(g):
            m, lo = _maxmin(x, rb + k)
            ms[k] = m
            los[k] = lo
        _row_sums(x, rb, g, tab, ti, ms, sums)
        for k in range(g):
            r = rb + k
            m = ms[k]
            f = np.float32(y_scale / sums[k])
            for d in range(m - los[k] + 1):
                q = np.int64(np.rint(np.float32(table[d] * f))) + zp
                otab[d] = min(max(q, qmin), qmax)
            for j in range(x.shape[1]):
                out[r, j] = otab[m - np.int32(x[r, j])]


@njit(cache=True, nogil=True)
def lut32norm_rows(x, table, out, zero_row, r0, r1):
    """QNNPACK / XNNPACK ``u8lut32norm``: uint32 table, uint32 sum, rounded division.

    ``y = min(((t << 8) + sum // 2) // sum, 255)`` with ``t = table[max - x]`` and
    the sum modulo 2^32.  A row whose sum wraps to exactly 0 (1024 equal values:
    ``1024 * lrint((2^32 - 1) / 1024) = 2^32``) divides by zero in both runtimes
    (torch's QNNPACK engine dies with SIGFPE); here its row index goes to
    ``zero_row[0]`` and the caller raises.
    """
    n = x.shape[1]
    otab = np.empty(256, dtype=np.uint64)
    for r in range(r0, r1):
        m, lo = _maxmin(x, r)
        s = np.uint64(0)
        for j in range(n):
            s += np.uint64(table[m - np.int32(x[r, j])])
        s = s & np.uint64(0xFFFFFFFF)  # the runtimes' uint32 sum (wraps past 2^32)
        if s == 0:
            zero_row[0] = r
            continue
        # ((t << 8) + s // 2) // s in float64, exact: numerator and divisor are below
        # 2^32, and a quotient just below an integer k lies at least 1 / s below it, a
        # relative gap >= 2^-32 that the correctly rounded division (2^-53) cannot
        # close; so floor gives the integer quotient (a 64-bit division per entry
        # was 256 serial divisions a row)
        sf = np.float64(s)
        half = np.float64(s >> np.uint64(1))
        for d in range(m - lo + 1):
            q = np.floor((np.float64(table[d]) * 256.0 + half) / sf)
            otab[d] = np.uint64(min(q, 255.0))
        for j in range(n):
            out[r, j] = otab[m - np.int32(x[r, j])]


@njit(cache=True, nogil=True, inline="always")
def _dequant(xv, in_scale, in_zp, premul, fma_deq):
    if fma_deq:
        return np.float32(np.float64(in_scale) * np.float64(xv) + np.float64(premul))
    return np.float32(np.float32(xv - in_zp) * in_scale)


@njit(cache=True, nogil=True)
def _fill_exp(etab, filled, m, dmax, in_scale, in_zp, premul, fma_deq):
    """Extend ``etab[m & 255, :]`` (the float route's ``exp`` of every difference
    below the max ``m``) up to the difference ``dmax``.

    ``exp(v(m - d) - v(m))`` depends on ``(m, d)`` only, so a call computes each at
    most once per max instead of once per row: the same ``expf`` of the same
    float32 argument, hence the same bits.
    """
    mi = m & 255
    f = filled[mi]
    if f >= dmax:
        return
    vm = _dequant(m, in_scale, in_zp, premul, fma_deq)
    for d in range(f + 1, dmax + 1):
        etab[mi, d] = np.exp(np.float32(_dequant(m - d, in_scale, in_zp, premul, fma_deq) - vm))
    filled[mi] = dmax


@njit(cache=True, nogil=True)
def float_route_rows(
    x, in_scale, in_zp, fma_deq, inv_out, out_zp, half_even, recip, qmin, qmax, out, r0, r1
):
    """Dequantise, float32 softmax, requantise; per row, sequential float32 sum.

    Dequantise ``(x - zp) * s`` (or ``fma(s, x, -zp * s)`` when ``fma_deq``, one
    rounding of the exact value), ``e = exp(v - max)``, ``p = e / sum`` (or ``e *
    (1 / sum)`` when ``recip``), ``q = round(p * inv_out) + zp`` clamped, rounding
    halves to even (``nearbyint``) or away from zero (``std::round``).

    Pass structure, four rows at a time: pass 1 each row's max and min; ``e``
    depends on the max ``m`` and ``d = m - x`` only, so it is tabulated per max
    (``_fill_exp``: 256 ``expf`` per distinct max in the range, not per row); pass 2
    the four rows' sequential sums interleaved (``_row_sums``); then each row's
    output for every ``d`` in ``[0, m - min]`` and pass 3 gathers it.
    """
    etab = np.empty((256, 256), dtype=np.float32)
    filled = np.full(256, -1, dtype=np.int64)
    otab = np.empty(256, dtype=np.int64)
    ms = np.empty(4, dtype=np.int32)
    los = np.empty(4, dtype=np.int32)
    ti = np.empty(4, dtype=np.int64)
    sums = np.empty(4, dtype=np.float32)
    premul = np.float32(-np.float32(in_zp) * in_scale)
    for rb in range(r0, r1, 4):
        g = min(4, r1 - rb)
        for k in range(g):
            m, lo = _maxmin(x, rb + k)
            ms[k] = m
            los[k] = lo
            ti[k] = m & 255
            _fill_exp(etab, filled, m, m - lo, in_scale, in_zp, premul, fma_deq)
        _row_sums(x, rb, g, etab, ti, ms, sums)
        for k in range(g):
            r = rb + k
            m = ms[k]
            s = sums[k]
            mi = ti[k]
            rs = np.float32(np.float32(1.0) / s)
            for d in range(m - los[k] + 1):
                e = etab[mi, d]
                p = np.float32(e * rs) if recip else np.float32(e / s)
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
            for j in range(x.shape[1]):
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
