"""Segment and scan operators: ``softmaxkit::segment_softmax`` (and log / logsumexp),
``logcumsumexp`` and ``logmatmulexp``, each with its backward as an operator.

The forward runs the NumPy function on the tensor's storage; the backward is a
second operator that runs the matching VJP (:func:`softmaxkit.segment_softmax_vjp`,
:func:`softmaxkit.logcumsumexp_vjp`, :func:`softmaxkit.logmatmulexp_vjp`, ...).
The backward operators have no backward of their own: a second derivative raises
torch's "autograd not registered" error rather than returning a silent zero.
Segment ids and offsets are integer tensors (or array-likes) and get no gradient.
"""

import inspect
import numbers

import numpy as np
import torch

from .. import scan as _scan
from .. import segments as _segments
from ._common import _arr, _as_mask, _aux_outputs, _check_float, _check_kernel_device

_SEG = ("softmax", "log_softmax", "logsumexp")


def _np(t):
    return None if t is None else _arr(t)


def _ids_np(ids):
    return None if ids is None else ids.numpy()


def _seg_kw(ids, offsets, num_segments, axis, temperature):
    return dict(segment_ids=_ids_np(ids), offsets=_ids_np(offsets),
                num_segments=None if num_segments < 0 else num_segments, axis=axis,
                temperature=temperature)  # fmt: skip


def _out(a, dtype):
    return torch.from_numpy(np.ascontiguousarray(a)).to(dtype)


# ------------------------------------------------------------------- segments
@torch.library.custom_op("softmaxkit::segment_op", mutates_args=())
def _seg_op(
    x: torch.Tensor,
    ids: torch.Tensor | None,
    offsets: torch.Tensor | None,
    num_segments: int,
    axis: int,
    temperature: float,
    where: torch.Tensor | None,
    kind: str,
) -> torch.Tensor:
    f = getattr(_segments, "segment_" + kind)
    kw = _seg_kw(ids, offsets, num_segments, axis, temperature)
    return _out(f(_arr(x), where=_np(where), **kw), x.dtype)


@_seg_op.register_fake
def _(x, ids, offsets, num_segments, axis, temperature, where, kind):
    if kind != "logsumexp":
        return x.new_empty(x.shape)
    if offsets is not None:
        n = offsets.shape[0] - 1
    elif num_segments >= 0:
        n = num_segments
    else:  # known only from the ids' values
        n = torch.library.get_ctx().new_dynamic_size()
    shape = list(x.shape)
    shape[axis] = n
    return x.new_empty(shape)


@torch.library.custom_op("softmaxkit::segment_op_backward", mutates_args=())
def _seg_bw_op(
    saved: torch.Tensor,
    g: torch.Tensor,
    ids: torch.Tensor | None,
    offsets: torch.Tensor | None,
    num_segments: int,
    axis: int,
    temperature: float,
    where: torch.Tensor | None,
    kind: str,
) -> torch.Tensor:
    kw = _seg_kw(ids, offsets, num_segments, axis, temperature)
    if kind == "logsumexp":  # saved is x
        r = _segments.segment_logsumexp_vjp(_arr(saved), _arr(g), where=_np(where), **kw)
    else:  # saved is the output y (masked entries are 0 / -inf there: gradient 0)
        r = getattr(_segments, f"segment_{kind}_vjp")(_arr(saved), _arr(g), **kw)
    return _out(r, saved.dtype)


@_seg_bw_op.register_fake
def _(saved, g, ids, offsets, num_segments, axis, temperature, where, kind):
    return saved.new_empty(saved.shape)


def _seg_setup(ctx, inputs, output):
    x, ids, offsets, num_segments, axis, temperature, where, kind = inputs
    ctx.args = (num_segments, axis, temperature, kind)
    ctx.save_for_backward(x if kind == "logsumexp" else output, ids, offsets, where)


def _seg_backward(ctx, g):
    saved, ids, offsets, where = ctx.saved_tensors
    num_segments, axis, temperature, kind = ctx.args
    dx = _seg_bw_op(saved, g.contiguous(), ids, offsets, num_segments, axis, temperature,
                    where, kind)  # fmt: skip
    return (dx,) + (None,) * 7


_seg_op.register_autograd(_seg_backward, setup_context=_seg_setup)


def _int_tensor(name, v, like):
    if v is None:
        return None
    t = v if isinstance(v, torch.Tensor) else torch.as_tensor(np.asarray(v))
    if t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool:
        raise TypeError(f"{name} must have an integer dtype; got {t.dtype}")
    if t.device != like.device:
        raise ValueError(f"{name} must be on {like.device} like x; got {t.device}")
    return t.detach().to(torch.int64).contiguous()


def segment(kind, x, segment_ids, offsets, num_segments, axis, temperature, where):
    """Public segment function ``segment_<kind>`` on a tensor ``x``."""
    _check_float("x", x)
    _check_kernel_device(f"segment_{kind}", x=x)
    if isinstance(axis, bool) or not isinstance(axis, numbers.Integral):
        raise TypeError(f"axis must be an int; got {axis!r}")
    if x.ndim == 0:
        raise ValueError("x must have at least one dimension; got a 0-d tensor")
    if not -x.ndim <= axis < x.ndim:
        raise np.exceptions.AxisError(int(axis), x.ndim)
    if num_segments is not None and (
        isinstance(num_segments, bool) or not isinstance(num_segments, numbers.Integral)
    ):
        raise TypeError(f"num_segments must be an int; got {num_segments!r}")
    mask = _as_mask(where, x)
    return _seg_op(
        x, _int_tensor("segment_ids", segment_ids, x), _int_tensor("offsets", offsets, x),
        -1 if num_segments is None else int(num_segments), int(axis) % x.ndim,
        float(temperature), None if mask is None else mask.contiguous(), kind,
    )  # fmt: skip


# ---------------------------------------------------------------- logcumsumexp
@torch.library.custom_op("softmaxkit::logcumsumexp", mutates_args=())
def _lcse_op(x: torch.Tensor, axis: int, reverse: bool, where: torch.Tensor | None) -> torch.Tensor:
    return _out(_scan.logcumsumexp(_arr(x), axis, reverse=reverse, where=_np(where)), x.dtype)


@_lcse_op.register_fake
def _(x, axis, reverse, where):
    return x.new_empty(x.shape)


@torch.library.custom_op("softmaxkit::logcumsumexp_backward", mutates_args=())
def _lcse_bw_op(
    x: torch.Tensor, g: torch.Tensor, axis: int, reverse: bool, where: torch.Tensor | None
) -> torch.Tensor:
    r = _scan.logcumsumexp_vjp(_arr(x), _arr(g), axis, reverse=reverse, where=_np(where))
    return _out(r, x.dtype)


@_lcse_bw_op.register_fake
def _(x, g, axis, reverse, where):
    return x.new_empty(x.shape)


def _lcse_setup(ctx, inputs, output):
    x, axis, reverse, where = inputs
    ctx.args = (axis, reverse)
    ctx.save_for_backward(x, where)


def _lcse_backward(ctx, g):
    x, where = ctx.saved_tensors
    return _lcse_bw_op(x, g.contiguous(), *ctx.args, where), None, None, None


_lcse_op.register_autograd(_lcse_backward, setup_context=_lcse_setup)


def logcumsumexp(x, axis=-1, *, reverse=False, where=None):
    """:func:`softmaxkit.logcumsumexp` of a tensor (``softmaxkit::logcumsumexp``)."""
    _check_float("x", x)
    _check_kernel_device("logcumsumexp", x=x)
    if isinstance(axis, bool) or not isinstance(axis, numbers.Integral):
        raise TypeError(f"axis must be an int; got {axis!r}")
    nd = max(x.ndim, 1)
    if not -nd <= axis < nd:
        raise np.exceptions.AxisError(int(axis), nd)
    mask = _as_mask(where, x)
    return _lcse_op(x, int(axis) % nd, bool(reverse), None if mask is None else mask.contiguous())


# ---------------------------------------------------------------- logmatmulexp
@torch.library.custom_op("softmaxkit::logmatmulexp", mutates_args=())
def _lme_op(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    dt = torch.promote_types(A.dtype, B.dtype)
    return _out(_scan.logmatmulexp(_arr(A), _arr(B)), dt)


@_lme_op.register_fake
def _(A, B):
    batch = torch.broadcast_shapes(A.shape[:-2], B.shape[:-2])
    return A.new_empty(
        (*batch, A.shape[-2], B.shape[-1]), dtype=torch.promote_types(A.dtype, B.dtype)
    )


@torch.library.custom_op("softmaxkit::logmatmulexp_backward", mutates_args=())
def _lme_bw_op(
    A: torch.Tensor, B: torch.Tensor, G: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    dA, dB = _scan.logmatmulexp_vjp(_arr(A), _arr(B), _arr(G))
    return _out(dA, A.dtype), _out(dB, B.dtype)


@_lme_bw_op.register_fake
def _(A, B, G):
    return A.new_empty(A.shape), B.new_empty(B.shape)


def _lme_setup(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


def _lme_backward(ctx, g):
    A, B = ctx.saved_tensors
    return _lme_bw_op(A, B, g.contiguous())


_lme_op.register_autograd(_lme_backward, setup_context=_lme_setup)


@torch.library.custom_op("softmaxkit::logmatmulexp_signed", mutates_args=())
def _lmes_op(
    A: torch.Tensor, B: torch.Tensor, a_sign: torch.Tensor | None, b_sign: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    dt = torch.promote_types(A.dtype, B.dtype)
    c, s = _scan.logmatmulexp(
        _arr(A), _arr(B), a_sign=_np(a_sign), b_sign=_np(b_sign), return_sign=True
    )
    return _out(c, dt), _out(s, dt)


@_lmes_op.register_fake
def _(A, B, a_sign, b_sign):
    batch = torch.broadcast_shapes(A.shape[:-2], B.shape[:-2])
    shape = (*batch, A.shape[-2], B.shape[-1])
    dt = torch.promote_types(A.dtype, B.dtype)
    return A.new_empty(shape, dtype=dt), A.new_empty(shape, dtype=dt)


@torch.library.custom_op("softmaxkit::logmatmulexp_signed_backward", mutates_args=())
def _lmes_bw_op(
    A: torch.Tensor,
    B: torch.Tensor,
    a_sign: torch.Tensor | None,
    b_sign: torch.Tensor | None,
    G: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    dA, dB = _scan.logmatmulexp_vjp(
        _arr(A), _arr(B), _arr(G), a_sign=_np(a_sign), b_sign=_np(b_sign)
    )
    return _out(dA, A.dtype), _out(dB, B.dtype)


@_lmes_bw_op.register_fake
def _(A, B, a_sign, b_sign, G):
    return A.new_empty(A.shape), B.new_empty(B.shape)


def _lmes_setup(ctx, inputs, output):
    ctx.save_for_backward(*inputs)
    _aux_outputs(ctx, (output[1],))


def _lmes_backward(ctx, g, g_sign):
    A, B, a_sign, b_sign = ctx.saved_tensors
    if g is None:
        return None, None, None, None
    return (*_lmes_bw_op(A, B, a_sign, b_sign, g.contiguous()), None, None)


_lmes_op.register_autograd(_lmes_backward, setup_context=_lmes_setup)


def _sign_tensor(name, s, like):
    if s is None:
        return None
    t = s if isinstance(s, torch.Tensor) else torch.as_tensor(np.asarray(s))
    if t.dtype.is_complex:
        raise TypeError(f"{name} must be a real or bool tensor; got {t.dtype}")
    if t.device != like.device:
        raise ValueError(f"{name} must be on {like.device} like A; got {t.device}")
    return t.detach().sign().to(torch.float64).contiguous()


def logmatmulexp(A, B, *, a_sign=None, b_sign=None, return_sign=False):
    """:func:`softmaxkit.logmatmulexp` of tensors (``softmaxkit::logmatmulexp``;
    with signs or ``return_sign``, ``softmaxkit::logmatmulexp_signed``, whose ``sign``
    output and sign inputs get no gradient)."""
    _check_float("A", A)
    _check_float("B", B)
    _check_kernel_device("logmatmulexp", A=A, B=B)
    if a_sign is None and b_sign is None and not return_sign:
        return _lme_op(A, B)
    c, s = _lmes_op(A, B, _sign_tensor("a_sign", a_sign, A), _sign_tensor("b_sign", b_sign, B))
    if return_sign:
        return c, s
    return torch.where(s < 0, torch.full_like(c, float("nan")), c)


def _segment_doc(kind):
    def f(x, /, segment_ids=None, *, offsets=None, num_segments=None, axis=0, temperature=1.0,
          where=None):  # fmt: skip
        return segment(kind, x, segment_ids, offsets, num_segments, axis, temperature, where)

    f.__name__ = f.__qualname__ = f"segment_{kind}"
    f.__doc__ = (
        f":func:`softmaxkit.segment_{kind}` of a tensor (``softmaxkit::segment_op``), "
        f"with its backward from :func:`softmaxkit.segment_{kind}_vjp`."
    )
    return f


segment_softmax = _segment_doc("softmax")
segment_log_softmax = _segment_doc("log_softmax")
segment_logsumexp = _segment_doc("logsumexp")


# ------------------------------------------- routing from the public functions
def _no_out(name, a):
    if a.pop("out", None) is not None:
        raise TypeError(f"{name}: out= is not supported for torch tensors")


def _route_segment(kind):
    def run(a):
        x = a.pop("x")
        return segment(kind, x, a["segment_ids"], a["offsets"], a["num_segments"], a["axis"],
                       a["temperature"], a["where"])  # fmt: skip

    return run


def _route_lcse(a):
    _no_out("logcumsumexp", a)
    x = a.pop("x")
    dtype = a.pop("dtype")
    y = logcumsumexp(x, a["axis"], reverse=a["reverse"], where=a["where"])
    if dtype is None:
        return y
    dt = dtype if isinstance(dtype, torch.dtype) else getattr(torch, np.dtype(dtype).name)
    return y.to(dt)


def _route_lme(a):
    _no_out("logmatmulexp", a)
    B = a["B"] if isinstance(a["B"], torch.Tensor) else torch.as_tensor(np.asarray(a["B"]))
    return logmatmulexp(
        a["A"], B, a_sign=a["a_sign"], b_sign=a["b_sign"], return_sign=a["return_sign"]
    )


def _numpy_call(name):
    """A VJP on tensors: the NumPy function on views of them, tensors back (no graph:
    these are the gradients themselves)."""

    def run(a):
        import softmaxkit

        fn = getattr(softmaxkit, name)
        params = inspect.signature(fn).parameters
        pos, kw = [], {}
        for k, v in a.items():
            v = _arr(v) if isinstance(v, torch.Tensor) else v
            if params[k].kind is inspect.Parameter.KEYWORD_ONLY:
                kw[k] = v
            else:
                pos.append(v)
        res = fn(*pos, **kw)
        if isinstance(res, tuple):
            return tuple(torch.from_numpy(np.ascontiguousarray(r)) for r in res)
        return torch.from_numpy(np.ascontiguousarray(res))

    return run


ROUTES = {
    "segment_softmax": _route_segment("softmax"),
    "segment_log_softmax": _route_segment("log_softmax"),
    "segment_logsumexp": _route_segment("logsumexp"),
    "logcumsumexp": _route_lcse,
    "logmatmulexp": _route_lme,
    **{
        n: _numpy_call(n)
        for n in (
            "segment_softmax_vjp",
            "segment_log_softmax_vjp",
            "segment_logsumexp_vjp",
            "logcumsumexp_vjp",
            "logmatmulexp_vjp",
        )
    },
}
