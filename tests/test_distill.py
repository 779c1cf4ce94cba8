"""Distillation losses: kl_divergence, jensen_shannon and their linear_ variants.

Checked against the float64 reference twins (``softmaxkit.reference``), torch's
``F.kl_div(log_target=True)`` with autograd, a direct float64 formula for the JSD
(written here independently of the reference), central differences, and hypothesis
properties (KL >= 0, KL(p || p) = 0, JSD symmetric at beta = 0.5 and <= log 2).
"""

from __future__ import annotations

import tracemalloc
import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from softmaxkit import (
    jensen_shannon,
    kl_divergence,
    linear_jensen_shannon,
    linear_kl_divergence,
    reference,
)

torch = pytest.importorskip("torch")
F = torch.nn.functional

RNG = np.random.default_rng(20261205)
TOL = {np.float64: dict(rtol=1e-12, atol=1e-13), np.float32: dict(rtol=2e-5, atol=2e-6)}


def _pair(shape, dtype, scale=3.0):
    return (
        (RNG.standard_normal(shape) * scale).astype(dtype),
        (RNG.standard_normal(shape) * scale).astype(dtype),
    )


def _torch_kl(s, t, T, direction, reduction):
    S = torch.tensor(s, dtype=torch.float64, requires_grad=True)
    Tt = torch.tensor(t, dtype=torch.float64)
    ls, lt = F.log_softmax(S / T, -1), F.log_softmax(Tt / T, -1)
    a, b = (ls, lt) if direction == "forward" else (lt, ls)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch's "mean" deprecation note
        loss = F.kl_div(a, b, log_target=True, reduction=reduction)
    (loss.sum()).backward()
    return loss.detach().numpy(), S.grad.numpy()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("direction", ["forward", "reverse"])
@pytest.mark.parametrize("reduction", ["batchmean", "sum", "mean"])
@pytest.mark.parametrize("T", [1.0, 0.6, 2.5])
def test_kl_matches_torch_kl_div(dtype, direction, reduction, T):
    s, t = _pair((6, 37), dtype)
    loss, g = kl_divergence(
        s, t, temperature=T, direction=direction, reduction=reduction, return_grad=True
    )
    tl, tg = _torch_kl(s, t, T, direction, reduction)
    assert loss.dtype == dtype and g.dtype == dtype
    np.testing.assert_allclose(loss, tl, **TOL[dtype])
    np.testing.assert_allclose(g, tg, **TOL[dtype])


@pytest.mark.parametrize("direction", ["forward", "reverse"])
def test_kl_none_is_per_row_and_axis(direction):
    s, t = _pair((3, 11, 4), np.float64)
    loss, g = kl_divergence(s, t, direction=direction, reduction="none", axis=1, return_grad=True)
    want, wg = reference.kl_divergence(
        s, t, direction=direction, reduction="none", axis=1, return_grad=True
    )
    assert loss.shape == (3, 4) and g.shape == s.shape
    np.testing.assert_allclose(loss, want, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(g, wg, rtol=1e-12, atol=1e-14)
    # torch along the last axis on the moved arrays
    tl, tg = _torch_kl(np.moveaxis(s, 1, -1), np.moveaxis(t, 1, -1), 1.0, direction, "none")
    np.testing.assert_allclose(loss, tl.sum(-1), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(np.moveaxis(g, 1, -1), tg, rtol=1e-12, atol=1e-14)


def _jsd_formula(s, t, beta, T):
    """Direct float64 generalised JSD per row (Liger-Kernel's definition)."""
    out = []
    for a, b in zip(s.astype(np.float64) / T, t.astype(np.float64) / T, strict=True):
        q = np.exp(a - a.max())
        q /= q.sum()
        p = np.exp(b - b.max())
        p /= p.sum()
        m = beta * p + (1 - beta) * q
        out.append(beta * np.sum(p * np.log(p / m)) + (1 - beta) * np.sum(q * np.log(q / m)))
    return np.array(out)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("beta", [0.1, 0.5, 0.9])
@pytest.mark.parametrize("T", [1.0, 1.7])
def test_jsd_matches_formula_and_autograd(dtype, beta, T):
    s, t = _pair((5, 29), dtype)
    loss, g = jensen_shannon(s, t, beta=beta, temperature=T, reduction="sum", return_grad=True)
    np.testing.assert_allclose(loss, _jsd_formula(s, t, beta, T).sum(), **TOL[dtype])
    S = torch.tensor(s, dtype=torch.float64, requires_grad=True)
    X = F.log_softmax(S / T, -1)
    Y = F.log_softmax(torch.tensor(t, dtype=torch.float64) / T, -1)
    M = beta * Y.exp() + (1 - beta) * X.exp()
    L = (beta * Y.exp() * (Y - M.log()) + (1 - beta) * X.exp() * (X - M.log())).sum()
    L.backward()
    np.testing.assert_allclose(g, S.grad.numpy(), **TOL[dtype])


@pytest.mark.parametrize("beta,direction", [(0.0, "forward"), (1.0, "reverse")])
def test_jsd_beta_limits_are_kl(beta, direction):
    s, t = _pair((4, 19), np.float64)
    a = jensen_shannon(s, t, beta=beta, return_grad=True)
    b = kl_divergence(s, t, direction=direction, return_grad=True)
    np.testing.assert_allclose(a[0], b[0], rtol=1e-14)
    np.testing.assert_allclose(a[1], b[1], rtol=1e-14)


@pytest.mark.parametrize("fn", ["kl_forward", "kl_reverse", "jsd"])
def test_gradients_central_differences(fn):
    s, t = _pair((3, 7), np.float64, scale=1.5)
    mask = RNG.random((3, 7)) > 0.2
    kw = dict(temperature=0.8, where=mask)

    def f(x):
        if fn == "jsd":
            return float(jensen_shannon(x, t, beta=0.3, **kw))
        return float(kl_divergence(x, t, direction=fn[3:], **kw))

    if fn == "jsd":
        _, g = jensen_shannon(s, t, beta=0.3, return_grad=True, **kw)
    else:
        _, g = kl_divergence(s, t, direction=fn[3:], return_grad=True, **kw)
    h = 1e-6
    num = np.zeros_like(s)
    for idx in np.ndindex(s.shape):
        e = np.zeros_like(s)
        e[idx] = h
        num[idx] = (f(s + e) - f(s - e)) / (2 * h)
    np.testing.assert_allclose(g, num, rtol=1e-6, atol=1e-8)
    assert np.all(g[~mask] == 0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("fn", ["kl_divergence", "jensen_shannon"])
def test_reference_twin_on_masks_and_inf(dtype, fn):
    s, t = _pair((8, 16), dtype)
    s[0, 3] = -np.inf
    t[0, 3] = -np.inf
    t[1, 5] = -np.inf  # teacher -inf only: zero weight in forward KL
    mask = RNG.random((8, 16)) > 0.3
    mask[2] = False  # fully masked row: loss 0, grad 0, not counted
    s[3, 0] = np.nan
    mask[3, 0] = False  # masked NaN takes no part
    ours = getattr(__import__("softmaxkit"), fn)
    ref = getattr(reference, fn)
    for red in ("batchmean", "sum", "none", "mean"):
        a = ours(s, t, where=mask, reduction=red, return_grad=True)
        b = ref(s, t, where=mask, reduction=red, return_grad=True)
        np.testing.assert_allclose(a[0], b[0], **TOL[dtype])
        np.testing.assert_allclose(a[1], b[1], **TOL[dtype])
    loss, g = ours(s, t, where=mask, reduction="none", return_grad=True)
    assert loss[2] == 0 and np.all(g[2] == 0)
    assert np.all(np.isfinite(loss)) and np.all(np.isfinite(g))


def test_edge_contract():
    s = np.array(
        [
            [0.0, -np.inf, 1.0],  # teacher has mass where student is -inf
            [-np.inf, -np.inf, -np.inf],  # both empty
            [0.0, np.nan, 1.0],  # NaN
            [-np.inf, -np.inf, -np.inf],  # only the student empty
        ]
    )
    t = np.array([[0.0, 0.5, 1.0], [-np.inf, -np.inf, -np.inf], [0.0, 0.0, 0.0], [0.0, 1.0, 2.0]])
    loss, g = kl_divergence(s, t, reduction="none", return_grad=True)
    assert loss[0] == np.inf and np.all(np.isfinite(g[0]))
    assert loss[1] == 0 and np.all(g[1] == 0)
    assert np.isnan(loss[2]) and np.all(np.isnan(g[2]))
    assert np.isnan(loss[3]) and np.all(np.isnan(g[3]))
    # reverse: student mass where the teacher is -inf -> +inf
    r = kl_divergence(t[:1], s[:1], direction="reverse", reduction="none")
    assert r[0] == np.inf
    # batchmean does not count the empty row
    s2 = np.array([[0.0, 1.0, 2.0], [-np.inf] * 3])
    lb = kl_divergence(s2, t[:2], reduction="batchmean")
    assert lb == kl_divergence(s2, t[:2], reduction="sum") > 0
    # all rows empty: 0 and a zero gradient
    e = np.full((2, 3), -np.inf)
    loss, g = jensen_shannon(e, e, return_grad=True)
    assert loss == 0 and np.all(g == 0)
    # zero-size inputs
    assert kl_divergence(np.zeros((0, 4)), np.zeros((0, 4))) == 0
    assert kl_divergence(np.zeros((2, 0)), np.zeros((2, 0)), reduction="none").shape == (2,)


def test_extreme_temperature_goes_through_float64():
    s, t = _pair((2, 9), np.float32)
    for T in (1e-39, 1e38):
        a = kl_divergence(s, t, temperature=T, reduction="none", return_grad=True)
        b = reference.kl_divergence(s, t, temperature=T, reduction="none", return_grad=True)
        with np.errstate(over="ignore"):  # past float32's range: +-inf, as ours
            wl, wg = b[0].astype(np.float32), b[1].astype(np.float32)
        np.testing.assert_allclose(a[0], wl, rtol=1e-5, atol=1e-30)
        np.testing.assert_allclose(a[1], wg, rtol=1e-5, atol=1e-30)


def test_float16_and_inputs_not_mutated():
    s, t = _pair((3, 10), np.float16, scale=1.0)
    s0, t0 = s.copy(), t.copy()
    loss, g = kl_divergence(s, t, return_grad=True)
    assert loss.dtype == np.float16 and g.dtype == np.float16
    want = reference.kl_divergence(s, t)
    np.testing.assert_allclose(float(loss), want, rtol=2e-3, atol=1e-3)
    np.testing.assert_array_equal(s, s0)
    np.testing.assert_array_equal(t, t0)
    ro = s.astype(np.float32)
    ro.flags.writeable = False
    kl_divergence(ro, ro)


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda s, t: kl_divergence(s, t[:, :3]), "same shape"),
        (lambda s, t: kl_divergence(s, t, direction="both"), "direction.*'both'"),
        (lambda s, t: kl_divergence(s, t, reduction="avg"), "reduction.*'avg'"),
        (lambda s, t: kl_divergence(s, t, temperature=0.0), "temperature.*0.0"),
        (lambda s, t: kl_divergence(s, t, temperature=-1), "temperature.*-1"),
        (lambda s, t: jensen_shannon(s, t, beta=1.5), "beta.*1.5"),
        (lambda s, t: jensen_shannon(s, t, beta=-0.1), "beta.*-0.1"),
        (lambda s, t: jensen_shannon(s, t, beta=np.nan), "beta.*nan"),
        (lambda s, t: linear_kl_divergence(s, t, s, t[:3]), "vocabulary"),
        (lambda s, t: linear_kl_divergence(s, t, s[:2], t), "leading shape"),
        (lambda s, t: linear_kl_divergence(s, t[:, :3], s, t), "student_hidden"),
        (lambda s, t: linear_jensen_shannon(s, t, s, t, chunk_size=0), "chunk_size"),
    ],
)
def test_bad_input(call, match):
    s, t = _pair((4, 4), np.float64)
    with pytest.raises(ValueError, match=match):
        call(s, t)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind", ["fwd", "rev", "jsd"])
@pytest.mark.parametrize("chunk", [None, 1, 3, 50])
def test_linear_matches_materialised(dtype, kind, chunk):
    N, V = 7, 23
    hs = RNG.standard_normal((N, 5)).astype(dtype)
    Ws = RNG.standard_normal((V, 5)).astype(dtype)
    ht = RNG.standard_normal((N, 4)).astype(dtype)
    Wt = RNG.standard_normal((V, 4)).astype(dtype)
    mask = RNG.random((N, V)) > 0.2
    mask[4] = False
    kw = dict(temperature=1.3, where=mask, reduction="batchmean", return_grad=True)
    if kind == "jsd":
        a = linear_jensen_shannon(hs, Ws, ht, Wt, beta=0.4, chunk_size=chunk, **kw)
        b = reference.linear_jensen_shannon(hs, Ws, ht, Wt, beta=0.4, **kw)
    else:
        d = "forward" if kind == "fwd" else "reverse"
        a = linear_kl_divergence(hs, Ws, ht, Wt, direction=d, chunk_size=chunk, **kw)
        b = reference.linear_kl_divergence(hs, Ws, ht, Wt, direction=d, **kw)
    tol = dict(rtol=1e-11, atol=1e-12) if dtype == np.float64 else dict(rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(a[0], b[0], **tol)
    np.testing.assert_allclose(a[1][0], b[1][0], **tol)
    np.testing.assert_allclose(a[1][1], b[1][1], **tol)
    assert a[1][0].dtype == dtype and a[1][0].shape == hs.shape and a[1][1].shape == Ws.shape
    # loss only
    kw.pop("return_grad")
    if kind != "jsd":
        lo = linear_kl_divergence(hs, Ws, ht, Wt, direction=d, chunk_size=chunk, **kw)
        np.testing.assert_allclose(lo, b[0], **tol)


def test_linear_against_torch_autograd():
    N, d, V = 6, 5, 31
    hs, Ws = RNG.standard_normal((N, d)), RNG.standard_normal((V, d))
    ht, Wt = RNG.standard_normal((N, 3)), RNG.standard_normal((V, 3))
    loss, (dh, dW) = linear_kl_divergence(hs, Ws, ht, Wt, temperature=2.0, return_grad=True,
                                          chunk_size=4)  # fmt: skip
    H = torch.tensor(hs, requires_grad=True)
    W = torch.tensor(Ws, requires_grad=True)
    lt = F.log_softmax(torch.tensor(ht) @ torch.tensor(Wt).T / 2.0, -1)
    L = F.kl_div(F.log_softmax(H @ W.T / 2.0, -1), lt, log_target=True, reduction="batchmean")
    L.backward()
    np.testing.assert_allclose(loss, L.item(), rtol=1e-12)
    np.testing.assert_allclose(dh, H.grad.numpy(), rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(dW, W.grad.numpy(), rtol=1e-10, atol=1e-13)


def test_linear_peak_memory_below_logits():
    """Peak extra memory (tracemalloc: NumPy allocations) of the linear variants stays
    the documented two logits blocks + gradients + a [V, d] product, far below one
    [N, V] logits matrix."""
    N, d, V = 2048, 16, 4096
    hs = RNG.standard_normal((N, d)).astype(np.float32)
    Ws = RNG.standard_normal((V, d)).astype(np.float32)
    ht = RNG.standard_normal((N, d)).astype(np.float32)
    Wt = RNG.standard_normal((V, d)).astype(np.float32)
    logits_bytes = N * V * 4
    rows = 64
    linear_kl_divergence(hs[:4], Ws, ht[:4], Wt, return_grad=True)  # compile outside
    for fn in (linear_kl_divergence, linear_jensen_shannon):
        tracemalloc.start()
        try:
            fn(hs, Ws, ht, Wt, return_grad=True, chunk_size=rows)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        grads = (N * d + V * d) * 4
        blocks = 3 if fn is linear_jensen_shannon else 2
        documented = blocks * rows * V * 4 + grads + V * d * 4 + 64 * N
        assert peak <= documented * 1.1 + 65536, (fn.__name__, peak, documented)
        assert peak < logits_bytes / 4


# --------------------------------------------------------------------------- properties
_rows = hnp.arrays(
    np.float64,
    st.tuples(st.integers(1, 4), st.integers(1, 12)),
    elements=st.floats(-30, 30, allow_nan=False),
)


@given(_rows, st.data(), st.floats(0.1, 10.0))
def test_properties_kl_nonnegative_and_zero_on_self(s, data, T):
    t = data.draw(hnp.arrays(np.float64, s.shape, elements=st.floats(-30, 30)))
    for direction in ("forward", "reverse"):
        per = kl_divergence(s, t, temperature=T, direction=direction, reduction="none")
        assert np.all(per >= -1e-12)
        self_kl = kl_divergence(s, s, temperature=T, direction=direction, reduction="none")
        np.testing.assert_allclose(self_kl, 0.0, atol=1e-12)
        want = reference.kl_divergence(s, t, temperature=T, direction=direction, reduction="none")
        np.testing.assert_allclose(per, want, rtol=1e-9, atol=1e-11)


@given(_rows, st.data(), st.floats(0.01, 0.99))
def test_properties_jsd_symmetric_and_bounded(s, data, beta):
    t = data.draw(hnp.arrays(np.float64, s.shape, elements=st.floats(-30, 30)))
    a = jensen_shannon(s, t, reduction="none")
    b = jensen_shannon(t, s, reduction="none")
    np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
    assert np.all(a <= np.log(2) + 1e-12) and np.all(a >= -1e-12)
    g = jensen_shannon(s, t, beta=beta, reduction="none")
    # generalised JSD <= binary entropy of beta (the disjoint-support value)
    hb = -(beta * np.log(beta) + (1 - beta) * np.log(1 - beta))
    assert np.all(g <= hb + 1e-12) and np.all(g >= -1e-12)
    np.testing.assert_allclose(
        g, reference.jensen_shannon(s, t, beta=beta, reduction="none"), rtol=1e-9, atol=1e-11
    )


def test_linear_batch_dims_none_reduction_and_no_mutation():
    hs, Ws = RNG.standard_normal((2, 3, 4)), RNG.standard_normal((9, 4))
    ht, Wt = RNG.standard_normal((2, 3, 2)), RNG.standard_normal((9, 2))
    copies = [a.copy() for a in (hs, Ws, ht, Wt)]
    for fn, ref in (
        (linear_kl_divergence, reference.linear_kl_divergence),
        (linear_jensen_shannon, reference.linear_jensen_shannon),
    ):
        a = fn(hs, Ws, ht, Wt, reduction="none", return_grad=True, chunk_size=4)
        b = ref(hs, Ws, ht, Wt, reduction="none", return_grad=True)
        assert a[0].shape == (2, 3) and a[1][0].shape == hs.shape
        np.testing.assert_allclose(a[0], b[0], rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(a[1][0], b[1][0], rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(a[1][1], b[1][1], rtol=1e-12, atol=1e-14)
    for a, c in zip((hs, Ws, ht, Wt), copies, strict=True):
        np.testing.assert_array_equal(a, c)


@pytest.mark.parametrize("beta", [0.0, 0.4, 1.0])
def test_nan_propagates_in_every_mode(beta):
    s, t = _pair((3, 8), np.float64)
    s[1, 2] = np.nan
    t[2, 5] = np.nan
    loss, g = jensen_shannon(s, t, beta=beta, reduction="none", return_grad=True)
    assert np.isfinite(loss[0]) and np.all(np.isfinite(g[0]))
    assert np.all(np.isnan(loss[1:])) and np.all(np.isnan(g[1:]))


def test_jsd_underflowing_probabilities_take_the_exact_path():
    """M subnormal or 0 at some classes (log-probs near -745): the row is redone with
    libm and still matches the reference."""
    s = np.array([[0.0, -700.0, -740.0, -800.0, 5.0], [0.0, 1.0, 2.0, 3.0, 4.0]])
    t = np.array([[0.0, -720.0, -745.0, -760.0, 1.0], [4.0, 3.0, 2.0, 1.0, 0.0]])
    a = jensen_shannon(s, t, beta=0.3, reduction="none", return_grad=True)
    b = reference.jensen_shannon(s, t, beta=0.3, reduction="none", return_grad=True)
    np.testing.assert_allclose(a[0], b[0], rtol=1e-12, atol=1e-300)
    np.testing.assert_allclose(a[1], b[1], rtol=1e-12, atol=1e-300)


_special = st.one_of(st.floats(-50, 50), st.just(-np.inf))


@given(
    hnp.arrays(np.float64, st.tuples(st.integers(1, 4), st.integers(1, 9)), elements=_special),
    st.data(),
    st.sampled_from([("kl", "forward"), ("kl", "reverse"), ("jsd", 0.25), ("jsd", 0.5)]),
    st.sampled_from([np.float32, np.float64]),
)
def test_matches_reference_with_inf_and_masks(s, data, which, dtype):
    """-inf entries in either model and random masks: every mode equals the float64
    twin (loss and gradient, including +inf losses and non-finite gradients)."""
    t = data.draw(hnp.arrays(np.float64, s.shape, elements=_special))
    mask = data.draw(hnp.arrays(np.bool_, s.shape))
    s, t = s.astype(dtype), t.astype(dtype)
    kind, opt = which
    kw = dict(where=mask, reduction="none", return_grad=True, temperature=0.9)
    if kind == "kl":
        a = kl_divergence(s, t, direction=opt, **kw)
        b = reference.kl_divergence(s, t, direction=opt, **kw)
    else:
        a = jensen_shannon(s, t, beta=opt, **kw)
        b = reference.jensen_shannon(s, t, beta=opt, **kw)
    tol = dict(rtol=1e-9, atol=1e-10) if dtype == np.float64 else dict(rtol=2e-4, atol=2e-5)
    np.testing.assert_allclose(a[0], b[0], **tol)
    # the reverse KL's gradient is undefined on rows where the loss is +inf
    # (documented): compare the others, and require a non-finite entry there
    undefined = np.isinf(b[0]) if opt == "reverse" else np.zeros(b[0].shape, bool)
    np.testing.assert_allclose(a[1][~undefined], b[1][~undefined], **tol)
    assert np.all(~np.all(np.isfinite(a[1][undefined]), axis=-1))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_underflowed_weight_against_minus_inf(dtype):
    """A probability too small for the dtype (float32 exp flushes below FLT_MIN,
    float64 below ~5e-324) is still positive: against a -inf log-probability the KL
    term is +inf, not 0 (found by hypothesis: s = [-48, 31], t = [-inf, 0], T = 0.9)."""
    big = 79.0 if dtype == np.float32 else 800.0
    s = np.array([[0.0, big]], dtype=dtype)
    t = np.array([[-np.inf, 0.0]], dtype=dtype)
    assert kl_divergence(s, t, direction="reverse", reduction="none")[0] == np.inf
    assert kl_divergence(t, s, direction="forward", reduction="none")[0] == np.inf
    assert reference.kl_divergence(s, t, direction="reverse", reduction="none")[0] == np.inf
