"""Distillation losses: KL divergence (both directions) and the generalised
Jensen-Shannon divergence between a student's and a teacher's softmax, with the
fused gradient w.r.t. the student; ``linear_`` variants that never hold either
model's ``[N, V]`` logits.  Maths and edge cases: ``docs/distill.md``.

Conventions shared by every function here:

* ``p_s = softmax(student / T)``, ``p_t = softmax(teacher / T)`` over the class axis.
  The ``T**2`` factor of Hinton et al.'s distillation is *not* applied (as in
  PyTorch's ``kl_div``, Liger-Kernel's ``LigerFusedLinearJSD`` and TRL's GKD
  trainer): multiply the loss (and gradient) by ``T**2`` yourself if you want it.
* ``reduction``: ``"batchmean"`` (default) sums over classes and averages over the
  counted rows (PyTorch's recommended ``kl_div`` reduction, Liger's JSD
  normalisation); ``"sum"``; ``"none"`` (one value per row); ``"mean"`` divides the
  sum by the number of logits (PyTorch's elementwise ``"mean"``, kept for parity;
  it is not a mean of per-row divergences).
* A row counts unless both models' rows are empty (every included logit -inf, or
  fully masked): such a row has loss 0 and gradient 0 and is not counted by
  ``"batchmean"`` (as ``cross_entropy``'s empty rows).  A row where only one model
  is empty, or with a ``+inf`` or NaN logit, has an undefined distribution: loss and
  gradient NaN.
* The teacher is frozen: no gradient w.r.t. the teacher is returned.
"""

from __future__ import annotations

from typing import Any, Literal, Unpack, overload

import numpy as np

from ._core import coldstart
from ._core.ce import inv_temperature
from ._core.distillkw import JSKeywords, KLKeywords
from ._core.losscommon import class_axis
from ._core.routes import routed
from ._core.typing import ArrayLike, Direction, DistillReduction, FloatArray
from ._core.validate import as_input_array, resolve_dtype, validate_temperature, validate_where
from ._distill_common import (
    _beta_mode,
    _check_pair,
    _check_reduction,
    _empty_rows,
    _finish,
    _k,
    _mode,
    _prep,
    _scales,
)
from ._linear_distill import linear_jensen_shannon, linear_kl_divergence
from .drivers.eager import rows_view

__all__ = ["jensen_shannon", "kl_divergence", "linear_jensen_shannon", "linear_kl_divergence"]


def _pair_dtype(student: Any, teacher: Any, *args: Any, **kwargs: Any) -> Any:
    """The output dtype for a pair of logits (for the cold-start fallback)."""
    dt = np.result_type(np.asarray(student).dtype, np.asarray(teacher).dtype)
    return resolve_dtype(dt, None)[1]


def _dense(
    student: Any,
    teacher: Any,
    mode: Any,
    beta: Any,
    temperature: Any,
    where: Any,
    reduction: Any,
    return_grad: Any,
    axis: Any,
) -> Any:
    s = as_input_array(student, "student_logits")
    t = as_input_array(teacher, "teacher_logits")
    _check_pair(s, t, "student_logits", "teacher_logits")
    ax = class_axis(axis, s.ndim)
    reduction = _check_reduction(reduction)
    T = validate_temperature(temperature)
    mask = validate_where(where, s.shape)
    compute, out_dtype = resolve_dtype(np.result_type(s.dtype, t.dtype), None)
    pre_T, invT = inv_temperature(T, compute)
    if pre_T is not None:  # the kernels see x / T in float64 with T = 1
        compute = np.dtype(np.float64)
    mask2 = np.ascontiguousarray(rows_view(mask, (ax,))) if mask is not None else None
    xs = _prep(s, ax, compute, mask2, pre_T)
    xt = _prep(t, ax, compute, mask2, pre_T)
    R, C = xs.shape
    active = ~(_empty_rows(xs) & _empty_rows(xt))
    scale, _ = _scales(active, reduction, C)
    per = np.empty(R)
    grad2 = np.empty_like(xs) if return_grad else np.empty((R, 0 if R == 0 else 1), compute)
    if R and C:
        _k().distill_rows(xs, xt, invT, mode, beta, scale, active, bool(return_grad), grad2, per)
    elif R:
        per[:] = 0.0
    batch = s.shape[:ax] + s.shape[ax + 1 :]
    loss = _finish(per, reduction, scale, batch, out_dtype)
    if not return_grad:
        return loss
    if pre_T is not None:
        with np.errstate(over="ignore", under="ignore", invalid="ignore"):
            grad2 /= pre_T
    moved_shape = (*batch, C)
    with np.errstate(over="ignore"):  # (x / T in float64: a gradient past the output
        # dtype's range rounds to +-inf, as it must)
        g = np.moveaxis(grad2.reshape(moved_shape), -1, ax).astype(out_dtype, copy=False)
    return loss, g


_COMMON_NOTES = """
    Edge cases: masked entries (``where`` False) are excluded from both
    distributions.  Where the teacher has mass and the student's logit is -inf the
    forward KL is ``+inf`` (its gradient stays finite, ``p_s - p_t``); where the
    student has mass and the teacher's logit is -inf the reverse KL is ``+inf`` and
    its gradient is not finite.  A row whose included logits are all -inf in both
    models has loss 0, gradient 0 and is not counted by ``"batchmean"``; a row
    where only one model is empty, or with a NaN or +inf logit, gives NaN."""


@overload
def kl_divergence(
    student_logits: ArrayLike,
    teacher_logits: ArrayLike,
    /,
    *,
    return_grad: Literal[False] = False,
    **kw: Unpack[KLKeywords],
) -> FloatArray: ...


@overload
def kl_divergence(
    student_logits: ArrayLike,
    teacher_logits: ArrayLike,
    /,
    *,
    return_grad: Literal[True],
    **kw: Unpack[KLKeywords],
) -> tuple[FloatArray, FloatArray]: ...


@overload
def kl_divergence(
    student_logits: ArrayLike,
    teacher_logits: ArrayLike,
    /,
    *,
    return_grad: bool,
    **kw: Unpack[KLKeywords],
) -> FloatArray | tuple[FloatArray, FloatArray]: ...


@routed("kl_divergence")
@coldstart.fallback("softmaxkit.reference._distill:kl_divergence", _pair_dtype)
def kl_divergence(
    student_logits: ArrayLike,
    teacher_logits: ArrayLike,
    /,
    *,
    temperature: float = 1.0,
    direction: Direction = "forward",
    where: ArrayLike | None = None,
    reduction: DistillReduction = "batchmean",
    return_grad: bool = False,
    axis: int = -1,
) -> FloatArray | tuple[FloatArray, FloatArray]:
    r"""KL divergence between the teacher's and the student's softmax, from logits.

    With ``p_s = softmax(student / T)`` and ``p_t = softmax(teacher / T)``:

    .. math::

        \text{forward:}\ \mathrm{KL}(p_t \| p_s) = \sum_c p_{t,c}(\log p_{t,c} - \log p_{s,c}),
        \qquad \frac{\partial}{\partial s_c} = \frac{p_{s,c} - p_{t,c}}{T}

        \text{reverse:}\ \mathrm{KL}(p_s \| p_t) = \sum_c p_{s,c}(\log p_{s,c} - \log p_{t,c}),
        \qquad \frac{\partial}{\partial s_c} = \frac{p_{s,c}}{T}
        \big(\log p_{s,c} - \log p_{t,c} - \mathrm{KL}(p_s \| p_t)\big)

    Forward is PyTorch's ``F.kl_div(log_softmax(student / T), log_softmax(teacher /
    T), log_target=True)``.  No ``T**2`` factor is applied (module docstring).

    Parameters
    ----------
    student_logits, teacher_logits : array_like, same shape
        Unnormalised scores, classes along ``axis``.
    temperature : float > 0, default 1
    direction : {"forward", "reverse"}, default "forward"
    where : array_like of bool, optional
        Broadcastable to the logits: classes excluded from both distributions.
    reduction : {"batchmean", "sum", "none", "mean"}, default "batchmean"
        See the module docstring; ``"none"`` gives one value per row.
    return_grad : bool, default False
        Also return the gradient w.r.t. ``student_logits`` (same shape), of the
        reduced loss (of the sum with ``"none"``).
    axis : int, default -1

    Returns
    -------
    loss : scalar or ndarray
    grad : ndarray
        Only with ``return_grad``.

    Raises
    ------
    ValueError
        Shapes differ, or ``direction``, ``temperature`` or ``reduction`` is invalid.

    Notes
    -----%s

    Pass structure: per row pair, both maxima; both sums of exponentials and the
    loss accumulator; the gradient write.  Peak extra memory: the gradient, O(rows)
    float64, plus a copy of each input when it is not C-contiguous along ``axis``,
    is float16/integer, or has a mask.

    Examples
    --------
    >>> import numpy as np
    >>> from softmaxkit import kl_divergence
    >>> s = np.array([[1.0, 2.0, 3.0]]); t = np.array([[3.0, 2.0, 1.0]])
    >>> round(float(kl_divergence(s, t)), 6)
    1.150421
    >>> round(float(kl_divergence(s, s)), 12)
    0.0
    """
    mode = _mode(direction)

    res: FloatArray | tuple[FloatArray, FloatArray] = _dense(
        student_logits, teacher_logits, mode, 0.0, temperature, where, reduction, return_grad, axis
    )
    return res


kl_divergence.__doc__ = (kl_divergence.__doc__ or "") % _COMMON_NOTES


@overload
def jensen_shannon(
    student_logits: ArrayLike,
    teacher_logits: ArrayLike,
    /,
    *,
    return_grad: Literal[False] = False,
    **kw: Unpack[JSKeywords],
) -> FloatArray: ...


@overload
def jensen_shannon(
    student_logits: ArrayLike,
    teacher_logits: ArrayLike,
    /,
    *,
    return_grad: Literal[True],
    **kw: Unpack[JSKeywords],
) -> tuple[FloatArray, FloatArray]: ...


@overload
def jensen_shannon(
    student_logits: ArrayLike,
    teacher_logits: ArrayLike,
    /,
    *,
    return_grad: bool,
    **kw: Unpack[JSKeywords],
) -> FloatArray | tuple[FloatArray, FloatArray]: ...


@routed("jensen_shannon")
@coldstart.fallback("softmaxkit.reference._distill:jensen_shannon", _pair_dtype)
def jensen_shannon(
    student_logits: ArrayLike,
    teacher_logits: ArrayLike,
    /,
    *,
    beta: float = 0.5,
    temperature: float = 1.0,
    where: ArrayLike | None = None,
    reduction: DistillReduction = "batchmean",
    return_grad: bool = False,
    axis: int = -1,
) -> FloatArray | tuple[FloatArray, FloatArray]:
    r"""Generalised Jensen-Shannon divergence (Liger-Kernel's ``LigerJSD`` definition).

    With ``P = p_t`` (teacher), ``Q = p_s`` (student) and ``M = beta P + (1 - beta) Q``:

    .. math::

        \mathrm{JSD}_\beta = \beta\,\mathrm{KL}(P \| M) + (1 - \beta)\,\mathrm{KL}(Q \| M),
        \qquad \frac{\partial}{\partial s_c} = \frac{1 - \beta}{T}\, Q_c
        \big(\log Q_c - \log M_c - \mathrm{KL}(Q \| M)\big)

    ``beta = 0`` is the forward KL ``KL(P || Q)`` and ``beta = 1`` the reverse KL
    ``KL(Q || P)`` (as in Liger-Kernel; the formula itself would give 0 there).
    ``beta = 0.5`` is the symmetric JSD, bounded by ``log 2``.

    Parameters
    ----------
    student_logits, teacher_logits : array_like, same shape
    beta : float in [0, 1], default 0.5
    temperature, where, reduction, return_grad, axis
        As for :func:`kl_divergence`.

    Returns
    -------
    loss, or (loss, grad)

    Raises
    ------
    ValueError
        Shapes differ, or ``beta``, ``temperature`` or ``reduction`` is invalid.

    Notes
    -----%s

    Works in float64 with a vectorised ``exp`` and ``log`` (``log M`` per element):
    about 2-4x the time of :func:`kl_divergence`.  Pass structure: both maxima;
    both sums of exponentials; the loss with ``log M`` (``log p_s - log M`` stored
    in the gradient row); the gradient scaled in place.  Peak extra memory: as
    :func:`kl_divergence` (the gradient, O(rows) float64, copies for layouts and
    masks).

    Examples
    --------
    >>> import numpy as np
    >>> from softmaxkit import jensen_shannon
    >>> s = np.array([[0.0, -np.inf]]); t = np.array([[-np.inf, 0.0]])
    >>> bool(np.isclose(jensen_shannon(s, t), np.log(2)))  # disjoint supports
    True
    """
    mode, b = _beta_mode(beta)

    res: FloatArray | tuple[FloatArray, FloatArray] = _dense(
        student_logits, teacher_logits, mode, b, temperature, where, reduction, return_grad, axis
    )
    return res


jensen_shannon.__doc__ = (jensen_shannon.__doc__ or "") % _COMMON_NOTES
