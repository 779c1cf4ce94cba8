"""Softmax, log_softmax and logsumexp over segments (groups) of varying length.

Public layer: validate the segments (``segment_ids`` or CSR ``offsets``), pick the
path (streaming CSR for sorted ids and offsets, two-pass scatter for unsorted
ids), run the kernels of ``_kernels/segments.py``.  The maths, the edge-case
contract and the memory of each path: ``docs/segments.md``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._core import coldstart
from ._core.routes import routed
from ._core.typing import ArrayLike, FloatArray
from ._core.validate import resolve_dtype
from ._segments_common import _is_dask, _prepare, _segment_softmax
from ._segments_vjp import segment_log_softmax_vjp, segment_logsumexp_vjp, segment_softmax_vjp
from .drivers.eager_segments import Segs as _Segs
from .drivers.eager_segments import finalize_lse as _finalize_lse
from .drivers.eager_segments import states as _states

__all__ = [
    "segment_log_softmax",
    "segment_log_softmax_vjp",
    "segment_logsumexp",
    "segment_logsumexp_vjp",
    "segment_softmax",
    "segment_softmax_vjp",
]


def _seg_dtype(x: Any, *args: Any, **kwargs: Any) -> Any:
    """The output dtype of the segment ops for ``x`` (for the cold-start fallback)."""
    return resolve_dtype(np.asarray(x).dtype, None)[1]


@routed("segment_logsumexp")
@coldstart.fallback("softmaxkit.reference._segments:segment_logsumexp", _seg_dtype)
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
    segment, its contiguous values read from cache (float32 with one column: one
    vectorised pass, ``sum exp(x - M)`` in float64 for one shift ``M`` of the call;
    otherwise its max, then its sum of exps): ``num_segments + 1`` int64 offsets
    and the float64 state (24 bytes per segment and column).  Unsorted ids -- the
    values are cut into one part per thread, each scattered into that thread's own
    states (float32 with one column: ONE scattered pass of float64 ``exp(x - M)``,
    ``threads x num_segments x 9`` bytes; otherwise two passes, the max then the
    sums, ``threads x num_segments x columns x 24`` bytes), merged afterwards; the
    ids are range-checked inside the first pass.  Segments with a value more than
    650 from ``M`` are recomputed exactly (from cache when sorted, two more passes
    over the values when not).  No temporary of the input's size.  Copies: ``x``
    when ``axis`` is not its first C-contiguous axis, or with a ``temperature``
    other than 1 or a ``where`` mask (one compute-dtype copy).  Details:
    ``docs/segments.md``.

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
    segs = _Segs(x2.shape[0], segment_ids, offsets, num_segments, defer_range=True)
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
@coldstart.fallback("softmaxkit.reference._segments:segment_softmax", _seg_dtype)
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
@coldstart.fallback("softmaxkit.reference._segments:segment_log_softmax", _seg_dtype)
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
