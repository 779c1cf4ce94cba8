"""How ``softmaxkit.jax`` runs a host function on JAX arrays: :func:`host_call`.

On the CPU backend: an XLA custom call (``softmaxkit._kernels.xla``) whose target
views XLA's operand and result buffers as NumPy arrays and writes the results in
place: no copy in, no copy out, and ``input_output_aliases`` lets a backward pass
scale a saved gradient in its own buffer.  Elsewhere (an accelerator backend, or a
jax whose XLA:CPU refuses the legacy custom call: checked once, see
:func:`softmaxkit._kernels.xla.register`): ``jax.pure_callback``.

``vmap``: :func:`host_call` is a ``jax.custom_batching.custom_vmap`` function, so a
batch axis reaches the host function as a leading axis of real arrays:

* ``"rows"`` (dense ops, whose reduced axes are negative indices): unbatched
  operands are broadcast, and the whole batch is one call;
* ``"sequential"`` (losses: class weights and the projection matrix must not gain a
  batch axis): one call per batch element (``jax.lax.map``).

Each call is wrapped in a ``jax.custom_jvp`` whose rule raises
``NotImplementedError`` naming the function: first derivatives come from the
``custom_vjp`` rules of the public functions; a second one would differentiate the
kernel call itself.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["check_reduction", "check_temperature", "compute_dtype", "host_call", "mask", "neg_axes"]


def neg_axes(axis, ndim: int) -> tuple[int, ...]:
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


def compute_dtype(dt) -> np.dtype:
    dt = jnp.dtype(dt)
    if dt == jnp.bfloat16:
        return np.dtype(np.float32)
    if not jnp.issubdtype(dt, jnp.floating):
        raise TypeError(f"x must be a floating array (float16/bfloat16/32/64); got {dt}")
    return np.dtype(dt)


def check_temperature(t) -> float:
    t = float(t)
    if not (np.isfinite(t) and t > 0):
        raise ValueError(f"temperature must be finite and > 0; got {t!r}")
    return t


def check_reduction(reduction) -> None:
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be one of ('mean', 'sum', 'none'); got {reduction!r}")


def mask(where, shape):
    """``(mask, masked)``: a boolean array of ``shape``, or a dummy scalar and False."""
    if where is None:
        return jnp.ones((), dtype=jnp.bool_), False
    w = jnp.asarray(where)
    if w.dtype != jnp.bool_:
        raise TypeError(f"where must be a boolean array; got {w.dtype}")
    return jnp.broadcast_to(w, shape), True


def _xla():
    # imported on first use: softmaxkit._kernels imports Numba (~140 ms), which
    # ``import softmaxkit.jax`` must not pay
    from .._kernels import xla

    return xla


def _use_custom_call() -> bool:
    return jax.default_backend() == "cpu" and _xla().register()


def _spec(a) -> tuple[tuple[int, ...], np.dtype]:
    return tuple(a.shape), np.dtype(a.dtype)


def _run(host, specs, aliases, args):
    """One call of ``host(inputs, outputs)``: custom call on the CPU, else a callback."""
    multiple = isinstance(specs, tuple)
    outs = specs if multiple else (specs,)
    if _use_custom_call():
        xla = _xla()
        k = xla.plan(host, [_spec(a) for a in args], [_spec(s) for s in outs])
        res = jax.ffi.ffi_call(
            xla.TARGET,
            tuple(outs),
            custom_call_api_version=xla.API_VERSION,
            legacy_backend_config=str(k),
            input_output_aliases=aliases,
        )(*args)
    else:

        def cb(*a):
            ins = [np.asarray(v) for v in a]
            bufs = [np.empty(s.shape, s.dtype) for s in outs]
            if aliases:
                for i, o in aliases.items():
                    np.copyto(bufs[o], ins[i])
            host(ins, bufs)
            return tuple(bufs)

        res = jax.pure_callback(cb, tuple(outs), *args, vmap_method="sequential")
    return tuple(res) if multiple else res[0]


@functools.lru_cache(maxsize=512)
def _batched(name, host, shapes_fn, vmap, aliases_items):
    """The custom_vmap + custom_jvp wrapper of one host function."""
    aliases = dict(aliases_items) or None

    @jax.custom_batching.custom_vmap
    def call(*args):
        return _run(host, shapes_fn(*args), aliases, args)

    @call.def_vmap
    def _(axis_size, in_batched, *args):
        if vmap == "rows":
            args = [
                a if (b or jnp.ndim(a) == 0) else jnp.broadcast_to(a, (axis_size, *jnp.shape(a)))
                for a, b in zip(args, in_batched, strict=True)
            ]
            out = call(*args)
        else:
            batched = [a for a, b in zip(args, in_batched, strict=True) if b]

            def one(xs):
                it = iter(xs)
                return call(*[next(it) if b else a for a, b in zip(args, in_batched, strict=True)])

            out = jax.lax.map(one, batched)
        return out, jax.tree_util.tree_map(lambda _: True, out)

    @jax.custom_jvp
    def guarded(*args):
        return call(*args)

    @guarded.defjvp
    def _(primals, tangents):
        raise NotImplementedError(
            f"softmaxkit.jax.{name}: second and higher derivatives (jax.hessian, grad of "
            "grad, jvp of the gradient) are not supported: its forward and gradient are "
            "host kernels; use jax.nn / optax for higher-order derivatives"
        )

    return guarded


def host_call(name, host, shapes_fn, *args, vmap="rows", aliases=None):
    """``host(inputs, outputs)`` on ``args``; ``shapes_fn(*args)`` gives the result
    ``jax.ShapeDtypeStruct`` (a tuple of them for several results).

    ``host`` and ``shapes_fn`` must be hashable and stable (built once per static
    configuration): the custom call's plans and the wrappers are cached on them.
    """
    items = tuple(sorted(aliases.items())) if aliases else ()
    return _batched(name, host, shapes_fn, vmap, items)(*args)


def checked_target(t, n_classes: int, ignore_index, axis: int | None = None):
    """``t`` after a host check of its values (class indices in ``[0, n_classes)`` or
    ``ignore_index``; probabilities finite and >= 0 when ``axis`` is given): the
    :class:`ValueError` of the NumPy function, raised by ``jax.pure_callback`` when the
    computation runs (``XlaRuntimeError`` under ``jit``).  The custom call cannot
    raise (it could only fill its results with NaN), so value errors surface here,
    in a small callback on the targets, before the kernel runs."""
    from .._core.losscommon import check_prob_target, class_indices

    def host(v):
        v = np.asarray(v)
        if axis is None:
            class_indices(v, n_classes, ignore_index)
        else:
            check_prob_target(v, axis % max(v.ndim, 1))
        return v

    spec = jax.ShapeDtypeStruct(t.shape, t.dtype)

    def check(v):
        return jax.pure_callback(host, spec, v, vmap_method="broadcast_all")

    if axis is not None:
        return check(t)
    # class indices: the range test in jnp first (fused, no host round trip), the
    # callback (which raises) only when it fails -- a pure_callback costs ~0.1 ms a
    # call, as much as the whole loss of a [256, 1000] batch (optax / ours 0.40x).
    # Under vmap the cond becomes a select and the callback runs every time.
    valid = (t < n_classes) if t.dtype.kind == "u" else (t >= 0) & (t < n_classes)
    if ignore_index is not None:
        valid = valid | (t == ignore_index)
    return jax.lax.cond(jnp.all(valid), lambda v: v, check, t)
