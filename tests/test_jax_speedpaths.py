"""softmaxkit.jax speed paths: both softmax / log_softmax backward paths and the
huge-page advice on the custom call's result buffers.

The backward of ``log_softmax`` runs as jnp ops, that of ``softmax`` as jnp ops for
results under 4 MiB and as the VJP kernel from 4 MiB on
(``softmaxkit.jax._xla_backward``).  Both
are checked here, each forced by ``BWD_MODE``, against ``jax.nn``, the float64
reference VJPs and ``jax.test_util.check_grads`` (float64), on the contract rows
(all -inf, one and two +inf, NaN, a -inf entry, masked entries, a fully masked
row), under ``jit``, ``grad`` and ``vmap``.
"""

from __future__ import annotations

import numpy as np
import pytest

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")
skj = pytest.importorskip("softmaxkit.jax")
from jax.test_util import check_grads  # noqa: E402

from softmaxkit import reference as ref  # noqa: E402
from softmaxkit._kernels import xla  # noqa: E402

INF = np.inf
OPS = ["softmax", "log_softmax"]


@pytest.fixture(autouse=True, scope="module")
def _x64():
    old = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", old)


@pytest.fixture(params=["xla", "kernel"])
def bwd(request, monkeypatch):
    """Force one backward path (the jitted functions are cached per configuration)."""
    monkeypatch.setattr(skj, "BWD_MODE", request.param)
    skj._dense.cache_clear()
    yield request.param
    skj._dense.cache_clear()


def _rows():
    """Contract rows: ordinary, all -inf, one +inf, two +inf, NaN, a -inf entry."""
    rng = np.random.default_rng(4)
    return np.array(
        [
            rng.normal(size=6) * 3,
            [-INF] * 6,
            [0.0, 1.0, INF, -2.0, 3.0, 0.5],
            [INF, 1.0, INF, -2.0, 3.0, 0.5],
            [0.0, np.nan, 1.0, 2.0, -1.0, 0.0],
            [-INF, 2.0, -INF, 1.0, 0.0, -1.0],
        ]
    )


def _n_calls(f, *args):
    return jax.jit(f).lower(*args).as_text().count("softmaxkit_host")


@pytest.mark.parametrize("op", OPS)
def test_each_backward_path_matches_jax_nn_and_check_grads(op, bwd):
    f = getattr(skj, op)
    nn = getattr(jax.nn, op)
    x = jnp.asarray(np.random.default_rng(1).normal(size=(5, 9)) * 3)
    # the path forced is the path taken: 2 custom calls under grad (forward and the
    # VJP kernel) or 1 (the forward; the VJP in jnp ops)
    n = _n_calls(jax.grad(lambda a: jnp.sum(f(a) * a)), x)
    assert n == (2 if bwd == "kernel" else 1)
    for axis in (-1, 0, (0, 1)):
        check_grads(lambda a, axis=axis: f(a, axis, temperature=0.7), (x,), order=1,
                    modes=["rev"], atol=1e-7, rtol=1e-6)  # fmt: skip
        ours = jax.jit(jax.grad(lambda a, axis=axis: jnp.sum(jnp.sin(f(a, axis)) * a)))(x)
        theirs = jax.grad(lambda a, axis=axis: jnp.sum(jnp.sin(nn(a, axis)) * a))(x)
        np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("temperature", [1.0, 0.3])
@pytest.mark.parametrize("op", OPS)
def test_each_backward_path_on_contract_rows_matches_the_reference_vjp(op, temperature, bwd):
    f = getattr(skj, op)
    x = _rows()
    g = np.random.default_rng(2).normal(size=x.shape)
    vjp = jax.jit(lambda a, b: jax.vjp(lambda v: f(v, temperature=temperature), a)[1](b)[0])
    got = np.asarray(vjp(x, g))
    want = getattr(ref, f"{op}_vjp")(x, g, axis=-1, temperature=temperature)
    # a NaN row gives NaN (the kernel, as jax.nn; the reference's log_softmax VJP
    # gives 0 there, its lse > -inf test being False for NaN)
    assert np.isnan(got[4]).all()
    keep = [0, 1, 2, 3, 5]
    np.testing.assert_allclose(got[keep], want[keep], rtol=1e-12, atol=1e-300)
    assert not np.any(got[1]), "an all -inf row has gradient 0"
    # masked entries and a fully masked row: gradient 0 there
    w = np.ones(x.shape, bool)
    w[0, 1:3] = False
    w[5, :] = False
    w[2, 0] = False
    vjp = jax.jit(
        lambda a, b, m: jax.vjp(lambda v: f(v, temperature=temperature, where=m), a)[1](b)[0]
    )
    got = np.asarray(vjp(x, g, w))
    want = getattr(ref, f"{op}_vjp")(x, g, axis=-1, temperature=temperature, where=w)
    assert np.isnan(got[4]).all()
    np.testing.assert_allclose(got[keep], want[keep], rtol=1e-12, atol=1e-300)
    assert not np.any(got[~w])


@pytest.mark.parametrize("op", OPS)
def test_each_backward_path_under_vmap(op, bwd):
    f = getattr(skj, op)
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.normal(size=(4, 3, 8)))
    w = jnp.asarray(rng.random((3, 8)) > 0.25)

    def loss(a):
        return jnp.sum(jnp.cos(f(a, where=w)) * a)

    got = jax.jit(jax.vmap(jax.grad(loss)))(x)
    want = np.stack([np.asarray(jax.grad(loss)(xi)) for xi in x])
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)
    # the batched VJP against the float64 reference directly
    g = rng.normal(size=x.shape)
    got = jax.jit(jax.vmap(lambda a, b: jax.vjp(lambda v: f(v, where=w), a)[1](b)[0]))(x, g)
    wb = np.broadcast_to(np.asarray(w), x.shape)
    want = getattr(ref, f"{op}_vjp")(np.asarray(x), g, axis=-1, where=wb)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-300)


def test_auto_backward_softmax_jnp_below_4_mib_kernel_from_4_mib_log_softmax_jnp():
    assert skj.BWD_MODE == "auto"
    small = jax.ShapeDtypeStruct((32, 32000), jnp.float32)  # 4 096 000 bytes
    large = jax.ShapeDtypeStruct((1024, 1024), jnp.float32)  # 4 MiB
    large64 = jax.ShapeDtypeStruct((512, 1024), jnp.float64)
    for op, n_large in [("softmax", 2), ("log_softmax", 1)]:
        f = getattr(skj, op)

        def loss(a, f=f):
            return jnp.sum(f(a) * a)

        assert _n_calls(jax.grad(loss), small) == 1
        assert _n_calls(jax.grad(loss), large) == n_large
        assert _n_calls(jax.grad(loss), large64) == n_large


def test_large_auto_backward_matches_the_reference():
    # a 4 MiB float64 gradient (softmax: the kernel path, chosen by size)
    rng = np.random.default_rng(6)
    x = rng.normal(size=(512, 1024)) * 4
    x[3] = -INF
    x[7, 5] = INF
    g = rng.normal(size=x.shape)
    for op in OPS:
        f = getattr(skj, op)
        got = np.asarray(jax.jit(lambda a, b, f=f: jax.vjp(f, a)[1](b)[0])(x, g))
        # the reference's dense Jacobians on the first rows (it needs n^2 per row) ...
        want = getattr(ref, f"{op}_vjp")(x[:12], g[:12], axis=-1)
        np.testing.assert_allclose(got[:12], want, rtol=1e-11, atol=1e-16)
        # ... and jax.nn on the ordinary rows
        nn = getattr(jax.nn, op)
        want = np.asarray(jax.vjp(nn, x[8:])[1](g[8:])[0])
        np.testing.assert_allclose(got[8:], want, rtol=1e-11, atol=1e-16)


class _Advice:
    """Records the madvise calls of the custom-call target."""

    def __init__(self):
        self.calls = []

    def __call__(self, addr, length, advice):
        self.calls.append((addr, length, advice))
        return 0


def test_results_of_4_mib_and_more_are_advised_huge_pages(monkeypatch):
    adv = _Advice()
    monkeypatch.setattr(xla, "_MADVISE", adv)
    monkeypatch.setattr(xla, "HUGEPAGES", True)
    big = jnp.asarray(np.random.default_rng(7).normal(size=(1024, 1024)).astype(np.float32))
    y = jax.jit(skj.softmax)(big)
    assert len(adv.calls) == 1
    addr, length, advice = adv.calls[0]
    assert advice == 14  # MADV_HUGEPAGE
    assert addr % (1 << 21) == 0 and length % (1 << 21) == 0 and length > 0
    # inside the result buffer (whole 2 MiB spans only)
    ptr = y.unsafe_buffer_pointer()
    assert ptr <= addr and addr + length <= ptr + big.nbytes
    np.testing.assert_allclose(y, jax.nn.softmax(big), rtol=2e-6, atol=1e-12)
    # a result under 4 MiB: no advice
    adv.calls.clear()
    jax.block_until_ready(jax.jit(skj.softmax)(big[:1023]))
    assert adv.calls == []
    # switched off: no advice
    monkeypatch.setattr(xla, "HUGEPAGES", False)
    jax.block_until_ready(jax.jit(lambda a: skj.softmax(a) * 1.0)(big))
    assert adv.calls == []


def test_an_aliased_result_is_not_advised(monkeypatch):
    # the cross-entropy backward scales the saved gradient in its own buffer: that
    # result is an operand's (already faulted) pages and gets no advice
    adv = _Advice()
    monkeypatch.setattr(xla, "_MADVISE", adv)
    monkeypatch.setattr(xla, "HUGEPAGES", True)
    x = jnp.asarray(np.random.default_rng(8).normal(size=(1024, 1024)).astype(np.float32))
    t = jnp.zeros(1024, jnp.int32)
    f = jax.jit(jax.grad(lambda a: 2.0 * skj.cross_entropy(a, t)))
    assert "output_to_operand_aliasing" in f.lower(x).compile().as_text()
    gr = f(x)
    assert len(adv.calls) == 1  # the forward's gradient result; not the scaled one
    want = 2.0 * ref.cross_entropy(np.asarray(x, np.float64), np.zeros(1024, int),
                                   return_grad=True)[1]  # fmt: skip
    np.testing.assert_allclose(gr, want, rtol=1e-5, atol=1e-9)


def test_the_huge_page_advice_is_a_hint_that_may_fail(monkeypatch):
    # a failing madvise (EINVAL on a kernel without THP) changes nothing
    monkeypatch.setattr(xla, "_MADVISE", lambda *a: -1)
    monkeypatch.setattr(xla, "HUGEPAGES", True)
    x = jnp.asarray(np.random.default_rng(9).normal(size=(1024, 1024)).astype(np.float32))
    np.testing.assert_allclose(jax.jit(skj.log_softmax)(x), jax.nn.log_softmax(x), rtol=1e-5)
    assert xla._ask_huge_pages(1 << 21, 1 << 22) is False
    monkeypatch.setattr(xla, "HUGEPAGES", False)
    assert xla._ask_huge_pages(1 << 21, 1 << 22) is False


@pytest.mark.parametrize("op", OPS)
def test_float32_gradients_are_as_accurate_as_jax_nn(op, bwd):
    # the jnp backward sums in float32 (as jax.nn does): its error against the float64
    # gradient stays within twice jax.nn's own float32 error
    x64 = np.random.default_rng(10).standard_normal((64, 1000)) * 3
    x32 = jnp.asarray(x64.astype(np.float32))

    def loss(f):
        return lambda v: jnp.sum(jnp.sin(f(v)) * v)

    nn = getattr(jax.nn, op)
    want = np.asarray(jax.grad(loss(nn))(jnp.asarray(np.asarray(x32, np.float64))))
    with jax.enable_x64(False):
        ours = np.asarray(jax.jit(jax.grad(loss(getattr(skj, op))))(x32), np.float64)
        theirs = np.asarray(jax.jit(jax.grad(loss(nn)))(x32), np.float64)
    scale = np.abs(want).max()
    err_ours = np.abs(ours - want).max() / scale
    err_nn = np.abs(theirs - want).max() / scale
    assert err_ours <= 2 * err_nn + 1e-7, (err_ours, err_nn)


@pytest.mark.parametrize("ignore_index", [None, -100, 3])
def test_class_targets_reach_the_host_check_only_when_out_of_range(ignore_index, monkeypatch):
    # the range test runs in jnp; the raising host callback (class_indices) runs only
    # when it fails (a pure_callback costs ~0.1 ms a call); under vmap it always runs
    import jax
    import jax.numpy as jnp

    import softmaxkit.jax as skj

    calls = []
    orig = jax.pure_callback

    def spy(callback, *a, **k):  # counts the host callbacks that run
        def counted(*args):
            calls.append(1)
            return callback(*args)

        return orig(counted, *a, **k)

    monkeypatch.setattr(jax, "pure_callback", spy)
    x = jnp.asarray(np.random.default_rng(0).standard_normal((4, 6)), jnp.float32)
    kw = {} if ignore_index is None else {"ignore_index": ignore_index}
    f = jax.jit(lambda x, t: skj.cross_entropy(x, t, **kw))
    good = jnp.array([0, 5, 2, 3 if ignore_index is None else ignore_index])
    jax.block_until_ready(f(x, good))
    jax.block_until_ready(jax.grad(lambda x: skj.cross_entropy(x, good, **kw))(x))
    assert calls == []
    for bad in ([0, 6, 1, 2], [0, -1, 1, 2], [0, -100 if ignore_index != -100 else -7, 1, 2]):
        with pytest.raises(Exception, match="is not a class index in"):
            jax.block_until_ready(f(x, jnp.array(bad)))
    assert len(calls) == 3
    # vmap: the cond becomes a select, the callback runs (and passes) every time
    v = jax.vmap(lambda x, t: skj.cross_entropy(x[None], t[None], **kw))(x, good)
    jax.block_until_ready(v)
    assert len(calls) > 3
