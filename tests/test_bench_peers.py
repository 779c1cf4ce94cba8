"""The optional bench peers (``softmaxkit.bench.peers``): JAX jit and ONNX Runtime.

Each peer runs on tiny inputs and must agree with softmaxkit; a peer that is not
installed is skipped (and absent from the cases, not an error).
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import softmaxkit as sk
from softmaxkit.bench import core as bench
from softmaxkit.bench import dense as _bench_dense
from softmaxkit.bench import peers as _bench_peers

OPS = ("softmax", "log_softmax", "logsumexp")
CASES = [((7, 33), -1), ((40, 6), 0), ((1, 1000), -1), ((5, 1), -1)]


def _x(shape, dtype):
    rng = np.random.default_rng(3)
    return (rng.standard_normal(shape) * 4).astype(dtype)


def _tol(dtype):
    return 2e-6 if dtype == np.float32 else 1e-13


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(("shape", "axis"), CASES)
@pytest.mark.parametrize("op", OPS)
def test_jax_peer_agrees(op, shape, axis, dtype):
    pytest.importorskip("jax")
    x = _x(shape, dtype)
    store: dict = {}
    compile_s: dict = {}
    f = _bench_peers.jax_dense(lambda: x, op, axis, compile_s, lambda k: store.setdefault(k, {}))
    got = np.asarray(f["jax jit"]())
    assert got.dtype == dtype  # float64 really computed in float64 (x64 for the compile)
    want = getattr(sk, op)(x, axis=axis)
    np.testing.assert_allclose(got, want, rtol=_tol(dtype), atol=_tol(dtype))
    assert compile_s["jax jit"] > 0 and store["jax jit"]  # compiled once, kept in store
    np.testing.assert_allclose(np.asarray(f["jax jit"]()), got, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(("shape", "axis"), CASES)
@pytest.mark.parametrize("op", OPS)
def test_ort_peer_agrees_plain_and_out(op, shape, axis, dtype):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    x = _x(shape, dtype)
    store: dict = {}
    f = _bench_peers.ort_dense(lambda: x, op, axis, lambda k: store.setdefault(k, {}))
    want = getattr(sk, op)(x, axis=axis)
    plain = f["ort"]()
    out = f["ort out="]()
    assert out is store["ort"]["out"]  # written into the preallocated buffer
    for got in (plain, out):
        assert got.dtype == x.dtype and got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=_tol(dtype), atol=_tol(dtype))
    before = x.copy()
    f["ort out="]()
    np.testing.assert_array_equal(x, before)  # input untouched


def test_cross_entropy_peers_agree():
    x = _x((16, 50), np.float32)
    t = np.random.default_rng(4).integers(0, 50, 16)
    loss, grad = sk.cross_entropy(x, t, return_grad=True)
    ran = 0
    if _bench_peers.available("optax"):
        cs: dict = {}
        jl, jg = _bench_peers.jax_cross_entropy(x, t, cs)["jax jit"]()
        assert jl == pytest.approx(float(loss), rel=1e-6)
        np.testing.assert_allclose(np.asarray(jg), grad, rtol=1e-5, atol=1e-7)
        assert cs["jax jit"] > 0
        ran += 1
    if _bench_peers.available("ort"):
        notes: dict = {}
        ol, og = _bench_peers.ort_cross_entropy(x, t, notes)["ort loss only"]()
        assert og is None and "training build" in notes["ort loss only"]
        assert ol == pytest.approx(float(loss), rel=1e-6)
        ran += 1
    if not ran:
        pytest.skip("neither jax/optax nor onnxruntime installed")


def test_absent_peers_are_left_out(monkeypatch):
    monkeypatch.setattr(_bench_peers, "available", lambda name: False)
    monkeypatch.setattr(_bench_dense, "QUICK_SHAPES", [((3, 50), -1)])
    cases = bench.select_cases(quick=True, families=["dense"])
    for c in cases:
        assert not {"jax jit", "ort", "ort out="} & set(c.impls)
        assert {"softmaxkit", "numpy"} <= set(c.impls)


def test_peers_in_dense_cases_and_table(monkeypatch):
    if not (_bench_peers.available("jax") or _bench_peers.available("ort")):
        pytest.skip("no optional peer installed")
    monkeypatch.setattr(_bench_dense, "QUICK_SHAPES", [((3, 50), -1)])
    cases = [c for c in bench.select_cases(quick=True, families=["dense"]) if c.op == "softmax"]
    results = bench.run_cases(cases[:1], repeats=1, budget_s=0.0, memory=False)
    im = results[0]["impls"]
    for name in ("jax jit", "ort", "ort out="):
        want = _bench_peers.available("jax" if name.startswith("jax") else "ort")
        assert (name in im) == want
        if want:
            assert im[name]["max_error"] < 1e-5 and im[name]["vs_baseline"] > 0
    if "jax jit" in im:
        assert results[0]["extra"]["compile_s"]["jax jit"] > 0
        assert "compile excluded" in bench.format_table(results)
    assert "ort out= x" in bench.format_table(results)


def test_cases_do_not_import_the_peers():
    # building the dense cases (and `import softmaxkit`) must not import jax or
    # onnxruntime: only a peer's first call does
    code = (
        "import sys; from softmaxkit import bench; bench.select_cases(True, ['dense']); "
        "bad = [m for m in ('jax', 'onnxruntime', 'onnx') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
