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
import re
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal, InvalidOperation
from typing import Any

import numpy as np

from .._core import npyio as _npyio
from .._core import state as _state
from .._core.validate import normalize_axis, resolve_dtype, validate_temperature, validate_where
from .eager import rows_view

__all__ = ["logsumexp", "normalizer", "softmax_to_file", "topk_to_file"]

# K/M/G/T and KiB/MiB/GiB/TiB are powers of 1024; KB/MB/GB/TB are powers of 1000
# (case-insensitive).  Decided in issue 18: "512MB" used to be read as MiB, silently.
_BINARY = {"": 1, "B": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
_DECIMAL = {"KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12}
MAX_MEMORY = 2**60  # anything larger is a typo, not a budget
_MEMORY_HELP = "a number of bytes or a string like '512M', '2G', '64KiB' or '500MB'"


def parse_memory(memory: Any) -> int:
    """Bytes from an int or a string: ``"512M"`` = ``"512MiB"`` = 512 * 2**20,
    ``"500MB"`` = 500 * 10**6, ``"1.5G"``; at least 1 KiB, at most 2**60."""
    if isinstance(memory, bool):
        raise TypeError(f"memory must be {_MEMORY_HELP}; got {memory!r}")
    if isinstance(memory, int | np.integer):
        value = int(memory)
    elif isinstance(memory, str):
        mt = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([KMGT]?)(I?B)?\s*", memory.upper())
        if not mt or (mt.group(3) and not mt.group(2) and mt.group(3) != "B"):
            raise ValueError(f"memory must be {_MEMORY_HELP}; got {memory!r}")
        unit = mt.group(2) + ("B" if mt.group(3) == "B" and mt.group(2) else "")
        scale = _DECIMAL.get(unit) or _BINARY[mt.group(2)]
        if len(mt.group(1)) > 30:
            value = MAX_MEMORY + 1  # no need to parse 400 digits to know they are too many
        else:
            try:
                value = int(Decimal(mt.group(1)) * scale)
            except InvalidOperation:  # pragma: no cover - the regex admits only numbers
                raise ValueError(f"memory must be {_MEMORY_HELP}; got {memory!r}") from None
    else:
        raise TypeError(f"memory must be {_MEMORY_HELP}; got {memory!r}")
    if value < 1024:
        raise ValueError(f"memory must be at least 1K (1024 bytes); got {memory!r}")
    if value > MAX_MEMORY:
        shown = memory if len(str(memory)) <= 40 else str(memory)[:37] + "..."
        raise ValueError(f"memory must be at most 2**60 bytes (1024 PiB); got {shown!r}")
    return value


def _workers(workers: Any) -> int:
    if workers is None:
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except AttributeError:  # pragma: no cover - not Linux
            return max(1, os.cpu_count() or 1)
    if isinstance(workers, bool) or not isinstance(workers, int | np.integer) or workers < 1:
        raise ValueError(f"workers must be a positive int or None; got {workers!r}")
    return int(workers)


# -- sources -----------------------------------------------------------------------


def _check_dtype(dtype: np.dtype, what: str) -> None:
    if dtype.kind not in "biuf" or (dtype.kind == "f" and dtype.itemsize not in (2, 4, 8)):
        raise TypeError(
            f"{what} has dtype {dtype}; softmaxkit needs a real floating, integer or bool dtype"
        )


def open_npy(path: Any) -> _npyio.NpyIn:
    """Open a ``.npy`` file for positional reads (header checked, nothing read yet).

    Raises ``FileNotFoundError``, ``IsADirectoryError``, ``ValueError`` (not a regular
    file, not a .npy file, truncated) and ``TypeError`` (unsupported dtype) with
    messages naming the file.
    """
    return _npyio.NpyIn(path, _check_dtype)


def _blocks(shape: tuple[int, ...], order: str, limit: int, whole: tuple[int, ...] = ()):
    """Hyper-rectangles (tuples of slices) covering ``shape``, each <= ``limit`` elements
    when possible, cut along the axes in memory order; axes in ``whole`` are never cut."""
    nd = len(shape)
    if nd == 0:
        yield ()
        return
    if any(n == 0 for n in shape):
        return
    axes = list(range(nd)) if order == "C" else list(range(nd - 1, -1, -1))
    full = math.prod(shape[a] for a in whole)
    cut = [a for a in axes if a not in whole]
    if not cut:
        yield tuple(slice(None) for _ in shape)
        return
    # first position p along ``cut`` whose inner block (axes after it) fits the limit
    p = len(cut) - 1
    for q in range(len(cut)):
        inner = full * math.prod(shape[a] for a in cut[q + 1 :])
        if inner <= limit:
            p = q
            break
    inner = full * math.prod(shape[a] for a in cut[p + 1 :])
    ax = cut[p]
    step = max(1, min(shape[ax], limit // max(inner, 1)))
    outer = cut[:p]
    for idx in np.ndindex(*[shape[a] for a in outer]):
        for start in range(0, shape[ax], step):
            sl = [slice(None)] * nd
            for a, i in zip(outer, idx, strict=True):
                sl[a] = slice(i, i + 1)
            sl[ax] = slice(start, min(start + step, shape[ax]))
            yield tuple(sl)


def _block_shape(shape, sl):
    return tuple(len(range(*s.indices(n))) for s, n in zip(sl, shape, strict=True))


class _ArraySource:
    """An in-memory array (or memmap) or a ``.npy`` file read block by block."""

    def __init__(self, arr, file, axes, where):
        self.arr = arr
        self.file = file
        self.axes = axes
        self.where = where
        if file is not None:
            self.shape, self.dtype, self.order = file.shape, file.dtype, file.order
        else:
            self.shape = arr.shape
            # a big-endian array is converted block by block, as a big-endian file
            self.dtype = arr.dtype if arr.dtype.isnative else arr.dtype.newbyteorder("=")
            self.order = "F" if arr.flags.f_contiguous and not arr.flags.c_contiguous else "C"

    def blocks(self, limit):
        for sl in _blocks(self.shape, self.order, limit):
            yield sl, (lambda sl=sl: self._load(sl))

    def _load(self, sl):
        if self.file is not None:
            start, count = _npyio.span(self.shape, self.order, sl)
            blk = self.file.read(start, count).reshape(
                _block_shape(self.shape, sl), order=self.order
            )
        else:
            blk = np.array(self.arr[sl], dtype=self.dtype)  # a private native copy
        mask = np.array(self.where[sl]) if self.where is not None else None
        return blk, mask

    def count(self, limit):
        return sum(1 for _ in _blocks(self.shape, self.order, limit))

    def close(self):
        if self.file is not None:
            self.file.close()


class _IterSource:
    """Chunks that concatenate along ``axis``."""

    def __init__(self, iterable, axis):
        self.iterable = iterable
        self.axis = axis
        self.shape: tuple[int, ...] | None = None
        self.dtype: np.dtype | None = None
        self.axes: tuple[int, ...] = ()
        self.order = "C"

    def blocks(self, limit):
        offset = 0
        batch = None
        for c in self.iterable:
            arr = np.asarray(c)
            _check_dtype(arr.dtype, "chunk")
            if not arr.dtype.isnative:
                arr = arr.astype(arr.dtype.newbyteorder("="))
            if arr.ndim == 0:
                raise ValueError("chunks must have at least one dimension; got a 0-d chunk")
            (ax,) = normalize_axis(self.axis, arr.ndim)
            b = arr.shape[:ax] + arr.shape[ax + 1 :]
            if batch is None:
                batch = b
                self.axes = (ax,)
                self.dtype = arr.dtype
            elif b != batch or arr.ndim != len(batch) + 1:
                raise ValueError(
                    f"chunk of shape {arr.shape} does not concatenate along axis {self.axis} "
                    f"with earlier chunks (batch shape {batch})"
                )
            else:
                self.dtype = np.promote_types(self.dtype, arr.dtype)
            sl = [slice(None)] * arr.ndim
            sl[ax] = slice(offset, offset + arr.shape[ax])
            offset += arr.shape[ax]
            yield tuple(sl), (lambda arr=arr: (arr, None))
        if batch is None:
            raise ValueError("the iterable of chunks is empty; at least one chunk is needed")
        (ax,) = self.axes
        self.shape = (*batch[:ax], offset, *batch[ax:])

    def count(self, limit):
        return None

    def close(self):
        pass


def _source(src, axis, where):
    if isinstance(src, str | os.PathLike):
        f = open_npy(src)
        try:
            axes = normalize_axis(axis, len(f.shape))
            return _ArraySource(None, f, axes, validate_where(where, f.shape))
        except BaseException:
            f.close()
            raise
    if isinstance(src, np.ndarray):
        _check_dtype(src.dtype, "src")
        axes = normalize_axis(axis, src.ndim)
        return _ArraySource(src, None, axes, validate_where(where, src.shape))
    if isinstance(src, Iterable):
        if where is not None:
            raise ValueError("where= is only supported for array and .npy sources")
        if isinstance(axis, tuple | list) or axis is None:
            raise TypeError(f"axis must be an int for an iterable source; got {axis!r}")
        return _IterSource(src, axis)
    raise TypeError(
        f"src must be a .npy path, an ndarray or an iterable of chunks; got {type(src).__name__}"
    )


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
                gm = np.full(batch, -np.inf)
                gs = np.zeros(batch)
            bs = _batch_slices(sl, source.axes)
            gm[bs], gs[bs] = _state.merge(gm[bs], gs[bs], m, s)
            if pbar is not None:
                pbar.update(1)
    if gm is None:  # an array with no blocks (a zero-size dimension)
        batch = tuple(n for i, n in enumerate(source.shape) if i not in source.axes)
        gm = np.full(batch, -np.inf)
        gs = np.zeros(batch)
    return gm, gs


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


def normalizer(src, axis, temperature, where, memory, workers, progress):
    from ..online import Normalizer

    _, t, m, s = _states_only(src, axis, temperature, where, memory, workers, progress, "state")
    return Normalizer._raw(np.asarray(m), np.asarray(s), t)


def logsumexp(src, axis, temperature, where, memory, workers, progress):
    source, _, m, s = _states_only(
        src, axis, temperature, where, memory, workers, progress, "logsumexp"
    )
    lse, _ = _state.finalize(m, s)
    _, out_dtype = resolve_dtype(source.dtype, None)
    res = lse.astype(out_dtype)
    return res[()] if res.ndim == 0 else res


# -- softmax to a file -------------------------------------------------------------


def _whole_rows(shape, order, axes, limit) -> bool:
    """True when every block of ``_blocks(shape, order, limit)`` holds whole rows: the
    reduced axes are the innermost in memory order and a row fits a block."""
    nd = len(shape)
    inner = list(range(nd - len(axes), nd)) if order == "C" else list(range(len(axes)))
    return set(inner) == set(axes) and math.prod(shape[a] for a in axes) <= limit


def softmax_to_file(src, dst, axis, log, temperature, where, dtype, memory, workers, progress):
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
    ``topk_softmax`` call (parallel over rows) per block, exactly the dense result."""
    from ..online import topk_softmax

    oshape = (*f.shape[:ax], k, *f.shape[ax + 1 :])
    probs = np.zeros(oshape, dtype=out_dtype)
    idx = np.zeros(oshape, dtype=np.int64)
    blocks = list(_blocks(f.shape, f.order, limit, whole=(ax,)))
    pbar = _progress(progress, len(blocks), "topk")
    try:
        for sl in blocks:
            start, count = _npyio.span(f.shape, f.order, sl)
            blk = f.read(start, count).reshape(_block_shape(f.shape, sl), order=f.order)
            p, i = topk_softmax(blk, k, axis=ax, temperature=t)
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
    from ..online import topk_softmax

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
                _, li = topk_softmax(x2, j, axis=-1, temperature=t)
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
