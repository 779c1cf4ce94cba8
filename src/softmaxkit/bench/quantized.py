"""Benchmark cases of the quantized family: int8 softmax of [4096, 1000].

Our runtime models against the float route (dequantise -> softmaxkit float32
softmax -> requantise, in NumPy) and against the real runtimes' per-call time
where installed: LiteRT ``Interpreter.invoke`` (optimized kernels, model built by
``tools/tflite_softmax_model.py`` from a source checkout), an ONNX Runtime session
running ``com.microsoft.QLinearSoftmax``, and ``torch.ops.quantized.softmax``.
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


def _peers(x, impls):
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

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            q = torch._make_per_tensor_quantized_tensor(torch.from_numpy(x), _SCALE, 0)
        impls["torch quantized.softmax"] = lambda: torch.ops.quantized.softmax(
            q, -1, 1 / 256, -128
        ).int_repr()
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
    impls["float route (softmaxkit float32 + NumPy)"] = lambda: _float_route(x)
    _peers(x, impls)

    def check(res) -> float:  # max distance in output steps from the exact value
        return float(np.max(np.abs(np.asarray(res, dtype=np.float64) - ref)))

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
