"""Losses built on the softmax: cross-entropy, linear cross-entropy, margin losses.

Public layer: validate, lay the class axis out as contiguous rows, call the fused
Numba kernels of ``softmaxkit._kernels.losses``.  Maths, derivations and the
choices that differ from peers are in ``docs/losses.md``.

This module holds :func:`cross_entropy` and is the public home of every loss:
:func:`linear_cross_entropy` lives in ``softmaxkit._linear_ce`` and the margin and
hinge losses in ``softmaxkit._margin`` (re-exported here); the per-token outputs
(``return_lse``, ``topk``, ...) in ``softmaxkit._vocab``; the shared option checks
and loss composition in ``softmaxkit._core.ce``.

With ``return_grad=True`` every loss returns ``(loss, grad)``; with
``reduction="none"`` the gradient is that of the *sum* of the per-sample losses.
"""

from __future__ import annotations

from typing import Any, Literal, Unpack, overload

import numpy as np

from . import _vocab
from ._core import coldstart
from ._core.ce import (
    compose,
    deferred_empty_rows,
    grad_out,
    inv_temperature,
    kernels,
    lim,
    loss_options,
    row_losses,
    scales,
)
from ._core.losscommon import check_prob_target, class_axis, class_weights, parse_target
from ._core.losskw import CEAny, CEKeywords, CEOutputs
from ._core.routes import foreign, route
from ._core.typing import Array, ArrayLike, FloatArray, Reduction
from ._core.validate import (
    all_true,
    as_input_array,
    resolve_dtype,
    validate_temperature,
    validate_where,
)
from ._linear_ce import linear_cross_entropy
from ._margin import max_margin_loss, max_margin_loss_split, multiclass_hinge_loss
from ._vocab import CrossEntropyOutput
from .drivers.eager import direct_rows, rows_view, same_memory

__all__ = [
    "cross_entropy",
    "linear_cross_entropy",
    "max_margin_loss",
    "max_margin_loss_split",
    "multiclass_hinge_loss",
]


@overload
def cross_entropy(
    logits: ArrayLike,
    target: ArrayLike,
    /,
    *,
    return_grad: Literal[False] = False,
    **kw: Unpack[CEKeywords],
) -> Array: ...
@overload
def cross_entropy(  # type: ignore[overload-overlap]  # (the first match wins: no output flag)
    logits: ArrayLike, target: ArrayLike, /, *, return_grad: Literal[True], **kw: Unpack[CEKeywords]
) -> tuple[Array, Array]: ...
@overload
def cross_entropy(
    logits: ArrayLike, target: ArrayLike, /, *, return_grad: bool, **kw: Unpack[CEKeywords]
) -> Array | tuple[Array, Array]: ...
@overload
def cross_entropy(
    logits: ArrayLike, target: ArrayLike, /, **kw: Unpack[CEOutputs]
) -> CrossEntropyOutput: ...
@overload
def cross_entropy(
    logits: ArrayLike, target: ArrayLike, /, **kw: Unpack[CEAny]
) -> Array | tuple[Array, Array] | CrossEntropyOutput: ...


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
    temperature: ArrayLike = 1.0,
    where: ArrayLike | None = None,
    return_grad: bool = False,
    out: FloatArray | None = None,
    return_lse: bool = False,
    return_logprob: bool = False,
    return_entropy: bool = False,
    return_argmax: bool = False,
    topk: int | None = None,
    softcap: float | None = None,
    entropy_weight: ArrayLike | None = None,
    logprob_weight: ArrayLike | None = None,
) -> Array | tuple[Array, Array] | CrossEntropyOutput:
    r"""Softmax cross-entropy from logits, with its gradient in the same fused pass.

    With ``v = logits / T``, ``p = softmax(v)`` over ``axis`` and ``lse = logsumexp(v)``,
    the loss of one sample with class-index target ``t`` is

    .. math::

        \ell = w_t \Big[(1 - \varepsilon)(\mathrm{lse} - v_t)
               + \frac{\varepsilon}{C}\sum_c (\mathrm{lse} - v_c)\Big]
               + z\,\mathrm{lse}^2

    i.e. ``w_t * H(q, p) + z lse^2`` with the smoothed target
    ``q = (1 - eps) onehot(t) + eps / C``.  With probability targets ``y`` it is
    ``sum_c w_c q_c (lse - v_c) + z lse^2`` with ``q = (1 - eps) y + eps / C``.

    The gradient with respect to the logits is ``(w_t (p - q) + 2 z lse p) / T``
    (index targets) or ``((sum_c w_c q_c) p - w * q + 2 z lse p) / T`` (probabilities),
    times the reduction's scale.

    Parameters
    ----------
    logits : array_like
        Unnormalised scores; the classes lie along ``axis``.  float16 is computed in
        float32; integer input in float64.
    target : array_like
        Either class indices, with the logits' shape minus ``axis`` (integers, or
        floats holding integers), or class probabilities with the logits' shape.
        The shape decides which.
    axis : int, default -1
        The class axis (PyTorch uses dimension 1; pass ``axis=1`` for its layout).
    weight : array_like, optional
        Per-class weights, shape ``(C,)``.
    ignore_index : int, optional
        Index targets equal to it contribute no loss and no gradient and are not
        counted by ``"mean"``.  Default None: every target must be a class index
        (PyTorch's default is -100).
    label_smoothing : float in [0, 1], default 0
        Mixes the target with the uniform distribution over the included classes.
        With class weights, an index-target sample is weighted by ``w_t`` as a whole
        (the smoothed distribution is not re-weighted per class); PyTorch weights
        each smoothing term by its class' weight, which moves the loss minimum away
        from ``q`` (pytorch#104776).  Probability targets: as PyTorch.
    reduction : {"mean", "sum", "none"}, default "mean"
        ``"mean"`` divides the weighted sum by the sum of ``w_t`` over the counted
        index targets (PyTorch's convention), or by the number of counted samples for
        probability targets; the z-loss term is averaged over the counted samples.
        If nothing is counted (every target ignored) the mean is 0.0 with a zero
        gradient (PyTorch returns NaN, pytorch#70348); class weights of the counted
        targets summing to 0 make the mean 0/0 and raise ``ValueError``.
    z_loss : float >= 0, default 0
        Adds ``z * lse^2`` per counted sample (PaLM's z-loss, Liger's
        ``lse_square_scale``); not multiplied by the class weight.
    temperature : float > 0, default 1
        The loss acts on ``logits / T``.
    where : array_like of bool, optional
        Mask broadcastable to the logits: masked-out classes take no part (as if
        their logit were -inf), and smoothing spreads only over included classes.
    return_grad : bool, default False
        Also return the gradient with respect to ``logits`` (same shape).
    out : ndarray, optional
        Where to write the gradient (only with ``return_grad``); ``out=logits`` is
        allowed and saves the gradient's memory (as Liger does).
    return_lse, return_logprob, return_entropy, return_argmax : bool, default False
        Also return the per-token log-normaliser, log-probability of the target
        (0 for an ignored target), entropy of ``softmax(v)`` and first argmax (int64,
        -1 for a row with nothing included), from the same pass.  With any of them
        (or ``topk``) the result is a ``CrossEntropyOutput`` NamedTuple (fields
        ``loss, lse, logprob, entropy, argmax, topk_logprobs, topk_ids, grad``;
        unrequested ones None; ``grad`` filled by ``return_grad``).
    topk : int in [1, C], optional
        Also return the ``topk`` largest log-probabilities and their ids per token.
    softcap : float >= 0, optional
        Logits -> ``c tanh(logits / c)`` before the temperature (Gemma 2, Liger).
        ``temperature`` may also be an array of one value per token.
    entropy_weight, logprob_weight : float or array per token, optional
        Add ``b_i (beta_i H_i + alpha_i log p_{i,t})`` to the loss (``b_i`` the
        z-loss' reduction scale), with their gradients; for a policy-gradient loss
        pass ``logprob_weight=-A``.  Formulas, signs and edge cases:
        docs/vocab_outputs.md.  These options take index targets and NumPy inputs.

    Returns
    -------
    loss : scalar or ndarray
        A scalar for "mean"/"sum"; the per-sample losses (target's index shape) for
        "none".  dtype: the logits' floating dtype (float64 for integers).
    grad : ndarray
        Only with ``return_grad``.

    Raises
    ------
    ValueError
        A class index out of ``[0, C)`` (other than ``ignore_index``) or a
        non-integral index target, naming the first bad position; a probability
        target with a NaN, inf or negative entry (naming it and its row); class
        weights summing to 0 over the counted targets with ``reduction="mean"``; a
        target of the wrong shape; options out of range.
    TypeError
        Non-numeric inputs or a bool/complex target.

    Notes
    -----
    Edge cases: a row whose included logits are all -inf (or fully masked by
    ``where``) is treated like an ignored target: loss 0, gradient 0, not counted.
    A target class with probability 0 (masked, or logit -inf) gives loss ``+inf``
    and a finite gradient; probability-target mass on a masked class counts as
    on a -inf logit.  Extreme ``x / T`` follow the dense ops' contract
    (docs/losses.md, "Extreme magnitudes and temperatures").  A NaN logit makes
    that sample's loss and gradient NaN.

    Pass structure: one pre-scan (stops at each row's first finite logit), then per
    row max, sum of exponentials and gradient write, fused; the row stays in cache.
    Peak extra memory: O(rows) float64 per-row values, plus the gradient unless
    ``out`` is given, plus one copy of the logits when ``axis`` is not the last,
    contiguous axis.

    Examples
    --------
    >>> import numpy as np
    >>> from softmaxkit import cross_entropy
    >>> logits = np.array([[2.0, 1.0, 0.1], [0.5, 2.5, 0.2]])
    >>> round(float(cross_entropy(logits, [0, 1])), 6)
    0.314291
    >>> loss, grad = cross_entropy(np.array([[1e5, 0.0]]), [1], return_grad=True)
    >>> float(loss), grad.tolist()
    (100000.0, [[1.0, -1.0]])
    >>> float(cross_entropy(logits, [-100, -100], ignore_index=-100))  # all ignored
    0.0
    >>> r = cross_entropy(logits, [0, 1], return_entropy=True, topk=2)  # one pass
    >>> r.topk_ids.tolist(), np.round(r.entropy, 4).tolist(), r.lse is None
    ([[0, 1], [1, 0]], [0.8467, 0.6172], True)
    """
    if _vocab.requested(locals()):  # per-token outputs etc.: softmaxkit._vocab
        return _vocab.cross_entropy(locals())
    if foreign(logits) == "torch":
        return route("torch", "cross_entropy", _vocab.strip(locals()))
    if foreign(logits) == "dask":
        from .drivers import dask as _dask

        dask_ce: Any = _dask.cross_entropy  # (the drivers are not typed statically)
        return dask_ce(
            logits,
            target,
            axis=axis,
            weight=weight,
            ignore_index=ignore_index,
            label_smoothing=label_smoothing,
            reduction=reduction,
            z_loss=z_loss,
            temperature=temperature,
            where=where,
            return_grad=return_grad,
            out=out,
        )
    arr = as_input_array(logits, "logits")
    ax = class_axis(axis, arr.ndim)
    red, eps, z, ii = loss_options(reduction, label_smoothing, z_loss, ignore_index)
    T = validate_temperature(temperature)
    n_classes = arr.shape[ax]
    cw = class_weights(weight, n_classes)
    kind, tgt = parse_target(target, arr.shape, ax, ii)
    if kind == "prob":
        check_prob_target(tgt, ax)
    mask = validate_where(where, arr.shape)
    compute, out_dtype = resolve_dtype(arr.dtype, None)
    pre_T, invT = inv_temperature(T, compute)
    if pre_T is not None:
        # 1/T is not a normal number of the compute dtype: the kernels see x / T
        # (float64, overflow to +-inf as the reference's) with T = 1
        compute = np.dtype(np.float64)
    grad_out(out, return_grad, arr.shape, out_dtype)

    try:
        with coldstart.allow(arr.size):
            return _ce_kernels(
                arr, ax, red, eps, z, ii, cw, kind, tgt, mask, compute, out_dtype,
                pre_T, invT, out, return_grad, n_classes,
            )  # fmt: skip
    except coldstart.ColdKernel:
        # the kernels compile in the background: the float64 formulas, rounded once
        from .reference import _losses as _reference

        ref_ce: Any = _reference.cross_entropy
        res = ref_ce(
            arr, target, axis=ax, weight=weight, ignore_index=ignore_index,
            label_smoothing=label_smoothing, reduction=red, z_loss=z_loss,
            temperature=T, where=mask, return_grad=bool(return_grad),
        )  # fmt: skip
        loss = np.asarray(res[0] if return_grad else res).astype(out_dtype)
        loss = loss[()] if loss.ndim == 0 else loss
        if not return_grad:
            return loss
        if out is None:
            out = np.empty(arr.shape, dtype=out_dtype)
        with np.errstate(over="ignore", under="ignore"):
            out[...] = res[1]
        return loss, out


def _ce_kernels(
    arr: Any, ax: Any, red: Any, eps: Any, z: Any, ii: Any, cw: Any, kind: Any, tgt: Any,
    mask: Any, compute: Any, out_dtype: Any, pre_T: Any, invT: Any, out: Any,
    return_grad: Any, n_classes: Any,
) -> Any:  # fmt: skip
    """The NumPy path of :func:`cross_entropy` past validation: the fused kernels."""
    axes = (ax,)
    x2 = np.ascontiguousarray(rows_view(arr, axes), dtype=compute)
    if pre_T is not None:
        with np.errstate(over="ignore", under="ignore"):
            x2 = x2 / pre_T
    # the kernels take x (and the mask, the targets) read-only: one compiled variant
    # for writeable and read-only callers alike, and no copy of a read-only input
    from ._kernels.view import readonly  # (imports Numba: not at module level)

    x2 = readonly(x2)
    R = x2.shape[0]
    mask2 = np.ascontiguousarray(rows_view(mask, axes)) if mask is not None else None
    if mask2 is not None:
        mask2 = readonly(mask2)
    k = kernels()
    dummy_mask = mask2 if mask2 is not None else all_true(x2.shape)
    grad2 = None
    direct = False
    if return_grad:
        if out is None:
            out = np.empty(arr.shape, dtype=out_dtype)
        g2 = direct_rows(out, axes, compute)
        if g2 is not None and pre_T is None:
            direct = True
            grad2 = g2
            if np.may_share_memory(x2, g2) and not same_memory(x2, g2):
                x2 = x2.copy()  # overlapping in another layout: read a private copy
        if grad2 is None:
            grad2 = np.empty(x2.shape, dtype=compute)
    else:
        grad2 = np.empty((R, 0 if R == 0 else 1), dtype=compute)  # unused

    ce = np.empty(R, dtype=np.float64)
    lse = np.empty(R, dtype=np.float64)
    has_mask = mask2 is not None
    inplace = bool(return_grad and same_memory(x2, grad2))
    if kind == "index":
        t1 = tgt.reshape(-1)
        counted = ~(t1 == ii) if ii is not None else np.ones(R, dtype=np.bool_)
    else:
        # float32 / float64 targets are read as they are (the kernel widens each
        # value exactly); converting a float32 target cost a float64 copy, twice
        # the logits' size
        tdt = tgt.dtype if tgt.dtype in (np.float32, np.float64) else np.float64
        y2 = np.ascontiguousarray(rows_view(tgt, axes), dtype=tdt)
        y2 = readonly(y2)
        counted = np.ones(R, dtype=np.bool_)

    def run(active: Any) -> tuple[Any, Any, float, int]:
        if kind == "index":
            tsafe = t1 if active.all() else np.where(active, t1, 0)
            wt = cw[tsafe] if cw is not None else None
            a, b, wsum, count = scales(kind, wt, active, red)
            k.ce_index_rows(
                x2, tsafe, dummy_mask, has_mask, invT, eps, z, a, b, active,
                return_grad, grad2, ce, lse, inplace, lim(compute),
            )  # fmt: skip
        else:
            wt = None
            a, b, wsum, count = scales(kind, wt, active, red)
            k.ce_prob_rows(
                x2, y2, cw if cw is not None else np.ones(n_classes), cw is not None,
                dummy_mask, has_mask, invT, eps, z, a, b, active,
                return_grad, grad2, ce, lse,
            )  # fmt: skip
        return ce, wt, wsum, count

    def nonempty(idx: Any) -> Any:
        xs = x2 if idx is None else readonly(x2[idx])
        ms = dummy_mask if idx is None else dummy_mask[: idx.size]  # (no mask: all True)
        out = np.empty(xs.shape[0], dtype=np.bool_)
        k.row_nonempty(xs, ms, has_mask, out)
        return out

    # Without a mask, and unless the gradient overwrites the logits, empty rows are
    # found after the kernel (a fully masked row, counted, is not a state the kernels
    # take: label smoothing divides by its number of included classes)
    (_, wt, wsum, count), active = deferred_empty_rows(
        run, counted, nonempty, not (inplace or has_mask)
    )

    part, zp = row_losses(kind, wt, ce, lse, active, z)
    batch = arr.shape[:ax] + arr.shape[ax + 1 :]
    loss = compose(part, zp, red, wsum, count, batch, out_dtype)
    if not return_grad:
        return loss
    if pre_T is not None:
        with np.errstate(over="ignore", under="ignore"):
            grad2 /= pre_T  # d/dx = (d/dv) / T, overflowing to +-inf as it must
    if not direct and out is not None:  # (out is the gradient's buffer by now)
        moved = np.moveaxis(out, ax, -1)
        with np.errstate(over="ignore"):  # (float64 x / T path: rounds to +-inf)
            moved[...] = grad2.reshape(moved.shape)
    return loss, out
