"""The :class:`Normalizer`: the online softmax normalizer's state as a public object.

Re-exported as ``softmaxkit.Normalizer`` and ``softmaxkit.online.Normalizer`` (its
public home, named by ``__module__`` so that pickles and the docs say
``softmaxkit.online``).  It lives in a module of its own so that ``online.py``
(which re-exports the streaming functions) and ``streaming.py`` (which returns a
Normalizer) both import it without importing each other.  The maths: ``docs/online.md``.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from ._core import coldstart
from ._core import state as _state
from ._core.typing import Array, ArrayLike, Axis, DTypeLike, FloatArray, NDArray
from ._core.validate import (
    as_input_array,
    normalize_axis,
    resolve_dtype,
    validate_temperature,
    validate_where,
)
from .drivers.eager import rows_view

__all__ = ["Normalizer"]

_STATE_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _state_dtype(dtype: Any) -> np.dtype[Any]:
    try:
        d: np.dtype[Any] = np.dtype(dtype)
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


def _scalar(a: FloatArray) -> Array:
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

    def __init__(
        self,
        m: ArrayLike,
        s: ArrayLike,
        *,
        temperature: float = 1.0,
        dtype: DTypeLike | None = None,
    ) -> None:
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
    def _raw(cls, m: FloatArray, s: FloatArray, temperature: float) -> Normalizer:
        obj = cls.__new__(cls)
        obj._m, obj._s, obj._temperature = m, s, temperature
        return obj

    @classmethod
    def empty(
        cls,
        shape: int | tuple[int, ...] = (),
        dtype: DTypeLike = np.float64,
        *,
        temperature: float = 1.0,
    ) -> Normalizer:
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
    def from_arrays(cls, arrays: Mapping[str, ArrayLike]) -> Normalizer:
        """Rebuild a state from the mapping of :meth:`to_arrays` (or its ``np.load``)."""
        try:
            m, s = arrays["m"], arrays["s"]
        except (KeyError, TypeError):
            raise ValueError("arrays must be a mapping with keys 'm' and 's'") from None
        t = arrays["temperature"] if "temperature" in arrays else 1.0
        return cls(m, s, temperature=float(np.asarray(t)))

    def to_arrays(self) -> dict[str, FloatArray]:
        """``{"m", "s", "temperature"}`` as arrays (copies), e.g. for ``np.savez``."""
        return {
            "m": self._m.copy(),
            "s": self._s.copy(),
            "temperature": np.array(self._temperature),
        }

    def __reduce__(self) -> tuple[Callable[..., Normalizer], tuple[Any, ...]]:
        return (_restore, (self._m, self._s, self._temperature))

    def copy(self) -> Normalizer:
        """An independent copy."""
        return type(self)._raw(self._m.copy(), self._s.copy(), self._temperature)

    @property
    def m(self) -> FloatArray:
        """Running maximum of ``x / T`` per row (read-only view)."""
        v = self._m.view()
        v.flags.writeable = False
        return v

    @property
    def s(self) -> FloatArray:
        """Running ``sum exp(x / T - m)`` per row (read-only view)."""
        v = self._s.view()
        v.flags.writeable = False
        return v

    @property
    def shape(self) -> tuple[int, ...]:
        """The batch shape."""
        return self._m.shape

    @property
    def dtype(self) -> np.dtype[Any]:
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
    def _chunk_axes(
        self, chunk: ArrayLike, axis: Axis, where: ArrayLike | None
    ) -> tuple[NDArray[Any], tuple[int, ...], NDArray[np.bool_] | None]:
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

    def update(
        self, chunk: ArrayLike, /, axis: Axis = -1, *, where: ArrayLike | None = None
    ) -> Normalizer:
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

    def _check_other(self, other: object) -> None:
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

    def __or__(self, other: object) -> Normalizer:
        if not isinstance(other, Normalizer):
            return NotImplemented
        return self.merge(other)

    def __ior__(self, other: object) -> Normalizer:
        if not isinstance(other, Normalizer):
            return NotImplemented
        self._check_other(other)
        m, s = _state.merge(self._m, self._s, other._m, other._s)
        self._m[...] = m
        self._s[...] = s
        return self

    # -- results -----------------------------------------------------------------
    def logsumexp(self) -> Array:
        """``m + ln(s)`` per row (natural log): ``logsumexp(x / T)`` of everything folded in.

        -inf for an empty row, +inf for a row holding +inf, NaN for a row holding
        NaN.  A NumPy scalar for batch shape ``()``.
        """
        lse, _ = _state.finalize(self._m, self._s)
        return _scalar(lse.astype(self.dtype))

    def _normalize(
        self,
        chunk: ArrayLike,
        axis: Axis,
        where: ArrayLike | None,
        dtype: DTypeLike | None,
        log: bool,
    ) -> Array:
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
        mm = self._m.astype(np.float64).reshape(-1)
        ss = self._s.astype(np.float64).reshape(-1)
        try:
            with coldstart.allow(x2.size):
                from ._kernels import online as k

                k.normalize_rows(
                    x2,
                    mask2 if mask2 is not None else np.broadcast_to(np.ones(1, bool), x2.shape),
                    mask2 is not None,
                    self._temperature,
                    mm,
                    ss,
                    log,
                    res,
                )
        except coldstart.ColdKernel:
            # the kernel compiles in the background: the float64 formula
            res[...] = _state.normalize_float64(x2, mask2, self._temperature, mm, ss, log)
        nd = arr.ndim
        moved = np.moveaxis(out, axes, tuple(range(nd - len(axes), nd)))
        moved[...] = res.reshape(moved.shape)
        return _scalar(out)

    def softmax(
        self,
        chunk: ArrayLike,
        /,
        axis: Axis = -1,
        *,
        where: ArrayLike | None = None,
        dtype: DTypeLike | None = None,
    ) -> Array:
        """``exp(chunk / T - m) / s``: the softmax of a chunk with the (final) state.

        Once every chunk of the data has been folded in, this gives each chunk's
        part of the softmax of the whole.  Masked-out entries get 0.  Edge cases
        follow the dense contract: empty row -> 0, ``+inf`` row -> ``1/k`` at the
        ``+inf`` entries, NaN row -> NaN.  Output dtype as for the dense
        :func:`softmaxkit.softmax` (``dtype=`` overrides).  Peak extra memory: one
        float64 array of the chunk's size.
        """
        return self._normalize(chunk, axis, where, dtype, False)

    def log_softmax(
        self,
        chunk: ArrayLike,
        /,
        axis: Axis = -1,
        *,
        where: ArrayLike | None = None,
        dtype: DTypeLike | None = None,
    ) -> Array:
        """``chunk / T - m - ln(s)``: the log-softmax of a chunk with the (final) state.

        Masked-out entries get -inf; edge cases as for :meth:`softmax`.  The
        absolute error is ~eps (1 + ``|value|``): the state keeps ``s``, not ``s - 1``,
        so the dense ``log1p`` trick for a dominant entry is not available.
        """
        return self._normalize(chunk, axis, where, dtype, True)

    def scan(
        self,
        chunk: ArrayLike,
        /,
        axis: int = -1,
        *,
        where: ArrayLike | None = None,
    ) -> Array:
        r"""Running logsumexp through ``chunk``, continuing the state; folds it in.

        Entry ``k`` along ``axis`` is the logsumexp of everything folded in before
        plus ``chunk[..., :k+1] / T``:

        .. math::

            y_k = \operatorname{logaddexp}\big(m + \ln s,\;
            \operatorname{logcumsumexp}(v)_k\big), \qquad v = \text{chunk} / T,

        so scanning the chunks of a long axis one after the other gives
        :func:`softmaxkit.logcumsumexp` of the whole axis (the state is the carry),
        e.g. an HMM forward pass over a stream.  The state is then updated as by
        :meth:`update`.  ``axis`` is one axis (a scan has a direction); reducing it
        must leave the batch shape.  Edge cases as :func:`softmaxkit.logcumsumexp`:
        a prefix of ``-inf`` (or masked) entries on an empty state stays ``-inf``,
        ``+inf`` gives ``+inf`` from there on, NaN gives NaN from there on.
        Output dtype: that of the dense functions for the chunk's dtype.  Peak extra
        memory: a float64 array of the chunk's size.

        Examples
        --------
        >>> import numpy as np
        >>> from softmaxkit import Normalizer, logcumsumexp
        >>> x = np.array([0.5, -1.0, 2.0, 0.0, 1.5])
        >>> nz = Normalizer.empty(())
        >>> y = np.concatenate([nz.scan(x[:2]), nz.scan(x[2:])])
        >>> bool(np.allclose(y, logcumsumexp(x)))
        True
        >>> bool(np.isclose(nz.logsumexp(), y[-1]))
        True
        """
        from .scan import logcumsumexp

        if isinstance(axis, bool) or not isinstance(axis, numbers.Integral):
            raise TypeError(f"axis must be one int (a scan has a direction); got {axis!r}")
        arr, axes, mask = self._chunk_axes(chunk, axis, where)
        _, out_dtype = resolve_dtype(arr.dtype, None)
        (ax,) = axes
        v = arr.astype(np.float64)
        if self._temperature != 1.0:
            v = v / self._temperature
        run = np.asarray(logcumsumexp(v, ax, where=mask))
        lse0, _ = _state.finalize(self._m, self._s)
        prev = np.expand_dims(np.asarray(lse0, dtype=np.float64), ax)
        with np.errstate(invalid="ignore"):
            out = np.logaddexp(prev, run)
        # logaddexp(+inf, +inf) is +inf and NaN propagates: the dense contract's edges
        self.update(arr, axis, where=where)
        return _scalar(out.astype(out_dtype, copy=False))


def _restore(m: ArrayLike, s: ArrayLike, temperature: float) -> Normalizer:
    return Normalizer._raw(np.array(m), np.array(s), temperature)


# The public home: pickles name ``softmaxkit.online._restore`` (as before the module
# was split out, so states pickled by either version load in the other), and
# ``repr(Normalizer)``, ``help`` and the API reference say ``softmaxkit.online``.
Normalizer.__module__ = "softmaxkit.online"
_restore.__module__ = "softmaxkit.online"
