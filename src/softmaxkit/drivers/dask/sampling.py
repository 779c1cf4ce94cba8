"""Dask driver for :func:`softmaxkit.sample` and :func:`softmaxkit.sampling_probs`.

Rows are independent, so both ops are one ``map_blocks`` over blocks of rows: the
vocabulary axis is moved last and made one chunk (a row must be seen whole to find its
top-k / top-p threshold; a row of 262 144 float32 logits is 1 MiB), the batch axes keep
their chunks.  Each block runs the NumPy implementation, which the public function
passes in (``impl``), so this driver never imports the public layer.

Reproducibility: the NumPy kernel draws element ``j`` of row ``i`` from ``(seed,
row_offset + i, j, sample)``.  A block passes, for each run of rows that are
consecutive in the C order of the whole batch, ``row_offset`` = the global index of
the run's first row, so the tokens do not depend on the chunking
(``tests/test_sampling_dask.py``).  ``seed=None`` is drawn once, when the graph is
built, so computing the same graph twice gives the same tokens.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import dask.array as da
import numpy as np

__all__ = ["sample", "sampling_probs"]


def _runs(shape: tuple[int, ...], loc: list[tuple[int, int]]):
    """Runs of rows of a block that are consecutive in the whole batch's C order.

    ``shape`` is the batch shape of the whole array, ``loc`` the block's ``(start,
    stop)`` per batch axis.  With ``j0`` the first axis after which the block spans
    every axis whole, a run fixes the block's indices on the axes before ``j0``.
    Yields ``(local index over those axes, global index of the run's first row)``: a
    block chunked only along its first axis is one run.
    """
    k = len(shape)
    j0 = k - 1
    while j0 > 0 and loc[j0] == (0, shape[j0]):
        j0 -= 1
    for idx in np.ndindex(*(b - a for a, b in loc[:j0])):
        glob = tuple(a + i for (a, _), i in zip(loc[:j0], idx, strict=True))
        first = np.ravel_multi_index((*glob, loc[j0][0], *(0,) * (k - j0 - 1)), shape)
        yield idx, int(first)


def _sample_block(
    xb: np.ndarray,
    *,
    impl: Callable[..., Any],
    batch_shape: tuple[int, ...],
    num_samples: int,
    row_offset: int,
    return_logprobs: bool,
    block_info: dict | None = None,
) -> np.ndarray:
    n = xb.shape[-1]
    out = np.zeros((*xb.shape[:-1], num_samples, 2), dtype=np.float64)
    if batch_shape:
        assert block_info is not None
        loc = [tuple(int(v) for v in ab) for ab in block_info[0]["array-location"][:-1]]
        runs = list(_runs(batch_shape, loc))
    else:
        runs = [((), 0)]
    for idx, first in runs:
        part = xb[idx].reshape(-1, n)
        if part.shape[0] == 0:
            continue
        try:
            res = impl(part, num_samples=num_samples, row_offset=row_offset + first,
                       return_logprobs=return_logprobs, axis=-1)  # fmt: skip
        except ValueError as exc:  # name the row in the whole batch, as NumPy does
            m = re.match(r"row (\d+) (.*)", str(exc))
            if m is None:
                raise
            i = first + int(m.group(1))
            where = f"row {i}"
            if len(batch_shape) > 1:
                where += f" (batch index {tuple(int(v) for v in np.unravel_index(i, batch_shape))})"
            raise ValueError(f"{where} {m.group(2)}") from None
        sub = out[idx].reshape(-1, num_samples, 2)  # a view: out is C-contiguous
        if return_logprobs:
            sub[..., 0], sub[..., 1] = res
        else:
            sub[..., 0] = res
    return out


def sample(
    logits: da.Array,
    impl: Callable[..., Any],
    *,
    axis: int,
    num_samples: int,
    row_offset: int,
    return_logprobs: bool,
) -> Any:
    """Lazy :func:`softmaxkit.sample` of a dask array (arguments validated by the caller).

    ``impl(part, num_samples=, row_offset=, return_logprobs=, axis=-1)`` samples a
    NumPy block of rows with the filters and seed fixed.  Returns ``ids`` (int64) or
    ``(ids, logprobs)``: the batch axes keep their chunks, the last axis
    (``num_samples``) is one chunk.
    """
    ax = axis % logits.ndim
    xm = da.moveaxis(logits, ax, -1).rechunk({logits.ndim - 1: -1})
    batch_shape = tuple(int(s) for s in xm.shape[:-1])
    packed = da.map_blocks(
        _sample_block,
        xm,
        impl=impl,
        batch_shape=batch_shape,
        num_samples=num_samples,
        row_offset=row_offset,
        return_logprobs=return_logprobs,
        chunks=(*xm.chunks[:-1], (num_samples,), (2,)),
        new_axis=[xm.ndim],
        dtype=np.float64,
        meta=np.empty((0,) * (xm.ndim + 1), dtype=np.float64),
    )
    # ids < 2**53 are exact in float64
    ids = packed[..., 0].astype(np.int64)
    if not return_logprobs:
        return ids
    return ids, packed[..., 1]


def _probs_block(xb: np.ndarray, *, impl: Callable[..., Any]) -> np.ndarray:
    return impl(xb, axis=-1)


def sampling_probs(logits: da.Array, impl: Callable[..., Any], *, axis: int) -> da.Array:
    """Lazy :func:`softmaxkit.sampling_probs` of a dask array: float64, ``logits``'
    shape; the vocabulary axis becomes one chunk, the others keep theirs."""
    ax = axis % logits.ndim
    xm = da.moveaxis(logits, ax, -1).rechunk({logits.ndim - 1: -1})
    out = da.map_blocks(
        _probs_block, xm, impl=impl, dtype=np.float64, meta=np.empty((0,) * xm.ndim)
    )
    return da.moveaxis(out, -1, ax)
