"""Max-margin (ranking) and multiclass hinge losses.

Public layer (the public paths are ``softmaxkit.losses.X`` and ``softmaxkit.X``):
validate, then NumPy (max-margin) or the Numba row kernel ``hinge_rows`` of
``softmaxkit._kernels.losses`` (hinge).  Maths in ``docs/losses.md``.
"""

from __future__ import annotations

import math
from typing import Any, Literal, Unpack, overload

import numpy as np

from ._core import coldstart
from ._core.ce import kernels, scalar
from ._core.losscommon import check_real, check_reduction, class_axis, class_weights, parse_target
from ._core.losskw import HingeKeywords, MarginKeywords
from ._core.routes import foreign, route
from ._core.typing import Array, ArrayLike, FloatArray, Reduction
from ._core.validate import as_input_array, resolve_dtype

__all__ = ["max_margin_loss", "max_margin_loss_split", "multiclass_hinge_loss"]


def _reduce(mat: np.ndarray, reduction: str, dtype: Any) -> Array:
    if reduction == "none":
        return mat.astype(dtype)
    if reduction == "sum":
        return scalar(np.sum(mat, dtype=np.float64), dtype)
    return scalar(np.mean(mat, dtype=np.float64) if mat.size else 0.0, dtype)


SplitGrads = tuple[FloatArray, FloatArray]  # (d_positive, d_negatives)


def _loss_dtype(x: Any, *args: Any, **kwargs: Any) -> Any:
    """The loss dtype for scores / logits ``x`` (for the cold-start fallback)."""
    return resolve_dtype(np.asarray(x).dtype, None)[1]


@overload
def max_margin_loss_split(
    positive: ArrayLike,
    negatives: ArrayLike,
    /,
    *,
    return_grad: Literal[False] = False,
    **kw: Unpack[MarginKeywords],
) -> Array: ...
@overload
def max_margin_loss_split(
    positive: ArrayLike,
    negatives: ArrayLike,
    /,
    *,
    return_grad: Literal[True],
    **kw: Unpack[MarginKeywords],
) -> tuple[Array, SplitGrads]: ...
@overload
def max_margin_loss_split(
    positive: ArrayLike, negatives: ArrayLike, /, *, return_grad: bool, **kw: Unpack[MarginKeywords]
) -> Array | tuple[Array, SplitGrads]: ...


@coldstart.fallback("softmaxkit.reference._losses:max_margin_loss_split", _loss_dtype)
def max_margin_loss_split(
    positive: ArrayLike,
    negatives: ArrayLike,
    /,
    *,
    margin: float = 1.0,
    reduction: Reduction = "sum",
    return_grad: bool = False,
) -> Array | tuple[Array, SplitGrads]:
    r"""Max-margin (hinge ranking) loss with separate positive and negative scores.

    .. math::

        L = \sum_{b} \sum_{j} \max(0,\ \text{margin} - s^{+}_b + s^{-}_{bj})

    Parameters
    ----------
    positive : array_like, shape (..., B)
        The score of each positive example.
    negatives : array_like, shape (..., B, N)
        The scores of its ``N`` negative samples.
    margin : float, default 1.0
    reduction : {"sum", "mean", "none"}, default "sum"
        ``"mean"`` averages over the ``B * N`` pairs; ``"none"`` returns the
        ``[..., B, N]`` matrix of pair losses.
    return_grad : bool, default False
        Also return ``(d_positive, d_negatives)``.  At the kink (a pair loss of
        exactly 0) the subgradient 0 is used, as PyTorch's ``relu``.

    Returns
    -------
    loss, or (loss, (d_positive, d_negatives))

    Notes
    -----
    Peak extra memory: two arrays of the negatives' shape.

    Examples
    --------
    >>> from softmaxkit import max_margin_loss_split
    >>> round(float(max_margin_loss_split([0.5, 1.0], [[0.2, -0.1], [-0.5, 0.3]])), 12)
    1.4
    """
    pos = as_input_array(positive, "positive")
    neg = as_input_array(negatives, "negatives")
    red = check_reduction(reduction)
    mg = _margin(margin)
    if neg.ndim < 1 or pos.shape != neg.shape[:-1]:
        raise ValueError(
            f"negatives must have shape positive.shape + (N,); got positive {pos.shape} "
            f"and negatives {neg.shape}"
        )
    _, dtype = resolve_dtype(np.result_type(pos.dtype, neg.dtype), None)
    p64 = pos.astype(np.float64)
    n64 = neg.astype(np.float64)
    with np.errstate(over="ignore"):  # past 1.8e308: +inf, the rounded value
        viol = mg - p64[..., None] + n64
    mat = np.maximum(viol, 0.0)
    mat = np.where(np.isnan(viol), np.nan, mat)
    loss = _reduce(mat, red, dtype)
    if not return_grad:
        return loss
    scale = 1.0
    if red == "mean":
        scale = 1.0 / mat.size if mat.size else 0.0
    with np.errstate(invalid="ignore"):
        gn = np.where(viol > 0, scale, 0.0)
    gn = np.where(np.isnan(viol), np.nan, gn)
    gp = -gn.sum(axis=-1)
    return loss, (gp.astype(dtype), gn.astype(dtype))


def _margin(margin: Any) -> float:
    return check_real("margin", margin, -np.inf)


@overload
def max_margin_loss(
    scores: ArrayLike,
    /,
    num_negatives: int,
    *,
    return_grad: Literal[False] = False,
    **kw: Unpack[MarginKeywords],
) -> Array: ...
@overload
def max_margin_loss(
    scores: ArrayLike,
    /,
    num_negatives: int,
    *,
    return_grad: Literal[True],
    **kw: Unpack[MarginKeywords],
) -> tuple[Array, Array]: ...
@overload
def max_margin_loss(
    scores: ArrayLike, /, num_negatives: int, *, return_grad: bool, **kw: Unpack[MarginKeywords]
) -> Array | tuple[Array, Array]: ...


@coldstart.fallback("softmaxkit.reference._losses:max_margin_loss", _loss_dtype)
def max_margin_loss(
    scores: ArrayLike,
    /,
    num_negatives: int,
    *,
    margin: float = 1.0,
    reduction: Reduction = "sum",
    return_grad: bool = False,
) -> Array | tuple[Array, Array]:
    r"""Max-margin loss for the interleaved layout ``[pos, neg_1..neg_N, pos, ...]``.

    ``scores`` holds ``B`` groups of ``N + 1`` scores along its last axis, the
    positive first in each group (the layout of the seed question): the loss is
    :func:`max_margin_loss_split` of ``scores[..., ::N+1]`` and the others,

    .. math::

        L = \sum_{b=0}^{B-1} \sum_{j=1}^{N} \max(0,\ \text{margin} - s_{b(N+1)} + s_{b(N+1)+j})

    Parameters
    ----------
    scores : array_like, shape (..., B * (N + 1))
    num_negatives : int >= 0
        ``N``; the last axis' length must be divisible by ``N + 1``.
    margin, reduction, return_grad
        As for :func:`max_margin_loss_split`; the gradient has the shape of ``scores``.

    Returns
    -------
    loss : float or ndarray
        The reduced loss (per group with ``reduction="none"``); with ``return_grad``
        the pair ``(loss, grad)``.

    Notes
    -----
    Peak extra memory: two float64 arrays of the negatives' shape (``B·N`` values),
    plus the gradient when asked for.

    Examples
    --------
    >>> from softmaxkit import max_margin_loss
    >>> loss, grad = max_margin_loss([0.5, 0.2, -0.1, 1.0, -0.5, 0.3], 2, return_grad=True)
    >>> round(float(loss), 12), grad.tolist()
    (1.4, [-2.0, 1.0, 1.0, -1.0, 0.0, 1.0])
    """
    if foreign(scores) == "torch":
        return route("torch", "max_margin_loss", locals())
    s = as_input_array(scores, "scores")
    if isinstance(num_negatives, bool) or not isinstance(num_negatives, int | np.integer):
        raise TypeError(f"num_negatives must be an int; got {num_negatives!r}")
    nn = int(num_negatives)
    if nn < 0:
        raise ValueError(f"num_negatives must be >= 0; got {nn}")
    if s.ndim < 1:
        raise ValueError("scores must have at least one dimension; got a 0-d array")
    L = s.shape[-1]
    if L % (nn + 1):
        raise ValueError(
            f"scores' last axis has length {L}, which is not a multiple of "
            f"num_negatives + 1 = {nn + 1} (B groups of one positive and {nn} negatives)"
        )
    g = s.reshape(*s.shape[:-1], L // (nn + 1), nn + 1)
    if not return_grad:
        return max_margin_loss_split(g[..., 0], g[..., 1:], margin=margin, reduction=reduction)
    loss, (gp, gn) = max_margin_loss_split(
        g[..., 0], g[..., 1:], margin=margin, reduction=reduction, return_grad=True
    )
    grad = np.concatenate([gp[..., None], gn], axis=-1).reshape(s.shape)
    return loss, grad


@overload
def multiclass_hinge_loss(
    logits: ArrayLike,
    target: ArrayLike,
    /,
    *,
    return_grad: Literal[False] = False,
    **kw: Unpack[HingeKeywords],
) -> Array: ...
@overload
def multiclass_hinge_loss(
    logits: ArrayLike,
    target: ArrayLike,
    /,
    *,
    return_grad: Literal[True],
    **kw: Unpack[HingeKeywords],
) -> tuple[Array, Array]: ...
@overload
def multiclass_hinge_loss(
    logits: ArrayLike, target: ArrayLike, /, *, return_grad: bool, **kw: Unpack[HingeKeywords]
) -> Array | tuple[Array, Array]: ...


@coldstart.fallback("softmaxkit.reference._losses:multiclass_hinge_loss", _loss_dtype)
def multiclass_hinge_loss(
    logits: ArrayLike,
    target: ArrayLike,
    /,
    *,
    margin: float = 1.0,
    p: Literal[1, 2] = 1,
    weight: ArrayLike | None = None,
    reduction: Reduction = "mean",
    kind: Literal["weston_watkins", "crammer_singer"] = "weston_watkins",
    axis: int = -1,
    return_grad: bool = False,
) -> Array | tuple[Array, Array]:
    r"""Multiclass hinge loss: Weston–Watkins (PyTorch's ``multi_margin_loss``) or Crammer–Singer.

    .. math::

        \text{weston\_watkins:}\quad \ell = \frac{w_y}{C}\sum_{j \ne y}
            \max(0, \text{margin} - x_y + x_j)^p

        \text{crammer\_singer:}\quad \ell = w_y \max\big(0,\ \text{margin}
            + \max_{j \ne y} x_j - x_y\big)^p

    Parameters
    ----------
    logits : array_like, classes along ``axis``
    target : array_like of int
        Class indices, the logits' shape without ``axis``.
    margin : float, default 1.0
    p : {1, 2}, default 1
    weight : array_like, shape (C,), optional
        Per-class weights ``w_y`` (of the target class).
    reduction : {"mean", "sum", "none"}, default "mean"
        ``"mean"`` divides by the number of samples (PyTorch's convention for
        ``multi_margin_loss``, not the sum of the weights).
    kind : {"weston_watkins", "crammer_singer"}
        Crammer–Singer with ``margin=1, p=1`` is optax's ``multiclass_hinge_loss``
        and scikit-learn's multiclass ``hinge_loss``.
    axis : int, default -1
    return_grad : bool, default False
        Also return the (sub)gradient w.r.t. the logits; 0 at the kinks; for
        Crammer–Singer the first maximising ``j`` gets it.

    Returns
    -------
    loss : float or ndarray
        The reduced loss (per sample with ``reduction="none"``); with ``return_grad``
        the pair ``(loss, grad)``, ``grad`` of the logits' shape.

    Notes
    -----
    A Numba row kernel, float64 arithmetic for every dtype, rows in parallel:
    Weston–Watkins one pass over the row (two with the gradient), Crammer–Singer one
    pass for the maximum and a search for the first maximising class.

    Peak extra memory: the gradient (when asked for) and O(rows) float64 per-sample
    values; plus a copy of the logits when the class axis is not the last,
    contiguous one or the logits are read-only.

    Examples
    --------
    >>> from softmaxkit import multiclass_hinge_loss
    >>> x = [[0.1, 0.2, 0.4, 0.8]]
    >>> round(float(multiclass_hinge_loss(x, [3])), 6)  # PyTorch's doc example
    0.325
    >>> round(float(multiclass_hinge_loss(x, [3], kind="crammer_singer")), 6)
    0.6
    """
    if foreign(logits) == "torch":
        return route("torch", "multiclass_hinge_loss", locals())
    arr = as_input_array(logits, "logits")
    ax = class_axis(axis, arr.ndim)
    red = check_reduction(reduction)
    mg = _margin(margin)
    if p not in (1, 2) or isinstance(p, bool):
        raise ValueError(f"p must be 1 or 2; got {p!r}")
    kinds = ("weston_watkins", "crammer_singer")
    if kind not in kinds:
        raise ValueError(f"kind must be one of {kinds}; got {kind!r}")
    C = arr.shape[ax]
    cw = class_weights(weight, C)
    tk, tgt = parse_target(target, arr.shape, ax, None)
    if tk != "index":
        raise TypeError("multiclass_hinge_loss takes class-index targets")
    compute, dtype = resolve_dtype(arr.dtype, None)
    moved = np.moveaxis(arr, ax, -1)
    batch = moved.shape[:-1]
    R = math.prod(batch)  # (reshape(-1, C) fails for C == 0)
    x2 = np.ascontiguousarray(moved.reshape(R, C), dtype=compute)
    from ._kernels.view import readonly  # (imports Numba: not at module level)

    x2 = readonly(x2)  # read-only for the kernels: one variant, no copy
    t2 = np.ascontiguousarray(tgt.reshape(-1), dtype=np.int64)
    scale = 1.0
    if red == "mean":
        scale = 1.0 / R if R else 0.0
    wt = cw[t2] if cw is not None else np.ones(R)
    per = np.empty(R)
    grad = np.empty(moved.shape if return_grad else (0,), dtype=compute)
    g2 = grad.reshape(R, C) if return_grad else np.empty((R, 0), dtype=compute)
    if R:
        kernels().hinge_rows(
            x2, t2, wt, float(mg), int(p), kind == "crammer_singer", bool(return_grad),
            scale, per, g2,
        )  # fmt: skip
    if red == "none":
        loss: Any = per.reshape(batch).astype(dtype)
        loss = loss[()] if loss.ndim == 0 else loss
    elif red == "sum":
        loss = scalar(np.sum(per), dtype)
    else:
        loss = scalar(np.mean(per) if R else 0.0, dtype)
    if not return_grad:
        return loss
    return loss, np.moveaxis(grad.astype(dtype, copy=False), -1, ax)
