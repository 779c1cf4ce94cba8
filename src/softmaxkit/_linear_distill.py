"""The ``linear_`` distillation losses: :func:`softmaxkit.linear_kl_divergence` and
:func:`softmaxkit.linear_jensen_shannon` (re-exported by :mod:`softmaxkit.distill`), which
never hold either model's ``[N, V]`` logits."""

from __future__ import annotations

import math
from typing import Any, Literal, Unpack, overload

import numpy as np

from ._core import coldstart
from ._core.blas import matmul
from ._core.ce import inv_temperature
from ._core.distillkw import LinearJSKeywords, LinearKLKeywords
from ._core.routes import routed
from ._core.typing import ArrayLike, Direction, DistillReduction, FloatArray
from ._core.validate import as_input_array, resolve_dtype, validate_temperature, validate_where
from ._distill_common import (
    _CHUNK_BYTES,
    _beta_mode,
    _check_reduction,
    _finish,
    _k,
    _mode,
    _scales,
)

__all__ = ["linear_jensen_shannon", "linear_kl_divergence"]

# ---------------------------------------------------------------------------
# Linear variants
# ---------------------------------------------------------------------------


def _reference() -> Any:
    """The float64 twins (the cold-start path of the linear losses)."""
    from .reference import _distill

    return _distill


def _linear(
    hs: Any,
    Ws: Any,
    ht: Any,
    Wt: Any,
    mode: Any,
    beta: Any,
    temperature: Any,
    where: Any,
    reduction: Any,
    return_grad: Any,
    chunk_size: Any,
    reference: Any,
) -> Any:
    h = as_input_array(hs, "student_hidden")
    W = as_input_array(Ws, "student_weight")
    g = as_input_array(ht, "teacher_hidden")
    U = as_input_array(Wt, "teacher_weight")
    for hn, hh, wn, ww in (("student_hidden", h, "student_weight", W),
                           ("teacher_hidden", g, "teacher_weight", U)):  # fmt: skip
        if hh.ndim < 1 or ww.ndim != 2 or hh.shape[-1] != ww.shape[1]:
            raise ValueError(
                f"{hn} must have shape (..., d) and {wn} (V, d) with the same d; got "
                f"{hh.shape} and {ww.shape}"
            )
    if h.shape[:-1] != g.shape[:-1]:
        raise ValueError(
            "student_hidden and teacher_hidden must have the same leading shape; got "
            f"{h.shape} and {g.shape}"
        )
    if W.shape[0] != U.shape[0]:
        raise ValueError(
            "student_weight and teacher_weight must have the same vocabulary size; got "
            f"{W.shape} and {U.shape}"
        )
    reduction = _check_reduction(reduction)
    T = validate_temperature(temperature)
    V = W.shape[0]
    lshape = (*h.shape[:-1], V)
    mask = validate_where(where, lshape)
    compute, out_dtype = resolve_dtype(np.result_type(h.dtype, W.dtype, g.dtype, U.dtype), None)
    pre_T, invT = inv_temperature(T, compute)
    if pre_T is not None:  # the kernels see z / T in float64 with T = 1
        compute = np.dtype(np.float64)
    N = math.prod(h.shape[:-1])
    h2 = np.ascontiguousarray(h.reshape(N, h.shape[-1]), dtype=compute)
    g2 = np.ascontiguousarray(g.reshape(N, g.shape[-1]), dtype=compute)
    W2 = np.ascontiguousarray(W, dtype=compute)
    U2 = np.ascontiguousarray(U, dtype=compute)
    mask2 = mask.reshape(N, V) if mask is not None else None
    if chunk_size is None:
        rows = max(1, _CHUNK_BYTES // max(1, 2 * V * compute.itemsize))
    else:
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int | np.integer):
            raise TypeError(f"chunk_size must be a positive int or None; got {chunk_size!r}")
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1; got {chunk_size}")
        rows = int(chunk_size)
    rows = max(1, min(rows, N))
    k = _k()
    ds = h2.shape[1]
    zs_buf = np.empty(rows * V, dtype=compute)
    zt_buf = np.empty(rows * V, dtype=compute)
    g_buf = np.empty(rows * V if return_grad and mode == k.JSD else 0, dtype=compute)
    per = np.empty(N)
    d_h: Any = np.empty((N, ds), dtype=compute) if return_grad else None
    d_W: Any = np.zeros((V, ds), dtype=compute) if return_grad else None
    # pass A (cheap, no logits kept): which rows count, for the reduction's scales
    active: Any = np.ones(N, dtype=np.bool_)
    if mask2 is not None:
        active = mask2.any(axis=1)
    scale, _ = _scales(active, reduction, V)
    try:
        with coldstart.allow(N * V):  # (the logits' size)
            for r0 in range(0, N, rows):
                r1 = min(N, r0 + rows)
                zs = zs_buf[: (r1 - r0) * V].reshape(r1 - r0, V)
                zt = zt_buf[: (r1 - r0) * V].reshape(r1 - r0, V)
                matmul(h2[r0:r1], W2.T, out=zs)
                matmul(g2[r0:r1], U2.T, out=zt)
                if pre_T is not None:
                    with np.errstate(over="ignore", under="ignore"):
                        zs /= pre_T
                        zt /= pre_T
                if mask2 is not None:
                    mb = mask2[r0:r1]
                    np.copyto(zs, -np.inf, where=~mb)
                    np.copyto(zt, -np.inf, where=~mb)
                # KL: the gradient overwrites the student block in place (each element is
                # read before it is written); the JSD's kernel reads the row again after
                # writing it, so it gets a third block
                gz = zs
                if return_grad and mode == k.JSD:
                    gz = g_buf[: (r1 - r0) * V].reshape(r1 - r0, V)
                k.distill_rows(zs, zt, invT, mode, beta, scale[r0:r1], active[r0:r1],
                               bool(return_grad), gz, per[r0:r1])  # fmt: skip
                if not return_grad:
                    continue
                if pre_T is not None:
                    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
                        gz /= pre_T
                # d_h block = G W (as (W^T G^T)^T, the form OpenBLAS ran fastest for
                # linear_cross_entropy); d_W += G^T h block
                d_h[r0:r1] = (W2.T @ gz.T).T
                d_W += gz.T @ h2[r0:r1]
    except coldstart.ColdKernel:
        # the row kernel compiles in the background: the materialised float64
        # formulas (softmaxkit.reference), rounded once to the output dtype
        return coldstart.float_like(reference(), out_dtype)
    loss = _finish(per, reduction, scale, h.shape[:-1], out_dtype)
    if not return_grad:
        return loss
    return loss, (
        d_h.reshape(h.shape).astype(out_dtype, copy=False),
        d_W.astype(out_dtype, copy=False),
    )


_LINEAR_DOC = r"""

    The student's logits are ``student_hidden @ student_weight.T`` and the
    teacher's ``teacher_hidden @ teacher_weight.T`` (``torch.nn.Linear`` layout,
    no bias), never formed for all rows: the rows are walked in blocks of
    ``chunk_size`` rows; each block's logits of both models ``[rows, V]`` are
    formed by one matmul each, turned into the loss and the student's
    ``dlogits`` in place by the fused row kernel of the dense function, and

    .. math::

        \partial h_{\text{block}} = G W_s, \qquad \partial W_s \mathrel{+}= G^\top h_{\text{block}}

    Parameters
    ----------
    student_hidden : array_like, shape (..., d_s)
    student_weight : array_like, shape (V, d_s)
    teacher_hidden : array_like, shape (..., d_t)
    teacher_weight : array_like, shape (V, d_t)
    chunk_size : int, optional
        Rows per block; default: as many as fit 32 MiB for the two logits blocks
        (``32 MiB / (2 V itemsize)``, at least 1).

    Returns
    -------
    loss : scalar or ndarray
    grads : tuple (d_student_hidden, d_student_weight)
        Only with ``return_grad``.  The teacher is frozen: no teacher gradients.

    Notes
    -----
    Peak extra memory: two logits blocks ``2 * rows * V`` values of the compute
    dtype (32 MiB by default; a third block for the JSD's gradient), O(N) float64
    per-row values, plus the gradients (``d_hidden``, ``d_weight``) and one
    ``[V, d_s]`` product temporary per block when ``return_grad`` -- never an
    ``[N, V]`` array.  Time: 2 matmuls of size ``N V d`` for the loss (one per
    model), 4 with gradients.  ``where`` must
    broadcast to ``(..., V)``; its rows are counted as in the dense function.
"""


@overload
def linear_kl_divergence(
    student_hidden: ArrayLike,
    student_weight: ArrayLike,
    teacher_hidden: ArrayLike,
    teacher_weight: ArrayLike,
    /,
    *,
    return_grad: Literal[False] = False,
    **kw: Unpack[LinearKLKeywords],
) -> FloatArray: ...


@overload
def linear_kl_divergence(
    student_hidden: ArrayLike,
    student_weight: ArrayLike,
    teacher_hidden: ArrayLike,
    teacher_weight: ArrayLike,
    /,
    *,
    return_grad: Literal[True],
    **kw: Unpack[LinearKLKeywords],
) -> tuple[FloatArray, tuple[FloatArray, FloatArray]]: ...


@overload
def linear_kl_divergence(
    student_hidden: ArrayLike,
    student_weight: ArrayLike,
    teacher_hidden: ArrayLike,
    teacher_weight: ArrayLike,
    /,
    *,
    return_grad: bool,
    **kw: Unpack[LinearKLKeywords],
) -> FloatArray | tuple[FloatArray, tuple[FloatArray, FloatArray]]: ...


@routed("linear_kl_divergence")
def linear_kl_divergence(
    student_hidden: ArrayLike,
    student_weight: ArrayLike,
    teacher_hidden: ArrayLike,
    teacher_weight: ArrayLike,
    /,
    *,
    temperature: float = 1.0,
    direction: Direction = "forward",
    where: ArrayLike | None = None,
    reduction: DistillReduction = "batchmean",
    return_grad: bool = False,
    chunk_size: int | None = None,
) -> FloatArray | tuple[FloatArray, tuple[FloatArray, FloatArray]]:
    r""":func:`kl_divergence` of ``(student_hidden @ student_weight.T,
    teacher_hidden @ teacher_weight.T)`` without materialising either logits matrix.
    %s
    Examples
    --------
    >>> import numpy as np
    >>> from softmaxkit import kl_divergence, linear_kl_divergence
    >>> rng = np.random.default_rng(0)
    >>> hs, Ws = rng.normal(size=(5, 3)), rng.normal(size=(11, 3))
    >>> ht, Wt = rng.normal(size=(5, 4)), rng.normal(size=(11, 4))
    >>> a = linear_kl_divergence(hs, Ws, ht, Wt, chunk_size=2)
    >>> bool(np.isclose(a, kl_divergence(hs @ Ws.T, ht @ Wt.T)))
    True
    """
    mode = _mode(direction)
    res: FloatArray | tuple[FloatArray, tuple[FloatArray, FloatArray]] = _linear(
        student_hidden,
        student_weight,
        teacher_hidden,
        teacher_weight,
        mode,
        0.0,
        temperature,
        where,
        reduction,
        return_grad,
        chunk_size,
        lambda: _reference().linear_kl_divergence(
            student_hidden,
            student_weight,
            teacher_hidden,
            teacher_weight,
            temperature=temperature,
            direction=direction,
            where=where,
            reduction=reduction,
            return_grad=return_grad,
        ),
    )
    return res


linear_kl_divergence.__doc__ = (linear_kl_divergence.__doc__ or "") % _LINEAR_DOC


@overload
def linear_jensen_shannon(
    student_hidden: ArrayLike,
    student_weight: ArrayLike,
    teacher_hidden: ArrayLike,
    teacher_weight: ArrayLike,
    /,
    *,
    return_grad: Literal[False] = False,
    **kw: Unpack[LinearJSKeywords],
) -> FloatArray: ...


@overload
def linear_jensen_shannon(
    student_hidden: ArrayLike,
    student_weight: ArrayLike,
    teacher_hidden: ArrayLike,
    teacher_weight: ArrayLike,
    /,
    *,
    return_grad: Literal[True],
    **kw: Unpack[LinearJSKeywords],
) -> tuple[FloatArray, tuple[FloatArray, FloatArray]]: ...


@overload
def linear_jensen_shannon(
    student_hidden: ArrayLike,
    student_weight: ArrayLike,
    teacher_hidden: ArrayLike,
    teacher_weight: ArrayLike,
    /,
    *,
    return_grad: bool,
    **kw: Unpack[LinearJSKeywords],
) -> FloatArray | tuple[FloatArray, tuple[FloatArray, FloatArray]]: ...


@routed("linear_jensen_shannon")
def linear_jensen_shannon(
    student_hidden: ArrayLike,
    student_weight: ArrayLike,
    teacher_hidden: ArrayLike,
    teacher_weight: ArrayLike,
    /,
    *,
    beta: float = 0.5,
    temperature: float = 1.0,
    where: ArrayLike | None = None,
    reduction: DistillReduction = "batchmean",
    return_grad: bool = False,
    chunk_size: int | None = None,
) -> FloatArray | tuple[FloatArray, tuple[FloatArray, FloatArray]]:
    r""":func:`jensen_shannon` of ``(student_hidden @ student_weight.T,
    teacher_hidden @ teacher_weight.T)`` without materialising either logits matrix
    (the CPU counterpart of Liger-Kernel's ``LigerFusedLinearJSD``).
    %s
    Examples
    --------
    >>> import numpy as np
    >>> from softmaxkit import jensen_shannon, linear_jensen_shannon
    >>> rng = np.random.default_rng(0)
    >>> hs, Ws = rng.normal(size=(5, 3)), rng.normal(size=(11, 3))
    >>> ht, Wt = rng.normal(size=(5, 4)), rng.normal(size=(11, 4))
    >>> a = linear_jensen_shannon(hs, Ws, ht, Wt, beta=0.3, chunk_size=2)
    >>> bool(np.isclose(a, jensen_shannon(hs @ Ws.T, ht @ Wt.T, beta=0.3)))
    True
    """
    mode, b = _beta_mode(beta)
    res: FloatArray | tuple[FloatArray, tuple[FloatArray, FloatArray]] = _linear(
        student_hidden,
        student_weight,
        teacher_hidden,
        teacher_weight,
        mode,
        b,
        temperature,
        where,
        reduction,
        return_grad,
        chunk_size,
        lambda: _reference().linear_jensen_shannon(
            student_hidden,
            student_weight,
            teacher_hidden,
            teacher_weight,
            temperature=temperature,
            beta=beta,
            where=where,
            reduction=reduction,
            return_grad=return_grad,
        ),
    )
    return res


linear_jensen_shannon.__doc__ = (linear_jensen_shannon.__doc__ or "") % _LINEAR_DOC
