"""Record ``com.microsoft.QLinearSoftmax`` test vectors from the real ONNX Runtime.

    PYTHONPATH=src python tools/make_ort_vectors.py

Each case is a one-node ONNX model built with ``onnx.helper`` (``build_model``,
also used by the live test) with the node attributes ``opset`` (1 or 13) and
``axis``; run on the CPU execution provider.  Output, replayed by
``tests/test_quant_runtimes.py`` without onnxruntime:
``tests/data/onnxruntime/vectors.npz`` (``c<i>_x``, ``c<i>_y``) and ``cases.json``.
"""

from __future__ import annotations

import json
import platform
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent.parent / "tests" / "data" / "onnxruntime"
RNG = np.random.default_rng(20261206)
SCALES = [1 / 255, 1 / 256, 1 / 128, 0.05, 0.1, 2.0**-5, 0.0123, 0.25, 1.0]


def build_model(dtype, shape, opset, axis, x_scale, x_zp, y_scale, y_zp):
    """A one-node QLinearSoftmax model (serialized bytes); scales and zero points constant."""
    from onnx import TensorProto, helper

    et = TensorProto.INT8 if np.dtype(dtype) == np.int8 else TensorProto.UINT8
    inits = [
        helper.make_tensor("x_scale", TensorProto.FLOAT, [], [x_scale]),
        helper.make_tensor("x_zp", et, [], [x_zp]),
        helper.make_tensor("y_scale", TensorProto.FLOAT, [], [y_scale]),
        helper.make_tensor("y_zp", et, [], [y_zp]),
    ]
    node = helper.make_node(
        "QLinearSoftmax", ["x", "x_scale", "x_zp", "y_scale", "y_zp"], ["y"],
        domain="com.microsoft", opset=opset, axis=axis,
    )  # fmt: skip
    graph = helper.make_graph(
        [node], "qsoftmax", [helper.make_tensor_value_info("x", et, list(shape))],
        [helper.make_tensor_value_info("y", et, list(shape))], inits,
    )  # fmt: skip
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid("com.microsoft", 1)]
    )
    model.ir_version = 8
    return model.SerializeToString()


def run(x, opset, axis, x_scale, x_zp, y_scale, y_zp):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    m = build_model(x.dtype, x.shape, opset, axis, x_scale, x_zp, y_scale, y_zp)
    sess = ort.InferenceSession(m, so, providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


def cases():
    seed = np.array([[101, 49, 6, -34, -75], [-79, -38, 120, -55, 115]], dtype=np.int8)
    yield seed, 13, -1, 1 / 255, 0, 1 / 256, -128, "seed"
    for k in range(60):
        dt = np.int8 if k % 2 == 0 else np.uint8
        info = np.iinfo(dt)
        n = int(RNG.choice([1, 2, 5, 10, 33, 100, 257, 1000]))
        rows = int(RNG.integers(1, 9))
        x = RNG.integers(info.min, info.max + 1, size=(rows, n)).astype(dt)
        if k % 5 == 0:  # rows with many values at the max
            x[:, : n // 2] = x.max()
        scale = float(RNG.choice(SCALES))
        zp = int(RNG.integers(info.min, info.max + 1))
        if k % 3 == 1:
            ys, yzp = float(RNG.choice([1 / 255, 1 / 128, 0.01, 1 / 300])), int(info.min + k % 7)
        else:
            ys, yzp = 1 / 256, (-128 if dt == np.int8 else 0)
        opset = 13 if k % 4 else 1
        yield x, opset, -1, scale, zp, ys, yzp, f"random {k}"
    x3 = RNG.integers(-128, 128, size=(3, 4, 5)).astype(np.int8)
    yield x3, 1, 1, 0.05, 0, 1 / 256, -128, "opset 1, axis 1: rows of 20"
    yield x3, 13, 1, 0.05, 0, 1 / 256, -128, "opset 13, axis 1"


def main() -> None:
    import onnx
    import onnxruntime as ort

    meta, arrays = [], {}
    for i, (x, opset, axis, xs, xzp, ys, yzp, note) in enumerate(cases()):
        arrays[f"c{i}_x"] = x
        arrays[f"c{i}_y"] = run(x, opset, axis, xs, xzp, ys, yzp)
        meta.append(
            {"id": f"c{i}", "dtype": str(x.dtype), "shape": list(x.shape), "opset": opset,
             "axis": axis, "input_scale": xs, "input_zero_point": xzp, "output_scale": ys,
             "output_zero_point": yzp, "note": note}
        )  # fmt: skip
    OUT.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(OUT / "vectors.npz", **arrays)
    info = {
        "generator": "tools/make_ort_vectors.py",
        "runtime": {"onnxruntime": ort.__version__, "onnx": onnx.__version__,
                    "numpy": np.__version__, "python": platform.python_version(),
                    "machine": platform.machine()},
        "cases": meta,
    }  # fmt: skip
    (OUT / "cases.json").write_text(json.dumps(info, indent=1) + "\n")
    print(f"{len(meta)} cases -> {OUT}")


if __name__ == "__main__":
    main()
