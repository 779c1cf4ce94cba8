"""Tests of softmaxkit.grad: VJPs, JVP, Jacobian and layers vs PyTorch autograd."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import softmaxkit as sk
from softmaxkit import reference as ref

torch = pytest.importorskip("torch")


def _rng(seed=0):
    return np.random.default_rng(seed)


def _torch_axis(axis, ndim):
    return tuple(a % ndim for a in axis) if isinstance(axis, tuple) else axis


def _torch_softmax(xt, axis, T, log):
    # softmax over several axes jointly: logsumexp over the tuple
    v = xt / T
    lse = torch.logsumexp(v, dim=axis, keepdim=True)
    ls = v - lse
    return ls if log else torch.exp(ls)


AXES = [-1, 0, 1, (0, 2)]


@pytest.mark.parametrize("axis", AXES)
@pytest.mark.parametrize("T", [1.0, 0.6])
@pytest.mark.parametrize("log", [False, True])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_vjp_vs_torch(axis, T, log, dtype):
    rng = _rng(1)
    x = (rng.normal(size=(3, 4, 5)) * 3).astype(dtype)
    g = rng.normal(size=x.shape).astype(dtype)
    xt = torch.tensor(x, requires_grad=True)
    yt = _torch_softmax(xt, _torch_axis(axis, 3), T, log)
    yt.backward(torch.tensor(g))
    fwd = sk.log_softmax if log else sk.softmax
    vjp = sk.log_softmax_vjp if log else sk.softmax_vjp
    y = fwd(x, axis=axis, temperature=T)
    dx = vjp(y, g, axis=axis, temperature=T)
    assert dx.dtype == dtype
    tol = 1e-12 if dtype == np.float64 else 3e-6
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=tol, atol=tol)
    # float64 reference twins (from the input, via the dense Jacobian)
    rvjp = ref.log_softmax_vjp if log else ref.softmax_vjp
    np.testing.assert_allclose(
        rvjp(x.astype(np.float64), g, axis=axis, temperature=T),
        xt.grad.numpy(),
        rtol=max(tol, 1e-11),
        atol=max(tol, 1e-11),
    )


@pytest.mark.parametrize("keepdims", [False, True])
@pytest.mark.parametrize("axis", [-1, (0, 1)])
def test_logsumexp_vjp_vs_torch(axis, keepdims):
    rng = _rng(2)
    x = rng.normal(size=(3, 4, 5))
    xt = torch.tensor(x, requires_grad=True)
    out = torch.logsumexp(xt / 0.7, dim=_torch_axis(axis, 3), keepdim=keepdims)
    g = rng.normal(size=tuple(out.shape))
    out.backward(torch.tensor(g))
    dx = sk.logsumexp_vjp(x, g, axis=axis, keepdims=keepdims, temperature=0.7)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(
        ref.logsumexp_vjp(x, g, axis=axis, keepdims=keepdims, temperature=0.7),
        xt.grad.numpy(),
        rtol=1e-12,
    )


def test_logsumexp_vjp_with_b_vs_finite_differences():
    rng = _rng(3)
    x = rng.normal(size=(2, 4))
    b = np.array([1.0, -0.5, 2.0, 0.0])
    g = np.array([0.3, -1.2])
    dx = sk.logsumexp_vjp(x, g, b=b)
    h = 1e-6
    fd = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        xp, xm = x.copy(), x.copy()
        xp[idx] += h
        xm[idx] -= h
        fp = sk.logsumexp(xp, b=b, return_sign=True)[0]
        fm = sk.logsumexp(xm, b=b, return_sign=True)[0]
        fd[idx] = np.sum(g * (fp - fm)) / (2 * h)
    np.testing.assert_allclose(dx, fd, rtol=1e-6, atol=1e-9)


def test_masked_and_empty_rows_give_zero_not_nan():
    x = np.array([[1.0, 2.0, 3.0], [-np.inf, -np.inf, -np.inf], [0.5, 0.1, 0.2]])
    where = np.array([[True, False, True], [True, True, True], [False, False, False]])
    g = np.array([[1.0, np.inf, -2.0], [np.inf, 1.0, 2.0], [np.nan, 1.0, np.inf]])
    for log in (False, True):
        fwd = sk.log_softmax if log else sk.softmax
        vjp = sk.log_softmax_vjp if log else sk.softmax_vjp
        y = fwd(x, where=where)
        dx = vjp(y, g, where=where)
        assert np.all(dx[1:] == 0), (log, dx)
        assert dx[0, 1] == 0
        # row 0 equals the VJP of the two included entries alone
        y0 = fwd(x[0, [0, 2]])
        np.testing.assert_allclose(dx[0, [0, 2]], vjp(y0, g[0, [0, 2]]))
    dl = sk.logsumexp_vjp(x, np.ones(3), where=where)
    assert np.all(dl[1:] == 0)
    # PyTorch gives NaN for the all -inf row (pytorch#31829)
    xt = torch.tensor(x[1:2], requires_grad=True)
    torch.softmax(xt, -1).sum().backward()
    assert np.isnan(xt.grad.numpy()).all()


def test_jvp_vs_torch():
    rng = _rng(4)
    x = rng.normal(size=(3, 6))
    v = rng.normal(size=x.shape)
    y, dy = sk.softmax_jvp(x, v, temperature=1.5)
    # torch.autograd.functional.jvp (double-backward trick; torch.func.jvp warns)
    ty, tdy = torch.autograd.functional.jvp(
        lambda a: torch.softmax(a / 1.5, -1), torch.tensor(x), torch.tensor(v)
    )
    np.testing.assert_allclose(y, ty.numpy(), rtol=1e-14)
    np.testing.assert_allclose(dy, tdy.numpy(), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("axis", [-1, 0, (0, 2)])
def test_jacobian_vs_torch(axis):
    rng = _rng(5)
    x = rng.normal(size=(2, 3, 4))
    J = sk.softmax_jacobian(x, axis=axis, temperature=0.8)
    np.testing.assert_allclose(J, ref.softmax_jacobian(x, axis=axis, temperature=0.8), rtol=1e-13)
    # per-row comparison with torch's dense Jacobian
    from softmaxkit._core.validate import normalize_axis
    from softmaxkit.drivers.eager import rows_view

    axes = normalize_axis(axis, 3)
    rows = rows_view(x, axes)
    n = rows.shape[1]
    Jr = J.reshape(-1, n, n)
    for i, r in enumerate(rows):
        tj = torch.autograd.functional.jacobian(
            lambda a: torch.softmax(a / 0.8, -1), torch.tensor(np.ascontiguousarray(r))
        )
        np.testing.assert_allclose(Jr[i], tj.numpy(), rtol=1e-12, atol=1e-15)
    batch = tuple(s for i, s in enumerate(x.shape) if i not in axes)
    assert J.shape == (*batch, n, n)


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 8), seed=st.integers(0, 2**16), T=st.floats(0.2, 5.0))
def test_vjp_equals_jacobian_transpose_product(n, seed, T):
    rng = _rng(seed)
    x = rng.normal(size=(2, n)) * 4
    g = rng.normal(size=(2, n))
    J = sk.softmax_jacobian(x, temperature=T)
    y = sk.softmax(x, temperature=T)
    np.testing.assert_allclose(
        sk.softmax_vjp(y, g, temperature=T), np.einsum("rij,ri->rj", J, g), atol=1e-13
    )
    # the Jacobian is symmetric, rows sum to 0
    np.testing.assert_allclose(J, np.swapaxes(J, -1, -2), atol=1e-15)
    np.testing.assert_allclose(J.sum(-1), 0, atol=1e-14)


def test_layers_true_gradients():
    rng = _rng(6)
    x = rng.normal(size=(4, 5))
    g = rng.normal(size=(4, 5))
    t = rng.integers(0, 5, 4)
    xt = torch.tensor(x, requires_grad=True)
    torch.softmax(xt, 1).backward(torch.tensor(g))
    layer = sk.Softmax(axis=1)
    layer.forward(x)
    np.testing.assert_allclose(layer.backward(g), xt.grad.numpy(), rtol=1e-12)
    assert not np.allclose(layer.backward(g), g)  # not the seed's pass-through shortcut
    # LogSoftmax + NLL chained == CrossEntropyLoss
    ls = sk.LogSoftmax()
    y = ls.forward(x)
    onehot = np.eye(5)[t]
    nll_grad = -onehot / 4
    ce = sk.CrossEntropyLoss()
    loss = ce.forward(x, t)
    np.testing.assert_allclose(loss, -(y * onehot).sum() / 4)
    np.testing.assert_allclose(ls.backward(nll_grad), ce.backward(), atol=1e-15)
    # reduction="none": backward takes one upstream value per sample
    cen = sk.CrossEntropyLoss(reduction="none", label_smoothing=0.1)
    cen.forward(x, t)
    up = rng.normal(size=4)
    xt = torch.tensor(x, requires_grad=True)
    torch.nn.functional.cross_entropy(
        xt, torch.tensor(t), reduction="none", label_smoothing=0.1
    ).backward(torch.tensor(up))
    np.testing.assert_allclose(cen.backward(up), xt.grad.numpy(), rtol=1e-12)
    with pytest.raises(RuntimeError, match="before forward"):
        sk.Softmax().backward(g)
    with pytest.raises(TypeError, match="return_grad"):
        sk.CrossEntropyLoss(return_grad=True)


def test_grad_errors_and_no_mutation():
    y = sk.softmax(np.array([[1.0, 2.0], [3.0, 4.0]]))
    y.setflags(write=False)
    g = np.ones((2, 2))
    g.setflags(write=False)
    y0 = y.copy()
    sk.softmax_vjp(y, g)
    sk.log_softmax_vjp(np.log(y), g)
    np.testing.assert_array_equal(y, y0)
    with pytest.raises(ValueError, match="cannot be broadcast"):
        sk.softmax_vjp(y, np.ones(3))
    with pytest.raises(ValueError, match="temperature"):
        sk.softmax_vjp(y, g, temperature=-1)
    out = np.empty((2, 2))
    assert sk.softmax_vjp(y, g, out=out) is out
    with pytest.raises(ValueError, match="out has shape"):
        sk.softmax_vjp(y, g, out=np.empty(3))


@pytest.mark.parametrize("log", [False, True])
def test_vjp_writes_out_in_place(log):
    # C-contiguous rows are written straight into out (no temporary); out may be y or
    # g itself, but an out that overlaps y shifted by a row must not be written in place
    rng = _rng(7)
    fwd = sk.log_softmax if log else sk.softmax
    vjp = sk.log_softmax_vjp if log else sk.softmax_vjp
    x = rng.normal(size=(6, 5))
    y = fwd(x)
    g = rng.normal(size=x.shape)
    want = vjp(y, g, out=np.empty_like(y), axis=1)
    np.testing.assert_allclose(want, ref.log_softmax_vjp(x, g) if log else ref.softmax_vjp(x, g))
    np.testing.assert_array_equal(vjp(y, g), want)
    np.testing.assert_array_equal(vjp(y, g, axis=0), vjp(y.T.copy(), g.T.copy()).T)
    for target in ("y", "g"):
        yy, gg = y.copy(), g.copy()
        res = vjp(yy, gg, out=yy if target == "y" else gg)
        np.testing.assert_array_equal(res, want)
    buf = np.empty((7, 5))
    buf[:-1] = y
    yy, out = buf[:-1], buf[1:]
    np.testing.assert_array_equal(vjp(yy, g, out=out), want)
    o32 = np.empty((6, 5), dtype=np.float32)
    np.testing.assert_allclose(
        vjp(y.astype(np.float32), g.astype(np.float32), out=o32), want, rtol=1e-5, atol=1e-6
    )


def test_vjp_peak_memory():
    # C-contiguous y and g reduced over the last axis: nothing beyond the output
    # (was a temporary of y's size plus a copy of g, made read-only by broadcast_to)
    import tracemalloc

    y = sk.softmax(_rng(8).normal(size=(256, 2048)))
    g = np.ones_like(y)
    out = np.empty_like(y)
    calls = {
        "softmax_vjp out=": (lambda: sk.softmax_vjp(y, g, out=out), 0),
        "log_softmax_vjp out=": (lambda: sk.log_softmax_vjp(y, g, out=out), 0),
        "softmax_vjp": (lambda: sk.softmax_vjp(y, g), y.nbytes),
    }
    for name, (call, allowed) in calls.items():
        call()
        tracemalloc.start()
        try:
            call()
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak <= allowed + 65536, (name, peak / y.nbytes)


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("log", [False, True])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_vjp_long_rows_with_special_entries(dtype, log, masked):
    # rows long enough for the vectorised loops (and their remainders), with -inf
    # logits (y = 0 / log y = -inf) where g is inf, masked entries, and an all -inf
    # row: the float64 formula of the documented contract
    rng = _rng(9)
    x = rng.normal(size=(5, 203)) * 4
    x[:, ::7] = -np.inf
    x[3] = -np.inf
    g = rng.normal(size=x.shape)
    g[:, ::7] = np.inf
    where = rng.random(x.shape) < 0.8 if masked else None
    keep = np.ones(x.shape, bool) if where is None else where
    T = 0.8
    fwd = sk.log_softmax if log else sk.softmax
    vjp = sk.log_softmax_vjp if log else sk.softmax_vjp
    y = fwd(x.astype(dtype), temperature=T, where=where)
    y64 = y.astype(np.float64)
    g = g.astype(dtype).astype(np.float64)
    with np.errstate(invalid="ignore"):
        if log:
            acc = np.where(keep, g, 0).sum(-1, keepdims=True)
            alive = (keep & (y64 != -np.inf)).any(-1, keepdims=True)
            want = np.where(keep & alive, (g - np.exp(y64) * acc) / T, 0.0)
        else:
            k = keep & (y64 != 0)
            acc = np.where(k, g * y64, 0).sum(-1, keepdims=True)
            want = np.where(k, y64 * (g - acc) / T, 0.0)
    got = vjp(y, g.astype(dtype), temperature=T, where=where)
    assert got.dtype == dtype
    assert np.array_equal(np.isnan(got), np.isnan(want))
    tol = 1e-12 if dtype == np.float64 else 2e-6
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol)
    assert np.all(got[3] == 0)


def test_logsumexp_vjp_dtypes_errors_and_memory():
    import tracemalloc

    rng = _rng(10)
    x = rng.normal(size=(4, 7)) * 3
    g = rng.normal(size=4)
    want = ref.logsumexp_vjp(x, g, temperature=0.7)
    for dtype, tol in ((np.float64, 1e-13), (np.float32, 1e-6), (np.float16, 2e-3)):
        xd = x.astype(dtype)
        x0 = xd.copy()
        got = sk.logsumexp_vjp(xd, g, temperature=0.7)
        assert got.dtype == dtype
        np.testing.assert_array_equal(xd, x0)
        want_d = ref.logsumexp_vjp(xd.astype(np.float64), g, temperature=0.7)
        np.testing.assert_allclose(got, want_d, rtol=tol, atol=tol)
    np.testing.assert_allclose(
        sk.logsumexp_vjp(x, g[:, None], keepdims=True), ref.logsumexp_vjp(x, g)
    )
    np.testing.assert_allclose(sk.logsumexp_vjp(x, g, temperature=0.7), want, rtol=1e-13)
    for bad in (np.ones(5), np.ones((2, 4))):
        with pytest.raises(ValueError, match="does not match the reduced shape"):
            sk.logsumexp_vjp(x, bad)
        with pytest.raises(ValueError, match="does not match the reduced shape"):
            sk.logsumexp_vjp(x, bad, b=np.ones(7))
    big = rng.normal(size=(256, 2048))
    gb = np.ones(256)
    sk.logsumexp_vjp(big, gb, temperature=2.0)
    tracemalloc.start()
    try:
        sk.logsumexp_vjp(big, gb, temperature=2.0)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak <= big.nbytes + 65536, peak / big.nbytes  # the output alone (was 4x)


@pytest.mark.parametrize("log", [False, True])
@pytest.mark.parametrize("T", [1.0, 0.5])
def test_vjp_reference_twin_agrees_on_contract_rows(log, T):
    # the float64 reference twins (from x) and the kernels (from y) on the contract's
    # special rows: a NaN row's gradient is NaN (the reference log_softmax_vjp gave 0),
    # an all -inf or fully masked row's is 0, +inf entries share the row's mass
    from softmaxkit import log_softmax, log_softmax_vjp, softmax, softmax_vjp

    inf, nan = np.inf, np.nan
    x = np.array(
        [
            [0.5, -1.0, 2.0, 0.0],
            [1.0, nan, 2.0, 0.0],
            [-inf, -inf, -inf, -inf],
            [inf, 0.0, inf, 1.0],
            [3.0, -inf, 1.0, 2.0],
            [7.0, 6.0, 5.0, 4.0],
        ]
    )
    where = np.ones_like(x, bool)
    where[5] = False
    g = np.array([[1.0, -2.0, 0.5, 3.0]] * x.shape[0])
    fwd, vjp = (log_softmax, log_softmax_vjp) if log else (softmax, softmax_vjp)
    rvjp = ref.log_softmax_vjp if log else ref.softmax_vjp
    with np.errstate(invalid="ignore"):
        got = vjp(fwd(x, temperature=T, where=where), g, temperature=T, where=where)
        want = rvjp(x, g, temperature=T, where=where)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    assert np.isnan(want[1]).all()
    assert (want[2] == 0).all() and (want[5] == 0).all()
    ok = ~np.isnan(want)
    np.testing.assert_allclose(got[ok], want[ok], rtol=1e-13, atol=1e-15)
