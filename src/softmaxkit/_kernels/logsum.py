"""A vectorisable float64 ``log(w + r)`` for the per-row log of the row kernels
(``log_sum_array``) and its scalar core ``_log_sum_pair``."""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from .exp import _LN2HI_64, _LN2LO_64, _two_sum

__all__ = ["log_sum_array"]

# --------------------------------------------------------------------------- log
# A vectorisable float64 log for the per-row ``log(w0 + r)`` of the row kernels
# (one libm ``log1p`` per row costs ~25 ns: 12 ms of 38 for logsumexp of 10^6
# rows of 10).  ``u = 2^k f`` with ``f`` in [sqrt(1/2), sqrt(2)) (integer bit
# arithmetic), ``log f = 2 atanh(s)``, ``s = (f - 1) / (f + 1)`` (``f - 1`` exact by
# Sterbenz), ``|s| <= 0.1716``: the atanh series to ``s^23`` (truncation
# ``s^25 / 25 < 1e-20`` relative), ``k ln 2`` with a Cody-Waite split.  Valid for
# positive normal finite ``u``; callers route anything else to libm.
_SQRTH_BITS = 0x3FE6A09E667F3BCD  # bits of sqrt(1/2)
_ONE_BITS = 0x3FF0000000000000


@intrinsic
def _log_split(typingctx, u):
    """``(f, k, 2**-k)`` as float64 with ``u = 2**k * f``, ``f`` in [sqrt(1/2), sqrt(2))."""
    if u != types.float64:
        return None

    def codegen(context, builder, sig, args):
        i64 = ir.IntType(64)
        b = builder.bitcast(args[0], i64)
        b = builder.add(b, ir.Constant(i64, _ONE_BITS - _SQRTH_BITS))
        k = builder.sub(builder.ashr(b, ir.Constant(i64, 52)), ir.Constant(i64, 1023))
        fb = builder.add(
            builder.and_(b, ir.Constant(i64, (1 << 52) - 1)), ir.Constant(i64, _SQRTH_BITS)
        )
        f = builder.bitcast(fb, ir.DoubleType())
        kf = builder.sitofp(k, ir.DoubleType())
        # 2**-k for the normal u this is used with (k in [-1022, 1024]): clamp keeps
        # the bits valid, the callers only use it for u in the normal range
        e = builder.sub(ir.Constant(i64, 1023), k)
        e = builder.select(builder.icmp_signed("<", e, ir.Constant(i64, 1)), ir.Constant(i64, 1), e)
        sk = builder.bitcast(builder.shl(e, ir.Constant(i64, 52)), ir.DoubleType())
        return cgutils.make_anonymous_struct(builder, [f, kf, sk])

    return types.UniTuple(types.float64, 3)(u), codegen


_ATANH = tuple(1.0 / (2 * j + 1) for j in range(1, 12))  # 1/3 .. 1/23
(_A1, _A2, _A3, _A4, _A5, _A6, _A7, _A8, _A9, _A10, _A11) = _ATANH


@njit(fastmath={"contract"}, cache=True, error_model="numpy")
def _log_sum_pair(w, r):
    # log(w + r) for w, r >= 0, u = w + r positive normal.  The rounding error c of
    # u (TwoSum) is put back into the reduced argument: u + c = 2^k (f + c 2^-k), so
    # a = (f - 1) + c 2^-k carries it (f - 1 is exact).  When r is far below the ulp
    # of w (u = w = 1) the result is a = r: log1p(r) to first order.
    u, c = _two_sum(w, r)
    f, k, sk = _log_split(u)
    a = (f - 1.0) + c * sk
    s = a / (f + 1.0)
    z = s * s
    p = _A11
    p = p * z + _A10
    p = p * z + _A9
    p = p * z + _A8
    p = p * z + _A7
    p = p * z + _A6
    p = p * z + _A5
    p = p * z + _A4
    p = p * z + _A3
    p = p * z + _A2
    p = p * z + _A1
    s2 = s + s
    return k * _LN2HI_64 + (k * _LN2LO_64 + (s2 + s2 * z * p))


@njit(fastmath={"contract"}, cache=True, error_model="numpy")
def log_sum_array(w, r, out):
    """``out[i] = log(w[i] + r[i])`` for ``w, r >= 0`` (float64, 1-D), vectorised.

    Entries whose sum is not a positive normal finite number (or is NaN) use libm.
    Max error ~3 ulp (``tests/test_kernels.py::test_log_sum_array``).
    """
    n = out.shape[0]
    ws, rs, os = w[:n], r[:n], out[:n]
    bad = 0
    for i in range(n):
        os[i] = _log_sum_pair(ws[i], rs[i])
        u = ws[i] + rs[i]
        bad += 0 if (u >= 2.2250738585072014e-308 and u < np.inf) else 1
    if bad:
        for i in range(n):
            u = ws[i] + rs[i]
            if not (u >= 2.2250738585072014e-308 and u < np.inf):
                os[i] = np.log(u)
