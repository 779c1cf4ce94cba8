"""Fixed-point parameters of the quantized softmax, derived as TFLite's ``Prepare`` does.

``softmax_params`` / ``log_softmax_params`` (TFLite ``quantization_util.cc``, in
IEEE double from the float32 scale and beta), the int16 kernel's multiplier and
lookup tables (``LUTPopulate<int16_t>``), the output quantization TFLite enforces
(``output_quantization``) and the scalar and dtype checks shared by every entry
point.  Public names are re-exported by ``softmaxkit.quantized``.
"""

from __future__ import annotations

import functools
import math
import numbers
from collections.abc import Callable
from typing import Any, Literal, NamedTuple

import numpy as np

from .._core.typing import DTypeLike, NDArray

__all__ = [
    "LogSoftmaxParams",
    "SoftmaxParams",
    "log_softmax_params",
    "output_quantization",
    "softmax_params",
]

_SCALED_DIFF_INTEGER_BITS = 5  # Q5.26 input of exp()
_I8, _U8, _I16 = np.dtype(np.int8), np.dtype(np.uint8), np.dtype(np.int16)
_DTYPE_NAMES = {_I8: "int8", _U8: "uint8", _I16: "int16"}


class SoftmaxParams(NamedTuple):
    """Fixed-point parameters of an 8-bit softmax (TFLite ``SoftmaxParams``).

    ``multiplier`` (Q0.31) and ``shift`` (a left shift) rescale an input
    difference ``x - max`` to Q5.26; differences below ``diff_min`` give exp 0.
    These are the ``mult``, ``shift``, ``diff_min`` arguments of CMSIS-NN's
    ``arm_softmax_s8``.
    """

    multiplier: int
    shift: int
    diff_min: int


class LogSoftmaxParams(NamedTuple):
    """Fixed-point parameters of an 8-bit log_softmax (TFLite reference kernel).

    As :class:`SoftmaxParams`, plus the Q0.31 ``reverse_multiplier`` and
    ``reverse_shift`` (a right shift) that map a Q5.26 value back to input steps.
    """

    multiplier: int
    shift: int
    diff_min: int
    reverse_multiplier: int
    reverse_shift: int


# --------------------------------------------------------------------------
# Parameter derivation (TFLite quantization_util.cc), in IEEE double
# --------------------------------------------------------------------------


def _round_half_away(v: float) -> int:
    """C's ``std::round``: nearest integer, halves away from zero (exact)."""
    a = abs(v)
    r = math.floor(a)
    if a - r >= 0.5:  # exact: a and r are doubles of the same binade or r == 0
        r += 1
    return int(r) if v >= 0 else -int(r)


def _quantize_multiplier(real: float) -> tuple[int, int]:
    """TFLite ``QuantizeMultiplier``: real = q * 2^shift, q a Q0.31 integer."""
    if real == 0.0:
        return 0, 0
    frac, shift = math.frexp(real)
    q = _round_half_away(frac * (1 << 31))
    if q == 1 << 31:
        q //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    return q, shift


def _as_float32(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        if isinstance(value, np.ndarray) and value.ndim == 0 and value.dtype.kind in "fiu":
            return _as_float32(value.item(), name)
        raise TypeError(f"{name} must be a real number; got {value!r}")
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite; got {value!r}")
    with np.errstate(over="ignore", under="ignore"):
        f = float(np.float32(v))
    if not math.isfinite(f):
        raise ValueError(f"{name}={value!r} overflows float32 (the .tflite field type)")
    return f


def _positive_scale(input_scale: Any) -> float:
    s = _as_float32(input_scale, "input_scale")
    if not s > 0.0:
        raise ValueError(
            f"input_scale must be > 0 (after rounding to float32); got {input_scale!r}"
        )
    return s


def softmax_params(input_scale: float, beta: float = 1.0) -> SoftmaxParams:
    r"""Derive ``(multiplier, shift, diff_min)`` exactly as TFLite's ``Prepare`` does.

    TFLite (``PreprocessSoftmaxScaling``, ``QuantizeMultiplierGreaterThanOne``,
    ``CalculateInputRadius``), in double arithmetic from the float32 ``beta`` and
    ``input_scale``:

    .. math::

        r = \min(\beta \cdot s \cdot 2^{26},\ 2^{31} - 1), \qquad
        r = q \cdot 2^{\text{shift}},\ q \in [2^{30}, 2^{31}) \text{ (rounded half away)},

        \text{diff\_min} = -\lfloor 31 \cdot 2^{26} / 2^{\text{shift}} \rfloor

    so that a difference ``d = x - max`` becomes ``d * 2^shift * q / 2^31`` =
    ``beta * s * d`` in Q5.26, and differences below ``diff_min`` (whose scaled
    value would pass -31) are treated as exp = 0.

    Parameters
    ----------
    input_scale : float
        Input quantization scale (rounded to float32); must be > 0.
    beta : float, default 1.0
        Softmax's inverse temperature (rounded to float32).

    Returns
    -------
    SoftmaxParams
        ``(multiplier, shift, diff_min)``, the ``mult``, ``shift`` and
        ``diff_min`` arguments of CMSIS-NN's ``arm_softmax_s8`` and of
        :func:`softmax_s8`.

    Raises
    ------
    ValueError
        If ``beta * input_scale * 2^26 <= 1``, i.e. ``beta * input_scale <=
        2^-26``: TFLite refuses such a model (``TFLITE_CHECK_GT(double_multiplier,
        1.)`` aborts the interpreter); also for ``beta <= 0``.

    Notes
    -----
    Peak extra memory: none (scalar arithmetic).

    Examples
    --------
    >>> import numpy as np
    >>> from softmaxkit.quantized import softmax_params
    >>> softmax_params(1 / 255)
    SoftmaxParams(multiplier=1077952640, shift=19, diff_min=-3968)
    """
    s = _positive_scale(input_scale)
    b = _as_float32(beta, "beta")
    real = min(b * s * float(1 << (31 - _SCALED_DIFF_INTEGER_BITS)), (1 << 31) - 1.0)
    if not real > 1.0:
        raise ValueError(
            f"beta * input_scale must be > 2**-26 (TFLite aborts in Prepare: "
            f"QuantizeMultiplierGreaterThanOne needs beta*scale*2**26 > 1); got beta={beta!r}, "
            f"input_scale={input_scale!r} (beta*scale*2**26 = {b * s * 2.0**26!r})"
        )
    q, shift = _quantize_multiplier(real)
    radius = (
        1.0
        * ((1 << _SCALED_DIFF_INTEGER_BITS) - 1)
        * (1 << (31 - _SCALED_DIFF_INTEGER_BITS))
        / (1 << shift)
    )
    return SoftmaxParams(q, shift, -math.floor(radius))


def log_softmax_params(input_scale: float) -> LogSoftmaxParams:
    r"""Parameters of TFLite's reference 8-bit log_softmax (``PreprocessLogSoftmaxScalingExp``).

    ``multiplier``, ``shift`` and ``diff_min`` are :func:`softmax_params` with
    beta = 1 (TFLite's LOG_SOFTMAX has no beta); the reverse scaling is
    ``QuantizeMultiplierSmallerThanOneExp(2^(31 - shift) / multiplier)``.

    Parameters
    ----------
    input_scale : float
        Input quantization scale (rounded to float32); must be > 0.

    Returns
    -------
    LogSoftmaxParams

    Raises
    ------
    ValueError
        Where TFLite's Prepare aborts: ``input_scale <= 2^-26``, as for softmax.
        Its second check (the reverse factor ``2^(31 - shift) / multiplier`` must
        lie in (0, 1)) then always holds, since valid parameters have
        ``shift >= 1``; it is still checked here.

    Notes
    -----
    Peak extra memory: none.

    Examples
    --------
    >>> from softmaxkit.quantized import log_softmax_params
    >>> tuple(log_softmax_params(1 / 16))
    (1073741824, 23, -248, 1073741824, 21)
    """
    p = softmax_params(input_scale, 1.0)
    real = float(1 << (31 - p.shift)) / p.multiplier  # p.shift >= 1 since r > 1
    if not 0.0 < real < 1.0:  # pragma: no cover - cannot happen for valid parameters
        raise ValueError(
            f"input_scale={input_scale!r}: TFLite's 8-bit LOG_SOFTMAX reverse scaling factor "
            f"2**(31-shift)/multiplier = {real!r} is not in (0, 1) "
            f"(QuantizeMultiplierSmallerThanOneExp aborts)"
        )
    rq, rshift = _quantize_multiplier(real)
    if rshift > 0:  # pragma: no cover - real < 1 gives shift <= 0
        raise ValueError(f"reverse scaling shift {rshift} > 0 for input_scale={input_scale!r}")
    return LogSoftmaxParams(p.multiplier, p.shift, p.diff_min, rq, -rshift)


def _int16_params(input_scale: float, beta: float) -> tuple[int, int]:
    # activations.cc SoftmaxPrepare, int16: (float scale * float beta) is a float
    # product, then divided in double by 10/65535 (the exp LUT spans [-10, 0]).
    sb = float(np.float32(np.float32(input_scale) * np.float32(beta)))
    return _quantize_multiplier(sb / (10.0 / 65535.0))


# --------------------------------------------------------------------------
# int16 LUTs (LUTPopulate<int16_t> with double, common.h)
# --------------------------------------------------------------------------


def _lut_populate_int16(
    func: Callable[[float], float],
    input_scale: float,
    input_zp: int,
    output_scale: float,
    output_zp: int,
) -> NDArray[np.int16]:
    i16min, i16max = -32768, 32767
    input_min = input_scale * (i16min - input_zp)
    input_max = input_scale * (i16max - input_zp)
    output_min = output_scale * (i16min - output_zp)
    output_max = output_scale * (i16max - output_zp)
    nb_steps = 512
    step = (input_max - input_min) / nb_steps
    half_step = step / 2
    inv = float(i16max - i16min + 1) / (output_max - output_min)
    lut = np.empty(nb_steps + 1, dtype=np.int16)
    for i in range(nb_steps):
        val = func(input_min + i * step)
        val_mid = func(input_min + i * step + half_step)
        val_next = func(input_min + (i + 1) * step)
        sample = _round_half_away(val * inv)
        mid_interp = _round_half_away((val_next * inv + _round_half_away(val * inv)) / 2)
        mid_val = _round_half_away(val_mid * inv)
        bias = _round_half_away((mid_interp - mid_val) / 2)
        lut[i] = min(max(sample - bias, i16min), i16max)
    lut[nb_steps] = min(max(_round_half_away(func(input_max) * inv), i16min), i16max)
    return lut


@functools.cache
def _int16_luts() -> tuple[NDArray[np.int16], NDArray[np.int16]]:
    rng = 32767 - (-32768)
    # math.exp is the C library's exp, as in the runtime
    exp_lut = _lut_populate_int16(math.exp, 10.0 / rng, 32767, 2.0 / rng, 0)
    recip_lut = _lut_populate_int16(lambda v: 1.0 / (1.0 + v), 1.0 / rng, -32768, 2.0 / rng, 0)
    exp_lut.flags.writeable = False
    recip_lut.flags.writeable = False
    return exp_lut, recip_lut


# --------------------------------------------------------------------------
# Validation and drivers
# --------------------------------------------------------------------------


def _int_arg(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer; got {value!r}")
    return int(value)


def _parse_dtype(value: Any, name: str) -> np.dtype[Any]:
    try:
        d: np.dtype[Any] = np.dtype(value)
    except TypeError:
        raise ValueError(
            f"{name} must be one of 'int8', 'uint8', 'int16' (a name or NumPy dtype); got {value!r}"
        ) from None
    return d


def _output_dtype(in_dtype: np.dtype[Any], output_dtype: Any) -> np.dtype[Any]:
    if output_dtype is None:
        return in_dtype
    out = _parse_dtype(output_dtype, "output_dtype")
    allowed = {_I8: (_I8, _I16), _U8: (_U8, _I16), _I16: (_I16,)}[in_dtype]
    if out not in allowed:
        names = ", ".join(_DTYPE_NAMES[d] for d in allowed)
        raise TypeError(
            f"output_dtype for {_DTYPE_NAMES[in_dtype]} input must be one of {names} "
            f"(TFLite's SOFTMAX supports no other pair); got {out}"
        )
    return out


def output_quantization(
    op: Literal["softmax", "log_softmax"],
    input_dtype: DTypeLike,
    output_dtype: DTypeLike | None = None,
) -> tuple[float, int]:
    """The output ``(scale, zero_point)`` TFLite requires for a quantized softmax.

    Parameters
    ----------
    op : {"softmax", "log_softmax"}
    input_dtype : dtype
        int8, uint8 or int16 (log_softmax: int8 or uint8).
    output_dtype : dtype, optional
        Default: the input dtype.

    Returns
    -------
    tuple of (float, int)
        Dequantize an output ``y`` as ``scale * (y - zero_point)``.

    Notes
    -----
    Peak extra memory: none.

    Examples
    --------
    >>> import numpy as np
    >>> from softmaxkit.quantized import output_quantization
    >>> output_quantization("softmax", np.int8)
    (0.00390625, -128)
    >>> output_quantization("log_softmax", np.uint8)
    (0.0625, 255)
    """
    ind = _parse_dtype(input_dtype, "input_dtype")
    if op == "softmax":
        if ind not in (_I8, _U8, _I16):
            raise TypeError(f"input_dtype must be int8, uint8 or int16; got {ind}")
        out = _output_dtype(ind, output_dtype)
        if out == _I16:
            return (1.0 / 32768, 0) if ind == _I16 else (1.0 / 65536, -32768)
        return (1.0 / 256, -128 if out == _I8 else 0)
    if op == "log_softmax":
        if output_dtype is not None:
            output_dtype = _parse_dtype(output_dtype, "output_dtype")
        if ind not in (_I8, _U8) or (output_dtype is not None and np.dtype(output_dtype) != ind):
            raise TypeError(
                f"log_softmax supports int8 -> int8 and uint8 -> uint8 only; got {ind} -> "
                f"{output_dtype}"
            )
        return (16.0 / 256, 127 if ind == _I8 else 255)
    raise ValueError(f"op must be 'softmax' or 'log_softmax'; got {op!r}")
