"""Helpers shared by :mod:`softmaxkit.segments` and its VJPs (``_segments_vjp.py``)."""

from __future__ import annotations

import math
import sys
from typing import Any

import numpy as np

from ._core.buffers import empty_like as _empty_like
from ._core.validate import as_input_array, resolve_dtype, validate_temperature, validate_where
from .drivers.eager_segments import Segs as _Segs
from .drivers.eager_segments import log_wr as _log_wr
from .drivers.eager_segments import one_axis as _one_axis
from .drivers.eager_segments import scatter_softmax32 as _scatter_softmax32
from .drivers.eager_segments import states as _states


def _kg() -> Any:
    from ._kernels import segments_scatter

    return segments_scatter


def _k() -> Any:
    from ._kernels import segments

    return segments


def _is_dask(x: Any) -> bool:
    return type(x).__module__.split(".")[0] == "dask" and "dask" in sys.modules


def _axis(axis: Any, ndim: Any) -> Any:
    return _one_axis(axis, max(ndim, 1))


def _prepare(x: Any, axis: Any, temperature: Any, where: Any) -> Any:
    """(arr, ax, x2 [N, C] compute rows, moved shape, compute, out dtype)."""
    arr = as_input_array(x)
    if arr.ndim == 0:
        raise ValueError("x must have at least one dimension to segment; got a 0-d array")
    ax = _axis(axis, arr.ndim)
    t = validate_temperature(temperature)
    mask = validate_where(where, arr.shape)
    compute, out_dtype = resolve_dtype(arr.dtype, None)
    xc = arr.astype(compute, copy=False)
    if t != 1.0:
        with np.errstate(over="ignore"):
            xc = (xc.astype(np.float64) / t).astype(compute)
    if mask is not None:
        xc = np.where(mask, xc, compute.type(-np.inf))
    moved = np.moveaxis(xc, ax, 0)
    x2 = np.ascontiguousarray(moved).reshape(arr.shape[ax], math.prod(moved.shape[1:]))
    return arr, ax, x2, moved.shape, compute, out_dtype, t


def _segment_softmax(
    x: Any,
    segment_ids: Any,
    offsets: Any,
    num_segments: Any,
    axis: Any,
    temperature: Any,
    where: Any,
    log: Any,
) -> Any:
    from ._kernels._parallel import run, threads_for

    k = _k()
    _arr, ax, x2, moved_shape, compute, out_dtype, _ = _prepare(x, axis, temperature, where)
    segs = _Segs(x2.shape[0], segment_ids, offsets, num_segments, defer_range=True)
    N, C = x2.shape
    out2 = _empty_like(x2, compute)  # 2 MiB-aligned, reused once released
    nt = threads_for(x2.size, x2.itemsize)
    if x2.size == 0:
        segs.check_range()
    elif segs.offs is not None and C == 1 and compute == np.float32 and not log:
        # one read of each segment from memory: max, exps and scale in cache
        from ._kernels import segments_csr

        run(segments_csr.csr_softmax32, segs.num, nt, x2.reshape(-1), segs.offs, out2.reshape(-1))
    elif segs.offs is not None and C == 1 and compute == np.float32:
        # one pass for the states (no max pass), then the write from a table
        m, w, r = _states(x2, segs)
        tab = _gather_table(m, w, r, log, compute)
        run(k.csr_write_1d, segs.num, nt, x2.reshape(-1), segs.offs, tab, out2.reshape(-1), log)
    elif segs.offs is not None and C == 1:
        run(k.csr_softmax_1d, segs.num, nt, x2.reshape(-1), segs.offs, out2.reshape(-1), log)
    elif segs.offs is not None:
        run(k.csr_softmax_2d, segs.num, nt, x2, segs.offs, out2, log)
    elif (
        C == 1
        and compute == np.float32
        and not log
        and _scatter_softmax32(x2.reshape(-1), segs, out2.reshape(-1), nt)
    ):
        pass  # exps stored in pass 1, scaled in pass 2
    else:
        m, w, r = _states(x2, segs)
        if C == 1:
            run(
                _kg().gather_softmax_1d,
                N,
                nt,
                x2.reshape(-1),
                segs.ids,
                _gather_table(m, w, r, log, compute),
                out2.reshape(-1),
                log,
            )
        else:
            mc = m.astype(compute)
            run(_kg().gather_softmax, N, nt, x2, segs.ids, mc, w + r, _log_wr(w, r), out2, log)
    res = np.moveaxis(out2.reshape(moved_shape), 0, ax)
    return res.astype(out_dtype, copy=False)


def _gather_table(m: Any, w: Any, r: Any, log: bool, compute: Any) -> Any:
    """[S, 2] table of ``_kernels.segments.gather_softmax_1d`` from the [S, 1] states
    (``_kernels.segments.gather_table``: one Numba loop; the NumPy form took ~20
    array temporaries, 22 ms for 10^5 segments at load 11)."""
    tab = np.empty((m.shape[0], 2), compute)
    _kg().gather_table(
        np.ascontiguousarray(m[:, 0]),
        np.ascontiguousarray(w[:, 0]),
        np.ascontiguousarray(r[:, 0]),
        log,
        compute == np.float32,
        tab,
    )
    return tab
