r"""Quantized softmax and log_softmax, bit-exact with TensorFlow Lite and CMSIS-NN.

A golden model for firmware and accelerator tests: the integer outputs TFLite's
kernels (reference and x86-64 optimized) and CMSIS-NN's ``arm_softmax_*`` give,
bit for bit, verified against the LiteRT interpreter (``tests/data/tflite/``).
The maths, the parameter derivation and a worked example are in
``docs/quantized.md``.

Import it as a submodule (``import softmaxkit.quantized``); ``import softmaxkit``
does not load it, nor Numba.

Quantization conventions (TFLite's, enforced by its ``Prepare``):

==========================  =============  =================
op, input -> output         output scale   output zero point
==========================  =============  =================
softmax int8 -> int8        1/256          -128
softmax uint8 -> uint8      1/256          0
softmax int8/uint8->int16   1/65536        -32768
softmax int16 -> int16      1/32768        0
log_softmax int8 -> int8    16/256         127
log_softmax uint8->uint8    16/256         255
==========================  =============  =================

The input zero point never matters (softmax only sees differences ``x - max``);
the input scale and ``beta`` are float32 in a ``.tflite`` file and are rounded
to float32 here too.
"""

from __future__ import annotations

import functools
import math
import numbers
from typing import Any, NamedTuple

import numpy as np

from .._core.validate import normalize_axis
from ._identify import Match
from ._runtimes import RUNTIMES

__all__ = [
    "RUNTIMES",
    "LogSoftmaxParams",
    "Match",
    "SoftmaxParams",
    "identify",
    "log_softmax",
    "log_softmax_params",
    "output_quantization",
    "softmax",
    "softmax_params",
    "softmax_s8",
    "softmax_s8_s16",
    "softmax_u8",
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


def softmax_params(input_scale, beta=1.0):
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


def log_softmax_params(input_scale):
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


def _lut_populate_int16(func, input_scale, input_zp, output_scale, output_zp) -> np.ndarray:
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
def _int16_luts() -> tuple[np.ndarray, np.ndarray]:
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


def _as_quantized(x_q: Any, name: str = "x_q") -> np.ndarray:
    arr = x_q if isinstance(x_q, np.ndarray) else np.asarray(x_q)
    if arr.dtype not in (_I8, _U8, _I16):
        raise TypeError(
            f"{name} must be an array of quantized values with dtype int8, uint8 or int16; "
            f"got dtype {arr.dtype} (convert with np.asarray(x, dtype=np.int8) after checking "
            f"the range)"
        )
    return arr


def _parse_dtype(value: Any, name: str) -> np.dtype:
    try:
        return np.dtype(value)
    except TypeError:
        raise ValueError(
            f"{name} must be one of 'int8', 'uint8', 'int16' (a name or NumPy dtype); got {value!r}"
        ) from None


def _output_dtype(in_dtype: np.dtype, output_dtype: Any) -> np.dtype:
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


def output_quantization(op, input_dtype, output_dtype=None):
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


def _rows(arr: np.ndarray, axis: Any) -> tuple[np.ndarray, int]:
    if arr.ndim == 0:
        raise ValueError("x_q must have at least one dimension (TFLite requires rank >= 1)")
    if axis is None:
        raise ValueError(
            "axis=None is not supported: a quantized softmax runs along one axis (TFLite: the "
            "last); to treat the whole array as one row pass x_q.reshape(-1) and axis=-1"
        )
    if isinstance(axis, tuple | list):
        raise TypeError(
            f"axis must be a single int (quantized softmax has one row axis); got {axis!r}"
        )
    (ax,) = normalize_axis(axis, arr.ndim)
    moved = np.moveaxis(arr, ax, -1)
    rows = int(np.prod(moved.shape[:-1], dtype=np.int64))
    return np.ascontiguousarray(moved).reshape(rows, arr.shape[ax]), ax


def _unrows(out2: np.ndarray, arr: np.ndarray, ax: int) -> np.ndarray:
    moved_shape = np.moveaxis(np.empty(arr.shape, dtype=np.bool_), ax, -1).shape
    return np.moveaxis(out2.reshape(moved_shape), -1, ax)


def _raise_status(status: np.ndarray, what: str) -> None:
    from .._kernels import quant

    bad = np.flatnonzero(status != quant.OK)
    if bad.size == 0:
        return
    i = int(bad[0])
    n = int(bad.size)
    if status[i] == quant.RANGE:
        raise ValueError(
            f"{what}: TFLite's reference kernel aborts on row {i} ({n} row(s) affected): the "
            f"Q12.19 sum of exps reaches 512 (e.g. a row of 512 or more values equal to the "
            f"maximum), so TFLITE_CHECK(0 <= exponent && exponent <= 31) fails. Its optimized "
            f"kernel (kernel='optimized') or an int16 output handles such rows; CMSIS-NN does no "
            f"check and shifts by 32 bits (undefined behaviour in C)"
        )
    raise ValueError(
        f"{what}: the int32 sum of exps overflows on row {i} ({n} row(s) affected; more than "
        f"4096 values near the row maximum, or 65536 for int16 input); TFLite and CMSIS-NN "
        f"would silently wrap around and return garbage"
    )


def _softmax8(x2, params, out_dtype, kernel, input_scale, beta, cmsis_name=None):
    from .._kernels import quant

    out = np.empty(x2.shape, dtype=out_dtype)
    status = np.zeros(x2.shape[0], dtype=np.int8)
    if x2.size == 0:
        return out
    bits = out_dtype.itemsize * 8
    info = np.iinfo(out_dtype)
    if kernel == "reference":
        exp, keep = quant.fixed_exp_table(params.multiplier, params.shift, params.diff_min, 256)
        quant.softmax_fixed_rows(x2, exp, keep, bits, info.min, info.max, out, status)
        _raise_status(status, cmsis_name or "softmax")
        return out
    scale, zp = output_quantization("softmax", x2.dtype, out_dtype)
    neg = np.float32(-np.float32(input_scale) * np.float32(beta))
    table = quant.float_exp_table(neg, 256)
    trunc = out_dtype == _U8
    quant.softmax_float_rows(
        x2, table, np.float32(scale), zp, info.min, info.max, trunc, out, status
    )
    return out


def _softmax16(x2, input_scale, beta):
    from .._kernels import quant

    out = np.empty(x2.shape, dtype=np.int16)
    status = np.zeros(x2.shape[0], dtype=np.int8)
    if x2.size == 0:
        return out
    mult, shift = _int16_params(input_scale, beta)
    exp_lut, recip_lut = _int16_luts()
    quant.softmax_int16_rows(x2, mult, shift, exp_lut, recip_lut, out, status)
    _raise_status(status, "softmax")
    return out


def softmax(
    x_q,
    /,
    input_scale,
    *,
    beta=1.0,
    axis=-1,
    output_dtype=None,
    kernel=None,
    runtime=None,
    input_zero_point=0,
    output_scale=None,
    output_zero_point=None,
    rounding="half-even",
):
    r"""Quantized softmax, bit-exact with TensorFlow Lite's SOFTMAX op.

    Along ``axis`` (TFLite: the last axis), for quantized inputs ``x`` with scale
    ``s``, approximates ``softmax(beta * s * x)`` and returns it quantized with
    the output scale and zero point TFLite enforces (see
    :func:`output_quantization`): for int8 -> int8,

    .. math::

        y_i \approx \operatorname{round}\Big(256 \cdot
            \frac{e^{\beta s (x_i - m)}}{\sum_j e^{\beta s (x_j - m)}}\Big) - 128,
        \qquad m = \max_j x_j .

    ``kernel="reference"`` is TFLite's reference kernel (all-integer: gemmlowp
    fixed-point exp on Q5.26 differences, Q12.19 sum, Newton-Raphson reciprocal),
    which is what TFLite Micro and CMSIS-NN (``arm_softmax_s8``, ``_u8``,
    ``_s8_s16``) compute.  ``kernel="optimized"`` is TFLite's default kernel on
    x86-64 (a float32 table of ``expf``, float32 sums); it differs from the
    reference by one step on a small fraction of rows.  int16 input uses
    TFLite's LUT-based int16 kernel for both.

    Parameters
    ----------
    x_q : array_like of int8, uint8 or int16
        Quantized input values (the zero point is irrelevant).
    input_scale : float
        Input quantization scale (rounded to float32 as in a .tflite file).
    beta : float, default 1.0
        SOFTMAX's beta (rounded to float32).
    axis : int, default -1
        The row axis.
    output_dtype : dtype, optional
        int8 input: int8 (default) or int16; uint8 input: uint8 (default) or
        int16; int16 input: int16.
    kernel : {"reference", "optimized"}, optional
        Legacy spelling of ``runtime="tflite-reference"`` / ``"tflite-x86"``.
    runtime : str, optional
        Whose arithmetic to reproduce, one of :data:`RUNTIMES` (default
        ``"tflite-reference"``): ``"tflite-reference"``, ``"cmsis-nn"`` and
        ``"tflite-micro"`` (the same integer arithmetic), ``"tflite-x86"``
        (TFLite's optimized float-table kernel), ``"tflite-arm64"`` (TFLite's
        ARM64 ``SoftmaxInt8LUT``, from source; 8-bit to same dtype), ``"torch"``
        (``torch.ops.quantized.softmax`` on torch's default x86 engine),
        ``"torch-qnnpack"`` and ``"xnnpack"`` (QNNPACK's / XNNPACK's uint8
        lookup-table softmax), ``"onnxruntime"`` (``com.microsoft.QLinearSoftmax``,
        opset-13 axis semantics; for opset 1 reshape to ``(prod(shape[:axis]),
        -1)``), ``"float-route"`` (dequantise, float32 softmax, requantise).
        Derivations and sources: ``docs/quantized.md``.
    input_zero_point : int, default 0
        Used by the runtimes that dequantise (``"torch"``, ``"float-route"``);
        the others only see differences ``x - max``.
    output_scale, output_zero_point : optional
        Output quantization. TFLite runtimes: fixed (:func:`output_quantization`;
        a different value raises).  Others: default 1/256 and -128 (int8) or 0
        (uint8); QNNPACK/XNNPACK accept only 1/256 and 0.
    rounding : {"half-even", "half-away"}, default "half-even"
        Requantisation rounding of ``runtime="float-route"``.

    Returns
    -------
    ndarray
        Quantized probabilities of ``output_dtype``, the shape of ``x_q``.

    Raises
    ------
    TypeError
        Input dtype other than int8/uint8/int16, or an unsupported output dtype.
    ValueError
        ``beta <= 0``; ``beta * input_scale <= 2^-26`` for 8-bit input and the
        reference kernel (TFLite's reference Prepare aborts; the optimized
        kernel's Prepare has no such check); a row on which TFLite's reference
        kernel aborts (its sum of exps reaches 512: e.g. 512 equal values; use
        ``kernel="optimized"`` for those) or on which the int32 sum of exps
        would wrap around (> 4096 values at the max).

    Notes
    -----
    Every output of the 8-bit reference kernel is within a few steps of
    ``round(256 * softmax) - 128`` (bound measured and derived in
    ``docs/quantized.md``); the optimized kernel is within one step.  An empty
    row gives an empty result.

    Peak extra memory: one copy of the input when ``axis`` is not the last axis
    or the input is not C-contiguous, plus a 256-entry table and one byte per row.

    Examples
    --------
    The seed case: CMSIS-NN's ``arm_softmax_s8`` unit test, 2 rows of 5:

    >>> import numpy as np
    >>> from softmaxkit.quantized import softmax
    >>> x = np.array([[101, 49, 6, -34, -75], [-79, -38, 120, -55, 115]], dtype=np.int8)
    >>> softmax(x, 1 / 255)
    array([[-57, -70, -79, -86, -92],
           [-94, -88, -54, -91, -56]], dtype=int8)
    >>> softmax(x.reshape(1, 10), 1 / 255).tolist()  # read as one row of 10
    [[-93, -100, -104, -107, -111, -111, -108, -90, -109, -91]]
    """
    from . import _runtimes as R

    arr = _as_quantized(x_q)
    runtime, kernel = R.resolve(runtime, kernel)
    s = _positive_scale(input_scale)
    b = _as_float32(beta, "beta")
    if not b > 0.0:
        raise ValueError(f"beta must be > 0; got {beta!r}")
    zp_in = _int_arg(input_zero_point, "input_zero_point")
    if kernel is None:  # a runtime other than TFLite's and CMSIS-NN's
        if output_dtype is not None and _parse_dtype(output_dtype, "output_dtype") != arr.dtype:
            raise ValueError(
                f"runtime={runtime!r}: the output dtype is the input dtype ({arr.dtype}); got "
                f"output_dtype={output_dtype!r}"
            )
        oscale, ozp = R.default_output(runtime, arr.dtype)
        if output_scale is not None:
            oscale = _as_float32(output_scale, "output_scale")
        if output_zero_point is not None:
            ozp = _int_arg(output_zero_point, "output_zero_point")
        x2, ax = _rows(arr, axis)
        out2 = R.run(
            runtime, x2, input_scale=s, input_zero_point=zp_in, output_scale=oscale,
            output_zero_point=ozp, beta=b, rounding=rounding,
        )  # fmt: skip
        return _unrows(out2, arr, ax)
    if rounding != "half-even":
        raise ValueError(f"rounding applies to runtime='float-route' only; got runtime={runtime!r}")
    out_dtype = _output_dtype(arr.dtype, output_dtype)
    R.check_tflite_output(
        runtime, "softmax", output_quantization("softmax", arr.dtype, out_dtype),
        output_scale, output_zero_point,
    )  # fmt: skip
    x2, ax = _rows(arr, axis)
    if arr.dtype == _I16:
        out2 = _softmax16(x2, s, b)
    else:
        # Only the reference kernel's Prepare derives (and checks) the fixed-point
        # parameters; the optimized kernel's Prepare builds its float table only.
        params = softmax_params(s, b) if kernel == "reference" else None
        out2 = _softmax8(x2, params, out_dtype, kernel, s, b)
    return _unrows(out2, arr, ax)


def log_softmax(x_q, /, input_scale, *, axis=-1, kernel=None, runtime=None):
    r"""Quantized log_softmax, bit-exact with TensorFlow Lite's LOG_SOFTMAX op.

    For 8-bit quantized inputs with scale ``s`` returns ``log_softmax(s * x)``
    quantized with TFLite's fixed output quantization, scale 16/256 and zero
    point 127 (int8) or 255 (uint8), covering [-255/16, 0]:

    .. math::

        y_i \approx \operatorname{round}\Big(16 \big(s (x_i - m) - \log \textstyle\sum_j
            e^{s (x_j - m)}\big)\Big) + 127 .

    TFLite's LOG_SOFTMAX has no beta.  ``kernel="reference"``: the all-integer
    kernel (fixed-point exp, Q12.19 sum, fixed-point log); ``"optimized"``: the
    x86-64 float kernel (``expf`` table, ``logf``, ``rint``).

    Parameters
    ----------
    x_q : array_like of int8 or uint8
        Quantized input values.
    input_scale : float
        Input scale (float32).
    axis : int, default -1
        The row axis.
    kernel : {"reference", "optimized"}, optional
        Legacy spelling of ``runtime="tflite-reference"`` / ``"tflite-x86"``.
    runtime : str, optional
        ``"tflite-reference"`` (default), ``"cmsis-nn"``, ``"tflite-micro"`` or
        ``"tflite-x86"``; the other runtimes have no quantized log_softmax.

    Returns
    -------
    ndarray
        Same dtype and shape as ``x_q``.

    Raises
    ------
    TypeError
        Input dtype other than int8 or uint8.
    ValueError
        Where TFLite's reference Prepare aborts (``input_scale <= 2^-26``, see
        :func:`log_softmax_params`; the optimized kernel has no such check), or a
        row whose int32 sum of exps would wrap around (> 4096 values at the max).

    Notes
    -----
    Peak extra memory: as for :func:`softmax`.

    Examples
    --------
    >>> import numpy as np
    >>> from softmaxkit.quantized import log_softmax
    >>> log_softmax(np.array([0, 0, -16, -128], dtype=np.int8), 1 / 16)
    array([113, 113,  97, -15], dtype=int8)
    """
    from .._kernels import quant

    arr = _as_quantized(x_q)
    if arr.dtype == _I16:
        raise TypeError(
            "log_softmax supports int8 and uint8 input (TFLite has no int16 LOG_SOFTMAX)"
        )
    from . import _runtimes as R

    runtime, kernel = R.resolve(runtime, kernel)
    if kernel is None:
        raise ValueError(
            f"runtime={runtime!r} has no quantized log_softmax; choose one of {R.TFLITE_RUNTIMES}"
        )
    s = _positive_scale(input_scale)
    p = log_softmax_params(s) if kernel == "reference" else None
    x2, ax = _rows(arr, axis)
    out2 = np.empty(x2.shape, dtype=arr.dtype)
    status = np.zeros(x2.shape[0], dtype=np.int8)
    info = np.iinfo(arr.dtype)
    scale, zp = output_quantization("log_softmax", arr.dtype)
    if x2.size:
        if kernel == "reference":
            exp, keep = quant.fixed_exp_table(p.multiplier, p.shift, p.diff_min, 256)
            dq5 = quant.fixed_diff_q5_table(p.multiplier, p.shift, 256)
            quant.log_softmax_fixed_rows(
                x2, exp, keep, dq5, p.reverse_multiplier, p.reverse_shift, p.diff_min, zp,
                info.min, info.max, out2, status,
            )  # fmt: skip
            _raise_status(status, "log_softmax")
        else:
            table = quant.float_exp_table(np.float32(-np.float32(s)), 256)
            quant.log_softmax_float_rows(
                x2, table, np.float32(s), np.float32(scale), zp, info.min, info.max, _LOG_FMA,
                out2, status,
            )  # fmt: skip
    return _unrows(out2, arr, ax)


# Whether the runtime's optimized LOG_SOFTMAX evaluates ``scale * x - c`` as a fused
# multiply-add; fixed by the recorded LiteRT vectors (test_tflite_vectors).
_LOG_FMA = False


# --------------------------------------------------------------------------
# CMSIS-NN style entry points
# --------------------------------------------------------------------------


def _cmsis(x, num_rows, row_size, mult, shift, diff_min, in_dtype, out_dtype, name):
    arr = x if isinstance(x, np.ndarray) else np.asarray(x)
    if arr.dtype != in_dtype:
        raise TypeError(f"{name}: input must have dtype {in_dtype}; got {arr.dtype}")
    ints = {"num_rows": num_rows, "row_size": row_size, "mult": mult, "shift": shift}
    ints["diff_min"] = diff_min
    for k, v in ints.items():
        if isinstance(v, bool) or not isinstance(v, numbers.Integral):
            raise TypeError(f"{name}: {k} must be an integer; got {v!r}")
    if num_rows < 0 or row_size < 0:
        raise ValueError(f"{name}: num_rows and row_size must be >= 0; got {num_rows}, {row_size}")
    if arr.size != num_rows * row_size:
        raise ValueError(
            f"{name}: input has {arr.size} values; num_rows * row_size = {num_rows * row_size}"
        )
    if not 0 <= mult < 1 << 31:
        raise ValueError(f"{name}: mult must be in [0, 2**31); got {mult}")
    if not 0 <= shift <= 31:
        raise ValueError(f"{name}: shift must be in [0, 31]; got {shift}")
    if not -(1 << 31) <= diff_min <= 0:
        raise ValueError(f"{name}: diff_min must be in [-2**31, 0]; got {diff_min}")
    x2 = np.ascontiguousarray(arr).reshape(num_rows, row_size)
    params = SoftmaxParams(int(mult), int(shift), int(diff_min))
    return _softmax8(x2, params, np.dtype(out_dtype), "reference", 1.0, 1.0, name)


def softmax_s8(input, /, num_rows, row_size, mult, shift, diff_min):
    """CMSIS-NN ``arm_softmax_s8``: int8 -> int8 softmax from precomputed parameters.

    Same arithmetic as TFLite's reference kernel (:func:`softmax` with
    ``kernel="reference"``), taking the parameters a TFLite Micro ``Prepare``
    hands to CMSIS-NN: ``mult``, ``shift``, ``diff_min`` from
    :func:`softmax_params`.

    Parameters
    ----------
    input : array_like of int8
        ``num_rows * row_size`` values, row-major (any shape).
    num_rows, row_size : int
    mult : int
        Q0.31 input multiplier, in [0, 2^31).
    shift : int
        Left shift, in [0, 31].
    diff_min : int
        Differences ``x - max`` below it give the minimum output.

    Returns
    -------
    ndarray of int8, shape (num_rows, row_size)
        Output quantized with scale 1/256, zero point -128.

    Raises
    ------
    TypeError, ValueError
        Bad dtype, sizes or parameter ranges; a row whose sum of exps reaches
        512 (CMSIS-NN then shifts by 32 bits, undefined behaviour in C).

    Notes
    -----
    Peak extra memory: a copy of the input when it is not C-contiguous.

    Examples
    --------
    >>> import numpy as np
    >>> from softmaxkit.quantized import softmax_s8
    >>> x = np.array([101, 49, 6, -34, -75, -79, -38, 120, -55, 115], dtype=np.int8)
    >>> softmax_s8(x, 2, 5, 1077952640, 19, -3968)
    array([[-57, -70, -79, -86, -92],
           [-94, -88, -54, -91, -56]], dtype=int8)
    """
    return _cmsis(input, num_rows, row_size, mult, shift, diff_min, _I8, _I8, "softmax_s8")


def softmax_s8_s16(input, /, num_rows, row_size, mult, shift, diff_min):
    """CMSIS-NN ``arm_softmax_s8_s16``: int8 -> int16 (scale 1/65536, zero point -32768).

    As :func:`softmax_s8` with a 16-bit output.  Peak extra memory: as for
    :func:`softmax_s8`.

    Examples
    --------
    >>> import numpy as np
    >>> from softmaxkit.quantized import softmax_s8_s16
    >>> softmax_s8_s16(np.array([0, 0], dtype=np.int8), 1, 2, 1077952640, 19, -3968)
    array([[0, 0]], dtype=int16)
    """
    return _cmsis(input, num_rows, row_size, mult, shift, diff_min, _I8, _I16, "softmax_s8_s16")


def softmax_u8(input, /, num_rows, row_size, mult, shift, diff_min):
    """CMSIS-NN ``arm_softmax_u8``: uint8 -> uint8 (scale 1/256, zero point 0).

    As :func:`softmax_s8` for unsigned input.  Peak extra memory: as for
    :func:`softmax_s8`.

    Examples
    --------
    >>> import numpy as np
    >>> from softmaxkit.quantized import softmax_u8
    >>> softmax_u8(np.array([255, 255], dtype=np.uint8), 1, 2, 1077952640, 19, -3968)
    array([[128, 128]], dtype=uint8)
    """
    return _cmsis(input, num_rows, row_size, mult, shift, diff_min, _U8, _U8, "softmax_u8")


def identify(
    x_q,
    expected_q,
    /,
    *,
    input_scale=None,
    input_zero_point=None,
    output_scale=None,
    output_zero_point=None,
    axis=-1,
    max_results=10,
):
    """Which runtime and parameters turn ``x_q`` into ``expected_q``, bit for bit?

    Runs every runtime of :data:`RUNTIMES` over the parameters not given: input
    scales common in exported models (1/255, 1/256, 1/128, powers of two, 2a/255
    for float ranges [-a, a]), the scale fitted to the data (least squares on
    ``log p_i - log p_max = s (x_i - x_max)``) and a geometric grid refined around
    the best points; the output quantizations each runtime allows (TFLite's
    fixed ones; 1/256 and 1/255 with zero point -128 or 0 elsewhere); both
    roundings of the float route; input zero point 0 unless given (it only
    matters to ``"torch"`` and ``"float-route"``).  A 1-D input of at most 128
    values that no runtime explains as one row is also tried as ``r`` equal rows.

    Parameters
    ----------
    x_q, expected_q : array_like of int8 or uint8, same shape
    input_scale, input_zero_point, output_scale, output_zero_point : optional
        Fix what is known.
    axis : int, default -1
    max_results : int, default 10

    Returns
    -------
    list of Match
        The bit-exact matches (``mismatches == 0``), a runtime's preferred
        (common) input scale first with the range of scanned scales that match;
        or, when none matches, the closest candidates by number of differing
        entries, then largest difference.  Runtimes with one arithmetic are
        listed under each name (``tflite-reference``, ``cmsis-nn``,
        ``tflite-micro``; ``xnnpack``, ``torch-qnnpack``).

    Notes
    -----
    About 0.2-0.5 s for rows of up to 1000 values (thousands of kernel calls on
    one thread).  Bit-exact agreement with several runtimes is common: they
    differ only on a small fraction of rows.

    Examples
    --------
    >>> import numpy as np
    >>> from softmaxkit.quantized import identify
    >>> x = np.array([[101, 49, 6, -34, -75], [-79, -38, 120, -55, 115]], dtype=np.int8)
    >>> y = np.array([[-57, -70, -79, -86, -92], [-94, -88, -54, -91, -56]], dtype=np.int8)
    >>> print(identify(x, y)[0])  # doctest: +ELLIPSIS
    tflite-reference: input_scale=1/255, output_scale=1/256, output_zero_point=-128 ...: bit-exact
    """
    from ._identify import identify as _identify

    return _identify(
        x_q, expected_q, input_scale=input_scale, input_zero_point=input_zero_point,
        output_scale=output_scale, output_zero_point=output_zero_point, axis=axis,
        max_results=max_results,
    )  # fmt: skip
