"""Sampling token ids from logits: temperature, top-k, top-p, min-p and a seeded race.

:func:`sample` draws from the filtered softmax of each row without forming it
(``docs/vocab.md``, "Sampling"); :func:`sampling_probs` returns that filtered
distribution.  The kernels are in ``softmaxkit._kernels.sampling``; the float64
twins in ``softmaxkit.reference``.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Literal, Unpack, overload

import numpy as np

from ._core import coldstart
from ._core.routes import routed
from ._core.sampleargs import _filters, _rows, _sample_args, _vocab_axis
from ._core.samplekw import SampleKeywords
from ._core.typing import ArrayLike, FloatArray, IntArray, Seed
from .softmax import _foreign

__all__ = ["sample", "sampling_probs"]


def _run(
    x2: Any,
    t: Any,
    greedy: Any,
    k: Any,
    p: Any,
    logq: Any,
    s: Any,
    seed: Any,
    row_offset: Any,
    need_z: Any,
) -> Any:
    from ._kernels import sampling as kern

    r = x2.shape[0]
    tokens = np.zeros((r, s), dtype=np.int64)
    info = np.full((r, 4), np.nan)
    if r:
        kern.sample_rows(
            x2, t, greedy, k, p, logq, s, np.uint64(seed), row_offset, need_z, tokens, info
        )
    return tokens, info


# False: every call takes the generic route (tests compare the two)
FAST_PATH = True
_FAST_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
_KERN: Any = None  # softmaxkit._kernels.sampling, once imported


def _sample_fast(
    x: np.ndarray,
    temperature: Any,
    top_k: Any,
    top_p: Any,
    min_p: Any,
    num_samples: Any,
    seed: Any,
    axis: Any,
    row_offset: Any,
    warm_only: bool,
) -> Any:
    """:func:`sample` of a C-contiguous float32/float64 ndarray along its last axis,
    with plain ``int`` arguments, run on the calling thread: the ids, or None for
    every other call (the generic route then checks and runs it).

    The same kernel on the same rows as the generic route (the same tokens), reached
    through a few Python calls (``_kernels.sampling.entry.sample_serial``): the
    generic route's ``_rows`` / ``_check_rows`` / driver cost 0.2-0.3 ms on their
    own when a call finds the caches cold (after another library's call).
    ``warm_only``: only the kernels that have run in this process (``sample_serial``),
    for calls that skip the generic route's cold-start handling."""
    global _KERN
    nd = x.ndim
    if (
        nd == 0
        or x.dtype not in _FAST_DTYPES
        or not x.flags.c_contiguous
        or type(axis) is not int
        or (axis != -1 and axis != nd - 1)
        or type(num_samples) is not int
        or num_samples < 1
        or type(seed) is not int
        or not 0 <= seed < 1 << 64
        or type(row_offset) is not int
        or not 0 <= row_offset < 1 << 62
    ):
        return None
    n = x.shape[-1]
    if n == 0 or x.size == 0:
        return None
    tt = type(temperature)
    if (
        (tt is float or tt is int)
        and 0.0 < temperature < math.inf
        and top_k is None
        and min_p is None
        and (top_p is None or (type(top_p) is float and 0.0 < top_p <= 1.0))
    ):
        # what _filters returns for these (its checks cost 0.015 ms with cold caches)
        t, greedy, k, p, logq = float(temperature), False, 0, (top_p or 1.0), -math.inf
    else:
        t, greedy, k, p, logq = _filters(temperature, top_k, top_p, min_p, n)
    if _KERN is None:
        from ._kernels import sampling as kern

        _KERN = kern
    x2 = x.reshape(-1, n)
    res = _KERN.sample_serial(x2, t, greedy, k, p, logq, num_samples, np.uint64(seed),
                              row_offset, warm_only)  # fmt: skip
    if res is None:
        return None
    tokens, info, bad = res
    batch = x.shape[:-1]
    if bad >= 0:
        _check_rows(info, batch)
    return tokens.reshape((*batch, num_samples))


def _check_rows(info: Any, batch: Any) -> Any:
    status = info[:, 0]
    bad = np.flatnonzero((status == 1.0) | (status == 2.0))
    if bad.size:
        i = int(bad[0])
        where = f"row {i}"
        if len(batch) > 1:
            where += f" (batch index {tuple(int(v) for v in np.unravel_index(i, batch))})"
        what = "contains NaN" if status[i] == 2.0 else "is all -inf (nothing to sample)"
        raise ValueError(f"{where} of logits {what}")


def _dask_axis(
    logits: Any,
    axis: int,
    temperature: float,
    top_k: int | None,
    top_p: float | None,
    min_p: float | None,
) -> int:
    """Check a dask ``logits``' axis and the filters without reading the data."""
    ax = _vocab_axis(logits.shape, axis)
    _filters(temperature, top_k, top_p, min_p, logits.shape[ax])
    return ax


def _dask_sample(
    logits: Any,
    temperature: float,
    top_k: int | None,
    top_p: float | None,
    min_p: float | None,
    num_samples: int,
    seed: Seed,
    axis: int,
    return_logprobs: bool,
    row_offset: int,
) -> Any:
    """:func:`sample` of a dask array: checked here, sampled lazily per block of rows."""
    from .drivers.dask import sampling as _dask_sampling

    ax = _dask_axis(logits, axis, temperature, top_k, top_p, min_p)
    s, seed, off, lp = _sample_args(num_samples, seed, row_offset, return_logprobs)
    impl = functools.partial(
        sample, temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p, seed=seed
    )
    return _dask_sampling.sample(logits, impl, axis=ax, num_samples=s, row_offset=off,
                                 return_logprobs=lp)  # fmt: skip


def _float64(*args: Any, **kwargs: Any) -> Any:
    """The dtype of the log-probabilities and probabilities (cold-start fallback)."""
    return np.dtype(np.float64)


@routed("sample")
# (the twin's tokens are the kernel's: the same keys, exact; tests/test_sampling.py)
@coldstart.fallback("softmaxkit.reference._sampling:sample", _float64)
def _sample(
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
    """:func:`sample` by the generic route: any array-like (a torch tensor goes to the
    torch adapter, a Dask array to the Dask driver), every option; on a cold kernel
    cache a small call takes the float64 twin (``coldstart.fallback``)."""
    if _foreign(logits) == "dask":
        lazy: IntArray | tuple[IntArray, FloatArray] = _dask_sample(
            logits,
            temperature,
            top_k,
            top_p,
            min_p,
            num_samples,
            seed,
            axis,
            return_logprobs,
            row_offset,
        )  # fmt: skip  (a Dask array, typed as what NumPy input gives)
        return lazy
    if type(logits) is np.ndarray and return_logprobs is False and FAST_PATH:
        res = _sample_fast(
            logits, temperature, top_k, top_p, min_p, num_samples, seed, axis, row_offset, False
        )
        if res is not None:
            fast_ids: IntArray = res
            return fast_ids
    x2, batch, _ = _rows(logits, axis)
    n = x2.shape[1]
    t, greedy, k, p, logq = _filters(temperature, top_k, top_p, min_p, n)
    s, seed, off, lp = _sample_args(num_samples, seed, row_offset, return_logprobs)
    tokens, info = _run(x2, t, greedy, k, p, logq, s, seed, off, lp)
    _check_rows(info, batch)
    ids: IntArray = tokens.reshape((*batch, s))
    if not return_logprobs:
        return ids
    m = info[:, 2:3]
    logz = info[:, 3:4]
    with np.errstate(invalid="ignore"):  # +inf - +inf in tie rows, replaced below
        d = np.take_along_axis(x2, tokens, axis=1).astype(np.float64) / t - m
    lp = np.where(info[:, 0:1] == 3.0, 0.0, d) - logz
    return ids, lp.reshape((*batch, s))


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
    r"""Sample token ids from each row of ``logits`` under temperature, top-k, top-p
    and min-p, without forming the probabilities.

    Per row (along ``axis``) with ``v = logits / temperature`` and ``m = max v``, the
    filters act in Hugging Face transformers' order, each on what the previous one
    kept:

    1. top-k keeps ``v_j >= v_(k)`` (the k-th largest value; ties at it are kept);
    2. top-p keeps the smallest set of largest entries whose probability
       (renormalised over the top-k set) reaches ``top_p``, the entry that crosses
       included (with every entry equal to it);
    3. min-p keeps ``p_j >= min_p * p_max``, i.e. ``v_j - m >= log(min_p)``.

    Token ``j`` of the kept set ``K`` is drawn with probability
    ``p_j = exp(v_j - m) / Z``, ``Z = sum_{l in K} exp(v_l - m)``, by a race:

    .. math::

        j^\ast = \arg\max_{j \in K} \; (v_j - m) - \log E_j, \qquad
        E_j = -\log(1 - r_j) \sim \mathrm{Exp}(1),

    with ``r_j`` a uniform made by a counter-based hash of ``(seed, row, j, sample)``
    only (Gumbel-max trick).

    Parameters
    ----------
    logits : array_like
        Logits, at least 1-d (float16/32/64; integer and bool read as float64).
    temperature : float, default 1.0
        Finite, ``>= 0``.  ``0`` is the limit ``T -> 0``: uniform among the maximal
        entries (plain argmax when the maximum is unique); the filters then do not
        matter, as every filter keeps the maximum.
    top_k : int, optional
        ``>= 1``; ``top_k >= n`` keeps every entry.
    top_p : float, optional
        In ``(0, 1]``; ``1`` keeps every entry.
    min_p : float, optional
        In ``[0, 1]``; ``0`` keeps every entry, ``1`` only the maxima.
    num_samples : int, default 1
        Draws per row, with replacement (independent races).
    seed : int, optional
        In ``[0, 2**64)``.  ``None`` draws a fresh seed from the OS.
    axis : int, default -1
        The vocabulary axis.
    return_logprobs : bool, default False
        Also return ``log p_j`` of each drawn token under the filtered distribution.
    row_offset : int, default 0
        Added to the row index the draws use: row ``i`` of the batch (C order over the
        axes other than ``axis``) draws as row ``row_offset + i``.  Sampling
        ``logits[a:b]`` with ``row_offset=a`` gives the rows ``a:b`` of the whole
        batch's result.

    Returns
    -------
    ids : ndarray of int64
        Shape ``logits.shape`` without ``axis``, plus a last axis of ``num_samples``
        (``[..., num_samples]``, also for ``num_samples=1``, like
        ``torch.multinomial``).
    logprobs : ndarray of float64
        Only with ``return_logprobs=True``: same shape as ``ids``.

    Raises
    ------
    ValueError
        ``temperature`` negative, NaN or infinite; ``top_k < 1``; ``top_p`` outside
        ``(0, 1]``; ``min_p`` outside ``[0, 1]``; ``num_samples < 1``; ``seed``
        outside ``[0, 2**64)``; a size-0 ``axis``; a row that is all ``-inf`` or
        contains NaN (the message names the row).
    TypeError
        A non-integer ``top_k``, ``num_samples``, ``seed``, ``row_offset`` or ``axis``.

    Notes
    -----
    Reproducibility: the uniform of element ``j`` of row ``i``, sample ``s`` depends
    on ``(seed, row_offset + i, j, s)`` alone, so the tokens do not depend on the
    thread count or on how the batch is split (``tests/test_sampling.py``).  A Dask
    ``logits`` gives lazy Dask outputs with the same tokens for any chunking
    (``docs/vocab.md``, "Reproducibility").

    Edge cases: ``-inf`` entries are never drawn; a row whose maximum is ``+inf``
    draws uniformly among its ``+inf`` entries (the dense contract's ``1/k``); an
    all ``-inf`` row or a row with NaN raises ``ValueError``, never a silent token.
    Ties: top-k and top-p keep every entry equal to the threshold (transformers'
    top-p may split a group of exactly equal logits at its boundary; we do not);
    equal race keys go to the smaller index.

    Passes and memory (``docs/vocab.md``): every row is first scanned for NaN and its
    maximum; plain and min-p sampling then run the race in one more read; top-k
    (``k <= 256``) needs one read in all, into a sorted buffer of ``k`` entries; top-p
    computes the normaliser and gathers the entries above a bound on the threshold
    (two reads) and finds the threshold among those candidates, never sorting the
    row.  Peak extra memory: the outputs, a few kB per thread and, for top-p (or
    ``top_k > 256``), up to ``24 n`` bytes per thread (``n`` the row length; ``28 n``
    for float32 top-p at temperature 1), kept by the thread for its next call; a copy
    of ``logits`` when ``axis`` is not the last contiguous axis or the dtype is not
    float32/float64.

    Examples
    --------
    >>> import numpy as np
    >>> from softmaxkit import sample
    >>> logits = np.array([[2.0, 1.0, 0.5, -1.0], [0.0, 0.0, 5.0, -np.inf]])
    >>> ids = sample(logits, top_p=0.9, seed=0, num_samples=4)
    >>> ids.shape
    (2, 4)
    >>> bool(np.isin(ids[1], [2]).all())  # row 1: token 2 alone holds >= 90 %
    True
    >>> sample(logits, temperature=0, seed=0)  # greedy
    array([[0],
           [2]])
    """
    if (
        type(logits) is np.ndarray
        and return_logprobs is False
        and FAST_PATH
        and not coldstart._FORCE
    ):
        # the routes that have run here (compiled kernels) skip the decorators of the
        # generic route: their Python cost 0.04 ms with cold caches
        res = _sample_fast(
            logits, temperature, top_k, top_p, min_p, num_samples, seed, axis, row_offset, True
        )
        if res is not None:
            ids: IntArray = res
            return ids
    return _sample(
        logits,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        min_p=min_p,
        num_samples=num_samples,
        seed=seed,
        axis=axis,
        return_logprobs=return_logprobs,
        row_offset=row_offset,
    )


@routed("sampling_probs")
@coldstart.fallback("softmaxkit.reference._sampling:sampling_probs", _float64)
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
    r"""The filtered distribution :func:`sample` draws from, as dense probabilities.

    ``p_j = exp(v_j - m) / Z`` on the kept set and ``0`` elsewhere, with the filters
    and edge cases of :func:`sample` (``v = logits / temperature``, ``m = max v``,
    ``Z`` the kept mass); ``temperature=0`` and rows with ``+inf`` give ``1/c`` on
    their ``c`` maximal entries.

    .. math::

        p_j = \frac{e^{v_j - m}\,[j \in K]}{\sum_{l \in K} e^{v_l - m}}

    Parameters
    ----------
    logits : array_like
        Logits, at least 1-d.
    temperature, top_k, top_p, min_p
        As in :func:`sample`.
    axis : int, default -1
        The vocabulary axis.

    Returns
    -------
    ndarray of float64
        Shape of ``logits``; each row sums to 1.

    Raises
    ------
    ValueError
        As :func:`sample`: bad filter values, all ``-inf`` rows, rows with NaN.

    Notes
    -----
    The kept set and ``Z`` come from the sampling kernel (no race); the dense output
    is then computed in place in the float64 output.  Peak extra memory: the output
    plus two boolean masks of its shape (an eighth of its size each).  A Dask
    ``logits`` gives a lazy Dask result (one task per block of
    rows; the vocabulary axis becomes one chunk).

    Examples
    --------
    >>> import numpy as np
    >>> from softmaxkit import sampling_probs
    >>> sampling_probs(np.log([0.5, 0.3, 0.15, 0.05]), top_p=0.75).round(4)
    array([0.625, 0.375, 0.   , 0.   ])
    """
    if _foreign(logits) == "dask":
        from .drivers.dask import sampling as _dask_sampling

        ax = _dask_axis(logits, axis, temperature, top_k, top_p, min_p)
        impl = functools.partial(
            sampling_probs, temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p
        )
        probs: FloatArray = _dask_sampling.sampling_probs(logits, impl, axis=ax)
        return probs
    x2, batch, ax = _rows(logits, axis)
    n = x2.shape[1]
    t, greedy, k, p, logq = _filters(temperature, top_k, top_p, min_p, n)
    _, info = _run(x2, t, greedy, k, p, logq, 0, 0, 0, True)
    _check_rows(info, batch)
    # in place in the output (v = x / T, then d = v - m, then e^(d - log Z)) with
    # boolean masks beside it: the same operations in the same order as
    # where(kept, exp(where(tie, 0, v - m) - log Z), 0), without float64 temporaries
    with np.errstate(invalid="ignore", over="ignore"):
        out = x2.astype(np.float64)
        out /= t
        m = info[:, 2:3]
        kept = out >= info[:, 1:2]
        kept &= out > -np.inf
        ties = np.flatnonzero(info[:, 0] == 3.0)  # rows that keep only their maxima
        tie_kept = out[ties] == m[ties]
        out -= m
        kept &= out >= logq
        out -= info[:, 3:4]
        np.exp(out, out=out)
        if ties.size:
            kept[ties] = tie_kept
            out[ties] = np.exp(-info[ties, 3:4])
        np.copyto(out, 0.0, where=~kept)
    return np.moveaxis(out.reshape((*batch, n)), -1, ax)
