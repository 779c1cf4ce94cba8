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
  (``normalize_rows``) and written to the output file at the same place.

Files are read and written through ``mmap``; after every block the mappings are
told ``MADV_DONTNEED``, so resident memory stays bounded by the budget rather than
growing with the file (the page cache keeps the data; guarded by
``tests/test_stream.py::test_large_file_bounded_memory``).  Outputs go to a
temporary file in the target's directory whose space is reserved up front
(``posix_fallocate``), and are renamed over the target (``os.replace``) only when
complete.
"""

from __future__ import annotations

import mmap
import os
import re
import secrets
import sys
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from . import _state
from ._eager import rows_view
from ._validate import normalize_axis, resolve_dtype, validate_temperature, validate_where

__all__ = ["logsumexp", "normalizer", "softmax_to_file", "topk_to_file"]

_UNITS = {"": 1, "B": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def parse_memory(memory: Any) -> int:
    """Bytes from an int or a string like ``"512M"``, ``"1.5G"``, ``"64KiB"``."""
    if isinstance(memory, bool):
        raise TypeError(f"memory must be a number of bytes or a string like '512M'; got {memory!r}")
    if isinstance(memory, int | np.integer):
        value = int(memory)
    elif isinstance(memory, str):
        mt = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([KMGT]?)(?:I?B)?\s*", memory.upper())
        if not mt:
            raise ValueError(
                f"memory must be a number of bytes or a string like '512M', '2G'; got {memory!r}"
            )
        value = int(float(mt.group(1)) * _UNITS[mt.group(2)])
    else:
        raise TypeError(f"memory must be a number of bytes or a string like '512M'; got {memory!r}")
    if value < 1024:
        raise ValueError(f"memory must be at least 1K (1024 bytes); got {memory!r}")
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


def open_npy(path: Any, write: bool = False) -> tuple[np.ndarray, mmap.mmap | None]:
    """Memory-map a ``.npy`` file; returns the array and its mmap (None when empty).

    Raises ``FileNotFoundError``, ``ValueError`` (not a .npy file, truncated) and
    ``TypeError`` (unsupported dtype) with messages naming the file.
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"input file {str(p)!r} does not exist")
    if p.is_dir():
        raise IsADirectoryError(f"{str(p)!r} is a directory, not a .npy file")
    with open(p, "r+b" if write else "rb") as f:
        try:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            else:
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        except (ValueError, EOFError, SyntaxError, OSError) as exc:
            raise ValueError(f"{str(p)!r} is not a valid .npy file ({exc})") from None
        offset = f.tell()
        _check_dtype(dtype, str(p))
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        size = os.fstat(f.fileno()).st_size
        if size < offset + nbytes:
            raise ValueError(
                f"{str(p)!r} is truncated: header says {nbytes} data bytes, file has "
                f"{size - offset}"
            )
        order = "F" if fortran else "C"
        if nbytes == 0:
            return np.empty(shape, dtype=dtype, order=order), None
        access = mmap.ACCESS_WRITE if write else mmap.ACCESS_READ
        mm = mmap.mmap(f.fileno(), 0, access=access)
    arr = np.ndarray(shape, dtype=dtype, buffer=mm, offset=offset, order=order)
    return arr, mm


def _release(mm: mmap.mmap | None) -> None:
    """Drop this process's page mappings (the page cache keeps the data)."""
    if mm is not None and hasattr(mmap, "MADV_DONTNEED"):
        mm.madvise(mmap.MADV_DONTNEED)


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
    full = int(np.prod([shape[a] for a in whole], dtype=np.int64)) if whole else 1
    cut = [a for a in axes if a not in whole]
    if not cut:
        yield tuple(slice(None) for _ in shape)
        return
    # first position p along ``cut`` whose inner block (axes after it) fits the limit
    p = len(cut) - 1
    for q in range(len(cut)):
        inner = full * int(np.prod([shape[a] for a in cut[q + 1 :]], dtype=np.int64))
        if inner <= limit:
            p = q
            break
    inner = full * int(np.prod([shape[a] for a in cut[p + 1 :]], dtype=np.int64))
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


class _ArraySource:
    def __init__(self, arr, mm, axes, where):
        self.arr = arr
        self.mm = mm
        self.axes = axes
        self.where = where
        self.shape = arr.shape
        self.dtype = arr.dtype
        self.order = "F" if arr.flags.f_contiguous and not arr.flags.c_contiguous else "C"

    def blocks(self, limit):
        for sl in _blocks(self.shape, self.order, limit):
            yield sl, (lambda sl=sl: self._load(sl))

    def _load(self, sl):
        blk = np.array(self.arr[sl])  # a private in-memory copy of the block
        mask = np.array(self.where[sl]) if self.where is not None else None
        return blk, mask

    def count(self, limit):
        return sum(1 for _ in _blocks(self.shape, self.order, limit))


class _IterSource:
    """Chunks that concatenate along ``axis``."""

    def __init__(self, iterable, axis):
        self.iterable = iterable
        self.axis = axis
        self.mm = None
        self.shape: tuple[int, ...] | None = None
        self.dtype: np.dtype | None = None
        self.axes: tuple[int, ...] = ()

    def blocks(self, limit):
        offset = 0
        batch = None
        for c in self.iterable:
            arr = np.asarray(c)
            _check_dtype(arr.dtype, "chunk")
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


def _source(src, axis, where):
    if isinstance(src, str | os.PathLike):
        arr, mm = open_npy(src)
        axes = normalize_axis(axis, arr.ndim)
        return _ArraySource(arr, mm, axes, validate_where(where, arr.shape))
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
    # per element of a block in flight: the block copy, its float64 rows, the float64
    # result and the output copy
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
    return x2


def _ones_mask(shape):
    return np.broadcast_to(np.ones(1, bool), shape)


def _batch_slices(sl, axes):
    return tuple(s for i, s in enumerate(sl) if i not in axes)


def _progress(progress, total, desc):
    if not progress:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="block", file=sys.stderr, leave=False)


def _state_pass(source, t, limit, workers, pbar):
    from ._kernels import online as k

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
            _release(source.mm)
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
        if pbar is not None:
            pbar.close()
    return source, t, m, s


def normalizer(src, axis, temperature, where, memory, workers, progress):
    from .online import Normalizer

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


# -- atomic output -----------------------------------------------------------------


def _temp_name(dst: Path) -> Path:
    return dst.with_name(f".{dst.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


def _check_target(dst: Any) -> Path:
    p = Path(dst)
    if p.is_dir():
        raise IsADirectoryError(f"output {str(p)!r} is a directory")
    if not p.parent.exists():
        raise FileNotFoundError(f"output directory {str(p.parent)!r} does not exist")
    return p


def _reserve(path: Path, nbytes: int) -> None:
    """Allocate the file's blocks now, so a full disk fails here with a clear OSError
    rather than later as SIGBUS on a write through the mapping."""
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, nbytes)
    except OSError as exc:
        import errno

        if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            raise OSError(
                exc.errno,
                f"no space to write {nbytes} bytes to {str(path.parent)!r} "
                f"({os.strerror(exc.errno)})",
            ) from None
        if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            raise
    finally:
        os.close(fd)


def _new_npy(tmp: Path, shape, dtype) -> tuple[np.ndarray, mmap.mmap | None]:
    mm_arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=shape)
    del mm_arr
    _reserve(tmp, os.path.getsize(tmp))
    return open_npy(tmp, write=True)


def _finish(tmp: Path, dst: Path, mm) -> None:
    if mm is not None:
        mm.flush()
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, dst)


def softmax_to_file(src, dst, axis, log, temperature, where, dtype, memory, workers, progress):
    from ._kernels import online as k

    dst = _check_target(dst)
    source, t, limit, w = _setup(src, axis, temperature, where, memory, workers)
    if isinstance(source, _IterSource) and iter(source.iterable) is source.iterable:
        raise TypeError(
            "an iterator can be read only once; stream_softmax reads its source twice: pass "
            "a list or another re-iterable of chunks"
        )
    n_blocks = source.count(limit)
    pbar = _progress(progress, None if n_blocks is None else 2 * n_blocks, "softmax")
    tmp = _temp_name(dst)
    out = mm_out = None
    try:
        m, s = _state_pass(source, t, limit, w, pbar)
        _, out_dtype = resolve_dtype(source.dtype, dtype)
        out, mm_out = _new_npy(tmp, source.shape, out_dtype)
        mflat_src, sflat_src = m, s
        axes = source.axes

        def work(item):
            sl, load = item
            blk, mask = load()
            x2 = _rows(blk, axes)
            mask2 = rows_view(mask, axes) if mask is not None else None
            bs = _batch_slices(sl, axes)
            res = np.empty(x2.shape, dtype=np.float64)
            k.normalize_rows(
                x2,
                mask2 if mask2 is not None else _ones_mask(x2.shape),
                mask2 is not None,
                t,
                np.ascontiguousarray(mflat_src[bs]).reshape(-1),
                np.ascontiguousarray(sflat_src[bs]).reshape(-1),
                log,
                res,
            )
            nd = blk.ndim
            moved = np.moveaxis(out[sl], axes, tuple(range(nd - len(axes), nd)))
            moved[...] = res.reshape(moved.shape)
            return None

        with ThreadPoolExecutor(w) as pool:
            for _ in _ordered(pool, work, source.blocks(limit), w):
                _release(source.mm)
                if mm_out is not None:
                    mm_out.flush()
                _release(mm_out)
                if pbar is not None:
                    pbar.update(1)
        del out
        _finish(tmp, dst, mm_out)
    except BaseException:
        out = None
        if tmp.exists():
            tmp.unlink()
        raise
    finally:
        if pbar is not None:
            pbar.close()
    return dst


def topk_to_file(src, dst, k, axis, temperature, memory, progress):
    """Top-k softmax of a ``.npy`` file, block by block of whole rows, into an ``.npz``
    with arrays ``probabilities`` and ``indices`` (atomic write)."""
    from .online import topk_softmax

    dst = _check_target(dst)
    t = validate_temperature(temperature)
    mem = parse_memory(memory)
    arr, mm = open_npy(src)
    if arr.ndim == 0:
        raise ValueError(f"{str(src)!r} holds a 0-d array; topk needs at least one dimension")
    (ax,) = normalize_axis(axis, arr.ndim)
    n = arr.shape[ax]
    if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k <= n:
        raise ValueError(f"k must satisfy 0 <= k <= {n} (the size of axis {axis}); got k={k}")
    order = "F" if arr.flags.f_contiguous and not arr.flags.c_contiguous else "C"
    limit = max(1, mem // (2 * arr.dtype.itemsize + 8))
    oshape = (*arr.shape[:ax], k, *arr.shape[ax + 1 :])
    _, out_dtype = resolve_dtype(arr.dtype, None)
    probs = np.zeros(oshape, dtype=out_dtype)
    idx = np.zeros(oshape, dtype=np.int64)
    blocks = list(_blocks(arr.shape, order, limit, whole=(ax,)))
    pbar = _progress(progress, len(blocks), "topk")
    try:
        for sl in blocks:
            p, i = topk_softmax(np.array(arr[sl]), k, axis=ax, temperature=t)
            osl = (*sl[:ax], slice(None), *sl[ax + 1 :])
            probs[osl] = p
            idx[osl] = i
            _release(mm)
            if pbar is not None:
                pbar.update(1)
    finally:
        if pbar is not None:
            pbar.close()
    tmp = _temp_name(dst)
    try:
        with open(tmp, "wb") as f:
            np.savez(f, probabilities=probs, indices=idx)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, dst)
    except BaseException:
        if tmp.exists():
            tmp.unlink()
        raise
    return dst
