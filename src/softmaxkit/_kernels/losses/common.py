"""Shared by the loss kernels: the fastmath flag sets (never ``nnan`` / ``ninf``; no
``contract`` in the cross-entropy kernels), the fast-path bounds ``LIM32`` /
``LIM64``, ``SD_SCALE`` (linear cross-entropy), ``row_nonempty`` and the inactive-row
fill of the cross-entropy kernels.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ..exp import FASTMATH, FASTMATH_NO_FMA

# never nnan / ninf.  No "contract" in the cross-entropy kernels: a row's max and
# each difference must be formed the same way, or FMA contraction of ``x * invT - m``
# makes the max's own difference the product's rounding error (not 0) and exp
# overflows at extreme temperatures (issue 18 item 2; guarded by
# tests/test_loss_extremes.py).  The differences are ``(x - max x) * invT``, as in the
# dense kernels: exactly 0 at the max whatever LLVM does with them.
_FM = FASTMATH_NO_FMA
_FMC = FASTMATH  # VJP and hinge kernels: no max/difference pairing there

# Fast-path bound on |x - max| / T (and on max / T, min / T): below it no difference,
# no scaled value and no sum of differences can overflow (float32 differences are
# formed in float32; every sum is float64).  Rows beyond it take the exact path.
LIM32 = 1e37
LIM64 = 1e300
# lce_state_update keeps sum (v - m) times SD_SCALE: differences near -1.8e308
# (finfo.min used as a mask) would overflow the plain sum of a few of them
SD_SCALE = 2.0**-60


@njit(cache=True, nogil=True)
def row_nonempty(x, mask, has_mask, out):
    """out[i] = True when row i has an included entry that is not -inf (NaN counts).

    Scans each row only until the first such entry: O(R) for ordinary rows.
    """
    for i in range(x.shape[0]):
        found = False
        for j in range(x.shape[1]):
            if has_mask and not mask[i, j]:
                continue
            if not (x[i, j] == -np.inf):
                found = True
                break
        out[i] = found


@njit(cache=True, nogil=True, inline="always")
def _inactive_row(i, ce, lse, want_grad, grad):
    """Row i is ignored or empty: ``ce = 0``, ``lse = -inf``, a zero gradient."""
    ce[i] = 0.0
    lse[i] = -np.inf
    if want_grad:
        for j in range(grad.shape[1]):
            grad[i, j] = 0.0
