"""Float64 NumPy twins of :func:`softmaxkit.sample` and :func:`softmaxkit.sampling_probs`.

Written from the documented semantics with a full sort of each row (no threshold
search, no pruning), the same counter-based hash in vectorised ``uint64``
arithmetic, and exact keys for every kept entry: the oracle for the kernels.
"""

from __future__ import annotations

import math
from typing import Literal, Unpack, overload

import numpy as np

from .._core.sampleargs import _filters, _int_arg, _rows
from .._core.samplekw import SampleKeywords
from .._core.typing import ArrayLike, FloatArray, IntArray, Seed

__all__ = ["sample", "sampling_probs"]

_MASK = (1 << 64) - 1
_M1 = 0xBF58476D1CE4E5B9
_M2 = 0x94D049BB133111EB
_GOLD = 0x9E3779B97F4A7C15
_GOLD2 = 0xD1B54A32D192ED03


def _mix_int(z: int) -> int:
    z = ((z ^ (z >> 30)) * _M1) & _MASK
    z = ((z ^ (z >> 27)) * _M2) & _MASK
    return z ^ (z >> 31)


def _stream_base(seed: int, row: int, s: int) -> int:
    h = _mix_int((seed + _GOLD) & _MASK)
    h = _mix_int((h + (row + 1) * _GOLD) & _MASK)
    return _mix_int((h + (s + 1) * _GOLD2) & _MASK)


def _uniforms(base: int, n: int) -> np.ndarray:
    """``r_j`` for ``j < n`` of a stream (uint64 arrays wrap modulo 2**64)."""
    z = np.uint64(base) + (np.arange(1, n + 1, dtype=np.uint64) * np.uint64(_GOLD))
    z = (z ^ (z >> np.uint64(30))) * np.uint64(_M1)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(_M2)
    z = z ^ (z >> np.uint64(31))
    return ((z >> np.uint64(12)).astype(np.float64) + 0.5) * 2.0**-52


def _row_probs(v: np.ndarray, greedy: bool, k: int, p: float, logq: float, i: int) -> np.ndarray:
    if np.isnan(v).any():
        raise ValueError(f"row {i} of logits contains NaN")
    m = v.max()
    if m == -np.inf:
        raise ValueError(f"row {i} of logits is all -inf (nothing to sample)")
    if greedy or m == np.inf:
        top = (v == m).astype(np.float64)
        return top / top.sum()
    order = np.argsort(-v, kind="stable")
    sv = v[order]
    keep = v > -np.inf
    if k:
        keep &= v >= sv[k - 1]
    w = np.where(keep, np.exp(v - m), 0.0)
    if p < 1.0:
        cum = np.cumsum(w[order])
        q = int(np.searchsorted(cum, p * cum[-1], side="left"))
        keep &= v >= sv[min(q, v.size - 1)]
    keep &= (v - m) >= logq
    w = np.where(keep, w, 0.0)
    return w / w.sum()


def sampling_probs(
    logits: ArrayLike,
    /,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    min_p: float | None = None,
    axis: int = -1,
) -> FloatArray:
    """Float64 twin of :func:`softmaxkit.sampling_probs` (a full sort per row)."""
    x2, batch, ax = _rows(logits, axis)
    t, greedy, k, p, logq = _filters(temperature, top_k, top_p, min_p, x2.shape[1])
    with np.errstate(over="ignore"):
        v = x2.astype(np.float64) / t
    out = np.stack([_row_probs(v[i], greedy, k, p, logq, i) for i in range(v.shape[0])])
    out = out.reshape((*batch, x2.shape[1]))
    return np.moveaxis(out, -1, ax)


@overload
def sample(
    logits: ArrayLike,
    /,
    *,
    return_logprobs: Literal[False] = False,
    **kw: Unpack[SampleKeywords],
) -> IntArray: ...


@overload
def sample(
    logits: ArrayLike,
    /,
    *,
    return_logprobs: Literal[True],
    **kw: Unpack[SampleKeywords],
) -> tuple[IntArray, FloatArray]: ...


@overload
def sample(
    logits: ArrayLike,
    /,
    *,
    return_logprobs: bool,
    **kw: Unpack[SampleKeywords],
) -> IntArray | tuple[IntArray, FloatArray]: ...


def sample(
    logits: ArrayLike,
    /,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    min_p: float | None = None,
    num_samples: int = 1,
    seed: Seed = None,
    axis: int = -1,
    return_logprobs: bool = False,
    row_offset: int = 0,
) -> IntArray | tuple[IntArray, FloatArray]:
    """Float64 twin of :func:`softmaxkit.sample`: every kept entry's exact key.

    Keys are ``(v_j - m) - log(-log1p(-r_j))`` (``0 - ...`` at the maxima in tie mode),
    the argmax taking the first index on ties, as in the kernels.  ``seed`` is required.
    """
    if seed is None:
        raise ValueError("the reference sample needs an explicit seed")
    x2, batch, _ = _rows(logits, axis)
    n = x2.shape[1]
    t, greedy, k, p, logq = _filters(temperature, top_k, top_p, min_p, n)
    s_count = _int_arg(num_samples, "num_samples", 1)
    seed = _int_arg(seed, "seed", 0, 1 << 64)
    off = _int_arg(row_offset, "row_offset", 0, 1 << 62)
    with np.errstate(over="ignore"):
        v = x2.astype(np.float64) / t
    ids = np.empty((x2.shape[0], s_count), dtype=np.int64)
    lps = np.empty((x2.shape[0], s_count))
    for i in range(x2.shape[0]):
        probs = _row_probs(v[i], greedy, k, p, logq, i)
        kept = probs > 0
        m = v[i].max()
        tie = greedy or m == np.inf
        with np.errstate(invalid="ignore"):
            d = np.where(kept, 0.0 if tie else v[i] - m, -np.inf)
        for s in range(s_count):
            r = _uniforms(_stream_base(seed, off + i, s), n)
            key = np.where(kept, d - np.log(-np.log1p(-r)), -np.inf)
            j = int(np.argmax(key))
            ids[i, s] = j
            lps[i, s] = math.log(probs[j])
    ids = ids.reshape((*batch, s_count))
    if return_logprobs:
        return ids, lps.reshape((*batch, s_count))
    return ids
