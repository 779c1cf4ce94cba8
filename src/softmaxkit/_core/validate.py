"""Argument validation shared by every public function.

Every check raises a built-in exception whose message names the argument, the
constraint and the offending value (array-api-extra / opt_einsum style).  Nothing
here computes results; drivers receive already-normalised arguments.
"""

from __future__ import annotations

import functools
import math
import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.exceptions import AxisError

__all__ = [
    "as_input_array",
    "check_out",
    "normalize_axis",
    "resolve_dtype",
    "validate_temperature",
    "validate_weights",
    "validate_where",
]

_FLOAT_DTYPES = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))


def as_input_array(x: Any, name: str = "x") -> np.ndarray:
    """Convert ``x`` to an ndarray, rejecting dtypes with no softmax meaning.

    Complex, object, string, bytes, datetime and structured inputs raise ``TypeError``.
    No copy is made when ``x`` already is a native-byte-order ndarray.  Subclasses
    are viewed as plain ndarrays (``np.matrix`` included, as SciPy does), except
    ``numpy.ma.MaskedArray``, which raises ``TypeError``: its mask would otherwise be
    silently ignored (pass ``where=~numpy.ma.getmaskarray(x)`` instead).  A
    big-endian (non-native) floating array is converted once to native byte order.
    """
    if isinstance(x, np.ma.MaskedArray):
        raise TypeError(
            f"{name} is a numpy.ma.MaskedArray, whose mask softmaxkit does not read; pass "
            f"{name}.data with where=~numpy.ma.getmaskarray({name}) (masked entries then "
            "take no part)"
        )
    if isinstance(x, np.ndarray):
        arr = x if type(x) is np.ndarray else np.asarray(x)
    else:
        try:
            arr = np.asarray(x)
        except (ValueError, TypeError) as exc:  # ragged lists and the like
            raise TypeError(f"{name} must be array-like with a numeric dtype; got {exc}") from None
    kind = arr.dtype.kind
    if kind in "iuf" and not arr.dtype.isnative:  # Numba reads native byte order only
        arr = arr.astype(arr.dtype.newbyteorder("="))
    if kind not in "biuf":
        raise TypeError(
            f"{name} must have a real floating, integer or bool dtype; got dtype {arr.dtype}"
        )
    if kind == "f" and arr.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"{name} has unsupported floating dtype {arr.dtype}; use float16/32/64")
    return arr


def resolve_dtype(in_dtype: np.dtype, dtype: Any) -> tuple[np.dtype, np.dtype]:
    """Return ``(compute_dtype, output_dtype)`` for an input dtype and ``dtype=``.

    Policy (documented in docs/dense.md):

    * ``dtype=None``: float32/float64 stay as they are; float16 is computed in float32
      and returned as float16; integer and bool input is computed in float64.
    * ``dtype=`` a floating dtype: the output has that dtype.
    * The computation dtype is the wider of the input's (float64 for integer and
      bool input) and the output's, and at least float32: a float64 input is never
      rounded to float32 before the computation (``softmax([1e300, 2e300],
      dtype=np.float32)`` is ``[0, 1]``, not ``[0.5, 0.5]`` from two ``inf``).
    """
    if dtype is None:
        out = in_dtype if in_dtype.kind == "f" else np.dtype(np.float64)
    else:
        try:
            out = np.dtype(dtype)
        except TypeError:
            raise TypeError(f"dtype must be a floating dtype; got {dtype!r}") from None
        if out not in _FLOAT_DTYPES:
            raise TypeError(
                f"dtype must be one of float16, float32, float64; got {out} (from {dtype!r})"
            )
    wide = in_dtype if in_dtype.kind == "f" else np.dtype(np.float64)
    compute = np.promote_types(np.promote_types(wide, out), np.float32)
    return compute, out


def normalize_axis(axis: Any, ndim: int, name: str = "axis") -> tuple[int, ...]:
    """Normalise ``axis`` (int, tuple of ints or None) to a sorted tuple of axes.

    ``None`` means every axis.  Negative axes count from the end.  Raises
    ``numpy.exceptions.AxisError`` for an axis out of range, ``ValueError`` for a
    repeated axis and ``TypeError`` for anything that is not an integer.
    """
    if axis is None:
        return tuple(range(ndim))
    if type(axis) is int and -ndim <= axis < ndim:  # the common case, without the checks
        return (axis % ndim,)
    scalar = not isinstance(axis, tuple | list)
    items: Sequence[Any] = (axis,) if scalar else axis
    result = []
    for a in items:
        if isinstance(a, bool) or not isinstance(a, numbers.Integral):
            raise TypeError(f"{name} must be an int, a tuple of ints or None; got {axis!r}")
        a = int(a)
        if ndim == 0 and scalar and a in (0, -1):
            # NumPy reductions accept an int axis 0 or -1 on a 0-d array (the value is
            # its own one-element row): np.sum(np.float64(5), axis=-1) == 5.  Without
            # this the default axis=-1 would reject every scalar input.
            return ()
        if not -ndim <= a < ndim:
            raise AxisError(a, ndim, msg_prefix=name)
        result.append(a % ndim)
    if len(set(result)) != len(result):
        raise ValueError(f"{name} contains a repeated axis: {axis!r} (ndim {ndim})")
    return tuple(sorted(result))


def validate_temperature(temperature: Any) -> float:
    """Return ``temperature`` as a Python float; it must be finite and > 0."""
    if isinstance(temperature, bool) or not isinstance(temperature, numbers.Real):
        if isinstance(temperature, np.ndarray) and temperature.ndim == 0:
            return validate_temperature(temperature.item())
        raise TypeError(f"temperature must be a real number; got {temperature!r}")
    t = float(temperature)
    if not (math.isfinite(t) and t > 0.0):
        raise ValueError(f"temperature must be finite and > 0; got {temperature!r}")
    return t


def normal_inverse(T: float, dtype: Any) -> float | None:
    """``1 / T`` as a Python float when it is a finite normal number of ``dtype``
    (float32 or float64), else None: the kernels' ``invT`` test.  A temperature in
    ``[1e-30, 1e30]`` (every ordinary one) needs no test: its inverse is normal in both
    dtypes (the checked path costs about 5 us, a small call's whole kernel time)."""
    if 1e-30 <= T <= 1e30:
        return 1.0 / T
    with np.errstate(over="ignore", divide="ignore"):
        inv = np.float64(1.0) / np.float64(T)
        inv_c = np.dtype(dtype).type(inv)
    if np.isfinite(inv_c) and inv_c >= np.finfo(dtype).tiny:
        return float(inv)
    return None


def all_true(shape: tuple[int, ...]) -> np.ndarray:
    """A read-only all-True bool array of ``shape`` that holds no memory (a broadcast
    view), memoised: the kernels' stand-in for "no mask" (``np.broadcast_to`` costs
    about 4 us a call)."""
    return _all_true(tuple(int(n) for n in shape))


@functools.lru_cache(maxsize=256)
def _all_true(shape: tuple[int, ...]) -> np.ndarray:
    return np.broadcast_to(np.ones((1,) * len(shape), dtype=np.bool_), shape)


def validate_where(where: Any, shape: tuple[int, ...]) -> np.ndarray | None:
    """Broadcast a boolean mask to ``shape`` (a read-only view, no copy)."""
    if where is None:
        return None
    w = np.asarray(where)
    if w.dtype != np.bool_:
        raise TypeError(f"where must be a boolean array; got dtype {w.dtype}")
    try:
        return np.broadcast_to(w, shape)
    except ValueError:
        raise ValueError(
            f"where with shape {w.shape} cannot be broadcast to the input shape {shape}"
        ) from None


def validate_weights(b: Any, shape: tuple[int, ...], dtype: Any = None) -> np.ndarray | None:
    """Broadcast the ``b`` weights of logsumexp to ``shape``.

    The (small) original array is cast to ``dtype`` before broadcasting, so no
    full-size temporary is made.
    """
    if b is None:
        return None
    w = as_input_array(b, "b")
    if dtype is not None:
        w = w.astype(dtype, copy=False)
    try:
        return np.broadcast_to(w, shape)
    except ValueError:
        raise ValueError(
            f"b with shape {w.shape} cannot be broadcast to the input shape {shape}"
        ) from None


def check_out(out: Any, shape: tuple[int, ...], dtype: np.dtype, name: str = "out") -> None:
    """Check a user-supplied ``out=`` array: an ndarray of exactly ``shape`` and ``dtype``."""
    if not isinstance(out, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray; got {type(out).__name__}")
    if out.shape != shape:
        raise ValueError(f"{name} has shape {out.shape}; expected {shape}")
    if out.dtype != dtype:
        raise TypeError(f"{name} has dtype {out.dtype}; expected {dtype}")
    if not out.flags.writeable:
        raise ValueError(f"{name} is read-only; it must be writeable")
