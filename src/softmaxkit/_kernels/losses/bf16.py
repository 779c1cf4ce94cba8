"""bfloat16 cross-entropy rows on the raw bits (``softmaxkit.torch.cross_entropy``).

NumPy has no bfloat16: the logits arrive as ``uint16`` bit patterns (as in
``_kernels/bf16.py``).  Per block of rows (about 128 KB of float32: one
32000-class row, or 256 rows of 128; it stays in L2): widen the bits exactly into
a float32 buffer (``bits << 16``), run the float32 cross-entropy rows of
``ce_index_rows`` on that buffer in place (its ``out=logits`` mode: the
exponentials and then the gradient overwrite the widened rows), and round the
gradient once to bfloat16 bits (round-to-nearest-even, NaN -> quiet NaN) into the
output rows.  Memory traffic is one read of the bf16 logits and one write of the
bf16 gradient: no float32 copy of the tensor and no float32 gradient.  One kernel
call per block, not per row (for rows of 128 the per-call slicing cost more than
the row).

Same arithmetic as the float32 kernel on the widened values (float32 exponentials
on the fast path, float64 accumulators, the exact scalar row for NaN / +-inf / huge
rows), so the loss and the float32 gradient before rounding equal those of
``cross_entropy(logits.float(), ...)``; the only extra error is the gradient's one
bfloat16 rounding (relative ``2^-9``).  Guarded by
``tests/test_torch_ce_perf.py::test_bf16_cross_entropy_*``.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ..bf16 import bf16_to_f32, f32_to_bf16
from ..view import row
from .common import _FM
from .cross_entropy import ce_index_rows

_ce_rows = ce_index_rows.kernel  # the serial Numba kernel (not the threaded wrapper)

_NEG_INF = np.uint16(0xFF80)


@njit(cache=True, nogil=True, fastmath=_FM)
def _widen(br, fr):
    for j in range(br.shape[0]):
        fr[j] = bf16_to_f32(br[j])


@njit(cache=True, nogil=True, fastmath=_FM)
def _round(fr, br):
    for j in range(fr.shape[0]):
        br[j] = f32_to_bf16(fr[j])


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


@njit(cache=True, nogil=True)
def ce_index_rows_bf16(xb, tgt, invT, eps, z, a, b, active, want_grad, gb, ce, lse, lim, r0, r1):
    """``ce_index_rows`` (no mask) on bfloat16 bits ``xb``, rows ``[r0, r1)``.

    ``gb``: the gradient's bits (written when ``want_grad``); ``ce``, ``lse``, ``a``,
    ``b``, ``active``, ``tgt``: as in ``ce_index_rows``.
    """
    n = xb.shape[1]
    # a block of rows at a time (about 128 KB of float32): one kernel call per block,
    # not per row (short rows: the call's slicing cost more than the row itself)
    B = max(1, 32768 // max(n, 1))
    xs = np.empty((B, n), dtype=np.float32)
    mask = np.ones((1, 1), dtype=np.bool_)  # has_mask=False: never read
    for b0 in range(r0, r1, B):
        b1 = min(b0 + B, r1)
        k = b1 - b0
        for i in range(k):
            _widen(row(xb, b0 + i), row(xs, i))
        xk = xs[:k]
        _ce_rows(
            xk, tgt[b0:b1], mask, False, invT, eps, z, a[b0:b1], b[b0:b1],
            active[b0:b1], want_grad, xk, ce[b0:b1], lse[b0:b1], True, lim, 0, k,
        )  # fmt: skip
        if want_grad:
            for i in range(k):
                _round(row(xs, i), row(gb, b0 + i))
