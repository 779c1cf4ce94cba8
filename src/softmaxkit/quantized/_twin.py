"""NumPy twins of the TFLite / CMSIS-NN integer softmax kernels (``_kernels/quant.py``).

The cold-start path of :func:`softmaxkit.quantized.softmax` and
:func:`~softmaxkit.quantized.log_softmax`: while a kernel compiles in the
background (docs/performance.md, "Cold start"), a small call runs these instead.
They take the kernels' arguments (without the row range) and return the same
integers: the fixed-point arithmetic of gemmlowp's ``fixedpoint.h`` on int64 NumPy
arrays (32-bit two's-complement values, wrap-around explicit), the float kernels'
float32 sums in row order (``np.cumsum`` is sequential), ``expf`` from the C library
as the kernels call it.  ``tests/test_quantized_twin.py`` checks them bit for bit
against the kernels.  Peak extra memory: a few int64 arrays of the input's size.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from typing import Any

import numpy as np

from .._kernels.quant import OK, OVERFLOW, RANGE

I64 = np.int64
_MIN = -(1 << 31)
_MAX = (1 << 31) - 1


def _wrap32(v: Any) -> Any:
    return ((v + 2147483648) & 0xFFFFFFFF) - 2147483648


def _srdhm(a: Any, b: Any) -> Any:
    """SaturatingRoundingDoublingHighMul (C division: truncation toward zero)."""
    a, b = np.asarray(a, I64), np.asarray(b, I64)
    ab = a * b
    pos = (ab + (1 << 30)) >> 31
    neg = -((-(ab + (1 - (1 << 30)))) >> 31)
    r = np.where(ab >= 0, pos, neg)
    return np.where((a == _MIN) & (b == _MIN), I64(_MAX), r)


def _rdbpot(x: Any, exponent: Any) -> Any:
    """RoundingDivideByPOT: ties away from zero."""
    x = np.asarray(x, I64)
    mask = (I64(1) << np.asarray(exponent, I64)) - 1
    threshold = (mask >> 1) + (x < 0)
    return (x >> exponent) + ((x & mask) > threshold)


def _sat_shl(x: Any, exponent: int) -> Any:
    """SaturatingRoundingMultiplyByPOT with a non-negative exponent."""
    x = np.asarray(x, I64)
    if exponent == 0:
        return x
    t = (1 << (31 - exponent)) - 1
    return np.where(x > t, I64(_MAX), np.where(x < -t, I64(_MIN), _wrap32(x << exponent)))


def _sat_shl_v(x: Any, exponent: Any) -> Any:
    """``_sat_shl`` with a per-element exponent (>= 0)."""
    x, e = np.broadcast_arrays(np.asarray(x, I64), np.asarray(exponent, I64))
    t = (I64(1) << (31 - e)) - 1
    r = np.where(x > t, I64(_MAX), np.where(x < -t, I64(_MIN), _wrap32(x << e)))
    return np.where(e == 0, x, r)


def _clz32(v: Any) -> Any:
    """Leading zeros of ``v`` as an unsigned 32-bit value (32 for 0)."""
    u = np.asarray(v, I64) & 0xFFFFFFFF
    bits = np.frexp(u.astype(np.float64))[1]  # exact bit length below 2^53
    return np.where(u == 0, 32, 32 - bits).astype(I64)


def _mul_by_qm(x: Any, multiplier: int, shift: int) -> Any:
    left, right = (shift, 0) if shift > 0 else (0, -shift)
    return _rdbpot(_srdhm(_wrap32(np.asarray(x, I64) * (1 << left)), multiplier), right)


def _exp_quarter(a: Any) -> Any:
    c, third = 1895147668, 715827883
    x = _wrap32(a + (1 << 28))
    x2 = _srdhm(x, x)
    x3 = _srdhm(x2, x)
    x4 = _srdhm(x2, x2)
    t = _wrap32(_srdhm(_wrap32(_rdbpot(x4, 2) + x3), third) + x2)
    t = _rdbpot(t, 1)
    return _wrap32(c + _srdhm(c, _wrap32(x + t)))


_EXP_NEG_POW2 = (1672461947, 1302514674, 790015084, 290630308, 39332535, 720401, 242)


def _exp_neg_q5(a: Any) -> Any:
    """gemmlowp exp_on_negative_values, Q5.26 in (<= 0), Q0.31 out."""
    a = np.asarray(a, I64)
    q = 1 << 24
    amq = _wrap32((a & (q - 1)) - q)
    r = _exp_quarter(_sat_shl(amq, 5))
    rem = _wrap32(amq - a)
    for b, c in enumerate(_EXP_NEG_POW2):
        r = np.where(rem & (1 << (24 + b)), _srdhm(r, c), r)
    return np.where(a == 0, I64(_MAX), r)


def _half_sum(s: Any) -> Any:
    return np.where(s >= 0, (s + 1) // 2, -((-s + 1) // 2))


def _one_over_one_plus_x(a: Any) -> Any:
    hd = _half_sum(np.asarray(a, I64) + _MAX)
    x = _wrap32(1515870810 + _srdhm(hd, -1010580540))
    for _ in range(3):
        one_minus = _wrap32((1 << 29) - _srdhm(hd, x))
        x = _wrap32(x + _sat_shl(_srdhm(x, one_minus), 2))
    return _sat_shl(x, 1)


def _reciprocal(s: Any, digits: int) -> tuple[Any, Any]:
    h = _clz32(s)
    shifted = _wrap32(((np.asarray(s, I64) << h) & 0xFFFFFFFF) - (1 << 31))
    return _one_over_one_plus_x(shifted), digits - h


def _log_q5_from_q12(x: Any) -> Any:
    """TFLite log_x_for_x_greater_than_or_equal_to_1<5>(Q12.19): Q5.26."""
    ibits, abits = 12, 6
    log_2, ssh, sh = 1488522236, 1805811301, 1518500250
    an, ad, ai, af = 117049297, 127690142, 1057819769, 638450708
    quarter = int(_rdbpot(536870912, abits))
    za = np.asarray(x, I64)
    ha = _clz32(za)
    ra = _sat_shl(_srdhm(_sat_shl_v(za, ha - 1), sh), 1)
    za_adj = np.clip(_sat_shl_v(ibits - ha, np.full_like(ha, 31 - abits)) + quarter, _MIN, _MAX)
    zb = _srdhm(za, sh)
    hb = _clz32(zb) - 1
    rb = _sat_shl_v(za, hb)
    zb_adj = np.clip(_sat_shl_v(ibits - hb, np.full_like(hb, 31 - abits)) - quarter, _MIN, _MAX)
    r = np.minimum(ra, rb)
    zadj = np.maximum(za_adj, zb_adj)
    p = _half_sum(r + ssh)
    q = _wrap32(r - ssh)
    q = _wrap32(q + q)
    csq = _srdhm(q, q)
    num = _wrap32(_srdhm(q, r) + _srdhm(_srdhm(q, csq), an))
    den = _wrap32(_srdhm(p, _wrap32(_wrap32(ai + q) + _srdhm(ad, csq))) + _srdhm(af, q))
    total = _wrap32(_srdhm(zadj, log_2) + _srdhm(_rdbpot(num, abits), _one_over_one_plus_x(den)))
    return _sat_shl(total, 1)


# --------------------------------------------------------------------------
# The kernels' entry points (same arguments, no row range)
# --------------------------------------------------------------------------


def fixed_exp_table(multiplier: int, shift: int, diff_min: int, size: int) -> tuple[Any, Any]:
    d = np.arange(size, dtype=I64)
    keep = -d >= diff_min
    exp = _exp_neg_q5(_srdhm(_wrap32(-d * (1 << shift)), multiplier))
    return np.where(keep, exp, 0), keep


def fixed_diff_q5_table(multiplier: int, shift: int, size: int) -> Any:
    return _mul_by_qm(-np.arange(size, dtype=I64), multiplier, shift)


def _libm(name: str) -> Any:
    """The C library's float32 function ``name`` (``expf``, ``logf``: what the Numba
    kernels call for ``math.exp`` / ``math.log`` of a float32), or None."""
    lib = ctypes.util.find_library("m")
    try:
        f = getattr(ctypes.CDLL(lib), name) if lib else None
    except (OSError, AttributeError):  # pragma: no cover - no C math library
        return None
    if f is not None:
        f.restype, f.argtypes = ctypes.c_float, [ctypes.c_float]
    return f


def _map_f32(name: str, a: Any, fallback: Any) -> Any:
    f = _libm(name)
    if f is None:  # pragma: no cover
        return fallback(a.astype(np.float64)).astype(np.float32)
    return np.array([f(float(v)) for v in a.ravel()], dtype=np.float32).reshape(a.shape)


def float_exp_table(neg_scale: Any, size: int) -> Any:
    args = (np.float32(neg_scale) * np.arange(size, dtype=np.float32)).astype(np.float32)
    return _map_f32("expf", args, np.exp)


def _fail(rows: Any, code: int, out: Any, fill: int, status: Any) -> None:
    status[rows] = code
    out[rows] = fill


def softmax_fixed_rows(x: Any, exp: Any, keep: Any, out_bits: int, out_min: int, out_max: int,
                       out: Any, status: Any) -> None:  # fmt: skip
    m = x.max(axis=1).astype(I64)[:, None]
    d = m - x.astype(I64)
    e12 = np.where(keep, _rdbpot(exp, 12), 0)
    s = e12[d].sum(axis=1)
    over = s > _MAX
    scale, nbou = _reciprocal(np.where(over, 1, s), 12)
    exponent = nbou + 31 - out_bits
    bad = (exponent < 0) | (exponent > 31)
    ex = np.clip(exponent, 0, 31)[:, None]
    v = np.clip(_rdbpot(_srdhm(scale[:, None], exp[d]), ex) + out_min, out_min, out_max)
    out[...] = np.where(keep[d], v, out_min)
    status[...] = OK
    _fail(bad & ~over, RANGE, out, out_min, status)
    _fail(over, OVERFLOW, out, out_min, status)


def _quantize_p(e: Any, inv: Any, trunc: bool, zp: int, lo: int, hi: int) -> Any:
    p = (e * inv).astype(np.float32)
    if trunc:
        q = (p + np.float32(0.5)).astype(np.float32).astype(I64)
    else:
        q = np.floor(p.astype(np.float64) + 0.5).astype(I64)
    return np.clip(q + zp, lo, hi)


def _seq_sum(t: Any) -> Any:
    """float32 sums of each row in row order (np.cumsum adds sequentially)."""
    if t.shape[1] == 0:
        return np.zeros(t.shape[0], np.float32)
    return np.cumsum(t, axis=1, dtype=np.float32)[:, -1]


def softmax_float_rows(x: Any, table: Any, out_scale: Any, zero_point: int, out_min: int,
                       out_max: int, trunc: bool, out: Any, status: Any) -> None:  # fmt: skip
    d = x.max(axis=1).astype(I64)[:, None] - x.astype(I64)
    e = table[d]
    s = _seq_sum(e)
    inv = (np.float32(1.0) / (s * np.float32(out_scale)).astype(np.float32)).astype(np.float32)
    out[...] = _quantize_p(e, inv[:, None], trunc, zero_point, out_min, out_max)
    status[...] = OK


def log_softmax_fixed_rows(x: Any, exp: Any, keep: Any, diff_q5: Any, rev_multiplier: int,
                           rev_shift: int, diff_min: int, zero_point: int, out_min: int,
                           out_max: int, out: Any, status: Any) -> None:  # fmt: skip
    m = x.max(axis=1).astype(I64)[:, None]
    d = m - x.astype(I64)
    e12 = np.where(keep, _rdbpot(exp, 12), 0)
    s = e12[d].sum(axis=1)
    over = s > _MAX
    log_sum = _log_q5_from_q12(np.where(over, 1 << 19, s))
    shifted = _wrap32(log_sum + _MIN)
    adj = np.maximum(diff_min - 1, _rdbpot(_srdhm(shifted, rev_multiplier), rev_shift))
    v = np.clip(_rdbpot(_wrap32(diff_q5[d] - log_sum[:, None]), 22) + zero_point, out_min, out_max)
    out[...] = np.where(-d > adj[:, None], v, out_min)
    status[...] = OK
    _fail(over, OVERFLOW, out, out_min, status)


def log_softmax_float_rows(x: Any, table: Any, input_scale: Any, out_scale: Any, zero_point: int,
                           out_min: int, out_max: int, fma: bool, out: Any,
                           status: Any) -> None:  # fmt: skip
    f32 = np.float32
    scale = f32(input_scale / out_scale)
    m = x.max(axis=1).astype(I64)
    s = _seq_sum(table[m[:, None] - x.astype(I64)])
    log_sum = _map_f32("logf", s, np.log)
    pre = ((f32(input_scale) * m.astype(f32)).astype(f32) + log_sum).astype(f32) / f32(out_scale)
    pre = pre.astype(f32)[:, None]
    xv = x.astype(f32)
    if fma:
        lp = (np.float64(scale) * xv.astype(np.float64) - pre.astype(np.float64)).astype(f32)
    else:
        lp = ((scale * xv).astype(f32) - pre).astype(f32)
    out[...] = np.clip(np.rint(lp.astype(np.float64)).astype(I64) + zero_point, out_min, out_max)
    status[...] = OK


def _lut16(value: Any, lut: Any) -> Any:
    index = 256 + (value >> 7)
    base = lut[index].astype(I64)
    slope = lut[index + 1].astype(I64) - base
    r = base + ((slope * (value & 0x7F) + 64) >> 7)
    return ((r + 32768) & 0xFFFF) - 32768


def softmax_int16_rows(x: Any, multiplier: int, shift: int, exp_lut: Any, recip_lut: Any,
                       out: Any, status: Any) -> None:  # fmt: skip
    m = x.max(axis=1).astype(I64)[:, None]
    scaled = _mul_by_qm(x.astype(I64) - m, multiplier, shift)
    e = _lut16(np.clip(scaled + 32767, -32768, 32767), exp_lut)
    s = e.sum(axis=1)
    over = s > _MAX
    s = np.where(over, 1, s)
    h = _clz32(s)
    shifted = ((s << (h - 1)) + (1 << 13)) >> 14
    recip = _lut16(np.clip(shifted - ((1 << 15) + (1 << 16)), -32768, 32767), recip_lut)
    rs = (31 - h)[:, None]
    r = (e * recip[:, None] + (I64(1) << (rs - 1))) >> rs
    out[...] = np.clip(r, 0, 32767)
    status[...] = OK
    _fail(over, OVERFLOW, out, 0, status)
