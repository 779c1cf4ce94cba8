"""32-bit fixed-point arithmetic of gemmlowp's ``fixedpoint.h`` and TFLite's
``kernels/internal/common.h`` (Numba), used by the integer softmax kernels
(``quant.py``, ``quant_rt.py``).

Values are 32-bit two's-complement numbers held in int64, so that intermediate
products never overflow and wrap-around is explicit (``_wrap32``).  Names follow
gemmlowp / TFLite (``exp_on_negative_values``, ``one_over_one_plus_x_for_x_in_0_1``,
``GetReciprocal``, ``log_x_for_x_greater_than_or_equal_to_1``); bit-exactness is
guarded by ``tests/test_quantized.py::test_tflite_vectors``.
"""

from __future__ import annotations

import numpy as np
from numba import njit

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


# exp(-2^k) in Q0.31 for k = -2..4: gemmlowp's barrel-shifter constants
_EXP_NEG_POW2 = (1672461947, 1302514674, 790015084, 290630308, 39332535, 720401, 242)


@njit(cache=True, nogil=True)
def exp_on_negative_values_q5(a):
    """gemmlowp exp_on_negative_values for a Q5.26 input a <= 0; Q0.31 result."""
    one_quarter = 1 << 24  # ConstantPOT<-2> with 26 fractional bits
    mask = one_quarter - 1
    a_mod_quarter_minus_one_quarter = _wrap32((a & mask) - one_quarter)
    result = _exp_quarter(_sat_shl(a_mod_quarter_minus_one_quarter, 5))
    remainder = _wrap32(a_mod_quarter_minus_one_quarter - a)
    # barrel shifter: multiply by exp(-2^k) for every set bit 2^k of -a (k = -2..4,
    # bit 26 + k of the Q5.26 remainder), in gemmlowp's order
    for b in range(7):
        if remainder & (1 << (24 + b)):
            result = _srdhm(result, _EXP_NEG_POW2[b])
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
