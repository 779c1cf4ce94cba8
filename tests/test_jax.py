"""softmaxkit.jax: custom_vjp functions on the CPU kernels against jax.nn and optax."""

from __future__ import annotations

import numpy as np
import pytest

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")
skj = pytest.importorskip("softmaxkit.jax")
from jax.test_util import check_grads  # noqa: E402

INF = float("inf")


@pytest.fixture(autouse=True, scope="module")
def _x64():
    old = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", old)


def _x(shape=(5, 7), seed=0, scale=2.0):
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape) * scale)


def _rev(f, args):
    check_grads(f, args, order=1, modes=["rev"], atol=1e-7, rtol=1e-6)


@pytest.mark.parametrize("axis", [-1, 0, (0, 1), None])
def test_dense_values_and_grads_match_jax_nn(axis):
    x = _x()
    np.testing.assert_allclose(skj.softmax(x, axis), jax.nn.softmax(x, axis), rtol=1e-13)
    np.testing.assert_allclose(skj.log_softmax(x, axis), jax.nn.log_softmax(x, axis), rtol=1e-13)
    np.testing.assert_allclose(skj.logsumexp(x, axis), jax.nn.logsumexp(x, axis), rtol=1e-13)
    for f in (skj.softmax, skj.log_softmax, skj.logsumexp):
        _rev(lambda a, f=f: f(a, axis, temperature=0.7), (x,))
        g_ours = jax.grad(lambda a, f=f: jnp.sum(jnp.sin(f(a, axis))))(x)
        ref = {skj.softmax: jax.nn.softmax, skj.log_softmax: jax.nn.log_softmax}.get(
            f, jax.nn.logsumexp
        )
        g_ref = jax.grad(lambda a, ref=ref: jnp.sum(jnp.sin(ref(a, axis))))(x)
        np.testing.assert_allclose(g_ours, g_ref, rtol=1e-12, atol=1e-14)


def test_jit_vmap_and_edge_rows():
    x = _x((3, 4, 6), seed=1)
    for f, ref in [(skj.softmax, jax.nn.softmax), (skj.log_softmax, jax.nn.log_softmax)]:
        np.testing.assert_allclose(jax.jit(f)(x), ref(x), rtol=1e-13)
        np.testing.assert_allclose(jax.vmap(f)(x), ref(x), rtol=1e-13)
        np.testing.assert_allclose(
            jax.vmap(lambda a, f=f: f(a, axis=0), in_axes=1)(x),
            jnp.moveaxis(ref(x, axis=0), 1, 0),
            rtol=1e-13,
        )
    g = jax.jit(jax.vmap(jax.grad(lambda a: skj.logsumexp(a).sum())))(x)
    np.testing.assert_allclose(g, jax.nn.softmax(x), rtol=1e-13)
    rows = jnp.array([[-INF, -INF, -INF], [0.0, 1.0, -INF]])
    where = jnp.array([[True, True, True], [True, False, True]])
    y = skj.softmax(rows, where=where)
    assert np.array_equal(np.asarray(y[0]), np.zeros(3))
    assert np.isnan(np.asarray(jax.nn.softmax(rows)[0])).all()  # the documented difference
    gr = jax.grad(lambda a: jnp.sum(skj.softmax(a, where=where) * jnp.arange(3.0)))(rows)
    assert np.array_equal(np.asarray(gr), np.zeros((2, 3)))
    assert skj.logsumexp(rows[:1])[0] == -INF
    assert np.array_equal(
        np.asarray(jax.grad(lambda a: skj.logsumexp(a).sum())(rows))[0], [0, 0, 0]
    )


def test_bfloat16_and_float32():
    x = _x((8, 50), seed=2).astype(jnp.bfloat16)
    y = skj.softmax(x)
    assert y.dtype == jnp.bfloat16
    ref = np.asarray(jax.nn.softmax(x.astype(jnp.float64)))
    assert np.max(np.abs(np.asarray(y, dtype=np.float64) - ref) / ref) <= 2.0**-8
    x32 = _x((4, 9), seed=3).astype(jnp.float32)
    assert skj.log_softmax(x32).dtype == jnp.float32


def test_cross_entropy_matches_optax_values_and_grads():
    optax = pytest.importorskip("optax")
    x = _x((6, 5), seed=4)
    t = jnp.array([0, 4, 2, 1, 3, 3])
    ours = jax.value_and_grad(lambda a: skj.cross_entropy(a, t))(x)
    ref = jax.value_and_grad(
        lambda a: optax.softmax_cross_entropy_with_integer_labels(a, t).mean()
    )(x)
    np.testing.assert_allclose(ours[0], ref[0], rtol=1e-13)
    np.testing.assert_allclose(ours[1], ref[1], rtol=1e-12, atol=1e-15)
    # probability targets with smoothing, class axis 0
    p = jax.nn.softmax(_x((6, 5), seed=5), axis=1)
    eps = 0.1
    q = (1 - eps) * p + eps / 5
    np.testing.assert_allclose(
        skj.cross_entropy(x.T, p.T, axis=0, label_smoothing=eps, reduction="sum"),
        optax.softmax_cross_entropy(x, q).sum(),
        rtol=1e-13,
    )
    for kw in [
        {"reduction": "none", "z_loss": 0.1},
        {"weight": jnp.arange(1.0, 6.0), "label_smoothing": 0.2},
        {"temperature": 0.5, "ignore_index": 3},
        {"where": jnp.arange(5) != 2, "reduction": "sum"},
    ]:
        tt = t if "where" not in kw else jnp.array([0, 4, 3, 1, 3, 3])
        _rev(lambda a, kw=kw, tt=tt: skj.cross_entropy(a, tt, **kw), (x,))
    g = jax.jit(jax.grad(lambda a: skj.cross_entropy(a, t, label_smoothing=0.1)))(x)
    assert g.shape == x.shape
    batched = jax.vmap(lambda a, b: skj.cross_entropy(a, b))(
        jnp.stack([x, 2 * x]), jnp.stack([t, t])
    )
    np.testing.assert_allclose(batched[1], skj.cross_entropy(2 * x, t), rtol=1e-14)


def test_linear_cross_entropy_matches_materialised_optax():
    optax = pytest.importorskip("optax")
    h = _x((8, 4), seed=6)
    W = _x((11, 4), seed=7, scale=0.5)
    b = _x((11,), seed=8)
    t = jnp.array([0, 10, 3, 3, 7, 1, 2, 9])

    def ref(hh, WW, bb):
        return optax.softmax_cross_entropy_with_integer_labels(hh @ WW.T + bb, t).mean()

    def ours(hh, WW, bb):
        return skj.linear_cross_entropy(hh, WW, t, bias=bb, chunk_size=3)

    np.testing.assert_allclose(ours(h, W, b), ref(h, W, b), rtol=1e-13)
    go = jax.grad(ours, argnums=(0, 1, 2))(h, W, b)
    gr = jax.grad(ref, argnums=(0, 1, 2))(h, W, b)
    for a, c in zip(go, gr, strict=True):
        np.testing.assert_allclose(a, c, rtol=1e-11, atol=1e-14)
    _rev(lambda hh, WW: skj.linear_cross_entropy(hh, WW, t, reduction="sum", z_loss=0.01), (h, W))
    assert jax.jit(jax.grad(lambda hh: skj.linear_cross_entropy(hh, W, t)))(h).shape == h.shape


def test_errors():
    x = _x((3, 4))
    with pytest.raises(TypeError, match="floating"):
        skj.softmax(jnp.ones((2, 3), dtype=jnp.int32))
    with pytest.raises(ValueError, match="temperature"):
        skj.softmax(x, temperature=0.0)
    with pytest.raises(np.exceptions.AxisError):
        skj.log_softmax(x, axis=2)
    with pytest.raises(ValueError, match="reduction"):
        skj.cross_entropy(x, jnp.array([0, 1, 2]), reduction="avg")
    with pytest.raises(TypeError, match="integer"):
        skj.linear_cross_entropy(x, x, jnp.array([0.0, 1.0, 2.0]))


def test_second_derivatives_raise_a_clear_error():
    # the gradients are host-callback kernels: a second derivative would differentiate
    # the callback; the error names the function instead of JAX's generic message
    x = jnp.array([[0.3, -1.0, 2.0], [1.0, 0.5, -0.2]])
    t = jnp.array([1, 0])
    W = jnp.ones((4, 3))
    for name, f in [
        ("softmax", lambda a: skj.softmax(a)[0, 0]),
        ("log_softmax", lambda a: skj.log_softmax(a, axis=0)[1, 2]),
        ("logsumexp", lambda a: skj.logsumexp(a).sum()),
        ("cross_entropy", lambda a: skj.cross_entropy(a, t)),
        ("linear_cross_entropy", lambda a: skj.linear_cross_entropy(a, W, t)),
    ]:
        jax.grad(f)(x)  # first order works
        for higher in (jax.hessian(f), jax.grad(lambda a, f=f: jax.grad(f)(a).sum())):
            with pytest.raises(NotImplementedError, match=rf"softmaxkit.jax.{name}: second"):
                higher(x)
