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

Layout: ``_params.py`` (parameter derivation, output quantization), ``_ops.py``
(:func:`softmax`, :func:`log_softmax`), ``_cmsis.py`` (the CMSIS-NN entry points),
``_runtimes.py`` (the non-TFLite runtimes), ``_identify.py`` (:func:`identify`);
this module only re-exports them.
"""

from __future__ import annotations

from ._cmsis import softmax_s8, softmax_s8_s16, softmax_u8
from ._identify import Match, identify
from ._ops import log_softmax, softmax
from ._params import (
    LogSoftmaxParams,
    SoftmaxParams,
    _int16_luts,  # noqa: F401  (tests read the tables through the package)
    log_softmax_params,
    output_quantization,
    softmax_params,
)
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
