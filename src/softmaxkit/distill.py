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

import math
from typing import Any, Literal, overload

import numpy as np

from ._core.losscommon import check_real, class_axis
from ._core.routes import routed
from ._core.typing import ArrayLike, Direction, DistillReduction, FloatArray
from ._core.validate import as_input_array, resolve_dtype, validate_temperature, validate_where
from .drivers.eager import rows_view

__all__ = ["jensen_shannon", "kl_divergence", "linear_jensen_shannon", "linear_kl_divergence"]

REDUCTIONS = ("batchmean", "sum", "none", "mean")
DIRECTIONS = ("forward", "reverse")
_CHUNK_BYTES = 32 * 2**20


def _k() -> Any:
    from ._kernels import distill

    return distill


def _check_reduction(reduction: Any) -> str:
    if not isinstance(reduction, str) or reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}; got {reduction!r}")
    return reduction


def _mode(direction: Any) -> int:
    if not isinstance(direction, str) or direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}; got {direction!r}")
    mode: int = _k().FORWARD if direction == "forward" else _k().REVERSE
    return mode


def _beta_mode(beta: Any) -> tuple[int, float]:
    b = check_real("beta", beta, 0.0, 1.0)
    k = _k()
    if b == 0.0:
        return k.FORWARD, b
    if b == 1.0:
        return k.REVERSE, b
    return k.JSD, b


def _inv_t(T: float, compute: Any) -> float | None:
    """1/T when it is a normal number of ``compute``, else None (divide x / T first)."""
    with np.errstate(over="ignore", divide="ignore"):
        inv = np.dtype(compute).type(1.0 / T)
    if np.isfinite(inv) and inv >= np.finfo(compute).tiny:
        return float(1.0 / T)
    return None


def _prep(arr: np.ndarray, ax: int, compute: Any, mask2: Any, pre_T: Any) -> np.ndarray:
    x2 = np.ascontiguousarray(rows_view(arr, (ax,)), dtype=compute)
    if pre_T is not None:
        with np.errstate(over="ignore", under="ignore"):
            x2 = x2 / pre_T
    if mask2 is not None:
        x2 = np.where(mask2, x2, -np.inf).astype(compute, copy=False)
    if not x2.flags.writeable:
        x2 = x2.copy()  # read-only arrays are another Numba type (another compile)
    return x2


def _empty_rows(x2: np.ndarray) -> np.ndarray:
    """True for rows with no entry above -inf (NaN counts as an entry)."""
    from ._kernels.losses import row_nonempty

    ne = np.empty(x2.shape[0], dtype=np.bool_)
    row_nonempty(x2, np.ones((1, 1), dtype=np.bool_)[:0].reshape(0, 0), False, ne)
    return ~ne


def _scales(active: np.ndarray, reduction: str, n_classes: int) -> tuple[np.ndarray, int]:
    count = int(np.count_nonzero(active))
    if reduction == "batchmean":
        c = 1.0 / count if count else 0.0
    elif reduction == "mean":
        tot = active.size * n_classes
        c = 1.0 / tot if tot else 0.0
    else:
        c = 1.0
    return np.where(active, c, 0.0), count


def _finish(per: np.ndarray, reduction: str, scale: np.ndarray, batch: Any, out_dtype: Any) -> Any:
    with np.errstate(over="ignore", invalid="ignore"):
        if reduction == "none":
            loss: Any = per.reshape(batch).astype(out_dtype)
            return loss[()] if loss.ndim == 0 else loss
        if reduction == "sum":
            return np.dtype(out_dtype).type(np.sum(per))
        return np.dtype(out_dtype).type(np.sum(per * scale) if per.size else 0.0)


def _check_pair(s: np.ndarray, t: np.ndarray, sname: str, tname: str) -> None:
    if s.shape != t.shape:
        raise ValueError(
            f"{sname} and {tname} must have the same shape; got {s.shape} and {t.shape}"
        )


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
    invT = _inv_t(T, compute)
    pre_T = None
    if invT is None:
        compute, pre_T, invT = np.dtype(np.float64), T, 1.0
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
    temperature: float = 1.0,
    direction: Direction = "forward",
    where: ArrayLike | None = None,
    reduction: DistillReduction = "batchmean",
    return_grad: Literal[False] = False,
    axis: int = -1,
) -> FloatArray: ...


@overload
def kl_divergence(
    student_logits: ArrayLike,
    teacher_logits: ArrayLike,
    /,
    *,
    temperature: float = 1.0,
    direction: Direction = "forward",
    where: ArrayLike | None = None,
    reduction: DistillReduction = "batchmean",
    return_grad: Literal[True],
    axis: int = -1,
) -> tuple[FloatArray, FloatArray]: ...


@overload
def kl_divergence(
    student_logits: ArrayLike,
    teacher_logits: ArrayLike,
    /,
    *,
    temperature: float = 1.0,
    direction: Direction = "forward",
    where: ArrayLike | None = None,
    reduction: DistillReduction = "batchmean",
    return_grad: bool,
    axis: int = -1,
) -> FloatArray | tuple[FloatArray, FloatArray]: ...


@routed("kl_divergence")
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
    beta: float = 0.5,
    temperature: float = 1.0,
    where: ArrayLike | None = None,
    reduction: DistillReduction = "batchmean",
    return_grad: Literal[False] = False,
    axis: int = -1,
) -> FloatArray: ...


@overload
def jensen_shannon(
    student_logits: ArrayLike,
    teacher_logits: ArrayLike,
    /,
    *,
    beta: float = 0.5,
    temperature: float = 1.0,
    where: ArrayLike | None = None,
    reduction: DistillReduction = "batchmean",
    return_grad: Literal[True],
    axis: int = -1,
) -> tuple[FloatArray, FloatArray]: ...


@overload
def jensen_shannon(
    student_logits: ArrayLike,
    teacher_logits: ArrayLike,
    /,
    *,
    beta: float = 0.5,
    temperature: float = 1.0,
    where: ArrayLike | None = None,
    reduction: DistillReduction = "batchmean",
    return_grad: bool,
    axis: int = -1,
) -> FloatArray | tuple[FloatArray, FloatArray]: ...


@routed("jensen_shannon")
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


# ---------------------------------------------------------------------------
# Linear variants
# ---------------------------------------------------------------------------


def _linear(
    hs: Any,
    Ws: Any,
    ht: Any,
    Wt: Any,
    mode: Any,
    beta: Any,
    temperature: Any,
    where: Any,
    reduction: Any,
    return_grad: Any,
    chunk_size: Any,
) -> Any:
    h = as_input_array(hs, "student_hidden")
    W = as_input_array(Ws, "student_weight")
    g = as_input_array(ht, "teacher_hidden")
    U = as_input_array(Wt, "teacher_weight")
    for hn, hh, wn, ww in (("student_hidden", h, "student_weight", W),
                           ("teacher_hidden", g, "teacher_weight", U)):  # fmt: skip
        if hh.ndim < 1 or ww.ndim != 2 or hh.shape[-1] != ww.shape[1]:
            raise ValueError(
                f"{hn} must have shape (..., d) and {wn} (V, d) with the same d; got "
                f"{hh.shape} and {ww.shape}"
            )
    if h.shape[:-1] != g.shape[:-1]:
        raise ValueError(
            "student_hidden and teacher_hidden must have the same leading shape; got "
            f"{h.shape} and {g.shape}"
        )
    if W.shape[0] != U.shape[0]:
        raise ValueError(
            "student_weight and teacher_weight must have the same vocabulary size; got "
            f"{W.shape} and {U.shape}"
        )
    reduction = _check_reduction(reduction)
    T = validate_temperature(temperature)
    V = W.shape[0]
    lshape = (*h.shape[:-1], V)
    mask = validate_where(where, lshape)
    compute, out_dtype = resolve_dtype(np.result_type(h.dtype, W.dtype, g.dtype, U.dtype), None)
    invT = _inv_t(T, compute)
    pre_T = None
    if invT is None:
        compute, pre_T, invT = np.dtype(np.float64), T, 1.0
    N = math.prod(h.shape[:-1])
    h2 = np.ascontiguousarray(h.reshape(N, h.shape[-1]), dtype=compute)
    g2 = np.ascontiguousarray(g.reshape(N, g.shape[-1]), dtype=compute)
    W2 = np.ascontiguousarray(W, dtype=compute)
    U2 = np.ascontiguousarray(U, dtype=compute)
    mask2 = mask.reshape(N, V) if mask is not None else None
    if chunk_size is None:
        rows = max(1, _CHUNK_BYTES // max(1, 2 * V * compute.itemsize))
    else:
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int | np.integer):
            raise TypeError(f"chunk_size must be a positive int or None; got {chunk_size!r}")
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1; got {chunk_size}")
        rows = int(chunk_size)
    rows = max(1, min(rows, N))
    k = _k()
    ds = h2.shape[1]
    zs_buf = np.empty(rows * V, dtype=compute)
    zt_buf = np.empty(rows * V, dtype=compute)
    g_buf = np.empty(rows * V if return_grad and mode == k.JSD else 0, dtype=compute)
    per = np.empty(N)
    d_h: Any = np.empty((N, ds), dtype=compute) if return_grad else None
    d_W: Any = np.zeros((V, ds), dtype=compute) if return_grad else None
    # pass A (cheap, no logits kept): which rows count, for the reduction's scales
    active: Any = np.ones(N, dtype=np.bool_)
    if mask2 is not None:
        active = mask2.any(axis=1)
    scale, _ = _scales(active, reduction, V)
    for r0 in range(0, N, rows):
        r1 = min(N, r0 + rows)
        zs = zs_buf[: (r1 - r0) * V].reshape(r1 - r0, V)
        zt = zt_buf[: (r1 - r0) * V].reshape(r1 - r0, V)
        np.matmul(h2[r0:r1], W2.T, out=zs)
        np.matmul(g2[r0:r1], U2.T, out=zt)
        if pre_T is not None:
            with np.errstate(over="ignore", under="ignore"):
                zs /= pre_T
                zt /= pre_T
        if mask2 is not None:
            mb = mask2[r0:r1]
            np.copyto(zs, -np.inf, where=~mb)
            np.copyto(zt, -np.inf, where=~mb)
        # KL: the gradient overwrites the student block in place (each element is
        # read before it is written); the JSD's kernel reads the row again after
        # writing it, so it gets a third block
        gz = zs
        if return_grad and mode == k.JSD:
            gz = g_buf[: (r1 - r0) * V].reshape(r1 - r0, V)
        k.distill_rows(zs, zt, invT, mode, beta, scale[r0:r1], active[r0:r1],
                       bool(return_grad), gz, per[r0:r1])  # fmt: skip
        if not return_grad:
            continue
        if pre_T is not None:
            with np.errstate(over="ignore", under="ignore", invalid="ignore"):
                gz /= pre_T
        # d_h block = G W (as (W^T G^T)^T, the form OpenBLAS ran fastest for
        # linear_cross_entropy); d_W += G^T h block
        d_h[r0:r1] = (W2.T @ gz.T).T
        d_W += gz.T @ h2[r0:r1]
    loss = _finish(per, reduction, scale, h.shape[:-1], out_dtype)
    if not return_grad:
        return loss
    return loss, (
        d_h.reshape(h.shape).astype(out_dtype, copy=False),
        d_W.astype(out_dtype, copy=False),
    )


_LINEAR_DOC = r"""

    The student's logits are ``student_hidden @ student_weight.T`` and the
    teacher's ``teacher_hidden @ teacher_weight.T`` (``torch.nn.Linear`` layout,
    no bias), never formed for all rows: the rows are walked in blocks of
    ``chunk_size`` rows; each block's logits of both models ``[rows, V]`` are
    formed by one matmul each, turned into the loss and the student's
    ``dlogits`` in place by the fused row kernel of the dense function, and

    .. math::

        \partial h_{\text{block}} = G W_s, \qquad \partial W_s \mathrel{+}= G^\top h_{\text{block}}

    Parameters
    ----------
    student_hidden : array_like, shape (..., d_s)
    student_weight : array_like, shape (V, d_s)
    teacher_hidden : array_like, shape (..., d_t)
    teacher_weight : array_like, shape (V, d_t)
    chunk_size : int, optional
        Rows per block; default: as many as fit 32 MiB for the two logits blocks
        (``32 MiB / (2 V itemsize)``, at least 1).

    Returns
    -------
    loss : scalar or ndarray
    grads : tuple (d_student_hidden, d_student_weight)
        Only with ``return_grad``.  The teacher is frozen: no teacher gradients.

    Notes
    -----
    Peak extra memory: two logits blocks ``2 * rows * V`` values of the compute
    dtype (32 MiB by default; a third block for the JSD's gradient), O(N) float64
    per-row values, plus the gradients (``d_hidden``, ``d_weight``) and one
    ``[V, d_s]`` product temporary per block when ``return_grad`` -- never an
    ``[N, V]`` array.  Time: 2 matmuls of size ``N V d`` for the loss (one per
    model), 4 with gradients.  ``where`` must
    broadcast to ``(..., V)``; its rows are counted as in the dense function.
"""


@overload
def linear_kl_divergence(
    student_hidden: ArrayLike,
    student_weight: ArrayLike,
    teacher_hidden: ArrayLike,
    teacher_weight: ArrayLike,
    /,
    *,
    temperature: float = 1.0,
    direction: Direction = "forward",
    where: ArrayLike | None = None,
    reduction: DistillReduction = "batchmean",
    return_grad: Literal[False] = False,
    chunk_size: int | None = None,
) -> FloatArray: ...


@overload
def linear_kl_divergence(
    student_hidden: ArrayLike,
    student_weight: ArrayLike,
    teacher_hidden: ArrayLike,
    teacher_weight: ArrayLike,
    /,
    *,
    temperature: float = 1.0,
    direction: Direction = "forward",
    where: ArrayLike | None = None,
    reduction: DistillReduction = "batchmean",
    return_grad: Literal[True],
    chunk_size: int | None = None,
) -> tuple[FloatArray, tuple[FloatArray, FloatArray]]: ...


@overload
def linear_kl_divergence(
    student_hidden: ArrayLike,
    student_weight: ArrayLike,
    teacher_hidden: ArrayLike,
    teacher_weight: ArrayLike,
    /,
    *,
    temperature: float = 1.0,
    direction: Direction = "forward",
    where: ArrayLike | None = None,
    reduction: DistillReduction = "batchmean",
    return_grad: bool,
    chunk_size: int | None = None,
) -> FloatArray | tuple[FloatArray, tuple[FloatArray, FloatArray]]: ...


@routed("linear_kl_divergence")
def linear_kl_divergence(
    student_hidden: ArrayLike,
    student_weight: ArrayLike,
    teacher_hidden: ArrayLike,
    teacher_weight: ArrayLike,
    /,
    *,
    temperature: float = 1.0,
    direction: Direction = "forward",
    where: ArrayLike | None = None,
    reduction: DistillReduction = "batchmean",
    return_grad: bool = False,
    chunk_size: int | None = None,
) -> FloatArray | tuple[FloatArray, tuple[FloatArray, FloatArray]]:
    r""":func:`kl_divergence` of ``(student_hidden @ student_weight.T,
    teacher_hidden @ teacher_weight.T)`` without materialising either logits matrix.
    %s
    Examples
    --------
    >>> import numpy as np
    >>> from softmaxkit import kl_divergence, linear_kl_divergence
    >>> rng = np.random.default_rng(0)
    >>> hs, Ws = rng.normal(size=(5, 3)), rng.normal(size=(11, 3))
    >>> ht, Wt = rng.normal(size=(5, 4)), rng.normal(size=(11, 4))
    >>> a = linear_kl_divergence(hs, Ws, ht, Wt, chunk_size=2)
    >>> bool(np.isclose(a, kl_divergence(hs @ Ws.T, ht @ Wt.T)))
    True
    """
    mode = _mode(direction)
    res: FloatArray | tuple[FloatArray, tuple[FloatArray, FloatArray]] = _linear(
        student_hidden,
        student_weight,
        teacher_hidden,
        teacher_weight,
        mode,
        0.0,
        temperature,
        where,
        reduction,
        return_grad,
        chunk_size,
    )
    return res


linear_kl_divergence.__doc__ = (linear_kl_divergence.__doc__ or "") % _LINEAR_DOC


@overload
def linear_jensen_shannon(
    student_hidden: ArrayLike,
    student_weight: ArrayLike,
    teacher_hidden: ArrayLike,
    teacher_weight: ArrayLike,
    /,
    *,
    beta: float = 0.5,
    temperature: float = 1.0,
    where: ArrayLike | None = None,
    reduction: DistillReduction = "batchmean",
    return_grad: Literal[False] = False,
    chunk_size: int | None = None,
) -> FloatArray: ...


@overload
def linear_jensen_shannon(
    student_hidden: ArrayLike,
    student_weight: ArrayLike,
    teacher_hidden: ArrayLike,
    teacher_weight: ArrayLike,
    /,
    *,
    beta: float = 0.5,
    temperature: float = 1.0,
    where: ArrayLike | None = None,
    reduction: DistillReduction = "batchmean",
    return_grad: Literal[True],
    chunk_size: int | None = None,
) -> tuple[FloatArray, tuple[FloatArray, FloatArray]]: ...


@overload
def linear_jensen_shannon(
    student_hidden: ArrayLike,
    student_weight: ArrayLike,
    teacher_hidden: ArrayLike,
    teacher_weight: ArrayLike,
    /,
    *,
    beta: float = 0.5,
    temperature: float = 1.0,
    where: ArrayLike | None = None,
    reduction: DistillReduction = "batchmean",
    return_grad: bool,
    chunk_size: int | None = None,
) -> FloatArray | tuple[FloatArray, tuple[FloatArray, FloatArray]]: ...


@routed("linear_jensen_shannon")
def linear_jensen_shannon(
    student_hidden: ArrayLike,
    student_weight: ArrayLike,
    teacher_hidden: ArrayLike,
    teacher_weight: ArrayLike,
    /,
    *,
    beta: float = 0.5,
    temperature: float = 1.0,
    where: ArrayLike | None = None,
    reduction: DistillReduction = "batchmean",
    return_grad: bool = False,
    chunk_size: int | None = None,
) -> FloatArray | tuple[FloatArray, tuple[FloatArray, FloatArray]]:
    r""":func:`jensen_shannon` of ``(student_hidden @ student_weight.T,
    teacher_hidden @ teacher_weight.T)`` without materialising either logits matrix
    (the CPU counterpart of Liger-Kernel's ``LigerFusedLinearJSD``).
    %s
    Examples
    --------
    >>> import numpy as np
    >>> from softmaxkit import jensen_shannon, linear_jensen_shannon
    >>> rng = np.random.default_rng(0)
    >>> hs, Ws = rng.normal(size=(5, 3)), rng.normal(size=(11, 3))
    >>> ht, Wt = rng.normal(size=(5, 4)), rng.normal(size=(11, 4))
    >>> a = linear_jensen_shannon(hs, Ws, ht, Wt, beta=0.3, chunk_size=2)
    >>> bool(np.isclose(a, jensen_shannon(hs @ Ws.T, ht @ Wt.T, beta=0.3)))
    True
    """
    mode, b = _beta_mode(beta)
    res: FloatArray | tuple[FloatArray, tuple[FloatArray, FloatArray]] = _linear(
        student_hidden,
        student_weight,
        teacher_hidden,
        teacher_weight,
        mode,
        b,
        temperature,
        where,
        reduction,
        return_grad,
        chunk_size,
    )
    return res


linear_jensen_shannon.__doc__ = (linear_jensen_shannon.__doc__ or "") % _LINEAR_DOC
