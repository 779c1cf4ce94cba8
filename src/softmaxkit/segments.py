"""Softmax, log_softmax and logsumexp over segments (groups) of varying length.

Public layer: validate the segments (``segment_ids`` or CSR ``offsets``), pick the
path (streaming CSR for sorted ids and offsets, two-pass scatter for unsorted
ids), run the kernels of ``_kernels/segments.py``.  The maths, the edge-case
contract and the memory of each path: ``docs/segments.md``.
"""

from __future__ import annotations

import math
import sys
from typing import Any

import numpy as np

from ._core.routes import routed
from ._core.typing import ArrayLike, FloatArray
from ._core.validate import as_input_array, resolve_dtype, validate_temperature, validate_where
from .drivers.eager_segments import Segs as _Segs
from .drivers.eager_segments import finalize_lse as _finalize_lse
from .drivers.eager_segments import log_wr as _log_wr
from .drivers.eager_segments import one_axis as _one_axis
from .drivers.eager_segments import states as _states

__all__ = [
    "segment_log_softmax",
    "segment_log_softmax_vjp",
    "segment_logsumexp",
    "segment_logsumexp_vjp",
    "segment_softmax",
    "segment_softmax_vjp",
]


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


@routed("segment_logsumexp")
def segment_logsumexp(
    x: ArrayLike,
    /,
    segment_ids: ArrayLike | None = None,
    *,
    offsets: ArrayLike | None = None,
    num_segments: int | None = None,
    axis: int = 0,
    temperature: float = 1.0,
    where: ArrayLike | None = None,
) -> FloatArray:
    r"""Log-sum-exp of every segment of an axis.

    .. math::

        \operatorname{lse}_g = \log \sum_{i:\ \mathrm{id}_i = g} e^{x_i / T}

    Parameters
    ----------
    x : array_like
        Values; float16/float32/float64 kept (float16 computed in float32),
        integer and bool computed in float64.
    segment_ids : array_like of int, optional
        1-D, one segment id in ``[0, num_segments)`` per position of ``axis``.
        Sorted (non-decreasing) ids take the streaming CSR path, unsorted ids the
        scatter path.
    offsets : array_like of int, optional
        CSR offsets instead of ids: segment ``g`` is ``offsets[g]:offsets[g+1]``;
        non-decreasing, from 0 to the axis length.
    num_segments : int, optional
        Number of segments (default ``max(segment_ids) + 1``, or
        ``len(offsets) - 1``).  Segments with no values are empty.
    axis : int, default 0
        The segmented axis.
    temperature : float, default 1.0
        The op acts on ``x / temperature``.
    where : array_like of bool, optional
        Mask broadcastable to ``x``; excluded values take no part.

    Returns
    -------
    ndarray
        ``x``'s shape with ``axis`` replaced by ``num_segments``.

    Notes
    -----
    Edge cases, per segment (the dense contract): empty, all ``-inf`` or fully
    masked: ``-inf``; holding ``+inf``: ``+inf``; holding NaN: NaN.

    Paths and peak extra memory: sorted ids or ``offsets`` -- one task per
    segment, each reading its contiguous values twice from cache (max, then the
    sum of exps): ``num_segments + 1`` int64 offsets (for ids: a binary search per
    segment, no pass over the values) and the float64 state (16 bytes per segment
    and column).  Unsorted ids -- the values are folded in one pass per thread into
    that thread's own states: ``threads x num_segments x columns x 16`` bytes,
    merged afterwards.  Every path reads the ids once to check them (min, max,
    sorted).  Copies: ``x`` when ``axis`` is not its first C-contiguous axis, or
    with a ``temperature`` other than 1 or a ``where`` mask (one compute-dtype copy).

    Examples
    --------
    >>> import numpy as np
    >>> from softmaxkit import segment_logsumexp
    >>> segment_logsumexp(np.log([1.0, 3.0, 2.0, 2.0]), [0, 0, 2, 2], num_segments=3)
    array([1.38629436,       -inf, 1.38629436])
    """
    if _is_dask(x):
        from .drivers.dask import segments as _dask_segments

        res: FloatArray = _dask_segments.segment_logsumexp(
            x,
            segment_ids,
            offsets=offsets,
            num_segments=num_segments,
            axis=axis,
            temperature=temperature,
            where=where,
        )
        return res
    _arr, ax, x2, moved_shape, _compute, out_dtype, _ = _prepare(x, axis, temperature, where)
    segs = _Segs(x2.shape[0], segment_ids, offsets, num_segments)
    m, w, r = _states(x2, segs)
    lse = _finalize_lse(m, w, r).reshape((segs.num, *moved_shape[1:]))
    res = np.moveaxis(lse, 0, ax).astype(out_dtype, copy=False)
    return res


def _softmax_any(
    x: Any,
    segment_ids: Any,
    offsets: Any,
    num_segments: Any,
    axis: Any,
    temperature: Any,
    where: Any,
    log: Any,
) -> Any:
    """segment_softmax / segment_log_softmax of any input: the Dask driver or NumPy."""
    if _is_dask(x):
        from .drivers.dask import segments as _dask_segments

        return _dask_segments.segment_softmax(
            x,
            segment_ids,
            offsets=offsets,
            num_segments=num_segments,
            axis=axis,
            temperature=temperature,
            where=where,
            log=log,
        )
    return _segment_softmax(x, segment_ids, offsets, num_segments, axis, temperature, where, log)


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
    segs = _Segs(x2.shape[0], segment_ids, offsets, num_segments)
    N, C = x2.shape
    out2 = np.empty((N, C), compute)
    nt = threads_for(x2.size, x2.itemsize)
    if x2.size == 0:
        pass
    elif segs.offs is not None and C == 1:
        run(k.csr_softmax_1d, segs.num, nt, x2.reshape(-1), segs.offs, out2.reshape(-1), log)
    elif segs.offs is not None:
        run(k.csr_softmax_2d, segs.num, nt, x2, segs.offs, out2, log)
    else:
        m, w, r = _states(x2, segs)
        mc = m.astype(compute)
        run(k.gather_softmax, N, nt, x2, segs.ids, mc, w + r, _log_wr(w, r), out2, log)
    res = np.moveaxis(out2.reshape(moved_shape), 0, ax)
    return res.astype(out_dtype, copy=False)


_SOFTMAX_DOC = r"""{title}

    .. math::

        {formula}

    over the values of each segment (``g = id_i``), with the segments given by
    ``segment_ids`` or CSR ``offsets`` as in :func:`segment_logsumexp`.

    Parameters
    ----------
    x : array_like
        Values.
    segment_ids, offsets, num_segments, axis, temperature, where
        As in :func:`segment_logsumexp`.

    Returns
    -------
    ndarray
        Shape and (float) dtype of ``x``.

    Notes
    -----
    Edge cases, per segment (the dense contract): all ``-inf`` or fully masked:
    {empty}; ``k`` entries ``+inf``: {inf}; any NaN: NaN throughout; excluded
    values get {masked}.

    Paths and peak extra memory: sorted ids or ``offsets`` -- one task per
    segment: its max, its sum of exps and the write, the values read from cache
    after the first pass; nothing beyond the output and the ``num_segments + 1``
    offsets.  Unsorted ids -- the scatter states of :func:`segment_logsumexp`
    (``threads x num_segments x columns x 16`` bytes), then one pass that gathers
    each value's segment state.  Copies as in :func:`segment_logsumexp`.

    Examples
    --------
    >>> import numpy as np
    >>> from softmaxkit import {name}
    >>> {name}(np.log([1.0, 3.0, 2.0, 2.0]), [0, 0, 1, 1])
    {example}
    """


@routed("segment_softmax")
def segment_softmax(
    x: ArrayLike,
    /,
    segment_ids: ArrayLike | None = None,
    *,
    offsets: ArrayLike | None = None,
    num_segments: int | None = None,
    axis: int = 0,
    temperature: float = 1.0,
    where: ArrayLike | None = None,
) -> FloatArray:
    res: FloatArray = _softmax_any(
        x, segment_ids, offsets, num_segments, axis, temperature, where, False
    )
    return res


@routed("segment_log_softmax")
def segment_log_softmax(
    x: ArrayLike,
    /,
    segment_ids: ArrayLike | None = None,
    *,
    offsets: ArrayLike | None = None,
    num_segments: int | None = None,
    axis: int = 0,
    temperature: float = 1.0,
    where: ArrayLike | None = None,
) -> FloatArray:
    res: FloatArray = _softmax_any(
        x, segment_ids, offsets, num_segments, axis, temperature, where, True
    )
    return res


segment_softmax.__doc__ = _SOFTMAX_DOC.format(
    title="Softmax within each segment.",
    formula=r"\operatorname{softmax}(x)_i = e^{x_i/T - \operatorname{lse}_g}",
    empty="all ``0``",
    inf="``1/k`` there, 0 elsewhere",
    masked="0",
    name="segment_softmax",
    example="array([0.25, 0.75, 0.5 , 0.5 ])",
)
segment_log_softmax.__doc__ = _SOFTMAX_DOC.format(
    title="Log-softmax within each segment (never ``log`` of the softmax).",
    formula=r"\operatorname{log\_softmax}(x)_i = x_i/T - \operatorname{lse}_g",
    empty="all ``-inf``",
    inf="``-log k`` there, ``-inf`` elsewhere",
    masked="``-inf``",
    name="segment_log_softmax",
    example="array([-1.38629436, -0.28768207, -0.69314718, -0.69314718])",
)


def _seg_sum(v2: Any, segs: Any) -> Any:
    """Per-segment sums of the rows of ``v2`` [N, C] (float64) -> [S, C]."""
    ids = segs.ids_array()
    out = np.zeros((segs.num, v2.shape[1]))
    np.add.at(out, ids, v2)
    return out


def _vjp_common(
    x_or_y: Any, g: Any, segment_ids: Any, offsets: Any, num_segments: Any, axis: Any
) -> Any:
    arr = as_input_array(x_or_y)
    if arr.ndim == 0:
        raise ValueError("x must have at least one dimension to segment; got a 0-d array")
    gar = as_input_array(g, "g")
    ax = _axis(axis, arr.ndim)
    segs = _Segs(arr.shape[ax], segment_ids, offsets, num_segments)
    moved = np.moveaxis(arr.astype(np.float64), ax, 0)
    return arr, gar, ax, segs, moved


@routed("segment_logsumexp_vjp")
def segment_logsumexp_vjp(
    x: ArrayLike,
    g: ArrayLike,
    /,
    segment_ids: ArrayLike | None = None,
    *,
    offsets: ArrayLike | None = None,
    num_segments: int | None = None,
    axis: int = 0,
    temperature: float = 1.0,
    where: ArrayLike | None = None,
) -> FloatArray:
    r"""Vector-Jacobian product of :func:`segment_logsumexp`, from its input.

    .. math::

        \frac{\partial L}{\partial x_i} = \frac{g_{\mathrm{id}_i}}{T}
        \operatorname{segment\_softmax}(x)_i

    Parameters
    ----------
    x : array_like
        The forward input.
    g : array_like
        Upstream gradient, the shape of the forward output (``num_segments`` along
        ``axis``).
    segment_ids, offsets, num_segments, axis, temperature, where
        Those of the forward call.

    Returns
    -------
    ndarray
        float64, shape of ``x``; 0 for empty / all ``-inf`` segments and excluded
        values.

    Notes
    -----
    Peak extra memory: the float64 segment softmax (the output, scaled in place)
    and a float64 copy of ``x`` when it is float32.

    Examples
    --------
    >>> import numpy as np
    >>> from softmaxkit import segment_logsumexp_vjp
    >>> segment_logsumexp_vjp(np.log([1.0, 3.0, 2.0]), [2.0, 1.0], [0, 0, 1])
    array([0.5, 1.5, 1. ])
    """
    arr = as_input_array(x)
    p = _segment_softmax(
        arr.astype(np.float64), segment_ids, offsets, num_segments, axis, temperature, where, False
    )
    ax = _axis(axis, arr.ndim)
    segs = _Segs(arr.shape[ax], segment_ids, offsets, num_segments)
    gar = np.asarray(as_input_array(g, "g"), dtype=np.float64)
    want = (*arr.shape[:ax], segs.num, *arr.shape[ax + 1 :])
    if gar.shape != want:
        raise ValueError(f"g has shape {gar.shape}; expected {want}")
    gi = np.take(gar, segs.ids_array(), axis=ax)
    p *= gi / validate_temperature(temperature)
    res: FloatArray = p
    return res


def _softmax_vjp(
    y: Any,
    g: Any,
    segment_ids: Any,
    offsets: Any,
    num_segments: Any,
    axis: Any,
    temperature: Any,
    log: Any,
) -> Any:
    arr, gar, ax, segs, ym = _vjp_common(y, g, segment_ids, offsets, num_segments, axis)
    if gar.shape != arr.shape:
        raise ValueError(f"g has shape {gar.shape}; expected the shape of y, {arr.shape}")
    t = validate_temperature(temperature)
    gm = np.moveaxis(gar.astype(np.float64), ax, 0)
    shape = ym.shape
    y2 = ym.reshape(shape[0], -1)
    g2 = gm.reshape(shape[0], -1)
    ids = segs.ids_array()
    with np.errstate(invalid="ignore"):
        if log:
            p = np.exp(y2)
            tot = _seg_sum(g2, segs)
            r = (g2 - p * tot[ids]) / t
        else:
            tot = _seg_sum(g2 * y2, segs)
            r = y2 * (g2 - tot[ids]) / t
    return np.moveaxis(r.reshape(shape), 0, ax)


@routed("segment_softmax_vjp")
def segment_softmax_vjp(
    y: ArrayLike,
    g: ArrayLike,
    /,
    segment_ids: ArrayLike | None = None,
    *,
    offsets: ArrayLike | None = None,
    num_segments: int | None = None,
    axis: int = 0,
    temperature: float = 1.0,
) -> FloatArray:
    r"""Vector-Jacobian product of :func:`segment_softmax`, from its output ``y``.

    .. math::

        \frac{\partial L}{\partial x_i} = \frac{y_i}{T}\Big(g_i - \sum_{j:\,
        \mathrm{id}_j = \mathrm{id}_i} g_j y_j\Big)

    Parameters
    ----------
    y : array_like
        The forward output.
    g : array_like
        Upstream gradient, shape of ``y``.
    segment_ids, offsets, num_segments, axis, temperature
        Those of the forward call.

    Returns
    -------
    ndarray
        float64, shape of ``y``.

    Notes
    -----
    Peak extra memory: float64 copies of ``y`` and ``g`` and the per-segment
    sums (``num_segments x columns`` float64); ids made from ``offsets``.

    Examples
    --------
    >>> import numpy as np
    >>> from softmaxkit import segment_softmax_vjp
    >>> segment_softmax_vjp([0.25, 0.75, 1.0], [1.0, 0.0, 5.0], [0, 0, 1])
    array([ 0.1875, -0.1875,  0.    ])
    """
    res: FloatArray = _softmax_vjp(
        y, g, segment_ids, offsets, num_segments, axis, temperature, False
    )
    return res


@routed("segment_log_softmax_vjp")
def segment_log_softmax_vjp(
    y: ArrayLike,
    g: ArrayLike,
    /,
    segment_ids: ArrayLike | None = None,
    *,
    offsets: ArrayLike | None = None,
    num_segments: int | None = None,
    axis: int = 0,
    temperature: float = 1.0,
) -> FloatArray:
    r"""Vector-Jacobian product of :func:`segment_log_softmax`, from its output ``y``.

    .. math::

        \frac{\partial L}{\partial x_i} = \frac{1}{T}\Big(g_i - e^{y_i}
        \sum_{j:\, \mathrm{id}_j = \mathrm{id}_i} g_j\Big)

    Parameters
    ----------
    y : array_like
        The forward output (log-probabilities).
    g : array_like
        Upstream gradient, shape of ``y``.
    segment_ids, offsets, num_segments, axis, temperature
        Those of the forward call.

    Returns
    -------
    ndarray
        float64, shape of ``y``.

    Notes
    -----
    Peak extra memory: float64 copies of ``y`` and ``g``, ``exp(y)`` and the
    per-segment sums; ids made from ``offsets``.

    Examples
    --------
    >>> import numpy as np
    >>> from softmaxkit import segment_log_softmax_vjp
    >>> segment_log_softmax_vjp(np.log([0.25, 0.75]), [1.0, 0.0], [0, 0])
    array([ 0.75, -0.75])
    """
    res: FloatArray = _softmax_vjp(
        y, g, segment_ids, offsets, num_segments, axis, temperature, True
    )
    return res
