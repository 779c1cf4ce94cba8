"""softmaxkit inside JAX: ``jax.custom_vjp`` functions on the CPU kernels.

:func:`softmax`, :func:`log_softmax`, :func:`logsumexp`, :func:`cross_entropy` and
:func:`linear_cross_entropy` take the NumPy functions' arguments and defaults and
work under ``jax.jit``, ``jax.grad`` and ``jax.vmap``:

* on the CPU backend the kernels run in an XLA custom call
  (``softmaxkit._kernels.xla``): the kernel reads XLA's operand buffers and writes
  its results straight into XLA's result buffers (no copy either way).  On other
  backends, or where XLA:CPU refuses the call, :func:`jax.pure_callback` (the
  arrays are copied to the host and back).  See ``softmaxkit.jax._call``.
* ``vmap``: the dense ops' reduced axes are passed as negative indices, so a
  leading batch axis is just more rows (one call for the whole batch); the losses
  take one call per batch element (class weights and the projection matrix must
  not gain a batch axis).
* gradients are ``jax.custom_vjp`` rules from the saved output: softmax and
  log_softmax in jnp ops that XLA fuses with their neighbours (softmax from 4 MiB
  on: the VJP kernel, :func:`softmaxkit.softmax_vjp`; see ``_xla_backward``);
  logsumexp as the softmax kernel times ``g / T`` (a multiply XLA fuses);
  cross-entropy and linear cross-entropy from the gradients their kernels compute
  in the forward pass (the cross-entropy backward scales the saved gradient in its
  own buffer, and not at all when the upstream gradient is 1; the ``[N, V]``
  logits of the linear one are never
  formed).  Only first derivatives are available: ``jax.hessian`` and
  ``grad(grad(...))`` raise ``NotImplementedError`` naming the function.

bfloat16 input is computed in float32 and rounded back.  Importing this module
imports jax; ``import softmaxkit`` never does.  The custom-call target is
registered on first use.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from ..grad import log_softmax_vjp as _np_log_softmax_vjp
from ..grad import softmax_vjp as _np_softmax_vjp
from ..softmax import log_softmax as _np_log_softmax
from ..softmax import logsumexp as _np_logsumexp
from ..softmax import softmax as _np_softmax
from ._call import check_temperature, compute_dtype, host_call, mask, neg_axes
from ._losses import cross_entropy, linear_cross_entropy

__all__ = ["cross_entropy", "linear_cross_entropy", "log_softmax", "logsumexp", "softmax"]


def _like_first(x, *_):
    return jax.ShapeDtypeStruct(x.shape, x.dtype)


# ------------------------------------------------------------------ dense ops
@functools.lru_cache(maxsize=256)
def _dense(axes: tuple[int, ...], temperature: float, log: bool, masked: bool):
    name = "log_softmax" if log else "softmax"
    fwd_np = _np_log_softmax if log else _np_softmax
    vjp_np = _np_log_softmax_vjp if log else _np_softmax_vjp

    def host_fwd(ins, outs):
        x, w = ins
        fwd_np(x, axes, temperature=temperature, where=w if masked else None, out=outs[0])

    def host_vjp(ins, outs):
        y, g, w = ins
        vjp_np(y, g, axes, temperature=temperature, where=w if masked else None, out=outs[0])

    def call(x, w):
        return host_call(name, host_fwd, _like_first, x, w)

    @jax.custom_vjp
    def f(x, w):
        return call(x, w)

    def f_fwd(x, w):
        y = call(x, w)
        return y, (y, w)

    def f_bwd(res, g):
        y, w = res
        g = g.astype(y.dtype)
        if _xla_backward(y, log):
            return _vjp_jnp(y, g, w, axes, temperature, log, masked), None
        return host_call(name, host_vjp, _like_first, y, g, w), None

    f.defvjp(f_fwd, f_bwd)
    return jax.jit(f)  # eager calls: one cached dispatch, not op-by-op tracing


BWD_MODE = "auto"  # "auto", "xla" or "kernel": a switch for measurements and tests


def _xla_backward(y, log: bool) -> bool:
    """Whether the softmax / log_softmax VJP runs as jnp ops (True) or as the kernel.

    log_softmax: jnp ops at every size; softmax: jnp ops for results under 4 MiB,
    the VJP kernel from 4 MiB on.  The jnp ops fuse with the ops around them (no
    second custom call, no separate pass for the product rule's other term) and
    XLA may write their result into the forward's buffer, which has huge pages
    (``_kernels/xla.py``); where it gives the fusion a fresh result instead, that
    buffer takes 4 KiB page faults (~250 ms per 512 MiB on the 2-core VM), which
    the kernel's result avoids.  Measured (one thread, ``jax.grad(sum(f(x) * x))``
    under ``jit``, interleaved medians, load 6-8, ratio jax.nn / ours, kernel / jnp):
    softmax [4096, 32000] 1.24-1.48x / 0.93x (the fusion's fresh result: 128788
    faults), [65536, 128] 1.24-1.40x / 0.61-0.89x, [32, 32000] 0.61x / 0.74x,
    [256, 1000] 0.60x / 0.84x; log_softmax [4096, 32000] 0.74-0.85x / 1.48x (XLA
    wrote in place: 763 faults), [65536, 128] 1.11x / 1.28x, [32, 32000] 0.70x /
    0.91x, [256, 1000] 0.61x / 0.76x.
    """
    if BWD_MODE != "auto":
        return BWD_MODE == "xla"
    return log or y.size * y.dtype.itemsize < _HUGE_MIN_BYTES


_HUGE_MIN_BYTES = 1 << 22  # = softmaxkit._kernels.xla.HUGE_MIN_BYTES (not imported: Numba)


def _vjp_jnp(y, g, w, axes, temperature, log, masked):
    """The softmax / log_softmax VJP from the saved output ``y`` in jnp ops.

    softmax ``y (g - sum(g y)) / T`` (0 where ``y == 0``: masked, -inf, empty rows);
    log_softmax ``(g - exp(y) sum(g)) / T`` over the included entries, 0 on masked
    entries and on rows whose ``y`` are all -inf (empty, all -inf, fully masked),
    as the kernel (``_kernels/losses/vjp.py``).  Written without elementwise selects
    where no mask is given (a select splits XLA:CPU's fusion into several
    materialised temporaries: [32, 32000] softmax 2.47 ms with selects, 1.51 ms
    without); the row flag of log_softmax is a ``max`` reduction.  Differences from
    the kernel: sums accumulate in ``y``'s dtype (as ``jax.nn``'s gradients do, the
    kernel in float64), and an infinite upstream gradient at an entry with
    ``y == 0`` gives NaN (the kernel: 0).
    """
    inv_t = 1.0 / temperature
    if log:
        gi = jnp.where(w, g, jnp.zeros((), g.dtype)) if masked else g
        acc = jnp.sum(gi, axis=axes, keepdims=True)
        live = jnp.max(y, axis=axes, keepdims=True) > -jnp.inf
        scale = live.astype(y.dtype) * jnp.asarray(inv_t, y.dtype)
        # masked entries: gi = 0 and y = -inf there, so the result is 0 without a select
        return (gi - jnp.exp(y) * acc) * scale
    acc = jnp.sum(g * y, axis=axes, keepdims=True)
    return y * (g - acc) * jnp.asarray(inv_t, y.dtype)


def _dense_call(x, axis, temperature, where, log):
    x = jnp.asarray(x)
    cdt = compute_dtype(x.dtype)
    axes = neg_axes(axis, x.ndim)
    w, masked = mask(where, x.shape)
    y = _dense(axes, check_temperature(temperature), log, masked)(x.astype(cdt), w)
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


def _lse_shape(axes, keepdims):
    def shape(x, *_):
        red = {a % x.ndim for a in axes}
        s = tuple(1 if i in red else d for i, d in enumerate(x.shape) if keepdims or i not in red)
        return jax.ShapeDtypeStruct(s, x.dtype)

    return shape


@functools.lru_cache(maxsize=256)
def _lse(axes: tuple[int, ...], temperature: float, keepdims: bool, masked: bool):
    shape = _lse_shape(axes, keepdims)

    def host_fwd(ins, outs):
        x, w = ins
        _np_logsumexp(
            x, axes, keepdims=keepdims, temperature=temperature,
            where=w if masked else None, out=outs[0],
        )  # fmt: skip

    def call(x, w):
        return host_call("logsumexp", host_fwd, shape, x, w)

    @jax.custom_vjp
    def f(x, w):
        return call(x, w)

    def f_fwd(x, w):
        return call(x, w), (x, w)

    def f_bwd(res, g):
        # g / T * softmax(x / T): the softmax kernel, then a multiply that XLA fuses
        # with the ops that use the gradient (the product rule's add below, e.g.).
        # Measured against the softmax and the scaling in one host call (one thread,
        # grad of sum(logsumexp(x) * x[:, 0]), ratio jax.nn / ours): [4096, 32000]
        # 1.65x -> 2.14x, [65536, 128] 1.29x -> 1.64x, [32, 32000] 0.59x -> 0.65x
        x, w = res
        p = _dense(axes, temperature, False, masked)(x, w)
        if not keepdims:
            g = jnp.expand_dims(g, tuple(sorted(a % x.ndim for a in axes)))
        return p * (g.astype(x.dtype) * jnp.asarray(1.0 / temperature, x.dtype)), None

    f.defvjp(f_fwd, f_bwd)
    return jax.jit(f)  # eager calls: one cached dispatch, not op-by-op tracing


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
    cdt = compute_dtype(x.dtype)
    axes = neg_axes(axis, x.ndim)
    w, masked = mask(where, x.shape)
    f = _lse(axes, check_temperature(temperature), bool(keepdims), masked)
    return f(x.astype(cdt), w).astype(x.dtype)
