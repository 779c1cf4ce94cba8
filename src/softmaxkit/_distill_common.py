"""Shared checks and row helpers of the distillation losses (:mod:`softmaxkit.distill`
and its linear variants in :mod:`softmaxkit._linear_distill`)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ._core.losscommon import check_real
from .drivers.eager import rows_view

REDUCTIONS = ("batchmean", "sum", "none", "mean")
DIRECTIONS = ("forward", "reverse")
_CHUNK_BYTES = 32 * 2**20


def _k() -> Any:
    from ._kernels import distill

    return distill


def _check_reduction(reduction: Any) -> str:
    if not isinstance(reduction, str) or reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}; got {reduction!r}")
    return reduction


def _mode(direction: Any) -> int:
    if not isinstance(direction, str) or direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}; got {direction!r}")
    mode: int = _k().FORWARD if direction == "forward" else _k().REVERSE
    return mode


def _beta_mode(beta: Any) -> tuple[int, float]:
    b = check_real("beta", beta, 0.0, 1.0)
    k = _k()
    if b == 0.0:
        return k.FORWARD, b
    if b == 1.0:
        return k.REVERSE, b
    return k.JSD, b


def _prep(arr: np.ndarray, ax: int, compute: Any, mask2: Any, pre_T: Any) -> np.ndarray:
    x2 = np.ascontiguousarray(rows_view(arr, (ax,)), dtype=compute)
    if pre_T is not None:
        with np.errstate(over="ignore", under="ignore"):
            x2 = x2 / pre_T
    if mask2 is not None:
        x2 = np.where(mask2, x2, -np.inf).astype(compute, copy=False)
    from ._kernels.view import readonly  # (imports Numba: not at module level)

    return readonly(x2)  # read-only for the kernels: one variant, no copy


def _empty_rows(x2: np.ndarray) -> np.ndarray:
    """True for rows with no entry above -inf (NaN counts as an entry)."""
    from ._kernels.losses import row_nonempty

    ne = np.empty(x2.shape[0], dtype=np.bool_)
    row_nonempty(x2, np.ones((1, 1), dtype=np.bool_)[:0].reshape(0, 0), False, ne)
    return ~ne


def _scales(active: np.ndarray, reduction: str, n_classes: int) -> tuple[np.ndarray, int]:
    count = int(np.count_nonzero(active))
    if reduction == "batchmean":
        c = 1.0 / count if count else 0.0
    elif reduction == "mean":
        tot = active.size * n_classes
        c = 1.0 / tot if tot else 0.0
    else:
        c = 1.0
    return np.where(active, c, 0.0), count


def _finish(per: np.ndarray, reduction: str, scale: np.ndarray, batch: Any, out_dtype: Any) -> Any:
    with np.errstate(over="ignore", invalid="ignore"):
        if reduction == "none":
            loss: Any = per.reshape(batch).astype(out_dtype)
            return loss[()] if loss.ndim == 0 else loss
        if reduction == "sum":
            return np.dtype(out_dtype).type(np.sum(per))
        return np.dtype(out_dtype).type(np.sum(per * scale) if per.size else 0.0)


def _check_pair(s: np.ndarray, t: np.ndarray, sname: str, tname: str) -> None:
    if s.shape != t.shape:
        raise ValueError(
            f"{sname} and {tname} must have the same shape; got {s.shape} and {t.shape}"
        )
