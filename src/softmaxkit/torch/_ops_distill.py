"""Distillation operators: ``softmaxkit::distill`` (KL / JSD) and ``softmaxkit::linear_distill``.

The distillation losses compute the student's gradient in the forward pass with the
fused kernel (:func:`softmaxkit.kl_divergence` with ``return_grad``) and save it, as
the cross-entropy operator does; the teacher gets no gradient (pass
``teacher.detach()``).  The linear variants
save the gradients w.r.t. the student's hidden states and weight, never the logits.
"""

import numbers

import numpy as np
import torch

from .. import distill as _distill
from ._common import (
    _arr,
    _as_mask,
    _aux_outputs,
    _check_devices,
    _check_float,
    _check_kernel_device,
    _first_order_only,
    _need_grad,
    _scale_saved,
    _tensor,
    _with_grad,
)

_DISTILL_REDUCTIONS = ("batchmean", "sum", "none", "mean")


# ----------------------------------------------------------------- distillation
@torch.library.custom_op("softmaxkit::distill", mutates_args=())
def _distill_op(
    student: torch.Tensor,
    teacher: torch.Tensor,
    where: torch.Tensor | None,
    direction: str,
    beta: float,
    temperature: float,
    reduction: str,
    axis: int,
    need_grad: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    kw = dict(temperature=temperature, where=None if where is None else where.numpy(),
              reduction=reduction, return_grad=need_grad, axis=axis)  # fmt: skip
    if direction == "jsd":
        r = _distill.jensen_shannon(_arr(student), _arr(teacher), beta=beta, **kw)
    else:
        r = _distill.kl_divergence(_arr(student), _arr(teacher), direction=direction, **kw)
    loss, g = r if need_grad else (r, None)
    dt = torch.promote_types(student.dtype, teacher.dtype)
    gt = torch.empty((0,), dtype=student.dtype)
    if g is not None:
        gt = torch.from_numpy(np.ascontiguousarray(g)).to(student.dtype)
    return torch.from_numpy(np.array(loss)).to(dt), gt


@_distill_op.register_fake
def _(student, teacher, where, direction, beta, temperature, reduction, axis, need_grad):
    ax = axis % student.ndim
    shape = student.shape[:ax] + student.shape[ax + 1 :] if reduction == "none" else ()
    dt = torch.promote_types(student.dtype, teacher.dtype)
    return (
        student.new_empty(shape, dtype=dt),
        student.new_empty(student.shape if need_grad else (0,)),
    )


def _distill_setup(ctx, inputs, output):
    _aux_outputs(ctx, output[1:])
    ctx.reduction, ctx.axis = inputs[6], inputs[7]
    ctx.save_for_backward(output[1])


def _distill_backward(ctx, g, _):
    if g is None:
        return (None,) * 9
    (grad,) = ctx.saved_tensors
    _first_order_only("kl_divergence", grad)
    return (_scale_saved(grad, g, ctx.reduction, ctx.axis).to(grad.dtype),) + (None,) * 8


_distill_op.register_autograd(_distill_backward, setup_context=_distill_setup)


def _distill_call(name, student, teacher, direction, beta, temperature, where, reduction, axis):
    _check_float("student_logits", student)
    _check_float("teacher_logits", teacher)
    _check_devices(student_logits=student, teacher_logits=teacher)
    _check_kernel_device(name, student_logits=student, teacher_logits=teacher)
    if student.shape != teacher.shape:
        raise ValueError(
            "student_logits and teacher_logits must have the same shape; got "
            f"{tuple(student.shape)} and {tuple(teacher.shape)}"
        )
    if teacher.requires_grad and torch.is_grad_enabled():
        raise ValueError(
            "teacher_logits must not require a gradient (the fused gradient is the "
            "student's only); pass teacher_logits.detach()"
        )
    if reduction not in _DISTILL_REDUCTIONS:
        raise ValueError(f"reduction must be one of {_DISTILL_REDUCTIONS}; got {reduction!r}")
    if isinstance(axis, bool) or not isinstance(axis, numbers.Integral):
        raise TypeError(f"axis must be an int; got {axis!r}")
    if student.ndim == 0:
        raise ValueError("student_logits must have at least one dimension; got a 0-d tensor")
    ax = int(axis) % student.ndim
    mask = _as_mask(where, student)
    if mask is not None:
        mask = mask.contiguous()
    loss, _ = _distill_op(student, teacher.detach(), mask, direction, float(beta),
                          float(temperature), reduction, ax, _need_grad(student))  # fmt: skip
    return loss


def kl_divergence(
    student_logits, teacher_logits, /, *, temperature=1.0, direction="forward", where=None,
    reduction="batchmean", axis=-1,
):  # fmt: skip
    r"""KL divergence of tensors (``softmaxkit::distill``), gradient to the student.

    As :func:`softmaxkit.kl_divergence` (forward: ``KL(p_t || p_s)``, torch's
    ``F.kl_div(log_softmax(s / T), log_softmax(t / T), log_target=True,
    reduction="batchmean")``); the student's gradient is computed by the fused
    kernel in the forward pass and saved.  ``teacher_logits`` must not require a
    gradient.

    Examples
    --------
    >>> import torch
    >>> import softmaxkit.torch as skt
    >>> s = torch.tensor([[1.0, 2.0, 3.0]], dtype=torch.float64, requires_grad=True)
    >>> t = torch.tensor([[3.0, 2.0, 1.0]], dtype=torch.float64)
    >>> loss = skt.kl_divergence(s, t)
    >>> round(loss.item(), 6)
    1.150421
    >>> loss.backward(); s.grad.shape
    torch.Size([1, 3])
    """
    if direction not in ("forward", "reverse"):
        raise ValueError(f"direction must be 'forward' or 'reverse'; got {direction!r}")
    return _distill_call("kl_divergence", student_logits, teacher_logits, direction, 0.0,
                    temperature, where, reduction, axis)  # fmt: skip


def jensen_shannon(
    student_logits, teacher_logits, /, *, beta=0.5, temperature=1.0, where=None,
    reduction="batchmean", axis=-1,
):  # fmt: skip
    r"""Generalised Jensen-Shannon divergence of tensors (``softmaxkit::distill``).

    As :func:`softmaxkit.jensen_shannon`; the student's gradient is computed in the
    forward pass and saved.  ``teacher_logits`` must not require a gradient.

    Examples
    --------
    >>> import torch
    >>> import softmaxkit.torch as skt
    >>> s = torch.tensor([[1.0, 2.0, 3.0]], dtype=torch.float64)
    >>> round(float(skt.jensen_shannon(s, s)), 12)
    0.0
    """
    b = float(beta)
    if not 0.0 <= b <= 1.0:
        raise ValueError(f"beta must be in [0, 1]; got beta={beta!r}")
    return _distill_call("jensen_shannon", student_logits, teacher_logits, "jsd", b, temperature,
                    where, reduction, axis)  # fmt: skip


# --------------------------------------------------------- linear distillation
@torch.library.custom_op("softmaxkit::linear_distill", mutates_args=())
def _ldistill_op(
    student_hidden: torch.Tensor,
    student_weight: torch.Tensor,
    teacher_hidden: torch.Tensor,
    teacher_weight: torch.Tensor,
    where: torch.Tensor | None,
    direction: str,
    beta: float,
    temperature: float,
    reduction: str,
    chunk_size: int,
    need_grad: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    args = [_arr(t) for t in (student_hidden, student_weight, teacher_hidden, teacher_weight)]
    kw = dict(temperature=temperature, where=None if where is None else where.numpy(),
              reduction=reduction, return_grad=need_grad,
              chunk_size=None if chunk_size <= 0 else chunk_size)  # fmt: skip
    if direction == "jsd":
        r = _distill.linear_jensen_shannon(*args, beta=beta, **kw)
    else:
        r = _distill.linear_kl_divergence(*args, direction=direction, **kw)
    dt = torch.promote_types(student_hidden.dtype, student_weight.dtype)
    if not need_grad:
        empty = torch.empty((0,), dtype=dt)
        return torch.from_numpy(np.array(r)).to(dt), empty, empty.clone()
    loss, (dh, dw) = r
    return (
        torch.from_numpy(np.array(loss)).to(dt),
        torch.from_numpy(np.ascontiguousarray(dh)).to(student_hidden.dtype),
        torch.from_numpy(np.ascontiguousarray(dw)).to(student_weight.dtype),
    )


@_ldistill_op.register_fake
def _(student_hidden, student_weight, teacher_hidden, teacher_weight, where, direction, beta,
      temperature, reduction, chunk_size, need_grad):  # fmt: skip
    dt = torch.promote_types(student_hidden.dtype, student_weight.dtype)
    shape = student_hidden.shape[:-1] if reduction == "none" else ()
    if not need_grad:
        return (student_hidden.new_empty(shape, dtype=dt), student_hidden.new_empty((0,), dtype=dt),
                student_hidden.new_empty((0,), dtype=dt))  # fmt: skip
    return (
        student_hidden.new_empty(shape, dtype=dt),
        student_hidden.new_empty(student_hidden.shape),
        student_weight.new_empty(student_weight.shape),
    )


def _ldistill_setup(ctx, inputs, output):
    _aux_outputs(ctx, output[1:])
    ctx.reduction = inputs[8]
    ctx.save_for_backward(output[1], output[2])


def _ldistill_backward(ctx, g, _gh, _gw):
    if g is None:
        return (None,) * 11
    dh, dw = ctx.saved_tensors
    _first_order_only("linear_kl_divergence", dh)
    if ctx.reduction == "none":
        # the saved gradients are of the sum: a per-row upstream gradient would need
        # the per-row terms, which the fused kernel does not keep
        if not (type(g) is torch.Tensor and bool((g == 1).all())):
            raise NotImplementedError(
                "softmaxkit.torch linear distillation with reduction='none': backward "
                "takes only an upstream gradient of ones (loss.sum().backward()); use "
                "reduction='sum' and weight the rows in the loss instead"
            )
        return (dh, dw) + (None,) * 9
    return (dh * g, dw * g) + (None,) * 9


_ldistill_op.register_autograd(_ldistill_backward, setup_context=_ldistill_setup)


def _linear_call(name, hs, Ws, ht, Wt, direction, beta, temperature, where, reduction,
                 chunk_size):  # fmt: skip
    for nm, t in (("student_hidden", hs), ("student_weight", Ws), ("teacher_hidden", ht),
                  ("teacher_weight", Wt)):  # fmt: skip
        _check_float(nm, t)
    _check_devices(student_hidden=hs, student_weight=Ws, teacher_hidden=ht, teacher_weight=Wt)
    _check_kernel_device(name, student_hidden=hs, student_weight=Ws, teacher_hidden=ht,
                         teacher_weight=Wt)  # fmt: skip
    if (ht.requires_grad or Wt.requires_grad) and torch.is_grad_enabled():
        raise ValueError(
            "the teacher's hidden states and weight must not require a gradient (the fused "
            "gradient is the student's only); pass them .detach()ed"
        )
    if reduction not in _DISTILL_REDUCTIONS:
        raise ValueError(f"reduction must be one of {_DISTILL_REDUCTIONS}; got {reduction!r}")
    if chunk_size is not None and (
        isinstance(chunk_size, bool) or not isinstance(chunk_size, numbers.Integral)
        or chunk_size < 1
    ):  # fmt: skip
        raise ValueError(f"chunk_size must be an int >= 1 or None; got {chunk_size!r}")
    mask = None
    if where is not None:
        mask = torch.as_tensor(where).detach()
        if mask.dtype != torch.bool:
            raise TypeError(f"where must be a boolean tensor; got {mask.dtype}")
        mask = mask.contiguous()
    loss, _, _ = _ldistill_op(hs, Ws, ht.detach(), Wt.detach(), mask, direction, float(beta),
                              float(temperature), reduction, int(chunk_size or 0),
                              _need_grad(hs, Ws))  # fmt: skip
    return loss


def linear_kl_divergence(
    student_hidden, student_weight, teacher_hidden, teacher_weight, /, *, temperature=1.0,
    direction="forward", where=None, reduction="batchmean", chunk_size=None,
):  # fmt: skip
    r""":func:`softmaxkit.linear_kl_divergence` of tensors (``softmaxkit::linear_distill``).

    Neither logits matrix is formed; the gradients w.r.t. the student's hidden states
    and weight come from the fused chunked kernel in the forward pass and are saved.
    The teacher's tensors must not require a gradient.

    Examples
    --------
    >>> import torch
    >>> import softmaxkit.torch as skt
    >>> hs = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    >>> Ws, ht, Wt = torch.randn(7, 3, dtype=torch.float64), torch.randn(4, 2), torch.randn(7, 2)
    >>> loss = skt.linear_kl_divergence(hs, Ws, ht.double(), Wt.double())
    >>> loss.backward(); hs.grad.shape
    torch.Size([4, 3])
    """
    if direction not in ("forward", "reverse"):
        raise ValueError(f"direction must be 'forward' or 'reverse'; got {direction!r}")
    return _linear_call("linear_kl_divergence", student_hidden, student_weight, teacher_hidden,
                        teacher_weight, direction, 0.0, temperature, where, reduction,
                        chunk_size)  # fmt: skip


def linear_jensen_shannon(
    student_hidden, student_weight, teacher_hidden, teacher_weight, /, *, beta=0.5,
    temperature=1.0, where=None, reduction="batchmean", chunk_size=None,
):  # fmt: skip
    r""":func:`softmaxkit.linear_jensen_shannon` of tensors (``softmaxkit::linear_distill``).

    As :func:`linear_kl_divergence` here, with the generalised JSD.

    Examples
    --------
    >>> import torch
    >>> import softmaxkit.torch as skt
    >>> hs, Ws = torch.randn(4, 3, dtype=torch.float64), torch.randn(7, 3, dtype=torch.float64)
    >>> abs(round(float(skt.linear_jensen_shannon(hs, Ws, hs, Ws)), 12))
    0.0
    """
    b = float(beta)
    if not 0.0 <= b <= 1.0:
        raise ValueError(f"beta must be in [0, 1]; got beta={beta!r}")
    return _linear_call("linear_jensen_shannon", student_hidden, student_weight, teacher_hidden,
                        teacher_weight, "jsd", b, temperature, where, reduction,
                        chunk_size)  # fmt: skip


# ------------------------------------------- routing from the public functions
def _route_distill(name):
    fn = {"kl_divergence": kl_divergence, "jensen_shannon": jensen_shannon}[name]

    def run(a):
        s = a.pop("student_logits")
        t = _tensor(a.pop("teacher_logits"), s)
        rg = a.pop("return_grad")
        a["where"] = _tensor(a["where"], s)
        if not rg:
            return fn(s, t, **a)
        loss, (g,) = _with_grad(lambda v: fn(v, t, **a), [s])
        return loss, g

    return run


def _route_linear(name):
    fn = {"linear_kl_divergence": linear_kl_divergence,
          "linear_jensen_shannon": linear_jensen_shannon}[name]  # fmt: skip

    def run(a):
        hs = a.pop("student_hidden")
        Ws, ht, Wt = (_tensor(a.pop(k), hs) for k in
                      ("student_weight", "teacher_hidden", "teacher_weight"))  # fmt: skip
        rg = a.pop("return_grad")
        if not rg:
            return fn(hs, Ws, ht, Wt, **a)
        return _with_grad(lambda h, w: fn(h, w, ht, Wt, **a), [hs, Ws])

    return run


ROUTES = {
    "kl_divergence": _route_distill("kl_divergence"),
    "jensen_shannon": _route_distill("jensen_shannon"),
    "linear_kl_divergence": _route_linear("linear_kl_divergence"),
    "linear_jensen_shannon": _route_linear("linear_jensen_shannon"),
}
