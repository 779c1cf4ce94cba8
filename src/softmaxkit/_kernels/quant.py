"""Integer softmax kernels bit-exact with TensorFlow Lite and CMSIS-NN (Numba).

Everything here is private: the public layer (``softmaxkit.quantized``) derives
the parameters, validates the arguments and turns the per-row status codes into
errors.  The fixed-point helpers (``fixedpoint.py``) reproduce gemmlowp's ``fixedpoint.h``
and TFLite's ``kernels/internal/common.h`` on 32-bit two's-complement values held in
int64 (so that intermediate products never overflow and wrap-around is explicit,
``_wrap32``).

Kernels see C-contiguous 2-D arrays ``x[R, n]`` whose rows are the softmax rows
and write ``out[R, n]`` and ``status[R]`` (``OK``, ``RANGE``: the runtime aborts
on this row, ``OVERFLOW``: the int32 sum of exps wraps around).  Rows run in
parallel (``_parallel.over_rows``: serial kernels over row ranges on the library's
thread pool, fork-safe); inside a row the order of the float32 sums is the
runtime's (sequential), which is what makes the optimized kernels bit-exact.

Pass structure (8-bit inputs): a difference ``d = max - x`` takes at most 256
values, so every per-element function of ``d`` (the fixed-point exp, the float
table) is tabulated once per call; then per row

* pass 1: row max;
* pass 2: sum of exps (int64 accumulator checked against int32 overflow for the
  fixed-point kernels; float32 sequential accumulator for the float kernels);
* pass 3: write ``out`` from the table entry and the row's reciprocal.

Tests guarding the bit-exactness: ``tests/test_quantized.py::test_tflite_vectors``
(vectors recorded from the LiteRT interpreter).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from ._parallel import over_rows
from .fixedpoint import (
    _I32_MAX,
    _I32_MIN,
    _rdbpot,
    _srdhm,
    _wrap32,
    clz32,
    exp_on_negative_values_q5,
    get_reciprocal,
    log_x_ge_1_q5_from_q12,
    mul_by_quantized_multiplier,
)
from .quant_rt import _row_sums

OK = 0
RANGE = 1  # TFLITE_CHECK(0 <= exponent <= 31) fails: the reference kernel aborts
OVERFLOW = 2  # the int32 accumulator of the sum of exps wraps around

# --------------------------------------------------------------------------
# Tables (one per call)
# --------------------------------------------------------------------------


@njit(cache=True, nogil=True)
def fixed_exp_table(multiplier, shift, diff_min, size):
    """exp[d] = Q0.31 exp of the input difference -d, 0 where -d < diff_min; keep[d]."""
    exp = np.zeros(size, dtype=np.int64)
    keep = np.zeros(size, dtype=np.bool_)
    for d in range(size):
        if -d >= diff_min:
            scaled = _srdhm(_wrap32(-d * (np.int64(1) << shift)), multiplier)
            exp[d] = exp_on_negative_values_q5(scaled)
            keep[d] = True
    return exp, keep


@njit(cache=True, nogil=True)
def fixed_diff_q5_table(multiplier, shift, size):
    """diff_q5[d] = the Q5.26 rescaled input difference -d (log_softmax's numerator)."""
    t = np.zeros(size, dtype=np.int64)
    for d in range(size):
        t[d] = mul_by_quantized_multiplier(-d, multiplier, shift)
    return t


@njit(cache=True, nogil=True)
def float_exp_table(neg_scale, size):
    """table[d] = expf(neg_scale * d) in float32 (PopulateSoftmaxLookupTable)."""
    t = np.empty(size, dtype=np.float32)
    for d in range(size):
        t[d] = math.exp(np.float32(neg_scale * np.float32(d)))
    return t


# --------------------------------------------------------------------------
# Row kernels, 8-bit input
# --------------------------------------------------------------------------


@njit(cache=True, nogil=True, inline="always")
def _row_max(x, i):
    m = np.int64(x[i, 0])
    for j in range(1, x.shape[1]):
        v = np.int64(x[i, j])
        if v > m:
            m = v
    return m


@njit(cache=True, nogil=True)
def _fail_row(i, code, out, fill, status):
    """Row i cannot be computed as the runtime does: status ``code``, every output
    ``fill`` (the runtime aborts, or its int32 sum wraps around)."""
    status[i] = code
    for j in range(out.shape[1]):
        out[i, j] = fill


@njit(cache=True, nogil=True)
def _q12_terms(exp, keep):
    """The Q12.19 term of each difference d (``Rescale<12>`` of its Q0.31 exp, 0 where
    dropped): tabulated once per call, as every term depends on d alone."""
    e12 = np.zeros(exp.shape[0], dtype=np.int64)
    for d in range(exp.shape[0]):
        if keep[d]:
            e12[d] = _rdbpot(exp[d], 12)
    return e12


@njit(cache=True, nogil=True, inline="always")
def _sum_q12(x, i, m, e12):
    """Row i's Q12.19 sum of exps (int64: may pass the int32 range)."""
    s = np.int64(0)
    for j in range(x.shape[1]):
        s += e12[m - np.int64(x[i, j])]
    return s


@over_rows(cost=32)
@njit(cache=True, nogil=True)
def softmax_fixed_rows(x, exp, keep, out_bits, out_min, out_max, out, status, r0, r1):
    """TFLite reference_ops::Softmax (= CMSIS-NN arm_softmax_s8/_u8/_s8_s16).

    Accumulator: the Q12.19 sum of exps in int64, checked against the int32 range
    (``OVERFLOW``) and against the kernel's ``0 <= exponent <= 31`` check
    (``RANGE``, a sum >= 512 for 8-bit output).  Three passes per row; the terms
    and, for rows longer than the table, the outputs are tabulated by difference.
    """
    # Every term depends on the row's difference d = max - x alone (at most ``size``
    # values), so the Q12.19 terms are tabulated once and, for rows longer than the
    # table, the outputs once per row: the same integers as the per-element formula,
    # with a gather per element instead of a rounding multiply.
    size = exp.shape[0]
    n = x.shape[1]
    e12 = _q12_terms(exp, keep)
    tab = np.empty(size, dtype=out.dtype)
    for i in range(r0, r1):
        m = _row_max(x, i)
        s = _sum_q12(x, i, m, e12)
        if s > _I32_MAX:
            _fail_row(i, OVERFLOW, out, out_min, status)
            continue
        scale, num_bits_over_unit = get_reciprocal(s, 12)
        exponent = num_bits_over_unit + 31 - out_bits
        if exponent < 0 or exponent > 31:
            _fail_row(i, RANGE, out, out_min, status)
            continue
        status[i] = OK
        if n > size:
            for d in range(size):
                if keep[d]:
                    v = _rdbpot(_srdhm(scale, exp[d]), exponent) + out_min
                    tab[d] = min(max(v, out_min), out_max)
                else:
                    tab[d] = out_min
            for j in range(n):
                out[i, j] = tab[m - np.int64(x[i, j])]
            continue
        for j in range(n):
            d = m - np.int64(x[i, j])
            if keep[d]:
                v = _rdbpot(_srdhm(scale, exp[d]), exponent) + out_min
                out[i, j] = min(max(v, out_min), out_max)
            else:
                out[i, j] = out_min


@njit(cache=True, nogil=True, inline="always")
def _quantize_p(e, inv, trunc, zero_point, out_min, out_max):
    # the output of a table entry e for the row's reciprocal inv
    p = np.float32(e * inv)
    if trunc:
        q = np.int64(np.float32(p + np.float32(0.5)))
    else:
        q = np.int64(math.floor(np.float64(p) + 0.5))  # exact: p >= 0, 24-bit
    v = q + zero_point
    return min(max(v, out_min), out_max)


@over_rows(cost=16)
@njit(cache=True, nogil=True)
def softmax_float_rows(
    x, table, out_scale, zero_point, out_min, out_max, trunc, out, status, r0, r1
):
    """TFLite optimized_ops::Softmax (x86-64 build): float32 exp table, float32 sums.

    Accumulator: float32, summed sequentially in row order as the C++ loop does.
    ``trunc``: uint8 output quantizes as ``(int)(p + 0.5f)`` (non-aarch64
    specialisation), others as ``std::round(p)``.  Two passes per row.  Rows at
    least as long as the table write through a per-row table of the outputs of
    each ``d = max - x`` (the same function of ``d``, so the same bits): the
    per-element float work of pass 2 became a byte lookup, [4096, 1000] int8
    9.1 -> 6.1 ms on one thread (the loop of per-element quantization ran 6.7 ms
    when it was a ``parallel=True`` loop, whose no-alias arguments let LLVM
    vectorise it).  The sequential sums of four rows run interleaved
    (``quant_rt._row_sums``: four add chains, each row in its own order).
    """
    nt = table.shape[0]
    tab = table.reshape(1, nt)
    qt = np.empty(nt, dtype=np.int64)
    ms = np.empty(4, dtype=np.int64)
    ti = np.zeros(4, dtype=np.int64)
    sums = np.empty(4, dtype=np.float32)
    for rb in range(r0, r1, 4):
        g = min(4, r1 - rb)
        for k in range(g):
            ms[k] = _row_max(x, rb + k)
        _row_sums(x, rb, g, tab, ti, ms, sums)  # four rows' sequential sums interleaved
        for k in range(g):
            i = rb + k
            m = ms[k]
            inv = np.float32(np.float32(1.0) / np.float32(sums[k] * out_scale))
            status[i] = OK
            if x.shape[1] >= nt:
                for d in range(nt):
                    qt[d] = _quantize_p(table[d], inv, trunc, zero_point, out_min, out_max)
                for j in range(x.shape[1]):
                    out[i, j] = qt[m - np.int64(x[i, j])]
                continue
            for j in range(x.shape[1]):
                e = table[m - np.int64(x[i, j])]
                out[i, j] = _quantize_p(e, inv, trunc, zero_point, out_min, out_max)


@over_rows(cost=32)
@njit(cache=True, nogil=True)
def log_softmax_fixed_rows(
    x,
    exp,
    keep,
    diff_q5,
    rev_multiplier,
    rev_shift,
    diff_min,
    zero_point,
    out_min,
    out_max,
    out,
    status,
    r0,
    r1,
):
    """TFLite reference LogSoftmax (int8: reference_integer_ops, uint8: reference_ops).

    Accumulator: Q12.19 sum of exps in int64 (``OVERFLOW`` past the int32 range);
    log by ``log_x_for_x_greater_than_or_equal_to_1``; output Q4 at 16/256 steps.
    Three passes per row.
    """
    e12 = _q12_terms(exp, keep)
    for i in range(r0, r1):
        m = _row_max(x, i)
        s = _sum_q12(x, i, m, e12)
        if s > _I32_MAX:
            _fail_row(i, OVERFLOW, out, out_min, status)
            continue
        status[i] = OK
        log_sum = log_x_ge_1_q5_from_q12(s)
        shifted_log_sum = _wrap32(log_sum + _I32_MIN)
        adjusted_diff_min = max(
            diff_min - 1, _rdbpot(_srdhm(shifted_log_sum, rev_multiplier), rev_shift)
        )
        for j in range(x.shape[1]):
            d = m - np.int64(x[i, j])
            if -d > adjusted_diff_min:
                v = _rdbpot(_wrap32(diff_q5[d] - log_sum), 22) + zero_point
                out[i, j] = min(max(v, out_min), out_max)
            else:
                out[i, j] = out_min


@over_rows(cost=16)
@njit(cache=True, nogil=True)
def log_softmax_float_rows(
    x, table, input_scale, out_scale, zero_point, out_min, out_max, fma, out, status, r0, r1
):
    """TFLite optimized_ops::LogSoftmax for 8-bit input: float32 table, logf, rint.

    Accumulator: float32, sequential.  ``fma``: evaluate ``scale * x - precomputed``
    with one rounding (a fused multiply-add, as the compiled runtime does when
    it contracts the expression).  Two passes per row.
    """
    scale = np.float32(input_scale / out_scale)
    for i in range(r0, r1):
        m = _row_max(x, i)
        s = np.float32(0.0)
        for j in range(x.shape[1]):
            s = np.float32(s + table[m - np.int64(x[i, j])])
        log_sum = np.float32(math.log(s))
        precomputed = np.float32(
            np.float32(np.float32(input_scale * np.float32(m)) + log_sum) / out_scale
        )
        status[i] = OK
        for j in range(x.shape[1]):
            xv = np.float32(x[i, j])
            if fma:
                # exact product in float64 (24 x 24 bits), then one rounding to float32
                lp = np.float32(np.float64(scale) * np.float64(xv) - np.float64(precomputed))
            else:
                lp = np.float32(np.float32(scale * xv) - precomputed)
            q = np.int64(np.rint(np.float64(lp))) + zero_point
            out[i, j] = min(max(q, out_min), out_max)


# --------------------------------------------------------------------------
# int16 input (LUT path)
# --------------------------------------------------------------------------


@njit(cache=True, nogil=True, inline="always")
def _lut_lookup16(value, lut):
    """TFLite LUTLookup(int16, 513-entry LUT) with 7-bit linear interpolation."""
    index = 256 + (value >> 7)
    offset = value & 0x7F
    base = np.int64(lut[index])
    slope = np.int64(lut[index + 1]) - base
    delta = (slope * offset + 64) >> 7
    r = base + delta
    return ((r + 32768) & 0xFFFF) - 32768  # static_cast<int16_t>


@over_rows(cost=32)
@njit(cache=True, nogil=True)
def softmax_int16_rows(x, multiplier, shift, exp_lut, recip_lut, out, status, r0, r1):
    """TFLite reference_ops::SoftmaxInt16 (used by both TFLite kernels).

    Accumulator: int32 (checked: ``OVERFLOW``) sum of Q0.15 exps from the exp LUT
    on [-10, 0]; reciprocal from the 1/(1+x) LUT.  Two passes per row (the exps
    are recomputed instead of cached in ``out``).
    """
    for i in range(r0, r1):
        m = _row_max(x, i)
        s = np.int64(0)
        for j in range(x.shape[1]):
            scaled = mul_by_quantized_multiplier(np.int64(x[i, j]) - m, multiplier, shift)
            sym = min(max(scaled + 32767, -32768), 32767)
            s += _lut_lookup16(sym, exp_lut)
        if s > _I32_MAX:
            _fail_row(i, OVERFLOW, out, 0, status)
            continue
        status[i] = OK
        headroom_plus_one = clz32(s)
        shifted_sum = ((s << (headroom_plus_one - 1)) + (1 << 13)) >> 14
        sym_sum = min(max(shifted_sum - ((1 << 15) + (1 << 16)), -32768), 32767)
        recip = _lut_lookup16(sym_sum, recip_lut)
        right_shift = 31 - headroom_plus_one
        rnd = np.int64(1) << (right_shift - 1)
        for j in range(x.shape[1]):
            scaled = mul_by_quantized_multiplier(np.int64(x[i, j]) - m, multiplier, shift)
            sym = min(max(scaled + 32767, -32768), 32767)
            e = _lut_lookup16(sym, exp_lut)
            r = (e * recip + rnd) >> right_shift
            out[i, j] = min(max(r, 0), 32767)
