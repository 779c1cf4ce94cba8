"""The online normalizer as a public object, streaming softmax, and fused top-k.

:class:`Normalizer` holds the mergeable state ``(m, s)`` of Milakov &
Gimelshein's online normalizer (arXiv:1805.02867) per row: the running maximum
``m`` of ``v = x / T`` and ``s = sum exp(v - m)``, **natural base** (``e``, not
2).  Partial states computed from disjoint parts of the data -- chunks of a long
row, shards on other processes or machines -- merge into the state of the whole.
The maths, conventions and pitfalls are in ``docs/online.md``.

The streaming functions (:func:`stream_logsumexp`, :func:`stream_softmax`,
:func:`stream_normalizer`) run the same state over ``.npy`` files and iterables
of chunks larger than memory; :func:`topk_softmax` fuses the normalizer with a
top-k selection.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from typing import Any

import numpy as np

from ._core import state as _state
from ._core.validate import (
    as_input_array,
    normalize_axis,
    resolve_dtype,
    validate_temperature,
    validate_where,
)
from .drivers.eager import rows_view
from .softmax import _foreign, _torch_route

__all__ = [
    "Normalizer",
    "stream_logsumexp",
    "stream_normalizer",
    "stream_softmax",
    "topk_softmax",
]

_STATE_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _state_dtype(dtype: Any) -> np.dtype:
    try:
        d = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"dtype must be float32 or float64; got {dtype!r}") from None
    if d not in _STATE_DTYPES:
        raise TypeError(f"dtype must be float32 or float64; got {d}")
    return d


def _shape(shape: Any) -> tuple[int, ...]:
    if isinstance(shape, numbers.Integral) and not isinstance(shape, bool):
        shape = (shape,)
    if isinstance(shape, str | bytes) or any(
        isinstance(n, bool) or not isinstance(n, numbers.Integral) for n in _items(shape)
    ):
        raise TypeError(f"shape must be an int or a tuple of ints; got {shape!r}")
    try:
        out = tuple(int(n) for n in shape)
    except TypeError:
        raise TypeError(f"shape must be an int or a tuple of ints; got {shape!r}") from None
    if any(n < 0 for n in out):
        raise ValueError(f"shape must have non-negative sizes; got {shape!r}")
    return out


def _items(shape: Any) -> tuple[Any, ...]:
    try:
        return tuple(shape)
    except TypeError:
        raise TypeError(f"shape must be an int or a tuple of ints; got {shape!r}") from None


def _scalar(a: np.ndarray):
    return a[()] if a.ndim == 0 else a


class Normalizer:
    r"""Mergeable state of the online softmax normalizer, one per row.

    For each row (each element of the *batch shape*) it holds

    .. math::

        m = \max_j v_j, \qquad s = \sum_j e^{v_j - m}, \qquad v = x / T,

    over every value folded in so far, in the **natural base** (``logsumexp =
    m + ln s``).  Two states merge by

    .. math::

        m = \max(m_1, m_2), \qquad s = s_1 e^{m_1 - m} + s_2 e^{m_2 - m},

    which is associative and commutative; the empty state ``(-inf, 0)`` is its
    identity.  Conventions: a row holding ``+inf`` has ``(+inf, count of +inf)``;
    a row holding NaN has ``(NaN, NaN)`` and NaN wins every merge; ``e^{m_i - m}``
    is taken as exactly 1 when ``m_i == m``, so merging two empty states gives the
    empty state (never NaN, unlike FlashInfer's ``merge_state`` before #4051).

    Parameters
    ----------
    m, s : array_like
        The state arrays, of the batch shape (``()`` for a single row).  Use
        :meth:`empty` to start from nothing.
    temperature : float, default 1.0
        The state is of ``x / temperature``; every :meth:`update`,
        :meth:`softmax` and :meth:`log_softmax` uses it, and only states with the
        same temperature merge.
    dtype : {float64, float32}, optional
        dtype of the stored arrays (default: float64, or float32 when both ``m``
        and ``s`` are float32).  Arithmetic is float64 either way.

    Notes
    -----
    Peak extra memory: :meth:`update` as the dense :func:`softmaxkit.logsumexp`
    on the chunk (a copy of the chunk only when its layout needs it) plus two
    float64 arrays of the batch shape.  States pickle, and :meth:`to_arrays` /
    :meth:`from_arrays` round-trip through ``numpy.savez`` / ``numpy.load``.

    Examples
    --------
    The seed notebook: two halves of a list, their states, merged, equal the whole.

    >>> import numpy as np
    >>> from softmaxkit import Normalizer, logsumexp
    >>> x = np.array([0.1, 0.3, 0.08, -0.09, 0.7, 0.2])
    >>> a = Normalizer.empty(()).update(x[:3])
    >>> b = Normalizer.empty(()).update(x[3:])
    >>> float(a.m), round(float(a.s), 6)
    (0.3, 2.62125)
    >>> whole = a | b
    >>> bool(np.isclose(whole.logsumexp(), logsumexp(x)))
    True
    >>> whole.softmax(x).sum().round(12)
    np.float64(1.0)
    """

    __slots__ = ("_m", "_s", "_temperature")

    def __init__(self, m, s, *, temperature=1.0, dtype=None):
        m_arr = np.asarray(m)
        s_arr = np.asarray(s)
        if m_arr.dtype.kind not in "fiu" or s_arr.dtype.kind not in "fiu":
            raise TypeError(
                f"m and s must be real arrays; got dtypes {m_arr.dtype} and {s_arr.dtype}"
            )
        if m_arr.shape != s_arr.shape:
            raise ValueError(
                f"m and s must have the same shape; got {m_arr.shape} and {s_arr.shape}"
            )
        if dtype is None:
            both32 = m_arr.dtype == np.float32 and s_arr.dtype == np.float32
            dtype = np.float32 if both32 else np.float64
        d = _state_dtype(dtype)
        m_arr = m_arr.astype(d)  # always a private copy
        s_arr = s_arr.astype(d)
        with np.errstate(invalid="ignore"):
            bad = (s_arr < 0) | (np.isnan(m_arr) != np.isnan(s_arr))
            bad |= (s_arr == 0) != (m_arr == -np.inf)
        if np.any(bad):
            raise ValueError(
                "invalid state: s must be >= 0, s == 0 exactly when m == -inf, and m is NaN "
                "exactly when s is NaN"
            )
        self._m = m_arr
        self._s = s_arr
        self._temperature = validate_temperature(temperature)

    # -- construction and data --------------------------------------------------
    @classmethod
    def _raw(cls, m, s, temperature):
        obj = cls.__new__(cls)
        obj._m, obj._s, obj._temperature = m, s, temperature
        return obj

    @classmethod
    def empty(cls, shape=(), dtype=np.float64, *, temperature=1.0) -> Normalizer:
        """The identity state ``(m, s) = (-inf, 0)`` for a batch of ``shape`` rows.

        ``shape`` is the batch shape: ``()`` for one row, ``(R,)`` for the rows of
        an ``[R, n]`` array reduced over its last axis.
        """
        shape = _shape(shape)
        d = _state_dtype(dtype)
        return cls._raw(
            np.full(shape, -np.inf, dtype=d),
            np.zeros(shape, dtype=d),
            validate_temperature(temperature),
        )

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, Any]) -> Normalizer:
        """Rebuild a state from the mapping of :meth:`to_arrays` (or its ``np.load``)."""
        try:
            m, s = arrays["m"], arrays["s"]
        except (KeyError, TypeError):
            raise ValueError("arrays must be a mapping with keys 'm' and 's'") from None
        t = arrays["temperature"] if "temperature" in arrays else 1.0
        return cls(m, s, temperature=float(np.asarray(t)))

    def to_arrays(self) -> dict[str, np.ndarray]:
        """``{"m", "s", "temperature"}`` as arrays (copies), e.g. for ``np.savez``."""
        return {
            "m": self._m.copy(),
            "s": self._s.copy(),
            "temperature": np.array(self._temperature),
        }

    def __reduce__(self):
        return (_restore, (self._m, self._s, self._temperature))

    def copy(self) -> Normalizer:
        """An independent copy."""
        return type(self)._raw(self._m.copy(), self._s.copy(), self._temperature)

    @property
    def m(self) -> np.ndarray:
        """Running maximum of ``x / T`` per row (read-only view)."""
        v = self._m.view()
        v.flags.writeable = False
        return v

    @property
    def s(self) -> np.ndarray:
        """Running ``sum exp(x / T - m)`` per row (read-only view)."""
        v = self._s.view()
        v.flags.writeable = False
        return v

    @property
    def shape(self) -> tuple[int, ...]:
        """The batch shape."""
        return self._m.shape

    @property
    def dtype(self) -> np.dtype:
        """dtype of the stored arrays."""
        return self._m.dtype

    @property
    def temperature(self) -> float:
        """The temperature ``T``; the state is of ``x / T``."""
        return self._temperature

    def __repr__(self) -> str:
        return (
            f"Normalizer(shape={self.shape}, dtype={self.dtype}, temperature={self._temperature!r})"
        )

    # -- folding and merging -----------------------------------------------------
    def _chunk_axes(self, chunk, axis, where):
        arr = as_input_array(chunk, "chunk")
        axes = normalize_axis(axis, arr.ndim)
        batch = tuple(n for i, n in enumerate(arr.shape) if i not in axes)
        if batch != self.shape:
            raise ValueError(
                f"chunk of shape {arr.shape} reduced over axis {axis!r} leaves the batch "
                f"shape {batch}; this Normalizer has batch shape {self.shape}"
            )
        mask = validate_where(where, arr.shape)
        return arr, axes, mask

    def update(self, chunk, /, axis=-1, *, where=None) -> Normalizer:
        """Fold ``chunk`` into the state in place and return ``self``.

        Parameters
        ----------
        chunk : array_like
            New values; reducing it over ``axis`` must leave the batch shape.
        axis : int or tuple of ints, default -1
            The reduced axes of ``chunk``.
        where : array_like of bool, optional
            Mask broadcastable to ``chunk``; masked-out values take no part.
        """
        arr, axes, mask = self._chunk_axes(chunk, axis, where)
        compute, _ = resolve_dtype(arr.dtype, None)
        cm, cs = _state.chunk_state(arr, axes, self._temperature, mask, None, compute)
        m, s = _state.merge(self._m, self._s, cm, cs)
        self._m[...] = m
        self._s[...] = s
        return self

    def _check_other(self, other) -> None:
        if not isinstance(other, Normalizer):
            raise TypeError(f"can only merge a Normalizer; got {type(other).__name__}")
        if other.shape != self.shape:
            raise ValueError(
                f"cannot merge Normalizers of batch shapes {self.shape} and {other.shape}"
            )
        if other.temperature != self.temperature:
            raise ValueError(
                f"cannot merge Normalizers of temperatures {self.temperature!r} and "
                f"{other.temperature!r}"
            )

    def merge(self, other: Normalizer) -> Normalizer:
        """A new state for the union of the data of ``self`` and ``other`` (also ``a | b``).

        The result has the wider of the two dtypes.
        """
        self._check_other(other)
        m, s = _state.merge(self._m, self._s, other._m, other._s)
        d = np.promote_types(self.dtype, other.dtype)
        return type(self)._raw(np.array(m, dtype=d), np.array(s, dtype=d), self._temperature)

    def __or__(self, other):
        if not isinstance(other, Normalizer):
            return NotImplemented
        return self.merge(other)

    def __ior__(self, other):
        if not isinstance(other, Normalizer):
            return NotImplemented
        self._check_other(other)
        m, s = _state.merge(self._m, self._s, other._m, other._s)
        self._m[...] = m
        self._s[...] = s
        return self

    # -- results -----------------------------------------------------------------
    def logsumexp(self):
        """``m + ln(s)`` per row (natural log): ``logsumexp(x / T)`` of everything folded in.

        -inf for an empty row, +inf for a row holding +inf, NaN for a row holding
        NaN.  A NumPy scalar for batch shape ``()``.
        """
        lse, _ = _state.finalize(self._m, self._s)
        return _scalar(lse.astype(self.dtype))

    def _normalize(self, chunk, axis, where, dtype, log):
        from ._kernels import online as k

        arr, axes, mask = self._chunk_axes(chunk, axis, where)
        _, out_dtype = resolve_dtype(arr.dtype, dtype)
        out = np.empty(arr.shape, dtype=out_dtype)
        if arr.size == 0:
            return out
        x2 = rows_view(arr, axes)
        if x2.dtype.kind != "f" or x2.dtype == np.float16:
            # the row kernel takes float32/float64; float16 (and integers) are read as
            # float64, exact, like the result buffer below
            x2 = x2.astype(np.float64)
        mask2 = rows_view(mask, axes) if mask is not None else None
        res = np.empty(x2.shape, dtype=np.float64)
        k.normalize_rows(
            x2,
            mask2 if mask2 is not None else np.broadcast_to(np.ones(1, bool), x2.shape),
            mask2 is not None,
            self._temperature,
            self._m.astype(np.float64).reshape(-1),
            self._s.astype(np.float64).reshape(-1),
            log,
            res,
        )
        nd = arr.ndim
        moved = np.moveaxis(out, axes, tuple(range(nd - len(axes), nd)))
        moved[...] = res.reshape(moved.shape)
        return _scalar(out)

    def softmax(self, chunk, /, axis=-1, *, where=None, dtype=None):
        """``exp(chunk / T - m) / s``: the softmax of a chunk with the (final) state.

        Once every chunk of the data has been folded in, this gives each chunk's
        part of the softmax of the whole.  Masked-out entries get 0.  Edge cases
        follow the dense contract: empty row -> 0, ``+inf`` row -> ``1/k`` at the
        ``+inf`` entries, NaN row -> NaN.  Output dtype as for the dense
        :func:`softmaxkit.softmax` (``dtype=`` overrides).  Peak extra memory: one
        float64 array of the chunk's size.
        """
        return self._normalize(chunk, axis, where, dtype, False)

    def log_softmax(self, chunk, /, axis=-1, *, where=None, dtype=None):
        """``chunk / T - m - ln(s)``: the log-softmax of a chunk with the (final) state.

        Masked-out entries get -inf; edge cases as for :meth:`softmax`.  The
        absolute error is ~eps (1 + ``|value|``): the state keeps ``s``, not ``s - 1``,
        so the dense ``log1p`` trick for a dominant entry is not available.
        """
        return self._normalize(chunk, axis, where, dtype, True)


def _restore(m, s, temperature):
    return Normalizer._raw(np.array(m), np.array(s), temperature)


# -- fused top-k -------------------------------------------------------------------


def topk_softmax(x, k, /, axis=-1, *, temperature=1.0, where=None):
    r"""The ``k`` largest softmax probabilities and their indices, in one pass over ``x``.

    Equal to ``p = softmax(x, axis, temperature=T, where=where)`` followed by the
    top ``k`` of ``p`` along ``axis``, but without forming ``p``: each row is read
    once, and the online normalizer (running ``m`` and ``s = sum exp(x/T - m)``)
    and a running buffer of the ``k`` best entries are updated together
    (Milakov & Gimelshein, arXiv:1805.02867, Softmax+TopK fusion).  Then

    .. math::

        p_{(q)} = e^{x_{(q)}/T - m} / s, \qquad q = 1 \dots k.

    Parameters
    ----------
    x : array_like
        Logits (float16/32/64; integer and bool computed in float64).
    k : int
        How many entries to return, ``0 <= k <= n`` with ``n = x.shape[axis]``.
    axis : int, default -1
        The softmax axis (one axis, as ``torch.topk``'s ``dim``).
    temperature : float, default 1.0
        Acts on ``x / temperature``; finite and > 0.
    where : array_like of bool, optional
        Mask broadcastable to ``x``; masked-out entries take no part in the
        normalizer and rank below every included entry (as ``-inf``; probability 0).

    Returns
    -------
    probabilities : ndarray
        Shape of ``x`` with ``axis`` of size ``k``; in decreasing order; dtype as
        the dense :func:`softmaxkit.softmax` output (float16 in, float16 out).
    indices : ndarray of int64
        Positions along ``axis`` of those entries.

    Notes
    -----
    Order: by decreasing ``x / T``; ties by increasing index (masked and ``-inf``
    entries tie at ``-inf``, so a row with fewer than ``k`` included entries is
    completed by the first excluded ones, with probability 0).  NaN ranks above
    ``+inf`` (as in ``torch.topk``) and a row containing NaN has NaN probabilities.
    Edge cases of the probabilities are those of the dense softmax: an all
    ``-inf`` or fully masked row gives 0, a row with ``j`` entries equal to
    ``+inf`` gives ``1/j`` at those.

    Peak extra memory: the outputs (``k`` per row), a few kB per thread, and a
    copy of ``x`` only when ``axis`` is not the last contiguous axis.

    Raises
    ------
    ValueError
        ``k`` negative or larger than ``x.shape[axis]``.

    Examples
    --------
    >>> import numpy as np
    >>> from softmaxkit import topk_softmax
    >>> p, i = topk_softmax([1.0, 3.0, 3.0, 2.0], 3)
    >>> p.round(4), i
    (array([0.3995, 0.3995, 0.147 ]), array([1, 2, 3]))
    """
    if _foreign(x) == "torch":
        return _torch_route("topk_softmax", locals())
    if _foreign(x) == "dask":
        from .drivers import dask as _dask

        return _dask.topk_softmax(x, k, axis=axis, temperature=temperature, where=where)
    from ._kernels import online as kern

    arr = as_input_array(x)
    if arr.ndim == 0:
        raise ValueError("x must have at least one dimension for topk_softmax; got a 0-d array")
    if isinstance(axis, bool) or not isinstance(axis, numbers.Integral):
        raise TypeError(f"axis must be an int for topk_softmax; got {axis!r}")
    (ax,) = normalize_axis(axis, arr.ndim)
    n = arr.shape[ax]
    if isinstance(k, bool) or not isinstance(k, numbers.Integral):
        raise TypeError(f"k must be an int; got {k!r}")
    k = int(k)
    if not 0 <= k <= n:
        raise ValueError(f"k must satisfy 0 <= k <= {n} (the size of axis {axis}); got k={k}")
    t = validate_temperature(temperature)
    mask = validate_where(where, arr.shape)
    compute, out_dtype = resolve_dtype(arr.dtype, None)
    x2 = rows_view(arr, (ax,))
    if x2.dtype.kind != "f" or x2.dtype == np.float16:
        x2 = x2.astype(compute)
    with np.errstate(over="ignore", divide="ignore"):
        inv = 1.0 / t
    if not (math.isfinite(inv) and inv >= np.finfo(np.float64).tiny):
        # 1/T overflows (subnormal T) or is subnormal: the kernel's fastmath may
        # turn x / T into x * (1/T) (x * inf ties every positive entry at +inf), so
        # divide here, once, in float64 (the dense driver's rule) and use T = 1
        with np.errstate(over="ignore", under="ignore"):
            x2 = x2.astype(np.float64) / t
        t = 1.0
    r = x2.shape[0]
    probs = np.empty((r, k), dtype=np.float64)
    idx = np.empty((r, k), dtype=np.int64)
    if r and k:
        mask2 = rows_view(mask, (ax,)) if mask is not None else None
        kern.topk_rows(
            x2,
            mask2 if mask2 is not None else np.broadcast_to(np.ones(1, bool), x2.shape),
            mask2 is not None,
            t,
            k,
            probs,
            idx,
        )
    moved_shape = (*tuple(s for i, s in enumerate(arr.shape) if i != ax), k)
    p_out = np.moveaxis(probs.reshape(moved_shape), -1, ax).astype(out_dtype)
    i_out = np.moveaxis(idx.reshape(moved_shape), -1, ax).copy()
    return p_out, i_out


# -- streaming -----------------------------------------------------------------


def stream_normalizer(
    src, /, axis=-1, *, temperature=1.0, where=None, memory="256M", workers=None, progress=False
) -> Normalizer:
    """The :class:`Normalizer` of a source larger than memory, in one pass.

    Parameters
    ----------
    src : str, os.PathLike, ndarray or iterable of array_like
        A ``.npy`` file (a regular file, read block by block with ``preadv``;
        big-endian files are converted per block), an array (e.g. a
        ``numpy.memmap``), or an iterable of chunks that concatenate along
        ``axis``.
    axis : int or tuple of ints, default -1
        The reduced axes (an int for an iterable source).
    temperature : float, default 1.0
        Acts on ``x / temperature``.
    where : array_like of bool, optional
        Only for array sources: a mask broadcastable to the array.
    memory : int or str, default "256M"
        Working-memory budget: bytes, or a string with ``K``/``M``/``G``/``T`` or
        ``KiB``/``MiB``/``GiB``/``TiB`` (powers of 1024) or ``KB``/``MB``/``GB``/``TB``
        (powers of 1000), from 1 KiB to 2**60 bytes.  Blocks are sized so that all
        workers together stay within it, whatever the row length.
    workers : int, optional
        Threads (default: the usable cores; at most 7 are used).
    progress : bool, default False
        Show a progress bar on stderr (tqdm when installed, else a text line).

    Returns
    -------
    Normalizer
        float64 state of the batch shape.

    Notes
    -----
    Peak extra memory: ``memory`` plus about 16 MB, plus the float64 state (16 bytes
    per row); the source is never loaded or mapped whole.  Results do not depend on
    ``workers`` (chunk states are merged in order).  A file truncated while it is
    read raises ``ValueError``; a non-regular file (FIFO, device) is refused before
    it is read.  See ``docs/online.md``, "Streaming / out-of-core".

    Examples
    --------
    >>> import numpy as np
    >>> from softmaxkit import stream_normalizer
    >>> chunks = [np.array([[0.1, 0.3]]), np.array([[0.08, -0.09]])]
    >>> st = stream_normalizer(chunks, axis=-1)
    >>> st.m, st.s.round(6)
    (array([0.3]), array([3.298306]))
    """
    from .drivers import stream as _stream

    return _stream.normalizer(src, axis, temperature, where, memory, workers, progress)


def stream_logsumexp(
    src, /, axis=-1, *, temperature=1.0, where=None, memory="256M", workers=None, progress=False
):
    """``logsumexp(x / T)`` over ``axis`` of a source larger than memory, in one pass.

    The source is read block by block; every block's (m, s) state is merged into
    the running :class:`Normalizer`, then ``m + log(s)`` is returned.

    Parameters
    ----------
    src : str, path, ndarray or iterable of ndarrays
        A ``.npy`` file (memory-mapped), an array, or chunks along ``axis``.
    axis, temperature, where, memory, workers, progress
        As for :func:`stream_normalizer`.

    Returns
    -------
    ndarray or scalar
        An array of the batch shape (a NumPy scalar when it is 0-d) in the dtype the
        dense :func:`softmaxkit.logsumexp` would give; edge cases as the dense op.

    Notes
    -----
    Peak extra memory: about ``memory``.

    Examples
    --------
    >>> import numpy as np
    >>> from softmaxkit import stream_logsumexp
    >>> x = np.arange(12.0).reshape(3, 4)
    >>> stream_logsumexp(iter([x[:, :2], x[:, 2:]]), axis=1).round(4)
    array([ 3.4402,  7.4402, 11.4402])
    """
    from .drivers import stream as _stream

    return _stream.logsumexp(src, axis, temperature, where, memory, workers, progress)


def stream_softmax(
    src,
    dst,
    /,
    axis=-1,
    *,
    log=False,
    temperature=1.0,
    where=None,
    dtype=None,
    memory="256M",
    workers=None,
    progress=False,
):
    """Softmax (or log-softmax) of a source larger than memory, written to a ``.npy`` file.

    Two passes: the first builds the :class:`Normalizer` of every row, the second
    normalises chunk after chunk and writes them to ``dst``.  The output is written
    to a temporary file ``.NAME.softmaxkit-tmp.PID.RAND`` next to ``dst`` and renamed
    over it only when complete, so a crash or Ctrl-C leaves no partial file under
    ``dst``; its space is reserved up front (a full disk fails with ``OSError``
    before any work; for an iterable source, after the first pass, when its shape is
    known).  An existing ``dst`` must be a regular file: symbolic links, devices and
    FIFOs are refused with ``ValueError``.  A temporary left by a killed process is
    removed by the next write to the same ``dst`` (or ``softmaxkit clean DIR``).

    Parameters
    ----------
    src
        As for :func:`stream_normalizer`; an iterable source must be re-iterable
        (a list, or an object whose ``__iter__`` starts over), since it is read twice.
    dst : str or os.PathLike
        Output ``.npy`` path; same shape as the source.
    axis, temperature, where, memory, workers, progress
        As for :func:`stream_normalizer`.
    log : bool, default False
        Write ``log_softmax`` instead.
    dtype : dtype, optional
        Output dtype (default as the dense :func:`softmaxkit.softmax`).

    Returns
    -------
    pathlib.Path
        ``dst``.

    Notes
    -----
    Peak extra memory: ``memory`` plus about 16 MB, plus the float64 state.  The
    output keeps the source file's memory order (a Fortran-ordered file gives a
    Fortran-ordered output).  Edge cases as the dense op.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> from softmaxkit import stream_softmax, softmax
    >>> x = np.random.default_rng(0).normal(size=(3, 1000))
    >>> d = tempfile.mkdtemp()
    >>> np.save(os.path.join(d, "x.npy"), x)
    >>> out = stream_softmax(os.path.join(d, "x.npy"), os.path.join(d, "p.npy"), memory="16K")
    >>> bool(np.allclose(np.load(out), softmax(x), rtol=1e-12, atol=0))
    True
    """
    from .drivers import stream as _stream

    return _stream.softmax_to_file(
        src, dst, axis, log, temperature, where, dtype, memory, workers, progress
    )
