# ruff: noqa: B023  (the lambdas are called within their loop iteration)
"""Cold start: small calls on an empty kernel cache take the float64 reference path
while the kernel compiles in a background process (``_core/coldstart.py``,
``_kernels/_background.py``, docs/performance.md "First call").

* Differential: every fallback (forced with ``coldstart._FORCE``) against the kernel
  on adversarial inputs -- the same result types, dtypes and shapes, and values within
  the dtype's contract (sampling: the same tokens).
* The switches: large inputs, ``SOFTMAXKIT_COMPILE=foreground``, ``foreground()``
  (warmup, bench) never fall back.
* End to end, in a new process with an empty ``NUMBA_CACHE_DIR``: the first call
  falls back and compiles nothing in the process, a background process fills the
  cache, and the next call runs the kernel loaded from it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import softmaxkit as sk
from softmaxkit._core import coldstart

TOL = {np.float16: 2e-3, np.float32: 3e-6, np.float64: 1e-12}


def _both(f):
    """``(kernel result, fallback result)`` of ``f()``."""
    a = f()
    coldstart._FORCE = True
    try:
        b = f()
    finally:
        coldstart._FORCE = False
    return a, b


def _leaves(r):
    return list(r) if isinstance(r, tuple) else [r]


def _same(a, b, tol):
    la, lb = _leaves(a), _leaves(b)
    assert len(la) == len(lb)
    for u, v in zip(la, lb, strict=True):
        assert type(u) is type(v)
        if isinstance(u, np.ndarray | np.generic):
            assert u.dtype == v.dtype and np.shape(u) == np.shape(v)
            np.testing.assert_allclose(
                np.asarray(u, dtype=np.float64),
                np.asarray(v, dtype=np.float64),
                rtol=tol,
                atol=tol,
                equal_nan=True,
            )


def _adversarial(rng, shape, dtype):
    x = rng.standard_normal(shape) * rng.choice([1.0, 30.0, 300.0])
    u = rng.random(shape)
    x[u < 0.1] = -np.inf
    x[(u > 0.1) & (u < 0.13)] = np.inf
    x[(u > 0.13) & (u < 0.15)] = np.nan
    return x.astype(dtype)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_dense_and_vjp_fallbacks_match_the_kernels(dtype):
    rng = np.random.default_rng(11)
    tol = TOL[dtype]
    for trial in range(60):
        shape = (int(rng.integers(1, 5)), int(rng.integers(1, 9)))
        x = _adversarial(rng, shape, dtype)
        g = rng.standard_normal(shape).astype(dtype)
        where = rng.random(shape) > 0.3 if trial % 2 else None
        T = float(rng.choice([1.0, 0.5, 3.0]))
        kw = {"temperature": T, "where": where}
        axis = (0, 1) if trial % 7 == 0 else int(rng.integers(-2, 2))
        calls = [
            lambda: sk.softmax(x, axis, **kw),
            lambda: sk.log_softmax(x, axis, **kw),
            lambda: sk.softmax(x, axis, **kw, dtype=np.float64),
            lambda: sk.log_softmax(
                x, axis, **kw, dtype=np.float32, out=np.empty(shape, np.float32)
            ),
            lambda: sk.logsumexp(x, axis, **kw, return_sign=True, keepdims=True),
            lambda: sk.logsumexp(x, axis, **kw, b=rng.standard_normal(shape)),
            lambda: sk.softmax_vjp(sk.softmax(x, axis, **kw), g, axis, **kw),
            lambda: sk.log_softmax_vjp(sk.log_softmax(x, axis, **kw), g, axis, **kw),
        ]
        for k, f in enumerate(calls):
            state = rng.bit_generator.state
            a = f()
            rng.bit_generator.state = state  # the same b for both
            coldstart._FORCE = True
            try:
                b = f()
            finally:
                coldstart._FORCE = False
            assert coldstart.fell_back()
            _same(a, b, max(tol, 3e-6) if k == 3 else tol)


def test_out_is_written_and_returned_by_the_fallback():
    x = np.arange(12.0).reshape(3, 4)
    out = np.full((3, 4), -1.0, dtype=np.float32)
    coldstart._FORCE = True
    try:
        r = sk.softmax(x, dtype=np.float32, out=out)
        lse = sk.logsumexp(x, axis=0)
    finally:
        coldstart._FORCE = False
    assert r is out
    np.testing.assert_allclose(out, sk.softmax(x), rtol=1e-6)
    assert lse.dtype == np.float64 and lse.shape == (4,)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cross_entropy_fallback_matches_the_kernels(dtype):
    rng = np.random.default_rng(12)
    for trial in range(40):
        R, C = int(rng.integers(1, 6)), int(rng.integers(2, 9))
        x = _adversarial(rng, (R, C), dtype) if trial % 3 == 0 else rng.standard_normal((R, C))
        x = x.astype(dtype)
        t = rng.integers(0, C, R)
        t[0] = -100 if trial % 4 == 0 else t[0]
        soft = rng.dirichlet(np.ones(C), R)
        kw = {
            "ignore_index": -100,
            "reduction": ["mean", "sum", "none"][trial % 3],
            "label_smoothing": [0.0, 0.1][trial % 2],
            "z_loss": [0.0, 1e-3][trial % 5 == 0],
            "temperature": [1.0, 0.7][trial % 3 == 0],
            "weight": rng.random(C) if trial % 4 == 1 else None,
            "where": rng.random((R, C)) > 0.2 if trial % 6 == 0 else None,
        }
        for f in (
            lambda: sk.cross_entropy(x, t, **kw),
            lambda: sk.cross_entropy(x, t, **kw, return_grad=True),
            lambda: sk.cross_entropy(x, soft, **kw, return_grad=True),
        ):
            a, b = _both(f)
            _same(a, b, TOL[dtype] * 10)


def test_normalizer_fallback_matches_the_kernels():
    rng = np.random.default_rng(13)
    for trial in range(80):
        R, C = int(rng.integers(1, 5)), int(rng.integers(1, 8))
        dt = [np.float32, np.float64][trial % 2]
        x1, x2 = _adversarial(rng, (R, C), dt), _adversarial(rng, (R, C), dt)
        where = rng.random((R, C)) > 0.3 if trial % 2 else None
        T = [1.0, 0.7][trial % 3 == 0]

        def f():
            nz = sk.Normalizer.empty((R,), temperature=T)
            nz.update(x1, where=where)
            nz.update(x2)
            return nz.m, nz.s, nz.softmax(x1, where=where), nz.log_softmax(x2)

        a, b = _both(f)
        _same(a, b, 1e-5)


@pytest.mark.parametrize(
    "kw",
    [{}, {"top_p": 0.8}, {"top_k": 5}, {"min_p": 0.1, "temperature": 0.7}, {"temperature": 0}],
)
def test_sampling_fallback_gives_the_kernels_tokens(kw):
    rng = np.random.default_rng(14)
    for trial in range(30):
        x = rng.standard_normal((int(rng.integers(1, 4)), int(rng.integers(2, 300))))
        x = (x * [0.3, 3.0][trial % 2]).astype([np.float32, np.float64][trial % 2])
        a, b = _both(lambda: sk.sample(x, seed=trial, num_samples=3, return_logprobs=True, **kw))
        np.testing.assert_array_equal(a[0], b[0])
        assert a[0].dtype == b[0].dtype
        np.testing.assert_allclose(a[1], b[1], rtol=1e-9, atol=1e-12)
        a, b = _both(lambda: sk.sampling_probs(x, **kw))
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-15)


def test_large_inputs_and_foreground_never_fall_back(monkeypatch):
    monkeypatch.delenv("SOFTMAXKIT_COMPILE", raising=False)
    with coldstart.allow(coldstart.SMALL):
        assert coldstart.allowed()
    with coldstart.allow(coldstart.SMALL + 1):
        assert not coldstart.allowed()
    with coldstart.foreground(), coldstart.allow(10):
        assert not coldstart.allowed()
    monkeypatch.setenv("SOFTMAXKIT_COMPILE", "foreground")
    with coldstart.allow(10):
        assert not coldstart.allowed()
    assert not coldstart.allowed()


def test_bench_and_warmup_run_in_the_foreground():
    from softmaxkit.bench.core import run_cases
    from softmaxkit.bench.timing import Case

    seen = []

    def impl():
        seen.append(coldstart.background_enabled())
        return np.zeros(1)

    case = Case("dense", "probe", "x", {"softmaxkit": impl}, nbytes=0)
    os.environ.pop("SOFTMAXKIT_COMPILE", None)
    try:
        run_cases([case], repeats=3, budget_s=0.01, memory=False)
    finally:
        os.environ["SOFTMAXKIT_COMPILE"] = "foreground"
    assert seen and not any(seen)


_COLD = textwrap.dedent(
    """
    import json, sys, time
    import numpy as np
    import softmaxkit as sk
    from softmaxkit._core import coldstart
    x = np.random.default_rng(0).standard_normal((40, 30)).astype(np.float32)
    t0 = time.perf_counter()
    y1, i1 = sk.topk_softmax(x, 5)  # (a kernel that compiles in about a second)
    first = time.perf_counter() - t0
    fell1 = coldstart.fell_back()
    from softmaxkit._kernels import _background, _hooks
    compiled_here = _hooks.COMPILED["top"]
    done = _background.wait(timeout=600)
    y2, i2 = sk.topk_softmax(x, 5)
    assert (i1 == i2).all()
    print(json.dumps({
        "first": first, "fell1": fell1, "fell2": coldstart.fell_back(), "done": done,
        "compiled_here": compiled_here, "compiled_after": _hooks.COMPILED["top"],
        "err": float(np.max(np.abs(y1 - y2))),
    }))
    """
)


def test_cold_cache_first_call_falls_back_and_a_background_process_compiles(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "SOFTMAXKIT_COMPILE"}
    env["NUMBA_CACHE_DIR"] = str(tmp_path / "cache")
    src = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    r = subprocess.run(
        [sys.executable, "-c", _COLD], env=env, capture_output=True, text=True, timeout=900
    )
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res["fell1"] and res["done"]
    assert res["compiled_here"] == 0  # nothing compiled in the calling process
    assert not res["fell2"] and res["compiled_after"] == 0  # loaded from the cache
    assert res["err"] < 1e-5
    assert any(name.endswith(".nbi") for _, _, fs in os.walk(tmp_path / "cache") for name in fs)


def test_a_failed_background_compile_is_not_retried(monkeypatch):
    from softmaxkit._kernels import _background

    class Fake:
        def py_func(self):  # pragma: no cover - never called
            pass

    fake = Fake()
    fake.py_func = lambda: None
    fake.py_func.__module__ = "softmaxkit._no_such_module"
    fake.py_func.__qualname__ = "kernel"
    assert _background.submit(fake, ())  # queued: the caller falls back
    assert _background.wait(timeout=120)
    assert not _background.submit(fake, ())  # tried: the caller compiles it itself


def test_topk_softmax_fallback_gives_the_kernels_order():
    """Ties, -inf, +inf, NaN rows, masks: probabilities within 1e-6 and the same ids."""
    rng = np.random.default_rng(15)
    for trial in range(200):
        shape = (int(rng.integers(1, 5)), int(rng.integers(1, 9)))
        x = _adversarial(rng, shape, [np.float32, np.float64][trial % 2])
        if trial % 3:
            x = np.where(np.isnan(x), 1.0, np.round(x)).astype(x.dtype)  # exact ties
        where = rng.random(shape) > 0.3 if trial % 2 else None
        k = int(rng.integers(0, shape[1] + 1))
        a, b = _both(lambda: sk.topk_softmax(x, k, temperature=[1.0, 0.7][trial % 2], where=where))
        np.testing.assert_array_equal(a[1], b[1])
        _same(a[0], b[0], 1e-6)


def test_distillation_fallbacks_match_the_kernels():
    rng = np.random.default_rng(16)
    for trial in range(60):
        shape = (int(rng.integers(1, 5)), int(rng.integers(1, 9)))
        dt = [np.float32, np.float64][trial % 2]
        s = (rng.standard_normal(shape) * 10).astype(dt)
        t = (rng.standard_normal(shape) * 10).astype(dt)
        s[rng.random(shape) < 0.15] = -np.inf
        t[rng.random(shape) < 0.15] = -np.inf
        kw = {
            "temperature": [1.0, 0.7][trial % 2],
            "where": rng.random(shape) > 0.3 if trial % 3 == 0 else None,
            "reduction": ["batchmean", "sum", "none", "mean"][trial % 4],
        }
        for f in (
            lambda: sk.kl_divergence(s, t, **kw, return_grad=True),
            lambda: sk.kl_divergence(s, t, direction="reverse", **kw),
            lambda: sk.jensen_shannon(s, t, beta=0.3, **kw, return_grad=True),
        ):
            a, b = _both(f)
            _same(a, b, 1e-5)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_segment_and_scan_fallbacks_match_the_kernels(dtype):
    rng = np.random.default_rng(17)
    tol = 4e-3 if dtype == np.float16 else TOL[dtype]
    for trial in range(40):
        n = int(rng.integers(1, 30))
        x = _adversarial(rng, n, dtype)
        ids = np.sort(rng.integers(0, 5, n)) if trial % 2 else rng.integers(0, 5, n)
        where = rng.random(n) > 0.3 if trial % 3 == 0 else None
        A = (rng.standard_normal((3, 4)) * 5).astype(dtype)
        B = (rng.standard_normal((2, 4, 2)) * 5).astype(dtype)
        A[0, 1] = -np.inf
        odt = np.float32 if dtype == np.float16 else dtype  # logmatmulexp's output dtype
        for k, f in enumerate(
            (
                lambda: sk.segment_logsumexp(x, ids, num_segments=6, where=where),
                lambda: sk.segment_softmax(x, ids, temperature=0.7, where=where),
                lambda: sk.segment_log_softmax(x, ids, where=where),
                lambda: sk.logcumsumexp(x, where=where),
                lambda: sk.logcumsumexp(x, reverse=True, dtype=np.float64),
                lambda: sk.logcumsumexp(x, out=np.empty(n, dtype)),
                lambda: sk.logmatmulexp(A, B),
                lambda: sk.logmatmulexp(A, B, a_sign=np.sign(A - 1), return_sign=True),
                lambda: sk.logmatmulexp(
                    A, B[0], b_sign=-np.ones((4, 2)), out=np.empty((3, 2), odt)
                ),
            )
        ):
            a, b = _both(f)
            # logmatmulexp sums through BLAS in the compute dtype (docs/segments.md)
            _same(a, b, tol if k < 6 else {np.float64: 1e-10}.get(dtype, 1e-4))


def test_margin_and_jacobian_fallbacks_match_the_kernels():
    """Options the twin does not take (return_grad=True) compile in the caller."""
    rng = np.random.default_rng(18)
    for trial in range(40):
        dt = [np.float32, np.float64][trial % 2]
        R, C = int(rng.integers(1, 5)), int(rng.integers(2, 9))
        x = (rng.standard_normal((R, C)) * [1.0, 30.0][trial % 2]).astype(dt)
        t = rng.integers(0, C, R)
        g = rng.standard_normal(R).astype(dt)
        for f in (
            lambda: sk.multiclass_hinge_loss(x, t),
            lambda: sk.multiclass_hinge_loss(x, t, return_grad=True),
            lambda: sk.max_margin_loss(x, C - 1),
            lambda: sk.max_margin_loss_split(x[:, 0], x[:, 1:]),
            lambda: sk.logsumexp_vjp(x, g),
            lambda: sk.softmax_jacobian(x[0]),
        ):
            a, b = _both(f)
            _same(a, b, TOL[dt] * 10)


def test_the_background_child_finds_kernels_wrapped_by_over_rows(tmp_path):
    """``_parallel.over_rows`` wraps a dispatcher in a Python function (``f.kernel``):
    the child must compile the dispatcher, or such kernels never reach the cache."""
    from softmaxkit._kernels import _background, losses

    disp = losses.softmax_vjp_rows.kernel
    called = []

    class Spy:
        def compile(self, sig):
            called.append(sig)

    orig = losses.softmax_vjp_rows.kernel
    losses.softmax_vjp_rows.kernel = Spy()
    try:
        _background.child_main(
            {"items": [(disp.py_func.__module__, disp.py_func.__qualname__, ("sig",))]}
        )
    finally:
        losses.softmax_vjp_rows.kernel = orig
    assert called == [("sig",)]


def _output_leaves(r):
    """The fields of a CrossEntropyOutput (None fields dropped) as a flat tuple."""
    if isinstance(r, tuple) and hasattr(r, "_fields"):
        return tuple(v for v in r if v is not None)
    return r


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_per_token_output_fallback_matches_the_vocab_kernel(dtype):
    # every flag, softcap, per-token temperature, entropy / log-prob weights, label
    # smoothing, z-loss, masks, ignored targets, on rows with -inf, +inf and NaN
    rng = np.random.default_rng(21)
    for trial in range(120):
        R, V = int(rng.integers(1, 6)), int(rng.integers(1, 12))
        x = _adversarial(rng, (R, V), dtype) if trial % 2 else rng.standard_normal((R, V))
        x = x.astype(dtype)
        if trial % 7 == 0:
            x[0] = -np.inf
        if trial % 11 == 0:
            x[-1, : max(1, V // 2)] = x[-1, 0]  # ties
        t = rng.integers(0, V, R)
        if trial % 4 == 0:
            t[0] = -100
        kw = {
            "ignore_index": -100,
            "reduction": ["mean", "sum", "none"][trial % 3],
            "label_smoothing": [0.0, 0.2][trial % 2],
            "z_loss": [0.0, 1e-3][trial % 5 == 0],
            "temperature": [1.0, 0.7, rng.uniform(0.5, 2.0, R)][trial % 3],
            "softcap": [None, 5.0][trial % 4 == 1],
            "where": rng.random((R, V)) > 0.25 if trial % 3 == 1 else None,
            "weight": rng.random(V) if trial % 5 == 2 else None,
            "entropy_weight": rng.standard_normal(R) if trial % 2 else None,
            "logprob_weight": rng.standard_normal(R) if trial % 3 == 2 else None,
        }
        flags = {
            "return_lse": True,
            "return_logprob": True,
            "return_entropy": True,
            "return_argmax": True,
            "topk": int(rng.integers(1, V + 1)),
        }
        for f in (
            lambda: sk.cross_entropy(x, t, **kw, **flags),
            lambda: sk.cross_entropy(x, t, **kw, **flags, return_grad=True),
            lambda: sk.cross_entropy(x, t, **kw, return_entropy=True, return_grad=True),
        ):
            a, b = _both(f)
            assert type(a) is type(b)
            if a.topk_ids is not None:
                np.testing.assert_array_equal(a.topk_ids, b.topk_ids)
            if a.argmax is not None:
                np.testing.assert_array_equal(a.argmax, b.argmax)
            _same(_output_leaves(a), _output_leaves(b), TOL[dtype] * 10)


def test_vocab_twin_columns_match_the_kernel_module():
    from softmaxkit._core import vocab64
    from softmaxkit._kernels import vocab

    for name in ("LSE", "ENT", "LP", "CE", "NINF", "CNT"):
        assert getattr(vocab64, name) == getattr(vocab, name)


def test_linear_distillation_fallbacks_match_the_kernels():
    rng = np.random.default_rng(22)
    for trial in range(40):
        N, V, ds, dt_ = int(rng.integers(1, 6)), int(rng.integers(1, 9)), 3, 4
        dtype = [np.float32, np.float64][trial % 2]
        hs = (rng.standard_normal((N, ds)) * 3).astype(dtype)
        Ws = rng.standard_normal((V, ds)).astype(dtype)
        ht = (rng.standard_normal((N, dt_)) * 3).astype(dtype)
        Wt = rng.standard_normal((V, dt_)).astype(dtype)
        kw = {
            "temperature": [1.0, 0.7][trial % 2],
            "where": rng.random((N, V)) > 0.3 if trial % 3 == 0 else None,
            "reduction": ["batchmean", "sum", "none", "mean"][trial % 4],
            "chunk_size": [None, 2][trial % 2],
        }
        for f in (
            lambda: sk.linear_kl_divergence(hs, Ws, ht, Wt, **kw),
            lambda: sk.linear_kl_divergence(
                hs, Ws, ht, Wt, direction="reverse", **kw, return_grad=True
            ),
            lambda: sk.linear_jensen_shannon(hs, Ws, ht, Wt, beta=0.3, **kw, return_grad=True),
        ):
            a, b = _both(f)
            la = [a] if not isinstance(a, tuple) else [a[0], *a[1]]
            lb = [b] if not isinstance(b, tuple) else [b[0], *b[1]]
            _same(tuple(la), tuple(lb), 1e-4 if dtype == np.float32 else 1e-10)


def test_linear_distillation_falls_back_by_the_logits_size():
    # the size that decides is N * V (the logits never formed), not the input's
    hs, Ws = np.zeros((600, 2)), np.zeros((600, 2))
    coldstart._FORCE = True
    try:
        sk.linear_kl_divergence(hs, Ws, hs, Ws)  # 360000 > SMALL: the kernels
        assert not coldstart.fell_back()
        sk.linear_kl_divergence(hs[:10], Ws, hs[:10], Ws)
        assert coldstart.fell_back()
    finally:
        coldstart._FORCE = False


def test_linear_cross_entropy_fallback_matches_the_kernels():
    rng = np.random.default_rng(23)
    for trial in range(40):
        N, V, d = int(rng.integers(1, 7)), int(rng.integers(2, 12)), 3
        dtype = [np.float32, np.float64][trial % 2]
        h = (rng.standard_normal((N, d)) * 3).astype(dtype)
        W = rng.standard_normal((V, d)).astype(dtype)
        t = rng.integers(0, V, N)
        t[0] = -100 if trial % 4 == 0 else t[0]
        kw = {
            "ignore_index": -100,
            "reduction": ["mean", "sum", "none"][trial % 3],
            "label_smoothing": [0.0, 0.1][trial % 2],
            "z_loss": [0.0, 1e-3][trial % 5 == 0],
            "temperature": [1.0, 0.7][trial % 3 == 0],
            "weight": rng.random(V) if trial % 4 == 1 else None,
            "where": rng.random((N, V)) > 0.2 if trial % 6 == 0 else None,
            "bias": rng.standard_normal(V).astype(dtype) if trial % 2 else None,
            "strategy": ["auto", "vocab", "rows"][trial % 3],
            "chunk_size": [None, 2][trial % 2],
        }
        for f in (
            lambda: sk.linear_cross_entropy(h, W, t, **kw),
            lambda: sk.linear_cross_entropy(h, W, t, **kw, return_grad=True),
        ):
            a, b = _both(f)
            la = [a] if not isinstance(a, tuple) else [a[0], *(g for g in a[1] if g is not None)]
            lb = [b] if not isinstance(b, tuple) else [b[0], *(g for g in b[1] if g is not None)]
            _same(tuple(la), tuple(lb), 1e-4 if dtype == np.float32 else 1e-10)
    # the logits' size decides: N * V over SMALL takes the kernels
    h, W = np.zeros((600, 2)), np.zeros((600, 2))
    coldstart._FORCE = True
    try:
        sk.linear_cross_entropy(h, W, np.zeros(600, np.int64))
        assert not coldstart.fell_back()
    finally:
        coldstart._FORCE = False


def test_torch_bfloat16_fallbacks_match_the_bits_kernels():
    # the bits kernels' cold path is the float32 one (widen, compute, round once)
    torch = pytest.importorskip("torch")
    import softmaxkit.torch as skt

    rng = np.random.default_rng(24)
    for _ in range(30):
        R, C = int(rng.integers(1, 6)), int(rng.integers(1, 40))
        x = torch.from_numpy(_adversarial(rng, (R, C), np.float32)).to(torch.bfloat16)
        t = torch.from_numpy(rng.integers(0, C, R))
        g = torch.from_numpy(rng.standard_normal((R, C)).astype(np.float32)).bfloat16()
        finite = torch.isfinite(x.float()).all(dim=-1)

        def grads(op, x=x, g=g):
            xr = x.clone().requires_grad_(True)
            y = op(xr)
            y.backward(g)
            return y.detach(), xr.grad

        calls = [
            lambda: skt.softmax(x),
            lambda: skt.log_softmax(x, temperature=0.7),
            lambda: skt.softmax(x.T.contiguous()),
            lambda: grads(skt.softmax),
            lambda: grads(skt.log_softmax),
        ]
        if bool(finite.all()):  # (the loss of a NaN row is NaN on both paths)
            calls.append(lambda: skt.cross_entropy(x, t))
        for f in calls:
            a, b = _both(f)
            for u, v in zip(_leaves(a), _leaves(b), strict=True):
                assert u.dtype == v.dtype == torch.bfloat16 and u.shape == v.shape
                np.testing.assert_allclose(u.float().numpy(), v.float().numpy(),
                                           rtol=8e-3, atol=8e-3, equal_nan=True)  # fmt: skip
