"""Dense operators: softmaxkit::softmax, log_softmax (+ backward ops), logsumexp, topk_softmax."""

import math
import numbers

import numpy as np
import torch

from .. import grad as _grad
from .. import online as _online
from .._core import coldstart
from .._core.validate import normalize_axis
from ..softmax import log_softmax as _np_log_softmax
from ..softmax import logsumexp as _np_logsumexp
from ..softmax import softmax as _np_softmax
from . import _fast as _fast_mod
from ._common import (
    _FLOATS,
    _arr,
    _array_api,
    _as_mask,
    _aux_outputs,
    _axis,
    _check_devices,
    _check_float,
    _check_kernel_device,
    _dims,
    _finish,
    _is_cpu,
    _new,
    _reduced_shape,
    _result_dtype,
    _zero,
)
from ._fast import _fast
from ._gradbuf import grad_buffer


# --------------------------------------------------------------------------- softmax
def _bf16_rows(t: torch.Tensor, dims) -> np.ndarray | None:
    """A contiguous CPU bfloat16 tensor reduced over trailing ``dims`` as ``[R, n]`` bits."""
    if t.dtype != torch.bfloat16 or t.device.type != "cpu" or not t.is_contiguous():
        return None
    nd = t.ndim
    axes = list(range(nd)) if dims is None else sorted(d % nd for d in dims) if nd else []
    if nd == 0 or t.numel() == 0 or axes != list(range(nd - len(axes), nd)):
        return None
    return _fast_mod.bits(t, math.prod(t.shape[nd - len(axes) :]))


def _softmax_impl(x, dims, temperature, where, log, alloc=_new):
    if not _is_cpu(x, where):
        f = _array_api().log_softmax if log else _array_api().softmax
        return f(x, axis=_axis(dims), temperature=temperature, where=where).clone()
    x2 = _bf16_rows(x, dims) if where is None else None
    if x2 is not None:  # the bits kernel: one read, one write, no float32 copy
        from .._kernels import bf16

        try:
            with coldstart.allow(x2.size):
                out = alloc(x.shape, torch.bfloat16)
                return _fast_mod.bits_run(bf16.softmax_range, out, x2, 1.0 / temperature, log)
        except coldstart.ColdKernel:
            pass  # compiling in the background: the float32 path below (its own cold path)
    out = alloc(x.shape, _result_dtype(x.dtype))
    f = _np_log_softmax if log else _np_softmax
    f(_arr(x), axis=_axis(dims), temperature=temperature, where=_arr(where), out=out.numpy())
    return _finish(out, x.dtype, alloc)


@torch.library.custom_op("softmaxkit::softmax", mutates_args=())
def _softmax_op(
    x: torch.Tensor, dims: list[int] | None, temperature: float, where: torch.Tensor | None
) -> torch.Tensor:
    return _softmax_impl(x, dims, temperature, where, False)


@torch.library.custom_op("softmaxkit::log_softmax", mutates_args=())
def _log_softmax_op(
    x: torch.Tensor, dims: list[int] | None, temperature: float, where: torch.Tensor | None
) -> torch.Tensor:
    return _softmax_impl(x, dims, temperature, where, True)


def _vjp_impl(y, g, dims, temperature, where, log):
    if not _is_cpu(y, g, where):
        return _vjp_torch(y, g, dims, temperature, where, log)
    y2 = _bf16_rows(y, dims) if where is None and g.dtype == torch.bfloat16 else None
    g2 = _bf16_rows(g, dims) if y2 is not None and g.shape == y.shape else None
    if g2 is not None:
        from .._kernels import bf16

        try:
            with coldstart.allow(y2.size):
                out = grad_buffer(y.shape, torch.bfloat16)
                return _fast_mod.bits_run(bf16.vjp_range, out, y2, g2, 1.0 / temperature, log)
        except coldstart.ColdKernel:
            pass  # compiling in the background: the float32 path below
    # a gradient: from the released-gradient cache (``_gradbuf``; a [4096, 32000]
    # float32 one is over the output cache's limit and would be fresh pages each step)
    out = grad_buffer(y.shape, _result_dtype(y.dtype))
    f = _grad.log_softmax_vjp if log else _grad.softmax_vjp
    f(_arr(y), _arr(g), axis=_axis(dims), temperature=temperature, where=_arr(where),
      out=out.numpy())  # fmt: skip
    return _finish(out, y.dtype, grad_buffer)


def _vjp_torch(y, g, dims, temperature, where, log):
    """The VJP formulas in torch ops (other devices), with the same zero rules."""
    d = list(range(y.ndim)) if dims is None else dims
    inc = torch.ones_like(y, dtype=torch.bool) if where is None else where
    g = torch.where(inc, g, torch.zeros((), dtype=g.dtype, device=g.device))
    if log:
        p = torch.exp(y)
        live = (p > 0).any(dim=d, keepdim=True) if y.ndim else p > 0
        r = (g - p * g.sum(dim=d, keepdim=True)) / temperature
        return torch.where(inc & live, r, torch.zeros((), dtype=r.dtype, device=r.device))
    r = y * (g - (y * g).sum(dim=d, keepdim=True)) / temperature
    return torch.where(inc & (y != 0), r, torch.zeros((), dtype=r.dtype, device=r.device))


@torch.library.custom_op("softmaxkit::softmax_backward", mutates_args=())
def _softmax_bw_op(
    y: torch.Tensor,
    g: torch.Tensor,
    dims: list[int] | None,
    temperature: float,
    where: torch.Tensor | None,
) -> torch.Tensor:
    return _vjp_impl(y, g, dims, temperature, where, False)


@torch.library.custom_op("softmaxkit::log_softmax_backward", mutates_args=())
def _log_softmax_bw_op(
    y: torch.Tensor,
    g: torch.Tensor,
    dims: list[int] | None,
    temperature: float,
    where: torch.Tensor | None,
) -> torch.Tensor:
    return _vjp_impl(y, g, dims, temperature, where, True)


for _op in (_softmax_op, _log_softmax_op):

    @_op.register_fake
    def _(x, dims, temperature, where):
        return torch.empty_like(x, memory_format=torch.contiguous_format)


for _op in (_softmax_bw_op, _log_softmax_bw_op):

    @_op.register_fake
    def _(y, g, dims, temperature, where):
        return torch.empty_like(y, memory_format=torch.contiguous_format)


def _setup_forward(ctx, inputs, output):
    _x, dims, temperature, where = inputs
    ctx.dims, ctx.temperature = dims, temperature
    ctx.save_for_backward(output, where)


def _softmax_backward(ctx, grad):
    y, where = ctx.saved_tensors
    return _softmax_bw_op(y, grad, ctx.dims, ctx.temperature, where), None, None, None


def _log_softmax_backward(ctx, grad):
    y, where = ctx.saved_tensors
    return _log_softmax_bw_op(y, grad, ctx.dims, ctx.temperature, where), None, None, None


_softmax_op.register_autograd(_softmax_backward, setup_context=_setup_forward)
_log_softmax_op.register_autograd(_log_softmax_backward, setup_context=_setup_forward)


def _setup_vjp(ctx, inputs, output):
    y, g, dims, temperature, where = inputs
    ctx.dims, ctx.temperature = dims, temperature
    ctx.save_for_backward(y, g, where)


def _softmax_bw_backward(ctx, u):
    # gx = y (g - s) / T with s = sum(y g): d/dg is the same VJP applied to u
    # (our operator, so differentiable again); d/dy_k = (u_k (g_k - s) - g_k sum(u y)) / T.
    y, g, where = ctx.saved_tensors
    dims, T = ctx.dims, ctx.temperature
    d = list(range(y.ndim)) if dims is None else dims
    if where is not None:
        u = torch.where(where, u, _zero(u))
        g = torch.where(where, g, _zero(g))
    g_g = _softmax_bw_op(y, u, dims, T, where)
    s = (y * g).sum(dim=d, keepdim=True)
    su = (u * y).sum(dim=d, keepdim=True)
    g_y = (u * (g - s) - g * su) / T
    if where is not None:
        g_y = torch.where(where, g_y, _zero(g_y))
    return g_y, g_g, None, None, None


def _log_softmax_bw_backward(ctx, u):
    # gx_i = (g_i - p_i sum_j g_j) / T, p = exp(y), on included entries of live rows:
    # d/dg_k = (u_k - sum_i u_i p_i) / T, d/dy_k = -u_k p_k sum_j g_j / T.
    y, g, where = ctx.saved_tensors
    dims, T = ctx.dims, ctx.temperature
    d = list(range(y.ndim)) if dims is None else dims
    p = torch.exp(y)
    keep = (p > 0).any(dim=d, keepdim=True) if y.ndim else p > 0
    keep = keep.expand(y.shape)
    if where is not None:
        keep = keep & where
        g = torch.where(where, g, _zero(g))
    u = torch.where(keep, u, _zero(u))
    g_g = torch.where(keep, (u - (u * p).sum(dim=d, keepdim=True)) / T, _zero(u))
    g_y = torch.where(keep, -u * p * g.sum(dim=d, keepdim=True) / T, _zero(u))
    return g_y, g_g, None, None, None


_softmax_bw_op.register_autograd(_softmax_bw_backward, setup_context=_setup_vjp)
_log_softmax_bw_op.register_autograd(_log_softmax_bw_backward, setup_context=_setup_vjp)
# the fast path's autograd function (torch/_fast.py) backs through these
_fast_mod.BACKWARD.update(
    softmax_op=_softmax_bw_op, log_softmax_op=_log_softmax_bw_op, vjp=_vjp_impl,
    softmax_fwd_op=_softmax_op,
)  # fmt: skip


def _dense_front(name, x, axis, temperature, where, dtype):
    _check_float("x", x)
    if dtype is not None and dtype not in _FLOATS:
        raise TypeError(f"dtype must be a torch floating dtype or None; got {dtype!r}")
    t = float(temperature)
    if not (math.isfinite(t) and t > 0):
        raise ValueError(f"temperature must be finite and > 0; got {temperature!r}")
    dims = _dims(axis, x.ndim)
    if dims is not None:  # AxisError / repeated axes, as the NumPy functions
        dims = list(normalize_axis(tuple(dims), x.ndim))
    if dtype is not None and torch.finfo(dtype).bits > torch.finfo(x.dtype).bits:
        x = x.to(dtype)
    return x, dims, t, _as_mask(where, x)


def softmax(x, /, axis=-1, *, temperature=1.0, where=None, dtype=None):
    r"""Softmax of a tensor over ``axis``: the ``softmaxkit::softmax`` operator.

    .. math::

        y_i = \exp(x_i / T - m) \Big/ \sum_j \exp(x_j / T - m), \qquad m = \max_j x_j / T

    Parameters
    ----------
    x : torch.Tensor
        float16, bfloat16, float32 or float64, on any device (CPU: the Numba
        kernels; others: the generic Array API path).
    axis : int, tuple of ints or None, default -1
        As :func:`softmaxkit.softmax` (torch's ``dim``).
    temperature : float > 0, default 1
    where : bool tensor, optional
        Mask broadcastable to ``x``; masked-out entries get 0 and no gradient.
    dtype : torch.dtype, optional
        Output dtype; a wider one is applied before the computation (as torch's
        ``dtype=``), a narrower one after it.

    Returns
    -------
    torch.Tensor
        Contiguous, ``x``'s dtype (or ``dtype``), with a gradient.

    Notes
    -----
    The contract of :func:`softmaxkit.softmax`, which differs from torch's: an
    empty, all ``-inf`` or fully masked row gives zeros (torch: NaN) and a zero
    gradient; ``k`` entries equal to ``+inf`` give ``1/k`` (torch: NaN).

    Memory: a contiguous CPU float16/float32/float64 ``x`` is read in place and the
    result is written straight into the output tensor's storage (no copy); a
    strided ``x`` takes one copy; bfloat16 over trailing axes without ``where`` is
    read and written as its bits (float32 arithmetic, rounded once, no copy), other
    bfloat16 calls take one float32 copy of ``x`` and one float32 result.
    Backward: the fused VJP kernel from the saved output; double backward works.

    Examples
    --------
    >>> import torch
    >>> import softmaxkit.torch as skt
    >>> x = torch.tensor([[1.0, 2.0], [-float("inf"), -float("inf")]], requires_grad=True)
    >>> y = skt.softmax(x)
    >>> y.detach()
    tensor([[0.2689, 0.7311],
            [0.0000, 0.0000]])
    >>> y[0, 1].backward()
    >>> x.grad
    tensor([[-0.1966,  0.1966],
            [ 0.0000,  0.0000]])
    """
    if where is None and dtype is None:
        y = _fast(x, axis, temperature, False, _np_softmax)
        if y is not None:
            return y
    x, dims, t, mask = _dense_front("softmax", x, axis, temperature, where, dtype)
    return _finish(_softmax_op(x, dims, t, mask), dtype or x.dtype)


def log_softmax(x, /, axis=-1, *, temperature=1.0, where=None, dtype=None):
    r"""Log-softmax of a tensor: the ``softmaxkit::log_softmax`` operator.

    ``x / T - logsumexp(x / T)``, computed with ``log1p`` for the dominant entry.

    Parameters
    ----------
    x, axis, temperature, where, dtype
        As :func:`softmax`; masked-out entries get ``-inf``.

    Returns
    -------
    torch.Tensor

    Notes
    -----
    Empty, all ``-inf`` or fully masked rows give ``-inf`` with a zero gradient
    (torch: NaN).  Memory as :func:`softmax`.

    Examples
    --------
    >>> import torch
    >>> import softmaxkit.torch as skt
    >>> skt.log_softmax(torch.tensor([0.0, 0.0], dtype=torch.float64))
    tensor([-0.6931, -0.6931], dtype=torch.float64)
    """
    if where is None and dtype is None:
        y = _fast(x, axis, temperature, True, _np_log_softmax)
        if y is not None:
            return y
    x, dims, t, mask = _dense_front("log_softmax", x, axis, temperature, where, dtype)
    return _finish(_log_softmax_op(x, dims, t, mask), dtype or x.dtype)


# --------------------------------------------------------------------------- logsumexp
@torch.library.custom_op("softmaxkit::logsumexp", mutates_args=())
def _logsumexp_op(
    x: torch.Tensor,
    dims: list[int] | None,
    keepdim: bool,
    temperature: float,
    where: torch.Tensor | None,
    b: torch.Tensor | None,
    return_sign: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    shape = _reduced_shape(x.shape, dims, keepdim)
    rdt = _result_dtype(x.dtype)
    if not _is_cpu(x, where, b):
        r = _array_api().logsumexp(
            x, axis=_axis(dims), b=b, keepdims=keepdim, return_sign=return_sign,
            temperature=temperature, where=where,
        )  # fmt: skip
        lse, sign = r if return_sign else (r, x.new_empty((0,)))
        return lse.clone(), sign.clone()
    if b is None and where is None and not return_sign:
        lse = _lse_bf16(x, dims, temperature)
        if lse is not None:
            return lse.reshape(shape), torch.empty((0,), dtype=x.dtype)
    out = _new(shape, rdt)
    r = _np_logsumexp(
        _arr(x), axis=_axis(dims), b=_arr(b), keepdims=keepdim, return_sign=return_sign,
        temperature=temperature, where=_arr(where), out=out.numpy(),
    )  # fmt: skip
    sign = torch.from_numpy(np.ascontiguousarray(r[1])).reshape(shape) if return_sign else None
    if sign is None:
        sign = torch.empty((0,), dtype=rdt)
    return _finish(out, x.dtype), _finish(sign.to(rdt), x.dtype)


def _lse_bf16(x, dims, temperature):
    """logsumexp of a contiguous CPU bfloat16 tensor over trailing ``dims`` by the bits
    kernel (``_kernels/bf16.py``: no float32 copy of ``x``; a float32 value a row,
    rounded once), or None (other layouts, or the kernel still compiling)."""
    x2 = _bf16_rows(x, dims)
    if x2 is None:
        return None
    lse = _fast_mod.lse32_rows(x2, temperature)
    # (None: compiling in the background, the float32 path)
    return None if lse is None else lse.to(torch.bfloat16)


@_logsumexp_op.register_fake
def _(x, dims, keepdim, temperature, where, b, return_sign):
    shape = _reduced_shape(x.shape, dims, keepdim)
    sign = x.new_empty(shape if return_sign else (0,))
    return x.new_empty(shape), sign


@torch.library.custom_op("softmaxkit::logsumexp_backward_b", mutates_args=())
def _lse_bw_b_op(
    x: torch.Tensor,
    g: torch.Tensor,
    dims: list[int] | None,
    keepdim: bool,
    temperature: float,
    where: torch.Tensor | None,
    b: torch.Tensor,
) -> torch.Tensor:
    _check_kernel_device("logsumexp (backward with b)", x=x, g=g, where=where, b=b)
    r = _grad.logsumexp_vjp(
        _arr(x), _arr(g), axis=_axis(dims), b=_arr(b), keepdims=keepdim,
        temperature=temperature, where=_arr(where),
    )  # fmt: skip
    return torch.from_numpy(np.ascontiguousarray(r)).to(x.dtype)


@_lse_bw_b_op.register_fake
def _(x, g, dims, keepdim, temperature, where, b):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


def _no_double_backward(name):
    def backward(ctx, *grads):
        raise NotImplementedError(
            f"softmaxkit: double backward through {name} is not supported "
            "(its first derivative is a fused kernel without a derivative of its own)"
        )

    return backward


_lse_bw_b_op.register_autograd(
    _no_double_backward("logsumexp with b"), setup_context=lambda ctx, inputs, output: None
)


def _lse_setup(ctx, inputs, output):
    _aux_outputs(ctx, output[1:])
    x, dims, keepdim, temperature, where, b, _rs = inputs
    ctx.dims, ctx.keepdim, ctx.temperature = dims, keepdim, temperature
    ctx.save_for_backward(x, where, b)


def _lse_backward(ctx, g_lse, _g_sign):
    if g_lse is None:
        return (None,) * 7
    x, where, b = ctx.saved_tensors
    dims, T = ctx.dims, ctx.temperature
    if b is not None:
        gx = _lse_bw_b_op(x, g_lse, dims, ctx.keepdim, T, where, b)
    else:
        g = g_lse
        if not ctx.keepdim:
            axes = list(range(x.ndim)) if dims is None else sorted(d % x.ndim for d in dims)
            for a in axes:
                g = g.unsqueeze(a)
        gx = _lse_grad_eager(x, g, dims, T, where)
        if gx is None:
            # through the softmax operator, so the result is differentiable again
            gx = _softmax_op(x, dims, T, where) * (g / T)
            if where is not None:  # masked entries: 0, even in a NaN row (as the VJP's)
                gx = torch.where(where, gx, _zero(gx))
    return gx, None, None, None, None, None, None


def _lse_grad_eager(x, g, dims, T, where):
    """``softmax(x / T) * (g / T)`` into one buffer from the gradient cache, or None.

    First-order eager backward of plain CPU tensors (no ``create_graph``, no
    tracing, no fake or functional tensors): the softmax (the operator's body, the
    same kernel and rounding) is written into a buffer from ``_gradbuf`` and scaled
    in place, the same values as the operator path's ``softmax * (g / T)`` bit for
    bit, without its second full-size tensor; [4096, 32000] float32: two fresh
    524 MB tensors per backward before.  Anything else returns None (the operator
    path, differentiable again).
    """
    if (
        torch.is_grad_enabled()
        or torch.compiler.is_compiling()
        or type(x) is not torch.Tensor
        or type(g) is not torch.Tensor
        or not _is_cpu(x, g, where)
        or (where is not None and type(where) is not torch.Tensor)
    ):
        return None
    p = _softmax_impl(x.detach(), dims, T, where, False, grad_buffer)
    if type(p) is not torch.Tensor or p.shape != x.shape or not p.is_contiguous():
        return None  # pragma: no cover - the CPU body always gives a contiguous tensor
    p.mul_(g.detach() / T)
    if where is not None:  # masked entries: 0, even in a NaN row (whose softmax is NaN)
        p.masked_fill_(~where, 0.0)
    return p


_logsumexp_op.register_autograd(_lse_backward, setup_context=_lse_setup)


def logsumexp(
    x, /, axis=-1, *, b=None, keepdims=False, return_sign=False, temperature=1.0, where=None,
    dtype=None,
):  # fmt: skip
    r"""``log(sum(b * exp(x / T)))`` over ``axis``: the ``softmaxkit::logsumexp`` operator.

    Parameters
    ----------
    x : torch.Tensor
    axis, b, keepdims, return_sign, temperature, where, dtype
        As :func:`softmaxkit.logsumexp` (``b`` a tensor broadcastable to ``x``).

    Returns
    -------
    torch.Tensor, or (lse, sign) with ``return_sign``

    Notes
    -----
    An empty, all ``-inf`` or fully masked row gives ``-inf`` with gradient 0
    (torch: ``-inf`` with gradient NaN).  Backward: ``g / T * softmax(x / T)`` by
    the softmax operator (double backward works); with ``b``, the
    :func:`softmaxkit.logsumexp_vjp` kernel (first order; no gradient for ``b``).
    A plain eager call on a contiguous CPU bfloat16 tensor over its last axis
    (no ``b``, ``where``, ``dtype`` or ``return_sign``) saves the float32 row values
    and computes the first-order gradient in one pass over ``x``
    (``_kernels/bf16.py``, ``lse_vjp_range``: ``exp(x / T - lse) g / T`` rounded
    once); memory: the gradient, and 4 bytes a row.

    Examples
    --------
    >>> import torch
    >>> import softmaxkit.torch as skt
    >>> skt.logsumexp(torch.tensor([1000.0, 1000.0], dtype=torch.float64))
    tensor(1000.6931, dtype=torch.float64)
    """
    if b is None and where is None and dtype is None and not return_sign:
        r = _fast_mod.lse_fast(x, axis, temperature, keepdims)
        if r is not None:
            return r
    x, dims, t, mask = _dense_front("logsumexp", x, axis, temperature, where, dtype)
    bt = None
    if b is not None:
        bt = b if isinstance(b, torch.Tensor) else torch.as_tensor(np.asarray(b))
        _check_devices(x=x, b=bt)
        if bt.requires_grad:
            raise ValueError("b must not require a gradient (no gradient for b is implemented)")
        bt = bt.to(torch.float64).expand(x.shape)
    lse, sign = _logsumexp_op(x, dims, bool(keepdims), t, mask, bt, bool(return_sign))
    lse = _finish(lse, dtype or x.dtype)
    return (lse, _finish(sign, dtype or x.dtype)) if return_sign else lse


# --------------------------------------------------------------------------- top-k
@torch.library.custom_op("softmaxkit::topk_softmax", mutates_args=())
def _topk_op(
    x: torch.Tensor, k: int, axis: int, temperature: float, where: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    p, i = _online.topk_softmax(_arr(x), k, axis=axis, temperature=temperature, where=_arr(where))
    return torch.from_numpy(np.ascontiguousarray(p)).to(x.dtype), torch.from_numpy(
        np.ascontiguousarray(i)
    )


@_topk_op.register_fake
def _(x, k, axis, temperature, where):
    shape = list(x.shape)
    shape[axis % x.ndim] = k
    return x.new_empty(shape), x.new_empty(shape, dtype=torch.int64)


def _topk_setup(ctx, inputs, output):
    _aux_outputs(ctx, output[1:])
    _x, _k, ctx.axis, ctx.temperature, _w = inputs
    ctx.save_for_backward(inputs[0], inputs[4], output[1])


def _topk_backward(ctx, gp, _gi):
    if gp is None:
        return (None,) * 5
    x, where, idx = ctx.saved_tensors
    dims = [ctx.axis]
    p = _softmax_op(x, dims, ctx.temperature, where)
    G = torch.zeros_like(p).scatter(ctx.axis, idx, gp.to(p.dtype))
    return _softmax_bw_op(p, G, dims, ctx.temperature, where), None, None, None, None


_topk_op.register_autograd(_topk_backward, setup_context=_topk_setup)


def topk_softmax(x, k, /, axis=-1, *, temperature=1.0, where=None):
    r"""The ``k`` largest softmax probabilities and their indices (``softmaxkit::topk_softmax``).

    As :func:`softmaxkit.topk_softmax`, for tensors: ``(probs, indices)`` with
    ``indices`` int64.  The gradient of ``probs`` goes through the full softmax
    of the saved input (one more pass, in backward only).

    Examples
    --------
    >>> import torch
    >>> import softmaxkit.torch as skt
    >>> p, i = skt.topk_softmax(torch.tensor([1.0, 3.0, 3.0, 2.0]), 2)
    >>> i
    tensor([1, 2])
    """
    _check_float("x", x)
    _check_kernel_device("topk_softmax", x=x)
    if x.ndim == 0:
        raise ValueError("x must have at least one dimension for topk_softmax")
    ax = int(axis) % x.ndim
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or not 0 <= k <= x.shape[ax]:
        raise ValueError(f"k must be an int with 0 <= k <= {x.shape[ax]}; got {k!r}")
    return _topk_op(x, int(k), ax, float(temperature), _as_mask(where, x))
