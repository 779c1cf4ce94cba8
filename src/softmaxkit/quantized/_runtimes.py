"""The runtimes of ``softmaxkit.quantized.softmax(runtime=...)`` other than TFLite's.

Each runtime is modelled from its source (see ``docs/quantized.md``): the table
it builds in its ``Prepare``/``create`` step, derived here in the same precision,
and its per-row arithmetic in ``_kernels/quant_rt.py``.  This module validates
the combinations each runtime accepts and raises ``ValueError`` naming the
runtime and quoting its own check.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Literal, TypeAlias, cast, get_args

import numpy as np

from .._core.typing import NDArray

__all__ = [
    "LUT_RUNTIMES",
    "RUNTIMES",
    "TFLITE_RUNTIMES",
    "Kernel",
    "Rounding",
    "Runtime",
    "default_output",
    "run",
]

#: ``runtime=`` of ``softmaxkit.quantized.softmax``: the names of :data:`RUNTIMES`.
Runtime: TypeAlias = Literal[
    "tflite-reference",
    "tflite-x86",
    "cmsis-nn",
    "tflite-micro",
    "tflite-arm64",
    "torch",
    "torch-qnnpack",
    "onnxruntime",
    "xnnpack",
    "float-route",
]
#: ``kernel=``: the legacy spelling of ``runtime="tflite-reference"`` / ``"tflite-x86"``.
Kernel: TypeAlias = Literal["reference", "optimized"]
#: ``rounding=`` of ``runtime="float-route"``.
Rounding: TypeAlias = Literal["half-even", "half-away"]

# the Literal is the one list: TFLite's runtimes first (its four, then the others)
RUNTIMES: tuple[Runtime, ...] = get_args(Runtime)
TFLITE_RUNTIMES = RUNTIMES[:4]
LUT_RUNTIMES = ("xnnpack", "torch-qnnpack", "onnxruntime")
ROUNDINGS = ("half-even", "half-away")

_I8, _U8 = np.dtype(np.int8), np.dtype(np.uint8)
_FLT_MAX = np.float32(np.finfo(np.float32).max)


def check_runtime(runtime: Any) -> str:
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {RUNTIMES}; got {runtime!r}")
    return str(runtime)


def default_output(runtime: str, dtype: np.dtype[Any]) -> tuple[float, int]:
    """Output (scale, zero point) a runtime uses (or that its users conventionally pass)."""
    return (1.0 / 256, -128 if dtype == _I8 else 0)


def _check(
    runtime: str,
    dtype: np.dtype[Any],
    beta: float,
    output_scale: float,
    output_zero_point: int,
    rounding: str,
    input_scale: float = 1.0,
) -> None:
    if dtype not in (_I8, _U8):
        raise ValueError(
            f"runtime={runtime!r} takes int8 or uint8 input; got {dtype} (only the TFLite "
            f"runtimes and CMSIS-NN have an int16 softmax)"
        )
    if beta != 1.0 and runtime != "tflite-arm64":
        raise ValueError(
            f"runtime={runtime!r} has no beta (softmax temperature); got beta={beta!r}"
        )
    if rounding != "half-even" and runtime != "float-route":
        raise ValueError(
            f"rounding applies to runtime='float-route' only; {runtime!r} rounds its own way"
        )
    if rounding not in ROUNDINGS:
        raise ValueError(f"rounding must be one of {ROUNDINGS}; got {rounding!r}")
    if runtime in ("xnnpack", "torch-qnnpack"):
        who = (
            "XNNPACK xnn_create_softmax_nc_qu8"
            if runtime == "xnnpack"
            else "PyTorch's QNNPACK softmax (is_qnnpack_compatible)"
        )
        if dtype != _U8:
            raise ValueError(
                f"runtime={runtime!r}: {who} takes uint8 (qu8) input only; got {dtype}"
                + (
                    " (torch runs qint8 through its dequantise/softmax/quantise route: "
                    "runtime='torch')"
                    if runtime == "torch-qnnpack"
                    else " (XNNPACK has no signed 8-bit softmax)"
                )
            )
        if np.float32(output_scale) != np.float32(2.0**-8):
            raise ValueError(
                f"runtime={runtime!r}: {who} requires output_scale == 0x1.0p-8f "
                f"('only output scale of 1/256 is supported'); got {output_scale!r}"
            )
        if output_zero_point != 0:
            raise ValueError(
                f"runtime={runtime!r}: {who} requires output_zero_point == 0 "
                f"('only output zero point of 0 is supported'); got {output_zero_point!r}"
            )
        s32 = np.float32(input_scale)
        if not (np.isfinite(s32) and s32 >= np.finfo(np.float32).tiny):
            raise ValueError(
                f"runtime={runtime!r}: {who} requires a normal float32 input_scale "
                f"(isnormal(input_scale); XNNPACK: 'scale must be finite, normalized, and "
                f"positive', QNNPACK: 'scale must be finite and positive', torch then raises "
                f"'failed to create QNNPACK Softmax operator'); got {input_scale!r}"
            )
    if runtime == "tflite-arm64":
        want = default_output(runtime, dtype)
        check_tflite_output(runtime, "softmax", want, output_scale, output_zero_point)
    info = np.iinfo(dtype)
    if not info.min <= output_zero_point <= info.max:
        raise ValueError(
            f"runtime={runtime!r}: output_zero_point must lie in the {dtype} range "
            f"[{info.min}, {info.max}] (torch: 'zero_point must be between quant_min and "
            f"quant_max'); got {output_zero_point!r}"
        )
    if not (output_scale > 0 and math.isfinite(output_scale)):
        raise ValueError(f"runtime={runtime!r}: output_scale must be > 0; got {output_scale!r}")


@functools.lru_cache(maxsize=256)
def ort_table(x_scale: float, reduce_len: int) -> NDArray[Any]:
    """ONNX Runtime ``QlinearBuildLookupTableUint32`` (float32 entries), indexed by max - x.

    ``bit_shift = max(0, log(FLT_MAX / reduce_len) - 5) / x_scale`` (the float
    quotient, then the log in double) shifts the table so that the largest entry
    is ``FLT_MAX / reduce_len / e^5`` and the float32 sum cannot overflow.
    """
    xs = float(np.float32(x_scale))
    q = float(_FLT_MAX / np.float32(reduce_len))
    bit_shift = max(0.0, math.log(q) - 5.0) / xs
    d = np.arange(256, dtype=np.float64)
    with np.errstate(under="ignore", over="ignore"):
        t = np.exp((bit_shift - d) * xs).astype(np.float32)
    t.flags.writeable = False
    return t


@functools.lru_cache(maxsize=256)
def arm64_table(input_scale: float, beta: float) -> NDArray[Any]:
    """TFLite ``PopulateSoftmaxUInt8LookupTable``, as one uint16 table indexed by max - x.

    ``t = min(65535, (int)(expf(s * beta * (val - 255)) * 65535 + 0.5))`` with the
    float32 product ``s * beta``, the float32 ``expf`` times 65535 in float32,
    then ``+ 0.5`` in double and truncation.
    """
    scale = np.float32(np.float32(input_scale) * np.float32(beta))
    d = np.arange(256)
    with np.errstate(under="ignore"):
        e = np.exp((scale * (-d).astype(np.float32)).astype(np.float32))
    t = np.floor((e * np.float32(65535)).astype(np.float64) + 0.5)
    t = np.minimum(t, 65535).astype(np.uint16)
    t.flags.writeable = False
    return t


@functools.lru_cache(maxsize=256)
def qnnpack_table(input_scale: float, channels: int) -> NDArray[Any]:
    """QNNPACK / XNNPACK softmax table: ``lrint(qscale * exp(-d * s))`` as uint32.

    ``qscale = min(UINT32_MAX / channels, 2^23 - 1)`` keeps the uint32 sum of a
    row below 2^32 (or wraps it, as the runtimes' sum does, when ``lrint`` rounds
    ``qscale`` up: 513 equal values sum to 2^32 + 32) and ``t << 8`` below 2^31.
    ``exp`` is the C library's double ``exp`` (``math.exp``), as both runtimes call it;
    NumPy's SIMD ``exp`` differs from glibc's by one ulp on ~5% of these arguments
    (no table entry changed in 20,000 random (scale, channels) pairs, but an entry
    within 1e-9 of a half-integer would).
    """
    s = float(np.float32(input_scale))
    qscale = min(4294967295.0 / channels, 8388607.0)
    e = np.array([math.exp(-d * s) for d in range(256)])  # (i - 255) * s, i = 255 - d
    t = np.rint(qscale * e).astype(np.uint32)  # lrint: current mode, half-even
    t.flags.writeable = False
    return t


def run(
    runtime: str,
    x2: NDArray[Any],
    *,
    input_scale: float,
    input_zero_point: int,
    output_scale: float,
    output_zero_point: int,
    beta: float = 1.0,
    rounding: str = "half-even",
) -> NDArray[Any]:
    """Run a non-TFLite runtime on C-contiguous rows ``x2[R, n]``; output dtype = input's."""
    from .._kernels import quant_rt
    from .._kernels._parallel import run as prun
    from .._kernels._parallel import threads_for

    _check(runtime, x2.dtype, beta, output_scale, output_zero_point, rounding, input_scale)
    out = np.empty(x2.shape, dtype=x2.dtype)
    if x2.size == 0:
        return out
    n = x2.shape[1]
    nt = threads_for(x2.size * 8)
    if runtime == "onnxruntime":
        table = ort_table(input_scale, n)
        y_scale = np.float32(math.floor(np.float32(1.0) / np.float32(output_scale)))
        info = np.iinfo(x2.dtype)
        prun(
            quant_rt.lut_float_rows, x2.shape[0], nt, x2, table, y_scale,
            np.int64(output_zero_point), np.int64(info.min), np.int64(info.max), out,
        )  # fmt: skip
    elif runtime == "tflite-arm64":
        info = np.iinfo(x2.dtype)
        prun(
            quant_rt.lut16_rows, x2.shape[0], nt, x2, arm64_table(input_scale, beta),
            np.float32(output_scale), np.int64(output_zero_point), np.int64(info.min),
            np.int64(info.max), out,
        )  # fmt: skip
    elif runtime in ("xnnpack", "torch-qnnpack"):
        zero_row = np.full(1, -1, dtype=np.int64)
        table = qnnpack_table(input_scale, n)
        prun(quant_rt.lut32norm_rows, x2.shape[0], nt, x2, table, out, zero_row)
        if zero_row[0] >= 0:
            r = int(zero_row[0])
            raise ValueError(
                f"runtime={runtime!r}: the uint32 sum of row {r}'s table entries wraps to 0 "
                f"(its {n} values sum to 2^32, e.g. {n} equal values when lrint(UINT32_MAX / "
                f"{n}) * {n} == 2^32), a division by zero in u8lut32norm (XNNPACK: "
                f"'assert(vsum != 0)'; torch's QNNPACK engine dies with SIGFPE)"
            )
    else:  # torch (its default x86/fbgemm engine) and float-route
        info = np.iinfo(x2.dtype)
        torch = runtime == "torch"
        inv_out = np.float32(np.float32(1.0) / np.float32(output_scale))
        prun(
            quant_rt.float_route_rows, x2.shape[0], nt, x2, np.float32(input_scale),
            np.int64(input_zero_point), torch, inv_out,
            np.int64(output_zero_point), rounding == "half-even", torch, np.int64(info.min),
            np.int64(info.max), out,
        )  # fmt: skip
    return out


_TFLITE_KERNEL = {
    "tflite-reference": "reference",
    "cmsis-nn": "reference",
    "tflite-micro": "reference",
    "tflite-x86": "optimized",
}


def resolve(runtime: Any, kernel: Any) -> tuple[Runtime, Kernel | None]:
    """``(runtime, tflite kernel or None)`` from the ``runtime=`` and legacy ``kernel=``."""
    if runtime is None:
        if kernel is None or kernel == "reference":
            return "tflite-reference", "reference"
        if kernel == "optimized":
            return "tflite-x86", "optimized"
        raise ValueError(f"kernel must be one of ('reference', 'optimized'); got {kernel!r}")
    check_runtime(runtime)
    tk = _TFLITE_KERNEL.get(runtime)
    if kernel is not None and kernel != tk:
        raise ValueError(
            f"kernel={kernel!r} contradicts runtime={runtime!r} (kernel='reference' is "
            f"runtime='tflite-reference', kernel='optimized' is runtime='tflite-x86'); give "
            f"runtime only"
        )
    return cast(Runtime, runtime), cast("Kernel | None", tk)


def check_tflite_output(
    runtime: str,
    op: str,
    want: tuple[float, int],
    output_scale: float | None,
    output_zero_point: int | None,
) -> None:
    """TFLite's Prepare: ``TF_LITE_ENSURE_NEAR(output->params.scale, want, 0.001 * want)``."""
    scale, zp = want
    if output_scale is not None and not abs(output_scale - scale) <= 0.001 * scale:
        raise ValueError(
            f"runtime={runtime!r}: {op} requires output_scale {scale!r} (TFLite's Prepare: "
            f"TF_LITE_ENSURE_NEAR(context, output->params.scale, {scale!r}, {0.001 * scale!r}));"
            f" got {output_scale!r}"
        )
    if output_zero_point is not None and output_zero_point != zp:
        raise ValueError(
            f"runtime={runtime!r}: {op} requires output_zero_point {zp} (TFLite's Prepare: "
            f"TF_LITE_ENSURE_EQ(context, output->params.zero_point, {zp})); got "
            f"{output_zero_point!r}"
        )
