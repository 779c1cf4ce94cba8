"""Argument checks and target handling shared by ``losses.py`` and ``reference``.

Private.  Every check raises a built-in exception naming the argument, the
constraint and the value (``_core/validate.py`` style); positions in messages are
NumPy index tuples of the *target* array.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np

from .validate import as_input_array, normalize_axis

REDUCTIONS = ("mean", "sum", "none")


def check_reduction(reduction: Any) -> str:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}; got {reduction!r}")
    return reduction


def check_real(name: str, value: Any, lo: float, hi: float = math.inf, hi_open=False) -> float:
    """A finite real in [lo, hi] (or [lo, hi) with ``hi_open``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        if isinstance(value, np.ndarray) and value.ndim == 0:
            return check_real(name, value.item(), lo, hi, hi_open)
        raise TypeError(f"{name} must be a real number; got {value!r}")
    v = float(value)
    ok = math.isfinite(v) and v >= lo and (v < hi if hi_open else v <= hi)
    if not ok:
        rng = f"[{lo}, {hi})" if hi_open else f"[{lo}, {hi}]"
        raise ValueError(f"{name} must be finite and in {rng}; got {value!r}")
    return v


def check_int_or_none(name: str, value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int or None; got {value!r}")
    return int(value)


def class_axis(axis: Any, ndim: int) -> int:
    """The single class axis (an int, or a 1-tuple); tuples of several axes are refused."""
    if isinstance(axis, tuple | list) and len(axis) != 1:
        raise TypeError(f"axis must be a single int (the class axis) for losses; got {axis!r}")
    if axis is None:
        raise TypeError("axis must be a single int (the class axis) for losses; got None")
    if ndim == 0:
        raise ValueError("logits must have at least one dimension (the classes); got a 0-d array")
    return normalize_axis(axis, ndim)[0]


def class_weights(weight: Any, n_classes: int) -> np.ndarray | None:
    """Per-class weights as a float64 [C] array (finite values)."""
    if weight is None:
        return None
    w = as_input_array(weight, "weight").astype(np.float64)
    if w.shape != (n_classes,):
        raise ValueError(f"weight must have shape ({n_classes},) (one per class); got {w.shape}")
    if not np.all(np.isfinite(w)):
        bad = tuple(int(i) for i in np.argwhere(~np.isfinite(w))[0])
        raise ValueError(f"weight must be finite; weight[{bad[0]}] = {w[bad]}")
    return w


def _at(idx) -> str:
    """``target[i, j]`` for a position, ``target`` for the 0-d case."""
    return f"target[{', '.join(str(int(i)) for i in idx)}]" if len(idx) else "target"


def parse_target(
    target: Any,
    logits_shape: tuple[int, ...],
    axis: int,
    ignore_index: int | None,
) -> tuple[str, np.ndarray]:
    """Classify and validate ``target``: ``("index", int64 array)`` or ``("prob", float array)``.

    The shape decides: the logits' shape without ``axis`` means class indices, the
    logits' shape means probabilities.  Index targets may be integers, or floats
    holding integral values; anything else raises with the first bad position.
    """
    t = np.asarray(target)
    reduced = logits_shape[:axis] + logits_shape[axis + 1 :]
    n_classes = logits_shape[axis]
    if t.shape == tuple(logits_shape) and t.shape != reduced:
        if t.dtype.kind not in "biuf":
            raise TypeError(f"probability target must be real numbers; got dtype {t.dtype}")
        return "prob", t
    if t.shape != reduced:
        raise ValueError(
            f"target has shape {t.shape}; expected {reduced} (class indices) or "
            f"{tuple(logits_shape)} (class probabilities) for logits of shape "
            f"{tuple(logits_shape)} with class axis {axis}"
        )
    kind = t.dtype.kind
    if kind == "b" or kind not in "iuf":
        raise TypeError(f"class-index target must have an integer dtype; got dtype {t.dtype}")
    if kind == "f":
        with np.errstate(invalid="ignore"):
            bad = ~np.isfinite(t) | (np.floor(t) != t)
        if bad.any():
            pos = np.argwhere(bad)[0]
            raise ValueError(
                f"class-index target must hold integers; {_at(pos)} = "
                f"{t[tuple(pos)].item()!r} is not an integer"
            )
        if t.size and np.abs(t).max() >= 2.0**62:
            pos = np.argwhere(np.abs(t) >= 2.0**62)[0]
            raise ValueError(
                f"{_at(pos)} = {t[tuple(pos)]!r} is not a class index in [0, {n_classes})"
            )
    return "index", class_indices(t, n_classes, ignore_index)


def class_indices(t: np.ndarray, n_classes: int, ignore_index, offset=None) -> np.ndarray:
    """Integral-valued target ``t`` as int64, each a class in [0, n_classes) or
    ``ignore_index``; the error names the first bad position (plus ``offset``, the
    block's origin, for the Dask path).  uint64 values past the int64 range are
    clamped first so that they are reported as out of range, not wrapped."""
    if t.dtype.kind == "u" and t.dtype.itemsize == 8 and t.size:
        if t.max() > np.iinfo(np.int64).max:
            t = np.minimum(t, np.uint64(np.iinfo(np.int64).max))
    ti = t.astype(np.int64)
    valid = (ti >= 0) & (ti < n_classes)
    if ignore_index is not None:
        valid |= ti == ignore_index
    if not valid.all():
        pos = np.argwhere(~valid)[0]
        at = pos if offset is None else pos + offset
        extra = f" or ignore_index={ignore_index}" if ignore_index is not None else ""
        raise ValueError(
            f"{_at(at)} = {ti[tuple(pos)]} is not a class index in [0, {n_classes}){extra}"
        )
    return ti


def check_prob_target(t: np.ndarray, axis: int) -> None:
    """Probability targets must be finite and >= 0; the error names the first bad
    entry and its row (the position without ``axis``).  Rows need not sum to 1.
    Two reductions (min >= 0 rules out NaN too; max finite rules out inf), no
    temporary array unless the check fails."""
    if t.size == 0:
        return
    with np.errstate(invalid="ignore"):
        if t.min() >= 0 and np.isfinite(t.max()):
            return
        bad = ~np.isfinite(t) | (t < 0)
    if bad.any():
        pos = tuple(int(i) for i in np.argwhere(bad)[0])
        row = pos[:axis] + pos[axis + 1 :]
        raise ValueError(
            f"probability target must be finite and >= 0; {_at(pos)} = "
            f"{t[pos].item()!r} (in row {row} of the class axis {axis})"
        )
