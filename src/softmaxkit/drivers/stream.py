"""Streaming / out-of-core driver: the online normalizer over data larger than memory.

A source is cut into *blocks*: hyper-rectangles of the array, each at most a few
megabytes (the memory budget divided among the workers), cut along the axes in
memory order so that a block of a C-ordered ``.npy`` file is one contiguous byte
range.  A block may hold whole rows, parts of rows, or both:

* pass 1 (state): each block is reduced to the ``(m, s)`` state of its rows
  (serial Numba kernel ``fold_rows``, ``nogil``; one block per thread) and merged
  into the global state **in block order** in the main thread, so the result does
  not depend on the number of workers;
* pass 2 (softmax only): each block is normalised with its rows' final state
  (``normalize_rows``) and written to the output file at the same place;
* when every block holds whole rows, softmax is one pass: a block's own state is its
  rows' final state, so it is normalised and written at once (``_whole_rows``).

Files are read with ``preadv`` into a fresh buffer per block and outputs written with
``pwritev`` (``_npyio``): nothing is memory-mapped, so resident memory is the blocks in
flight, bounded by the budget for every row length (a row longer than a block is
folded and written block by block), and truncating the input while it streams is a
clear ``ValueError``, not a ``SIGBUS``.  Outputs go to a temporary file in the
target's directory whose space is reserved (``posix_fallocate``) before pass 1 for
array and file sources, and are renamed over the target (``os.replace``) only when
complete.
"""

from __future__ import annotations

import math
import os
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from .._core import npyio as _npyio
from .._core import state as _state
from .._core.validate import normalize_axis, resolve_dtype, validate_temperature
from . import topk as _topk
from .eager import rows_view
from .stream_sources import (  # re-exported: the CLI and tests read them from here
    MAX_MEMORY,
    _block_shape,
    _blocks,
    _IterSource,
    _source,
    _workers,
    open_npy,
    parse_memory,
)

__all__ = [
    "MAX_MEMORY",
    "open_npy",
    "parse_memory",
    "softmax_to_file",
    "state",
    "topk_to_file",
]

# -- the two passes ----------------------------------------------------------------


# The budget is split into _SLOTS blocks, of which at most _SLOTS are in flight (so at
# most _SLOTS - 1 worker threads).  The block size depends on the budget only, never
# on the number of workers, so results are bit-identical for any ``workers`` (guarded
# by tests/test_stream.py::test_results_do_not_depend_on_workers).
_SLOTS = 8


def _per_block_limit(dtype: np.dtype, memory: int) -> int:
    # per element of a block in flight: the block read from the file (plus its
    # native-order copy for a big-endian file, counted in the 2 * itemsize), its
    # float64 rows, the float64 result and the output copy
    per = 2 * dtype.itemsize + 24
    return max(1, memory // (per * _SLOTS))


def _ordered(pool, fn, items: Iterator, workers: int):
    """Map ``fn`` over ``items`` on ``pool`` with at most ``workers + 1`` in flight;
    yield ``(item, result)`` in input order."""
    pending: deque = deque()
    try:
        for item in items:
            pending.append((item, pool.submit(fn, item)))
            if len(pending) > workers:
                it, fut = pending.popleft()
                yield it, fut.result()
        while pending:
            it, fut = pending.popleft()
            yield it, fut.result()
    finally:
        for _, fut in pending:
            fut.cancel()


def _rows(blk: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    x2 = rows_view(blk, axes)
    if x2.dtype.kind != "f":
        x2 = x2.astype(np.float64)
    elif x2.dtype == np.float16:
        x2 = x2.astype(np.float32)
    return np.ascontiguousarray(x2)


def _ones_mask(shape):
    return np.broadcast_to(np.ones(1, bool), shape)


def _batch_slices(sl, axes):
    return tuple(s for i, s in enumerate(sl) if i not in axes)


def _progress(progress, total, desc):
    return _npyio.Progress(total, desc) if progress else None


def _state_pass(source, t, limit, workers, pbar):
    from .._kernels import online as k

    def work(item):
        _sl, load = item
        blk, mask = load()
        axes = source.axes
        x2 = _rows(blk, axes)
        mask2 = rows_view(mask, axes) if mask is not None else None
        m = np.full(x2.shape[0], -np.inf)
        s = np.zeros(x2.shape[0])
        k.fold_rows(
            x2,
            mask2 if mask2 is not None else _ones_mask(x2.shape),
            mask2 is not None,
            t,
            m,
            s,
        )
        bshape = tuple(n for i, n in enumerate(blk.shape) if i not in axes)
        return m.reshape(bshape), s.reshape(bshape)

    gm = gs = None
    with ThreadPoolExecutor(workers) as pool:
        for (sl, _), (m, s) in _ordered(pool, work, source.blocks(limit), workers):
            if gm is None:
                if isinstance(source, _IterSource):  # every chunk holds every row
                    batch = m.shape
                else:
                    batch = tuple(n for i, n in enumerate(source.shape) if i not in source.axes)
                gm, gs = _batch_state(batch)
            bs = _batch_slices(sl, source.axes)
            gm[bs], gs[bs] = _state.merge(gm[bs], gs[bs], m, s)
            if pbar is not None:
                pbar.update(1)
    if gm is None:  # an array with no blocks (a zero-size dimension)
        batch = tuple(n for i, n in enumerate(source.shape) if i not in source.axes)
        gm, gs = _batch_state(batch)
    return gm, gs


def _batch_state(batch):
    """The running ``(m, s)`` of every row of the batch: two float64 arrays, held in
    memory whatever ``memory`` says (the blocks are what ``memory`` bounds).  Refused
    with ``MemoryError`` before any allocation when they and a float64 result would
    exceed the machine's physical memory: a file of zero-size rows (``(2**31, 0)``)
    holds no data but asks for a 2**31-row state, which NumPy allocates lazily and the
    OOM killer then ends while it is filled (found by tests/test_cli_fuzz.py)."""
    need = 3 * 8 * math.prod(batch)  # m, s and the float64 result
    try:
        phys = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):  # no sysconf (Windows): let NumPy try
        phys = need
    if need > phys:
        raise MemoryError(
            f"the running state and result of {math.prod(batch)} rows (batch shape {batch}) "
            f"need {need / 2**30:.1f} GiB, more than this machine's "
            f"{phys / 2**30:.1f} GiB of memory"
        )
    return np.full(batch, -np.inf), np.zeros(batch)


def _setup(src, axis, temperature, where, memory, workers):
    t = validate_temperature(temperature)
    mem = parse_memory(memory)
    w = min(_workers(workers), _SLOTS - 1)
    source = _source(src, axis, where)
    dt = source.dtype if source.dtype is not None else np.dtype(np.float64)
    return source, t, _per_block_limit(dt, mem), w


def _states_only(src, axis, temperature, where, memory, workers, progress, label):
    """One state pass over ``src`` with its own progress bar: (source, T, m, s)."""
    source, t, limit, w = _setup(src, axis, temperature, where, memory, workers)
    pbar = _progress(progress, source.count(limit), label)
    try:
        m, s = _state_pass(source, t, limit, w, pbar)
    finally:
        source.close()
        if pbar is not None:
            pbar.close()
    return source, t, m, s


def state(
    src: Any,
    axis: Any,
    temperature: float,
    where: Any,
    memory: int | str,
    workers: int | None,
    progress: bool,
    label: str = "state",
) -> tuple[np.ndarray, np.ndarray, float, np.dtype[Any]]:
    """``(m, s, T, dtype)`` of ``src`` in one pass: float64 arrays of the batch shape,
    the validated temperature and the source's dtype (``stream_normalizer`` wraps the
    state in a ``Normalizer``, ``stream_logsumexp`` finalizes it); ``label`` names the
    progress bar."""
    source, t, m, s = _states_only(src, axis, temperature, where, memory, workers, progress, label)
    dt = source.dtype if source.dtype is not None else np.dtype(np.float64)
    return np.asarray(m), np.asarray(s), t, dt


# -- softmax to a file -------------------------------------------------------------


def _whole_rows(shape, order, axes, limit) -> bool:
    """True when every block of ``_blocks(shape, order, limit)`` holds whole rows: the
    reduced axes are the innermost in memory order and a row fits a block."""
    nd = len(shape)
    inner = list(range(nd - len(axes), nd)) if order == "C" else list(range(len(axes)))
    return set(inner) == set(axes) and math.prod(shape[a] for a in axes) <= limit


def softmax_to_file(
    src: Any,
    dst: Any,
    axis: Any,
    log: bool,
    temperature: float,
    where: Any,
    dtype: Any,
    memory: int | str,
    workers: int | None,
    progress: bool,
) -> Path:
    """Streaming softmax into a ``.npy`` file.  When every block holds whole rows
    (``_whole_rows``), one pass: each block's own state is its rows' final state
    (merging with the identity is exact), so it is normalised and written at once and
    the file is read once.  Otherwise the two passes of the module docstring."""
    from .._kernels import online as k

    _npyio.check_target(dst)
    source, t, limit, w = _setup(src, axis, temperature, where, memory, workers)
    out = None
    pbar = None
    try:
        if isinstance(source, _IterSource) and iter(source.iterable) is source.iterable:
            raise TypeError(
                "an iterator can be read only once; stream_softmax reads its source twice: "
                "pass a list or another re-iterable of chunks"
            )
        one_pass = False
        if not isinstance(source, _IterSource):
            # shape and dtype known: reserve the output before any work, so a full disk
            # is reported at once (guarded by test_no_space_is_reported_before_pass_1)
            _, out_dtype = resolve_dtype(source.dtype, dtype)
            out = _npyio.NpyOut(dst, source.shape, out_dtype, source.order)
            out.create()
            one_pass = _whole_rows(source.shape, source.order, source.axes, limit)
        n_blocks = source.count(limit)
        total = None if n_blocks is None else n_blocks * (1 if one_pass else 2)
        pbar = _progress(progress, total, "softmax")
        m = s = None
        if not one_pass:
            m, s = _state_pass(source, t, limit, w, pbar)
        if out is None:  # an iterable: its shape is known only now
            _, out_dtype = resolve_dtype(source.dtype, dtype)
            out = _npyio.NpyOut(dst, source.shape, out_dtype, source.order)
            out.create()
        axes = source.axes
        shape, order = source.shape, source.order

        def work(item):
            sl, load = item
            blk, mask = load()
            x2 = _rows(blk, axes)
            mask2 = rows_view(mask, axes) if mask is not None else None
            mask2 = mask2 if mask2 is not None else _ones_mask(x2.shape)
            has_mask = mask is not None
            if one_pass:
                bm = np.full(x2.shape[0], -np.inf)
                bsum = np.zeros(x2.shape[0])
                k.fold_rows(x2, mask2, has_mask, t, bm, bsum)
            else:
                bs = _batch_slices(sl, axes)
                bm = np.ascontiguousarray(m[bs]).reshape(-1)
                bsum = np.ascontiguousarray(s[bs]).reshape(-1)
            res = np.empty(x2.shape, dtype=np.float64)
            k.normalize_rows(x2, mask2, has_mask, t, bm, bsum, log, res)
            del x2
            nd = blk.ndim
            ob = np.empty(blk.shape, dtype=out_dtype, order=order)
            moved = np.moveaxis(ob, axes, tuple(range(nd - len(axes), nd)))
            moved[...] = res.reshape(moved.shape)
            out.write_block(shape, order, sl, ob)
            return None

        with ThreadPoolExecutor(w) as pool:
            for _ in _ordered(pool, work, source.blocks(limit), w):
                if pbar is not None:
                    pbar.update(1)
        return out.commit()
    except BaseException:
        if out is not None:
            out.abort()
        raise
    finally:
        source.close()
        if pbar is not None:
            pbar.close()


# -- top-k to a file ---------------------------------------------------------------


def _merge_candidates(cv, ci, v, i, k):
    """Keep the ``k`` best of the candidates ``(cv, ci)`` [R, k] and ``(v, i)`` [R, j]:
    NaN first, then by value descending, ties by index ascending (the order of
    ``topk_softmax``)."""
    val = np.concatenate([cv, v], axis=1)
    idx = np.concatenate([ci, i], axis=1)
    nan = np.isnan(val)
    key = np.where(nan, 0.0, -val)
    order = np.lexsort((idx, key, ~nan), axis=1)[:, :k]
    return np.take_along_axis(val, order, 1), np.take_along_axis(idx, order, 1)


def _topk_whole_rows(f, k, ax, t, limit, progress, out_dtype):
    """Rows are contiguous in the file and fit a block: blocks of whole rows, one
    ``drivers.topk.topk`` call (parallel over rows) per block, exactly the dense result."""
    oshape = (*f.shape[:ax], k, *f.shape[ax + 1 :])
    probs = np.zeros(oshape, dtype=out_dtype)
    idx = np.zeros(oshape, dtype=np.int64)
    blocks = list(_blocks(f.shape, f.order, limit, whole=(ax,)))
    pbar = _progress(progress, len(blocks), "topk")
    try:
        for sl in blocks:
            start, count = _npyio.span(f.shape, f.order, sl)
            blk = f.read(start, count).reshape(_block_shape(f.shape, sl), order=f.order)
            p, i = _topk.topk(blk, k, ax, t, None)
            osl = (*sl[:ax], slice(None), *sl[ax + 1 :])
            probs[osl] = p
            idx[osl] = i
            if pbar is not None:
                pbar.update(1)
    finally:
        if pbar is not None:
            pbar.close()
    return probs, idx


def _topk_row_chunks(f, k, ax, t, limit, progress, out_dtype):
    """Rows longer than a block, or not contiguous in the file: blocks cut in memory
    order; each adds its (m, s) state and its own top-k candidates to its rows'."""
    from .._kernels import online as kern

    n = f.shape[ax]
    batch = f.shape[:ax] + f.shape[ax + 1 :]
    rows = math.prod(batch)
    cv = np.full((rows, k), -np.inf)
    ci = np.full((rows, k), np.iinfo(np.int64).max, dtype=np.int64)
    gm = np.full(rows, -np.inf)
    gs = np.zeros(rows)
    row_ids = np.arange(rows).reshape(batch)
    blocks = list(_blocks(f.shape, f.order, limit))
    pbar = _progress(progress, len(blocks), "topk")
    try:
        for sl in blocks:
            start, count = _npyio.span(f.shape, f.order, sl)
            blk = f.read(start, count).reshape(_block_shape(f.shape, sl), order=f.order)
            x2 = _rows(blk, (ax,))
            del blk
            r = row_ids[_batch_slices(sl, (ax,))].reshape(-1)
            m = np.full(x2.shape[0], -np.inf)
            s = np.zeros(x2.shape[0])
            kern.fold_rows(x2, _ones_mask(x2.shape), False, t, m, s)
            gm[r], gs[r] = _state.merge(gm[r], gs[r], m, s)
            j = min(k, x2.shape[1])
            if j:
                _, li = _topk.topk(x2, j, 1, t, None)
                v = np.take_along_axis(x2, li, 1).astype(np.float64)
                gi = li + sl[ax].indices(n)[0]
                cv[r], ci[r] = _merge_candidates(cv[r], ci[r], v, gi, k)
            if pbar is not None:
                pbar.update(1)
    finally:
        if pbar is not None:
            pbar.close()
    probs = np.empty((rows, k))
    kern.normalize_rows(cv, _ones_mask(cv.shape), False, t, gm, gs, False, probs)
    oshape = (*batch, k)
    probs_o = np.moveaxis(probs.reshape(oshape), -1, ax).astype(out_dtype)
    idx_o = np.ascontiguousarray(np.moveaxis(ci.reshape(oshape), -1, ax))
    return probs_o, idx_o


def topk_to_file(src, dst, k, axis, temperature, memory, progress):
    """Top-k softmax of a ``.npy`` file into an ``.npz`` with arrays ``probabilities``
    and ``indices`` (atomic write).

    Rows that are contiguous in the file and fit a block are read whole, many per
    block (``_topk_whole_rows``).  Otherwise the file is read block by block in memory
    order (``_blocks``, the cut of the streaming softmax), so a row longer than a
    block is read in column chunks: each chunk adds its ``(m, s)`` state and its own
    top ``k`` candidates (value, global index) to the row's, and the probabilities are
    ``exp(v / T - m) / s`` of the k survivors with the row's final state
    (``_topk_row_chunks``).  Memory: the budget plus the [rows, k] results.
    """
    _npyio.check_target(dst)
    t = validate_temperature(temperature)
    mem = parse_memory(memory)
    f = open_npy(src)
    try:
        if not f.shape:
            raise ValueError(f"{str(src)!r} holds a 0-d array; topk needs at least one dimension")
        (ax,) = normalize_axis(axis, len(f.shape))
        n = f.shape[ax]
        if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k <= n:
            raise ValueError(f"k must satisfy 0 <= k <= {n} (the size of axis {axis}); got k={k}")
        # per element of a block: the read, its float64 rows, top-k work space
        limit = max(1, mem // (2 * f.dtype.itemsize + 16))
        _, out_dtype = resolve_dtype(f.dtype, None)
        inner = ax == (len(f.shape) - 1 if f.order == "C" else 0)
        if inner and n <= limit:
            probs_o, idx_o = _topk_whole_rows(f, k, ax, t, limit, progress, out_dtype)
        else:
            probs_o, idx_o = _topk_row_chunks(f, k, ax, t, limit, progress, out_dtype)
    finally:
        f.close()
    return _npyio.write_atomic(dst, lambda fh: np.savez(fh, probabilities=probs_o, indices=idx_o))
