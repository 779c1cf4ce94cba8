"""Optional bench peers: JAX/XLA on CPU and ONNX Runtime (see ``softmaxkit.bench.timing``).

Used by ``_bench_dense`` (softmax, log_softmax, logsumexp) and ``_bench_losses``
(cross-entropy loss + gradient).  Each adapter returns a dict of implementation name
-> zero-argument callable, empty when the peer is not installed (the reason goes into
``notes``); nothing here imports jax or onnxruntime at module import time.

* ``"jax jit"``: ``jax.jit`` of ``jax.nn.softmax`` / ``log_softmax`` / ``logsumexp`` on
  the CPU backend, timed to ``block_until_ready``.  The input is put on the device
  once, outside timing; compilation happens ahead (``jit(f).lower(x).compile()``) on
  first use, and its time is recorded apart in ``compile_s["jax jit"]``.  Float64
  inputs are compiled under ``jax.enable_x64`` (without it JAX computes in float32).
* ``"softmaxkit.jax jit"``: the same for ``softmaxkit.jax``'s op (the kernels in an
  XLA custom call, docs/frameworks.md), and ``jit(value_and_grad)`` of its
  ``cross_entropy`` next to optax's in the loss case.
* ``"ort"``: a one-node ONNX model (``Softmax`` / ``LogSoftmax`` /
  ``ReduceLogSumExp``, opset 18) built in memory with ``onnx.helper``, run by
  ``InferenceSession.run`` with ``intra_op_num_threads=2`` (allocates its output).
* ``"ort out="``: the same session through ``io_binding`` with the output bound to a
  preallocated NumPy buffer (``run_with_iobinding``): no allocation per call.
"""

from __future__ import annotations

import contextlib
import importlib.util
import time
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["available", "jax_cross_entropy", "jax_dense", "ort_cross_entropy", "ort_dense"]

ORT_THREADS = 2
_OPSET = 18


def available(name: str) -> bool:
    """Whether the peer's packages are importable (``"jax"``, ``"ort"``), without importing."""
    mods = {"jax": ("jax",), "ort": ("onnxruntime", "onnx"), "optax": ("jax", "optax")}[name]
    return all(importlib.util.find_spec(m) is not None for m in mods)


# --------------------------------------------------------------------------- JAX
def _jax_cpu():
    import jax

    return jax, jax.devices("cpu")[0]


def _x64(jax, on: bool):
    """JAX computes float64 only with x64 enabled: enable it for this input's compile
    (the compiled function keeps its float64 types when called outside)."""
    if not on:
        return contextlib.nullcontext()
    if hasattr(jax, "enable_x64"):
        return jax.enable_x64(True)
    from jax.experimental import enable_x64  # pragma: no cover - older jax

    return enable_x64()


def jax_dense(
    get_x: Callable[[], np.ndarray],
    op: str,
    axis: int,
    compile_s: dict[str, float],
    store: Callable[[str], dict[str, Any]],
) -> dict[str, Callable[[], Any]]:
    """``{"jax jit": f, "softmaxkit.jax jit": g}`` for a dense op, or ``{}`` without jax.

    ``"softmaxkit.jax jit"`` is ``jax.jit`` of ``softmaxkit.jax``'s op (the kernels in
    an XLA custom call).  ``store(name)`` returns the dict that keeps the peer's
    device input and compiled function; the case drops it when it releases its inputs.
    """
    if not available("jax"):
        return {}

    def make(name: str):
        def call():
            state = store(name)
            if not state:
                jax, cpu = _jax_cpu()
                if name == "jax jit":
                    fn = getattr(jax.nn, op)
                else:
                    import softmaxkit.jax as skj

                    fn = getattr(skj, op)
                x = get_x()
                with _x64(jax, x.dtype == np.float64):
                    xj = jax.device_put(x, cpu)
                    t0 = time.perf_counter()
                    state["f"] = jax.jit(lambda a: fn(a, axis=axis)).lower(xj).compile()
                    compile_s[name] = time.perf_counter() - t0
                state["x"] = xj
            return state["f"](state["x"]).block_until_ready()

        return call

    return {name: make(name) for name in ("jax jit", "softmaxkit.jax jit")}


def jax_cross_entropy(
    x: np.ndarray, t: np.ndarray, compile_s: dict[str, float]
) -> dict[str, Callable[[], Any]]:
    """``{"jax jit": f}``: jit(value_and_grad(mean optax cross-entropy)), or ``{}``."""
    if not available("optax"):
        return {}
    state: dict[str, Any] = {}

    def call():
        if not state:
            jax, cpu = _jax_cpu()
            import optax

            xj = jax.device_put(x, cpu)
            tj = jax.device_put(t.astype(np.int32), cpu)

            def loss(a, b):
                return optax.softmax_cross_entropy_with_integer_labels(a, b).mean()

            t0 = time.perf_counter()
            state["f"] = jax.jit(jax.value_and_grad(loss)).lower(xj, tj).compile()
            compile_s["jax jit"] = time.perf_counter() - t0
            state["args"] = (xj, tj)
        lv, g = state["f"](*state["args"])
        g.block_until_ready()
        return float(lv), g

    def ours():
        # softmaxkit.jax.cross_entropy: the fused kernel in an XLA custom call
        if "g" not in state:
            call()  # the device inputs
            jax, _ = _jax_cpu()
            import softmaxkit.jax as skj

            t0 = time.perf_counter()
            f = jax.jit(jax.value_and_grad(lambda a, b: skj.cross_entropy(a, b)))
            state["g"] = f.lower(*state["args"]).compile()
            compile_s["softmaxkit.jax jit"] = time.perf_counter() - t0
        lv, g = state["g"](*state["args"])
        g.block_until_ready()
        return float(lv), g

    return {"jax jit": call, "softmaxkit.jax jit": ours}


# --------------------------------------------------------------------------- ONNX Runtime
def _onnx_dtype(dtype: np.dtype) -> int:
    from onnx import TensorProto

    return {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.float64): TensorProto.DOUBLE}[
        np.dtype(dtype)
    ]


def _session(model):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = ORT_THREADS
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def _dense_model(shape: tuple[int, ...], dtype: np.dtype, op: str, axis: int):
    from onnx import helper, numpy_helper

    et = _onnx_dtype(dtype)
    ax = axis % len(shape)
    inits = []
    if op == "logsumexp":
        oshape = [s for i, s in enumerate(shape) if i != ax]
        inits.append(numpy_helper.from_array(np.array([ax], dtype=np.int64), "axes"))
        node = helper.make_node("ReduceLogSumExp", ["x", "axes"], ["y"], keepdims=0)
    else:
        oshape = list(shape)
        kind = "Softmax" if op == "softmax" else "LogSoftmax"
        node = helper.make_node(kind, ["x"], ["y"], axis=ax)
    graph = helper.make_graph(
        [node],
        op,
        [helper.make_tensor_value_info("x", et, list(shape))],
        [helper.make_tensor_value_info("y", et, oshape)],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", _OPSET)])
    model.ir_version = 9
    return model, tuple(oshape)


def ort_dense(
    get_x: Callable[[], np.ndarray],
    op: str,
    axis: int,
    store: Callable[[str], dict[str, Any]],
) -> dict[str, Callable[[], Any]]:
    """``{"ort": f, "ort out=": g}`` for a dense op, or ``{}`` without onnxruntime
    (``store`` as in `jax_dense`)."""
    if not available("ort"):
        return {}

    def setup():
        state = store("ort")
        if not state:
            x = get_x()
            model, oshape = _dense_model(x.shape, x.dtype, op, axis)
            sess = _session(model)
            out = np.empty(oshape, dtype=x.dtype)
            b = sess.io_binding()
            b.bind_cpu_input("x", x)
            b.bind_output("y", "cpu", 0, x.dtype, list(oshape), out.ctypes.data)
            state.update(sess=sess, x=x, out=out, binding=b)
        return state

    def plain():
        s = setup()
        return s["sess"].run(["y"], {"x": s["x"]})[0]

    def bound():
        s = setup()
        s["sess"].run_with_iobinding(s["binding"])
        return s["out"]

    return {"ort": plain, "ort out=": bound}


def ort_cross_entropy(
    x: np.ndarray, t: np.ndarray, notes: dict[str, str]
) -> dict[str, Callable[[], Any]]:
    """ONNX Runtime's ``SoftmaxCrossEntropyLoss`` (mean), forward only.

    Its gradient op (``SoftmaxCrossEntropyLossGrad``) exists only in ORT's training
    build (an inference session answers "com.microsoft:SoftmaxCrossEntropyLossGrad
    is not a registered function/op"), so the peer is ``"ort loss only"``: it returns
    ``(loss, None)`` and is a lower bound on what a loss + grad call would cost.
    """
    if not available("ort"):
        return {}
    from onnx import TensorProto, helper

    n, c = x.shape
    node = helper.make_node(
        "SoftmaxCrossEntropyLoss", ["x", "t"], ["loss", "logp"], reduction="mean"
    )
    graph = helper.make_graph(
        [node],
        "ce",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [n, c]),
            helper.make_tensor_value_info("t", TensorProto.INT64, [n]),
        ],
        [
            helper.make_tensor_value_info("loss", TensorProto.FLOAT, []),
            helper.make_tensor_value_info("logp", TensorProto.FLOAT, [n, c]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", _OPSET)])
    model.ir_version = 9
    state: dict[str, Any] = {}
    t64 = np.ascontiguousarray(t, dtype=np.int64)
    notes["ort loss only"] = "forward only: the gradient op is in ORT's training build only"

    def call():
        if not state:
            state["sess"] = _session(model)
        (loss,) = state["sess"].run(["loss"], {"x": x, "t": t64})
        return float(loss), None

    return {"ort loss only": call}
