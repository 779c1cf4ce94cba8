"""Vector-Jacobian products of softmax / log_softmax from the forward output ``y``
(``softmax_vjp_rows``): one reduction ``sum g y`` (or ``sum g``) per row, then the
write ``y (g - acc)`` (softmax) or ``g - exp(y) acc`` (log_softmax), times ``1/T``.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .._parallel import over_rows
from ..exp import exp_
from ..view import row
from .common import _FMC

# ---------------------------------------------------------------------------
# VJPs of the dense ops, from the forward output y.
# ---------------------------------------------------------------------------


@njit(cache=True, nogil=True, fastmath=_FMC)
def _vjp_reduce(y, g, m, has_mask, log):
    # pass 1 of a row (1-D views): softmax sum_j g_j y_j over included y_j != 0;
    # log_softmax sum_j g_j over included entries, and the count of included
    # y_j != -inf.  Selects, not branches, so the loops vectorise; the mask loops are
    # separate so that the unmasked ones read no mask.
    acc = 0.0
    cnt = 0
    n = y.shape[0]
    if log:
        if has_mask:
            for j in range(n):
                acc += np.float64(g[j]) if m[j] else 0.0
                cnt += 1 if (m[j] and y[j] != -np.inf) else 0
        else:
            for j in range(n):
                acc += np.float64(g[j])
                cnt += 1 if y[j] != -np.inf else 0
    elif has_mask:
        for j in range(n):
            yj = y[j]
            acc += np.float64(g[j]) * yj if (m[j] and yj != 0) else 0.0
    else:
        for j in range(n):
            yj = y[j]
            acc += np.float64(g[j]) * yj if yj != 0 else 0.0
    return acc, cnt


@njit(cache=True, nogil=True, fastmath=_FMC)
def _vjp_write(y, g, m, has_mask, log, acc, invT, out):
    # pass 2 of a row: the gradient, 0 on masked entries (and, for softmax, where
    # y == 0, so an inf g there gives 0, not NaN)
    n = y.shape[0]
    if log:
        if has_mask:
            for j in range(n):
                v = (g[j] - exp_(y[j]) * acc) * invT
                out[j] = v if m[j] else 0.0
        else:
            for j in range(n):
                out[j] = (g[j] - exp_(y[j]) * acc) * invT
    elif has_mask:
        for j in range(n):
            yj = y[j]
            v = yj * (g[j] - acc) * invT
            out[j] = v if (m[j] and yj != 0) else 0.0
    else:
        for j in range(n):
            yj = y[j]
            v = yj * (g[j] - acc) * invT
            out[j] = v if yj != 0 else 0.0


@over_rows(cost=2)
@njit(cache=True, nogil=True, fastmath=_FMC)
def softmax_vjp_rows(y, g, mask, has_mask, invT, log, out, r0, r1):
    """Row VJP from the forward output ``y`` (float64 row accumulator).

    softmax: ``out = y (g - sum_j g_j y_j) / T``; entries with ``y == 0`` (masked,
    -inf, underflow) get exactly 0, so an empty row gives 0 even where ``g`` is
    inf.  log_softmax: ``out = (g - exp(y) sum_j g_j) / T`` (``exp`` of
    ``_kernels.exp``, 1 ulp); a row whose included ``y`` are all -inf (empty / fully
    masked) gives 0.  Masked entries give 0.  Two passes per row: the reduction,
    then the write (``out`` may be ``y`` or ``g`` itself: entry ``j`` is read before
    it is written).  Rows go to helpers as reference-free views (``view.row``).
    """
    for i in range(r0, r1):
        yr = row(y, i)
        gr = row(g, i)
        mr = row(mask, i)
        orow = row(out, i)
        acc, cnt = _vjp_reduce(yr, gr, mr, has_mask, log)
        if log and cnt == 0:
            orow[:] = 0.0
        else:
            _vjp_write(yr, gr, mr, has_mask, log, acc, invT, orow)
