"""softmaxkit inside PyTorch: ``softmaxkit::`` operators with fused gradients.

Every op is a real PyTorch operator made with :func:`torch.library.custom_op`
(namespace ``softmaxkit``), with a fake (meta) implementation for
``torch.compile(fullgraph=True)`` and a backward registered with
:func:`torch.library.register_autograd` that runs the fused NumPy/Numba kernels:

* ``softmax`` / ``log_softmax``: backward from the saved *output* by the VJP
  kernels (:func:`softmaxkit.softmax_vjp`, :func:`softmaxkit.log_softmax_vjp`).  The
  backward is itself an operator with its own backward, so double backward works.
* ``logsumexp``: backward ``g / T * softmax(x / T)`` through the softmax operator
  (differentiable again); with weights ``b`` the kernel of
  :func:`softmaxkit.logsumexp_vjp` (first order only).
* ``cross_entropy``, ``multiclass_hinge_loss``, ``max_margin_loss``: the gradient
  is computed in the forward pass (one pass over the logits, as Liger-Kernel does)
  and saved; backward multiplies it by the upstream gradient.
* ``linear_cross_entropy``: the forward returns ``d_hidden``, ``d_weight`` and
  ``d_bias`` from the chunked kernel (never the ``[N, V]`` logits); backward scales
  them.
* ``topk_softmax``: backward through the full softmax of the saved input.

Memory and devices (``docs/frameworks.md``): contiguous CPU float16 / float32 /
float64 tensors reach the kernels without a copy (``Tensor.numpy()`` shares the
storage) and the result is written straight into the new tensor's storage;
bfloat16 (which NumPy lacks): softmax / log_softmax over trailing axes without a
mask run a kernel on the bits (``_kernels/bf16.py``, float32 arithmetic, no copy),
other calls widen to one float32 temporary and round back; strided tensors take
the one copy the NumPy function documents.
Tensors on other devices (CUDA, MPS, ...) take the generic Array API path
(correct, not accelerated), for the dense ops only.

Importing this module imports torch; ``import softmaxkit`` never does.
"""

import math
import numbers

import numpy as np
import torch

from . import _buffers
from . import grad as _grad
from . import losses as _losses
from . import online as _online
from ._validate import normalize_axis
from .softmax import log_softmax as _np_log_softmax
from .softmax import logsumexp as _np_logsumexp
from .softmax import softmax as _np_softmax

__all__ = [
    "CrossEntropyLoss",
    "LinearCrossEntropyLoss",
    "LogSoftmax",
    "Softmax",
    "cross_entropy",
    "linear_cross_entropy",
    "log_softmax",
    "logsumexp",
    "max_margin_loss",
    "multiclass_hinge_loss",
    "softmax",
    "topk_softmax",
]

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


def _new(shape, dtype: torch.dtype) -> torch.Tensor:
    """A new C-contiguous CPU tensor for a kernel's output.

    Large ones (4 MiB and more) are built on softmaxkit's output buffers (2 MiB
    aligned, reused once released, ``softmaxkit._buffers``): a fresh ``torch.empty``
    of [4096, 32000] float32 costs ~130 ms of page faults on the 2-core VM, more
    than the softmax itself (~35 ms into a warm buffer).
    """
    shape = tuple(int(s) for s in shape)
    if dtype == torch.bfloat16:  # NumPy has no bfloat16: its bits as int16
        return _new(shape, torch.int16).view(torch.bfloat16)
    ndt = torch.empty((), dtype=dtype).numpy().dtype
    size = math.prod(shape)
    if size * ndt.itemsize < _buffers.ALIGN_MIN_BYTES:
        return torch.empty(shape, dtype=dtype)
    strides = tuple(int(np.prod(shape[i + 1 :])) * ndt.itemsize for i in range(len(shape)))
    # a metadata-only stand-in with the output's shape and C layout (never written)
    like = np.lib.stride_tricks.as_strided(np.empty(1, ndt), shape, strides, writeable=False)
    return torch.from_numpy(_buffers.empty_like(like, ndt))


def _result_dtype(dt: torch.dtype) -> torch.dtype:
    """The dtype the kernels write for input of dtype ``dt`` (bfloat16 via float32)."""
    return torch.float32 if dt == torch.bfloat16 else dt


def _finish(res: torch.Tensor, dt: torch.dtype) -> torch.Tensor:
    """``res`` in dtype ``dt`` (rounded once, into a buffer from :func:`_new`)."""
    if res.dtype == dt:
        return res
    if res.device.type != "cpu" or type(res) is not torch.Tensor:
        return res.to(dt)
    out = _new(res.shape, dt)
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
    from . import _array_api

    return _array_api


# --------------------------------------------------------------------------- softmax
def _bf16_rows(t: torch.Tensor, dims) -> np.ndarray | None:
    """A contiguous CPU bfloat16 tensor reduced over trailing ``dims`` as ``[R, n]`` bits."""
    if t.dtype != torch.bfloat16 or t.device.type != "cpu" or not t.is_contiguous():
        return None
    nd = t.ndim
    axes = list(range(nd)) if dims is None else sorted(d % nd for d in dims) if nd else []
    if nd == 0 or t.numel() == 0 or axes != list(range(nd - len(axes), nd)):
        return None
    n = math.prod(t.shape[nd - len(axes) :])
    return t.detach().view(torch.int16).numpy().view(np.uint16).reshape(-1, n)


def _bf16_run(kernel, out: torch.Tensor, *args) -> torch.Tensor:
    from ._kernels import _parallel

    o2 = out.view(torch.int16).numpy().view(np.uint16).reshape(args[0].shape)
    nt = _parallel.threads_for(o2.size)
    _parallel.run(kernel, o2.shape[0], nt, *args, o2)
    return out


def _softmax_impl(x, dims, temperature, where, log):
    if not _is_cpu(x, where):
        f = _array_api().log_softmax if log else _array_api().softmax
        return f(x, axis=_axis(dims), temperature=temperature, where=where).clone()
    x2 = _bf16_rows(x, dims) if where is None else None
    if x2 is not None:  # the bits kernel: one read, one write, no float32 copy
        from ._kernels import bf16

        out = _new(x.shape, torch.bfloat16)
        return _bf16_run(bf16.softmax_range, out, x2, 1.0 / temperature, log)
    out = _new(x.shape, _result_dtype(x.dtype))
    f = _np_log_softmax if log else _np_softmax
    f(_arr(x), axis=_axis(dims), temperature=temperature, where=_arr(where), out=out.numpy())
    return _finish(out, x.dtype)


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
        from ._kernels import bf16

        out = _new(y.shape, torch.bfloat16)
        return _bf16_run(bf16.vjp_range, out, y2, g2, 1.0 / temperature, log)
    out = _new(y.shape, _result_dtype(y.dtype))
    f = _grad.log_softmax_vjp if log else _grad.softmax_vjp
    f(_arr(y), _arr(g), axis=_axis(dims), temperature=temperature, where=_arr(where),
      out=out.numpy())  # fmt: skip
    return _finish(out, y.dtype)


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


def _aux_outputs(ctx, aux):
    """Outputs that carry no gradient (saved gradients, signs, indices).

    Marked non-differentiable, and grads are not materialised: otherwise autograd
    builds a zero tensor of each one's size for backward (for cross-entropy's saved
    gradient, a logits-sized ``torch.zeros``: +130 ms on [4096, 32000] float32).
    """
    ctx.set_materialize_grads(False)
    ctx.mark_non_differentiable(*aux)


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


def _zero(t):
    return torch.zeros((), dtype=t.dtype, device=t.device)


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
    out = _new(shape, rdt)
    r = _np_logsumexp(
        _arr(x), axis=_axis(dims), b=_arr(b), keepdims=keepdim, return_sign=return_sign,
        temperature=temperature, where=_arr(where), out=out.numpy(),
    )  # fmt: skip
    sign = torch.from_numpy(np.ascontiguousarray(r[1])).reshape(shape) if return_sign else None
    if sign is None:
        sign = torch.empty((0,), dtype=rdt)
    return _finish(out, x.dtype), _finish(sign.to(rdt), x.dtype)


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
    if not _is_cpu(x, g, where, b):
        raise NotImplementedError("logsumexp with b: backward is implemented on CPU only")
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
        # through the softmax operator, so the result is differentiable again
        gx = _softmax_op(x, dims, T, where) * (g / T)
    return gx, None, None, None, None, None, None


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

    Examples
    --------
    >>> import torch
    >>> import softmaxkit.torch as skt
    >>> skt.logsumexp(torch.tensor([1000.0, 1000.0], dtype=torch.float64))
    tensor(1000.6931, dtype=torch.float64)
    """
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


# --------------------------------------------------------------------------- losses
def _check_reduction(reduction):
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}; got {reduction!r}")


def _need_grad(*ts) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in ts)


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


@torch.library.custom_op("softmaxkit::cross_entropy", mutates_args=())
def _ce_op(
    logits: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None,
    ignore_index: int | None,
    label_smoothing: float,
    reduction: str,
    z_loss: float,
    temperature: float,
    where: torch.Tensor | None,
    axis: int,
    need_grad: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    rdt = _result_dtype(logits.dtype)
    gout = _new(logits.shape if need_grad else (0,), rdt)
    tgt = target.detach()
    tgt = _arr(tgt) if tgt.dtype in _FLOATS else tgt.numpy()
    r = _losses.cross_entropy(
        _arr(logits), tgt, axis=axis, weight=_arr(weight), ignore_index=ignore_index,
        label_smoothing=label_smoothing, reduction=reduction, z_loss=z_loss,
        temperature=temperature, where=_arr(where), return_grad=need_grad,
        out=gout.numpy() if need_grad else None,
    )  # fmt: skip
    loss = r[0] if need_grad else r
    loss = torch.from_numpy(np.array(loss, dtype=gout.numpy().dtype))
    return _finish(loss, logits.dtype), _finish(gout, logits.dtype)


@_ce_op.register_fake
def _(logits, target, weight, ignore_index, label_smoothing, reduction, z_loss, temperature,
      where, axis, need_grad):  # fmt: skip
    ax = axis % logits.ndim
    shape = logits.shape[:ax] + logits.shape[ax + 1 :] if reduction == "none" else ()
    return logits.new_empty(shape), logits.new_empty(logits.shape if need_grad else (0,))


def _ce_setup(ctx, inputs, output):
    _aux_outputs(ctx, output[1:])
    ctx.reduction, ctx.axis = inputs[5], inputs[9]
    if not inputs[10]:
        ctx.save_for_backward(None)
        return
    ctx.save_for_backward(output[1])


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
    new buffer from :func:`_new` (a fresh ``torch.empty`` pays its page faults).
    """
    if reduction == "none":
        g = g.unsqueeze(axis % grad.ndim)
    plain = type(grad) is torch.Tensor and type(g) is torch.Tensor  # not fake / functional
    if not plain or torch.compiler.is_compiling() or grad.device.type != "cpu":
        return grad * g
    if g.numel() == 1 and float(g) == 1.0:
        return grad
    out = _new(
        torch.broadcast_shapes(grad.shape, g.shape), torch.promote_types(grad.dtype, g.dtype)
    )
    return torch.mul(grad, g, out=out)


def _ce_backward(ctx, g_loss, _g_grad):
    (grad,) = ctx.saved_tensors
    if g_loss is None:
        return (None,) * 11
    _first_order_only("cross_entropy", grad)
    if grad is None:
        raise RuntimeError(
            "softmaxkit.torch.cross_entropy: the gradient was not computed in the forward "
            "(logits did not require grad when it ran)"
        )
    return (_scale_saved(grad, g_loss, ctx.reduction, ctx.axis),) + (None,) * 10


_ce_op.register_autograd(_ce_backward, setup_context=_ce_setup)


def cross_entropy(
    logits, target, /, *, axis=-1, weight=None, ignore_index=None, label_smoothing=0.0,
    reduction="mean", z_loss=0.0, temperature=1.0, where=None,
):  # fmt: skip
    r"""Softmax cross-entropy of tensors: the ``softmaxkit::cross_entropy`` operator.

    Every option of :func:`softmaxkit.cross_entropy` (class axis last by default;
    torch's layout is ``axis=1``).  When ``logits`` requires a gradient, it is
    computed in the forward pass by the fused kernel and saved (one pass over the
    logits, Liger-Kernel style); backward multiplies it by the upstream gradient.

    Parameters
    ----------
    logits : torch.Tensor
        Floating (float16, bfloat16, float32, float64).
    target : torch.Tensor
        Integer class indices (the logits' shape without ``axis``), or float
        probabilities of the logits' shape.  Must not require a gradient.
    axis, weight, ignore_index, label_smoothing, reduction, z_loss, temperature, where
        As :func:`softmaxkit.cross_entropy`.

    Returns
    -------
    torch.Tensor
        0-d for "mean"/"sum", per sample for "none".

    Raises
    ------
    TypeError
        Integer logits, a floating index target.
    ValueError
        Tensors on different devices, a target requiring grad, a target of the
        wrong shape, out-of-range class indices, options out of range.

    Notes
    -----
    Differences from ``torch.nn.functional.cross_entropy``: ``ignore_index``
    defaults to None (torch: -100); a mean over no counted sample is 0 (torch:
    NaN); a row whose logits are all ``-inf`` counts as ignored (torch: NaN);
    label smoothing with class weights weights a sample by ``w_t`` as a whole.
    Memory: the saved gradient (logits-sized) lives until backward.  CPU only.

    Examples
    --------
    >>> import torch
    >>> import softmaxkit.torch as skt
    >>> x = torch.tensor([[2.0, 1.0, 0.1], [0.5, 2.5, 0.2]], requires_grad=True)
    >>> loss = skt.cross_entropy(x, torch.tensor([0, 1]))
    >>> loss.backward()
    >>> round(float(loss.detach()), 6)
    0.314291
    """
    _check_float("logits", logits)
    if logits.ndim == 0:
        raise ValueError("logits must have at least one dimension")
    ax = int(axis) % logits.ndim
    kind = _check_target(target, logits, ax)
    _check_reduction(reduction)
    w = None
    if weight is not None:
        w = weight if isinstance(weight, torch.Tensor) else torch.as_tensor(np.asarray(weight))
        _check_devices(logits=logits, weight=w)
        w = w.detach().to(torch.float64)
    if not _is_cpu(logits):
        raise NotImplementedError(
            f"softmaxkit.torch.cross_entropy runs on CPU tensors only; got {logits.device}"
        )
    if kind == "index" and target.numel() and not torch.compiler.is_compiling():
        t = target
        ok = (t >= 0) & (t < logits.shape[ax])
        if ignore_index is not None:
            ok |= t == ignore_index
        if not bool(ok.all()):
            bad = t[~ok][0].item()
            raise ValueError(
                f"target holds class index {bad} outside [0, {logits.shape[ax]})"
                + (f" (ignore_index={ignore_index})" if ignore_index is not None else "")
            )
    loss, _ = _ce_op(
        logits, target, w, None if ignore_index is None else int(ignore_index),
        float(label_smoothing), reduction, float(z_loss), float(temperature),
        _as_mask(where, logits), ax, _need_grad(logits),
    )  # fmt: skip
    return loss


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
    r = _losses.linear_cross_entropy(
        _arr(hidden), _arr(linear_weight), target.numpy(), bias=_arr(bias), chunk_size=chunk_size,
        strategy=strategy, weight=_arr(weight), ignore_index=ignore_index,
        label_smoothing=label_smoothing, reduction=reduction, z_loss=z_loss,
        temperature=temperature, where=_arr(where), return_grad=need_grad,
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
    bias, chunk_size, strategy, weight, ignore_index, label_smoothing, reduction, z_loss,
    temperature, where
        As :func:`softmaxkit.linear_cross_entropy`.

    Returns
    -------
    torch.Tensor

    Notes
    -----
    With ``reduction="none"`` only the forward is available (the per-sample
    upstream gradient would need another pass over the vocabulary): backward
    raises ``NotImplementedError``.  Memory saved for backward: the gradients,
    ``hidden``- and ``weight``-sized.  CPU only.

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
    if not _is_cpu(hidden):
        raise NotImplementedError("softmaxkit.torch.linear_cross_entropy runs on CPU only")
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
    if not _is_cpu(x):
        raise NotImplementedError("softmaxkit.torch.topk_softmax runs on CPU only")
    if x.ndim == 0:
        raise ValueError("x must have at least one dimension for topk_softmax")
    ax = int(axis) % x.ndim
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or not 0 <= k <= x.shape[ax]:
        raise ValueError(f"k must be an int with 0 <= k <= {x.shape[ax]}; got {k!r}")
    return _topk_op(x, int(k), ax, float(temperature), _as_mask(where, x))


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
    if isinstance(num_negatives, bool) or not isinstance(num_negatives, numbers.Integral):
        raise TypeError(f"num_negatives must be an int; got {num_negatives!r}")
    if num_negatives < 0 or scores.ndim < 1 or scores.shape[-1] % (num_negatives + 1):
        raise ValueError(
            f"scores' last axis (shape {tuple(scores.shape)}) must hold groups of "
            f"num_negatives + 1 = {num_negatives + 1} scores"
        )
    loss, _ = _mm_op(scores, int(num_negatives), float(margin), reduction, _need_grad(scores))
    return loss


# --------------------------------------------------------------------------- modules
class Softmax(torch.nn.Module):
    """``torch.nn.Softmax(dim)`` on the ``softmaxkit::softmax`` operator.

    Examples
    --------
    >>> import torch
    >>> import softmaxkit.torch as skt
    >>> skt.Softmax(dim=-1)(torch.zeros(2, 2, dtype=torch.float64))
    tensor([[0.5000, 0.5000],
            [0.5000, 0.5000]], dtype=torch.float64)
    """

    def __init__(self, dim=None, *, temperature=1.0):
        super().__init__()
        self.dim = -1 if dim is None else dim
        self.temperature = temperature

    def forward(self, x, where=None):
        return softmax(x, self.dim, temperature=self.temperature, where=where)

    def extra_repr(self):
        return f"dim={self.dim}"


class LogSoftmax(Softmax):
    """``torch.nn.LogSoftmax(dim)`` on the ``softmaxkit::log_softmax`` operator."""

    def forward(self, x, where=None):
        return log_softmax(x, self.dim, temperature=self.temperature, where=where)


class CrossEntropyLoss(torch.nn.Module):
    """``torch.nn.CrossEntropyLoss`` on the ``softmaxkit::cross_entropy`` operator.

    Torch's signature and defaults (``ignore_index=-100``, classes along dimension
    1 for inputs of two or more dimensions), plus ``z_loss`` and ``temperature``.

    Examples
    --------
    >>> import torch
    >>> import softmaxkit.torch as skt
    >>> loss = skt.CrossEntropyLoss()(torch.zeros(2, 4), torch.tensor([1, 3]))
    >>> round(float(loss), 6)
    1.386294
    """

    def __init__(
        self,
        weight=None,
        size_average=None,
        ignore_index=-100,
        reduce=None,
        reduction="mean",
        label_smoothing=0.0,
        *,
        z_loss=0.0,
        temperature=1.0,
    ):
        super().__init__()
        if size_average is not None or reduce is not None:
            raise ValueError("size_average and reduce are deprecated; use reduction")
        self.register_buffer("weight", weight)
        self.ignore_index = ignore_index
        self.reduction = reduction
        self.label_smoothing = label_smoothing
        self.z_loss = z_loss
        self.temperature = temperature

    def forward(self, input, target):
        return cross_entropy(
            input, target, axis=1 if input.ndim >= 2 else 0, weight=self.weight,
            ignore_index=self.ignore_index, label_smoothing=self.label_smoothing,
            reduction=self.reduction, z_loss=self.z_loss, temperature=self.temperature,
        )  # fmt: skip


class LinearCrossEntropyLoss(torch.nn.Module):
    """Cross-entropy of ``hidden @ weight.T + bias`` without the logits.

    ``forward(hidden, linear_weight, target, bias=None)`` with the options of
    :class:`CrossEntropyLoss` (``ignore_index=-100``) and ``chunk_size``,
    ``strategy``; the class axis is last.

    Examples
    --------
    >>> import torch
    >>> import softmaxkit.torch as skt
    >>> h, W = torch.zeros(2, 3), torch.zeros(4, 3)
    >>> loss = skt.LinearCrossEntropyLoss()(h, W, torch.tensor([0, 1]))
    >>> round(float(loss), 6)
    1.386294
    """

    def __init__(self, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0,
                 *, z_loss=0.0, temperature=1.0, chunk_size=None, strategy="auto"):  # fmt: skip
        super().__init__()
        self.register_buffer("weight", weight)
        self.ignore_index = ignore_index
        self.reduction = reduction
        self.label_smoothing = label_smoothing
        self.z_loss = z_loss
        self.temperature = temperature
        self.chunk_size = chunk_size
        self.strategy = strategy

    def forward(self, hidden, linear_weight, target, bias=None):
        return linear_cross_entropy(
            hidden, linear_weight, target, bias=bias, chunk_size=self.chunk_size,
            strategy=self.strategy, weight=self.weight, ignore_index=self.ignore_index,
            label_smoothing=self.label_smoothing, reduction=self.reduction, z_loss=self.z_loss,
            temperature=self.temperature,
        )  # fmt: skip


# ------------------------------------------------- routing from the public functions
def _torch_dtype(dtype):
    """``dtype`` (None, a torch dtype or a NumPy-style name) as a torch dtype, or False."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    try:
        name = np.dtype(dtype).name
    except TypeError:
        return False
    return {"float16": torch.float16, "float32": torch.float32, "float64": torch.float64}.get(
        name, False
    )


def _tensor(a, like):
    if a is None or isinstance(a, torch.Tensor):
        return a
    return torch.as_tensor(np.asarray(a), device=like.device)


def _route(name, args):
    """Run public function ``name`` (its arguments ``args``) on torch tensors.

    Called by :func:`softmaxkit.softmax` and the other public functions when their
    first argument is a torch tensor.  Returns ``NotImplemented`` where the
    operators do not cover the call (``out=``, a non-float dtype), and the caller
    then takes the generic Array API path.
    """
    a = dict(args)
    if name in ("softmax", "log_softmax", "logsumexp"):
        x = a.pop("x")
        dt = _torch_dtype(a.pop("dtype"))
        if a.pop("out") is not None or dt is False or x.dtype not in _FLOATS:
            return NotImplemented
        if name == "logsumexp":
            a["b"] = _tensor(a["b"], x)
        a["where"] = _tensor(a["where"], x)
        return globals()[name](x, a.pop("axis"), dtype=dt, **a)
    if name in ("softmax_vjp", "log_softmax_vjp"):
        y, g = a["y"], _tensor(a["g"], a["y"])
        if a["out"] is not None:
            return NotImplemented
        _check_float("y", y)
        op = _log_softmax_bw_op if name == "log_softmax_vjp" else _softmax_bw_op
        where = _as_mask(_tensor(a["where"], y), y)
        return op(y, g.to(y.dtype).expand(y.shape), _dims(a["axis"], y.ndim),
                  float(a["temperature"]), where)  # fmt: skip
    if name == "logsumexp_vjp":
        x = a["x"]
        _check_float("x", x)
        xr = x.detach().requires_grad_()
        with torch.enable_grad():
            lse = logsumexp(xr, a["axis"], b=_tensor(a["b"], x), keepdims=a["keepdims"],
                            temperature=a["temperature"], where=_tensor(a["where"], x))  # fmt: skip
            g = _tensor(a["g"], x).to(lse.dtype)
            (gx,) = torch.autograd.grad(lse, xr, g.expand(lse.shape))
        return gx
    if a.get("out") is not None:
        raise TypeError(f"{name}: out= is not supported for torch tensors")
    a.pop("out", None)
    rg = a.pop("return_grad", False)
    if name == "cross_entropy":
        logits = a.pop("logits")
        target = _tensor(a.pop("target"), logits)
        if not rg:
            return cross_entropy(logits, target, weight=_tensor(a.pop("weight"), logits), **a)
        with torch.enable_grad():
            lg = logits.detach().requires_grad_()
            loss = cross_entropy(lg, target, weight=_tensor(a.pop("weight"), logits), **a)
            (gr,) = torch.autograd.grad(loss, lg, torch.ones_like(loss))
        return loss.detach(), gr
    if name == "linear_cross_entropy":
        h, W = a.pop("hidden"), a.pop("linear_weight")
        t = _tensor(a.pop("target"), h)
        b = _tensor(a.pop("bias"), h)
        a["weight"] = _tensor(a["weight"], h)
        if not rg:
            return linear_cross_entropy(h, W, t, bias=b, **a)
        with torch.enable_grad():
            ins = [v.detach().requires_grad_() for v in (h, W)]
            bb = None if b is None else b.detach().requires_grad_()
            loss = linear_cross_entropy(*ins, t, bias=bb, **a)
            gs = torch.autograd.grad(loss, ins + ([bb] if bb is not None else []))
        return loss.detach(), (gs[0], gs[1], gs[2] if bb is not None else None)
    if name == "topk_softmax":
        x = a.pop("x")
        return topk_softmax(x, a.pop("k"), a.pop("axis"), where=_tensor(a.pop("where"), x), **a)
    if name in ("multiclass_hinge_loss", "max_margin_loss"):
        first = "logits" if name == "multiclass_hinge_loss" else "scores"
        x = a.pop(first)
        f = globals()[name]
        pos = (x, _tensor(a.pop("target"), x)) if first == "logits" else (x, a.pop("num_negatives"))
        if first == "logits":
            a["weight"] = _tensor(a["weight"], x)
        if not rg:
            return f(*pos, **a)
        with torch.enable_grad():
            xr = x.detach().requires_grad_()
            loss = f(xr, *pos[1:], **a)
            (gr,) = torch.autograd.grad(loss, xr, torch.ones_like(loss))
        return loss.detach(), gr
    return NotImplemented
