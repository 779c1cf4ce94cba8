"""Benchmark cases of the dense ops: softmax, log_softmax, logsumexp.

Peers: the stable NumPy formula, ``scipy.special``, PyTorch CPU (plain and with a
preallocated ``out=``), JAX jit and ONNX Runtime (plain and io-bound ``out=``; see
``_bench_peers``) when importable; ours plain and with ``out=``.  Inputs are
built lazily on first use (the runner frees them after each case), so the default
set never holds more than one case's arrays.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from typing import Any

import numpy as np

from . import peers as _bench_peers
from .timing import Case

__all__ = ["DEFAULT_SHAPES", "QUICK_SHAPES", "cases"]

# (shape, axis)
DEFAULT_SHAPES: list[tuple[tuple[int, ...], int]] = [
    ((1, 1_000_000), -1),
    ((1, 32_000_000), -1),
    ((4096, 32000), -1),
    ((65536, 128), -1),
    ((1_000_000, 10), -1),
    ((8192, 4096), 0),  # non-last axis: reduce over the 8192 rows of each column
]
QUICK_SHAPES: list[tuple[tuple[int, ...], int]] = [
    ((1, 1_000_000), -1),
    ((512, 8000), -1),
    ((16384, 128), -1),
    ((200_000, 10), -1),
    ((2048, 1024), 0),
]
OPS = ("softmax", "log_softmax", "logsumexp")


class _Lazy:
    """The input, ``out=`` buffers and peer tensors of one case, built on first use."""

    def __init__(self, shape, dtype, axis, op):
        self.shape, self.dtype, self.axis, self.op = shape, dtype, axis, op
        self._d: dict[str, Any] | None = None
        self.compile_s: dict[str, float] = {}  # JAX's compile, timed apart

    def get(self) -> dict[str, Any]:
        if self._d is None:
            rng = np.random.default_rng(0)
            x = rng.standard_normal(self.shape, dtype=np.float64)
            x *= 4.0
            x = x.astype(self.dtype)
            if self.op == "logsumexp":
                oshape = tuple(s for i, s in enumerate(x.shape) if i != self.axis % x.ndim)
                out = np.empty(oshape, dtype=self.dtype)
            else:
                out = np.empty_like(x)
            d: dict[str, Any] = {"x": x, "out": out}
            if importlib.util.find_spec("torch") is not None:
                import torch

                d["tx"] = torch.from_numpy(x)
                d["tout"] = torch.from_numpy(np.empty_like(out))
            self._d = d
        return self._d


def _ref_rows(x: np.ndarray, axis: int, op: str, res: np.ndarray) -> float:
    """Max error of ``res`` against a float64 reference on a sample of rows.

    softmax: relative error where p >= 1e-6 (absolute / 1e-6 below); log_softmax and
    logsumexp: |err| / (1 + |value|), as in the accuracy contract.
    """
    xm = np.moveaxis(x, axis, -1)
    rm = np.moveaxis(np.asarray(res), axis, -1) if op != "logsumexp" else np.asarray(res)
    xm = xm.reshape(-1, xm.shape[-1])
    rm = rm.reshape(xm.shape[0], -1) if op != "logsumexp" else rm.reshape(-1)
    rows = np.unique(np.linspace(0, xm.shape[0] - 1, min(64, xm.shape[0])).astype(int))
    a = xm[rows].astype(np.float64)
    m = a.max(axis=1, keepdims=True)
    e = np.exp(a - m)
    s = e.sum(axis=1, keepdims=True)
    if op == "softmax":
        p = e / s
        got = rm[rows].astype(np.float64)
        return float(np.max(np.abs(got - p) / np.maximum(p, 1e-6)))
    lse = m + np.log(s)
    if op == "log_softmax":
        ref = a - lse
        got = rm[rows].astype(np.float64)
    else:
        ref = lse[:, 0]
        got = rm[rows].astype(np.float64)
    return float(np.max(np.abs(got - ref) / (1.0 + np.abs(ref))))


def _impls(lz: _Lazy, op: str, axis: int) -> dict[str, Callable[[], Any]]:
    import softmaxkit as sk

    f = getattr(sk, op)
    impls: dict[str, Callable[[], Any]] = {
        "softmaxkit": lambda: f(lz.get()["x"], axis=axis),
        "softmaxkit out=": lambda: f(lz.get()["x"], axis=axis, out=lz.get()["out"]),
    }

    def numpy_stable():
        x = lz.get()["x"]
        m = x.max(axis=axis, keepdims=True)
        if op == "logsumexp":
            return np.log(np.exp(x - m).sum(axis=axis)) + np.squeeze(m, axis)
        z = x - m
        if op == "log_softmax":
            return z - np.log(np.exp(z).sum(axis=axis, keepdims=True))
        e = np.exp(z)
        return e / e.sum(axis=axis, keepdims=True)

    impls["numpy"] = numpy_stable
    if importlib.util.find_spec("scipy") is not None:
        import scipy.special as sp

        g = getattr(sp, op)
        impls["scipy"] = lambda: g(lz.get()["x"], axis=axis)
    if importlib.util.find_spec("torch") is not None:
        import torch

        if op == "logsumexp":
            impls["torch"] = lambda: torch.logsumexp(lz.get()["tx"], dim=axis)
            impls["torch out="] = lambda: torch.logsumexp(
                lz.get()["tx"], dim=axis, out=lz.get()["tout"]
            )
        else:
            tf = torch.softmax if op == "softmax" else torch.log_softmax
            impls["torch"] = lambda: tf(lz.get()["tx"], axis)
            # torch.softmax has no out=; its ATen out= overload does
            aten = torch.ops.aten._softmax if op == "softmax" else torch.ops.aten._log_softmax
            impls["torch out="] = lambda: aten.out(
                lz.get()["tx"], axis, False, out=lz.get()["tout"]
            )

    def store(name: str) -> dict[str, Any]:
        return lz.get().setdefault("peer " + name, {})

    def get_x() -> np.ndarray:
        return lz.get()["x"]

    impls.update(_bench_peers.jax_dense(get_x, op, axis, lz.compile_s, store))
    impls.update(_bench_peers.ort_dense(get_x, op, axis, store))
    return impls


def cases(quick: bool = False) -> list[Case]:
    """The dense benchmark cases (``--quick``: smaller shapes)."""
    shapes = QUICK_SHAPES if quick else DEFAULT_SHAPES
    out: list[Case] = []
    for shape, axis in shapes:
        for dtype in (np.float32, np.float64):
            for op in OPS:
                lz = _Lazy(shape, dtype, axis, op)
                n = int(np.prod(shape))
                isz = np.dtype(dtype).itemsize
                label = f"{list(shape)} {np.dtype(dtype).name}" + (
                    f" axis={axis}" if axis != -1 else ""
                )
                out.append(
                    Case(
                        family="dense",
                        op=op,
                        label=label,
                        impls=_impls(lz, op, axis),
                        baseline="softmaxkit",
                        check=(
                            lambda res, lz=lz, op=op, axis=axis: _ref_rows(
                                lz.get()["x"], axis, op, res
                            )
                        ),
                        nbytes=2 * n * isz,
                        extra={
                            "input": lambda lz=lz: lz.get()["x"],
                            "release": lambda lz=lz: setattr(lz, "_d", None),
                            # the least a plain call must cost (bench._reach)
                            "bound": "floor read" if op == "logsumexp" else "floor new",
                            "elements": n,
                            "itemsize": isz,
                            "compile_s": lz.compile_s,
                        },
                    )
                )
    return out
