"""Every loss at the dense tests' extreme magnitudes and temperatures (issue 18 items 2, 4).

One parametrised differential test runs each loss (cross_entropy with every option,
probability targets, linear_cross_entropy, topk_softmax, the margin losses) and its
gradient over the same adversarial rows and temperatures against the float64
reference (``softmaxkit.reference``), with NaN / +-inf required to match exactly;
the issue's own examples are pinned against mpmath values (50 digits).  Then the
masked-class semantics of probability targets (hypothesis: ``where`` equals a -inf
logit) and the named errors of the losses' unchecked inputs.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import softmaxkit as sk
from softmaxkit import reference as ref

mpmath = pytest.importorskip("mpmath")

inf, nan = np.inf, np.nan
FMIN = np.finfo(np.float64).min


def _rows():
    rng = np.random.default_rng(18)
    one = np.nextafter(1.0, 2.0) - 1.0
    return {
        "seed": np.array([[3.0, 1.0, 2.0], [0.5, 2.5, 0.2]]),
        "span-1e308": np.array([[1e308, -1e308, 0.0], [-1e308, 1e308, 5.0]]),
        "finfo-min-masking": np.array([[1.0, 2.0, FMIN, FMIN], [FMIN, 0.5, FMIN, -1.0]]),
        "huge-magnitudes": rng.choice([-1.0, 1.0], (3, 40)) * 10.0 ** rng.uniform(0, 300, (3, 40)),
        "huge-ties": np.array([[1e300, 1e300, -1e300, 1e300 * (1 - 2 * one), 0.0]]),
        "near-ties": 1.0 + np.arange(12)[None, :] * one,
        "wide-exponents": np.array([[709.0, 0.0, -709.0, 708.5, 1e-300, -1e-300]]),
        "tiny-values": np.array([[1e-300, 2e-300, -1e-300], [5e-324, 0.0, -5e-324]]),
        "normal": rng.normal(size=(4, 33)) * 3,
    }


ROWS = _rows()
# the dense tests' temperatures (test_dense.py::test_temperature) plus the extremes
# of issue 18: 1/T overflowing (subnormal T) or subnormal (huge T)
TEMPS = [1.0, 0.25, 3.0, 1e-10, 1e-30, 1e-50, 1e40, 1e300, 5e-324]
F32_ROWS = {
    "seed": ROWS["seed"],
    "huge-f32": np.random.default_rng(5).choice([-1, 1], (2, 40)) * 10.0 ** np.linspace(0, 38, 40),
    "normal": ROWS["normal"],
    "near-ties": 1.0 + np.arange(8)[None, :] * 2.0**-23,
}
F32_TEMPS = [1.0, 0.7, 1e-10, 1e-30, 1e-40, 1e30, 1e39]


def _same_specials(got, want, what):
    got = np.asarray(got, np.float64)
    want = np.asarray(want, np.float64)
    assert got.shape == want.shape, (what, got.shape, want.shape)
    fin = np.isfinite(want)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want), err_msg=what)
    np.testing.assert_array_equal(got[np.isinf(want)], want[np.isinf(want)], err_msg=what)
    return got[fin], want[fin]


def _close(got, want, rtol, what, cond=1.0, gscale=0.0):
    """Equal specials, then ``rtol`` plus the reference's own error: it forms
    ``v = x / T`` first, so its differences ``v_j - max v`` carry an absolute error
    ~``eps * cond`` with ``cond = max |x / T|`` (near ties at T = 1e-10: 1e-6
    relative; the kernels difference ``(x - max x) / T`` exactly)."""
    g, w = _same_specials(got, want, what)
    if w.size:
        # gradients: p - q times a / T; compare at that scale (gscale), where p ~ q
        # cancel to rounding noise
        scale = max(float(np.max(np.abs(w))), gscale if np.isfinite(gscale) else 0.0)
        tol = rtol * 4 + 8 * 2.0**-52 * max(1.0, cond)
        with np.errstate(over="ignore"):
            atol = min(tol * scale, np.finfo(np.float64).max)
        with np.errstate(over="ignore", invalid="ignore"):
            np.testing.assert_allclose(g, w, rtol=rtol, atol=atol, err_msg=what)


def _cond(x, T):
    with np.errstate(all="ignore"):
        v = np.abs(np.asarray(x, np.float64) / T)
    return float(np.max(v[np.isfinite(v)], initial=1.0))


CE_OPTIONS = {
    "plain": {},
    "smoothing": {"label_smoothing": 0.1},
    "smoothing-all": {"label_smoothing": 1.0},
    "z_loss": {"z_loss": 1e-4},
    "weights": {"weight": "w"},
    "ignore_index": {"ignore_index": -1},
    "where": {"where": "mask"},
    "sum-none": {"reduction": "none", "label_smoothing": 0.3},
    "prob": {"target": "prob"},
    "prob-smoothing-weights": {"target": "prob", "label_smoothing": 0.2, "weight": "w"},
    "prob-where": {"target": "prob", "where": "mask"},
}


def _ce_args(x, opts):
    R, C = x.shape
    kw = dict(opts)
    tgt = np.arange(R) % C
    if kw.pop("target", None) == "prob":
        tgt = np.abs(np.sin(np.arange(R * C).reshape(R, C) + 1.0))
        tgt /= tgt.sum(axis=1, keepdims=True)
    if kw.get("weight") == "w":
        kw["weight"] = 0.5 + (np.arange(C) % 3)
    if kw.get("ignore_index") == -1:
        tgt = tgt.copy()
        tgt[0] = -1
    if kw.get("where") == "mask":
        m = np.ones((R, C), bool)
        m[:, -1] = False
        m[:, 0] = True
        kw["where"] = m
    return tgt, kw


def _check_ce(x, T, opts, rtol):
    tgt, kw = _ce_args(x, opts)
    with np.errstate(all="ignore"):
        want_l, want_g = ref.cross_entropy(
            x.astype(np.float64), tgt, temperature=T, return_grad=True, **kw
        )
        # the ideal result is the reference rounded to the output dtype (+-inf past it)
        want_l = np.asarray(want_l).astype(x.dtype)
        want_g = want_g.astype(x.dtype)
    got_l, got_g = sk.cross_entropy(x, tgt, temperature=T, return_grad=True, **kw)
    assert got_g.dtype == x.dtype
    c = _cond(x, T)
    w = kw.get("weight")
    with np.errstate(over="ignore"):
        gs = (np.max(w) if w is not None else 1.0) / T / x.shape[0]
    _close(got_l, want_l, rtol, "loss", c)
    _close(got_g, want_g, rtol, "grad", c, gs)
    # the loss alone (another kernel specialisation) and the in-place gradient
    _close(sk.cross_entropy(x, tgt, temperature=T, **kw), want_l, rtol, "loss only", c)
    buf = x.copy()
    _, g2 = sk.cross_entropy(buf, tgt, temperature=T, return_grad=True, out=buf, **kw)
    _close(g2, want_g, rtol, "grad out=logits", c, gs)


@pytest.mark.parametrize("T", TEMPS, ids=str)
@pytest.mark.parametrize("row", list(ROWS))
@pytest.mark.parametrize("opt", list(CE_OPTIONS))
def test_cross_entropy_extremes_float64_vs_reference(opt, row, T):
    _check_ce(ROWS[row], T, CE_OPTIONS[opt], 1e-12)


@pytest.mark.parametrize("T", F32_TEMPS, ids=str)
@pytest.mark.parametrize("row", list(F32_ROWS))
@pytest.mark.parametrize("opt", ["plain", "smoothing", "z_loss", "where", "prob-smoothing-weights"])
def test_cross_entropy_extremes_float32_vs_reference(opt, row, T):
    with np.errstate(over="ignore"):
        x = F32_ROWS[row].astype(np.float32)
    _check_ce(x, T, CE_OPTIONS[opt], 2e-5)


# (no T whose x / T overflows: the vocab path's loss is NaN for +inf logits, as
# documented in linear_cross_entropy's code; the row path handles them)
@pytest.mark.parametrize("T", [1.0, 1e-30, 1e40, 1e-250], ids=str)
@pytest.mark.parametrize("row", ["seed", "huge-magnitudes", "finfo-min-masking", "tiny-values"])
@pytest.mark.parametrize("strategy", ["vocab", "rows"])
def test_linear_cross_entropy_extremes_vs_reference(strategy, row, T):
    # h = x, W = I: the logits are x exactly (x * 1 + 0 * ... in any summation order)
    x = ROWS[row]
    R, C = x.shape
    W = np.eye(C)
    t = np.arange(R) % C
    with np.errstate(over="ignore"):
        if not np.all(np.isfinite(x / T)):
            pytest.skip("x / T overflows: +inf logits, NaN on the vocab path (documented)")
    # (z_loss at T = 1e-250: lse^2 / T overflows, inf * 0 in the matmuls)
    for kw in ({}, {"label_smoothing": 0.1, "z_loss": 1e-4 if T > 1e-100 else 0.0}):
        with np.errstate(all="ignore"):
            want_l, (dh, _dw, _) = ref.linear_cross_entropy(
                x, W, t, temperature=T, return_grad=True, **kw
            )
        c = _cond(x, T)
        with np.errstate(over="ignore", invalid="ignore"):  # (d_W past 1.8e308)
            got_l = sk.linear_cross_entropy(x, W, t, temperature=T, chunk_size=2, **kw)
            gl, (gh, _gw, _) = sk.linear_cross_entropy(
                x, W, t, temperature=T, return_grad=True, strategy=strategy, chunk_size=2, **kw
            )
        _close(got_l, want_l, 1e-12, "loss", c)
        _close(gl, want_l, 1e-12, "loss (grad call)", c)
        if np.all(np.isfinite(dh)):  # (inf * 0 in the matmuls: not comparable)
            _close(gh, dh, 1e-12, "d_hidden", c)


@pytest.mark.parametrize("T", TEMPS, ids=str)
@pytest.mark.parametrize("row", list(ROWS))
def test_topk_softmax_extremes_vs_reference(row, T):
    x = ROWS[row]
    with np.errstate(all="ignore"):
        p = ref.softmax(x, temperature=T)
        v = x / T
    k = min(3, x.shape[1])
    got_p, got_i = sk.topk_softmax(x, k, temperature=T)
    # order: decreasing x / T, ties by index (a stable sort of -v)
    want_i = np.argsort(-v, axis=-1, kind="stable")[:, :k]
    np.testing.assert_array_equal(got_i, want_i)
    _close(got_p, np.take_along_axis(p, want_i, axis=-1), 1e-12, "topk p", _cond(x, T))


@pytest.mark.parametrize("row", list(ROWS))
def test_margin_losses_extremes_vs_reference(row):
    x = ROWS[row]
    R, C = x.shape
    t = np.arange(R) % C
    for kind in ("weston_watkins", "crammer_singer"):
        for p in (1, 2):
            with np.errstate(over="ignore", invalid="ignore"):
                want = ref.multiclass_hinge_loss(x, t, p=p, kind=kind, reduction="none")
            got = sk.multiclass_hinge_loss(x, t, p=p, kind=kind, reduction="none")
            _close(got, want, 1e-12, f"hinge {kind} p={p}")
    flat = x.reshape(-1)
    n = flat.size - flat.size % 3
    with np.errstate(over="ignore", invalid="ignore"):
        want = ref.max_margin_loss(flat[:n], 2, reduction="sum")
    _close(sk.max_margin_loss(flat[:n], 2), want, 1e-12, "max_margin_loss")


# --------------------------------------------------------------------------- mpmath


def _mp_ce(x, t, eps=0.0, T=1.0):
    """Index-target smoothed cross-entropy of one row, 50 digits (v = x / T exact)."""
    with mpmath.workdps(50):
        v = [mpmath.mpf(float(a)) / mpmath.mpf(T) for a in x]
        m = max(v)
        lse = m + mpmath.log(mpmath.fsum(mpmath.exp(a - m) for a in v))
        n = len(v)
        ce = (1 - eps) * (lse - v[t]) + eps * mpmath.fsum(lse - a for a in v) / n
        return float(ce)


@pytest.mark.parametrize(
    ("x", "t", "eps", "T", "dtype"),
    [
        ([3.0, 1.0, 2.0], 0, 0.0, 1e-30, np.float64),  # was nan (FMA: max's d != 0)
        ([3.0, 1.0, 2.0], 1, 0.0, 1e-30, np.float64),
        ([3.0, 1.0, 2.0], 0, 0.0, 1e-10, np.float32),  # was nan
        ([3.0, 1.0, 2.0], 2, 0.1, 1e-10, np.float32),
        ([1e308, -1e308, 0.0], 0, 0.0, 1.0, np.float64),  # was nan (0 * inf)
        ([1e308, -1e308, 0.0], 0, 0.1, 1.0, np.float64),  # was inf: 1e307
        ([1.0, 2.0, FMIN, FMIN], 1, 0.1, 1.0, np.float64),  # was inf
        ([1e-300, 2e-300, -1e-300], 1, 0.0, 5e-324, np.float64),  # 1/T overflows
        ([1e-300, 2e-300, -1e-300], 1, 0.5, 5e-324, np.float64),
        ([1e20, 3e20, 2e20], 1, 0.0, 1e-289, np.float64),  # |x/T| ~ 1e309 overflow
        ([3.0, 1.0, 2.0], 0, 0.2, 1e300, np.float64),  # 1/T subnormal
        ([1.0, 1.0 + 2.0**-52, 1.0 + 2.0**-51], 1, 0.1, 1e-10, np.float64),  # near ties
    ],
)
def test_issue18_examples_vs_mpmath(x, t, eps, T, dtype):
    xa = np.array([x], dtype=dtype)
    got = float(sk.cross_entropy(xa, [t], label_smoothing=eps, temperature=T))
    with np.errstate(over="ignore"):
        overflow = not np.all(np.isfinite(xa.astype(np.float64) / T))
    if overflow:
        # x / T overflows float64: the +inf-row contract (as the dense ops and the
        # reference: softmax 1/k on the +inf entries)
        with np.errstate(all="ignore"):
            assert got == float(ref.cross_entropy(xa, [t], label_smoothing=eps, temperature=T))
        return
    want = _mp_ce(xa[0].astype(np.float64), t, eps, T)
    rtol = 1e-13 if dtype == np.float64 else 1e-6
    assert abs(got - want) <= rtol * abs(want) + (1e-300 if dtype == np.float64 else 1e-7), (
        got,
        want,
    )


def test_topk_subnormal_temperature_regression():
    # 1/T = inf turned x / T into x * inf: both positive entries tied at +inf -> index 0
    p, i = sk.topk_softmax([1e-300, 2e-300, -1e-300], 1, temperature=5e-324)
    assert i.tolist() == [1] and p.tolist() == [1.0]


def test_cross_entropy_max_difference_is_exactly_zero_at_any_temperature():
    # the guard of the FMA fix: the argmax's own difference is 0, so exp never overflows
    rng = np.random.default_rng(3)
    for dtype in (np.float32, np.float64):
        x = (rng.normal(size=(64, 257)) * 10).astype(dtype)
        t = np.argmax(x, axis=1)
        for T in (1e-5, 1e-10, 1e-20, 1e-30):
            loss, g = sk.cross_entropy(x, t, temperature=T, reduction="none", return_grad=True)
            assert np.all(np.isfinite(loss)) and np.all(loss >= 0), (dtype, T)
            assert np.all(np.isfinite(g)), (dtype, T)


# --------------------------------------------------------------------------- item 4


@settings(max_examples=60, deadline=None)
@given(
    data=st.data(),
    shape=st.tuples(st.integers(1, 4), st.integers(2, 7)),
    eps=st.sampled_from([0.0, 0.1, 1.0]),
    weighted=st.booleans(),
)
def test_masked_class_equals_minus_inf_logit(data, shape, eps, weighted):
    _, C = shape
    x = data.draw(hnp.arrays(np.float64, shape, elements=st.floats(-30, 30)))
    mask = data.draw(hnp.arrays(np.bool_, shape))
    mask[:, 0] = True  # (an all-masked row is "empty", not -inf: another rule)
    y = data.draw(hnp.arrays(np.float64, shape, elements=st.floats(0, 1)))
    w = np.linspace(0.5, 2.0, C) if weighted else None
    kw = {"label_smoothing": eps, "weight": w, "reduction": "none"}
    lw, gw = sk.cross_entropy(x, y, where=mask, return_grad=True, **kw)
    xi = np.where(mask, x, -inf)
    li, gi = sk.cross_entropy(xi, y, return_grad=True, **kw)
    lr, gr = ref.cross_entropy(x, y, where=mask, return_grad=True, **kw)
    # the smoothing of a -inf logit still spreads over it; of a masked class it does
    # not: compare the losses without smoothing only
    # (atol: log(s) of s = 1 + r rounds r absolutely, ~1e-16, for a tiny loss)
    if eps == 0.0:
        np.testing.assert_allclose(lw, li, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(gw[mask], gi[mask], rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(lw, lr, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(gw, gr, rtol=1e-12, atol=1e-15)
    assert np.all(gw[~mask] == 0.0)


def test_probability_mass_on_masked_class_regression():
    # was [0, -0.116, 0.116]-like: the masked class' mass left out of sum w q
    x = np.array([[0.3, 1.0, 2.0]])
    y = np.array([[0.5, 0.0, 0.5]])
    loss, g = sk.cross_entropy(x, y, where=[[False, True, True]], return_grad=True)
    p = ref.softmax(x[:, 1:])[0]
    assert loss == inf
    np.testing.assert_allclose(g[0], [0.0, p[0], p[1] - 0.5], rtol=1e-14)
    _, gi = sk.cross_entropy(np.array([[-inf, 1.0, 2.0]]), y, return_grad=True)
    np.testing.assert_allclose(g[0, 1:], gi[0, 1:], rtol=1e-14)


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize("bad", [nan, inf, -inf, -0.25])
@pytest.mark.parametrize("axis", [-1, 0])
def test_probability_target_must_be_finite_nonnegative(bad, axis):
    x = np.zeros((3, 4))
    y = np.full((3, 4), 0.25)
    y[2, 1] = bad
    if axis == 0:
        x, y = x.T, y.T
    for f in (sk.cross_entropy, ref.cross_entropy):
        with pytest.raises(ValueError, match=r"probability target must be finite and >= 0") as e:
            f(x, y, axis=axis)
        row = "(2,)"
        assert "target[" in str(e.value) and f"row {row}" in str(e.value), str(e.value)


@pytest.mark.parametrize("reduction", ["mean"])
def test_class_weights_summing_to_zero_mean_is_an_error(reduction):
    x = np.array([[1.0, 2.0, 3.0], [0.0, 1.0, 0.0]])
    w = np.array([0.0, 0.0, 1.0])
    for f in (sk.cross_entropy, ref.cross_entropy):
        with pytest.raises(ValueError, match=r"weight: .*sum to 0.*reduction='mean'"):
            f(x, [0, 1], weight=w, reduction=reduction)
        # 'sum' and 'none' are defined; so is a mean with one weighted target
        assert f(x, [0, 1], weight=w, reduction="sum") == 0.0
        assert float(f(x, [0, 2], weight=w)) == pytest.approx(float(ref.cross_entropy(x[1:], [2])))
        # all targets ignored: nothing counted, the documented 0.0 (not an error)
        assert f(x, [-1, -1], weight=w, ignore_index=-1) == 0.0
    with pytest.raises(ValueError, match=r"weight: .*sum to 0"):
        sk.linear_cross_entropy(x, np.eye(3), [0, 1], weight=w)


@pytest.mark.parametrize("strategy", ["vocab", "rows"])
@pytest.mark.parametrize("bias", [None, np.array([0.5, -1.0, 2.0, 0.0])])
def test_linear_cross_entropy_zero_hidden_dim(strategy, bias):
    # d = 0: the logits are the bias (or 0); was "cannot reshape array of size 0"
    h = np.zeros((3, 0))
    W = np.zeros((4, 0))
    t = [0, 3, 2]
    loss, (dh, dW, db) = sk.linear_cross_entropy(
        h, W, t, bias=bias, return_grad=True, strategy=strategy
    )
    logits = np.broadcast_to(bias if bias is not None else np.zeros(4), (3, 4))
    want, g = ref.cross_entropy(logits, t, return_grad=True)
    assert loss == pytest.approx(want, rel=1e-14)
    assert dh.shape == (3, 0) and dW.shape == (4, 0)
    if bias is not None:
        np.testing.assert_allclose(db, g.sum(axis=0), rtol=1e-14, atol=1e-16)
    assert sk.linear_cross_entropy(h, W, t, bias=bias) == pytest.approx(want, rel=1e-14)
