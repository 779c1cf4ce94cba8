"""The gradient functions of the dense ops: VJPs, the JVP and the Jacobian
(re-exported by :mod:`softmaxkit.grad`, whose docstring states the conventions)."""

from __future__ import annotations

from typing import Any, cast

import numpy as np

from ._core import coldstart
from ._core.typing import ArrayLike, Axis, FloatArray
from ._core.validate import (
    all_true,
    as_input_array,
    check_out,
    normalize_axis,
    resolve_dtype,
    validate_temperature,
    validate_weights,
    validate_where,
)
from .drivers.eager import direct_rows, rows_view, same_memory
from .softmax import _foreign, _torch_route, logsumexp, softmax

__all__ = [
    "log_softmax_vjp",
    "logsumexp_vjp",
    "softmax_jacobian",
    "softmax_jvp",
    "softmax_vjp",
]


def _first_dtype(x: Any, *args: Any, **kwargs: Any) -> Any:
    """The output dtype for input ``x`` (for the cold-start fallback)."""
    return resolve_dtype(np.asarray(x).dtype, None)[1]


def _vjp(
    y: ArrayLike,
    g: ArrayLike,
    axis: Axis,
    temperature: float,
    where: Any,
    out: FloatArray | None,
    log: bool,
) -> FloatArray:
    ya = as_input_array(y, "y")
    axes = normalize_axis(axis, ya.ndim)
    invT = 1.0 / validate_temperature(temperature)
    mask = validate_where(where, ya.shape)
    compute, out_dtype = resolve_dtype(ya.dtype, None)
    ga = as_input_array(g, "g")
    try:
        # (broadcast_to gives a read-only view, which the kernel would copy)
        ga = ga if ga.shape == ya.shape else np.broadcast_to(ga, ya.shape)
    except ValueError:
        raise ValueError(
            f"g with shape {ga.shape} cannot be broadcast to y's shape {ya.shape}"
        ) from None
    if out is None:
        out = np.empty(ya.shape, dtype=out_dtype)
    else:
        check_out(out, ya.shape, out_dtype)
    if ya.size == 0:
        return out
    y2 = np.ascontiguousarray(rows_view(ya, axes), dtype=compute)
    g2 = np.ascontiguousarray(rows_view(ga, axes), dtype=compute)
    # read-only for the kernels: one compiled variant, no copy of a read-only input
    from ._kernels.view import readonly  # (imports Numba: not at module level)

    y2 = readonly(y2)
    g2 = readonly(g2)
    if mask is not None:
        m2 = np.ascontiguousarray(rows_view(mask, axes))
    else:
        m2 = all_true(y2.shape)
    try:
        with coldstart.allow(y2.size):
            res: FloatArray = _vjp_kernel(
                y2, g2, m2, mask is not None, invT, log, out, axes, compute
            )
            return res
    except coldstart.ColdKernel:
        # the kernel compiles in the background: the float64 formula, rounded once
        res = _vjp_float64(y2, g2, m2, invT, log)
        moved = np.moveaxis(out, axes, tuple(range(out.ndim - len(axes), out.ndim)))
        with np.errstate(over="ignore", under="ignore"):
            moved[...] = res.reshape(moved.shape)
        return out


def _vjp_float64(y2: Any, g2: Any, m2: Any, invT: float, log: bool) -> Any:
    """The softmax / log_softmax VJP of ``[R, n]`` rows in float64 (masked: 0)."""
    y = y2.astype(np.float64)
    g = np.where(m2, g2.astype(np.float64), 0.0)
    with np.errstate(all="ignore"):
        p = np.where(m2, np.exp(y) if log else y, 0.0)
        if log:
            v = g - p * g.sum(axis=-1, keepdims=True)
        else:
            v = p * (g - (p * g).sum(axis=-1, keepdims=True))
        v = v * invT
    # excluded entries, and for log_softmax the rows with no mass (every included y
    # is -inf: a masked-out or all -inf row), as the kernel
    keep = m2 & ((m2 & (y != -np.inf)).any(axis=-1, keepdims=True) if log else True)
    return np.where(keep, v, 0.0)


def _vjp_kernel(
    y2: Any,
    g2: Any,
    m2: Any,
    masked: bool,
    invT: float,
    log: bool,
    out: Any,
    axes: Any,
    compute: Any,
) -> Any:
    from ._kernels import losses as k

    mask = m2 if masked else None
    res = _direct_rows(out, axes, compute, (y2, g2))
    if res is not None:
        # out's rows are C-contiguous in the computation dtype: written in place
        k.softmax_vjp_rows(y2, g2, m2, mask is not None, invT, log, res)
        return out
    res = np.empty(y2.shape, dtype=compute)
    k.softmax_vjp_rows(y2, g2, m2, mask is not None, invT, log, res)
    moved = np.moveaxis(out, axes, tuple(range(out.ndim - len(axes), out.ndim)))
    moved[...] = res.reshape(moved.shape)
    return out


def _direct_rows(
    out: FloatArray, axes: tuple[int, ...], compute: Any, inputs: tuple[Any, ...]
) -> FloatArray | None:
    """``out`` as the kernel's ``[R, n]`` output when it can be written in place, else None.

    In place needs a C-contiguous writable view in the computation dtype whose memory
    either is disjoint from each input or is that input exactly (``out=y`` or ``out=g``:
    the kernel reads entry ``[i, j]`` before it writes it, and each row's reduction is
    done before its write pass).
    """
    view = direct_rows(out, axes, compute)
    if view is None:
        return None
    for a in inputs:
        if np.may_share_memory(a, view) and not same_memory(a, view):
            return None
    return view


def softmax_vjp(
    y: ArrayLike,
    g: ArrayLike,
    /,
    axis: Axis = -1,
    *,
    temperature: float = 1.0,
    where: ArrayLike | None = None,
    out: FloatArray | None = None,
) -> FloatArray:
    r"""Vector-Jacobian product of :func:`softmaxkit.softmax`, from its output.

    .. math::

        \frac{\partial L}{\partial x} = \frac{1}{T}\, y \odot \Big(g - \sum_j g_j y_j\Big),
        \qquad y = \operatorname{softmax}(x / T)

    Parameters
    ----------
    y : array_like
        The forward output ``softmax(x, axis, temperature=T, where=where)``.
    g : array_like
        Upstream gradient ``dL/dy``, broadcastable to ``y``.
    axis, temperature, where
        Those of the forward call.
    out : ndarray, optional
        Where to write the result (``y``'s shape and floating dtype).

    Returns
    -------
    ndarray
        ``dL/dx``, shape of ``y``.  0 on masked entries and on empty / all -inf /
        fully masked rows (where ``y`` is 0), even where ``g`` is infinite.

    Notes
    -----
    Peak extra memory: none beyond the output when the reduced axes are trailing,
    ``y`` and ``g`` are C-contiguous and writable arrays of the output's dtype (and
    ``g`` is not broadcast); otherwise one temporary of ``y``'s size in the
    computation dtype plus the contiguous copies of ``y`` and ``g`` the layout needs
    (a read-only or broadcast ``y`` or ``g`` is copied).  ``out=y`` (or ``out=g``)
    works in place.

    Examples
    --------
    >>> import numpy as np
    >>> from softmaxkit import softmax, softmax_vjp
    >>> y = softmax(np.array([1.0, 2.0, 3.0]))
    >>> softmax_vjp(y, np.array([1.0, 0.0, 0.0])).round(6)  # row 0 of the Jacobian
    array([ 0.081925, -0.022033, -0.059892])
    >>> softmax_vjp(np.zeros(3), np.full(3, np.inf))  # a fully masked row: 0, not NaN
    array([0., 0., 0.])
    """
    if _foreign(y) == "torch":
        return cast("FloatArray", _torch_route("softmax_vjp", locals()))
    if _foreign(y) == "dask":
        from .drivers import dask as _dask

        res: FloatArray = _dask.softmax_vjp(
            y, g, axis=axis, temperature=temperature, where=where, out=out
        )
        return res
    return _vjp(y, g, axis, temperature, where, out, False)


def log_softmax_vjp(
    y: ArrayLike,
    g: ArrayLike,
    /,
    axis: Axis = -1,
    *,
    temperature: float = 1.0,
    where: ArrayLike | None = None,
    out: FloatArray | None = None,
) -> FloatArray:
    r"""Vector-Jacobian product of :func:`softmaxkit.log_softmax`, from its output.

    .. math::

        \frac{\partial L}{\partial x} = \frac{1}{T}\Big(g - e^{y} \sum_j g_j\Big),
        \qquad y = \operatorname{log\_softmax}(x / T)

    Parameters
    ----------
    y : array_like
        The forward output ``log_softmax(x, axis, temperature=T, where=where)``.
    g : array_like
        Upstream gradient, broadcastable to ``y``.
    axis, temperature, where, out
        As for :func:`softmax_vjp`.

    Returns
    -------
    ndarray
        0 on masked entries and on rows whose included ``y`` are all -inf.

    Notes
    -----
    Peak extra memory: as :func:`softmax_vjp` (none for C-contiguous inputs reduced
    over trailing axes; otherwise one temporary of ``y``'s size plus copies).

    Examples
    --------
    >>> import numpy as np
    >>> from softmaxkit import log_softmax, log_softmax_vjp
    >>> y = log_softmax(np.array([0.0, 0.0]))
    >>> log_softmax_vjp(y, np.array([1.0, 0.0]))
    array([ 0.5, -0.5])
    >>> log_softmax_vjp(np.full(2, -np.inf), np.ones(2))  # empty row
    array([0., 0.])
    """
    if _foreign(y) == "torch":
        return cast("FloatArray", _torch_route("log_softmax_vjp", locals()))
    if _foreign(y) == "dask":
        from .drivers import dask as _dask

        res: FloatArray = _dask.log_softmax_vjp(
            y, g, axis=axis, temperature=temperature, where=where, out=out
        )
        return res
    return _vjp(y, g, axis, temperature, where, out, True)


@coldstart.fallback("softmaxkit.reference._losses:logsumexp_vjp", _first_dtype)
def logsumexp_vjp(
    x: ArrayLike,
    g: ArrayLike,
    /,
    axis: Axis = -1,
    *,
    b: ArrayLike | None = None,
    keepdims: bool = False,
    temperature: float = 1.0,
    where: ArrayLike | None = None,
) -> FloatArray:
    r"""Vector-Jacobian product of :func:`softmaxkit.logsumexp`, from its input.

    .. math::

        \frac{\partial L}{\partial x_i} = \frac{g}{T}\,
        \frac{b_i e^{x_i/T}}{\sum_j b_j e^{x_j/T}}
        = \frac{g}{T}\operatorname{softmax}(x/T)_i \quad (b = 1)

    Parameters
    ----------
    x : array_like
        The forward input.
    g : array_like
        Upstream gradient with the shape of the forward output (reduced, or with
        size-1 axes when ``keepdims``).
    axis, b, keepdims, temperature, where
        Those of the forward call.  With ``b``, the gradient is that of
        ``log|sum b e^{x/T}|``.

    Returns
    -------
    ndarray
        Shape of ``x``, float dtype; 0 for empty / all -inf / fully masked rows.

    Notes
    -----
    Peak extra memory: without ``b``, none beyond the output (the softmax of ``x``,
    scaled in place; for float16 ``x`` a float32 softmax and the float16 result);
    with ``b``, about four float64 temporaries of ``x``'s size.

    Examples
    --------
    >>> from softmaxkit import logsumexp_vjp
    >>> logsumexp_vjp([0.0, 0.0, -float("inf")], 2.0)
    array([1., 1., 0.])
    """
    if _foreign(x) == "torch":
        return cast("FloatArray", _torch_route("logsumexp_vjp", locals()))
    if _foreign(x) == "dask":
        from .drivers import dask as _dask

        res: FloatArray = _dask.logsumexp_vjp(
            x, g, axis=axis, b=b, keepdims=keepdims, temperature=temperature, where=where
        )
        return res
    a = as_input_array(x)
    axes = normalize_axis(axis, a.ndim)
    t = validate_temperature(temperature)
    ga = as_input_array(g, "g").astype(np.float64, copy=False)  # complex, str: TypeError
    reduced = tuple(1 if i in axes else n for i, n in enumerate(a.shape))
    try:
        ga = np.expand_dims(ga, axes) if not keepdims else ga
        ok = np.broadcast_shapes(ga.shape, reduced) == reduced
    except ValueError:
        ok = False
    if not ok:
        want = reduced if keepdims else tuple(n for i, n in enumerate(a.shape) if i not in axes)
        raise ValueError(
            f"g with shape {np.shape(g)} does not match the reduced shape {want} "
            f"(keepdims={keepdims})"
        )
    compute, out_dtype = resolve_dtype(a.dtype, None)
    if b is None:
        # scaled in place: no temporary beyond the softmax, which is the result
        p = np.asarray(softmax(a, axis=axes, temperature=t, where=where, dtype=compute))
        # one same-dtype pass: a float64 operand sends a float32 pass through NumPy's
        # buffered casting loop ([4096, 32000] float32: 199 ms with it and a separate
        # divide, 92 ms so); g / T is rounded to the computation dtype first, at most
        # one more rounding
        np.multiply(p, (ga / t).astype(compute), out=p)
        if where is not None:
            # masked entries take no part, even in a NaN row (whose softmax is all NaN):
            # their gradient is 0, as for softmax_vjp and in torch.masked / JAX
            np.copyto(p, 0.0, where=~cast("np.ndarray", validate_where(where, a.shape)))
        return p if p.dtype == out_dtype else p.astype(out_dtype)
    bw = validate_weights(b, a.shape, np.float64)
    lse, sign = logsumexp(
        a,
        axis=axes,
        b=bw,
        keepdims=True,
        return_sign=True,
        temperature=t,
        where=where,
        dtype=np.float64,
    )
    mask = validate_where(where, a.shape)
    with np.errstate(invalid="ignore", over="ignore"):
        r = bw * np.exp(a.astype(np.float64) / t - lse) * sign
    keep = np.isfinite(lse) & (bw != 0)
    if mask is not None:
        keep = keep & mask
    r = np.where(keep, r, np.where(np.isnan(lse), np.nan, 0.0))
    res = ga * r / t
    return np.array(np.broadcast_to(res, a.shape), dtype=out_dtype)


def softmax_jvp(
    x: ArrayLike,
    v: ArrayLike,
    /,
    axis: Axis = -1,
    *,
    temperature: float = 1.0,
    where: ArrayLike | None = None,
) -> tuple[FloatArray, FloatArray]:
    r"""Jacobian-vector product of :func:`softmaxkit.softmax`: returns ``(y, dy)``.

    .. math::

        y = \operatorname{softmax}(x/T), \qquad
        dy = \frac{1}{T}\, y \odot \Big(v - \sum_j v_j y_j\Big)

    (the softmax Jacobian is symmetric, so this is :func:`softmax_vjp` with ``v``).

    Parameters
    ----------
    x : array_like
        The primal input.
    v : array_like
        The tangent, broadcastable to ``x``.
    axis, temperature, where
        As for :func:`softmaxkit.softmax`.

    Returns
    -------
    y, dy : ndarray
        The softmax and its directional derivative, both of ``x``'s shape.

    Notes
    -----
    Peak extra memory: the two outputs, plus what :func:`softmax_vjp` needs (nothing
    for a C-contiguous ``x`` and ``v`` reduced over trailing axes).

    Examples
    --------
    >>> import numpy as np
    >>> from softmaxkit import softmax_jvp
    >>> y, dy = softmax_jvp(np.array([0.0, 0.0]), np.array([1.0, 0.0]))
    >>> y, dy
    (array([0.5, 0.5]), array([ 0.25, -0.25]))
    """
    y = softmax(x, axis=axis, temperature=temperature, where=where)
    va = as_input_array(v, "v")
    try:
        np.broadcast_to(va, np.shape(y))
    except ValueError:
        raise ValueError(
            f"v with shape {va.shape} cannot be broadcast to x's shape {np.shape(y)}"
        ) from None
    return y, softmax_vjp(y, va, axis=axis, temperature=temperature, where=where)


@coldstart.fallback("softmaxkit.reference._losses:softmax_jacobian", _first_dtype)
def softmax_jacobian(
    x: ArrayLike,
    /,
    axis: Axis = -1,
    *,
    temperature: float = 1.0,
    where: ArrayLike | None = None,
) -> FloatArray:
    r"""The dense Jacobian of :func:`softmaxkit.softmax` for each row.

    .. math::

        J_{ij} = \frac{\partial y_i}{\partial x_j} = \frac{1}{T}(y_i\,\delta_{ij} - y_i y_j)

    Parameters
    ----------
    x : array_like
        The input.
    axis : int, tuple of ints or None, default -1
        The softmax axes; a tuple is flattened in C order (the axes moved last).
    temperature, where
        As for :func:`softmaxkit.softmax`; masked rows and columns are 0.

    Returns
    -------
    ndarray
        Shape ``batch + (n, n)`` with ``batch`` the non-reduced axes of ``x`` in
        order and ``n`` the product of the reduced sizes.

    Notes
    -----
    Peak extra memory: the result, ``n**2`` values per row.

    Examples
    --------
    >>> from softmaxkit import softmax_jacobian
    >>> softmax_jacobian([0.0, 0.0])
    array([[ 0.25, -0.25],
           [-0.25,  0.25]])
    """
    a = as_input_array(x)
    axes = normalize_axis(axis, a.ndim)
    t = validate_temperature(temperature)
    y = softmax(a, axis=axes, temperature=t, where=where)
    y2 = rows_view(np.asarray(y), axes)
    n = y2.shape[1]
    J: FloatArray = np.einsum("ri,rj->rij", -y2, y2)
    idx = np.arange(n)
    J[:, idx, idx] += y2
    J /= np.asarray(t, dtype=J.dtype)
    batch = tuple(s for i, s in enumerate(a.shape) if i not in axes)
    return J.reshape(*batch, n, n)
