"""softmaxkit.jax through the XLA CPU custom call (softmaxkit._kernels.xla).

Checks that jitted and eager calls lower to the ``softmaxkit_host`` custom call (not a
Python callback), against the float64 twins (softmaxkit.reference), jax.nn and optax,
on adversarial rows (all -inf, masked, +inf, huge magnitudes), under jit, grad and
vmap; the in-place scaling of the saved cross-entropy gradient; the pure_callback
fallback; concurrent callers; a failing host; empty arrays; lazy registration.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import threading

import numpy as np
import pytest

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")
skj = pytest.importorskip("softmaxkit.jax")
from softmaxkit import reference as ref  # noqa: E402
from softmaxkit._kernels import xla  # noqa: E402
from softmaxkit.jax import _call  # noqa: E402

INF = np.inf


@pytest.fixture(autouse=True, scope="module")
def _x64():
    old = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", old)


def _hlo(f, *args):
    return jax.jit(f).lower(*args).as_text()


def _adversarial(dtype):
    """Rows: ordinary, all -inf, one +inf, two +inf, huge magnitudes, -inf mixed, tiny."""
    big = 3e38 if dtype == np.float32 else 1e308
    rng = np.random.default_rng(11)
    rows = [
        rng.normal(size=7) * 3,
        [-INF] * 7,
        [0.0, 1.0, INF, -2.0, 3.0, -INF, 0.5],
        [INF, 1.0, INF, -2.0, 3.0, 0.0, 0.5],
        [big, -big, big / 2, 0.0, -1.0, big, 1.0],
        [-INF, -INF, 2.0, -INF, 1.0, -INF, -INF],
        [1e-30, -1e-30, 0.0, 1e-38, -1e-38, 0.0, 5e-39],
    ]
    return np.array(rows, dtype=dtype)


def _close(got, want, dtype):
    # the float64 reference rounded once to the dtype (float32: -3e38 - 3e38 is -inf)
    got = np.asarray(got, dtype=np.float64)
    with np.errstate(over="ignore"):
        want = np.asarray(want).astype(dtype).astype(np.float64)
    rtol = 2e-6 if dtype == np.float32 else 1e-13
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * 1e-3, equal_nan=True)
    assert np.array_equal(np.isposinf(got), np.isposinf(want))
    assert np.array_equal(np.isneginf(got), np.isneginf(want))


def test_custom_call_is_used_on_cpu_not_a_python_callback():
    x = jnp.ones((3, 5))
    t = jnp.array([0, 1, 4])
    for f in (
        skj.softmax,
        skj.log_softmax,
        skj.logsumexp,
        jax.grad(lambda a: jnp.sum(skj.softmax(a) ** 2)),
        jax.grad(lambda a: jnp.sum(skj.log_softmax(a) ** 2)),
        jax.grad(lambda a: skj.logsumexp(a).sum()),
        jax.value_and_grad(lambda a: skj.cross_entropy(a, t)),
    ):
        text = _hlo(f, x)
        assert "softmaxkit_host" in text
        # the one Python callback allowed: the cross-entropy's check of the target
        # values (3 int64 here, never the logits), which the custom call cannot raise
        calls = [ln for ln in text.splitlines() if "python_cpu_callback" in ln]
        assert all("(tensor<3xi64>) -> tensor<3xi64>" in ln for ln in calls), calls
    # the cross-entropy backward takes the saved gradient's buffer as its result
    text = jax.jit(jax.grad(lambda a: 2 * skj.cross_entropy(a, t))).lower(x).compile().as_text()
    assert "output_to_operand_aliasing" in text


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("op", ["softmax", "log_softmax", "logsumexp"])
def test_dense_adversarial_rows_match_the_float64_reference(op, dtype):
    x = _adversarial(dtype)
    want = getattr(ref, op)(x.astype(np.float64), axis=-1)
    f = getattr(skj, op)
    for got in (f(jnp.asarray(x)), jax.jit(f)(jnp.asarray(x))):
        assert got.dtype == dtype
        _close(got, want, dtype)
    # with a mask (one row fully masked) and a temperature, and along axis 0
    w = np.ones(x.shape, bool)
    w[0, 2:5] = False
    w[6] = False
    want = getattr(ref, op)(x.astype(np.float64), axis=-1, temperature=0.5, where=w)
    _close(jax.jit(lambda a, m: f(a, temperature=0.5, where=m))(x, w), want, dtype)
    want = getattr(ref, op)(x.T.astype(np.float64), axis=0)
    _close(jax.jit(lambda a: f(a, axis=0))(x.T), want, dtype)


@pytest.mark.parametrize("op", ["softmax", "log_softmax", "logsumexp"])
def test_dense_grads_match_jax_nn_and_the_reference_vjp(op):
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.normal(size=(6, 33)) * 4)
    g = jnp.asarray(rng.normal(size=(6, 33) if op != "logsumexp" else (6,)))
    ours = jax.jit(jax.vjp(getattr(skj, op), x)[1])(g)[0]
    theirs = jax.vjp(lambda a: getattr(jax.nn, op)(a, axis=-1), x)[1](g)[0]
    np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-14)
    # adversarial rows (the VJP of a -inf / masked row is 0, where jax.nn gives NaN)
    xa = _adversarial(np.float64)
    xa = xa[[0, 1, 2, 5, 6]]
    ga = rng.normal(size=xa.shape if op != "logsumexp" else xa.shape[:1])
    got = jax.jit(lambda a, b: jax.vjp(getattr(skj, op), a)[1](b)[0])(xa, ga)
    want = getattr(ref, f"{op}_vjp")(xa, ga, axis=-1)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-300, equal_nan=True)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cross_entropy_loss_and_fused_grad_match_optax_and_reference(dtype):
    optax = pytest.importorskip("optax")
    rng = np.random.default_rng(5)
    x = jnp.asarray((rng.normal(size=(37, 129)) * 3).astype(dtype))
    t = jnp.asarray(rng.integers(0, 129, 37))
    ours = jax.jit(jax.value_and_grad(lambda a: skj.cross_entropy(a, t)))(x)
    theirs = jax.jit(
        jax.value_and_grad(lambda a: optax.softmax_cross_entropy_with_integer_labels(a, t).mean())
    )(x)
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(ours[0], theirs[0], rtol=rtol)
    np.testing.assert_allclose(ours[1], theirs[1], rtol=rtol, atol=rtol * 1e-3)
    assert ours[1].dtype == dtype
    # upstream gradients other than 1: the in-place scaling (scalar and per row)
    for scale in (3.0, -0.5, 0.0):
        g = jax.jit(jax.grad(lambda a, s=scale: s * skj.cross_entropy(a, t, reduction="sum")))(x)
        np.testing.assert_allclose(g, scale * theirs[1] * 37, rtol=rtol, atol=rtol * 1e-2)
    wr = jnp.asarray(rng.normal(size=37).astype(dtype))
    g = jax.jit(jax.grad(lambda a: jnp.sum(wr * skj.cross_entropy(a, t, reduction="none"))))(x)
    want = jax.grad(lambda a: jnp.sum(wr * optax.softmax_cross_entropy_with_integer_labels(a, t)))(
        x
    )
    np.testing.assert_allclose(g, want, rtol=rtol, atol=rtol * 1e-2)


def test_cross_entropy_adversarial_rows_match_the_reference():
    x = _adversarial(np.float64)
    t = np.array([0, 1, 2, 1, 4, 2, 3])
    w = np.ones(x.shape, bool)
    w[0, 5:] = False
    for kw in [{}, {"where": w}, {"label_smoothing": 0.1, "z_loss": 1e-3}, {"temperature": 2.0}]:
        for red in ("none", "sum"):
            with np.errstate(over="ignore"):  # the reference's z * lse**2 of a 1e308 row
                want_loss, want_grad = ref.cross_entropy(
                    x, t, reduction=red, return_grad=True, **kw
                )

            def f(a, kw=kw, red=red):
                loss = skj.cross_entropy(a, t, reduction=red, **kw)
                return jnp.sum(loss), loss

            (_, loss), grad = jax.jit(jax.value_and_grad(f, has_aux=True))(jnp.asarray(x))
            np.testing.assert_allclose(loss, want_loss, rtol=1e-12, equal_nan=True)
            np.testing.assert_allclose(grad, want_grad, rtol=1e-12, atol=1e-300, equal_nan=True)


def test_vmap_dense_broadcasts_and_losses_go_sequentially():
    rng = np.random.default_rng(8)
    x = jnp.asarray(rng.normal(size=(4, 3, 9)))
    w = jnp.asarray(rng.random((3, 9)) > 0.3)
    for op in ("softmax", "log_softmax", "logsumexp"):
        f = getattr(skj, op)
        got = jax.jit(jax.vmap(lambda a, f=f: f(a, where=w)))(x)
        want = getattr(ref, op)(np.asarray(x), axis=-1, where=np.broadcast_to(w, x.shape))
        np.testing.assert_allclose(got, want, rtol=1e-13)
        # a batch axis that is not leading, and vmap of grad
        got = jax.vmap(lambda a, f=f: f(a, axis=0), in_axes=2)(x)
        np.testing.assert_allclose(
            got, np.moveaxis(getattr(ref, op)(np.asarray(x), axis=0), -1, 0), rtol=1e-13
        )
        gv = jax.jit(jax.vmap(jax.grad(lambda a, f=f: jnp.sum(jnp.sin(f(a))))))(x)
        gl = jnp.stack([jax.grad(lambda a, f=f: jnp.sum(jnp.sin(f(a))))(xi) for xi in x])
        np.testing.assert_allclose(gv, gl, rtol=1e-12, atol=1e-15)
    t = jnp.asarray(rng.integers(0, 9, (4, 3)))
    vg = jax.jit(jax.vmap(jax.value_and_grad(lambda a, b: skj.cross_entropy(a, b))))(x, t)
    for i in range(4):
        loss, grad = ref.cross_entropy(np.asarray(x[i]), np.asarray(t[i]), return_grad=True)
        np.testing.assert_allclose(vg[0][i], loss, rtol=1e-13)
        np.testing.assert_allclose(vg[1][i], grad, rtol=1e-12, atol=1e-15)


def test_pure_callback_fallback_gives_the_same_results(monkeypatch):
    x = jnp.asarray(_adversarial(np.float64)[[0, 2, 5]])
    t = jnp.array([1, 2, 2])
    fns = [
        lambda a: skj.softmax(a),
        lambda a: skj.logsumexp(a, temperature=0.3),
        jax.grad(lambda a: jnp.sum(skj.log_softmax(a)[:, 2])),
        jax.grad(lambda a: 2.5 * skj.cross_entropy(a, t)),
    ]
    fast = [jax.jit(f)(x) for f in fns]
    monkeypatch.setitem(xla._STATE, "ok", False)
    jax.clear_caches()  # the functions are jitted (traced once per configuration)
    for f, want in zip(fns, fast, strict=True):
        g = jax.jit(lambda a, f=f: f(a) * 1.0)  # a new trace
        assert "python_cpu_callback" in _hlo(g, x)
        # the same kernels; the upstream scaling of the saved gradient may round once
        # differently (host multiply vs XLA's), 1 ulp seen on a fresh machine
        np.testing.assert_allclose(g(x), want, rtol=1e-14, atol=1e-15)
    monkeypatch.undo()
    jax.clear_caches()


def test_concurrent_callers_from_python_threads():
    rng = np.random.default_rng(9)
    xs = [jnp.asarray(rng.normal(size=(64, 300 + 7 * k))) for k in range(6)]
    f = jax.jit(jax.value_and_grad(lambda a: skj.cross_entropy(a, jnp.zeros(64, int))))
    want = [ref.cross_entropy(np.asarray(a), np.zeros(64, int), return_grad=True) for a in xs]
    errors = []

    def work(k):
        try:
            for _ in range(5):
                loss, grad = f(xs[k])
                np.testing.assert_allclose(loss, want[k][0], rtol=1e-12)
                np.testing.assert_allclose(grad, want[k][1], rtol=1e-11, atol=1e-16)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(6)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors


def test_a_failing_host_gives_nan_and_logs(caplog):
    def host(ins, outs):
        raise RuntimeError("boom")

    def spec(a):
        return jax.ShapeDtypeStruct(a.shape, a.dtype)

    with caplog.at_level(logging.ERROR, logger="softmaxkit.jax"):
        y = jax.jit(lambda a: _call.host_call("test", host, spec, a))(jnp.ones(4))
    assert np.isnan(np.asarray(y)).all()
    assert any("boom" in (r.exc_text or "") for r in caplog.records)


def test_empty_arrays():
    for shape in [(0, 5), (3, 0)]:
        x = jnp.zeros(shape)
        assert jax.jit(skj.softmax)(x).shape == shape
        np.testing.assert_array_equal(jax.jit(skj.logsumexp)(x), ref.logsumexp(np.zeros(shape)))


def test_registration_is_lazy():
    # importing softmaxkit.jax imports neither Numba nor the custom-call module
    code = (
        "import softmaxkit.jax, sys\n"
        "bad = [m for m in ('numba', 'softmaxkit._kernels') if m in sys.modules]\n"
        "assert not bad, bad\n"
        "from softmaxkit._kernels import xla\n"
        "assert not xla._STATE and not xla._PLANS, xla._STATE\n"
        "import jax.numpy as jnp\n"
        "softmaxkit.jax.softmax(jnp.ones(3))\n"
        "assert xla._STATE['ok'] is True\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


@pytest.mark.parametrize("wrap", ["eager", "jit", "grad"])
def test_bad_target_values_raise_instead_of_a_silent_nan(wrap):
    # the custom call cannot raise: the targets' values are checked by a callback first
    import jax
    import jax.numpy as jnp

    import softmaxkit.jax as skj

    x = jnp.asarray(np.random.default_rng(0).standard_normal((3, 5)), jnp.float32)
    f = {"eager": skj.cross_entropy, "jit": jax.jit(skj.cross_entropy),
         "grad": jax.grad(skj.cross_entropy)}[wrap]  # fmt: skip
    with pytest.raises(Exception, match=r"target\[2\] = 7 is not a class index in \[0, 5\)"):
        jax.block_until_ready(f(x, jnp.array([0, 1, 7])))
    p = jnp.abs(x).at[1, 2].set(-1.0)
    with pytest.raises(Exception, match="probability target must be finite and >= 0"):
        jax.block_until_ready(f(x, p))
    h, W = jnp.ones((2, 3)), jnp.zeros((4, 3))
    with pytest.raises(Exception, match=r"target\[1\] = 4 is not a class index"):
        jax.block_until_ready(skj.linear_cross_entropy(h, W, jnp.array([0, 4])))
    assert np.isfinite(float(skj.cross_entropy(x, jnp.array([0, 1, -100]), ignore_index=-100)))
