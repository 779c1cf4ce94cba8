"""Benchmark cases of the quantized family: int8 softmax of [4096, 1000].

Our runtime models against the float route (dequantise -> softmaxkit float32
softmax -> requantise, in NumPy) and against the real runtimes' per-call time
where installed: LiteRT ``Interpreter.invoke`` (optimized kernels, model built by
``tools/tflite_softmax_model.py`` from a source checkout), an ONNX Runtime session
running ``com.microsoft.QLinearSoftmax``, and ``torch.ops.quantized.softmax`` on
torch's default engine and (uint8 copy of the data, zero point 128) on its QNNPACK
engine, next to our ``xnnpack`` model on the same uint8 data.
Opt-in (``softmaxkit bench --family quantized``).
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np

from .timing import Case

__all__ = ["cases"]

_SCALE = 1 / 16  # logits in [-8, 8)


def _float_route(x):
    from ..softmax import softmax

    p = softmax(x.astype(np.float32) * np.float32(_SCALE), axis=-1)
    return np.clip(np.rint(p * np.float32(256)) - 128, -128, 127).astype(np.int8)


def _peers(x, xu, impls):
    """The real runtimes on int8 ``x`` (and QNNPACK on ``xu = x + 128``, uint8)."""
    rows, n = x.shape
    try:  # LiteRT, from a source checkout (tools/ is not installed)
        tools = Path(__file__).resolve().parents[3] / "tools"
        sys.path.insert(0, str(tools))
        from ai_edge_litert.interpreter import Interpreter
        from tflite_softmax_model import RESOLVERS, build_model

        m = build_model("softmax", x.shape, np.int8, _SCALE, 0, np.int8, 1 / 256, -128)
        it = Interpreter(model_content=m, experimental_op_resolver_type=RESOLVERS["optimized"])
        it.allocate_tensors()
        i_in = it.get_input_details()[0]["index"]
        i_out = it.get_output_details()[0]["index"]

        def litert():
            it.set_tensor(i_in, x)
            it.invoke()
            return it.get_tensor(i_out)

        impls["LiteRT invoke (optimized)"] = litert
    except Exception:  # pragma: no cover - LiteRT or the checkout absent
        pass
    finally:
        if sys.path and sys.path[0].endswith("tools"):
            sys.path.pop(0)
    try:
        import onnxruntime as ort
        from onnx import TensorProto, helper

        inits = [
            helper.make_tensor("xs", TensorProto.FLOAT, [], [_SCALE]),
            helper.make_tensor("xz", TensorProto.INT8, [], [0]),
            helper.make_tensor("ys", TensorProto.FLOAT, [], [1 / 256]),
            helper.make_tensor("yz", TensorProto.INT8, [], [-128]),
        ]
        node = helper.make_node(
            "QLinearSoftmax", ["x", "xs", "xz", "ys", "yz"], ["y"], domain="com.microsoft",
            opset=13, axis=-1,
        )  # fmt: skip
        io = [helper.make_tensor_value_info(k, TensorProto.INT8, [rows, n]) for k in "xy"]
        g = helper.make_graph([node], "q", [io[0]], [io[1]], inits)
        model = helper.make_model(
            g, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid("com.microsoft", 1)]
        )
        model.ir_version = 8
        sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        impls["onnxruntime session run"] = lambda: sess.run(None, {"x": x})[0]
    except Exception:  # pragma: no cover - onnxruntime absent
        pass
    try:
        import torch

        engines = torch.backends.quantized.supported_engines
        default = torch.backends.quantized.engine
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            q = torch._make_per_tensor_quantized_tensor(torch.from_numpy(x), _SCALE, 0)
            qu = torch._make_per_tensor_quantized_tensor(torch.from_numpy(xu), _SCALE, 128)

        def torch_default():
            torch.backends.quantized.engine = default
            return torch.ops.quantized.softmax(q, -1, 1 / 256, -128).int_repr()

        def torch_qnnpack():  # quint8, output 1/256 and 0: QNNPACK's lookup-table kernel
            torch.backends.quantized.engine = "qnnpack"
            try:
                return torch.ops.quantized.softmax(qu, -1, 1 / 256, 0).int_repr()
            finally:
                torch.backends.quantized.engine = default

        impls["torch quantized.softmax"] = torch_default
        if "qnnpack" in engines:
            impls["torch quantized.softmax, qnnpack engine (uint8)"] = torch_qnnpack
    except Exception:  # pragma: no cover - torch absent
        pass


def _case(rows: int, n: int) -> Case:
    from .. import quantized as Q

    x = np.random.default_rng(0).integers(-128, 128, size=(rows, n)).astype(np.int8)
    v = x.astype(np.float64) * _SCALE
    p = np.exp(v - v.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    ref = p * 256 - 128

    impls = {
        f"softmaxkit {rt}": (lambda rt=rt: Q.softmax(x, _SCALE, runtime=rt))
        for rt in (
            "tflite-reference",
            "tflite-x86",
            "cmsis-nn",
            "tflite-arm64",
            "onnxruntime",
            "torch",
            "float-route",
        )
    }
    # the same logits as uint8 with zero point 128: QNNPACK / XNNPACK take uint8 only
    # and give uint8 probabilities with zero point 0 (``check`` shifts them back)
    xu = (x.astype(np.int16) + 128).astype(np.uint8)
    impls["softmaxkit xnnpack (uint8)"] = lambda: Q.softmax(xu, _SCALE, runtime="xnnpack")
    impls["float route (softmaxkit float32 + NumPy)"] = lambda: _float_route(x)
    _peers(x, xu, impls)

    def check(res) -> float:  # max distance in output steps from the exact value
        r = np.asarray(res)
        shift = 128 if r.dtype == np.uint8 else 0
        return float(np.max(np.abs(r.astype(np.float64) - shift - ref)))

    return Case(
        family="quantized",
        op="int8 softmax",
        label=f"[{rows}, {n}] int8, scale 1/16",
        impls=impls,
        baseline="float route (softmaxkit float32 + NumPy)",
        check=check,
        nbytes=2 * x.nbytes,
    )


def cases(quick: bool) -> list[Case]:
    """int8 softmax of [4096, 1000] ([512, 1000] when ``quick``)."""
    return [_case(512 if quick else 4096, 1000)]
