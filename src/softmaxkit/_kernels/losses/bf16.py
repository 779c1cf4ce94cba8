"""bfloat16 cross-entropy rows on the raw bits (``softmaxkit.torch.cross_entropy``).

NumPy has no bfloat16: the logits arrive as ``uint16`` bit patterns (as in
``_kernels/bf16.py``).  Per row, into one float32 row buffer (L1 for rows of 128,
L2 for 32000 classes): widen the bits exactly (``bits << 16``) while scanning the
row's max and min, run the float32 cross-entropy row's fast-path helpers on the
buffer in place (the ``out=logits`` mode of ``ce_index_rows``: the exponentials
and then the gradient overwrite the widened row), and round the gradient once to
bfloat16 bits (round-to-nearest-even, NaN -> quiet NaN) into the output row.
Memory traffic is one read of the bf16 logits and one write of the bf16 gradient:
no float32 copy of the tensor and no float32 gradient.

Same arithmetic as the float32 kernel on the widened values (float32 exponentials
on the fast path, float64 accumulators, the exact scalar row for NaN / +-inf / huge
rows), so the loss and the float32 gradient before rounding equal those of
``cross_entropy(logits.float(), ...)``; the only extra error is the gradient's one
bfloat16 rounding (relative ``2^-9``).  Guarded by
``tests/test_torch_ce_perf.py::test_bf16_cross_entropy_*``.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from ..bf16_math import bf16_to_f32, round_array
from ..exp import fmaximum
from ..view import row
from .common import _FM
from .cross_entropy import _index_row_general
from .fast import _fast_ok, _scale_shift_row, _sum_exp, _sum_exp_inplace

_NEG_INF = np.uint16(0xFF80)


@njit(cache=True, nogil=True)
def row_nonempty_bf16(xb, out):
    """out[i] = True when row i of the bits has an entry that is not -inf (NaN counts).

    Stops at each row's first such entry (O(rows) for ordinary rows).
    """
    for i in range(xb.shape[0]):
        found = False
        for j in range(xb.shape[1]):
            if xb[i, j] != _NEG_INF:
                found = True
                break
        out[i] = found


@njit(cache=True, nogil=True, fastmath=_FM)
def _widen_scan(br, fr):
    """Widen a row of bits into ``fr``; return ``(max, min, m + mn)`` in float64.

    The float32 kernel's ``_max_min_sum_row`` gives the exact max and min and a
    float64 sum that is finite exactly when every value is (a float64 sum of finite
    float32 values cannot overflow); NaN-propagating maxima (``fmaximum``, a
    vectorised tree) make ``max + min`` finite exactly then too, so ``_fast_ok``
    takes the same decision.  Numba's ``max`` / ``min`` and the float64 sum did not
    vectorise: 110 ns a row of 128 against ~15 here.
    """
    m = np.float32(-np.inf)
    nmn = np.float32(-np.inf)  # -min
    for j in range(br.shape[0]):
        v = bf16_to_f32(br[j])
        fr[j] = v
        m = fmaximum(m, v)
        nmn = fmaximum(nmn, -v)
    return np.float64(m), -np.float64(nmn), np.float64(m) - np.float64(nmn)


@njit(cache=True, nogil=True)
def ce_index_rows_bf16(xb, tgt, invT, eps, z, a, b, active, want_grad, gb, ce, lse, lim, r0, r1):
    """``ce_index_rows`` (no mask) on bfloat16 bits ``xb``, rows ``[r0, r1)``.

    ``gb``: the gradient's bits (written when ``want_grad``); ``ce``, ``lse``, ``a``,
    ``b``, ``active``, ``tgt``: as in ``ce_index_rows``.

    Per row, into one float32 row buffer (in L1 for short rows, L2 for 32000
    classes): widen the bits and scan max / min / sum in one pass; then the float32
    kernel's own fast-path helpers in its ``out=logits`` mode (``_sum_exp_inplace``
    with a gradient, ``_sum_exp`` without; ``_scale_shift_row``) and the same
    formulas, so every value equals the float32 path's bit for bit; round the row
    into ``gb``.  Rows off the fast path (NaN, +-inf, huge values) take the float32
    kernel's exact scalar row ``_index_row_general`` on the widened row.  Rows are
    handed to the helpers as ``row`` views (no reference counting): the previous
    version called the float32 kernel on blocks of 256 widened rows, whose ``x[i]``
    views and separate max / min / sum pass cost ~200 ns a row of 128.  [65536, 128],
    one thread, CPU time, medians: 16.0 -> 8.9 ms with the gradient, 13.2 -> 6.4 ms
    without; cross_entropy forward + backward [4096, 32000] 202 -> 110 ms.  Guarded
    by tests/test_torch_bf16.py::test_bf16_ce_kernel_equals_float32_path_*.
    """
    n = xb.shape[1]
    xs = np.empty((1, n), dtype=np.float32)
    fr = row(xs, 0)
    mask = np.ones((1, 1), dtype=np.bool_)  # has_mask=False: never read
    for i in range(r0, r1):
        if not active[i]:
            ce[i] = 0.0
            lse[i] = -np.inf
            if want_grad:
                gr = row(gb, i)
                for j in range(n):
                    gr[j] = np.uint16(0)
            continue
        t = tgt[i]
        m, mn, tot = _widen_scan(row(xb, i), fr)
        if not _fast_ok(m, mn, tot, invT, n, lim):
            ce[i], lse[i] = _index_row_general(
                xs, mask, False, 0, t, invT, eps, z, a[i], b[i], want_grad, xs
            )
        else:
            dt = (np.float64(fr[t]) - m) * invT
            if want_grad:
                s, sd = _sum_exp_inplace(fr, invT, m)
            else:
                s, sd = _sum_exp(fr, invT, m, fr, False)
            ls = math.log(s)
            lrow = m * invT + ls
            lse[i] = lrow
            cei = 0.0
            if eps < 1.0:
                cei += (1.0 - eps) * (ls - dt)
            if eps > 0.0:
                cei += eps * (ls - sd / n)
            ce[i] = cei
            if want_grad:
                c = a[i] + 2.0 * b[i] * z * lrow
                _scale_shift_row(fr, invT * c / s, invT * a[i] * eps / n)
                fr[t] -= invT * a[i] * (1.0 - eps)
        if want_grad:
            round_array(fr, row(gb, i))
