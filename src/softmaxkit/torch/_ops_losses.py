"""Loss operators: softmaxkit::linear_cross_entropy, hinge and max-margin (cross_entropy:
``_ops_ce``, re-exported here)."""

import numbers

import numpy as np
import torch

from .. import _linear_ce
from .. import losses as _losses
from ._common import (
    _arr,
    _aux_outputs,
    _check_devices,
    _check_float,
    _check_kernel_device,
    _check_reduction,
    _check_target,
    _first_order_only,
    _need_grad,
    _scale_saved,
)
from ._ops_ce import cross_entropy  # noqa: F401  (re-exported: softmaxkit::cross_entropy)


# linear cross-entropy: the forward returns the three gradients (the chunked kernel
# never forms [N, V]); backward scales them.
@torch.library.custom_op("softmaxkit::linear_cross_entropy", mutates_args=())
def _lce_op(
    hidden: torch.Tensor,
    linear_weight: torch.Tensor,
    target: torch.Tensor,
    bias: torch.Tensor | None,
    weight: torch.Tensor | None,
    ignore_index: int | None,
    label_smoothing: float,
    reduction: str,
    z_loss: float,
    temperature: float,
    where: torch.Tensor | None,
    chunk_size: int | None,
    strategy: str,
    need_grad: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    dt = torch.promote_types(hidden.dtype, linear_weight.dtype)
    with _linear_ce.torch_blas():  # the matmuls on PyTorch's BLAS and thread pool
        r = _losses.linear_cross_entropy(
            _arr(hidden), _arr(linear_weight), target.numpy(), bias=_arr(bias),
            chunk_size=chunk_size, strategy=strategy, weight=_arr(weight),
            ignore_index=ignore_index, label_smoothing=label_smoothing, reduction=reduction,
            z_loss=z_loss, temperature=temperature, where=_arr(where), return_grad=need_grad,
        )  # fmt: skip
    if need_grad:
        loss, (dh, dW, db) = r
    else:
        loss, dh, dW, db = r, None, None, None

    def t(a, like, shape):
        if a is None:
            return torch.empty(shape, dtype=dt)
        return torch.from_numpy(np.ascontiguousarray(a)).to(dt).reshape(like)

    return (
        t(np.asarray(loss), _lce_loss_shape(hidden, reduction), ()),
        t(dh, hidden.shape, (0,)),
        t(dW, linear_weight.shape, (0,)),
        t(db, (linear_weight.shape[0],), (0,)),
    )


def _lce_loss_shape(hidden, reduction):
    return tuple(hidden.shape[:-1]) if reduction == "none" else ()


@_lce_op.register_fake
def _(hidden, linear_weight, target, bias, weight, ignore_index, label_smoothing, reduction,
      z_loss, temperature, where, chunk_size, strategy, need_grad):  # fmt: skip
    dt = torch.promote_types(hidden.dtype, linear_weight.dtype)
    e = hidden.new_empty
    return (
        e(_lce_loss_shape(hidden, reduction), dtype=dt),
        e(hidden.shape if need_grad else (0,), dtype=dt),
        e(linear_weight.shape if need_grad else (0,), dtype=dt),
        e((linear_weight.shape[0],) if (need_grad and bias is not None) else (0,), dtype=dt),
    )


def _lce_setup(ctx, inputs, output):
    _aux_outputs(ctx, output[1:])
    ctx.reduction = inputs[7]
    ctx.need = inputs[13]
    ctx.has_bias = inputs[3] is not None
    ctx.save_for_backward(*output[1:])


def _lce_backward(ctx, g, *_):
    if g is None:
        return (None,) * 14
    if not ctx.need:
        raise RuntimeError(
            "softmaxkit.torch.linear_cross_entropy: gradients were not computed in the "
            "forward (no input required grad when it ran)"
        )
    dh, dW, db = ctx.saved_tensors
    _first_order_only("linear_cross_entropy", dh)
    gh = _scale_saved(dh, g, "mean", 0)
    gW = _scale_saved(dW, g, "mean", 0)
    gb = _scale_saved(db, g, "mean", 0) if ctx.has_bias else None
    return (gh, gW, None, gb) + (None,) * 10


_lce_op.register_autograd(_lce_backward, setup_context=_lce_setup)


def linear_cross_entropy(
    hidden, linear_weight, target, /, *, bias=None, chunk_size=None, strategy="auto",
    weight=None, ignore_index=None, label_smoothing=0.0, reduction="mean", z_loss=0.0,
    temperature=1.0, where=None,
):  # fmt: skip
    r"""Cross-entropy of ``hidden @ linear_weight.T + bias`` without the logits.

    The ``softmaxkit::linear_cross_entropy`` operator around
    :func:`softmaxkit.linear_cross_entropy` (same options).  When an input requires
    a gradient, the forward returns ``d_hidden``, ``d_weight`` and ``d_bias`` from
    the chunked kernel (never the ``[N, V]`` logits) and saves them; backward
    scales them by the upstream gradient.

    Parameters
    ----------
    hidden : torch.Tensor, shape (..., d)
    linear_weight : torch.Tensor, shape (V, d)
    target : integer torch.Tensor, shape (...)
    bias, chunk_size, strategy, weight, ignore_index
        As :func:`softmaxkit.linear_cross_entropy`.
    label_smoothing, reduction, z_loss, temperature, where
        As :func:`softmaxkit.linear_cross_entropy`.

    Returns
    -------
    torch.Tensor

    Notes
    -----
    With ``reduction="none"`` only the forward is available (the per-sample
    upstream gradient would need another pass over the vocabulary): backward
    raises ``NotImplementedError``.  Memory saved for backward: the gradients,
    ``hidden``- and ``weight``-sized.  CPU (and ``meta``) tensors only; other
    devices raise ``NotImplementedError``.

    Speed: the matmuls run on PyTorch's BLAS (not NumPy's, whose spinning threads
    fought the kernels' on two cores).  With gradients and ``torch.get_num_threads()``
    = P > 1, each block of rows is shared by P threads, one vocabulary slice
    ``V/P`` each, with one-thread matmuls and two barriers per block (PyTorch's thread
    count is restored afterwards); extra memory one ``[rows, V]`` logits block
    (``rows <= N/16``) and P ``[rows, d]`` partials of ``d_hidden``.

    Examples
    --------
    >>> import torch
    >>> import softmaxkit.torch as skt
    >>> h = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    >>> W = torch.randn(10, 3, dtype=torch.float64)
    >>> loss = skt.linear_cross_entropy(h, W, torch.tensor([1, 0, 9, 3]))
    >>> ref = torch.nn.functional.cross_entropy(h @ W.T, torch.tensor([1, 0, 9, 3]))
    >>> bool(torch.isclose(loss, ref))
    True
    """
    _check_float("hidden", hidden)
    _check_float("linear_weight", linear_weight)
    _check_devices(hidden=hidden, linear_weight=linear_weight, target=target, bias=bias)
    if not isinstance(target, torch.Tensor):
        raise TypeError(f"target must be a torch.Tensor; got {type(target).__name__}")
    if target.requires_grad:
        raise ValueError("target must not require a gradient; pass target.detach()")
    if target.dtype.is_floating_point or target.dtype == torch.bool:
        raise TypeError(f"target must be an integer tensor of class indices; got {target.dtype}")
    if bias is not None:
        _check_float("bias", bias)
    _check_reduction(reduction)
    _check_kernel_device("linear_cross_entropy", hidden=hidden)
    need = _need_grad(hidden, linear_weight, bias)
    if need and reduction == "none":
        raise NotImplementedError(
            "linear_cross_entropy with reduction='none' is forward-only in softmaxkit.torch; "
            "use 'sum' or 'mean' for gradients"
        )
    w = None if weight is None else torch.as_tensor(weight).detach().to(torch.float64)
    out = _lce_op(
        hidden, linear_weight, target, bias, w,
        None if ignore_index is None else int(ignore_index), float(label_smoothing), reduction,
        float(z_loss), float(temperature), where,
        chunk_size, strategy, need,
    )  # fmt: skip
    return out[0]


# ------------------------------------------------------------------- hinge losses
@torch.library.custom_op("softmaxkit::multiclass_hinge_loss", mutates_args=())
def _hinge_op(
    logits: torch.Tensor,
    target: torch.Tensor,
    margin: float,
    p: int,
    weight: torch.Tensor | None,
    reduction: str,
    kind: str,
    axis: int,
    need_grad: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    r = _losses.multiclass_hinge_loss(
        _arr(logits), target.numpy(), margin=margin, p=p, weight=_arr(weight),
        reduction=reduction, kind=kind, axis=axis, return_grad=need_grad,
    )  # fmt: skip
    loss, g = r if need_grad else (r, None)
    gt = torch.empty((0,), dtype=logits.dtype)
    if g is not None:
        gt = torch.from_numpy(np.ascontiguousarray(g)).to(logits.dtype)
    return torch.from_numpy(np.array(loss)).to(logits.dtype), gt


@_hinge_op.register_fake
def _(logits, target, margin, p, weight, reduction, kind, axis, need_grad):
    ax = axis % logits.ndim
    shape = logits.shape[:ax] + logits.shape[ax + 1 :] if reduction == "none" else ()
    return logits.new_empty(shape), logits.new_empty(logits.shape if need_grad else (0,))


def _hinge_setup(ctx, inputs, output):
    _aux_outputs(ctx, output[1:])
    ctx.reduction, ctx.axis = inputs[5], inputs[7]
    ctx.save_for_backward(output[1])


def _hinge_backward(ctx, g, _):
    if g is None:
        return (None,) * 9
    (grad,) = ctx.saved_tensors
    _first_order_only("multiclass_hinge_loss", grad)
    return (_scale_saved(grad, g, ctx.reduction, ctx.axis),) + (None,) * 8


_hinge_op.register_autograd(_hinge_backward, setup_context=_hinge_setup)


def multiclass_hinge_loss(
    logits, target, /, *, margin=1.0, p=1, weight=None, reduction="mean",
    kind="weston_watkins", axis=-1,
):  # fmt: skip
    r"""Multiclass hinge loss of tensors (``softmaxkit::multiclass_hinge_loss``).

    As :func:`softmaxkit.multiclass_hinge_loss`; the (sub)gradient is computed in
    the forward pass and saved.

    Examples
    --------
    >>> import torch
    >>> import softmaxkit.torch as skt
    >>> x = torch.tensor([[0.1, 0.2, 0.4, 0.8]], dtype=torch.float64)
    >>> round(float(skt.multiclass_hinge_loss(x, torch.tensor([3]))), 12)
    0.325
    """
    _check_float("logits", logits)
    ax = int(axis) % max(logits.ndim, 1)
    if _check_target(target, logits, ax) != "index":
        raise TypeError("multiclass_hinge_loss takes class-index targets")
    _check_reduction(reduction)
    _check_kernel_device("multiclass_hinge_loss", logits=logits)
    w = None if weight is None else torch.as_tensor(weight).detach().to(torch.float64)
    loss, _ = _hinge_op(
        logits, target, float(margin), int(p), w, reduction, str(kind), ax, _need_grad(logits)
    )
    return loss


@torch.library.custom_op("softmaxkit::max_margin_loss", mutates_args=())
def _mm_op(
    scores: torch.Tensor, num_negatives: int, margin: float, reduction: str, need_grad: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    r = _losses.max_margin_loss(
        _arr(scores), num_negatives, margin=margin, reduction=reduction, return_grad=need_grad
    )
    loss, g = r if need_grad else (r, None)
    gt = torch.empty((0,), dtype=scores.dtype)
    if g is not None:
        gt = torch.from_numpy(np.ascontiguousarray(g)).to(scores.dtype)
    return torch.from_numpy(np.array(loss)).to(scores.dtype), gt


def _mm_loss_shape(scores, num_negatives, reduction):
    if reduction != "none":
        return ()
    L = scores.shape[-1]
    return (*scores.shape[:-1], L // (num_negatives + 1), num_negatives)


@_mm_op.register_fake
def _(scores, num_negatives, margin, reduction, need_grad):
    return (
        scores.new_empty(_mm_loss_shape(scores, num_negatives, reduction)),
        scores.new_empty(scores.shape if need_grad else (0,)),
    )


def _mm_setup(ctx, inputs, output):
    _aux_outputs(ctx, output[1:])
    ctx.n, ctx.reduction = inputs[1], inputs[3]
    ctx.save_for_backward(output[1])


def _mm_backward(ctx, g, _):
    if g is None:
        return (None,) * 5
    (grad,) = ctx.saved_tensors
    _first_order_only("max_margin_loss", grad)
    if ctx.reduction != "none":
        return _scale_saved(grad, g, "mean", 0), None, None, None, None
    n = ctx.n
    gg = grad.reshape(*grad.shape[:-1], -1, n + 1)
    gn = gg[..., 1:] * g  # indicator of an active pair times its upstream gradient
    gp = -gn.sum(dim=-1, keepdim=True)
    return torch.cat([gp, gn], dim=-1).reshape(grad.shape), None, None, None, None


_mm_op.register_autograd(_mm_backward, setup_context=_mm_setup)


def max_margin_loss(scores, /, num_negatives, *, margin=1.0, reduction="sum"):
    r"""Max-margin loss of a tensor in the interleaved layout (``softmaxkit::max_margin_loss``).

    As :func:`softmaxkit.max_margin_loss`; the (sub)gradient is computed in the
    forward pass and saved.

    Examples
    --------
    >>> import torch
    >>> import softmaxkit.torch as skt
    >>> s = torch.tensor([0.5, 0.2, -0.1, 1.0, -0.5, 0.3], dtype=torch.float64)
    >>> round(float(skt.max_margin_loss(s, 2)), 12)
    1.4
    """
    _check_float("scores", scores)
    _check_reduction(reduction)
    _check_kernel_device("max_margin_loss", scores=scores)
    if isinstance(num_negatives, bool) or not isinstance(num_negatives, numbers.Integral):
        raise TypeError(f"num_negatives must be an int; got {num_negatives!r}")
    if num_negatives < 0 or scores.ndim < 1 or scores.shape[-1] % (num_negatives + 1):
        raise ValueError(
            f"scores' last axis (shape {tuple(scores.shape)}) must hold groups of "
            f"num_negatives + 1 = {num_negatives + 1} scores"
        )
    loss, _ = _mm_op(scores, int(num_negatives), float(margin), reduction, _need_grad(scores))
    return loss
