"""Sources of the streaming driver: ``.npy`` files, arrays and iterables cut into blocks.

``_blocks`` cuts a shape into hyper-rectangles along the axes in memory order (a
block of a C-ordered ``.npy`` file is one contiguous byte range); ``_ArraySource``
reads them from an array or memmap or, with ``preadv``, from a file
(``_core/npyio.py``); ``_IterSource`` takes chunks that concatenate along one axis.
``parse_memory`` reads the memory budget.  The passes over the blocks are in
``drivers/stream.py``.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable
from decimal import Decimal, InvalidOperation
from typing import Any

import numpy as np

from .._core import npyio as _npyio
from .._core.validate import normalize_axis, validate_where

__all__ = ["MAX_MEMORY", "open_npy", "parse_memory"]

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
