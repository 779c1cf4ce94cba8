"""Entry points of the row kernels (plain Python): pick the path (short-row tiles, whole
rows, store-then-scale, split rows, streaming stores) and the thread count, allocate
the chunk states, and run the range kernels (``softmax_rows2d``,
``logsumexp_rows2d``, ``state_rows``).  Module flags the tests switch:
``STORE`` (store-then-scale), ``LOG_ROWS`` (log_softmax rows one at a time, float32
logsumexp rows of 24-48 by the row kernel), ``MASK_COPY`` (float32 masked logsumexp
by a copy of the rows) and ``NT_MIN_BYTES`` (streaming stores).
"""

from __future__ import annotations

import numpy as np

from ..._core.validate import normal_inverse
from .. import _parallel
from ..nt import NT_MIN_BYTES
from ..view import any_layout, readonly, unit_last
from .blocks import _BLOCK
from .masked import logsumexp_masked_range, softmax_masked_store_range, where_range
from .ranges import (
    chunk_lse_finish,
    chunk_scale_range,
    chunk_states_range,
    chunk_store_range,
    chunk_write_range,
    log_softmax_range,
    log_softmax_rows_range,
    logsumexp_range,
    logsumexp_short_range,
    softmax_range,
    softmax_short_range,
    softmax_store_range,
    state_range,
)
from .store import L2_ROW
from .tiles import SHORT, SHORT_STORE, tile_rows

# --------------------------------------------------------------------------- entry points
CHUNK_MIN = 1 << 15  # shortest chunk worth a task of its own
# softmax by store-then-scale wherever it applies (no mask, out in the compute dtype,
# not in place): pass 2 rescales the stored exps instead of a second exp per value.
# False only in tests, to reach the two-exp paths with plain arrays.
STORE = True
# float32 masked logsumexp (no weights, rows of at most L2_ROW) folds the mask into a
# copy of each group of rows (``masked.logsumexp_masked_range``).  One thread, CPU
# time, minima of 15, random mask, masked two-pass -> copy (unmasked): [65536, 128]
# 8.7 -> 5.3 ms (2.7), [200000, 10] 14.1 -> 5.8 (1.3), [512, 32000] 12.8 -> 8.3 (4.2),
# [16384, 512] 6.6 -> 4.2 (2.0).  float64 keeps the two-pass code, which the copy made
# slower (12.0 -> 17.8 ms on [65536, 128]; 8.6 unmasked).  False only in tests, to
# reach the masked two-pass code with the same arrays.
MASK_COPY = True
# log_softmax of rows of LOG_ROWS_N[itemsize] values (no mask, out in the compute
# dtype) one row at a time (``log_softmax_rows_range``) instead of the short rows'
# tiles (below 48 values) or the groups of 256 rows.  One thread, CPU time per value,
# medians of 7 interleaved rounds of minima of 15, speed-up over groups (or tiles)
# for 4 MB / 32 MB / 64 MB of input: float32 n = 24 0.99 / 1.37, 32 1.28 / 1.84 /
# 1.51, 48 2.47 (32 MB), 64 0.94 / 1.07 / 1.03, 128 1.02 / 1.12 / 1.16, 256 1.13 /
# 1.11 / 1.11, but 320 1.11 / 0.83 and 512 1.04 / 0.86 (those stay in groups; n = 16
# stays in tiles); float64 n = 32 1.36 / 1.03 / 1.53, 64 0.94 / 0.96 / 1.14, 128
# 1.00 / 0.95 / 1.17, 256 1.01 / 0.95 / 1.01, 512 1.05 / 1.09 / 1.07, 2048 1.01 /
# 1.02 (n = 24 stays in tiles).
# False only in tests, to reach the groups with the same arrays (and float32
# logsumexp's tiles for rows of 24-48, ``logsumexp_rows2d``).
LOG_ROWS = True
LOG_ROWS_N = {4: (SHORT_STORE, 256), 8: (32, _BLOCK)}


# Placeholders for "no mask" / "no weights", read-only.  The mask one is strided
# (stride 0 over a length of 2: a shape of ones counts as contiguous), the Numba type
# every mask has when it reaches a kernel (view.any_layout): a call without a mask, with
# a broadcast mask and with a full one run the same compiled kernel.  Weights keep
# their layout: strided float64 weights kept the weighted loops scalar (logsumexp of
# [65536, 128] float32 with full weights, one thread, 13.7 -> 52.9 ms).
_DUMMY_MASK = np.lib.stride_tricks.as_strided(np.ones(2, np.bool_), (2, 2), (0, 1), writeable=False)
_DUMMY_B = np.ones((1, 1)).view()
_DUMMY_B.flags.writeable = False


def _run(kernel, ntask, nt, *args):
    # the mask (position 1 of every masked row kernel) as a strided array
    _parallel.run(any_layout(kernel, args, (1,)), ntask, nt, *args)


def n_chunks(R: int, n: int, nt: int) -> int:
    """How many parallel chunks to split each row into (1: rows are enough work)."""
    if nt == 1 or R >= 4 * nt or n < 2 * CHUNK_MIN:
        return 1
    return max(1, min(-(-4 * nt // R), n // CHUNK_MIN))


def _chunking(n, nch):
    cs = -(-n // nch)
    cs = -(-cs // 64) * 64
    return cs, -(-n // cs)


def inv_temperature(T: float, compute: np.dtype):
    """``1/T`` in the compute dtype, or None when it is not a finite normal number
    (``_core.validate.normal_inverse``)."""
    inv = normal_inverse(T, compute)
    return None if inv is None else compute.type(inv)


def softmax_rows2d(x, mask, out, T, invT, log):
    """softmax / log_softmax over the rows of C-contiguous ``x[R, n]`` into ``out``."""
    run, threads_for = _parallel.run, _parallel.threads_for
    x = readonly(x)  # one compiled variant (view.readonly)
    has_mask = mask is not None
    mask = _DUMMY_MASK if mask is None else readonly(unit_last(mask))
    R, n = x.shape
    T = np.float64(T)
    nt = threads_for(x.size, invT.itemsize)
    # In place (out is x): the store paths overwrite x in pass 1, and a special row
    # (+inf) is rewritten from x afterwards; they are skipped, as is the "touch".
    inplace = np.may_share_memory(x, out)
    store = STORE and not log and not has_mask and out.dtype == invT.dtype and not inplace
    if (
        LOG_ROWS
        and log
        and not has_mask
        and x.dtype == out.dtype == invT.dtype
        and LOG_ROWS_N[invT.itemsize][0] <= n <= LOG_ROWS_N[invT.itemsize][1]
    ):
        run(log_softmax_rows_range, R, nt, x, out, T, invT)
        return
    if n <= SHORT and not has_mask and not (store and n >= SHORT_STORE):
        rpt = tile_rows(n)
        run(softmax_short_range, -(-R // rpt), nt, x, out, T, invT, log, rpt)
        return
    # softmax with ``store`` is store-then-scale at every row length, split or not:
    # pass 2 re-reads the stored exps (from L2, L3 or memory) and multiplies, where the
    # two-exp path computes every exp twice.  That costs more memory traffic (the
    # output is read once more and write-allocated in pass 1) but the exp is the
    # bottleneck: out=, medians, two-exp + streaming stores -> store-then-scale,
    # [1, 3.2e7] float32 17.2 -> 13.9 ms, float64 47.5 -> 31.2 ms; [16, 2e6] float32
    # 13.0 -> 7.8, float64 39.5 -> 26.6; [256, 131072] float64 36.1 -> 22.1.
    # Streaming stores for outputs bigger than the last-level cache (see nt.py), in the
    # write pass of the other unmasked rows too long for L2 (log_softmax; softmax in
    # place): measured [1, 3.2e7] float32 log_softmax out= 20 -> 13 ms.  Rows that
    # fit in L2 keep plain stores: log_softmax's pass 1 already write-allocates the
    # output while it computes exps (the "touch"), which measured faster than streaming
    # from a scratch row.
    stream = out.nbytes >= NT_MIN_BYTES and out.dtype == invT.dtype and n > L2_ROW
    nch = n_chunks(R, n, nt)
    if inplace and T < 1:
        # a finite x whose x / T overflows makes a +inf row, whose write pass counts
        # the overflowing entries over the whole row (_winf_ovf): with the row split,
        # other tasks may already have overwritten their chunks.  Rows stay whole.
        nch = 1
    if nch == 1 and store:
        run(softmax_store_range, R, nt, x, out, T, invT)
        return
    if has_mask and log and out.dtype == invT.dtype and not inplace:
        # log_softmax(x, where=m) == log_softmax(where(m, x, -inf)) entry for entry:
        # write the latter into out, then the unmasked kernel in place (its read-only
        # view as the input: the compiled variant of unmasked calls).  Two passes over
        # out, but vectorised ones (one thread, CPU time): [65536, 128] float32
        # 12.2 -> 8.0 ms, [200000, 10] 13.7 -> 3.5 (the short rows' tiles), [512, 32000]
        # 18.4 -> 15.3
        _run(where_range, R, nt, x, mask, out, invT)
        softmax_rows2d(readonly(out), None, out, T, invT, log)
        return
    if (
        nch == 1
        and has_mask
        and not log
        and n <= L2_ROW
        and out.dtype == invT.dtype
        and not inplace
    ):
        # the mask folded into a copy of each row (L1 / L2), then store-then-scale
        _run(softmax_masked_store_range, R, nt, x, mask, out, T, invT)
        return
    if nch == 1:
        if log:
            args = (x, mask, out, has_mask, T, invT, stream, not inplace)
            _run(log_softmax_range, R, nt, *args)
        else:
            _run(softmax_range, R, nt, x, mask, out, has_mask, T, invT, stream)
        return
    cs, nch = _chunking(n, nch)
    M, Rr, W = np.empty(R * nch), np.empty(R * nch), np.empty(R * nch)
    if store:
        MB = np.empty((R * nch, -(-cs // _BLOCK)))
        run(chunk_store_range, R * nch, nt, x, out, nch, cs, invT, M, Rr, W, MB)
        # the rescale is ~0.06 ns per value: below 4M values a thread hand-off (~55 us
        # here) costs more than it saves ([1, 1e6] float32: 94 -> 64 us)
        nts = 1 if x.size < (1 << 22) else nt
        run(chunk_scale_range, R * nch, nts, x, out, nch, cs, T, invT, M, Rr, W, MB)
        return
    args = (x, mask, _DUMMY_B, has_mask, False, nch, cs, invT, M, Rr, W, log)
    _run(chunk_states_range, R * nch, nt, *args)
    # log_softmax's write pass has no exp (~0.1 ns per value): one thread below 4M values
    nts = 1 if (log and x.size < (1 << 22)) else nt
    args = (x, mask, out, has_mask, nch, cs, T, invT, log, M, Rr, W, stream)
    _run(chunk_write_range, R * nch, nts, *args)


def logsumexp_rows2d(x, mask, b, T, invT, lse, sign):
    """(log|sum|, sign) over the rows of C-contiguous ``x[R, n]``.

    ``lse`` is float64 or the compute dtype (the float64 result rounded once);
    ``sign`` is float64, or empty when the caller does not need it.
    """
    run, threads_for = _parallel.run, _parallel.threads_for
    x = readonly(x)  # one compiled variant (view.readonly)
    has_mask = mask is not None
    has_b = b is not None
    mask = _DUMMY_MASK if mask is None else readonly(unit_last(mask))
    b = _DUMMY_B if b is None else readonly(b)
    R, n = x.shape
    T = np.float64(T)
    nt = threads_for(x.size, invT.itemsize)
    # float32 rows of SHORT_STORE..SHORT values: the row kernel beats the tiles (one
    # thread, CPU time, minima of 21, [2^23 / n, n], tiles -> rows: n = 16 8.1 -> 8.3
    # ms (stays tiles), 24 7.7 -> 6.4, 32 8.3 -> 5.3, 40 8.4 -> 4.7, 48 8.7 -> 4.4;
    # float64 keeps the tiles: n = 32 18.7 -> 20.7, 48 18.1 -> 19.1)
    rows32 = LOG_ROWS and x.dtype == invT.dtype == np.float32 and n >= SHORT_STORE
    if n <= SHORT and not has_mask and not has_b and not rows32:
        rpt = tile_rows(n)
        run(logsumexp_short_range, -(-R // rpt), nt, x, T, invT, rpt, lse, sign)
        return
    nch = n_chunks(R, n, nt)
    if nch == 1 and MASK_COPY and has_mask and not has_b and n <= L2_ROW and invT.itemsize == 4:
        # the mask folded into a copy of each group of rows (where(m, x, -inf)), then
        # the unmasked group code
        _run(logsumexp_masked_range, R, nt, x, mask, b, T, invT, lse, sign)
        return
    if nch == 1:
        _run(logsumexp_range, R, nt, x, mask, b, has_mask, has_b, T, invT, lse, sign)
        return
    cs, nch = _chunking(n, nch)
    M, Rr, W = np.empty(R * nch), np.empty(R * nch), np.empty(R * nch)
    args = (x, mask, b, has_mask, has_b, nch, cs, invT, M, Rr, W, True)
    _run(chunk_states_range, R * nch, nt, *args)
    args = (x, mask, b, has_mask, has_b, nch, T, invT, M, Rr, W, lse, sign)
    any_layout(chunk_lse_finish, args, (1,), ranged=False)(*args)


def state_rows(x, mask, b, T, has_mask, has_b, m_out, s_out):
    """The mergeable (m, s) state of each row of ``x[R, n]``, in float64.

    ``m`` is the max of the included ``x / T`` and ``s = sum_j w_j exp(x_j / T - m)``.
    Special rows: empty or all ``-inf`` -> (-inf, 0); ``+inf`` present -> (+inf, total
    weight of the +inf entries); NaN -> (NaN, NaN).  See ``softmaxkit._core.state``.
    Same pass as logsumexp (one read of ``x``); ``s = w0 + r``.
    """
    threads_for = _parallel.threads_for
    x = np.asarray(x)
    if x.dtype == np.float16:
        x = x.view(np.uint16)
    compute = np.dtype(np.float64) if x.dtype == np.float64 else np.dtype(np.float32)
    if x.dtype not in (np.float32, np.float64, np.uint16):
        x = x.astype(np.float64)
        compute = np.dtype(np.float64)
    T = float(T)
    invT = inv_temperature(T, compute)
    if invT is None:
        with np.errstate(over="ignore", under="ignore"):
            x = (x.view(np.float16) if x.dtype == np.uint16 else x).astype(np.float64) / T
        T, invT = 1.0, np.float64(1.0)
    if not x.flags.c_contiguous:
        x = np.ascontiguousarray(x)
    x = readonly(x)  # one compiled variant (view.readonly)
    R = x.shape[0]
    if R == 0:
        return
    if x.shape[1] == 0:
        m_out[:] = -np.inf
        s_out[:] = 0.0
        return
    mask = readonly(unit_last(mask)) if has_mask else _DUMMY_MASK
    b = readonly(b) if has_b else _DUMMY_B
    _run(
        state_range,
        R,
        threads_for(x.size, invT.itemsize),
        x,
        mask,
        b,
        has_mask,
        has_b,
        np.float64(T),
        invT,
        m_out,
        s_out,
    )
