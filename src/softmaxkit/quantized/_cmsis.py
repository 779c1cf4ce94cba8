"""CMSIS-NN style entry points: ``arm_softmax_s8``, ``arm_softmax_s8_s16``, ``arm_softmax_u8``.

The three take the parameters a TFLite Micro ``Prepare`` hands to CMSIS-NN
(``mult``, ``shift``, ``diff_min`` from :func:`softmax_params`) and run TFLite's
reference kernel (``_ops._softmax8``); they differ only in their dtypes, so one
factory (``_entry``) makes all three with the same checked signature.
Re-exported by ``softmaxkit.quantized``.
"""

from __future__ import annotations

import numbers
from typing import Any, Protocol

import numpy as np

from .._core.typing import ArrayLike, IntArray
from ._ops import _softmax8
from ._params import _I8, _I16, _U8, SoftmaxParams

__all__ = ["softmax_s8", "softmax_s8_s16", "softmax_u8"]


class CmsisSoftmax(Protocol):
    """The signature of the CMSIS-NN entry points."""

    # (the input is positional-only, so its name here is free)
    def __call__(
        self, x: ArrayLike, /, num_rows: int, row_size: int, mult: int, shift: int, diff_min: int
    ) -> IntArray: ...


def _cmsis(
    x: ArrayLike,
    num_rows: int,
    row_size: int,
    mult: int,
    shift: int,
    diff_min: int,
    in_dtype: np.dtype[Any],
    out_dtype: np.dtype[Any],
    name: str,
) -> IntArray:
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


def _entry(name: str, in_dtype: np.dtype[Any], out_dtype: np.dtype[Any], doc: str) -> CmsisSoftmax:
    def entry(
        input: ArrayLike, /, num_rows: int, row_size: int, mult: int, shift: int, diff_min: int
    ) -> IntArray:
        return _cmsis(input, num_rows, row_size, mult, shift, diff_min, in_dtype, out_dtype, name)

    entry.__name__ = entry.__qualname__ = name
    entry.__doc__ = doc
    return entry


softmax_s8 = _entry(
    "softmax_s8",
    _I8,
    _I8,
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
    """,
)


def _variant_doc(name: str, summary: str, relation: str, example: str, result: str) -> str:
    """Docstring of a CMSIS-NN variant of ``softmax_s8`` (doctested as the others)."""
    return f"""CMSIS-NN ``arm_{name}``: {summary}.

    As :func:`softmax_s8` {relation}.  Peak extra memory: as for :func:`softmax_s8`.

    Examples
    --------
    >>> import numpy as np
    >>> from softmaxkit.quantized import {name}
    >>> {name}({example}, 1, 2, 1077952640, 19, -3968)
    {result}
    """


softmax_s8_s16 = _entry(
    "softmax_s8_s16",
    _I8,
    _I16,
    _variant_doc(
        "softmax_s8_s16",
        "int8 -> int16 (scale 1/65536, zero point -32768)",
        "with a 16-bit output",
        "np.array([0, 0], dtype=np.int8)",
        "array([[0, 0]], dtype=int16)",
    ),
)
softmax_u8 = _entry(
    "softmax_u8",
    _U8,
    _U8,
    _variant_doc(
        "softmax_u8",
        "uint8 -> uint8 (scale 1/256, zero point 0)",
        "for unsigned input",
        "np.array([255, 255], dtype=np.uint8)",
        "array([[128, 128]], dtype=uint8)",
    ),
)
