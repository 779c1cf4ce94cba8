"""Eager driver of the fused softmax + top-k (``softmaxkit.topk_softmax``).

The public function validates its arguments and calls :func:`topk`; the streaming
driver calls it directly on the blocks it reads (``drivers/stream.py``), so neither
driver imports the public layer.  One pass per row in the Numba kernel
``_kernels/online.py::topk_rows`` (running ``m``, ``s`` and a buffer of the ``k``
best entries, float64 accumulators).
"""

from __future__ import annotations

import math

import numpy as np

from .._core import coldstart
from .._core.state import normalize_float64, state_float64
from .._core.validate import resolve_dtype
from .eager import rows_view

__all__ = ["topk"]


def topk(
    arr: np.ndarray, k: int, ax: int, t: float, mask: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """``(probabilities, indices)`` of the ``k`` best entries along axis ``ax`` of ``arr``.

    Arguments already validated: ``arr`` a native-order real ndarray with
    ``0 <= k <= arr.shape[ax]``, ``ax`` a normalised axis, ``t`` a finite positive
    temperature, ``mask`` a boolean array broadcastable to ``arr`` or ``None``.
    Probabilities in the dtype of the dense softmax of ``arr``, indices int64.
    """
    compute, out_dtype = resolve_dtype(arr.dtype, None)
    x2 = rows_view(arr, (ax,))
    if x2.dtype.kind != "f" or x2.dtype == np.float16:
        x2 = x2.astype(compute)
    with np.errstate(over="ignore", divide="ignore"):
        inv = 1.0 / t
    if not (math.isfinite(inv) and inv >= np.finfo(np.float64).tiny):
        # 1/T overflows (subnormal T) or is subnormal: the kernel's fastmath may
        # turn x / T into x * (1/T) (x * inf ties every positive entry at +inf), so
        # divide here, once, in float64 (the dense driver's rule) and use T = 1
        with np.errstate(over="ignore", under="ignore"):
            x2 = x2.astype(np.float64) / t
        t = 1.0
    r = x2.shape[0]
    probs = np.empty((r, k), dtype=np.float64)
    idx = np.empty((r, k), dtype=np.int64)
    if r and k:
        mask2 = rows_view(mask, (ax,)) if mask is not None else None
        try:
            with coldstart.allow(x2.size):
                from .._kernels import online as kern

                kern.topk_rows(
                    x2,
                    mask2 if mask2 is not None else np.broadcast_to(np.ones(1, bool), x2.shape),
                    mask2 is not None,
                    t,
                    k,
                    probs,
                    idx,
                )
        except coldstart.ColdKernel:
            # the kernel compiles in the background: float64 NumPy, the same order
            probs[...], idx[...] = _topk_float64(x2, mask2, t, k)
    moved_shape = (*tuple(s for i, s in enumerate(arr.shape) if i != ax), k)
    if ax == arr.ndim - 1:  # (nothing to move: the results as they are)
        return probs.reshape(moved_shape).astype(out_dtype, copy=False), idx.reshape(moved_shape)
    p_out = np.moveaxis(probs.reshape(moved_shape), -1, ax).astype(out_dtype)
    i_out = np.moveaxis(idx.reshape(moved_shape), -1, ax).copy()
    return p_out, i_out


def _topk_float64(x2: np.ndarray, mask2: np.ndarray | None, t: float, k: int):
    """The kernel's result in float64 NumPy: the ``k`` largest probabilities of each
    row, larger first, equal ones by index."""
    m, s = state_float64(x2, mask2, None, t)
    p = normalize_float64(x2, mask2, t, m, s, False)
    with np.errstate(invalid="ignore", over="ignore", under="ignore"):
        v = x2.astype(np.float64) / t
    inc = np.ones(v.shape, bool) if mask2 is None else np.asarray(mask2, bool)
    # included NaN first, then larger value, then smaller index
    nan = inc & np.isnan(v)
    key = np.where(inc & ~nan, v, -np.inf)
    idx = np.lexsort((-key, ~nan), axis=-1)[:, :k]
    return np.take_along_axis(p, idx, axis=-1), idx
