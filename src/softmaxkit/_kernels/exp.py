"""A vectorisable ``exp`` and the few LLVM intrinsics the row kernels need.

Why our own exp: the PyPI llvmlite is built without Numba's SVML patch, so
``math.exp`` in a loop compiles to one scalar libm call per element (about
1.9 ns per float32 element here).  The function below is branch-free straight
line code that LLVM vectorises to 16 float32 (8 float64) lanes.

Algorithm (Cody–Waite range reduction + polynomial + exponent bits):

1. clamp ``x`` to ``[lo, hi]`` (``lo`` below the smallest subnormal result, so
   ``-inf`` and large negative inputs give exactly 0; ``hi`` above overflow);
2. ``n = rint(x / ln 2)``, ``r = (x - n*ln2_hi) - n*ln2_lo`` with ``ln2_hi`` having
   enough trailing zero bits that ``n*ln2_hi`` is exact, so ``|r| <= ln(2)/2``;
3. ``exp(r) = 1 + r * g(r)`` with ``g`` a near-minimax (Chebyshev interpolation at
   50 digits with mpmath.chebyfit) polynomial of ``expm1(r)/r``: degree 5 for
   float32 (exp polynomial of degree 6, approximation error 0.1 ulp), degree 10
   for float64 (degree 11, 0.05 ulp).  The constant term 1 is exact, so
   ``exp(0) == 1`` exactly (the kernels rely on the max term being exactly 1);
4. ``2^n`` is built by integer add + shift + bitcast inside an intrinsic (so the
   integer lanes stay 32-bit for float32), split as ``2^(n//2) * 2^(n - n//2)`` so
   subnormal results and overflow to ``inf`` come out right without branches;
5. NaN in -> NaN out (a final select; the fastmath flags exclude ``nnan``).

Measured accuracy (``tests/test_kernels.py::test_exp32_exhaustive`` and
``test_exp64_sweep``): float32 max 1 ulp over every float32 in
``[ln FLT_MIN, 0]``; float64 max 1 ulp on a dense sweep of ``[-708, 0]``.  Valid for
``x <= 0`` (the only arguments the kernels use: ``x - max``) and for positive
``x`` up to overflow.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic, overload

from .minmax import _fp_type, fmax, fmaximum, fminimum  # noqa: F401  (re-exported)

__all__ = [
    "FASTMATH",
    "exp_",
    "expd",
    "expd_unit",
    "f16_to_f32",
    "f32_to_f16",
    "fmax",
    "is32",
]

# reassoc/contract allow FMA and reassociated (vectorised) reductions; afn/arcp
# cheaper division; nsz: sign of zero is irrelevant here.  Never nnan/ninf: -inf
# masks and NaN rows must go through (guarded by test_kernels.py::test_special_rows).
FASTMATH = {"reassoc", "contract", "afn", "arcp", "nsz"}
# the same without "contract", for kernels whose max and each difference must be
# formed the same way (no FMA of ``x * t - m``: the max's own difference stays 0)
FASTMATH_NO_FMA = FASTMATH - {"contract"}


# --------------------------------------------------------------------------- intrinsics
@intrinsic
def _rint(typingctx, a):
    if not isinstance(a, types.Float):
        return None

    def codegen(context, builder, sig, args):
        fty = _fp_type(sig.args[0])
        name = "llvm.rint.f32" if sig.args[0] == types.float32 else "llvm.rint.f64"
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(fty, [fty]), name)
        return builder.call(fn, args)

    return a(a), codegen


@intrinsic
def _fma(typingctx, a, b, c):
    """``llvm.fma``: ``a * b + c`` with one rounding (an explicit FMA survives CSE)."""
    if not (isinstance(a, types.Float) and a == b == c):
        return None

    def codegen(context, builder, sig, args):
        fty = _fp_type(sig.args[0])
        name = "llvm.fma.f32" if sig.args[0] == types.float32 else "llvm.fma.f64"
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(fty, [fty, fty, fty]), name
        )
        return builder.call(fn, args)

    return a(a, b, c), codegen


@intrinsic
def _ldexp(typingctx, p, nf):
    """``p * 2**n`` for an integral float ``n`` in the clamped range, via exponent bits.

    Computed as ``p * 2**n1 * 2**n2`` with ``n1 = n >> 1``, ``n2 = n - n1`` so that each
    factor is a normal number for every ``n`` the clamp allows.
    """
    if not (isinstance(p, types.Float) and p == nf):
        return None

    def codegen(context, builder, sig, args):
        is32 = sig.args[0] == types.float32
        fty = _fp_type(sig.args[0])
        ity = ir.IntType(32) if is32 else ir.IntType(64)
        bias = ir.Constant(ity, 127 if is32 else 1023)
        shift = ir.Constant(ity, 23 if is32 else 52)
        pv, nv = args
        n = builder.fptosi(nv, ity)
        n1 = builder.ashr(n, ir.Constant(ity, 1))
        n2 = builder.sub(n, n1)
        s1 = builder.bitcast(builder.shl(builder.add(n1, bias), shift), fty)
        s2 = builder.bitcast(builder.shl(builder.add(n2, bias), shift), fty)
        return builder.fmul(builder.fmul(pv, s1), s2)

    return p(p, nf), codegen


@intrinsic
def _pow2_from_shifter32(typingctx, t):
    """``2**n`` from ``t = y + 1.5*2**23`` whose low mantissa bits hold ``n = rint(y)``.

    ``(bits(t) + 127) << 23`` is the float32 ``2**n`` (the high bits of ``t`` shift out);
    ``n = -127`` gives bits 0, i.e. exactly 0.0.  Pure 32-bit integer lanes.
    """
    if t != types.float32:
        return None

    def codegen(context, builder, sig, args):
        i32 = ir.IntType(32)
        b = builder.bitcast(args[0], i32)
        b = builder.shl(builder.add(b, ir.Constant(i32, 127)), ir.Constant(i32, 23))
        return builder.bitcast(b, ir.FloatType())

    return types.float32(t), codegen


@intrinsic
def f16_to_f32(typingctx, h):
    """IEEE half bits (uint16) -> float32 (``vcvtph2ps`` with F16C)."""
    if h != types.uint16:
        return None

    def codegen(context, builder, sig, args):
        half = builder.bitcast(args[0], ir.HalfType())
        return builder.fpext(half, ir.FloatType())

    return types.float32(h), codegen


@intrinsic
def f32_to_f16(typingctx, f):
    """float32/float64 -> IEEE half bits (uint16), one correct rounding (nearest even)."""
    if not isinstance(f, types.Float):
        return None

    def codegen(context, builder, sig, args):
        half = builder.fptrunc(args[0], ir.HalfType())
        return builder.bitcast(half, ir.IntType(16))

    return types.uint16(f), codegen


# --------------------------------------------------------------------------- exp
# float32 constants (as float32 so nothing widens to float64)
_F32 = np.float32
_LOG2E_32 = _F32(1.4426950408889634)
_LN2HI_32 = _F32(0.693145751953125)  # 12 significant bits: n * hi exact for |n| < 2**12
_LN2LO_32 = _F32(1.4286068203094172e-06)
_LO_32 = _F32(-105.0)  # exp(-105) < smallest subnormal / 2: result 0
_HI_32 = _F32(89.0)  # exp(89) > FLT_MAX: result inf
_G32 = tuple(
    _F32(c)
    for c in (
        1.000000010771570138407585,
        0.5000000013457727152950028,
        0.1666650526040812348963429,
        0.04166646500604004876068709,
        0.008369148490856346586636391,
        0.001393364103198670115020121,
    )
)
_G32_0, _G32_1, _G32_2, _G32_3, _G32_4, _G32_5 = _G32

_LOG2E_64 = 1.4426950408889634
_LN2HI_64 = 0.6931471803691238  # 0x3FE62E42FEE00000: 32 significant bits
_LN2LO_64 = 1.9082149292705877e-10
_LO_64 = -746.0  # exp(-746) rounds to 0
_HI_64 = 710.0  # exp(710) overflows
_G64 = (
    1.0,
    0.5000000000000005616924593,
    0.1666666666666667098633262,
    0.04166666666657314261060233,
    0.008333333333326140883978706,
    0.001388888893248859818134173,
    0.0001984126987480049198075797,
    0.00002480150434699768725539351,
    0.000002755725542574643428181815,
    0.0000002762635724144722285515356,
    2.510520637395701111603821e-8,
)
(_G64_0, _G64_1, _G64_2, _G64_3, _G64_4, _G64_5, _G64_6, _G64_7, _G64_8, _G64_9, _G64_10) = _G64


# Compiled with "contract" only (FMA allowed) and called, not Numba-inlined: with
# "reassoc" LLVM may fold (x - n*hi) - n*lo into x - n*(hi + lo), or the shifter
# trick (y + S) - S into y, and lose the Cody-Waite split.  LLVM still inlines the
# call, keeping these per-instruction flags.  The Horner chains (here and in the
# log below) are written out: one _horner(t, coeffs) helper over the coefficient
# tuples measured 30-45% slower per value (softmax rows of 128, logsumexp rows of 10).
_SHIFT32 = _F32(12582912.0)  # 1.5 * 2**23: adding it rounds to an integer (ties even)
_LO32_FLUSH = _F32(-88.0)  # n = -127 here: 2**n is built as exactly 0


@njit(fastmath={"contract"}, cache=True)
def _exp32(x):
    # float32, 14 vector ops: clamp, shifter rounding, 2-step Cody-Waite, degree-6
    # polynomial, exponent bits.  Results below FLT_MIN (x < -87.3) are flushed to 0
    # or a subnormal (error < 1.2e-38, far under the 1e-12 absolute bound); x = -inf
    # gives 0; NaN passes the clamp (a NaN compare is false) and gives NaN.  lo = -0.0:
    # r + (-0.0) is r for every r, so LLVM drops the add (r + 0.0 is not: -0.0 + 0.0
    # is +0.0), one vector operation of 17 per 16 values.
    return _exp32_pair(x, _F32(-0.0))


_LN2_32 = _F32(0.6931471805599453)  # ln 2 rounded to float32: 1.9e-9 below ln 2


@njit(fastmath={"contract"}, cache=True)
def _exp32_sum(x):
    # exp(x) for terms that are only summed (expsum_unit): _exp32 with a one-step
    # reduction r = fma(-n, ln2_f32, x) (one rounding) instead of the two-step
    # Cody-Waite split: one vector operation less.  The reduced argument is then off
    # by n (ln 2 - ln2_f32), |n| * 1.9e-9 relative in the term (2.4e-7 at the flush
    # point, n = -126).  In a sum that error is weighted by the terms: at most
    # 1.9e-9 * sum_i p_i |n_i| <= 2.8e-9 (H(p) - log S) + 1e-9, below 5e-8 relative in
    # S even for rows of 2^25 values, against the 2^-24 log n of the plain argument
    # (expsum_unit).  Measured: tests/test_kernels.py::test_exp32_sum_sweep.
    xc = _LO32_FLUSH if x < _LO32_FLUSH else x
    t = xc * _LOG2E_32 + _SHIFT32
    n = t - _SHIFT32
    r = _fma(-n, _LN2_32, xc)
    return _exp32_finish(r, t)  # NaN passes the clamp and gives NaN


@njit(fastmath={"contract"}, cache=True)
def _exp64(x):
    xc = max(min(x, _HI_64), _LO_64)
    n = _rint(xc * _LOG2E_64)
    r = (xc - n * _LN2HI_64) - n * _LN2LO_64
    g = _G64_10
    g = g * r + _G64_9
    g = g * r + _G64_8
    g = g * r + _G64_7
    g = g * r + _G64_6
    g = g * r + _G64_5
    g = g * r + _G64_4
    g = g * r + _G64_3
    g = g * r + _G64_2
    g = g * r + _G64_1
    g = g * r + _G64_0
    p = 1.0 + r * g
    y = _ldexp(p, n)
    return x if x != x else y


@njit(fastmath={"contract"}, cache=True)
def _expd32(v, m, invT):
    # exp((v - m) * invT) for float32 v, m, invT, all in float32 (16 lanes) with the
    # argument carried exactly as d + lo: a plain float32 d = (v - m) * invT has a
    # relative rounding error up to 2**-23 (two roundings), i.e. |d| * 1.2e-7 in the
    # result (1.6e-6 at p = 1e-6, most of the 2e-6 float32 budget).  Instead
    #   s + err = v - m exactly (TwoSum, 5 ops),
    #   d + lo ~= s * invT + err * invT with the product's rounding error
    #   s * invT - d recovered exactly by an explicit FMA (with a plain expression
    #   LLVM merges the two products s * invT first and gets 0),
    # and lo (|lo| <= ulp(d)) is added to the reduced argument r, where rounding costs
    # at most ulp(0.35)/2.  Result: the argument error is ~ulp(r), as with a float64
    # reduction (the previous design, 35-40% slower per value in pass 1).
    # d < -88 (including v = -inf, where err would be NaN) flushes like _exp32 with
    # lo = 0; NaN in v or m gives NaN.  Guarded by tests/test_kernels.py::
    # test_temperature_mask_and_weights and test_expd32_argument_is_exact.
    s, err = _two_sum(v, -m)
    d = s * invT
    lo = err * invT + _fma(s, invT, -d)
    return _exp32_pair(d, lo)


@njit(fastmath={"contract"}, cache=True)
def _expd32_unit(v, m):
    # _expd32 for invT == 1: the TwoSum pair (s, err) is already the argument
    s, err = _two_sum(v, -m)
    return _exp32_pair(s, err)


@njit(fastmath={"contract"}, cache=True)
def _two_sum(a, b):
    # (s, err) with s = fl(a + b) and s + err = a + b exactly (Knuth's TwoSum; needs
    # IEEE order of operations: no reassoc, which is why these kernels take "contract")
    s = a + b
    bb = s - a
    return s, (a - (s - bb)) + (b - bb)


@njit(fastmath={"contract"}, cache=True)
def _exp32_pair(d, lo):
    # exp(d + lo) for a float32 pair with |lo| <= ulp(d) (lo = 0: plain exp(d)): clamp,
    # shifter rounding, 2-step Cody-Waite with lo added to the reduced argument,
    # degree-6 polynomial, exponent bits
    xc = _LO32_FLUSH if d < _LO32_FLUSH else d
    lo = _F32(-0.0) if d < _LO32_FLUSH else lo
    t = xc * _LOG2E_32 + _SHIFT32
    n = t - _SHIFT32
    r = ((xc - n * _LN2HI_32) - n * _LN2LO_32) + lo
    return _exp32_finish(r, t)


@njit(fastmath={"contract"}, cache=True)
def _exp32_finish(r, t):
    # exp(r) * 2^n for the reduced argument r and the shifter sum t holding n: the
    # degree-6 polynomial 1 + r g(r) (the constant 1 exact: exp(0) == 1) and the
    # exponent bits.  Shared by _exp32_pair and _exp32_sum, written out (a Horner
    # helper over the coefficient tuple measured 30-45% slower, see above)
    g = _G32_5
    g = g * r + _G32_4
    g = g * r + _G32_3
    g = g * r + _G32_2
    g = g * r + _G32_1
    g = g * r + _G32_0
    p = _F32(1.0) + r * g
    return p * _pow2_from_shifter32(t)


@njit(fastmath={"contract"}, cache=True)
def _expd64(v, m, invT):
    return _exp64((v - m) * invT)


def expd_unit(v, m):  # pragma: no cover - replaced by the overload inside jitted code
    """``exp(v - m)`` in the dtype of ``v`` (jitted code only): ``expd`` with ``invT = 1``."""
    raise NotImplementedError


@overload(expd_unit, fastmath=FASTMATH)
def _expd_unit_overload(v, m):
    if v == types.float32:
        return lambda v, m: _expd32_unit(v, m)
    if v == types.float64:
        return lambda v, m: _exp64(v - m)
    return None


def expsum_unit(v, m):  # pragma: no cover - replaced by the overload inside jitted code
    """``exp(v - m)`` for terms that are summed, or stored as softmax outputs, at
    ``T = 1`` (jitted code only).

    float32: the plain argument ``fl(v - m)``, one rounding, where ``expd_unit``
    carries it exactly (about 7 fewer vector operations per 16 values), reduced in
    one step by ``_exp32_sum`` (one operation fewer again; its error bound is there).
    A term at ``d = v - m`` then has up to ``|d| 2^-24`` more relative error.  In the
    sum ``S = sum_i e^(d_i)`` that error is weighted by the terms: at most
    ``sum_i p_i |d_i| 2^-24 = (H(p) - log S) 2^-24 <= 2^-24 log n`` relative in ``S``
    (``p_i = e^(d_i) / S``, ``H`` the entropy of ``p``), so at most ``6e-8 log n``
    absolute in ``log S``: ``6.2e-7`` for ``n = 32000``.  That is inside the float32
    contract of log_softmax and logsumexp (``1e-6 (1 + |value|)``), and for softmax it
    scales every ``p`` of a row by the same ``1 + delta``, inside its ``2e-6``.
    Measured on adversarial rows (equal terms rounding the same way,
    ``tests/test_accuracy.py``): 0.46 of the log bound, 0.38 of the softmax one.
    softmax's row kernels store these terms as outputs too: one rounding of ``d`` is
    at most half an ulp, ``2^-21`` relative where ``p >= 1e-6`` (``|d| <= 13.8``), a
    quarter of the ``2e-6`` budget (measured 0.27 of it on rows built for the worst
    rounding).  With a temperature (two roundings) and in the column kernels stored
    terms keep ``expd``.
    float64: ``exp(v - m)`` as ``expd_unit``.
    """
    raise NotImplementedError


@overload(expsum_unit, fastmath=FASTMATH)
def _expsum_unit_overload(v, m):
    if v == types.float32:
        return lambda v, m: _exp32_sum(v - m)
    if v == types.float64:
        return lambda v, m: _exp64(v - m)
    return None


@njit(fastmath=FASTMATH, cache=True)
def expsum_array(x, m, out):
    """``out[:] = expsum_unit(x, m)`` elementwise (1-D, ``m`` of ``x``'s dtype); used by
    the accuracy tests."""
    for i in range(x.shape[0]):
        out[i] = expsum_unit(x[i], m)


def is32(v):  # pragma: no cover - replaced by the overload inside jitted code
    """True (a compile-time constant) when ``v`` is float32 (jitted code only)."""
    raise NotImplementedError


@overload(is32)
def _is32_overload(v):
    if v == types.float32:
        return lambda v: True
    return lambda v: False


def expd(v, m, invT):  # pragma: no cover - replaced by the overload inside jitted code
    """``exp((v - m) * invT)`` in the dtype of ``v`` (jitted code only)."""
    raise NotImplementedError


@overload(expd, fastmath=FASTMATH)
def _expd_overload(v, m, invT):
    if v == types.float32:
        return lambda v, m, invT: _expd32(v, m, invT)
    if v == types.float64:
        return lambda v, m, invT: _expd64(v, m, invT)
    return None


def exp_(x):  # pragma: no cover - replaced by the overload inside jitted code
    """``exp(x)`` for float32 or float64 ``x``, in the dtype of ``x`` (jitted code only)."""
    raise NotImplementedError


@overload(exp_, fastmath=FASTMATH)
def _exp_overload(x):
    if x == types.float32:
        return lambda x: _exp32(x)
    if x == types.float64:
        return lambda x: _exp64(x)
    return None


@njit(fastmath=FASTMATH, cache=True)
def exp_array(x, out):
    """``out[:] = exp(x)`` elementwise (1-D); used by the accuracy tests."""
    for i in range(x.shape[0]):
        out[i] = exp_(x[i])
