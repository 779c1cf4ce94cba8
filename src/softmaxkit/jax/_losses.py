"""``softmaxkit.jax.cross_entropy`` and ``linear_cross_entropy`` (see the package docstring).

Cross-entropy under ``jax.grad``: the forward pass is one host call of the fused
kernel, which writes the loss and the gradient with respect to the logits (one pass
over the logits); the gradient is the residual.  The backward is one more host call
that takes the residual's buffer as its result (``input_output_aliases``) and
multiplies it in place by the upstream gradient, or leaves it as it is when that
is 1 (``jax.grad`` of the loss itself): no pass over the ``[N, C]`` gradient at all
where an XLA multiply would read and write it once more.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from .. import losses as _losses
from ._call import (
    check_reduction,
    check_temperature,
    checked_target,
    compute_dtype,
    host_call,
    mask,
    neg_axes,
)

__all__ = ["cross_entropy", "linear_cross_entropy"]


def _like_first(x, *_):
    return jax.ShapeDtypeStruct(x.shape, x.dtype)


@functools.lru_cache(maxsize=256)
def _ce(axis: int, options: tuple, masked: bool, weighted: bool, reduction: str):
    opts = dict(options)

    def run(ins, grad_out):
        x, t, w, cw = ins
        return _losses.cross_entropy(
            x, t, axis=axis, weight=cw if weighted else None, where=w if masked else None,
            reduction=reduction, return_grad=grad_out is not None, out=grad_out, **opts,
        )  # fmt: skip

    def host_loss(ins, outs):
        outs[0][...] = run(ins, None)

    def host_loss_grad(ins, outs):
        loss, _ = run(ins, outs[1])
        outs[0][...] = loss

    def host_scale(ins, outs):
        # the saved gradient times the upstream one, in the gradient's own buffer
        gr, g = ins
        o = outs[0]
        if o.__array_interface__["data"][0] != gr.__array_interface__["data"][0]:
            np.copyto(o, gr)  # (XLA did not alias them)
        if reduction == "none":
            g = np.expand_dims(g, axis % gr.ndim)
        if not np.all(g == 1):
            np.multiply(o, g.astype(o.dtype), out=o)

    def loss_spec(x, *_):
        if reduction != "none":
            return jax.ShapeDtypeStruct((), x.dtype)
        ax = axis % x.ndim
        return jax.ShapeDtypeStruct(x.shape[:ax] + x.shape[ax + 1 :], x.dtype)

    def both_specs(x, *_):
        return loss_spec(x), jax.ShapeDtypeStruct(x.shape, x.dtype)

    def call(host, specs, *args):
        return host_call("cross_entropy", host, specs, *args, vmap="sequential")

    @jax.custom_vjp
    def f(x, t, w, cw):
        return call(host_loss, loss_spec, x, t, w, cw)

    def f_fwd(x, t, w, cw):
        loss, grad = call(host_loss_grad, both_specs, x, t, w, cw)
        return loss, grad

    def f_bwd(grad, g):
        gx = host_call(
            "cross_entropy", host_scale, _like_first, grad, g.astype(grad.dtype),
            vmap="sequential", aliases={0: 0},
        )  # fmt: skip
        return gx, None, None, None

    f.defvjp(f_fwd, f_bwd)
    return jax.jit(f)  # eager calls: one cached dispatch, not op-by-op tracing


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
    cdt = compute_dtype(x.dtype)
    check_reduction(reduction)
    if x.ndim == 0:
        raise ValueError("logits must have at least one dimension")
    ax = neg_axes(axis, x.ndim)[0]
    t = jnp.asarray(target)
    ii = None if ignore_index is None else int(ignore_index)
    if jnp.issubdtype(t.dtype, jnp.floating):
        t = checked_target(t.astype(cdt), x.shape[ax], ii, ax)
    else:
        t = checked_target(t, x.shape[ax], ii)
    w, masked = mask(where, x.shape)
    cw = jnp.zeros((0,), cdt) if weight is None else jnp.asarray(weight, dtype=cdt)
    options = (
        ("ignore_index", None if ignore_index is None else int(ignore_index)),
        ("label_smoothing", float(label_smoothing)),
        ("z_loss", float(z_loss)),
        ("temperature", check_temperature(temperature)),
    )
    f = _ce(ax, options, masked, weight is not None, reduction)
    return f(x.astype(cdt), jax.lax.stop_gradient(t), w, cw).astype(x.dtype)


@functools.lru_cache(maxsize=256)
def _lce(options: tuple, has_bias: bool, weighted: bool, reduction: str):
    opts = dict(options)

    def run(ins, need_grad):
        h, W, b, t, cw = ins
        return _losses.linear_cross_entropy(
            h, W, t, bias=b if has_bias else None, weight=cw if weighted else None,
            reduction=reduction, return_grad=need_grad, **opts,
        )  # fmt: skip

    def host_loss(ins, outs):
        outs[0][...] = run(ins, False)

    def host_loss_grad(ins, outs):
        loss, (dh, dW, db) = run(ins, True)
        outs[0][...] = loss
        outs[1][...] = dh
        outs[2][...] = dW
        outs[3][...] = 0.0 if db is None else db

    def loss_spec(h, *_):
        shape = h.shape[:-1] if reduction == "none" else ()
        return jax.ShapeDtypeStruct(shape, h.dtype)

    def all_specs(h, W, b, *_):
        return (
            loss_spec(h),
            jax.ShapeDtypeStruct(h.shape, h.dtype),
            jax.ShapeDtypeStruct(W.shape, h.dtype),
            jax.ShapeDtypeStruct(b.shape, h.dtype),
        )

    def call(host, specs, *args):
        return host_call("linear_cross_entropy", host, specs, *args, vmap="sequential")

    @jax.custom_vjp
    def f(h, W, b, t, cw):
        return call(host_loss, loss_spec, h, W, b, t, cw)

    def f_fwd(h, W, b, t, cw):
        if reduction == "none":
            raise NotImplementedError(
                "softmaxkit.jax.linear_cross_entropy: gradients need reduction 'mean' or 'sum'"
            )
        loss, dh, dW, db = call(host_loss_grad, all_specs, h, W, b, t, cw)
        return loss, (dh, dW, db)

    def f_bwd(res, g):
        dh, dW, db = res
        return dh * g, dW * g, db * g, None, None

    f.defvjp(f_fwd, f_bwd)
    return jax.jit(f)  # eager calls: one cached dispatch, not op-by-op tracing


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
    cdt = compute_dtype(jnp.result_type(h.dtype, W.dtype))
    check_reduction(reduction)
    if h.ndim < 1 or W.ndim != 2 or h.shape[-1] != W.shape[1]:
        raise ValueError(
            f"hidden must have shape (..., d) and linear_weight (V, d); got {h.shape} and {W.shape}"
        )
    t = jnp.asarray(target)
    if not jnp.issubdtype(t.dtype, jnp.integer):
        raise TypeError(f"target must be integer class indices; got {t.dtype}")
    t = checked_target(t, W.shape[0], None if ignore_index is None else int(ignore_index))
    b = jnp.zeros((0,), cdt) if bias is None else jnp.asarray(bias, dtype=cdt)
    cw = jnp.zeros((0,), cdt) if weight is None else jnp.asarray(weight, dtype=cdt)
    options = (
        ("chunk_size", chunk_size),
        ("strategy", strategy),
        ("ignore_index", None if ignore_index is None else int(ignore_index)),
        ("label_smoothing", float(label_smoothing)),
        ("z_loss", float(z_loss)),
        ("temperature", check_temperature(temperature)),
    )
    f = _lce(options, bias is not None, weight is not None, reduction)
    loss = f(h.astype(cdt), W.astype(cdt), b, t, cw)
    return loss.astype(jnp.result_type(h.dtype, W.dtype))
