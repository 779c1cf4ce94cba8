"""Shared helpers of softmaxkit.torch: NumPy views, buffers, checks, autograd glue."""

import numbers

import numpy as np
import torch

from ._alloc import _new

_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_REDUCTIONS = ("mean", "sum", "none")


# --------------------------------------------------------------------------- helpers
def _arr(t: torch.Tensor | None):
    """A CPU tensor as a NumPy array sharing its storage (bfloat16: a float32 copy)."""
    if t is None:
        return None
    t = t.detach()
    if t.dtype == torch.bfloat16 and t.device.type == "cpu":
        wide = _new(t.shape, torch.float32)  # the one float32 temporary
        wide.copy_(t)
        return wide.numpy()
    if t.dtype == torch.bfloat16:
        return t.float().numpy()
    return t.numpy()


def _result_dtype(dt: torch.dtype) -> torch.dtype:
    """The dtype the kernels write for input of dtype ``dt`` (bfloat16 via float32)."""
    return torch.float32 if dt == torch.bfloat16 else dt


def _finish(res: torch.Tensor, dt: torch.dtype, alloc=_new) -> torch.Tensor:
    """``res`` in dtype ``dt`` (rounded once, into a buffer from ``alloc``: :func:`_new`
    or ``_gradbuf.grad_buffer``)."""
    if res.dtype == dt:
        return res
    if res.device.type != "cpu" or type(res) is not torch.Tensor:
        return res.to(dt)
    out = alloc(res.shape, dt)
    out.copy_(res)
    return out


def _dims(axis, ndim: int) -> list[int] | None:
    """``axis`` (int, tuple or None) as the operators' ``int[]?`` argument."""
    if axis is None:
        return None
    if isinstance(axis, bool):
        raise TypeError(f"axis must be an int, a tuple of ints or None; got {axis!r}")
    if isinstance(axis, numbers.Integral):
        return [int(axis)]
    try:
        return [int(a) for a in axis]
    except TypeError:
        raise TypeError(f"axis must be an int, a tuple of ints or None; got {axis!r}") from None


def _axis(dims: list[int] | None):
    return None if dims is None else tuple(dims)


def _is_cpu(*ts) -> bool:
    return all(t is None or t.device.type == "cpu" for t in ts)


def _tensor(a, like: torch.Tensor):
    """``a`` as a tensor on ``like``'s device (``None`` and tensors pass through)."""
    if a is None or isinstance(a, torch.Tensor):
        return a
    return torch.as_tensor(np.asarray(a), device=like.device)


def _is_meta(*ts) -> bool:
    return any(t is not None and t.device.type == "meta" for t in ts)


def _check_kernel_device(name: str, **ts) -> None:
    """Raise ``NotImplementedError`` naming the device unless every tensor is CPU or meta.

    CPU tensors run the Numba kernels; ``meta`` tensors (shapes only, no data) take
    the operators' fake implementations, as torch's own operators do.  Ops without
    a fallback for other devices (CUDA, MPS, XPU, ...) call this before any kernel.
    """
    for k, t in ts.items():
        if t is not None and t.device.type not in ("cpu", "meta"):
            raise NotImplementedError(
                f"softmaxkit.torch.{name} runs on CPU tensors only (and 'meta' tensors, "
                f"for shapes); {k} is on {t.device}: move it with .cpu()"
            )


def _check_float(name: str, t) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor; got {type(t).__name__}")
    if t.dtype not in _FLOATS:
        raise TypeError(
            f"{name} must be a floating tensor (float16, bfloat16, float32 or float64); "
            f"got {t.dtype}"
        )


def _check_devices(**ts) -> None:
    devs = {k: v.device for k, v in ts.items() if isinstance(v, torch.Tensor)}
    if len(set(devs.values())) > 1:
        listed = ", ".join(f"{k} on {v}" for k, v in devs.items())
        raise ValueError(f"all tensors must be on the same device; got {listed}")


def _as_mask(where, ref: torch.Tensor) -> torch.Tensor | None:
    if where is None:
        return None
    if not isinstance(where, torch.Tensor):
        where = torch.as_tensor(np.asarray(where), device=ref.device)
    if where.dtype != torch.bool:
        raise TypeError(f"where must be a boolean tensor; got {where.dtype}")
    _check_devices(x=ref, where=where)
    try:
        torch.broadcast_shapes(where.shape, ref.shape)
    except RuntimeError:
        raise ValueError(
            f"where with shape {tuple(where.shape)} cannot be broadcast to {tuple(ref.shape)}"
        ) from None
    return where.expand(ref.shape)


def _reduced_shape(shape, dims: list[int] | None, keepdim: bool) -> list[int]:
    nd = len(shape)
    axes = set(range(nd)) if dims is None else {d % nd if nd else d for d in dims}
    if keepdim:
        return [1 if i in axes else s for i, s in enumerate(shape)]
    return [s for i, s in enumerate(shape) if i not in axes]


def _array_api():
    from ..drivers import array_api as _array_api

    return _array_api


def _aux_outputs(ctx, aux):
    """Outputs that carry no gradient (saved gradients, signs, indices).

    Marked non-differentiable, and grads are not materialised: otherwise autograd
    builds a zero tensor of each one's size for backward (for cross-entropy's saved
    gradient, a logits-sized ``torch.zeros``: +130 ms on [4096, 32000] float32).
    """
    ctx.set_materialize_grads(False)
    ctx.mark_non_differentiable(*aux)


def _zero(t):
    return torch.zeros((), dtype=t.dtype, device=t.device)


def _check_reduction(reduction):
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}; got {reduction!r}")


def _need_grad(*ts) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in ts)


def _with_grad(f, wrt, seed=None):
    """``(out, grads)`` for a public ``return_grad=True`` call on tensors.

    ``out = f(*leaves)`` runs under ``torch.enable_grad()`` on detached leaf copies of
    the tensors ``wrt`` (so it works under ``torch.no_grad()`` and never touches the
    caller's graph); ``grads`` are the gradients of ``out`` w.r.t. those leaves, one
    per entry of ``wrt``, for the upstream gradient ``seed(out)`` (default: ones, the
    gradient of ``out.sum()``).  A ``None`` in ``wrt`` is passed to ``f`` as ``None``
    and gets the gradient ``None``.  ``out`` comes back detached.  The operators
    compute their gradients in the forward pass and save them: this reads them back.
    """
    with torch.enable_grad():
        ins = [None if t is None else t.detach().requires_grad_() for t in wrt]
        out = f(*ins)
        up = torch.ones_like(out) if seed is None else seed(out)
        gs = iter(torch.autograd.grad(out, [t for t in ins if t is not None], up))
    return out.detach(), tuple(None if t is None else next(gs) for t in ins)


def _check_target(target, logits, ax):
    if not isinstance(target, torch.Tensor):
        raise TypeError(f"target must be a torch.Tensor; got {type(target).__name__}")
    _check_devices(logits=logits, target=target)
    if target.requires_grad:
        raise ValueError(
            "target must not require a gradient (no gradient is computed for the target); "
            "pass target.detach()"
        )
    batch = logits.shape[:ax] + logits.shape[ax + 1 :]
    if target.shape == logits.shape and target.ndim and target.dtype in _FLOATS:
        return "prob"
    if target.shape != batch:
        raise ValueError(
            f"target must have the logits' shape without the class axis {tuple(batch)} "
            f"(class indices) or the logits' shape {tuple(logits.shape)} (probabilities); "
            f"got {tuple(target.shape)}"
        )
    if target.dtype.is_floating_point or target.dtype.is_complex or target.dtype == torch.bool:
        raise TypeError(f"class-index target must be an integer tensor; got {target.dtype}")
    return "index"


def _first_order_only(name, grad):
    """Raise for ``create_graph=True`` through a gradient saved in the forward pass.

    The saved gradient is a constant to autograd, so a second derivative through it
    would silently be 0; an error is better.  (Eager only: under tracing the saved
    gradient is a fake or functional tensor.)
    """
    if torch.is_grad_enabled() and type(grad) is torch.Tensor:
        raise NotImplementedError(
            f"softmaxkit.torch.{name}: double backward (create_graph=True) is not supported; "
            "its gradient is computed by the fused kernel in the forward pass"
        )


def _scale_saved(grad, g, reduction, axis):
    """The saved gradient times the upstream gradient ``g`` (per row for "none").

    In eager mode an upstream gradient of exactly 1 (``loss.backward()``) returns
    the saved tensor itself: no pass over the logits and no new logits-sized
    tensor; autograd takes it over as ``.grad``.  Otherwise the product goes into a
    buffer from the released-gradient cache (``_gradbuf.grad_buffer``; a fresh
    ``torch.empty`` pays its page faults).
    """
    from ._gradbuf import grad_buffer

    if reduction == "none":
        g = g.unsqueeze(axis % grad.ndim)
    plain = type(grad) is torch.Tensor and type(g) is torch.Tensor  # not fake / functional
    if not plain or torch.compiler.is_compiling() or grad.device.type != "cpu":
        return grad * g
    if g.numel() == 1 and float(g) == 1.0:
        return grad
    out = grad_buffer(
        torch.broadcast_shapes(grad.shape, g.shape), torch.promote_types(grad.dtype, g.dtype)
    )
    return torch.mul(grad, g, out=out)
