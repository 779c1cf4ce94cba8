"""The VJPs of the segment functions: :func:`segment_logsumexp_vjp`,
:func:`segment_softmax_vjp`, :func:`segment_log_softmax_vjp` (re-exported by
:mod:`softmaxkit.segments`)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ._core.routes import routed
from ._core.typing import ArrayLike, FloatArray
from ._core.validate import as_input_array, validate_temperature
from ._segments_common import _axis, _segment_softmax
from .drivers.eager_segments import Segs as _Segs

__all__ = ["segment_log_softmax_vjp", "segment_logsumexp_vjp", "segment_softmax_vjp"]


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
