"""The online normalizer as a public object, streaming softmax, and fused top-k.

:class:`Normalizer` holds the mergeable state ``(m, s)`` of Milakov &
Gimelshein's online normalizer (arXiv:1805.02867) per row: the running maximum
``m`` of ``v = x / T`` and ``s = sum exp(v - m)``, **natural base** (``e``, not
2).  Partial states computed from disjoint parts of the data -- chunks of a long
row, shards on other processes or machines -- merge into the state of the whole.
The maths, conventions and pitfalls are in ``docs/online.md``.

The streaming functions (:func:`stream_logsumexp`, :func:`stream_softmax`,
:func:`stream_normalizer`) run the same state over ``.npy`` files and iterables
of chunks larger than memory; :func:`topk_softmax` fuses the normalizer with a
top-k selection.

Where things are: :class:`Normalizer` in ``_normalizer.py``, the streaming functions
in ``streaming.py`` (both re-exported here, their public home), :func:`topk_softmax`
here with its eager driver ``drivers/topk.py``.  Imports go one way: this module ->
``streaming`` -> ``_normalizer``; the drivers import none of them.
"""

from __future__ import annotations

import numbers
from typing import Any

from ._core.typing import ArrayLike, FloatArray, IntArray
from ._core.validate import (
    as_input_array,
    normalize_axis,
    validate_temperature,
    validate_where,
)
from ._normalizer import Normalizer, _restore  # noqa: F401  (_restore: pickles name it here)
from .drivers import topk as _topk
from .softmax import _foreign, _torch_route
from .streaming import stream_logsumexp, stream_normalizer, stream_softmax

__all__ = [
    "Normalizer",
    "stream_logsumexp",
    "stream_normalizer",
    "stream_softmax",
    "topk_softmax",
]


def topk_softmax(
    x: ArrayLike,
    k: int,
    /,
    axis: int = -1,
    *,
    temperature: float = 1.0,
    where: ArrayLike | None = None,
) -> tuple[FloatArray, IntArray]:
    r"""The ``k`` largest softmax probabilities and their indices, in one pass over ``x``.

    Equal to ``p = softmax(x, axis, temperature=T, where=where)`` followed by the
    top ``k`` of ``p`` along ``axis``, but without forming ``p``: each row is read
    once, and the online normalizer (running ``m`` and ``s = sum exp(x/T - m)``)
    and a running buffer of the ``k`` best entries are updated together
    (Milakov & Gimelshein, arXiv:1805.02867, Softmax+TopK fusion).  Then

    .. math::

        p_{(q)} = e^{x_{(q)}/T - m} / s, \qquad q = 1 \dots k.

    Parameters
    ----------
    x : array_like
        Logits (float16/32/64; integer and bool computed in float64).
    k : int
        How many entries to return, ``0 <= k <= n`` with ``n = x.shape[axis]``.
    axis : int, default -1
        The softmax axis (one axis, as ``torch.topk``'s ``dim``).
    temperature : float, default 1.0
        Acts on ``x / temperature``; finite and > 0.
    where : array_like of bool, optional
        Mask broadcastable to ``x``; masked-out entries take no part in the
        normalizer and rank below every included entry (as ``-inf``; probability 0).

    Returns
    -------
    probabilities : ndarray
        Shape of ``x`` with ``axis`` of size ``k``; in decreasing order; dtype as
        the dense :func:`softmaxkit.softmax` output (float16 in, float16 out).
    indices : ndarray of int64
        Positions along ``axis`` of those entries.

    Notes
    -----
    Order: by decreasing ``x / T``; ties by increasing index (masked and ``-inf``
    entries tie at ``-inf``, so a row with fewer than ``k`` included entries is
    completed by the first excluded ones, with probability 0).  NaN ranks above
    ``+inf`` (as in ``torch.topk``) and a row containing NaN has NaN probabilities.
    Edge cases of the probabilities are those of the dense softmax: an all
    ``-inf`` or fully masked row gives 0, a row with ``j`` entries equal to
    ``+inf`` gives ``1/j`` at those.

    Peak extra memory: the outputs (``k`` per row), a few kB per thread, and a
    copy of ``x`` only when ``axis`` is not the last contiguous axis.

    Raises
    ------
    ValueError
        ``k`` negative or larger than ``x.shape[axis]``.

    Examples
    --------
    >>> import numpy as np
    >>> from softmaxkit import topk_softmax
    >>> p, i = topk_softmax([1.0, 3.0, 3.0, 2.0], 3)
    >>> p.round(4), i
    (array([0.3995, 0.3995, 0.147 ]), array([1, 2, 3]))
    """
    # torch tensors and dask arrays go to their drivers and come back as their own
    # array type (the annotation states the NumPy case; see _core/typing.py)
    res: tuple[FloatArray, IntArray]
    if _foreign(x) == "torch":
        res = _torch_route("topk_softmax", locals())
        return res
    if _foreign(x) == "dask":
        from .drivers import dask as _dask

        # its result is the dask pair (Any here, whether drivers/dask is annotated or not)
        dask_topk: Any = _dask.topk_softmax
        res = dask_topk(x, k, axis=axis, temperature=temperature, where=where)
        return res
    arr = as_input_array(x)
    if arr.ndim == 0:
        raise ValueError("x must have at least one dimension for topk_softmax; got a 0-d array")
    if isinstance(axis, bool) or not isinstance(axis, numbers.Integral):
        raise TypeError(f"axis must be an int for topk_softmax; got {axis!r}")
    (ax,) = normalize_axis(axis, arr.ndim)
    n = arr.shape[ax]
    if isinstance(k, bool) or not isinstance(k, numbers.Integral):
        raise TypeError(f"k must be an int; got {k!r}")
    k = int(k)
    if not 0 <= k <= n:
        raise ValueError(f"k must satisfy 0 <= k <= {n} (the size of axis {axis}); got k={k}")
    t = validate_temperature(temperature)
    mask = validate_where(where, arr.shape)
    return _topk.topk(arr, k, ax, t, mask)
