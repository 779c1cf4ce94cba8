"""NumPy driver of the signed log-space matrix product (``logmatmulexp`` with
``a_sign`` / ``b_sign`` / ``return_sign``), beside the unsigned one of
``eager_segments.py``; kernels from ``_kernels/lme.py`` (loaded on first use).

The blocked form of the unsigned product with signed factors: per matrix,
``S = (sA e^{A - a}) @ (sB e^{B - b})`` through BLAS in blocks of the contracted axis,
then ``log|S| + a_i + b_k`` and ``sign(S)``; entries with ``|S|`` below the underflow
threshold (cancelled or underflowed, exact zeros included) are recomputed directly.
The maths and the accuracy statement: ``docs/segments.md``.
"""

from __future__ import annotations

import numpy as np

from .._core.blas import matmul
from .eager_segments import _BI, _BJ, _LOST, finite_max

__all__ = ["lme_signed_batched", "sign_of"]


def _k():
    from .._kernels import scan as k

    return k


def sign_of(s, name: str, shape: tuple, compute) -> np.ndarray:
    """``np.sign`` of the sign array ``s`` (broadcast to ``shape``), in ``compute``.

    ``None`` is all ``+1``.  Only the sign of each value is read: a zero takes its
    entry out of the sum, NaN makes every result it enters NaN."""
    if s is None:
        return np.broadcast_to(np.ones((), compute), shape)
    arr = np.asarray(s)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be a real or bool array; got dtype {arr.dtype}")
    try:
        arr = np.broadcast_to(arr, shape)
    except ValueError:
        raise ValueError(
            f"{name} must broadcast to the shape of its matrix {shape}; got shape {arr.shape}"
        ) from None
    return np.sign(arr.astype(compute, copy=False))


def _signed_2d(A, B, sA, sB, out, sgn):
    """Signed logmatmulexp of 2-D C-contiguous ``A`` [I, J], ``B`` [J, K] (with sign
    arrays of the same shapes) into ``out`` (log-magnitude) and ``sgn`` [I, K]."""
    from .._kernels._parallel import run, threads_for

    k = _k()
    I, J = A.shape
    K = B.shape[1]
    if I == 0 or K == 0:
        return
    if J == 0:
        out[...] = -np.inf
        sgn[...] = 0.0
        return
    # entries of sign 0 take no part: -inf, so they neither set the shift nor make
    # inf * 0 = NaN in the products (sign NaN != 0: kept, and its NaN propagates)
    As = np.where(sA != 0, A, -np.inf)
    Bs = np.where(sB != 0, B, -np.inf)
    a = finite_max(As, 1)
    b = finite_max(Bs, 0)
    bj = min(_BJ, J)
    bi = min(_BI, I)
    eB = np.empty((bj, K), A.dtype)
    eA = np.empty((bi, bj), A.dtype)
    P = np.empty((bi, K), A.dtype)
    with np.errstate(invalid="ignore"):  # inf - inf: the NaN of the naive form
        for j0 in range(0, J, bj):
            j1 = min(J, j0 + bj)
            eBj = eB[: j1 - j0]
            run(k.exp_shift_cols, j1 - j0, threads_for(eBj.size), Bs[j0:j1], b, eBj)
            eBj *= sB[j0:j1]
            for i0 in range(0, I, bi):
                i1 = min(I, i0 + bi)
                eAi = eA[: i1 - i0, : j1 - j0]
                Ai = np.ascontiguousarray(As[i0:i1, j0:j1])
                run(k.exp_shift_rows, i1 - i0, threads_for(Ai.size), Ai, a[i0:i1], eAi)
                eAi *= sA[i0:i1, j0:j1]
                if j0 == 0:
                    matmul(eAi, eBj, out=out[i0:i1])
                else:
                    Pi = P[: i1 - i0]
                    matmul(eAi, eBj, out=Pi)
                    out[i0:i1] += Pi
        np.sign(out, out=sgn)
        np.abs(out, out=out)
        lost = np.nonzero(out < _LOST[A.dtype])
    run(k.log_finish, I, threads_for(out.size), out, a, b)
    if lost[0].size:
        ii = lost[0].astype(np.int64)
        kk = lost[1].astype(np.int64)
        res = np.empty(ii.size)
        rs = np.empty(ii.size)
        run(k.direct_entries_signed, ii.size, threads_for(ii.size * J), As, Bs, sA, sB,
            ii, kk, res, rs)  # fmt: skip
        out[ii, kk] = res
        sgn[ii, kk] = rs


def lme_signed_batched(a, b, sa, sb, batch: tuple, compute, res, sgn) -> None:
    """Signed logmatmulexp of ``a`` [..., I, J], ``b`` [..., J, K] with the sign
    arrays ``sa``, ``sb`` (shapes of ``a``, ``b``, from :func:`sign_of`) into ``res``
    and ``sgn`` [*batch, I, K], one matrix at a time (C-contiguous ``compute`` copies)."""
    ab = np.broadcast_to(a, batch + a.shape[-2:])
    bb = np.broadcast_to(b, batch + b.shape[-2:])
    sab = np.broadcast_to(sa, batch + a.shape[-2:])
    sbb = np.broadcast_to(sb, batch + b.shape[-2:])
    for idx in np.ndindex(*batch):
        _signed_2d(
            np.ascontiguousarray(ab[idx], dtype=compute),
            np.ascontiguousarray(bb[idx], dtype=compute),
            np.ascontiguousarray(sab[idx], dtype=compute),
            np.ascontiguousarray(sbb[idx], dtype=compute),
            res[idx],
            sgn[idx],
        )
