"""Signed ``logmatmulexp`` (``a_sign`` / ``b_sign`` / ``return_sign``) and its VJP:
against the float64 ``math.fsum`` reference, mpmath on cancelling sums, the edge
cases of ``scipy.special.logsumexp(b=..., return_sign=True)``, torch autograd and
central differences; the torch operator and its device check."""

import math

import mpmath
import numpy as np
import pytest
import scipy.special

import softmaxkit as sk
from softmaxkit import reference as ref

RNG = np.random.default_rng(22)


def _signed_case(shape_a, shape_b, dtype=np.float64, zeros=0.1, rng=RNG):
    A = (rng.standard_normal(shape_a) * 3).astype(dtype)
    B = (rng.standard_normal(shape_b) * 3).astype(dtype)
    p = [(1 - zeros) / 2, (1 - zeros) / 2, zeros]
    sA = rng.choice([-1.0, 1.0, 0.0], size=shape_a, p=p)
    sB = rng.choice([-2.5, 0.5, 0.0], size=shape_b, p=p)  # only the sign is read
    return A, B, sA, sB


def _linear(c, s):
    with np.errstate(over="ignore"):
        return np.exp(c.astype(np.float64)) * s


SHAPES = [
    ((3, 4), (4, 5)),
    ((1, 1), (1, 1)),
    ((5, 300), (300, 7)),  # two blocks of the contracted axis
    ((2, 3, 6), (6, 4)),  # batch broadcast
    ((2, 1, 5, 6), (3, 6, 2)),
    ((260, 3), (3, 2)),  # two tiles of A's rows
]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize(("sa", "sb"), SHAPES)
def test_signed_matches_fsum_reference(sa, sb, dtype):
    A, B, sA, sB = _signed_case(sa, sb, dtype)
    c, s = sk.logmatmulexp(A, B, a_sign=sA, b_sign=sB, return_sign=True)
    cr, sr = ref.logmatmulexp(A, B, a_sign=sA, b_sign=sB, return_sign=True)
    assert c.dtype == s.dtype == dtype
    assert c.shape == s.shape == cr.shape
    # the documented bound: relative to the sum of the terms' magnitudes T
    T = np.exp(ref.logmatmulexp(A, B))
    eps = np.finfo(dtype).eps
    J = sa[-1]
    err = np.abs(_linear(c, s) - _linear(cr, sr))
    assert np.all(err <= 4 * (J + 2) * eps * T + 1e-300)
    # where the sum is well away from a cancellation the sign is exact
    clear = np.abs(_linear(cr, sr)) > 1e3 * J * eps * T
    np.testing.assert_array_equal(s[clear], sr[clear])


def test_signed_cancellation_against_mpmath():
    # sums that cancel exactly (column 0) or to 1e-6 of their terms (column 1): the
    # error is bounded relative to T, the sum of the terms' magnitudes
    J = 40
    base = RNG.standard_normal((6, J))
    A = np.concatenate([base, base], axis=1)
    B = np.zeros((2 * J, 3))
    sA = np.concatenate([np.ones((6, J)), -np.ones((6, J))], axis=1)
    B[J, 1] = math.log1p(1e-6)  # column 1: one term of the negative half 1 + 1e-6 larger
    B[:, 2] = RNG.standard_normal(2 * J)  # column 2: a generic signed sum
    c, s = sk.logmatmulexp(A, B, a_sign=sA, return_sign=True)
    mpmath.mp.dps = 50
    for i in range(6):
        for k in (0, 1, 2):
            terms = [sA[i, j] * mpmath.exp(mpmath.mpf(A[i, j]) + mpmath.mpf(B[j, k]))
                     for j in range(2 * J)]  # fmt: skip
            S = mpmath.fsum(terms)
            T = float(mpmath.fsum(abs(t) for t in terms))
            got = s[i, k] * math.exp(c[i, k])
            assert abs(got - float(S)) <= 4 * 2 * J * np.finfo(float).eps * T
            if k:
                assert s[i, k] == float(mpmath.sign(S))


def test_signed_large_values_and_underflow_are_finite():
    # the naive form overflows (1000) or underflows (-800) to inf / 0: finite here
    A = np.array([[1000.0, 999.0], [-800.0, -801.0]])
    B = np.array([[0.0], [0.0]])
    c, s = sk.logmatmulexp(A, B, a_sign=[1, -1], return_sign=True)
    want = np.array([[1000 + math.log1p(-math.exp(-1))], [-800 + math.log1p(-math.exp(-1))]])
    np.testing.assert_allclose(c, want, rtol=1e-14)
    np.testing.assert_array_equal(s, [[1.0], [1.0]])
    # dominant terms only underflow per factor: the direct recomputation
    c, s = sk.logmatmulexp([[0.0, -1000.0]], [[-1000.0], [0.0]], a_sign=[1, -1], return_sign=True)
    assert c[0, 0] == -np.inf and s[0, 0] == 0.0
    c, s = sk.logmatmulexp([[0.0, -1000.0]], [[-1000.0], [1.0]], a_sign=[1, -1], return_sign=True)
    np.testing.assert_allclose(c, [[-1000 + math.log(math.e - 1)]], rtol=1e-14)
    assert s[0, 0] == -1.0
    # the direct sum is compensated: 1 + 1e-16 - 1 keeps its 1e-16
    B = np.array([[-1000.0], [-1000.0 + math.log(1e-16)], [-1000.0], [0.0]])
    A = np.array([[0.0, 0.0, 0.0, -np.inf]])
    c, s = sk.logmatmulexp(A, B, a_sign=[1, 1, -1, 1], return_sign=True)
    np.testing.assert_allclose(c, [[-1000 + math.log(1e-16)]], rtol=1e-14)
    assert s[0, 0] == 1.0


EDGE = [
    # (A row, signs of A, B column) -> as scipy.special.logsumexp(A + B, b=signs)
    ([0.0, 0.0], [1, -1], [0.0, 0.0]),  # exact zero: (-inf, 0)
    ([0.0, -np.inf], [1, -1], [0.0, 0.0]),  # -inf adds nothing
    ([-np.inf, -np.inf], [1, -1], [0.0, 0.0]),
    ([np.inf, 0.0], [-1, 1], [0.0, 0.0]),  # +inf of one sign: (+inf, -1)
    ([np.inf, np.inf], [-1, 1], [0.0, 0.0]),  # both signs: NaN
    ([np.inf, 0.0], [1, 1], [-np.inf, 0.0]),  # inf + -inf: NaN
    ([np.nan, 0.0], [1, 1], [0.0, 0.0]),
    ([1.0, 2.0], [1, np.nan], [0.0, 0.0]),  # a NaN sign
    ([0.0, 1.0], [1, -1], [0.0, 0.0]),
]


@pytest.mark.parametrize(("a", "sa", "b"), EDGE)
def test_signed_edge_cases_as_scipy(a, sa, b):
    with np.errstate(invalid="ignore"):
        v = np.add(a, b)
        want_c, want_s = scipy.special.logsumexp(v, b=np.sign(sa), return_sign=True)
    c, s = sk.logmatmulexp([a], np.array(b)[:, None], a_sign=sa, return_sign=True)
    np.testing.assert_array_equal(c, [[want_c]])
    np.testing.assert_array_equal(s, [[want_s]])
    cr, sr = ref.logmatmulexp([a], np.array(b)[:, None], a_sign=sa, return_sign=True)
    np.testing.assert_array_equal(cr, c)
    np.testing.assert_array_equal(sr, s)


def test_sign_zero_removes_an_infinite_entry():
    # sign 0 means the value is 0, whatever A holds: no inf * 0 = NaN
    c, s = sk.logmatmulexp([[np.inf, 0.0]], [[0.0], [0.0]], a_sign=[0, 1], return_sign=True)
    assert (c[0, 0], s[0, 0]) == (0.0, 1.0)
    c, s = sk.logmatmulexp([[5.0, 0.0]], [[0.0], [np.inf]], b_sign=[[1], [0]], return_sign=True)
    assert (c[0, 0], s[0, 0]) == (5.0, 1.0)


def test_negative_result_without_return_sign_is_nan():
    A = np.zeros((2, 2))
    c = sk.logmatmulexp(A, A, a_sign=[[1, -1], [-1, -1]], b_sign=[[1, 1], [2, 0]])
    # rows: [1 - 1, 1 + 0] and [-1 - 1, -1 + 0]
    np.testing.assert_array_equal(c, [[-np.inf, 0.0], [np.nan, np.nan]])


def test_return_sign_without_signs_is_the_unsigned_result():
    A, B, _, _ = _signed_case((4, 5), (5, 3))
    A[0] = -np.inf
    B[1, 2] = np.nan
    c0 = sk.logmatmulexp(A, B)
    c, s = sk.logmatmulexp(A, B, return_sign=True)
    np.testing.assert_array_equal(c, c0)
    want_s = np.where(c0 == -np.inf, 0.0, np.where(np.isnan(c0), np.nan, 1))
    np.testing.assert_array_equal(s, want_s)
    # all-+1 signs give the unsigned values
    c1 = sk.logmatmulexp(A, B, a_sign=np.ones(5))
    np.testing.assert_allclose(c1, c0, rtol=1e-14)


def test_signed_out_and_no_mutation():
    A, B, sA, sB = _signed_case((3, 4), (4, 2))
    keep = [v.copy() for v in (A, B, sA, sB)]
    out = np.empty((3, 2))
    c, s = sk.logmatmulexp(A, B, a_sign=sA, b_sign=sB, return_sign=True, out=out)
    assert c is out and s.shape == out.shape
    for v, k in zip((A, B, sA, sB), keep, strict=True):
        np.testing.assert_array_equal(v, k)
    again = sk.logmatmulexp(A, B, a_sign=sA, b_sign=sB, return_sign=True)
    np.testing.assert_array_equal(c, again[0])


def test_sign_argument_errors_name_the_argument():
    A = np.zeros((2, 3))
    B = np.zeros((3, 2))
    with pytest.raises(ValueError, match="a_sign must broadcast"):
        sk.logmatmulexp(A, B, a_sign=np.ones(2))
    with pytest.raises(ValueError, match="b_sign must broadcast"):
        sk.logmatmulexp(A, B, b_sign=np.ones((2, 2)))
    with pytest.raises(TypeError, match="a_sign must be a real"):
        sk.logmatmulexp(A, B, a_sign=np.ones(3, complex))
    with pytest.raises(TypeError, match="b_sign must be a real"):
        sk.logmatmulexp_vjp(A, B, np.ones((2, 2)), b_sign=["x", "y"])


def test_signed_dask_input_raises():
    da = pytest.importorskip("dask.array")
    A = da.zeros((2, 3))
    with pytest.raises(NotImplementedError, match="a_sign / b_sign / return_sign"):
        sk.logmatmulexp(A, A.T, return_sign=True)


@pytest.mark.parametrize(("sa", "sb"), [((3, 4), (4, 5)), ((2, 1, 3, 5), (2, 5, 2))])
def test_signed_vjp_against_torch_autograd(sa, sb):
    torch = pytest.importorskip("torch")
    # its own generator (the module's RNG gives other data in another test order):
    # a row of signs all 0 makes S = 0 there, log|S| -inf, torch's gradient NaN
    rng = np.random.default_rng(len(sa) + 7)
    A, B, sA, sB = _signed_case(sa, sb, zeros=0.2, rng=rng)
    A /= 3
    B /= 3
    G = rng.standard_normal((*np.broadcast_shapes(sa[:-2], sb[:-2]), sa[-2], sb[-1]))
    gA, gB = sk.logmatmulexp_vjp(A, B, G, a_sign=sA, b_sign=sB)
    At = torch.tensor(A, requires_grad=True)
    Bt = torch.tensor(B, requires_grad=True)
    S = (torch.tensor(np.sign(sA)) * At.exp()) @ (torch.tensor(np.sign(sB)) * Bt.exp())
    assert (S != 0).all(), "the sampled case must have no S == 0 (torch: NaN gradient)"
    torch.log(S.abs()).backward(torch.tensor(G))
    np.testing.assert_allclose(gA, At.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(gB, Bt.grad.numpy(), rtol=1e-10, atol=1e-12)


def test_signed_vjp_central_differences_and_large_shifts():
    # values near 700 apart: the W = G exp(a + b - C) factor takes the direct path
    A = np.array([[0.0, 0.5, -700.0], [1.0, -1.0, 0.0]])
    B = np.array([[-700.0, 0.0], [-700.0, 1.0], [0.0, -2.0]])
    sA = np.array([[1, -1, 1], [-1, 1, 1]])
    sB = np.array([[1, 1], [1, -1], [-1, 1]])
    G = np.array([[1.0, -0.5], [0.3, 2.0]])
    gA, gB = sk.logmatmulexp_vjp(A, B, G, a_sign=sA, b_sign=sB)

    def f(a, b):
        return float(np.sum(G * sk.logmatmulexp(a, b, a_sign=sA, b_sign=sB, return_sign=True)[0]))

    h = 1e-6
    for X, gX in ((A, gA), (B, gB)):
        for idx in np.ndindex(*X.shape):
            Xp, Xm = X.copy(), X.copy()
            Xp[idx] += h
            Xm[idx] -= h
            args_p = (Xp, B) if X is A else (A, Xp)
            args_m = (Xm, B) if X is A else (A, Xm)
            num = (f(*args_p) - f(*args_m)) / (2 * h)
            assert abs(num - gX[idx]) <= 1e-6 * (1 + abs(num)), (idx, num, gX[idx])


def test_signed_vjp_zero_sign_and_exact_zero_get_no_gradient():
    A = np.zeros((1, 3))
    B = np.zeros((3, 2))
    sB = [[1, 1], [1, 0], [1, 1]]
    gA, gB = sk.logmatmulexp_vjp(A, B, np.ones((1, 2)), a_sign=[1, -1, 0], b_sign=sB)
    # column 0 sums to exactly 0 (no gradient); column 1 is the single term j = 0
    np.testing.assert_array_equal(gA, [[1.0, 0.0, 0.0]])
    np.testing.assert_array_equal(gB, [[0.0, 1.0], [0.0, 0.0], [0.0, 0.0]])


def test_torch_signed_op_values_gradcheck_and_meta():
    torch = pytest.importorskip("torch")
    import softmaxkit.torch as skt

    A = torch.tensor(RNG.standard_normal((2, 3, 4)), requires_grad=True)
    B = torch.tensor(RNG.standard_normal((4, 5)), requires_grad=True)
    sa = torch.tensor([1.0, -1.0, 1.0, -1.0])
    sb = torch.tensor(np.sign(RNG.standard_normal((4, 5))))
    c, s = skt.logmatmulexp(A, B, a_sign=sa, b_sign=sb, return_sign=True)
    want_c, want_s = sk.logmatmulexp(
        A.detach().numpy(), B.detach().numpy(), a_sign=sa.numpy(), b_sign=sb.numpy(),
        return_sign=True,
    )  # fmt: skip
    np.testing.assert_array_equal(c.detach().numpy(), want_c)
    np.testing.assert_array_equal(s.numpy(), want_s)
    assert not s.requires_grad
    assert torch.autograd.gradcheck(
        lambda a, b: skt.logmatmulexp(a, b, a_sign=sa, b_sign=sb, return_sign=True)[0], (A, B)
    )
    # routed from the NumPy-named function; negative sums are NaN without return_sign
    r = sk.logmatmulexp(A, B, a_sign=sa, b_sign=sb)
    assert torch.equal(torch.isnan(r), s < 0)
    m, ms = skt.logmatmulexp(
        torch.empty(3, 4, device="meta"), torch.empty(4, 2, device="meta"),
        a_sign=torch.ones(3, 4, device="meta"), return_sign=True,
    )  # fmt: skip
    assert m.shape == ms.shape == (3, 2) and m.device.type == "meta"


def test_torch_scan_ops_take_meta_tensors():
    # the shared _check_kernel_device: 'meta' tensors run the fake implementations
    torch = pytest.importorskip("torch")
    import softmaxkit.torch as skt

    x = torch.empty(3, 4, device="meta")
    assert skt.logcumsumexp(x).shape == (3, 4)
    assert skt.logmatmulexp(x, torch.empty(4, 2, device="meta")).shape == (3, 2)
    ids = torch.zeros(3, dtype=torch.int64, device="meta")
    assert skt.segment_softmax(x, ids, num_segments=1).shape == (3, 4)
