"""Dense softmax, log_softmax and logsumexp.

Public layer: validate, normalise ``axis``, choose a driver.  The edge-case
contract implemented here is the table in ``docs/dense.md``.
"""

from __future__ import annotations

import math
from typing import Any, Literal, TypeGuard, overload

import numpy as np

from ._core import coldstart
from ._core.buffers import empty_like
from ._core.routes import foreign, route
from ._core.typing import ArrayLike, Axis, DTypeLike, FloatArray
from ._core.validate import (
    as_input_array,
    check_out,
    normalize_axis,
    resolve_dtype,
    validate_temperature,
    validate_weights,
    validate_where,
)
from .drivers import eager as _eager

__all__ = ["log_softmax", "logsumexp", "softmax"]


#: Which driver takes ``x`` (None: NumPy); ``softmaxkit._core.routes.foreign``.
_foreign = foreign


def _dispatch(name: str, x: Any, *args: Any, **kwargs: Any) -> Any:
    kind = _foreign(x)
    if kind == "dask":
        from .drivers import dask as _dask

        return getattr(_dask, name)(x, *args, **kwargs)
    if kind == "torch":
        res = _torch_route(name, {"x": x, **kwargs})
        if res is not NotImplemented:
            return res
    from .drivers import array_api as _array_api

    return getattr(_array_api, name)(x, *args, **kwargs)


def _torch_route(name: str, args: dict[str, Any]) -> Any:
    """Public function ``name`` on torch tensors: the adapter registered for "torch"
    (``softmaxkit.torch``, imported by name on first use; ``_core/routes.py``)."""
    return route("torch", name, args)


_TINY = 16  # rows up to this length with default options skip the kernels


def _tiny_state(
    x: Any, axis: Any, temperature: Any
) -> tuple[list[float], float, float, int] | None:
    """(vals, m, r, w0) for a short finite 1-D float row with default options, else None.

    A row of 3 through validation + driver + kernel costs ~10x NumPy's stable
    formula; this path keeps the same formulas (ties ``w0``, the rest ``r``, so
    ``log S = log1p(r)`` for one maximum) in Python floats (float64) instead.  Only
    exact types are accepted, so every other call takes the validated path.
    """
    if not (
        type(x) is np.ndarray
        and x.ndim == 1
        and 0 < x.shape[0] <= _TINY
        and (x.dtype.char == "d" or x.dtype.char == "f")
        and x.dtype.isnative
        and type(axis) is int
        and (axis == -1 or axis == 0)
        and type(temperature) is float
        and temperature == 1.0
    ):
        return None
    vals = x.tolist()
    total = sum(vals)
    if total - total != 0.0:  # NaN, +-inf (or overflow): the kernels handle those
        return None
    m = max(vals)
    r = 0.0
    w0 = 0
    for v in vals:
        if v == m:
            w0 += 1
        else:
            r += math.exp(v - m)
    return vals, m, r, w0


def _tiny_log_sum(r: float, w0: int) -> float:
    if w0 == 1 and r <= 1.0:
        return math.log1p(r)
    return math.log(w0) + math.log1p(r / w0) if r <= w0 else math.log(w0 + r)


_FAST_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _fast_rows(x: Any, axis: Any, temperature: Any) -> TypeGuard[FloatArray]:
    """True for the common call that needs neither validation nor a layout search: a
    C-contiguous, non-empty, native float32/float64 ``ndarray`` (not a subclass) over
    its last axis, at a Python float temperature whose inverse is a normal float32
    (``1e-30 <= T <= 1e30``).  Every other call takes the validated path, which raises
    the errors.  Through that path a softmax of [1, 128] cost 16 us, almost all of it
    Python (NumPy's stable formula: 4 us)."""
    return (
        type(x) is np.ndarray
        and type(axis) is int
        and type(temperature) is float
        and 1e-30 <= temperature <= 1e30
        and x.dtype in _FAST_DTYPES
        and x.flags.c_contiguous
        and x.ndim > 0
        and x.size > 0
        and (axis == -1 or axis == x.ndim - 1)
    )


def _fast_out(out: Any, x: np.ndarray, shape: tuple[int, ...]) -> bool:
    """True when ``out`` can be written directly by the fast path: a C-contiguous,
    writable ``ndarray`` of ``shape`` and ``x``'s dtype that does not overlap ``x``."""
    return (
        type(out) is np.ndarray
        and out.dtype == x.dtype
        and out.shape == shape
        and out.flags.c_contiguous
        and out.flags.writeable
        and not np.may_share_memory(x, out)
    )


def _softmax_impl(
    x: Any, axis: Any, temperature: Any, where: Any, dtype: Any, out: Any, log: bool
) -> FloatArray:
    if where is None and dtype is None and out is None:
        st = _tiny_state(x, axis, temperature)
        if st is not None:
            vals, m, r, w0 = st
            if log:
                ls = _tiny_log_sum(r, w0)
                return np.array([(v - m) - ls for v in vals], dtype=x.dtype)
            s = w0 + r
            return np.array([math.exp(v - m) / s for v in vals], dtype=x.dtype)
    fast = (
        where is None
        and dtype is None
        and _fast_rows(x, axis, temperature)
        and (out is None or _fast_out(out, x, x.shape))
    )
    if fast:
        arr, t, mask = x, temperature, None
        axes: tuple[int, ...] = (x.ndim - 1,)
        if out is None:
            out = empty_like(arr, arr.dtype)
    else:
        arr = as_input_array(x)
        axes = normalize_axis(axis, arr.ndim)
        t = validate_temperature(temperature)
        mask = validate_where(where, arr.shape)
        compute, out_dtype = resolve_dtype(arr.dtype, dtype)
        if out is None:
            out = empty_like(arr, out_dtype)  # x's layout (no transposed copy), 2 MiB-aligned
        else:
            check_out(out, arr.shape, out_dtype)
    try:
        with coldstart.allow(arr.size):
            if fast:
                return _eager.last_axis_softmax(arr, out, log, t)
            res: FloatArray = _eager.dense_softmax(arr, axes, t, mask, compute, out, log)
            return res
    except coldstart.ColdKernel:
        # the kernel compiles in the background: the float64 formula, rounded once
        from .reference import _dense as _reference

        ref = _reference.log_softmax if log else _reference.softmax
        with np.errstate(over="ignore", under="ignore"):
            out[...] = ref(arr, axis=axes, temperature=t, where=mask)
        written: FloatArray = out
        return written


def softmax(
    x: ArrayLike,
    /,
    axis: Axis = -1,
    *,
    temperature: float = 1.0,
    where: ArrayLike | None = None,
    dtype: DTypeLike | None = None,
    out: FloatArray | None = None,
) -> FloatArray:
    r"""Softmax over one or several axes.

    .. math::

        \operatorname{softmax}(x)_i = \frac{\exp(x_i / T - m)}{\sum_j \exp(x_j / T - m)},
        \qquad m = \max_j x_j / T

    Subtracting the row maximum ``m`` makes every exponent <= 0: nothing overflows,
    and the largest term is exactly 1, so the denominator is >= 1.

    Parameters
    ----------
    x : array_like
        Input logits.  float16/float32/float64 are kept; integer and bool input is
        computed in float64.  Complex, object and string input raise ``TypeError``.
    axis : int, tuple of ints or None, default -1
        Axis or axes normalised jointly (a tuple reduces over all of them together,
        like ``scipy.special.softmax``); None means every axis.  Note that SciPy's
        default is ``axis=None``; ours is the last axis, as in PyTorch and JAX.
    temperature : float, default 1.0
        The op acts on ``x / temperature``; must be finite and > 0.
    where : array_like of bool, optional
        Mask broadcastable to ``x``; masked-out elements take no part and get 0.
    dtype : dtype, optional
        Output dtype (float16, float32 or float64).  The computation uses the
        wider of the input and output precision, at least float32.
    out : ndarray, optional
        Array of the input's shape and of the output dtype to write into;
        ``out=x`` computes in place.

    Returns
    -------
    ndarray
        Probabilities of the input's shape; each row sums to 1.

    Notes
    -----
    Edge cases (the contract in ``docs/dense.md``): a row that is empty, all
    ``-inf`` or fully masked gives all zeros; a row with ``k`` entries equal to
    ``+inf`` gives ``1/k`` there and 0 elsewhere; a row containing NaN gives NaN
    everywhere.  No floating-point warning is emitted.

    Peak extra memory: none beyond the output (O(rows) float64 state, plus one
    float64 per 2048 values of the long rows in flight: the block maxima of
    store-then-scale, at most 0.1% of the input) for float16,
    float32 and float64 input stored densely (C or F order, or any transpose of
    them) whose reduced axes are adjacent in memory -- any single axis, ``None``,
    trailing tuples: the fused kernels read ``x`` in place, convert float16 block
    by block, and never transpose.  Otherwise: one copy of the input with the
    reduced axes moved last (strided input, or reduced axes separated in memory
    such as ``(0, 2)`` of a C array) plus one output-sized buffer; integer and bool
    input: one float64 copy; an ``out`` laid out differently from ``x``, or float16
    output computed in float64: one output-sized buffer; a ``where`` whose strides
    do not follow ``x``'s layout, or that is constant along the innermost axis in
    memory (broadcast along it): one bool copy (other broadcast masks are read in
    place).
    A new output of 4 MiB or more is placed at a 2 MiB (huge page) boundary of a
    buffer 2 MiB larger, whose unused part is address space only (never written).
    Such buffers are reused once the caller releases the array: up to 1 GiB of
    released outputs are kept for the next call of the same size (no page faults),
    see :func:`set_output_cache`.  Details and measurements: ``docs/performance.md``.

    Examples
    --------
    >>> import numpy as np
    >>> from softmaxkit import softmax
    >>> softmax([1000.0, 1000.0, -np.inf])
    array([0.5, 0.5, 0. ])
    >>> softmax(np.array([[1.0, 2.0], [3.0, 4.0]]), axis=0).round(4)
    array([[0.1192, 0.1192],
           [0.8808, 0.8808]])
    """
    if type(x) is not np.ndarray and _foreign(x):
        foreign: FloatArray = _dispatch(
            "softmax", x, axis=axis, temperature=temperature, where=where, dtype=dtype, out=out
        )
        return foreign
    res = _softmax_impl(x, axis, temperature, where, dtype, out, False)
    return res[()] if res.ndim == 0 and out is None else res


def log_softmax(
    x: ArrayLike,
    /,
    axis: Axis = -1,
    *,
    temperature: float = 1.0,
    where: ArrayLike | None = None,
    dtype: DTypeLike | None = None,
    out: FloatArray | None = None,
) -> FloatArray:
    r"""Logarithm of the softmax, computed without forming the softmax.

    .. math::

        \operatorname{log\_softmax}(x)_i = x_i / T - \operatorname{logsumexp}(x / T)
        = (x_i / T - m) - \log\Big(1 + \sum_{j \ne k} e^{x_j / T - m}\Big)

    where ``k`` is the position of the maximum ``m``; the ``log1p`` keeps full
    relative accuracy for the dominant entry (``log(softmax(x))`` would round it
    to 0).

    Parameters
    ----------
    x, axis, temperature, where, dtype, out
        As for :func:`softmax`.  Masked-out elements get ``-inf``.

    Returns
    -------
    ndarray
        Log-probabilities of the input's shape.

    Notes
    -----
    Edge cases: an empty, all ``-inf`` or fully masked row gives all ``-inf``; a
    row with ``k`` entries equal to ``+inf`` gives ``-log(k)`` there and ``-inf``
    elsewhere; a NaN row gives NaN.  Peak extra memory as for :func:`softmax`.

    Examples
    --------
    >>> from softmaxkit import log_softmax
    >>> log_softmax([0.0, 0.0])
    array([-0.69314718, -0.69314718])
    >>> float(log_softmax([0.0, -40.0])[0])  # -log1p(exp(-40)); log(softmax) gives 0.0
    -4.248354255291589e-18
    """
    if type(x) is not np.ndarray and _foreign(x):
        foreign: FloatArray = _dispatch(
            "log_softmax", x, axis=axis, temperature=temperature, where=where, dtype=dtype, out=out
        )
        return foreign
    res = _softmax_impl(x, axis, temperature, where, dtype, out, True)
    return res[()] if res.ndim == 0 and out is None else res


@overload
def logsumexp(
    x: ArrayLike,
    /,
    axis: Axis = -1,
    *,
    b: ArrayLike | None = None,
    keepdims: bool = False,
    return_sign: Literal[False] = False,
    temperature: float = 1.0,
    where: ArrayLike | None = None,
    dtype: DTypeLike | None = None,
    out: FloatArray | None = None,
) -> FloatArray: ...


@overload
def logsumexp(
    x: ArrayLike,
    /,
    axis: Axis = -1,
    *,
    b: ArrayLike | None = None,
    keepdims: bool = False,
    return_sign: Literal[True],
    temperature: float = 1.0,
    where: ArrayLike | None = None,
    dtype: DTypeLike | None = None,
    out: FloatArray | None = None,
) -> tuple[FloatArray, FloatArray]: ...


@overload
def logsumexp(
    x: ArrayLike,
    /,
    axis: Axis = -1,
    *,
    b: ArrayLike | None = None,
    keepdims: bool = False,
    return_sign: bool,
    temperature: float = 1.0,
    where: ArrayLike | None = None,
    dtype: DTypeLike | None = None,
    out: FloatArray | None = None,
) -> FloatArray | tuple[FloatArray, FloatArray]: ...


def logsumexp(
    x: ArrayLike,
    /,
    axis: Axis = -1,
    *,
    b: ArrayLike | None = None,
    keepdims: bool = False,
    return_sign: bool = False,
    temperature: float = 1.0,
    where: ArrayLike | None = None,
    dtype: DTypeLike | None = None,
    out: FloatArray | None = None,
) -> FloatArray | tuple[FloatArray, FloatArray]:
    r"""Logarithm of the sum of exponentials, ``log(sum(b * exp(x / T)))``.

    .. math::

        \operatorname{logsumexp}(x) = m + \log\Big(b_k + \sum_{j \ne k} b_j e^{x_j/T - m}\Big)
        = m + \log|b_k| + \operatorname{log1p}\Big(\frac{1}{b_k}\sum_{j \ne k} b_j e^{x_j/T-m}\Big)

    with ``m`` the largest ``x_j / T`` among entries with ``b_j != 0`` and ``k``
    its first position.

    Parameters
    ----------
    x : array_like
        Input values (dtype rules as for :func:`softmax`).
    axis : int, tuple of ints or None, default -1
        Axes to reduce over jointly; None reduces over all.  SciPy's default is None.
    b : array_like, optional
        Weights broadcastable to ``x`` (SciPy semantics): entries with ``b == 0``
        are ignored even where ``x`` is inf or NaN; negative weights are allowed.
    keepdims : bool, default False
        Keep the reduced axes with size 1.
    return_sign : bool, default False
        Also return the sign of the (weighted) sum.  Without it, a negative sum
        gives NaN, as in SciPy.
    temperature : float, default 1.0
        The op acts on ``x / temperature``; finite and > 0.
    where : array_like of bool, optional
        Mask broadcastable to ``x``; masked-out elements take no part.
    dtype : dtype, optional
        Output dtype (float16, float32, float64).
    out : ndarray, optional
        Array of the reduced shape and output dtype for the result.

    Returns
    -------
    lse : ndarray or scalar
        The reduced result; a NumPy scalar when it is 0-d and ``out`` is None.
    sign : ndarray or scalar
        Only with ``return_sign``: +1, -1, 0 (a sum that is exactly zero, including
        an empty or all ``-inf`` row) or NaN.

    Notes
    -----
    Edge cases: an empty, all ``-inf`` or fully masked row gives ``-inf`` (sign 0;
    SciPy returns sign -1 for an empty row); a row with ``+inf`` gives ``+inf``
    (NaN when the weights of the ``+inf`` entries cancel); a NaN row gives NaN.

    Peak extra memory: a few float64 values per output element (the per-row
    ``(m, s)`` state and the sign; with a float32 ``where`` mask, a scratch of at most
    128 KiB per thread for the masked copy of a group of rows) and nothing
    input-sized, except the copies
    described for :func:`softmax` when the layout needs one (``b`` is read in place
    when it is broadcast).

    Examples
    --------
    >>> import numpy as np
    >>> from softmaxkit import logsumexp
    >>> float(logsumexp([1000.0, 1000.0]))  # 1000 + log 2, no overflow
    1000.6931471805599
    >>> logsumexp([[1.0, 2.0], [3.0, -np.inf]], axis=1)
    array([2.31326169, 3.        ])
    >>> logsumexp([1.0, 2.0], b=[1.0, -1.0], return_sign=True)
    (np.float64(1.5413248546129181), np.float64(-1.0))
    """
    if type(x) is not np.ndarray and _foreign(x):
        foreign: FloatArray | tuple[FloatArray, FloatArray] = _dispatch(
            "logsumexp",
            x,
            axis=axis,
            b=b,
            keepdims=keepdims,
            return_sign=return_sign,
            temperature=temperature,
            where=where,
            dtype=dtype,
            out=out,
        )
        return foreign
    if b is None and where is None and dtype is None and out is None and not keepdims:
        st = _tiny_state(x, axis, temperature)
        if st is not None:
            _vals, m, r, w0 = st
            x0: Any = x  # an ndarray: _tiny_state accepts nothing else
            lse0 = x0.dtype.type(m + _tiny_log_sum(r, w0))
            return (lse0, x0.dtype.type(1.0)) if return_sign else lse0
    if (
        b is None
        and where is None
        and dtype is None
        and not keepdims
        and not return_sign
        and _fast_rows(x, axis, temperature)
        and (out is None or _fast_out(out, x, x.shape[:-1]))
    ):
        res = np.empty(x.shape[:-1], x.dtype) if out is None else out
        try:
            with coldstart.allow(x.size):
                _eager.last_axis_logsumexp(x, res, temperature)
        except coldstart.ColdKernel:
            pass  # the path below computes the float64 reference formula
        else:
            return res[()] if res.ndim == 0 and out is None else res
    arr = as_input_array(x)
    axes = normalize_axis(axis, arr.ndim)
    t = validate_temperature(temperature)
    mask = validate_where(where, arr.shape)
    compute, out_dtype = resolve_dtype(arr.dtype, dtype)
    # Weights are cast to float64 (the kernels' accumulator): a float32 cast could
    # overflow a large weight to inf or round a small one.
    weights = validate_weights(b, arr.shape, np.float64)
    if keepdims:
        shape = tuple(1 if i in axes else s for i, s in enumerate(arr.shape))
    else:
        shape = tuple(s for i, s in enumerate(arr.shape) if i not in axes)
    if out is not None:
        check_out(out, shape, out_dtype)
    need_sign = return_sign or weights is not None
    sign: Any  # an array whenever need_sign
    try:
        with coldstart.allow(arr.size):
            lse, sign = _eager.dense_logsumexp(
                arr, axes, t, mask, weights, compute, out_dtype=out_dtype, need_sign=need_sign
            )
    except coldstart.ColdKernel:
        # the kernel compiles in the background: the float64 formula
        from .reference import _dense as _reference

        lse, sign = (
            np.asarray(v, dtype=np.float64)
            for v in _reference.logsumexp(
                arr, axis=axes, b=weights, return_sign=True, temperature=t, where=mask
            )
        )
    if not return_sign and weights is not None:
        # log of a negative sum is NaN (SciPy's convention); assigned, not computed,
        # so no "invalid value" warning is raised.
        lse[sign < 0] = np.nan
    lse = lse.reshape(shape)
    # Rounding to a narrower output dtype may overflow to +-inf (e.g. 7e4 -> float16):
    # that is the correctly rounded result, so NumPy's cast warning is silenced here
    # (and underflow, which only warns when a user has asked for it with np.seterr).
    with np.errstate(over="ignore", under="ignore"):
        if out is None:
            res = lse.astype(out_dtype, copy=False)
            res = res[()] if res.ndim == 0 else res
        else:
            out[...] = lse
            res = out
    if return_sign:
        sgn = sign.reshape(shape).astype(out_dtype, copy=False)
        return res, (sgn[()] if sgn.ndim == 0 else sgn)
    return res
