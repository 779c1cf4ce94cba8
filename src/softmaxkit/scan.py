"""Running log-sum-exp (:func:`logcumsumexp`) and log-space matrix products
(:func:`logmatmulexp`), with their vector-Jacobian products.

Public layer: validate, normalise ``axis``, run the kernels of ``_kernels/scan.py``
(loaded on first use).  The maths and the edge-case contract: ``docs/segments.md``.
"""

from __future__ import annotations

import numbers
import sys
from typing import Any, Literal, overload

import numpy as np

from ._core import coldstart
from ._core.buffers import empty_like
from ._core.routes import routed
from ._core.typing import ArrayLike, DTypeLike, FloatArray
from ._core.validate import as_input_array, check_out, resolve_dtype, validate_where
from .drivers.eager_segments import MIN_BLOCK as _MIN_BLOCK
from .drivers.eager_segments import finite_max as _finite_max
from .drivers.eager_segments import lme_batched as _lme_batched
from .drivers.eager_segments import one_axis as _one_axis
from .drivers.eager_segments import rows as _rows
from .drivers.eager_segments import scan as _scan_rows

__all__ = ["logcumsumexp", "logcumsumexp_vjp", "logmatmulexp", "logmatmulexp_vjp"]


def _k() -> Any:
    from ._kernels import scan

    return scan


def _is_dask(x: Any) -> bool:
    return type(x).__module__.split(".")[0] == "dask" and "dask" in sys.modules


def _scan(x2: np.ndarray, m2: np.ndarray | None, reverse: bool, res2: np.ndarray) -> None:
    """The NumPy driver's scan of rows ``x2`` into ``res2``, cut into blocks of at least
    ``_MIN_BLOCK`` values (read at call time: tests lower it to reach the blocked path)."""
    _scan_rows(x2, m2, reverse, res2, min_block=_MIN_BLOCK)


def _lcse_dtype(x: Any, *args: Any, dtype: Any = None, **kwargs: Any) -> Any:
    return resolve_dtype(np.asarray(x).dtype, dtype)[1]


def _lme_dtype(A: Any, B: Any, **kwargs: Any) -> Any:
    return resolve_dtype(np.result_type(np.asarray(A).dtype, np.asarray(B).dtype), None)[0]


@routed("logcumsumexp")
@coldstart.fallback("softmaxkit.reference._segments:logcumsumexp", _lcse_dtype)
def logcumsumexp(
    x: ArrayLike,
    /,
    axis: int = -1,
    *,
    reverse: bool = False,
    where: ArrayLike | None = None,
    dtype: DTypeLike | None = None,
    out: FloatArray | None = None,
) -> FloatArray:
    r"""Running log-sum-exp along one axis.

    .. math::

        y_j = \log \sum_{k \le j} e^{x_k}
        \qquad (\text{``reverse``: } \textstyle\sum_{k \ge j})

    computed as a scan of the online normalizer's state ``(m, s)``: the running max
    ``m`` and ``s = \sum e^{x_k - m}`` (float64), one ``exp`` per value, so nothing
    overflows and no ``log(1 + exp(.))`` is rounded per step (as in
    ``np.logaddexp.accumulate``).

    Parameters
    ----------
    x : array_like
        Input.  float16/float32/float64 are kept (float16 computed in float32);
        integer and bool input is computed in float64.
    axis : int, default -1
        The axis to scan along.
    reverse : bool, default False
        Scan from the end: ``y_j = log sum_{k >= j} exp(x_k)``.
    where : array_like of bool, optional
        Mask broadcastable to ``x``: excluded values take no part (as ``-inf``); every
        position still gets the log-sum-exp of the included values up to it.
    dtype : dtype, optional
        Output dtype (float16, float32 or float64), as for :func:`softmaxkit.softmax`.
    out : ndarray, optional
        Array of ``x``'s shape and the output dtype to write into.

    Returns
    -------
    ndarray
        Shape of ``x``.

    Notes
    -----
    Edge cases (the dense contract, position by position): a prefix that is
    empty, all ``-inf`` or fully masked gives ``-inf`` (never NaN from
    ``-inf - -inf``); from the first ``+inf`` on the result is ``+inf``; from the
    first NaN on it is NaN.  Accuracy: float64 results within a few ulp of
    ``log`` of the exact sum times the number of terms (the float64 state is
    accumulated in order; ``tests/test_scan.py`` checks 1e-13 relative against
    mpmath on rows of 10^5 values spread over 700 units); float32 results are the
    float64 result rounded, up to the float32 ``exp`` (1 ulp) of each term.

    Long rows (fewer rows than twice the threads) are cut into blocks: each block's
    own state is computed first (one read), the states are merged in order, and
    the blocks are scanned in parallel from their entering states.

    Peak extra memory: a few KiB of chunk buffers per thread, plus 16 bytes per row
    and block.  Copies: ``x`` when ``axis`` is not its last, C-contiguous axis or
    its dtype is not float32/float64 (one copy in the compute dtype, with the
    axis moved last); a ``where`` mask: one bool copy in that layout; an output
    that is not C-contiguous with ``axis`` last, or float16: one temporary.
    The float32 scan costs about 2 ns of CPU per value; on large arrays the
    operating system's first touch of a fresh result (page faults and zeroing) can
    cost as much or more, so repeated calls can pass the same ``out`` to skip it.

    Examples
    --------
    >>> import numpy as np
    >>> from softmaxkit import logcumsumexp
    >>> logcumsumexp(np.log([1.0, 2.0, 3.0, 4.0]))
    array([0.        , 1.09861229, 1.79175947, 2.30258509])
    >>> logcumsumexp([-np.inf, -np.inf, 0.0, 1000.0])
    array([ -inf,  -inf,    0., 1000.])
    """
    if _is_dask(x):
        from .drivers.dask import segments as _dask_segments

        res: FloatArray = _dask_segments.logcumsumexp(
            x, axis=axis, reverse=reverse, where=where, dtype=dtype
        )
        return res
    arr = as_input_array(x)
    scalar = arr.ndim == 0
    if scalar:
        arr = arr.reshape(1)
        if isinstance(axis, numbers.Integral) and not isinstance(axis, bool) and axis in (0, -1):
            axis = 0
    ax = _one_axis(axis, arr.ndim)
    mask = validate_where(where, arr.shape)
    compute, out_dtype = resolve_dtype(arr.dtype, dtype)
    if out is not None:
        check_out(out, () if scalar else arr.shape, out_dtype)
    x2 = _rows(arr.astype(compute, copy=False), ax)
    m2 = _rows(mask, ax) if mask is not None else None
    kdt = out_dtype if out_dtype != np.float16 else np.dtype(np.float32)
    direct = None
    if out is not None and not scalar and out.dtype == kdt:
        view = np.moveaxis(out, ax, -1)
        if view.flags.c_contiguous:
            direct = view.reshape(x2.shape)
    # a fresh result from the reused, 2 MiB-aligned output buffers (_core/buffers.py)
    res2 = direct if direct is not None else empty_like(x2, kdt)
    _scan(x2, m2, bool(reverse), res2)
    if direct is not None and out is not None:
        return out
    moved_shape = np.moveaxis(arr, ax, -1).shape
    res = np.moveaxis(res2.reshape(moved_shape), -1, ax)
    if scalar:
        res = res.reshape(())
    if out is not None:
        np.copyto(out, res, casting="unsafe")
        return out
    res = res.astype(out_dtype, copy=False)
    return res[()] if scalar else res


@routed("logcumsumexp_vjp")
def logcumsumexp_vjp(
    x: ArrayLike,
    g: ArrayLike,
    /,
    axis: int = -1,
    *,
    reverse: bool = False,
    where: ArrayLike | None = None,
) -> FloatArray:
    r"""Vector-Jacobian product of :func:`logcumsumexp`, from its input.

    .. math::

        \frac{\partial L}{\partial x_k} = \sum_{j \ge k} g_j\, e^{x_k - y_j}
        = e^{x_k - y_k}\, Q_k, \qquad Q_k = g_k + e^{y_k - y_{k+1}} Q_{k+1}

    (``j <= k`` with ``reverse``).  ``y`` never decreases along the scan, so every
    factor ``e^{y_k - y_{k+1}}`` is at most 1: a reverse scan with nothing to
    overflow.

    Parameters
    ----------
    x : array_like
        The forward input.
    g : array_like
        Upstream gradient, shape of ``x``.
    axis, reverse, where
        Those of the forward call.

    Returns
    -------
    ndarray
        float64, shape of ``x``.  0 at ``-inf`` and masked entries; where a prefix
        holds ``c >= 1`` entries ``+inf``, its output's gradient goes to them as
        ``g / c`` (the softmax of the dense contract); NaN along a row that includes
        a NaN.

    Notes
    -----
    Peak extra memory: the forward result ``y`` and float64 copies of ``x`` and
    ``g`` with the axis moved last (three arrays of ``x``'s size in float64).

    Examples
    --------
    >>> import numpy as np
    >>> from softmaxkit import logcumsumexp_vjp
    >>> logcumsumexp_vjp(np.zeros(3), np.ones(3))  # 1 + 1/2 + 1/3, 1/2 + 1/3, 1/3
    array([1.83333333, 0.83333333, 0.33333333])
    """
    from ._kernels._parallel import run, threads_for

    arr = as_input_array(x)
    gar = as_input_array(g, "g")
    if gar.shape != arr.shape:
        raise ValueError(f"g has shape {gar.shape}; expected the shape of x, {arr.shape}")
    if arr.ndim == 0:
        arr, gar = arr.reshape(1), gar.reshape(1)
        axis = 0 if axis in (0, -1) else axis
        scalar = True
    else:
        scalar = False
    ax = _one_axis(axis, arr.ndim)
    mask = validate_where(where, arr.shape)
    xf = arr.astype(np.float64)
    if mask is not None:
        xf[~mask] = -np.inf
    x2 = _rows(xf, ax)
    g2 = _rows(gar.astype(np.float64, copy=False), ax)
    y2 = np.empty(x2.shape)
    _scan(x2, None, bool(reverse), y2)
    res2 = np.empty(x2.shape)
    if x2.size:
        run(_k().scan_vjp_rows, x2.shape[0], threads_for(x2.size, 8), x2, y2, g2, res2, reverse)
    moved_shape = np.moveaxis(arr, ax, -1).shape
    res = np.moveaxis(res2.reshape(moved_shape), -1, ax)
    return res.reshape(()) if scalar else res


# --------------------------------------------------------------------------- logmatmulexp
def _lme_prepare(A: Any, B: Any) -> Any:
    a = as_input_array(A, "A")
    b = as_input_array(B, "B")
    if a.ndim < 2 or b.ndim < 2:
        raise ValueError(
            f"A and B must have at least 2 dimensions ([..., I, J] and [..., J, K]); "
            f"got shapes {a.shape} and {b.shape}"
        )
    if a.shape[-1] != b.shape[-2]:
        raise ValueError(
            f"A's last axis ({a.shape[-1]}) must match B's second-to-last axis "
            f"({b.shape[-2]}); got shapes {a.shape} and {b.shape}"
        )
    try:
        batch = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    except ValueError:
        raise ValueError(
            f"the batch shapes of A {a.shape[:-2]} and B {b.shape[:-2]} do not broadcast"
        ) from None
    compute, _ = resolve_dtype(np.result_type(a.dtype, b.dtype), None)
    return a, b, batch, compute


@overload
def logmatmulexp(
    A: ArrayLike,
    B: ArrayLike,
    /,
    *,
    a_sign: ArrayLike | None = None,
    b_sign: ArrayLike | None = None,
    return_sign: Literal[False] = False,
    out: FloatArray | None = None,
) -> FloatArray: ...


@overload
def logmatmulexp(
    A: ArrayLike,
    B: ArrayLike,
    /,
    *,
    a_sign: ArrayLike | None = None,
    b_sign: ArrayLike | None = None,
    return_sign: Literal[True],
    out: FloatArray | None = None,
) -> tuple[FloatArray, FloatArray]: ...


@overload
def logmatmulexp(
    A: ArrayLike,
    B: ArrayLike,
    /,
    *,
    a_sign: ArrayLike | None = None,
    b_sign: ArrayLike | None = None,
    return_sign: bool,
    out: FloatArray | None = None,
) -> FloatArray | tuple[FloatArray, FloatArray]: ...


@routed("logmatmulexp")
@coldstart.fallback("softmaxkit.reference._segments:logmatmulexp", _lme_dtype)
def logmatmulexp(
    A: ArrayLike,
    B: ArrayLike,
    /,
    *,
    a_sign: ArrayLike | None = None,
    b_sign: ArrayLike | None = None,
    return_sign: bool = False,
    out: FloatArray | None = None,
) -> FloatArray | tuple[FloatArray, FloatArray]:
    r"""Matrix product in log space, optionally of signed values.

    .. math::

        C_{ik} = \log \sum_j e^{A_{ij} + B_{jk}}
        = a_i + b_k + \log \sum_j e^{A_{ij} - a_i}\, e^{B_{jk} - b_k}

    with ``a_i``, ``b_k`` the finite maxima of row ``i`` of ``A`` and column ``k`` of
    ``B``: the sum is an ordinary matrix product of two arrays of values in
    ``[0, 1]``, computed by BLAS block by block (256 values of ``j`` at a time,
    accumulated into the output), then ``log`` and the shifts are applied in place.

    With signs (``a_sign``, ``b_sign``), the matrices hold ``log|x|`` and the
    product is that of the signed values
    :math:`S_{ik} = \sum_j s^A_{ij} s^B_{jk} e^{A_{ij} + B_{jk}}`, returned as
    ``log|S|`` (and ``sign(S)`` with ``return_sign``), as
    ``scipy.special.logsumexp(b=..., return_sign=True)`` does for one sum.

    Parameters
    ----------
    A : array_like
        ``[..., I, J]``.
    B : array_like
        ``[..., J, K]``; the batch axes broadcast against ``A``'s.
    a_sign, b_sign : array_like, optional
        Signs of the entries of ``A`` and ``B`` (broadcastable to their shapes);
        only ``numpy.sign`` of each value is read: a negative value is ``-1``, a
        zero takes its entry out of the sum (whatever ``A`` holds there, ``+inf``
        included), NaN makes the results it enters NaN.  ``None``: all ``+1``.
    return_sign : bool, default False
        Also return ``sign(S)``: ``+1``, ``-1``, ``0`` for an exact zero sum (whose
        log-magnitude is ``-inf``), NaN with a NaN result.  Without it, a negative
        sum gives NaN (the real ``log`` of a negative number), as SciPy's.
    out : ndarray, optional
        ``[..., I, K]`` array of the result dtype (float32 for float32 inputs, else
        float64) for the (log-magnitude) result.

    Returns
    -------
    ndarray or tuple of ndarray
        ``[..., I, K]`` ``log|S|``; with ``return_sign``, ``(log|S|, sign(S))``,
        the sign in the result dtype.

    Notes
    -----
    Exactness: where the sum is below ``1e-260`` (float32: ``1e-25``) its dominant
    terms may have underflowed (``A_ij - a_i`` and ``B_jk - b_k`` both very
    negative); those entries are recomputed directly in float64
    (``max_j (A_ij + B_jk)`` shift, O(J) each), so the result is finite wherever
    the true value is, including where the naive ``log(exp(A) @ exp(B))``
    overflows or underflows.  Edge cases as the naive form: ``-inf`` entries add
    nothing (an all ``-inf`` contraction gives ``-inf``), ``+inf`` gives ``+inf``,
    NaN (also from ``+inf + -inf``) gives NaN.

    Signed sums can cancel: the error of ``S`` is bounded relative to the sum of
    the magnitudes :math:`T_{ik} = \sum_j e^{A_{ij} + B_{jk}}` of its terms (about
    ``J`` units of roundoff of ``T``, as for any floating-point dot product), not
    relative to ``|S|``; so ``log|S|`` is accurate to about ``J eps T / |S|``.
    Entries with ``|S|`` below the threshold above relative to the shifts
    (deeply cancelled sums, rounded sums of exactly 0 included) are recomputed
    directly with a compensated float64 sum (O(J) each: a product with many such
    entries is slower); there a sum that is exactly 0 gives ``-inf`` with sign 0.
    A sum that cancels exactly in exact arithmetic but not in the blocked BLAS sum
    gives instead a tiny value within the bound above.  ``+inf`` terms of both
    signs give NaN, as ``inf - inf``.  Without signs the computation is the
    unsigned one (``return_sign`` adds one pass over the output); with signs, one
    copy of each input and of each sign array in the compute dtype is made per
    matrix of the batch.

    Peak extra memory: no ``[I, J, K]`` temporary; the ``exp`` of one block of
    ``B`` (``min(J, 256) x K``), of one tile of ``A`` (256 x 256) and one product
    tile (``256 x K``), the shifts (``I + K`` values) and a bool mask of the output
    (``I x K`` bytes) -- below one input's size once ``J > 256`` and ``I > 256``
    (5.5 MiB for 1024 x 1024 float64 inputs of 8 MiB).  Batched inputs are done one matrix
    at a time.  A C-contiguous copy of an input that is not.

    Examples
    --------
    >>> import numpy as np
    >>> from softmaxkit import logmatmulexp
    >>> A = np.log([[1.0, 2.0], [3.0, 4.0]])
    >>> np.exp(logmatmulexp(A, A))  # = [[1, 2], [3, 4]] @ [[1, 2], [3, 4]]
    array([[ 7., 10.],
           [15., 22.]])
    >>> logmatmulexp([[1000.0, -np.inf]], [[1000.0], [0.0]])  # naive: inf
    array([[2000.]])

    Signed values, ``[[1, -1]] @ [[1, 1], [1, -1]] = [[0, 2]]``:

    >>> X = np.array([[1.0, -1.0]])
    >>> Y = np.array([[1.0, 1.0], [1.0, -1.0]])
    >>> logmatmulexp(np.log(abs(X)), np.log(abs(Y)), a_sign=X, b_sign=Y, return_sign=True)
    (array([[      -inf, 0.69314718]]), array([[0., 1.]]))
    """
    signed = a_sign is not None or b_sign is not None or bool(return_sign)
    if _is_dask(A) or _is_dask(B):
        if signed:
            raise NotImplementedError(
                "logmatmulexp of Dask arrays takes no a_sign / b_sign / return_sign; "
                "compute the signed product on NumPy blocks"
            )
        from .drivers.dask import segments as _dask_segments

        res: FloatArray = _dask_segments.logmatmulexp(A, B)
        return res
    a, b, batch, compute = _lme_prepare(A, B)
    shape = (*batch, a.shape[-2], b.shape[-1])
    if out is not None:
        check_out(out, shape, compute)
    res = out if out is not None and out.flags.c_contiguous else np.empty(shape, compute)
    if a_sign is None and b_sign is None:
        _lme_batched(a, b, batch, compute, res)
        sgn = None
        if return_sign:
            with np.errstate(invalid="ignore"):
                sgn = np.where(res == -np.inf, 0.0, np.where(res == res, 1.0, np.nan))
            sgn = sgn.astype(compute, copy=False)
    else:
        from .drivers.eager_lme import lme_signed_batched, sign_of

        sa = sign_of(a_sign, "a_sign", a.shape, compute)
        sb = sign_of(b_sign, "b_sign", b.shape, compute)
        sgn = np.empty(shape, compute)
        lme_signed_batched(a, b, sa, sb, batch, compute, res, sgn)
        if not return_sign:
            res[sgn < 0] = np.nan
    if out is not None and res is not out:
        out[...] = res
        res = out
    return (res, sgn) if return_sign and sgn is not None else res


@routed("logmatmulexp_vjp")
def logmatmulexp_vjp(
    A: ArrayLike,
    B: ArrayLike,
    G: ArrayLike,
    /,
    *,
    a_sign: ArrayLike | None = None,
    b_sign: ArrayLike | None = None,
) -> tuple[FloatArray, FloatArray]:
    r"""Vector-Jacobian product of :func:`logmatmulexp`: ``(dL/dA, dL/dB)``.

    .. math::

        \frac{\partial L}{\partial A_{ij}} = \sum_k G_{ik} e^{A_{ij} + B_{jk} - C_{ik}},
        \qquad
        \frac{\partial L}{\partial B_{jk}} = \sum_i G_{ik} e^{A_{ij} + B_{jk} - C_{ik}}

    computed as ``e^{A - a} * (W @ e^{(B - b)^T})`` and ``e^{B - b} * (e^{(A - a)^T} @ W)``
    with ``W = G e^{a_i + b_k - C_{ik}}`` (two BLAS products); the entries that
    :func:`logmatmulexp` recomputes directly (``a_i + b_k - C_{ik} > 598``) add
    their terms directly instead.  With signs, ``C = log|S|`` and every term is
    multiplied by :math:`s^A_{ij} s^B_{jk} \operatorname{sign}(S_{ik})` (the
    derivative of ``log|S|``); the signs themselves get no gradient (piecewise
    constant), nor does the ``sign(S)`` output.

    Parameters
    ----------
    A, B : array_like
        The forward inputs (``[..., I, J]``, ``[..., J, K]``).
    G : array_like
        Upstream gradient, shape of the forward output.
    a_sign, b_sign : array_like, optional
        The forward call's signs.

    Returns
    -------
    tuple of ndarray
        float64 gradients shaped like ``A`` and ``B`` (batch axes that were
        broadcast are summed).  0 toward ``-inf`` and ``+inf`` results (an exact
        zero of a signed sum included, where ``log|S|`` has no derivative) and
        at entries of sign 0, NaN from NaN results.  Near a cancellation
        (``|S|`` far below the sum of its terms' magnitudes) the gradient is
        large, as ``1 / |S|``, and carries the forward's relative error.

    Notes
    -----
    Peak extra memory: float64 ``e^{A - a}``, ``e^{B - b}``, the forward result and
    ``W`` (about two inputs and two outputs in float64) per matrix of the batch;
    with signs also the float64 signs.

    Examples
    --------
    >>> import numpy as np
    >>> from softmaxkit import logmatmulexp_vjp
    >>> gA, gB = logmatmulexp_vjp(np.zeros((1, 2)), np.zeros((2, 1)), np.ones((1, 1)))
    >>> gA, gB
    (array([[0.5, 0.5]]), array([[0.5],
           [0.5]]))
    """
    a, b, batch, _ = _lme_prepare(A, B)
    g = np.asarray(as_input_array(G, "G"), dtype=np.float64)
    shape = (*batch, a.shape[-2], b.shape[-1])
    if g.shape != shape:
        raise ValueError(f"G has shape {g.shape}; expected {shape}")
    signed = a_sign is not None or b_sign is not None
    af = np.broadcast_to(a.astype(np.float64), batch + a.shape[-2:])
    bf = np.broadcast_to(b.astype(np.float64), batch + b.shape[-2:])
    if signed:
        from .drivers.eager_lme import sign_of

        saf = np.broadcast_to(sign_of(a_sign, "a_sign", a.shape, np.float64), af.shape)
        sbf = np.broadcast_to(sign_of(b_sign, "b_sign", b.shape, np.float64), bf.shape)
    gA = np.zeros(af.shape)
    gB = np.zeros(bf.shape)
    for idx in np.ndindex(*batch):
        Ai, Bi, Gi = np.ascontiguousarray(af[idx]), np.ascontiguousarray(bf[idx]), g[idx]
        if signed:
            sAi, sBi = saf[idx], sbf[idx]
            C, sC = logmatmulexp(Ai, Bi, a_sign=sAi, b_sign=sBi, return_sign=True)
            Ai = np.where(sAi != 0, Ai, -np.inf)  # sign 0: no term (as in the forward)
            Bi = np.where(sBi != 0, Bi, -np.inf)
        else:
            C = logmatmulexp(Ai, Bi)
        sa = _finite_max(Ai, 1)
        sb = _finite_max(Bi, 0)
        with np.errstate(over="ignore", invalid="ignore", under="ignore"):
            eA = np.exp(Ai - sa[:, None])
            eB = np.exp(Bi - sb[None, :])
            d = sa[:, None] + sb[None, :] - C
            direct = (d > 598.0) & np.isfinite(C)
            W = np.where(direct | np.isinf(C), 0.0, Gi * np.exp(np.where(direct, 0.0, d)))
            if signed:
                eA *= sAi
                eB *= sBi
                W *= sC
            gA[idx] = eA * (W @ eB.T)
            gB[idx] = eB * (eA.T @ W)
            for i, k in zip(*np.nonzero(direct), strict=True):
                t = Gi[i, k] * np.exp(Ai[i] + Bi[:, k] - C[i, k])
                if signed:
                    t *= sC[i, k] * sAi[i] * sBi[:, k]
                gA[(*idx, i)] += t
                gB[(*idx, slice(None), k)] += t
    return _unbroadcast(gA, a.shape), _unbroadcast(gB, b.shape)


def _unbroadcast(g: np.ndarray, shape: Any) -> np.ndarray:
    extra = g.ndim - len(shape)
    if extra:
        g = g.sum(axis=tuple(range(extra)))
    axes = tuple(i for i, n in enumerate(shape[:-2]) if n == 1 and g.shape[i] != 1)
    return g.sum(axis=axes, keepdims=True) if axes else g
