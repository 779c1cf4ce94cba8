"""The quantized softmax and log_softmax (TFLite, CMSIS-NN and the other runtimes).

Validation and the row layout (``_as_quantized``, ``_rows``, ``_unrows``), the
TFLite kernels' drivers (``_softmax8``: reference fixed-point or x86-64 float table;
``_softmax16``: the int16 LUT kernel) over the Numba kernels of
``_kernels/quant.py``, and the public :func:`softmax` and :func:`log_softmax`;
the other runtimes are in ``_runtimes.py``.  Re-exported by ``softmaxkit.quantized``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .._core import coldstart
from .._core.typing import ArrayLike, DTypeLike, IntArray, NDArray
from .._core.validate import normalize_axis
from . import _runtimes as R
from ._params import (
    _I8,
    _I16,
    _U8,
    SoftmaxParams,
    _as_float32,
    _int16_luts,
    _int16_params,
    _int_arg,
    _output_dtype,
    _parse_dtype,
    _positive_scale,
    log_softmax_params,
    output_quantization,
    softmax_params,
)
from ._runtimes import Kernel, Rounding, Runtime

__all__ = ["log_softmax", "softmax"]


def _as_quantized(x_q: Any, name: str = "x_q") -> NDArray[Any]:
    arr = x_q if isinstance(x_q, np.ndarray) else np.asarray(x_q)
    if arr.dtype not in (_I8, _U8, _I16):
        raise TypeError(
            f"{name} must be an array of quantized values with dtype int8, uint8 or int16; "
            f"got dtype {arr.dtype} (convert with np.asarray(x, dtype=np.int8) after checking "
            f"the range)"
        )
    return arr


def _rows(arr: NDArray[Any], axis: Any) -> tuple[NDArray[Any], int]:
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
    # the last axis needs no move (identify() makes thousands of small calls: the two
    # moveaxis calls were a fifth of its time)
    moved = arr if ax == arr.ndim - 1 else np.moveaxis(arr, ax, -1)
    rows = math.prod(moved.shape[:-1])
    return np.ascontiguousarray(moved).reshape(rows, arr.shape[ax]), ax


def _unrows(out2: NDArray[Any], arr: NDArray[Any], ax: int) -> NDArray[Any]:
    if ax == arr.ndim - 1:
        return out2.reshape(arr.shape)
    moved_shape = np.moveaxis(np.empty(arr.shape, dtype=np.bool_), ax, -1).shape
    return np.moveaxis(out2.reshape(moved_shape), -1, ax)


def _call(name: str, size: int, *args: Any) -> Any:
    """``_kernels.quant.<name>(*args)``; on a cold kernel cache and an input of at most
    ``coldstart.SMALL`` values (``size``), its NumPy twin (``_twin.py``: the same
    integers) while the kernel compiles in the background."""
    from .._kernels import quant

    try:
        with coldstart.allow(size):
            return getattr(quant, name)(*args)
    except coldstart.ColdKernel:
        from . import _twin

        return getattr(_twin, name)(*args)


def _raise_status(status: NDArray[np.int8], what: str) -> None:
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


def _softmax8(
    x2: NDArray[Any],
    params: SoftmaxParams | None,
    out_dtype: np.dtype[Any],
    kernel: str,
    input_scale: float,
    beta: float,
    cmsis_name: str | None = None,
) -> NDArray[Any]:

    out = np.empty(x2.shape, dtype=out_dtype)
    status = np.zeros(x2.shape[0], dtype=np.int8)
    if x2.size == 0:
        return out
    bits = out_dtype.itemsize * 8
    info = np.iinfo(out_dtype)
    if kernel == "reference":
        assert params is not None  # the reference kernel always has its parameters
        n = x2.size
        exp, keep = _call(
            "fixed_exp_table", n, params.multiplier, params.shift, params.diff_min, 256
        )
        _call("softmax_fixed_rows", n, x2, exp, keep, bits, info.min, info.max, out, status)
        _raise_status(status, cmsis_name or "softmax")
        return out
    scale, zp = output_quantization("softmax", x2.dtype, out_dtype)
    neg = np.float32(-np.float32(input_scale) * np.float32(beta))
    table = _call("float_exp_table", x2.size, neg, 256)
    trunc = out_dtype == _U8
    _call(
        "softmax_float_rows",
        x2.size,
        x2,
        table,
        np.float32(scale),
        zp,
        info.min,
        info.max,
        trunc,
        out,
        status,
    )
    return out


def _softmax16(x2: NDArray[Any], input_scale: float, beta: float) -> NDArray[np.int16]:

    out = np.empty(x2.shape, dtype=np.int16)
    status = np.zeros(x2.shape[0], dtype=np.int8)
    if x2.size == 0:
        return out
    mult, shift = _int16_params(input_scale, beta)
    exp_lut, recip_lut = _int16_luts()
    _call("softmax_int16_rows", x2.size, x2, mult, shift, exp_lut, recip_lut, out, status)
    _raise_status(status, "softmax")
    return out


def softmax(
    x_q: ArrayLike,
    /,
    input_scale: float,
    *,
    beta: float = 1.0,
    axis: int = -1,
    output_dtype: DTypeLike | None = None,
    kernel: Kernel | None = None,
    runtime: Runtime | None = None,
    input_zero_point: int = 0,
    output_scale: float | None = None,
    output_zero_point: int | None = None,
    rounding: Rounding = "half-even",
) -> IntArray:
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
        ARM64 ``SoftmaxInt8LUT``, verified against aarch64 LiteRT 2.3.0; 8-bit to
        same dtype), ``"torch"``
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


def log_softmax(
    x_q: ArrayLike,
    /,
    input_scale: float,
    *,
    axis: int = -1,
    kernel: Kernel | None = None,
    runtime: Runtime | None = None,
) -> IntArray:
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

    arr = _as_quantized(x_q)
    if arr.dtype == _I16:
        raise TypeError(
            "log_softmax supports int8 and uint8 input (TFLite has no int16 LOG_SOFTMAX)"
        )
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
            assert p is not None  # derived above for the reference kernel
            n = x2.size
            exp, keep = _call("fixed_exp_table", n, p.multiplier, p.shift, p.diff_min, 256)
            dq5 = _call("fixed_diff_q5_table", n, p.multiplier, p.shift, 256)
            _call(
                "log_softmax_fixed_rows", n, x2, exp, keep, dq5, p.reverse_multiplier,
                p.reverse_shift, p.diff_min, zp, info.min, info.max, out2, status,
            )  # fmt: skip
            _raise_status(status, "log_softmax")
        else:
            table = _call("float_exp_table", x2.size, np.float32(-np.float32(s)), 256)
            _call(
                "log_softmax_float_rows", x2.size, x2, table, np.float32(s), np.float32(scale),
                zp, info.min, info.max, _LOG_FMA, out2, status,
            )  # fmt: skip
    return _unrows(out2, arr, ax)


# Whether the runtime's optimized LOG_SOFTMAX evaluates ``scale * x - c`` as a fused
# multiply-add; fixed by the recorded LiteRT vectors (test_tflite_vectors).
_LOG_FMA = False
