"""softmaxkit inside JAX: ``jax.custom_vjp`` functions on the CPU kernels.

:func:`softmax`, :func:`log_softmax`, :func:`logsumexp`, :func:`cross_entropy` and
:func:`linear_cross_entropy` take the NumPy functions' arguments and defaults and
work under ``jax.jit``, ``jax.grad`` and ``jax.vmap``:

* the kernels are reached through :func:`jax.pure_callback` (host callbacks: the
  arrays are handed to NumPy on the CPU; on an accelerator they are copied to the
  host and back).  ``vmap_method``: ``"broadcast_all"`` for the dense ops (the
  reduced axes are passed as negative indices, so a leading batch axis is just
  more rows) and ``"sequential"`` for the losses (class weights and the
  projection matrix must not gain a batch axis).
* gradients are ``jax.custom_vjp`` rules using the fused backward: softmax and
  log_softmax from the saved output (:func:`softmaxkit.softmax_vjp`), logsumexp as
  ``g / T * softmax``, cross-entropy and linear cross-entropy from the gradients
  their kernels compute in the forward pass (the ``[N, V]`` logits of the linear
  one are never formed).  Only first derivatives are available (the backward is a
  host callback too): ``jax.hessian`` and ``grad(grad(...))`` raise
  ``NotImplementedError`` naming the function.

bfloat16 input is computed in float32 and rounded back.  ``jax.ffi`` with
Numba-compiled entry points is not used (yet).  Importing this module imports
jax; ``import softmaxkit`` never does.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from . import losses as _losses
from .grad import log_softmax_vjp as _np_log_softmax_vjp
from .grad import softmax_vjp as _np_softmax_vjp
from .softmax import log_softmax as _np_log_softmax
from .softmax import logsumexp as _np_logsumexp
from .softmax import softmax as _np_softmax

__all__ = ["cross_entropy", "linear_cross_entropy", "log_softmax", "logsumexp", "softmax"]

_DENSE_VMAP = "broadcast_all"
_LOSS_VMAP = "sequential"


def _neg_axes(axis, ndim: int) -> tuple[int, ...]:
    """``axis`` as sorted negative indices, so leading (vmap) axes do not move them."""
    if axis is None:
        axes = tuple(range(ndim))
    elif isinstance(axis, int | np.integer) and not isinstance(axis, bool):
        axes = (int(axis),)
    else:
        axes = tuple(int(a) for a in axis)
    out = []
    for a in axes:
        if not -ndim <= a < max(ndim, 1):
            raise np.exceptions.AxisError(a, ndim)
        out.append(a % ndim - ndim if ndim else a)
    if len(set(out)) != len(out):
        raise ValueError(f"repeated axis in {axis!r}")
    return tuple(sorted(out))


def _compute_dtype(dt) -> np.dtype:
    dt = jnp.dtype(dt)
    if dt == jnp.bfloat16:
        return np.dtype(np.float32)
    if not jnp.issubdtype(dt, jnp.floating):
        raise TypeError(f"x must be a floating array (float16/bfloat16/32/64); got {dt}")
    return np.dtype(dt)


def _check_temperature(t) -> float:
    t = float(t)
    if not (np.isfinite(t) and t > 0):
        raise ValueError(f"temperature must be finite and > 0; got {t!r}")
    return t


def _mask(where, shape):
    if where is None:
        return jnp.ones((), dtype=jnp.bool_), False
    w = jnp.asarray(where)
    if w.dtype != jnp.bool_:
        raise TypeError(f"where must be a boolean array; got {w.dtype}")
    return jnp.broadcast_to(w, shape), True


def _callback(name, host, spec, *args, vmap_method):
    """``jax.pure_callback`` whose derivative raises a clear ``NotImplementedError``.

    First derivatives come from the ``custom_vjp`` rules; a second one (``jax.hessian``,
    ``grad`` of ``grad``) would differentiate the callback itself, where JAX's own
    error ("Pure callbacks do not support JVP") does not say which function or why.
    """

    @jax.custom_jvp
    def cb(*a):
        return jax.pure_callback(host, spec, *a, vmap_method=vmap_method)

    @cb.defjvp
    def _(primals, tangents):
        raise NotImplementedError(
            f"softmaxkit.jax.{name}: second and higher derivatives (jax.hessian, grad of "
            "grad, jvp of the gradient) are not supported: its forward and gradient are "
            "host-callback kernels; use jax.nn / optax for higher-order derivatives"
        )

    return cb(*args)


# ------------------------------------------------------------------ dense ops
@functools.lru_cache(maxsize=256)
def _dense(axes: tuple[int, ...], temperature: float, log: bool, masked: bool):
    name = "log_softmax" if log else "softmax"
    fwd_np = _np_log_softmax if log else _np_softmax
    vjp_np = _np_log_softmax_vjp if log else _np_softmax_vjp

    def host_fwd(x, w):
        x = np.asarray(x)
        return fwd_np(
            x, axis=axes, temperature=temperature, where=np.asarray(w) if masked else None
        )

    def host_vjp(y, g, w):
        return vjp_np(np.asarray(y), np.asarray(g), axis=axes, temperature=temperature,
                      where=np.asarray(w) if masked else None)  # fmt: skip

    def call(x, w):
        spec = jax.ShapeDtypeStruct(x.shape, x.dtype)
        return _callback(name, host_fwd, spec, x, w, vmap_method=_DENSE_VMAP)

    @jax.custom_vjp
    def f(x, w):
        return call(x, w)

    def f_fwd(x, w):
        y = call(x, w)
        return y, (y, w)

    def f_bwd(res, g):
        y, w = res
        spec = jax.ShapeDtypeStruct(y.shape, y.dtype)
        gx = _callback(name, host_vjp, spec, y, g.astype(y.dtype), w, vmap_method=_DENSE_VMAP)
        return gx, None

    f.defvjp(f_fwd, f_bwd)
    return f


def _dense_call(x, axis, temperature, where, log):
    x = jnp.asarray(x)
    cdt = _compute_dtype(x.dtype)
    axes = _neg_axes(axis, x.ndim)
    w, masked = _mask(where, x.shape)
    y = _dense(axes, _check_temperature(temperature), log, masked)(x.astype(cdt), w)
    return y.astype(x.dtype)


def softmax(x, /, axis=-1, *, temperature=1.0, where=None):
    r"""Softmax of a JAX array on the CPU kernels, with a fused ``custom_vjp``.

    As :func:`softmaxkit.softmax` (same contract: an empty, all ``-inf`` or fully
    masked row gives zeros and a zero gradient, where ``jax.nn.softmax`` gives NaN).

    Parameters
    ----------
    x : jax.Array
        float16, bfloat16, float32 or float64.
    axis : int, tuple of ints or None, default -1
    temperature : float > 0, default 1
    where : bool array, optional

    Returns
    -------
    jax.Array

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> import softmaxkit.jax as skj
    >>> skj.softmax(jnp.array([1.0, 1.0, -jnp.inf]))
    Array([0.5, 0.5, 0. ], dtype=float32)
    """
    return _dense_call(x, axis, temperature, where, False)


def log_softmax(x, /, axis=-1, *, temperature=1.0, where=None):
    r"""Log-softmax of a JAX array (see :func:`softmax`); masked entries get ``-inf``.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> import softmaxkit.jax as skj
    >>> skj.log_softmax(jnp.array([0.0, 0.0]))
    Array([-0.6931472, -0.6931472], dtype=float32)
    """
    return _dense_call(x, axis, temperature, where, True)


@functools.lru_cache(maxsize=256)
def _lse(axes: tuple[int, ...], temperature: float, keepdims: bool, masked: bool):
    def host(x, w):
        return np.asarray(
            _np_logsumexp(
                np.asarray(x),
                axis=axes,
                keepdims=keepdims,
                temperature=temperature,
                where=np.asarray(w) if masked else None,
            )
        )

    def call(x, w):
        nd = x.ndim
        red = {a % nd for a in axes}
        shape = tuple(
            1 if i in red else s for i, s in enumerate(x.shape) if keepdims or i not in red
        )
        spec = jax.ShapeDtypeStruct(shape, x.dtype)
        return _callback("logsumexp", host, spec, x, w, vmap_method=_DENSE_VMAP)

    soft = _dense(axes, temperature, False, masked)

    @jax.custom_vjp
    def f(x, w):
        return call(x, w)

    def f_fwd(x, w):
        return call(x, w), (x, w)

    def f_bwd(res, g):
        x, w = res
        if not keepdims:
            g = jnp.expand_dims(g, tuple(a % x.ndim for a in axes))
        return soft(x, w) * (g / temperature).astype(x.dtype), None

    f.defvjp(f_fwd, f_bwd)
    return f


def logsumexp(x, /, axis=-1, *, keepdims=False, temperature=1.0, where=None):
    r"""``log(sum(exp(x / T)))`` of a JAX array on the CPU kernels.

    As :func:`softmaxkit.logsumexp` without ``b`` / ``return_sign``; an empty, all
    ``-inf`` or fully masked row gives ``-inf`` with gradient 0 (``jax.nn``: NaN).
    Backward: ``g / T * softmax(x / T)``.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> import softmaxkit.jax as skj
    >>> float(skj.logsumexp(jnp.array([1000.0, 1000.0])))
    1000.6931762695312
    """
    x = jnp.asarray(x)
    cdt = _compute_dtype(x.dtype)
    axes = _neg_axes(axis, x.ndim)
    w, masked = _mask(where, x.shape)
    f = _lse(axes, _check_temperature(temperature), bool(keepdims), masked)
    return f(x.astype(cdt), w).astype(x.dtype)


# ------------------------------------------------------------------ losses
def _opt(a, dtype=None):
    return None if a is None else np.asarray(a, dtype=dtype)


@functools.lru_cache(maxsize=256)
def _ce(axis: int, options: tuple, masked: bool, weighted: bool, reduction: str):
    opts = dict(options)

    def host(x, t, w, cw, need_grad):
        r = _losses.cross_entropy(
            np.asarray(x), np.asarray(t), axis=axis, weight=_opt(cw) if weighted else None,
            where=np.asarray(w) if masked else None, reduction=reduction,
            return_grad=need_grad, **opts,
        )  # fmt: skip
        if need_grad:
            loss, g = r
            return np.asarray(loss, dtype=np.asarray(x).dtype), g
        return np.asarray(r, dtype=np.asarray(x).dtype)

    def loss_spec(x):
        if reduction != "none":
            return jax.ShapeDtypeStruct((), x.dtype)
        ax = axis % x.ndim
        return jax.ShapeDtypeStruct(x.shape[:ax] + x.shape[ax + 1 :], x.dtype)

    @jax.custom_vjp
    def f(x, t, w, cw):
        return _callback(
            "cross_entropy", functools.partial(host, need_grad=False), loss_spec(x), x, t, w, cw,
            vmap_method=_LOSS_VMAP,
        )  # fmt: skip

    def f_fwd(x, t, w, cw):
        specs = (loss_spec(x), jax.ShapeDtypeStruct(x.shape, x.dtype))
        loss, grad = _callback(
            "cross_entropy", functools.partial(host, need_grad=True), specs, x, t, w, cw,
            vmap_method=_LOSS_VMAP,
        )  # fmt: skip
        return loss, grad

    def f_bwd(grad, g):
        if reduction == "none":
            g = jnp.expand_dims(g, axis % grad.ndim)
        return grad * g.astype(grad.dtype), None, None, None

    f.defvjp(f_fwd, f_bwd)
    return f


def _check_reduction(reduction):
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be one of ('mean', 'sum', 'none'); got {reduction!r}")


def cross_entropy(
    logits,
    target,
    /,
    *,
    axis=-1,
    weight=None,
    ignore_index=None,
    label_smoothing=0.0,
    reduction="mean",
    z_loss=0.0,
    temperature=1.0,
    where=None,
):
    r"""Softmax cross-entropy of JAX arrays (:func:`softmaxkit.cross_entropy`).

    Under ``jax.grad`` the forward pass runs the fused kernel that also writes the
    gradient with respect to the logits (one pass), saved as the residual; the
    backward multiplies it by the upstream gradient.  ``target``: integer class
    indices, or probabilities of the logits' shape (no gradient flows to it).

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> import softmaxkit.jax as skj
    >>> logits = jnp.array([[2.0, 1.0, 0.1], [0.5, 2.5, 0.2]])
    >>> round(float(skj.cross_entropy(logits, jnp.array([0, 1]))), 6)
    0.314291
    """
    x = jnp.asarray(logits)
    cdt = _compute_dtype(x.dtype)
    _check_reduction(reduction)
    if x.ndim == 0:
        raise ValueError("logits must have at least one dimension")
    ax = _neg_axes(axis, x.ndim)[0]
    t = jnp.asarray(target)
    if jnp.issubdtype(t.dtype, jnp.floating):
        t = t.astype(cdt)
    w, masked = _mask(where, x.shape)
    cw = jnp.zeros((0,), cdt) if weight is None else jnp.asarray(weight, dtype=cdt)
    options = (
        ("ignore_index", None if ignore_index is None else int(ignore_index)),
        ("label_smoothing", float(label_smoothing)),
        ("z_loss", float(z_loss)),
        ("temperature", _check_temperature(temperature)),
    )
    f = _ce(ax, options, masked, weight is not None, reduction)
    return f(x.astype(cdt), jax.lax.stop_gradient(t), w, cw).astype(x.dtype)


@functools.lru_cache(maxsize=256)
def _lce(options: tuple, has_bias: bool, weighted: bool, reduction: str):
    opts = dict(options)

    def host(h, W, b, t, cw, need_grad):
        h = np.asarray(h)
        r = _losses.linear_cross_entropy(
            h, np.asarray(W), np.asarray(t), bias=_opt(b) if has_bias else None,
            weight=_opt(cw) if weighted else None, reduction=reduction,
            return_grad=need_grad, **opts,
        )  # fmt: skip
        if not need_grad:
            return np.asarray(r, dtype=h.dtype)
        loss, (dh, dW, db) = r
        db = db if db is not None else np.zeros(np.shape(b), h.dtype)
        return np.asarray(loss, dtype=h.dtype), dh, dW, db

    def loss_spec(h):
        shape = h.shape[:-1] if reduction == "none" else ()
        return jax.ShapeDtypeStruct(shape, h.dtype)

    @jax.custom_vjp
    def f(h, W, b, t, cw):
        return _callback(
            "linear_cross_entropy", functools.partial(host, need_grad=False), loss_spec(h),
            h, W, b, t, cw,
            vmap_method=_LOSS_VMAP,
        )  # fmt: skip

    def f_fwd(h, W, b, t, cw):
        if reduction == "none":
            raise NotImplementedError(
                "softmaxkit.jax.linear_cross_entropy: gradients need reduction 'mean' or 'sum'"
            )
        specs = (
            loss_spec(h),
            jax.ShapeDtypeStruct(h.shape, h.dtype),
            jax.ShapeDtypeStruct(W.shape, h.dtype),
            jax.ShapeDtypeStruct(b.shape, h.dtype),
        )
        loss, dh, dW, db = _callback(
            "linear_cross_entropy", functools.partial(host, need_grad=True), specs,
            h, W, b, t, cw,
            vmap_method=_LOSS_VMAP,
        )  # fmt: skip
        return loss, (dh, dW, db)

    def f_bwd(res, g):
        dh, dW, db = res
        return dh * g, dW * g, db * g, None, None

    f.defvjp(f_fwd, f_bwd)
    return f


def linear_cross_entropy(
    hidden,
    linear_weight,
    target,
    /,
    *,
    bias=None,
    chunk_size=None,
    strategy="auto",
    weight=None,
    ignore_index=None,
    label_smoothing=0.0,
    reduction="mean",
    z_loss=0.0,
    temperature=1.0,
):
    r"""Cross-entropy of ``hidden @ linear_weight.T + bias`` without forming the logits.

    As :func:`softmaxkit.linear_cross_entropy` (class axis last, index targets);
    ``jax.grad`` gives ``d_hidden``, ``d_weight`` and ``d_bias`` from the chunked
    kernel's forward pass (its memory: one 32 MiB logits block, never ``[N, V]``).
    JAX itself has no linear cross-entropy.  ``where`` is not supported here.

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> import softmaxkit.jax as skj
    >>> h = jnp.ones((2, 3))
    >>> W = jnp.zeros((4, 3))
    >>> round(float(skj.linear_cross_entropy(h, W, jnp.array([0, 3]))), 6)
    1.386294
    """
    h = jnp.asarray(hidden)
    W = jnp.asarray(linear_weight)
    cdt = _compute_dtype(jnp.result_type(h.dtype, W.dtype))
    _check_reduction(reduction)
    if h.ndim < 1 or W.ndim != 2 or h.shape[-1] != W.shape[1]:
        raise ValueError(
            f"hidden must have shape (..., d) and linear_weight (V, d); got {h.shape} and {W.shape}"
        )
    t = jnp.asarray(target)
    if not jnp.issubdtype(t.dtype, jnp.integer):
        raise TypeError(f"target must be integer class indices; got {t.dtype}")
    b = jnp.zeros((0,), cdt) if bias is None else jnp.asarray(bias, dtype=cdt)
    cw = jnp.zeros((0,), cdt) if weight is None else jnp.asarray(weight, dtype=cdt)
    options = (
        ("chunk_size", chunk_size),
        ("strategy", strategy),
        ("ignore_index", None if ignore_index is None else int(ignore_index)),
        ("label_smoothing", float(label_smoothing)),
        ("z_loss", float(z_loss)),
        ("temperature", _check_temperature(temperature)),
    )
    f = _lce(options, bias is not None, weight is not None, reduction)
    loss = f(h.astype(cdt), W.astype(cdt), b, t, cw)
    return loss.astype(jnp.result_type(h.dtype, W.dtype))
