"""Reference twins of the losses and gradients (float64 NumPy, whole-array formulas).

Written from the formulas in ``docs/losses.md`` with dense one-hot / smoothed
target matrices, the reference ``log_softmax`` and ``softmax``, and explicit
loops where that is clearer.  No Numba, no chunking, no ``out=``.
"""

from __future__ import annotations

from typing import Any, Literal, overload

import numpy as np

from .._core.blas import matmul
from .._core.losscommon import (
    check_int_or_none,
    check_prob_target,
    check_real,
    check_reduction,
    class_axis,
    class_weights,
    parse_target,
)
from .._core.typing import ArrayLike, Axis, FloatArray, Reduction
from .._core.validate import as_input_array, validate_temperature, validate_where
from ._dense import log_softmax, logsumexp, softmax

__all__ = [
    "cross_entropy",
    "linear_cross_entropy",
    "log_softmax_vjp",
    "logsumexp_vjp",
    "max_margin_loss",
    "max_margin_loss_split",
    "multiclass_hinge_loss",
    "softmax_jacobian",
    "softmax_vjp",
]


@overload
def cross_entropy(
    logits: ArrayLike,
    target: ArrayLike,
    /,
    *,
    axis: int = -1,
    weight: ArrayLike | None = None,
    ignore_index: int | None = None,
    label_smoothing: float = 0.0,
    reduction: Reduction = "mean",
    z_loss: float = 0.0,
    temperature: float = 1.0,
    where: ArrayLike | None = None,
    return_grad: Literal[False] = False,
) -> FloatArray: ...


@overload
def cross_entropy(
    logits: ArrayLike,
    target: ArrayLike,
    /,
    *,
    axis: int = -1,
    weight: ArrayLike | None = None,
    ignore_index: int | None = None,
    label_smoothing: float = 0.0,
    reduction: Reduction = "mean",
    z_loss: float = 0.0,
    temperature: float = 1.0,
    where: ArrayLike | None = None,
    return_grad: Literal[True],
) -> tuple[FloatArray, FloatArray]: ...


@overload
def cross_entropy(
    logits: ArrayLike,
    target: ArrayLike,
    /,
    *,
    axis: int = -1,
    weight: ArrayLike | None = None,
    ignore_index: int | None = None,
    label_smoothing: float = 0.0,
    reduction: Reduction = "mean",
    z_loss: float = 0.0,
    temperature: float = 1.0,
    where: ArrayLike | None = None,
    return_grad: bool,
) -> FloatArray | tuple[FloatArray, FloatArray]: ...


def cross_entropy(
    logits: ArrayLike,
    target: ArrayLike,
    /,
    *,
    axis: int = -1,
    weight: ArrayLike | None = None,
    ignore_index: int | None = None,
    label_smoothing: float = 0.0,
    reduction: Reduction = "mean",
    z_loss: float = 0.0,
    temperature: float = 1.0,
    where: ArrayLike | None = None,
    return_grad: bool = False,
) -> FloatArray | tuple[FloatArray, FloatArray]:
    """Reference ``cross_entropy`` (float64).  See :func:`softmaxkit.cross_entropy`."""
    x = as_input_array(logits, "logits").astype(np.float64)
    ax = class_axis(axis, x.ndim)
    check_reduction(reduction)
    eps = check_real("label_smoothing", label_smoothing, 0.0, 1.0)
    z = check_real("z_loss", z_loss, 0.0)
    T = validate_temperature(temperature)
    ii = check_int_or_none("ignore_index", ignore_index)
    C = x.shape[ax]
    w = class_weights(weight, C)
    kind, tgt = parse_target(target, x.shape, ax, ii)
    if kind == "prob":
        check_prob_target(tgt, ax)
    mask = validate_where(where, x.shape)
    include = np.ones(x.shape, bool) if mask is None else np.array(mask)
    # classes last, rows flattened
    xr = np.moveaxis(x, ax, -1).reshape(-1, C)
    inc = np.moveaxis(include, ax, -1).reshape(-1, C)
    R = xr.shape[0]
    lp = log_softmax(xr, axis=-1, temperature=T, where=inc).reshape(R, C)
    p = softmax(xr, axis=-1, temperature=T, where=inc).reshape(R, C)
    lse = np.asarray(logsumexp(xr, axis=-1, temperature=T, where=inc)).reshape(R)
    n_inc = inc.sum(axis=1)
    uniform = np.where(inc, 1.0 / np.maximum(n_inc, 1)[:, None], 0.0)
    if kind == "index":
        t = tgt.reshape(R)
        ignored = (t == ii) if ii is not None else np.zeros(R, bool)
        ts = np.where(ignored, 0, t)
        onehot = np.zeros((R, C))
        onehot[np.arange(R), ts] = 1.0
        q = (1 - eps) * onehot + eps * uniform
        row_w = w[ts] if w is not None else np.ones(R)  # the sample's weight w_t
        cls_w = np.ones(C)
    else:
        y = np.moveaxis(np.asarray(tgt, np.float64), ax, -1).reshape(R, C)
        ignored = np.zeros(R, bool)
        q = (1 - eps) * y + eps * uniform
        row_w = np.ones(R)
        cls_w = w if w is not None else np.ones(C)
    # -log p_j = (m - v_j) + log S overflows for finite v_j when m - v_j does
    # ([1e308, -1e308, 0]); q_j (m - v_j) may still be finite: form it from halves
    # (log S <= log C is below float64's resolution there)
    with np.errstate(over="ignore", invalid="ignore"):
        v = xr / T
        vm = np.max(np.where(inc, v, -np.inf), axis=1, keepdims=True, initial=-np.inf)
        fix = inc & np.isinf(lp) & np.isfinite(v) & np.isfinite(vm)
        half = 0.5 * vm - 0.5 * v
        terms = np.where(q != 0, np.where(fix, (cls_w * q * half) * 2.0, cls_w * q * -lp), 0.0)
    ce = terms.sum(axis=1)
    empty = ~(lse > -np.inf) & ~np.isnan(lse)
    active = ~ignored & ~empty
    with np.errstate(invalid="ignore"):
        part = np.where(active & (row_w != 0), row_w * ce, 0.0)
        zpart = np.where(active, z * lse**2, 0.0) if z > 0 else np.zeros(R)
    count = int(active.sum())
    wsum = float(row_w[active].sum()) if kind == "index" else float(count)
    if reduction == "mean" and kind == "index" and count and wsum == 0:
        raise ValueError(
            "weight: the class weights of the counted targets sum to 0, so reduction='mean' is 0/0"
        )
    if reduction == "mean":
        sa = 1.0 / wsum if wsum != 0 else 0.0
        sb = 1.0 / count if count else 0.0
        loss = part.sum() * sa + zpart.sum() * sb
    elif reduction == "sum":
        sa = sb = 1.0
        loss = part.sum() + zpart.sum()
    else:
        sa = sb = 1.0
        batch = x.shape[:ax] + x.shape[ax + 1 :]
        loss = (part + zpart).reshape(batch)
    if not return_grad:
        return loss
    wq = (cls_w * q).sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore"):
        g_ce = row_w[:, None] * (wq * p - cls_w * q)
        zl = np.where(p > 0, 2 * z * lse[:, None] * p, 0.0) if z > 0 else 0.0
        g = (sa * g_ce + sb * zl) / T
    g = np.where(inc, g, 0.0)
    g = np.where(active[:, None], g, 0.0)
    g = np.where(np.isnan(lse)[:, None] & active[:, None], np.nan, g)
    moved_shape = np.moveaxis(x, ax, -1).shape
    return loss, np.moveaxis(g.reshape(moved_shape), -1, ax)


@overload
def linear_cross_entropy(
    hidden: ArrayLike,
    linear_weight: ArrayLike,
    target: ArrayLike,
    /,
    *,
    bias: ArrayLike | None = None,
    return_grad: Literal[False] = False,
    **ce_options: Any,
) -> FloatArray: ...


@overload
def linear_cross_entropy(
    hidden: ArrayLike,
    linear_weight: ArrayLike,
    target: ArrayLike,
    /,
    *,
    bias: ArrayLike | None = None,
    return_grad: Literal[True],
    **ce_options: Any,
) -> tuple[FloatArray, tuple[FloatArray, FloatArray, FloatArray | None]]: ...


@overload
def linear_cross_entropy(
    hidden: ArrayLike,
    linear_weight: ArrayLike,
    target: ArrayLike,
    /,
    *,
    bias: ArrayLike | None = None,
    return_grad: bool,
    **ce_options: Any,
) -> FloatArray | tuple[FloatArray, tuple[FloatArray, FloatArray, FloatArray | None]]: ...


def linear_cross_entropy(
    hidden: ArrayLike,
    linear_weight: ArrayLike,
    target: ArrayLike,
    /,
    *,
    bias: ArrayLike | None = None,
    return_grad: bool = False,
    chunk_size: int | None = None,
    strategy: str = "auto",
    **ce_options: Any,
) -> FloatArray | tuple[FloatArray, tuple[FloatArray, FloatArray, FloatArray | None]]:
    """Reference ``linear_cross_entropy``: materialise the logits, then :func:`cross_entropy`
    (``chunk_size`` and ``strategy`` only choose the blocking of the fused function)."""
    h = np.asarray(hidden, np.float64)
    W = np.asarray(linear_weight, np.float64)
    z = matmul(h, W.T)
    if bias is not None:
        z = z + np.asarray(bias, np.float64)
    res: Any = cross_entropy(z, target, return_grad=return_grad, **ce_options)
    if not return_grad:
        return res
    loss, g = res
    g2 = g.reshape(-1, W.shape[0])
    dh = matmul(g2, W).reshape(h.shape)
    dW = matmul(g2.T, h.reshape(-1, W.shape[1]))
    db = g2.sum(axis=0) if bias is not None else None
    return loss, (dh, dW, db)


def _reduce(v: Any, reduction: Any) -> Any:
    if reduction == "sum":
        return v.sum()
    if reduction == "mean":
        return v.mean() if v.size else 0.0
    return v


def max_margin_loss_split(
    positive: ArrayLike,
    negatives: ArrayLike,
    /,
    *,
    margin: float = 1.0,
    reduction: Reduction = "sum",
) -> FloatArray:
    """Reference: explicit double loop over (b, j) pairs."""
    pos = np.asarray(positive, np.float64)
    neg = np.asarray(negatives, np.float64)
    out: Any = np.zeros(neg.shape)
    for idx in np.ndindex(neg.shape):
        out[idx] = max(0.0, margin - pos[idx[:-1]] + neg[idx])
    return _reduce(out, reduction)


def max_margin_loss(
    scores: ArrayLike,
    /,
    num_negatives: int,
    *,
    margin: float = 1.0,
    reduction: Reduction = "sum",
) -> FloatArray:
    """Reference for the interleaved layout (the seed's loops)."""
    s = np.asarray(scores, np.float64)
    L = s.shape[-1]
    n1 = num_negatives + 1
    if L % n1:
        raise ValueError(f"length {L} is not a multiple of num_negatives + 1 = {n1}")
    pos = s[..., ::n1]
    neg = np.stack([s[..., j::n1] for j in range(1, n1)], axis=-1) if num_negatives else None
    if neg is None:
        neg = np.zeros((*pos.shape, 0))
    return max_margin_loss_split(pos, neg, margin=margin, reduction=reduction)


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
) -> FloatArray:
    """Reference multiclass hinge losses (rows = samples, classes last), explicit loops."""
    x = np.asarray(logits, np.float64)
    x2 = x.reshape(-1, x.shape[-1])
    t = np.asarray(target).reshape(-1)
    C = x2.shape[1]
    w = np.ones(C) if weight is None else np.asarray(weight, np.float64)
    per = np.zeros(x2.shape[0])
    for n in range(x2.shape[0]):
        y = int(t[n])
        if kind == "weston_watkins":
            tot = sum(max(0.0, margin - x2[n, y] + x2[n, j]) ** p for j in range(C) if j != y)
            per[n] = w[y] * tot / C
        else:
            others = [x2[n, j] for j in range(C) if j != y]
            best = max(others) if others else -np.inf
            per[n] = w[y] * max(0.0, margin + best - x2[n, y]) ** p
    return _reduce(per.reshape(x.shape[:-1]), reduction)


# ---------------------------------------------------------------------------
# Gradients of the dense ops
# ---------------------------------------------------------------------------


def softmax_jacobian(
    x: ArrayLike,
    /,
    axis: Axis = -1,
    *,
    temperature: float = 1.0,
    where: ArrayLike | None = None,
) -> FloatArray:
    """Reference Jacobian ``(diag(p) - p p^T) / T`` per row, shape batch + (n, n)."""
    from .._core.validate import normalize_axis
    from ..drivers.eager import rows_view

    a = as_input_array(x).astype(np.float64)
    axes = normalize_axis(axis, a.ndim)
    p = np.asarray(softmax(a, axis=axes, temperature=temperature, where=where), np.float64)
    p2 = rows_view(p.reshape(a.shape), axes)
    J = np.einsum("ri,ij->rij", p2, np.eye(p2.shape[1])) - np.einsum("ri,rj->rij", p2, p2)
    batch = tuple(s for i, s in enumerate(a.shape) if i not in axes)
    return J.reshape(*batch, p2.shape[1], p2.shape[1]) / temperature


def softmax_vjp(
    x: ArrayLike,
    g: ArrayLike,
    /,
    axis: Axis = -1,
    *,
    temperature: float = 1.0,
    where: ArrayLike | None = None,
) -> FloatArray:
    """Reference VJP of softmax *from the input x*: ``J^T g`` with the dense Jacobian."""
    from .._core.validate import normalize_axis
    from ..drivers.eager import rows_view

    a = as_input_array(x).astype(np.float64)
    axes = normalize_axis(axis, a.ndim)
    J = softmax_jacobian(a, axis=axes, temperature=temperature, where=where)
    g2 = rows_view(np.broadcast_to(np.asarray(g, np.float64), a.shape), axes)
    J2 = J.reshape(g2.shape[0], g2.shape[1], g2.shape[1])
    r = np.einsum("rij,ri->rj", J2, g2)
    k = len(axes)
    moved = np.moveaxis(a, axes, tuple(range(a.ndim - k, a.ndim))).shape
    return np.moveaxis(r.reshape(moved), tuple(range(a.ndim - k, a.ndim)), axes)


def log_softmax_vjp(
    x: ArrayLike,
    g: ArrayLike,
    /,
    axis: Axis = -1,
    *,
    temperature: float = 1.0,
    where: ArrayLike | None = None,
) -> FloatArray:
    """Reference VJP of log_softmax from the input x: ``(g - p sum(g)) / T`` on included entries."""
    from .._core.validate import normalize_axis

    a = as_input_array(x).astype(np.float64)
    axes = normalize_axis(axis, a.ndim)
    gg = np.broadcast_to(np.asarray(g, np.float64), a.shape)
    inc = np.ones(a.shape, bool) if where is None else np.broadcast_to(where, a.shape)
    p = np.asarray(softmax(a, axis=axes, temperature=temperature, where=where), np.float64)
    gs = np.where(inc, gg, 0.0)
    r = (gs - p * gs.sum(axis=axes, keepdims=True)) / temperature
    lse = np.asarray(logsumexp(a, axis=axes, temperature=temperature, where=where, keepdims=True))
    # an empty or all -inf row gives 0; a NaN row stays NaN (as the kernels)
    return np.where(inc & ~(lse == -np.inf), r, 0.0)


def logsumexp_vjp(
    x: ArrayLike,
    g: ArrayLike,
    /,
    axis: Axis = -1,
    *,
    keepdims: bool = False,
    temperature: float = 1.0,
    where: ArrayLike | None = None,
) -> FloatArray:
    """Reference VJP of logsumexp: ``g * softmax(x) / T``."""
    from .._core.validate import normalize_axis

    a = as_input_array(x).astype(np.float64)
    axes = normalize_axis(axis, a.ndim)
    gg = np.asarray(g, np.float64)
    if not keepdims:
        gg = np.expand_dims(gg, axes)
    p = np.asarray(softmax(a, axis=axes, temperature=temperature, where=where), np.float64)
    return gg * p / temperature
