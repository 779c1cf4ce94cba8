"""logcumsumexp and logmatmulexp: against the float64 reference twins, mpmath, the
naive float64 forms and PyTorch autograd; the edge-case contract; bad input."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.exceptions import AxisError

import softmaxkit._kernels._parallel as par
from softmaxkit import logcumsumexp, logcumsumexp_vjp, logmatmulexp, logmatmulexp_vjp
from softmaxkit import reference as ref

mpmath = pytest.importorskip("mpmath")


def _rng(seed=0):
    return np.random.default_rng(seed)


# --------------------------------------------------------------------------- logcumsumexp
@pytest.mark.parametrize("shape", [(0,), (1,), (7,), (3, 300), (4, 5, 6), (2, 0, 3)])
@pytest.mark.parametrize("reverse", [False, True])
def test_logcumsumexp_matches_reference_every_axis(shape, reverse):
    x = _rng().standard_normal(shape) * 20
    for axis in range(-len(shape), len(shape)):
        got = logcumsumexp(x, axis=axis, reverse=reverse)
        want = ref.logcumsumexp(x, axis=axis, reverse=reverse)
        np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-13)


def test_logcumsumexp_matches_numpy_accumulate_and_torch():
    torch = pytest.importorskip("torch")
    x = _rng(1).standard_normal((5, 1000)) * 30
    got = logcumsumexp(x)
    np.testing.assert_allclose(got, np.logaddexp.accumulate(x, axis=1), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got, torch.logcumsumexp(torch.tensor(x), 1).numpy(), rtol=1e-12)


def _mp_prefix(v, idx):
    """mpmath log of the prefix sums of exp(v) at the positions ``idx`` (50 digits)."""
    out = {}
    want = set(idx)
    with mpmath.workdps(50):
        tot = mpmath.mpf(0)
        for j, x in enumerate(v.tolist()):
            tot += mpmath.exp(mpmath.mpf(x))
            if j in want:
                out[j] = float(mpmath.log(tot))
    return np.array([out[j] for j in idx])


def test_logcumsumexp_float64_within_1e13_of_mpmath_adversarial():
    # a row of 10^5 values spread over 700 units: decreasing blocks, long flat runs,
    # new maxima late (the state is rescaled), and a row of length 1
    rng = _rng(2)
    n = 100_000
    v = rng.uniform(-700, 0, n)
    v[50_000:50_010] = 5.0  # late maxima
    v[60_000:] = rng.uniform(-1, 0, n - 60_000)  # a long run of comparable terms
    idx = [0, 1, 9, 999, 49_999, 50_000, 50_005, 59_999, 70_000, n - 1]
    got = logcumsumexp(v)[idx]
    want = _mp_prefix(v, idx)
    np.testing.assert_allclose(got, want, rtol=1e-13, atol=0)
    # reverse, float32 within its contract (1e-6 (1 + |v|))
    got_r = logcumsumexp(v, reverse=True)[::-1][idx]
    want_r = _mp_prefix(v[::-1], idx)
    np.testing.assert_allclose(got_r, want_r, rtol=1e-13)
    v32 = v.astype(np.float32)
    got32 = logcumsumexp(v32)[idx].astype(np.float64)
    want32 = _mp_prefix(v32.astype(np.float64), idx)
    assert np.all(np.abs(got32 - want32) <= 1e-6 * (1 + np.abs(want32)))
    assert logcumsumexp(np.array([-650.5])) == -650.5


def test_logcumsumexp_special_values():
    inf, nan = np.inf, np.nan
    x = np.array([-inf, -inf, 1.0, -inf, inf, 2.0, inf, nan, 3.0])
    got = logcumsumexp(x)
    np.testing.assert_array_equal(got[:2], [-inf, -inf])  # no NaN from -inf - -inf
    assert got[2] == 1.0 and got[3] == 1.0
    np.testing.assert_array_equal(got[4:7], [inf, inf, inf])
    assert np.isnan(got[7:]).all()
    r = logcumsumexp(x, reverse=True)
    assert np.isnan(r[:8]).all() and r[8] == 3.0
    # all -inf, both dtypes, both directions
    for dt in (np.float32, np.float64):
        for rev in (False, True):
            np.testing.assert_array_equal(
                logcumsumexp(np.full(5, -inf, dt), reverse=rev), np.full(5, -inf, dt)
            )
    np.testing.assert_array_equal(logcumsumexp(np.array([inf, -inf, inf])), [inf, inf, inf])


def test_logcumsumexp_where_equals_deleting():
    rng = _rng(3)
    x = rng.standard_normal((4, 50)) * 5
    w = rng.random((4, 50)) < 0.6
    w[0] = False  # fully masked row
    got = logcumsumexp(x, where=w)
    np.testing.assert_allclose(got, ref.logcumsumexp(np.where(w, x, -np.inf)), rtol=1e-13)
    np.testing.assert_array_equal(got[0], -np.inf)
    # masked NaN is ignored
    xn = x.copy()
    xn[~w] = np.nan
    np.testing.assert_array_equal(logcumsumexp(xn, where=w), got)


def test_logcumsumexp_blocked_parallel_path_matches_serial(monkeypatch):
    # long rows are cut into blocks scanned from merged block states
    import softmaxkit.scan as scan

    rng = _rng(4)
    x = rng.standard_normal((2, 5003)) * 10
    x[0, 4000:] -= 800  # a block far below the carry
    x[1, :2000] = -np.inf  # blocks of -inf first
    x[1, 3000] = np.inf
    serial = logcumsumexp(x)
    for rev in (False, True):
        monkeypatch.setattr(scan, "_MIN_BLOCK", 100)
        monkeypatch.setattr(par, "threads_for", lambda size, itemsize=4: 4)
        got = logcumsumexp(x, reverse=rev)
        x32 = logcumsumexp(x.astype(np.float32), reverse=rev)
        monkeypatch.undo()
        want = serial if not rev else logcumsumexp(x, reverse=True)
        np.testing.assert_allclose(got, want, rtol=1e-13)
        np.testing.assert_array_equal(np.isinf(got), np.isinf(want))
        np.testing.assert_allclose(x32, logcumsumexp(x.astype(np.float32), reverse=rev), 1e-6)


def test_logcumsumexp_dtypes_out_and_no_mutation():
    x = _rng(5).standard_normal((3, 40)).astype(np.float32)
    before = x.copy()
    y = logcumsumexp(x)
    assert y.dtype == np.float32
    np.testing.assert_array_equal(x, before)
    assert logcumsumexp(x.astype(np.float16)).dtype == np.float16
    assert logcumsumexp(np.arange(4)).dtype == np.float64
    d = logcumsumexp(x, dtype=np.float64)
    np.testing.assert_allclose(d, ref.logcumsumexp(x), rtol=1e-12)
    out = np.empty((3, 40), np.float32)
    assert logcumsumexp(x, out=out) is out
    np.testing.assert_array_equal(out, y)
    outF = np.empty((40, 3), np.float32).T  # not C-contiguous along the axis
    assert logcumsumexp(x, out=outF) is outF
    np.testing.assert_array_equal(outF, y)
    xF = np.asfortranarray(x)
    np.testing.assert_array_equal(logcumsumexp(xF, axis=0), logcumsumexp(x, axis=0))
    assert logcumsumexp(np.float64(2.5)) == 2.5


def test_logcumsumexp_bad_input():
    x = np.zeros((2, 3))
    with pytest.raises(AxisError):
        logcumsumexp(x, axis=2)
    with pytest.raises(TypeError, match="axis must be an int"):
        logcumsumexp(x, axis=(0, 1))
    with pytest.raises(TypeError, match="axis must be an int"):
        logcumsumexp(x, axis=None)
    with pytest.raises(ValueError, match="where with shape"):
        logcumsumexp(x, where=np.ones(4, bool))
    with pytest.raises(ValueError, match="out has shape"):
        logcumsumexp(x, out=np.empty(3))
    with pytest.raises(TypeError, match="complex"):
        logcumsumexp(np.zeros(3, complex))
    with pytest.raises(ValueError, match="g has shape"):
        logcumsumexp_vjp(x, np.zeros(3))


@pytest.mark.parametrize("reverse", [False, True])
def test_logcumsumexp_vjp_matches_torch_and_central_differences(reverse):
    torch = pytest.importorskip("torch")
    rng = _rng(6)
    x = rng.standard_normal((3, 60)) * 8
    g = rng.standard_normal((3, 60))
    got = logcumsumexp_vjp(x, g, reverse=reverse)
    xt = torch.tensor(x, requires_grad=True)
    y = torch.logcumsumexp(xt.flip(1), 1).flip(1) if reverse else torch.logcumsumexp(xt, 1)
    y.backward(torch.tensor(g))
    np.testing.assert_allclose(got, xt.grad.numpy(), rtol=1e-9, atol=1e-12)
    # central differences on a small row, axis 0
    x0 = rng.standard_normal((6, 2))
    g0 = rng.standard_normal((6, 2))
    num = np.empty_like(x0)
    h = 1e-6
    for idx in np.ndindex(*x0.shape):
        e = np.zeros_like(x0)
        e[idx] = h
        f = lambda z: np.sum(g0 * ref.logcumsumexp(z, axis=0, reverse=reverse))  # noqa: E731
        num[idx] = (f(x0 + e) - f(x0 - e)) / (2 * h)
    np.testing.assert_allclose(logcumsumexp_vjp(x0, g0, axis=0, reverse=reverse), num, atol=1e-8)


def test_logcumsumexp_vjp_special_values():
    inf = np.inf
    g = np.ones(6)
    # -inf entries get 0; the prefix before them is not NaN
    got = logcumsumexp_vjp(np.array([-inf, -inf, 0.0, -inf, 0.0, 0.0]), g)
    np.testing.assert_allclose(got, [0, 0, 2 + 1 / 2 + 1 / 3, 0, 1 / 2 + 1 / 3, 1 / 3])
    # +inf: each prefix's gradient goes to its +inf entries as g / count
    got = logcumsumexp_vjp(np.array([0.0, inf, 1.0, inf, 2.0, 3.0]), g)
    np.testing.assert_allclose(got, [1.0, 1 + 1 + 3 / 2, 0, 3 / 2, 0, 0])
    assert np.isnan(logcumsumexp_vjp(np.array([0.0, np.nan, 1.0]), np.ones(3))).all()
    w = np.array([True, False, True])
    got = logcumsumexp_vjp(np.array([0.0, 5.0, 0.0]), np.ones(3), where=w)
    np.testing.assert_allclose(got, [2.5, 0.0, 0.5])


# --------------------------------------------------------------------------- logmatmulexp
@pytest.fixture(params=["tiles", "direct"])
def lme_path(request, monkeypatch):
    """Both routes of logmatmulexp: the blockwise tiles through BLAS, and every entry
    directly (``_kernels.lme.direct_batched``, taken for small products)."""
    import softmaxkit.drivers.eager_segments as es

    monkeypatch.setattr(es, "_DIRECT_MAX", 0 if request.param == "tiles" else 1 << 40)
    return request.param


def _naive(A, B):
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        return np.log(np.exp(A) @ np.exp(B))


@pytest.mark.parametrize("shape", [(1, 1, 1), (3, 5, 4), (70, 300, 90), (257, 513, 3)])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_logmatmulexp_matches_naive_float64(shape, dtype, lme_path):
    I, J, K = shape
    rng = _rng(7)
    A = (rng.standard_normal((I, J)) * 4).astype(dtype)
    B = (rng.standard_normal((J, K)) * 4).astype(dtype)
    got = logmatmulexp(A, B)
    assert got.dtype == dtype and got.shape == (I, K)
    want = _naive(A.astype(np.float64), B.astype(np.float64))
    if dtype == np.float64:
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    else:
        assert np.all(np.abs(got - want) <= 1e-5 * (1 + np.abs(want)))


def test_logmatmulexp_batched_and_broadcast(lme_path):
    rng = _rng(8)
    A = rng.standard_normal((2, 3, 4, 5))
    B = rng.standard_normal((3, 5, 6))
    got = logmatmulexp(A, B)
    assert got.shape == (2, 3, 4, 6)
    np.testing.assert_allclose(got, ref.logmatmulexp(A, B), rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(got, _naive(A, B), rtol=1e-12)
    out = np.empty((2, 3, 4, 6))
    assert logmatmulexp(A, B, out=out) is out
    np.testing.assert_array_equal(out, got)


def test_logmatmulexp_underflow_fallback_and_overflow(lme_path):
    # values spread over 700 units: exp(A - a_i) exp(B - b_k) underflows for the
    # pairs that dominate some entries; the directly recomputed entries are exact
    rng = _rng(9)
    A = rng.uniform(-700, 0, (40, 300))
    B = rng.uniform(-700, 0, (300, 30))
    A[:, :5] = 0.0  # the row max comes from columns that B makes tiny
    B[:5, :] = -740.0
    got = logmatmulexp(A, B)
    want = ref.logmatmulexp(A, B)
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, want, rtol=1e-13)
    # naive overflows (inf) where ours stays finite and right
    A2 = rng.standard_normal((4, 6)) + 800
    B2 = rng.standard_normal((6, 3)) + 800
    assert np.isinf(_naive(A2, B2)).all()
    np.testing.assert_allclose(logmatmulexp(A2, B2), ref.logmatmulexp(A2, B2), rtol=1e-14)
    np.testing.assert_allclose(
        logmatmulexp(A2 - 1600, B2 - 1600), ref.logmatmulexp(A2 - 1600, B2 - 1600), rtol=1e-14
    )


def test_logmatmulexp_special_values(lme_path):
    inf, nan = np.inf, np.nan
    A = np.array([[0.0, 1.0], [-inf, -inf], [inf, 0.0], [nan, 0.0]])
    B = np.array([[0.0, -inf], [1.0, -inf]])
    got = logmatmulexp(A, B)
    with np.errstate(invalid="ignore"):
        want = ref.logmatmulexp(A, B)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_allclose(got[~np.isnan(got)], want[~np.isnan(want)])
    assert got[1].tolist() == [-inf, -inf] and got[2, 0] == inf
    assert np.isnan(got[3]).all() and np.isnan(got[2, 1])  # inf + -inf
    np.testing.assert_array_equal(logmatmulexp(np.zeros((2, 0)), np.zeros((0, 3))), -inf)
    assert logmatmulexp(np.zeros((0, 4)), np.zeros((4, 3))).shape == (0, 3)


def test_logmatmulexp_bad_input():
    with pytest.raises(ValueError, match="must match"):
        logmatmulexp(np.zeros((2, 3)), np.zeros((4, 2)))
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        logmatmulexp(np.zeros(3), np.zeros((3, 2)))
    with pytest.raises(ValueError, match="do not broadcast"):
        logmatmulexp(np.zeros((2, 2, 3)), np.zeros((3, 3, 2)))
    with pytest.raises(ValueError, match="out has shape"):
        logmatmulexp(np.zeros((2, 3)), np.zeros((3, 2)), out=np.empty((3, 3)))
    with pytest.raises(ValueError, match="G has shape"):
        logmatmulexp_vjp(np.zeros((2, 3)), np.zeros((3, 2)), np.zeros((3, 3)))


def test_logmatmulexp_vjp_matches_torch_and_central_differences():
    torch = pytest.importorskip("torch")
    rng = _rng(10)
    A = rng.standard_normal((2, 5, 7)) * 4
    B = rng.standard_normal((7, 6)) * 4
    G = rng.standard_normal((2, 5, 6))
    gA, gB = logmatmulexp_vjp(A, B, G)
    At = torch.tensor(A, requires_grad=True)
    Bt = torch.tensor(B, requires_grad=True)
    torch.logsumexp(At[..., :, :, None] + Bt[..., None, :, :], -2).backward(torch.tensor(G))
    np.testing.assert_allclose(gA, At.grad.numpy(), rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(gB, Bt.grad.numpy(), rtol=1e-10, atol=1e-13)
    # the directly recomputed entries (far below a_i + b_k) take their terms directly
    A1 = np.array([[0.0, -700.0], [-5.0, 1.0]])
    B1 = np.array([[-700.0, 0.0], [0.0, 2.0]])
    G1 = rng.standard_normal((2, 2))
    gA1, gB1 = logmatmulexp_vjp(A1, B1, G1)
    h = 1e-6
    for X, gX, which in ((A1, gA1, 0), (B1, gB1, 1)):
        for idx in np.ndindex(*X.shape):
            e = np.zeros_like(X)
            e[idx] = h
            args_p = (A1 + e, B1) if which == 0 else (A1, B1 + e)
            args_m = (A1 - e, B1) if which == 0 else (A1, B1 - e)
            num = (
                np.sum(G1 * ref.logmatmulexp(*args_p)) - np.sum(G1 * ref.logmatmulexp(*args_m))
            ) / (2 * h)
            assert abs(num - gX[idx]) < 1e-7, (which, idx, num, gX[idx])
