"""Reference twins of the distillation losses (float64 NumPy, whole-array formulas).

Written from ``docs/distill.md`` with the reference ``log_softmax``: every
probability and log-probability is materialised, terms with a zero weight are
dropped with ``np.where`` (``0 log 0 = 0``).  No Numba, no chunking.  Gradients are
the closed forms of ``docs/distill.md``; the tests also check them against torch
autograd and central differences.
"""

from __future__ import annotations

from typing import Any, Literal, Unpack, overload

import numpy as np

from .._core.blas import matmul
from .._core.distillkw import JSKeywords, KLKeywords
from .._core.losscommon import check_real, class_axis
from .._core.typing import ArrayLike, Direction, DistillReduction, FloatArray
from .._core.validate import as_input_array, validate_temperature, validate_where
from ._dense import log_softmax

__all__ = ["jensen_shannon", "kl_divergence", "linear_jensen_shannon", "linear_kl_divergence"]

_REDUCTIONS = ("batchmean", "sum", "none", "mean")


def _xlogy_terms(w: Any, a: Any) -> Any:
    """``w * a`` with 0 where ``w == 0`` (never ``0 * inf``)."""
    with np.errstate(invalid="ignore"):
        return np.where(w == 0, 0.0, w * a)


def _kl_terms(w: Any, lw: Any, lo: Any) -> Any:
    """``w (lw - lo)``: 0 where ``lw = -inf``; ``+inf`` where ``lw`` is finite and
    ``lo = -inf`` (a positive probability, even one that underflows to 0, against 0)."""
    with np.errstate(invalid="ignore"):
        return np.where(lw == -np.inf, 0.0, np.where(lo == -np.inf, np.inf, w * (lw - lo)))


def _rows(student: Any, teacher: Any, temperature: Any, where: Any, axis: Any) -> Any:
    s = as_input_array(student, "student_logits").astype(np.float64)
    t = as_input_array(teacher, "teacher_logits").astype(np.float64)
    if s.shape != t.shape:
        raise ValueError(
            f"student_logits and teacher_logits must have the same shape; got {s.shape} and "
            f"{t.shape}"
        )
    ax = class_axis(axis, s.ndim)
    T = validate_temperature(temperature)
    m = validate_where(where, s.shape)
    s = np.moveaxis(s / T, ax, -1)
    t = np.moveaxis(t / T, ax, -1)
    if m is not None:
        m = np.moveaxis(m, ax, -1)
        s = np.where(m, s, -np.inf)
        t = np.where(m, t, -np.inf)
    return s, t, ax, T


def _per_row(s: Any, t: Any, beta: Any) -> Any:
    """(per-row loss, dL/ds per row) in v = x / T units, rows = last axis."""
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        ls = log_softmax(s, axis=-1)
        lt = log_softmax(t, axis=-1)
        ps, pt = np.exp(ls), np.exp(lt)
        if beta == 0.0:
            loss = np.sum(_kl_terms(pt, lt, ls), axis=-1)
            g = ps - pt
        elif beta == 1.0:
            loss = np.sum(_kl_terms(ps, ls, lt), axis=-1)
            g = _xlogy_terms(ps, ls - lt - loss[..., None])
        else:
            M = beta * pt + (1 - beta) * ps
            lm = np.log(M)
            kqm = np.sum(_xlogy_terms(ps, ls - lm), axis=-1)
            loss = beta * np.sum(_xlogy_terms(pt, lt - lm), axis=-1) + (1 - beta) * kqm
            g = (1 - beta) * _xlogy_terms(ps, ls - lm - kqm[..., None])
    both_empty = np.all(s == -np.inf, axis=-1) & np.all(t == -np.inf, axis=-1)
    one_bad = ~both_empty & (
        np.all(s == -np.inf, axis=-1)
        | np.all(t == -np.inf, axis=-1)
        | np.any(np.isnan(s) | np.isnan(t) | (s == np.inf) | (t == np.inf), axis=-1)
    )
    loss = np.where(both_empty, 0.0, np.where(one_bad, np.nan, loss))
    g = np.where(both_empty[..., None], 0.0, np.where(one_bad[..., None], np.nan, g))
    return loss, g, both_empty


def _dense(
    student: Any,
    teacher: Any,
    beta: Any,
    temperature: Any,
    where: Any,
    reduction: Any,
    return_grad: Any,
    axis: Any,
) -> Any:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}; got {reduction!r}")
    s, t, ax, T = _rows(student, teacher, temperature, where, axis)
    per, g, empty = _per_row(s, t, beta)
    count = int(np.sum(~empty))
    if reduction == "none":
        loss = per
        c = 1.0
    elif reduction == "sum":
        c = 1.0
        loss = np.sum(per)
    elif reduction == "batchmean":
        c = 1.0 / count if count else 0.0
        loss = np.sum(per) * c
    else:
        c = 1.0 / s.size if s.size else 0.0
        loss = np.sum(per) * c
    if not return_grad:
        return loss
    return loss, np.moveaxis(g * (c / T), -1, ax)


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
    """Float64 twin of :func:`softmaxkit.kl_divergence`."""
    if direction not in ("forward", "reverse"):
        raise ValueError(f"direction must be one of ('forward', 'reverse'); got {direction!r}")
    beta = 0.0 if direction == "forward" else 1.0
    return _dense(student_logits, teacher_logits, beta, temperature, where, reduction,
                  return_grad, axis)  # fmt: skip


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
    """Float64 twin of :func:`softmaxkit.jensen_shannon`."""
    b = check_real("beta", beta, 0.0, 1.0)
    return _dense(student_logits, teacher_logits, b, temperature, where, reduction,
                  return_grad, axis)  # fmt: skip


def _linear(fn: Any, hs: Any, Ws: Any, ht: Any, Wt: Any, kw: Any) -> Any:
    h = np.asarray(hs, dtype=np.float64)
    W = np.asarray(Ws, dtype=np.float64)
    g = np.asarray(ht, dtype=np.float64)
    U = np.asarray(Wt, dtype=np.float64)
    kw.pop("chunk_size", None)
    res = fn(matmul(h, W.T), matmul(g, U.T), **kw)
    if not kw.get("return_grad"):
        return res
    loss, G = res
    G2 = G.reshape(-1, W.shape[0])
    return loss, (matmul(G2, W).reshape(h.shape), matmul(G2.T, h.reshape(-1, h.shape[-1])))


@overload
def linear_kl_divergence(
    student_hidden: ArrayLike,
    student_weight: ArrayLike,
    teacher_hidden: ArrayLike,
    teacher_weight: ArrayLike,
    /,
    *,
    return_grad: Literal[False] = False,
    **kw: Any,
) -> FloatArray: ...


@overload
def linear_kl_divergence(
    student_hidden: ArrayLike,
    student_weight: ArrayLike,
    teacher_hidden: ArrayLike,
    teacher_weight: ArrayLike,
    /,
    *,
    return_grad: Literal[True],
    **kw: Any,
) -> tuple[FloatArray, tuple[FloatArray, FloatArray]]: ...


@overload
def linear_kl_divergence(
    student_hidden: ArrayLike,
    student_weight: ArrayLike,
    teacher_hidden: ArrayLike,
    teacher_weight: ArrayLike,
    /,
    *,
    return_grad: bool,
    **kw: Any,
) -> FloatArray | tuple[FloatArray, tuple[FloatArray, FloatArray]]: ...


def linear_kl_divergence(
    student_hidden: ArrayLike,
    student_weight: ArrayLike,
    teacher_hidden: ArrayLike,
    teacher_weight: ArrayLike,
    /,
    *,
    return_grad: bool = False,
    **kw: Any,
) -> FloatArray | tuple[FloatArray, tuple[FloatArray, FloatArray]]:
    """Float64 twin of :func:`softmaxkit.linear_kl_divergence` (materialised)."""
    return _linear(kl_divergence, student_hidden, student_weight, teacher_hidden,
                   teacher_weight, {"return_grad": return_grad, **kw})  # fmt: skip


@overload
def linear_jensen_shannon(
    student_hidden: ArrayLike,
    student_weight: ArrayLike,
    teacher_hidden: ArrayLike,
    teacher_weight: ArrayLike,
    /,
    *,
    return_grad: Literal[False] = False,
    **kw: Any,
) -> FloatArray: ...


@overload
def linear_jensen_shannon(
    student_hidden: ArrayLike,
    student_weight: ArrayLike,
    teacher_hidden: ArrayLike,
    teacher_weight: ArrayLike,
    /,
    *,
    return_grad: Literal[True],
    **kw: Any,
) -> tuple[FloatArray, tuple[FloatArray, FloatArray]]: ...


@overload
def linear_jensen_shannon(
    student_hidden: ArrayLike,
    student_weight: ArrayLike,
    teacher_hidden: ArrayLike,
    teacher_weight: ArrayLike,
    /,
    *,
    return_grad: bool,
    **kw: Any,
) -> FloatArray | tuple[FloatArray, tuple[FloatArray, FloatArray]]: ...


def linear_jensen_shannon(
    student_hidden: ArrayLike,
    student_weight: ArrayLike,
    teacher_hidden: ArrayLike,
    teacher_weight: ArrayLike,
    /,
    *,
    return_grad: bool = False,
    **kw: Any,
) -> FloatArray | tuple[FloatArray, tuple[FloatArray, FloatArray]]:
    """Float64 twin of :func:`softmaxkit.linear_jensen_shannon` (materialised)."""
    return _linear(jensen_shannon, student_hidden, student_weight, teacher_hidden,
                   teacher_weight, {"return_grad": return_grad, **kw})  # fmt: skip
