"""Build single-op quantized SOFTMAX / LOG_SOFTMAX .tflite flatbuffers and run them.

Runs only inside a virtual environment with ``ai-edge-litert`` installed (it
ships the flatbuffer schema module and the interpreter); softmaxkit itself
never imports this file.  Used by ``tools/make_tflite_vectors.py``.
"""

from __future__ import annotations

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as s
from ai_edge_litert.interpreter import Interpreter, OpResolverType

_TYPES = {
    np.dtype(np.int8): s.TensorType.INT8,
    np.dtype(np.uint8): s.TensorType.UINT8,
    np.dtype(np.int16): s.TensorType.INT16,
}


def _tensor(name, shape, dtype, scale, zero_point, buffer):
    t = s.TensorT()
    t.name = name
    t.shape = list(shape)
    t.type = _TYPES[np.dtype(dtype)]
    t.buffer = buffer
    q = s.QuantizationParametersT()
    q.scale = [float(scale)]
    q.zeroPoint = [int(zero_point)]
    t.quantization = q
    return t


def build_model(op, shape, in_dtype, in_scale, in_zp, out_dtype, out_scale, out_zp, beta=1.0):
    """Return the bytes of a model with one SOFTMAX (op='softmax') or LOG_SOFTMAX op."""
    model = s.ModelT()
    model.version = 3
    code = s.OperatorCodeT()
    if op == "softmax":
        code.builtinCode = s.BuiltinOperator.SOFTMAX
        code.deprecatedBuiltinCode = s.BuiltinOperator.SOFTMAX
        code.version = 3 if np.dtype(in_dtype) == np.int16 else 2
        opts = s.SoftmaxOptionsT()
        opts.beta = float(beta)
        opts_type = s.BuiltinOptions.SoftmaxOptions
    else:
        code.builtinCode = s.BuiltinOperator.LOG_SOFTMAX
        code.deprecatedBuiltinCode = s.BuiltinOperator.LOG_SOFTMAX
        code.version = 2
        opts = s.LogSoftmaxOptionsT()
        opts_type = s.BuiltinOptions.LogSoftmaxOptions
    model.operatorCodes = [code]
    model.buffers = [s.BufferT(), s.BufferT(), s.BufferT()]
    sg = s.SubGraphT()
    sg.tensors = [
        _tensor("x", shape, in_dtype, in_scale, in_zp, 1),
        _tensor("y", shape, out_dtype, out_scale, out_zp, 2),
    ]
    sg.inputs = [0]
    sg.outputs = [1]
    o = s.OperatorT()
    o.opcodeIndex = 0
    o.inputs = [0]
    o.outputs = [1]
    o.builtinOptionsType = opts_type
    o.builtinOptions = opts
    sg.operators = [o]
    sg.name = "main"
    model.subgraphs = [sg]
    model.description = "softmaxkit test vector"
    b = flatbuffers.Builder(1024)
    b.Finish(model.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output())


RESOLVERS = {
    "reference": OpResolverType.BUILTIN_REF,
    "optimized": OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    "default": OpResolverType.AUTO,
}


def run_model(model: bytes, x: np.ndarray, resolver: str) -> np.ndarray:
    """Run the one-op model on ``x`` with the named op resolver."""
    it = Interpreter(model_content=model, experimental_op_resolver_type=RESOLVERS[resolver])
    it.allocate_tensors()
    it.set_tensor(it.get_input_details()[0]["index"], x)
    it.invoke()
    return it.get_tensor(it.get_output_details()[0]["index"]).copy()
