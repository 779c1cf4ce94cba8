"""Fused row kernels for softmax, log_softmax, logsumexp and the (m, s) state (Numba).

Kernels see 2-D arrays ``x[R, n]`` whose rows are the reductions (C-contiguous
rows: the driver guarantees it).  ``x`` is float32, float64 or uint16 (the bits
of float16, widened to float32 in registers block by block: Numba has no CPU
float16).  The computation dtype is the dtype of the ``invT`` argument; ``out``
is float32, float64 or uint16 (float16 bits, one correct rounding).  ``mask`` and
``b`` are 2-D arrays of any strides (zero strides for broadcasting); callers
without one pass a dummy and ``has_mask`` / ``has_b`` = False.  No user-facing
errors are raised here.

Per row (or per chunk of a long row) we keep the online state

    m  = max of the included x                 (compute dtype; -inf when none)
    r  = sum_{x_j < m} w_j exp((x_j - m) / T)  (float64)
    w0 = sum_{x_j == m} w_j                    (float64: the weight of the ties)

so the row's sum is ``S = w0 + r`` and ``log S = log(w0) + log1p(r / w0)`` keeps
full relative accuracy when the maximum dominates (``log(S)`` would round
``1 + 1e-20`` to 0; guarded by ``tests/test_kernels.py::test_log1p_dominant``).
Special rows fall out of the same formulas with no branch in the hot loops:
``x_j >= m`` excludes the max terms, ``-inf - -inf`` and ``inf - inf`` (never
NaN in the sum); an included NaN fails ``x_j >= m`` and makes ``r`` NaN; a row
with ``+inf`` has ``m = inf``, ``r = 0`` and ``w0`` = weight of its +inf entries.
float32 blocks whose running max is finite skip the tie split: they return
``(S, 0)``, the plain sum of every exp (``_bsum``; docs/dense.md §6 on why the
float32 contract does not need it).

Pass structure (per row): pass 1 reads the row once, block by block (``_BLOCK``
values, L1-resident): a vectorised max of the block (``llvm.maximum``: NaN if the
block holds a NaN, which makes the row a NaN row), a rescale of (r, w0) when the
max grew, then the vectorised sum of ``exp`` over the same
block from L1; pass 2 (softmax / log_softmax only) writes the output (softmax:
pass 1 stores the exps and pass 2 rescales them, at every row length).  A few
long rows are split into chunks reduced in parallel and merged with the (max,
sum) rule.  Accumulators: the block sum in the compute dtype (at most
``_BLOCK / 16`` terms per SIMD lane), blocks combined in float64.  The exp is
``exp.expd``: for float32, 16 float32 lanes with the argument ``(x - m) / T``
carried exactly as a float32 pair (``exp._expd32``; ``exp._expd32_unit`` when
``T = 1``).  Rows are taken a group at a time where a log per row is needed, so
that ``log(w0 + r)`` is one vectorised loop (``logsum.log_sum_array``), except
log_softmax rows of 24-256 values (float64 32-2048), one row at a time
(``ranges.log_softmax_rows_range``: the libm log of row i overlaps the max and the
sum of the rows after it, and the rows stay in L1 between the passes).  Outputs of
32 MiB and more are written with streaming stores (``nt.py``) in the write pass of
unmasked rows longer than L2 that recomputes its values from ``x``: log_softmax, and
softmax in place.  Kernels hand rows to their helpers as ``view.row(x, i)``, not
``x[i]``: a view that holds no reference, so no atomic reference-count update per row
(rows of 128 float32, one thread, cache-resident, per row: log_softmax 85 -> 47 ns,
softmax 64 -> 46 ns).  Threads: the range kernels are serial and ``nogil``;
``_parallel.run`` splits their task ranges over ``numba.get_num_threads()``
threads.

Modules (each imports only those above it):

* ``blocks``: ``ld`` / ``st`` conversions, row codes, the per-block max / sum / write loops;
* ``pieces``: a row's (m, r, w0) state, chunk merge, special rows, the write pass;
* ``store``: softmax by store-then-scale;
* ``tiles``: short rows a transposed tile at a time;
* ``ranges``: the ``nogil`` range kernels that ``_parallel.run`` splits over threads;
* ``masked``: the masked range kernels that fold the mask into a copy of the rows
  (``where(m, x, -inf)``) and run the unmasked code on it;
* ``entry``: the Python entry points that pick a path (``softmax_rows2d``,
  ``logsumexp_rows2d``, ``state_rows``).
"""

from __future__ import annotations

from .blocks import EMPTY, FINITE, NAN, POSINF, ld, st
from .entry import (
    CHUNK_MIN,
    inv_temperature,
    logsumexp_rows2d,
    n_chunks,
    softmax_rows2d,
    state_rows,
)

# The flags the tests switch, ``STORE`` and ``NT_MIN_BYTES``, are read by ``entry``:
# set them there (``rows.entry.STORE``), not on this package.
__all__ = [
    "CHUNK_MIN",
    "EMPTY",
    "FINITE",
    "NAN",
    "POSINF",
    "inv_temperature",
    "ld",
    "logsumexp_rows2d",
    "n_chunks",
    "softmax_rows2d",
    "st",
    "state_rows",
]
