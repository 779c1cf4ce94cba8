"""The random keys of the exponential race: tile and buffer sizes, the fastmath set
(never ``arcp``, ``nnan``, ``ninf``), SplitMix64's mixer and the counter-based
uniforms ``r = uniform(stream_base(seed, row, s), j)``, and the key of an entry
(``_key``) with its cheap upper bound (``_bound``, a piecewise-linear log2).
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

_TILE = 512
_KMAX = 256  # top-k up to this size keeps a sorted buffer; larger uses a selection
_SMALL = 256  # a top-p band this small is sorted instead of bisected
# Top-p sums the row's masses per block of this many entries and then the block
# partials in block order, on any thread count: a single row cut across threads
# (``chunked``) gets the same floats, hence the same threshold and tokens, as a row
# sampled whole.  A multiple of _TILE.
_BLOCK = 16384
_CBLOCK = 4096  # the parallel race over top-p candidates takes them in blocks this size

# reassoc: vectorised sums; nsz: sign of zero irrelevant; contract only fuses the
# bound's multiply-add.  Never arcp (x / T must stay a division everywhere, so that
# v == m finds the maximum again) nor nnan/ninf (NaN detection, -inf entries).
_FM = {"reassoc", "nsz", "contract"}

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLD = np.uint64(0x9E3779B97F4A7C15)  # SplitMix64's increment (odd)
_GOLD2 = np.uint64(0xD1B54A32D192ED03)  # a second odd increment, for the sample index
_S30 = np.uint64(30)
_S27 = np.uint64(27)
_S31 = np.uint64(31)
_S12 = np.uint64(12)
_TWO_M52 = 2.0**-52
_LN2 = math.log(2.0)
# max of -ln2 lg(r) over r >= 2^-53: ln2 * 53 = 36.74; a tile whose best d cannot
# reach the current best key by this much holds no winner
_BOUND_MAX = 37.0
_SLACK = 1e-9  # the bound's rounding (|key| < 40, a few ulp) is far below this


@intrinsic
def _bits(typingctx, x):
    """The bits of a float64 as int64 (a bitcast; vectorises)."""
    if x != types.float64:
        return None

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.IntType(64))

    return types.int64(x), codegen


@intrinsic
def _cttz(typingctx, x):
    """The number of trailing zero bits of a nonzero uint64 (``llvm.cttz``: one
    ``tzcnt`` on x86-64)."""
    if x != types.uint64:
        return None

    def codegen(context, builder, sig, args):
        i64 = ir.IntType(64)
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(i64, [i64, ir.IntType(1)]), "llvm.cttz.i64"
        )
        return builder.call(fn, [args[0], ir.Constant(ir.IntType(1), 1)])

    return types.uint64(x), codegen


@njit(cache=True, nogil=True, inline="always")
def _mix(z):
    """SplitMix64's finaliser (Stafford's variant 13): a bijection of uint64."""
    z = (z ^ (z >> _S30)) * _M1
    z = (z ^ (z >> _S27)) * _M2
    return z ^ (z >> _S31)


@njit(cache=True, nogil=True)
def stream_base(seed, row_index, s):
    """The 64-bit key of (seed, row, sample): element ``j`` draws ``mix(base + (j+1) G)``."""
    h = _mix(seed + _GOLD)
    h = _mix(h + np.uint64(row_index + 1) * _GOLD)
    return _mix(h + np.uint64(s + 1) * _GOLD2)


@njit(cache=True, nogil=True, inline="always")
def _unif(base, j):
    """Uniform in (0, 1), exact multiple of 2^-53 (52 random bits + 1/2)."""
    z = _mix(base + np.uint64(j + 1) * _GOLD)
    return (np.float64(z >> _S12) + 0.5) * _TWO_M52


@njit(cache=True, nogil=True)
def uniform(base, j):
    """``r`` of element ``j`` for a stream ``base`` (for the reference and tests)."""
    return _unif(base, j)


@njit(cache=True, nogil=True, inline="always")
def _bound(d, r):
    """An upper bound of ``d - log(-log1p(-r))`` (module docstring)."""
    lg = np.float64(_bits(r)) * _TWO_M52 - 1023.0
    return d - _LN2 * lg


@njit(cache=True, nogil=True, inline="always")
def _key(d, r):
    """The exact Gumbel key ``d - log E`` with ``E = -log(1 - r)`` ~ Exp(1)."""
    return d - math.log(-math.log1p(-r))
