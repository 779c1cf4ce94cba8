"""Integer softmax kernels bit-exact with TensorFlow Lite and CMSIS-NN (Numba).

Everything here is private: the public layer (``softmaxkit.quantized``) derives
the parameters, validates the arguments and turns the per-row status codes into
errors.  The fixed-point helpers reproduce gemmlowp's ``fixedpoint.h`` and
TFLite's ``kernels/internal/common.h`` on 32-bit two's-complement values held in
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

OK = 0
RANGE = 1  # TFLITE_CHECK(0 <= exponent <= 31) fails: the reference kernel aborts
OVERFLOW = 2  # the int32 accumulator of the sum of exps wraps around

_I32_MIN = -(1 << 31)
_I32_MAX = (1 << 31) - 1


# --------------------------------------------------------------------------
# 32-bit fixed-point primitives (gemmlowp fixedpoint.h, TFLite common.h)
# --------------------------------------------------------------------------


@njit(cache=True, nogil=True, inline="always")
def _wrap32(v):
    """Two's-complement wrap of an int64 to the int32 range (plain C++ int32 +/-)."""
    return ((v + 2147483648) & 0xFFFFFFFF) - 2147483648


@njit(cache=True, nogil=True, inline="always")
def _srdhm(a, b):
    """SaturatingRoundingDoublingHighMul: round(a*b / 2^31), -1*-1 saturated (VQRDMULH)."""
    if a == _I32_MIN and b == _I32_MIN:
        return np.int64(_I32_MAX)
    ab = np.int64(a) * np.int64(b)
    if ab >= 0:
        return (ab + 1073741824) >> 31  # (ab + 2^30) / 2^31, truncation = floor here
    t = ab + (1 - 1073741824)
    return -((-t) >> 31)  # C division truncates toward zero


@njit(cache=True, nogil=True, inline="always")
def _rdbpot(x, exponent):
    """RoundingDivideByPOT: x / 2^exponent rounded to nearest, ties away from zero."""
    mask = (np.int64(1) << exponent) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (1 if x < 0 else 0)
    return (x >> exponent) + (1 if remainder > threshold else 0)


@njit(cache=True, nogil=True, inline="always")
def _sat_shl(x, exponent):
    """SaturatingRoundingMultiplyByPOT with a positive exponent (saturating left shift)."""
    if exponent == 0:
        return x
    threshold = (np.int64(1) << (31 - exponent)) - 1
    if x > threshold:
        return np.int64(_I32_MAX)
    if x < -threshold:
        return np.int64(_I32_MIN)
    return _wrap32(x << exponent)


@njit(cache=True, nogil=True)
def clz32(v):
    """Count leading zeros of ``v`` as an unsigned 32-bit value (32 for 0)."""
    v = v & 0xFFFFFFFF
    n = 0
    bit = np.int64(1) << 31
    while n < 32 and (v & bit) == 0:
        n += 1
        bit >>= 1
    return n


@njit(cache=True, nogil=True)
def mul_by_quantized_multiplier(x, multiplier, shift):
    """TFLite MultiplyByQuantizedMultiplier(int32, int32, int) (double rounding)."""
    left = shift if shift > 0 else 0
    right = 0 if shift > 0 else -shift
    return _rdbpot(_srdhm(_wrap32(x * (np.int64(1) << left)), multiplier), right)


@njit(cache=True, nogil=True)
def _exp_quarter(a):
    """exp(a) for a in [-1/4, 0), Q0.31 in and out (Taylor series around -1/8)."""
    constant_term = 1895147668  # exp(-1/8)
    constant_1_over_3 = 715827883
    x = _wrap32(a + (1 << 28))
    x2 = _srdhm(x, x)
    x3 = _srdhm(x2, x)
    x4 = _srdhm(x2, x2)
    x4_over_4 = _rdbpot(x4, 2)
    t = _wrap32(_srdhm(_wrap32(x4_over_4 + x3), constant_1_over_3) + x2)
    t = _rdbpot(t, 1)
    return _wrap32(constant_term + _srdhm(constant_term, _wrap32(x + t)))


@njit(cache=True, nogil=True)
def exp_on_negative_values_q5(a):
    """gemmlowp exp_on_negative_values for a Q5.26 input a <= 0; Q0.31 result."""
    one_quarter = 1 << 24  # ConstantPOT<-2> with 26 fractional bits
    mask = one_quarter - 1
    a_mod_quarter_minus_one_quarter = _wrap32((a & mask) - one_quarter)
    result = _exp_quarter(_sat_shl(a_mod_quarter_minus_one_quarter, 5))
    remainder = _wrap32(a_mod_quarter_minus_one_quarter - a)
    # barrel shifter: multiply by exp(-2^k) for every set bit 2^k of -a (k = -2..4)
    if remainder & (1 << 24):
        result = _srdhm(result, 1672461947)
    if remainder & (1 << 25):
        result = _srdhm(result, 1302514674)
    if remainder & (1 << 26):
        result = _srdhm(result, 790015084)
    if remainder & (1 << 27):
        result = _srdhm(result, 290630308)
    if remainder & (1 << 28):
        result = _srdhm(result, 39332535)
    if remainder & (1 << 29):
        result = _srdhm(result, 720401)
    if remainder & (1 << 30):
        result = _srdhm(result, 242)
    if a == 0:
        result = np.int64(_I32_MAX)
    return result


@njit(cache=True, nogil=True)
def one_over_one_plus_x(a):
    """gemmlowp one_over_one_plus_x_for_x_in_0_1: Q0.31 in [0, 1) -> Q0.31 1/(1+a)."""
    s = np.int64(a) + _I32_MAX  # RoundingHalfSum(a, One) with One = INT32_MAX
    half_denominator = (s + 1) // 2 if s >= 0 else -((-s + 1) // 2)
    x = _wrap32(1515870810 + _srdhm(half_denominator, -1010580540))  # 48/17 - 32/17 d
    for _ in range(3):
        half_denominator_times_x = _srdhm(half_denominator, x)
        one_minus = _wrap32((1 << 29) - half_denominator_times_x)
        x = _wrap32(x + _sat_shl(_srdhm(x, one_minus), 2))
    return _sat_shl(x, 1)


@njit(cache=True, nogil=True)
def get_reciprocal(s, integer_digits):
    """TFLite GetReciprocal: (Q0.31 1/x shifted, num_bits_over_unit) of a Q(digits) x."""
    headroom_plus_one = clz32(s)
    num_bits_over_unit = integer_digits - headroom_plus_one
    shifted_sum_minus_one = _wrap32(((s << headroom_plus_one) & 0xFFFFFFFF) - (1 << 31))
    return one_over_one_plus_x(shifted_sum_minus_one), num_bits_over_unit


@njit(cache=True, nogil=True)
def _sat_shl_param(x, exponent):
    """SaturatingRoundingMultiplyByPOTParam (exponent >= 0 here)."""
    return _sat_shl(x, exponent)


@njit(cache=True, nogil=True)
def _sat_add(a, b):
    return min(max(a + b, _I32_MIN), _I32_MAX)


@njit(cache=True, nogil=True)
def log_x_ge_1_q5_from_q12(x):
    """TFLite log_x_for_x_greater_than_or_equal_to_1<5>(Q12.19 x): Q5.26 log(x)."""
    input_integer_bits = 12
    accum_bits = 6  # OutputIntegerBits + 1
    log_2 = 1488522236
    sqrt_sqrt_half = 1805811301
    sqrt_half = 1518500250
    alpha_n = 117049297
    alpha_d = 127690142
    alpha_i = 1057819769
    alpha_f = 638450708
    shifted_quarter = _rdbpot(np.int64(536870912), accum_bits)  # Rescale<6>(1/4)

    z_a = x
    z_a_headroom_plus_1 = clz32(z_a)
    r_a_tmp = _sat_shl_param(z_a, z_a_headroom_plus_1 - 1)
    r_a_raw = _sat_shl_param(_srdhm(r_a_tmp, sqrt_half), 1)
    z_a_pow_2_adj = _sat_add(
        _sat_shl_param(np.int64(input_integer_bits - z_a_headroom_plus_1), 31 - accum_bits),
        shifted_quarter,
    )
    z_b = _srdhm(z_a, sqrt_half)
    z_b_headroom = clz32(z_b) - 1
    r_b_raw = _sat_shl_param(z_a, z_b_headroom)
    z_b_pow_2_adj = min(
        max(
            _sat_shl_param(np.int64(input_integer_bits - z_b_headroom), 31 - accum_bits)
            - shifted_quarter,
            _I32_MIN,
        ),
        _I32_MAX,
    )
    r = min(r_a_raw, r_b_raw)
    z_pow_2_adj = max(z_a_pow_2_adj, z_b_pow_2_adj)

    s = r + sqrt_sqrt_half  # RoundingHalfSum(r, sqrt_sqrt_half)
    p = (s + 1) // 2 if s >= 0 else -((-s + 1) // 2)
    q = _wrap32(r - sqrt_sqrt_half)
    q = _wrap32(q + q)
    common_sq = _srdhm(q, q)
    num = _wrap32(_srdhm(q, r) + _srdhm(_srdhm(q, common_sq), alpha_n))
    denom_minus_one_0 = _wrap32(
        _srdhm(p, _wrap32(_wrap32(alpha_i + q) + _srdhm(alpha_d, common_sq))) + _srdhm(alpha_f, q)
    )
    recip_denom = one_over_one_plus_x(denom_minus_one_0)
    num_scaled = _rdbpot(num, accum_bits)  # Rescale<6> from Q0
    total = _wrap32(_srdhm(z_pow_2_adj, log_2) + _srdhm(num_scaled, recip_denom))
    return _sat_shl(total, 1)  # Rescale<5> from Q6


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


@over_rows(cost=32)
@njit(cache=True, nogil=True)
def softmax_fixed_rows(x, exp, keep, out_bits, out_min, out_max, out, status, r0, r1):
    """TFLite reference_ops::Softmax (= CMSIS-NN arm_softmax_s8/_u8/_s8_s16).

    Accumulator: the Q12.19 sum of exps in int64, checked against the int32 range
    (``OVERFLOW``) and against the kernel's ``0 <= exponent <= 31`` check
    (``RANGE``, a sum >= 512 for 8-bit output).  Three passes per row.
    """
    for i in range(r0, r1):
        m = _row_max(x, i)
        s = np.int64(0)
        for j in range(x.shape[1]):
            d = m - np.int64(x[i, j])
            if keep[d]:
                s += _rdbpot(exp[d], 12)  # Rescale<12> of a Q0.31 value
        if s > _I32_MAX:
            status[i] = OVERFLOW
            for j in range(x.shape[1]):
                out[i, j] = out_min
            continue
        scale, num_bits_over_unit = get_reciprocal(s, 12)
        exponent = num_bits_over_unit + 31 - out_bits
        if exponent < 0 or exponent > 31:
            status[i] = RANGE
            for j in range(x.shape[1]):
                out[i, j] = out_min
            continue
        status[i] = OK
        for j in range(x.shape[1]):
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
    vectorise it).
    """
    nt = table.shape[0]
    qt = np.empty(nt, dtype=np.int64)
    for i in range(r0, r1):
        m = _row_max(x, i)
        s = np.float32(0.0)
        for j in range(x.shape[1]):
            s = np.float32(s + table[m - np.int64(x[i, j])])
        inv = np.float32(np.float32(1.0) / np.float32(s * out_scale))
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
    for i in range(r0, r1):
        m = _row_max(x, i)
        s = np.int64(0)
        for j in range(x.shape[1]):
            d = m - np.int64(x[i, j])
            if keep[d]:
                s += _rdbpot(exp[d], 12)
        if s > _I32_MAX:
            status[i] = OVERFLOW
            for j in range(x.shape[1]):
                out[i, j] = out_min
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
            status[i] = OVERFLOW
            for j in range(x.shape[1]):
                out[i, j] = 0
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
