"""Argument checks of the sampling functions, shared by ``softmaxkit.sampling``, its
Dask driver and its float64 twin (``softmaxkit.reference``)."""

from __future__ import annotations

import math
import numbers
import secrets
from typing import Any

import numpy as np

from ..drivers.eager import rows_view
from .validate import as_input_array, normalize_axis

__all__ = ["_filters", "_int_arg", "_real_arg", "_rows", "_sample_args", "_vocab_axis"]


def _int_arg(value: Any, name: str, low: int, high: int | None = None, hi_txt: str = "") -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int; got {value!r}")
    v = int(value)
    if v < low or (high is not None and v >= high):
        rng = f">= {low}" if high is None else f"in [{low}, {hi_txt or high})"
        raise ValueError(f"{name} must be an int {rng}; got {name}={v}")
    return v


def _real_arg(value: Any, name: str) -> float:
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number; got {value!r}")
    return float(value)


def _filters(temperature: Any, top_k: Any, top_p: Any, min_p: Any, n: Any) -> Any:
    """Validated ``(T, greedy, K, P, logq)`` for the kernels (``K = 0``: no top-k)."""
    t = _real_arg(temperature, "temperature")
    if not (math.isfinite(t) and t >= 0.0):
        raise ValueError(
            f"temperature must be finite and >= 0 (0 means greedy: the maxima); got {t!r}"
        )
    k = 0
    if top_k is not None:
        k = _int_arg(top_k, "top_k", 1)
        if k >= n:
            k = 0  # keeps every entry
    p = 1.0
    if top_p is not None:
        p = _real_arg(top_p, "top_p")
        if not 0.0 < p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1]; got top_p={p!r}")
    logq = -math.inf
    if min_p is not None:
        q = _real_arg(min_p, "min_p")
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"min_p must be in [0, 1]; got min_p={q!r}")
        if q > 0.0:
            logq = math.log(q)
    greedy = t == 0.0
    return (1.0 if greedy else t), greedy, k, p, logq


def _vocab_axis(shape: tuple[int, ...], axis: Any) -> int:
    """The vocabulary axis of logits of ``shape``, checked (at least 1-d, non-empty)."""
    if len(shape) == 0:
        raise ValueError("logits must have at least one dimension; got a 0-d array")
    if isinstance(axis, bool) or not isinstance(axis, numbers.Integral):
        raise TypeError(f"axis must be an int; got {axis!r}")
    (ax,) = normalize_axis(axis, len(shape))
    if shape[ax] == 0:
        raise ValueError(f"logits has size 0 along axis {axis}: there is nothing to sample")
    return ax


def _sample_args(
    num_samples: Any, seed: Any, row_offset: Any, return_logprobs: Any
) -> tuple[int, int, int, bool]:
    """Checked ``(num_samples, seed, row_offset, return_logprobs)``; a fresh seed for None."""
    s = _int_arg(num_samples, "num_samples", 1)
    seed = secrets.randbits(64) if seed is None else _int_arg(seed, "seed", 0, 1 << 64, "2**64")
    off = _int_arg(row_offset, "row_offset", 0, 1 << 62, "2**62")
    if not isinstance(return_logprobs, bool | np.bool_):
        raise TypeError(f"return_logprobs must be a bool; got {return_logprobs!r}")
    return s, seed, off, bool(return_logprobs)


def _rows(logits: Any, axis: Any) -> Any:
    """``(x2 [R, n] C-contiguous float32/64, batch shape, axis)``."""
    arr = as_input_array(logits, "logits")
    ax = _vocab_axis(arr.shape, axis)
    batch = tuple(s for i, s in enumerate(arr.shape) if i != ax)
    x2 = rows_view(arr, (ax,))
    if x2.dtype not in (np.float32, np.float64):
        x2 = x2.astype(np.float32 if x2.dtype == np.float16 else np.float64)
    return np.ascontiguousarray(x2), batch, ax
