"""bfloat16 in float32 arithmetic: the conversions and a short exp.

A bfloat16 is the upper half of a float32: :func:`bf16_to_f32` widens the bits
exactly, :func:`f32_to_bf16` rounds once to nearest even (AVX512-BF16's
``vcvtneps2bf16`` where the CPU has it, else integer lanes).  :func:`exp_bf` is an
exp for results that are rounded to bfloat16 next.  Used by the bits kernels
(``bf16.py``, ``losses/bf16.py``); the ``*_array`` forms are the tests' handles.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

from .exp import (
    _HI_32,
    _LO32_FLUSH,
    _LOG2E_32,
    _SHIFT32,
    FASTMATH_NO_FMA,
    _fma,
    _pow2_from_shifter32,
)
from .hostcpu import host_has

_QNAN = 0x7FC0
# the bits kernels' fast-math flags: never nnan / ninf; no "contract" (see bf16.py)
_FM = FASTMATH_NO_FMA


@intrinsic
def bf16_to_f32(typingctx, h):
    """bfloat16 bits (uint16) -> float32, exact (zero-extend, shift left 16, bitcast)."""
    if h != types.uint16:
        return None

    def codegen(context, builder, sig, args):
        i32 = ir.IntType(32)
        b = builder.shl(builder.zext(args[0], i32), ir.Constant(i32, 16))
        return builder.bitcast(b, ir.FloatType())

    return types.float32(h), codegen


class _BFloat(ir.types._BaseFloatType):
    """LLVM's ``bfloat`` type, which llvmlite's IR builder does not name."""

    null = "0.0"
    intrinsic_name = "bf16"

    def __str__(self):
        return "bfloat"


_BFloat._create_instance()


# AVX512-BF16's ``vcvtneps2bf16``
HW_BF16 = host_has("avx512bf16")


@intrinsic
def f32_to_bf16(typingctx, f):
    """float32 -> bfloat16 bits (uint16), one rounding to nearest even.

    With AVX512-BF16 (:data:`HW_BF16`): LLVM's ``fptrunc`` to ``bfloat``, one
    ``vcvtneps2bf16`` per 16 values; that instruction flushes float32 subnormals
    (below 1.2e-38) to a signed zero and keeps a NaN's payload (quieted).  Else
    ``(b + 0x7FFF + ((b >> 16) & 1)) >> 16`` on the bits ``b`` (a carry out of the
    mantissa rounds up into the exponent, and the largest finite values to ``inf``,
    as IEEE rounding does), subnormals rounded exactly and NaN -> 0x7FC0; 32-bit
    integer lanes, branch-free.  Both are bit-for-bit torch's rounding on every
    other value (tests/test_torch.py).
    """
    if f != types.float32:
        return None

    def codegen(context, builder, sig, args):
        if HW_BF16:
            return builder.bitcast(builder.fptrunc(args[0], _BFloat()), ir.IntType(16))
        return _round_bits(builder, args[0])

    return types.uint16(f), codegen


@intrinsic
def f32_to_bf16_int(typingctx, f):
    """:func:`f32_to_bf16`'s integer rounding, on every CPU (the tests' check of it)."""
    if f != types.float32:
        return None

    def codegen(context, builder, sig, args):
        return _round_bits(builder, args[0])

    return types.uint16(f), codegen


def _round_bits(builder, f):
    """IR of the integer round-to-nearest-even float32 -> bfloat16 bits (NaN -> 0x7FC0)."""
    i32 = ir.IntType(32)
    i16 = ir.IntType(16)
    b = builder.bitcast(f, i32)
    lsb = builder.and_(builder.lshr(b, ir.Constant(i32, 16)), ir.Constant(i32, 1))
    r = builder.add(builder.add(b, ir.Constant(i32, 0x7FFF)), lsb)
    hi = builder.trunc(builder.lshr(r, ir.Constant(i32, 16)), i16)
    isnan = builder.fcmp_unordered("uno", f, f)
    return builder.select(isnan, ir.Constant(i16, _QNAN), hi)


# ----------------------------------------------------------------- exp
# Every result of these kernels is rounded once to bfloat16 (8 significant bits: half
# an ulp is 2^-9 = 2e-3 relative), so the exp here needs far less than the float32
# kernels' (<= 1 ulp of float32, 17 vector operations): one-step Cody-Waite (ln 2 as
# one float32: |n| * 1.9e-9 <= 2.9e-7 for n >= -150) and a degree-4 polynomial
# (relative error 2.9e-6, fitted to the relative error on [-ln2/2, ln2/2]): 3e-6 in
# all, under 1/600 of the rounding that follows, in 11 operations.  The float32
# sums and the one rounding are unchanged; tests/test_bf16_kernels.py checks the exp
# against float64, tests/test_torch.py the results against float64 torch (one
# bfloat16 rounding) and the float32 route.
_LN2_1 = np.float32(0.6931471805599453)
_B0 = np.float32(0.9999668598175049)
_B1 = np.float32(0.5000301599502563)
_B2 = np.float32(0.16787457466125488)
_B3 = np.float32(0.04151369631290436)


@njit(fastmath={"contract"}, cache=True)
def exp_bf(x):
    """``exp(x)`` (float32) to ~3e-6 relative, for results rounded to bfloat16.

    ``x < -88`` gives 0 (or a subnormal), ``-inf`` 0, NaN NaN (a NaN compare is
    false: the clamps pass it through); ``x > 88.03`` gives ``inf`` (``n = 128``:
    the results in ``[1.7e38, 3.4e38]`` overflow early, as in ``exp.py``; the
    kernels only need "finite or not" there).
    """
    xc = _LO32_FLUSH if x < _LO32_FLUSH else x
    xc = _HI_32 if xc > _HI_32 else xc  # n = 128: 2**128 is built as inf
    t = xc * _LOG2E_32 + _SHIFT32
    n = t - _SHIFT32
    r = _fma(n, -_LN2_1, xc)
    g = _B3
    g = g * r + _B2
    g = g * r + _B1
    g = g * r + _B0
    return (np.float32(1.0) + r * g) * _pow2_from_shifter32(t)


# ----------------------------------------------------------------- array forms (tests)
@njit(cache=True, nogil=True, fastmath=_FM)
def widen_array(bits, out):
    """``out[:] = bf16_to_f32(bits)`` elementwise (1-D); used by the tests."""
    for j in range(bits.shape[0]):
        out[j] = bf16_to_f32(bits[j])


@njit(cache=True, nogil=True, fastmath=_FM)
def round_array(f, out):
    """``out[:] = f32_to_bf16(f)`` elementwise (1-D): a float32 row rounded into
    bits (``losses/bf16.py``'s gradient rows) and the tests' handle."""
    for j in range(f.shape[0]):
        out[j] = f32_to_bf16(f[j])


@njit(cache=True, nogil=True, fastmath=_FM)
def round_array_int(f, out):
    """``out[:] = f32_to_bf16_int(f)`` elementwise (1-D); used by the tests."""
    for j in range(f.shape[0]):
        out[j] = f32_to_bf16_int(f[j])


@njit(cache=True, nogil=True)
def exp_array(x, out):
    """``out[:] = exp_bf(x)`` elementwise (1-D float32); used by the tests."""
    for j in range(x.shape[0]):
        out[j] = exp_bf(x[j])
