"""Fused loss + gradient row kernels (Numba): cross-entropy and linear cross-entropy.

Kernels see 2-D C-contiguous rows ``x[R, C]`` (the class axis last).  ``mask`` has
the same shape but may be a broadcast view; callers without a mask pass a
broadcast ``True`` and ``has_mask=False``.  No user-facing errors are raised here:
the public layer (``softmaxkit.losses``) has validated targets and options.

Per-row outputs shared by every cross-entropy kernel:

* ``lse[i]``: logsumexp of the included ``v = x / T`` (float64);
* ``ce[i]``: the *unweighted* smoothed cross-entropy ``H(q_i, p_i)`` for index
  targets, or the class-weighted ``sum_c w_c q_c (lse - v_c)`` for probability
  targets (float64);
* ``grad[i, :]`` (when ``want_grad``) ``= invT * (a_i (W_i p - w*q) + b_i 2 z lse_i p)``
  where ``a_i`` and ``b_i`` are the per-row scales of the cross-entropy and
  z-loss parts chosen by the caller for the reduction.

Accumulators: float64 for every input dtype.  Exponentials: on the fast path of
float32 rows (no mask, every value finite) the vectorised float32 ``exp_`` of
``_kernels/exp.py`` (1 ulp; the same exp as the dense kernels, guarded by
``tests/test_kernels.py::test_exp32_exhaustive`` and, as used here,
``tests/test_losses.py::test_fast_exp_accuracy``); otherwise ``math.exp`` in float64.
The argument ``x / T - m`` is a plain float32 value here (the dense kernels carry it
exactly).  fastmath never includes ``nnan``/``ninf``.

Pass structure of the fused cross-entropy kernels, per row (a 32000-class float32
row is 128 KB and stays in L2 between passes, so memory traffic is one read of
the logits and one write of the gradient):

* pass 1: raw max ``m``, min and the plain sum of the row (a non-finite sum, or a
  range / ``|x|/T`` that could overflow a difference or a sum (``LIM32``/``LIM64``),
  sends the row to the exact scalar path, which handles NaN / +-inf per the dense
  contract); the differences are ``(x - m) / T``, exactly 0 at the max;
* pass 2: ``s = sum exp(v - m)`` and ``sum (v - m)`` (label smoothing); when a
  gradient is wanted the exponentials are stored in ``grad`` (so ``out=logits``
  works: the logits of the row are no longer needed after this pass);
* pass 3: scale the stored exponentials into the gradient in place.

Modules: ``common`` (flags, bounds, ``row_nonempty``), ``fast`` (the fast-path row
helpers), ``cross_entropy`` (``ce_index_rows``, ``ce_prob_rows``), ``linear`` (linear
cross-entropy chunks), ``vjp`` (``softmax_vjp_rows``), ``hinge`` (``hinge_rows``).
"""

from __future__ import annotations

from .common import LIM32, LIM64, SD_SCALE, row_nonempty
from .cross_entropy import ce_index_rows, ce_prob_rows
from .hinge import hinge_rows
from .linear import lce_grad_chunk, lce_state_update
from .vjp import softmax_vjp_rows

__all__ = [
    "LIM32",
    "LIM64",
    "SD_SCALE",
    "ce_index_rows",
    "ce_prob_rows",
    "hinge_rows",
    "lce_grad_chunk",
    "lce_state_update",
    "row_nonempty",
    "softmax_vjp_rows",
]
