"""Tests of softmaxkit.losses: cross-entropy, margin and hinge losses.

Oracles: torch.nn.functional (loss + autograd) for every option combination PyTorch
supports, the float64 reference twin (softmaxkit.reference), explicit float64
formulas written in the tests, and central finite differences for the rest.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from _peak import traced
from hypothesis import given, settings
from hypothesis import strategies as st

import softmaxkit as sk
from softmaxkit import reference as ref

torch = pytest.importorskip("torch")
F = torch.nn.functional

C = 5


def _rng(seed=0):
    return np.random.default_rng(seed)


def _case(kind, layout, seed=0, ignore=False):
    """Logits and targets; layout "2d" ([N, C], axis -1) or "3d" ([N, C, L], axis 1)."""
    rng = _rng(seed)
    shape = (6, C) if layout == "2d" else (3, C, 4)
    x = rng.normal(size=shape) * 2
    axis = -1 if layout == "2d" else 1
    if kind == "index":
        tshape = shape[:-1] if layout == "2d" else (3, 4)
        t = rng.integers(0, C, size=tshape)
        if ignore:
            t.flat[1] = -100
            t.flat[4] = -100
    else:
        y = rng.dirichlet(np.ones(C), size=int(np.prod(shape)) // C)
        y = y.reshape(shape[0], -1, C) if layout == "3d" else y.reshape(shape)
        t = np.moveaxis(y, -1, 1) if layout == "3d" else y
    return x, t, axis


def _torch_ce(x, t, axis, dtype, **kw):
    xt = torch.tensor(x.astype(dtype), requires_grad=True)
    if axis == -1 and x.ndim > 2:
        raise AssertionError
    tt = torch.tensor(t if t.dtype.kind != "f" else t.astype(dtype))
    if "weight" in kw and kw["weight"] is not None:
        kw["weight"] = torch.tensor(kw["weight"].astype(dtype))
    if kw.get("ignore_index") is None:
        kw.pop("ignore_index", None)
    loss = F.cross_entropy(xt, tt, **kw)
    loss.sum().backward()
    return loss.detach().numpy(), xt.grad.numpy()


GRID = [
    dict(kind=k, layout=lay, weight=w, ignore=ig, eps=e, reduction=r)
    for k, lay, w, ig, e, r in itertools.product(
        ["index", "prob"],
        ["2d", "3d"],
        [False, True],
        [False, True],
        [0.0, 0.15],
        ["mean", "sum", "none"],
    )
    # ignore_index applies to index targets only; weights + smoothing with index
    # targets is where we deliberately differ from PyTorch (tested separately)
    if not (k == "prob" and ig) and not (k == "index" and w and e > 0)
]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("case", GRID, ids=lambda c: "-".join(str(v) for v in c.values()))
def test_cross_entropy_vs_torch(case, dtype):
    x, t, axis = _case(case["kind"], case["layout"], ignore=case["ignore"])
    w = _rng(3).uniform(0.3, 2.0, size=C) if case["weight"] else None
    ii = -100 if case["ignore"] else None
    kw = dict(weight=w, label_smoothing=case["eps"], reduction=case["reduction"])
    tl, tg = _torch_ce(x, t, 1, dtype, ignore_index=ii, **dict(kw))
    loss, grad = sk.cross_entropy(
        x.astype(dtype), t, axis=axis, ignore_index=ii, return_grad=True, **kw
    )
    tol = 1e-12 if dtype == np.float64 else 2e-6
    assert np.asarray(loss).dtype == dtype and grad.dtype == dtype
    np.testing.assert_allclose(loss, tl, rtol=tol, atol=tol)
    np.testing.assert_allclose(grad, tg, rtol=tol, atol=tol)
    # the reference twin agrees with PyTorch too (independent code)
    rl, rg = ref.cross_entropy(x, t, axis=axis, ignore_index=ii, return_grad=True, **kw)
    if dtype == np.float64:
        np.testing.assert_allclose(rl, tl, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(rg, tg, rtol=1e-12, atol=1e-12)


def _fd_grad(f, x, h=1e-6):
    g = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        xp = x.copy()
        xm = x.copy()
        xp[idx] += h
        xm[idx] -= h
        g[idx] = (f(xp) - f(xm)) / (2 * h)
    return g


@pytest.mark.parametrize(
    "opts",
    [
        dict(z_loss=1e-2),
        dict(temperature=0.7, label_smoothing=0.1),
        dict(z_loss=0.3, temperature=2.0, reduction="sum", label_smoothing=0.2),
        dict(where="mask", label_smoothing=0.3),
        dict(where="mask", z_loss=0.1, reduction="none"),
        dict(weight="w", label_smoothing=0.2, z_loss=0.05),
        dict(weight="w", label_smoothing=0.2, kind="prob", where="mask"),
    ],
)
def test_cross_entropy_vs_finite_differences_and_reference(opts):
    opts = dict(opts)
    kind = opts.pop("kind", "index")
    x, t, _axis = _case(kind, "2d", seed=5)
    if opts.get("where") == "mask":
        mask = _rng(7).random(x.shape) > 0.3
        mask[np.arange(x.shape[0]), np.argmax(mask, 1)] = True
        if kind == "index":
            t = np.argmax(mask, axis=1)  # the target class is included
        else:
            t = np.where(mask, t, 0.0)
        opts["where"] = mask
    if opts.get("weight") == "w":
        opts["weight"] = _rng(9).uniform(0.5, 2.0, C)
    loss, grad = sk.cross_entropy(x, t, return_grad=True, **opts)
    rl, rg = ref.cross_entropy(x, t, return_grad=True, **opts)
    np.testing.assert_allclose(loss, rl, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(grad, rg, rtol=1e-10, atol=1e-12)

    def total(xx):
        return float(np.sum(sk.cross_entropy(xx, t, **opts)))

    np.testing.assert_allclose(grad, _fd_grad(total, x), rtol=1e-5, atol=1e-7)


def test_weighted_label_smoothing_formula_and_pytorch_difference():
    """Our definition: l_n = w_t [(1-e)(-log p_t) + e/C sum_c (-log p_c)], mean / sum w_t."""
    x, t, _ = _case("index", "2d", seed=11)
    w = np.array([0.2, 1.0, 3.0, 0.5, 1.5])
    e = 0.3
    lp = x - np.log(np.exp(x).sum(1, keepdims=True))
    wt = w[t]
    ours_rows = wt * ((1 - e) * -lp[np.arange(len(t)), t] + e / C * -lp.sum(1))
    expected = ours_rows.sum() / wt.sum()
    loss = sk.cross_entropy(x, t, weight=w, label_smoothing=e)
    np.testing.assert_allclose(loss, expected, rtol=1e-13)
    # PyTorch weights each smoothing term by its class' weight instead:
    torch_rows = (1 - e) * wt * -lp[np.arange(len(t)), t] + e / C * (w * -lp).sum(1)
    tl = F.cross_entropy(
        torch.tensor(x), torch.tensor(t), weight=torch.tensor(w), label_smoothing=e
    ).item()
    np.testing.assert_allclose(tl, torch_rows.sum() / wt.sum(), rtol=1e-12)
    assert abs(tl - float(loss)) > 1e-3  # the documented difference is real
    # ...which moves the minimum away from the smoothed target (pytorch#104776);
    # ours is stationary exactly at p = q whatever the weights.
    q = np.full((1, C), e / C)
    q[0, 2] += 1 - e
    _, g = sk.cross_entropy(np.log(q), [2], weight=w, label_smoothing=e, return_grad=True)
    np.testing.assert_allclose(g, 0.0, atol=1e-15)
    xt = torch.tensor(np.log(q), requires_grad=True)
    F.cross_entropy(xt, torch.tensor([2]), weight=torch.tensor(w), label_smoothing=e).backward()
    assert np.abs(xt.grad.numpy()).max() > 1e-2


@pytest.mark.parametrize("weight", [None, np.ones(C)])
def test_all_ignored_mean_is_zero_not_nan(weight):
    x = _rng().normal(size=(3, C))
    t = np.full(3, -100)
    loss, grad = sk.cross_entropy(x, t, ignore_index=-100, weight=weight, return_grad=True)
    assert loss == 0.0 and np.all(grad == 0)
    # PyTorch gives NaN here (pytorch#70348): the documented difference
    tl = F.cross_entropy(torch.tensor(x), torch.tensor(t), ignore_index=-100)
    assert np.isnan(tl.item())


def test_edge_rows_empty_masked_nan_inf():
    x = np.array(
        [
            [1.0, 2.0, 3.0],
            [-np.inf, -np.inf, -np.inf],  # empty: not counted, zero gradient
            [0.5, np.nan, 1.0],  # NaN row: NaN loss and gradient
            [np.inf, 1.0, 0.0],  # +inf at the target
        ]
    )
    t = np.array([0, 1, 2, 0])
    per, g = sk.cross_entropy(x, t, reduction="none", return_grad=True)
    assert per[1] == 0 and np.all(g[1] == 0)
    assert np.isnan(per[2]) and np.all(np.isnan(g[2]))
    assert per[3] == 0.0 and np.all(g[3] == 0)  # p = onehot at the +inf entry
    mean = sk.cross_entropy(x[[0, 1]], t[[0, 1]])
    np.testing.assert_allclose(mean, sk.cross_entropy(x[[0]], t[[0]]))  # row 1 not counted
    # fully masked row = empty row; target masked in a non-empty row: +inf, finite grad
    mask = np.array([[True, True, True], [False, False, False], [False, True, True]])
    tm = np.array([0, 1, 0])
    per, g = sk.cross_entropy(np.zeros((3, 3)), tm, where=mask, reduction="none", return_grad=True)
    assert per[1] == 0 and np.all(g[1] == 0)
    assert per[2] == np.inf and np.all(np.isfinite(g))
    rl, rg = ref.cross_entropy(np.zeros((3, 3)), tm, where=mask, reduction="none", return_grad=True)
    np.testing.assert_array_equal(per, rl)
    np.testing.assert_allclose(g, rg)


def test_seed_stable_cross_entropy_large_logits():
    # The notebook's case: logits up to 1e5; naive forms give inf, the stable one:
    logits = np.linspace(-1, 1e5, 500).reshape([50, 10])
    answers = np.arange(50) % 10
    per = sk.cross_entropy(logits, answers, reduction="none")
    np.testing.assert_allclose(per[:3], [1803.6252505, 1603.22244489, 1402.81963928], rtol=1e-9)
    _, g = sk.cross_entropy(logits, answers, return_grad=True)
    assert np.all(np.isfinite(g))
    np.testing.assert_allclose(g[0, [0, 9]], [-0.02, 0.02])
    loss32, _g32 = sk.cross_entropy(logits.astype(np.float32), answers, return_grad=True)
    np.testing.assert_allclose(loss32, per.mean(), rtol=1e-6)


def test_float32_fast_path_vs_float64_reference():
    rng = _rng(2)
    x = (rng.normal(size=(64, 3001)) * 4).astype(np.float32)
    t = rng.integers(0, 3001, 64)
    for opts in [dict(), dict(label_smoothing=0.1, z_loss=1e-3, temperature=1.3)]:
        loss, g = sk.cross_entropy(x, t, return_grad=True, **opts)
        rl, rg = ref.cross_entropy(x.astype(np.float64), t, return_grad=True, **opts)
        np.testing.assert_allclose(loss, rl, rtol=2e-6)
        np.testing.assert_allclose(g, rg, rtol=2e-5, atol=1e-10)


def test_fast_exp_accuracy():
    # the float32 exp of the cross-entropy fast path (the dense kernels' exp_)
    from softmaxkit._kernels.exp import exp_array

    d = np.concatenate([np.linspace(-87.3, 0, 200001), [-1e-30, -0.0, -88.0, -200.0]])
    d = d.astype(np.float32)
    out = np.empty_like(d)
    exp_array(d, out)
    exact = np.exp(d.astype(np.float64))
    rel = np.abs(out - exact) / np.maximum(exact, np.finfo(np.float32).tiny)
    assert rel[exact > np.finfo(np.float32).tiny].max() < 1.5 * 2.0**-24
    assert out[-1] == 0.0 and out[-2] == 0.0


def test_out_and_in_place():
    rng = _rng(4)
    x = rng.normal(size=(8, 40)).astype(np.float32)
    t = rng.integers(0, 40, 8)
    x0 = x.copy()
    loss, g = sk.cross_entropy(x, t, label_smoothing=0.1, return_grad=True)
    np.testing.assert_array_equal(x, x0)  # no mutation without out
    buf = np.empty_like(x)
    _loss2, g2 = sk.cross_entropy(x, t, label_smoothing=0.1, return_grad=True, out=buf)
    assert g2 is buf
    np.testing.assert_array_equal(g2, g)
    loss3, g3 = sk.cross_entropy(x, t, label_smoothing=0.1, return_grad=True, out=x)
    assert g3 is x and loss3 == loss
    np.testing.assert_array_equal(x, g)
    # non-last class axis with out
    x3 = rng.normal(size=(2, 7, 3))
    t3 = rng.integers(0, 7, (2, 3))
    ga = sk.cross_entropy(x3, t3, axis=1, return_grad=True)[1]
    gb = sk.cross_entropy(x3, t3, axis=1, return_grad=True, out=x3)[1]
    np.testing.assert_allclose(gb, ga)


def test_probability_targets_keep_their_dtype():
    # a float32 probability target is read as it is: the same bits as its float64
    # widening, and no float64 copy of the target (was twice the logits' size)
    rng = np.random.default_rng(11)
    x = (rng.standard_normal((64, 1000)) * 3).astype(np.float32)
    q = sk.softmax(rng.standard_normal((64, 1000))).astype(np.float32)
    q[:, :5] = 0
    x[0, 3] = -np.inf
    for kw in ({}, {"label_smoothing": 0.1, "weight": rng.random(1000)}, {"z_loss": 1e-3}):
        a = sk.cross_entropy(x, q, return_grad=True, **kw)
        b = sk.cross_entropy(x, q.astype(np.float64), return_grad=True, **kw)
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
    np.testing.assert_allclose(
        sk.cross_entropy(x, q, reduction="none"),
        ref.cross_entropy(x.astype(np.float64), q.astype(np.float64), reduction="none"),
        rtol=1e-6,
    )
    big = rng.standard_normal((256, 4096)).astype(np.float32)
    qb = np.full(big.shape, 1 / 4096, dtype=np.float32)
    sk.cross_entropy(big, qb)
    _, peak = traced(lambda: sk.cross_entropy(big, qb))
    assert peak <= 0.05 * big.nbytes, peak / big.nbytes


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize(
    "opts",
    [
        {},
        {"weight": True, "label_smoothing": 0.15},
        {"label_smoothing": 0.1, "temperature": 1.3},
        {"z_loss": 1e-2, "temperature": 0.7, "reduction": "sum"},
        {"weight": True, "z_loss": 1e-3, "reduction": "none"},
    ],
)
def test_probability_targets_long_rows_vs_reference(dtype, opts):
    # rows long enough for the vectorised fast path (and its remainder loops), mixed
    # with rows that take the exact path (an inf logit, a -inf logit, a NaN logit; a
    # NaN target is a ValueError since issue 18: test_loss_extremes.py)
    rng = np.random.default_rng(12)
    R, C = 7, 203
    x = (rng.standard_normal((R, C)) * 4).astype(dtype)
    q = rng.random((R, C))
    q[:, ::5] = 0
    q /= q.sum(-1, keepdims=True)
    x[4, 7] = np.inf
    x[5, 9] = -np.inf
    q[5, 9] = 0
    x[6, 3] = np.nan
    kw = dict(opts)
    if kw.pop("weight", False):
        kw["weight"] = rng.random(C) + 0.5
    kw.setdefault("reduction", "none")
    loss, grad = sk.cross_entropy(x, q, return_grad=True, **kw)
    rl, rg = ref.cross_entropy(x.astype(np.float64), q, return_grad=True, **kw)
    tol = 1e-12 if dtype == np.float64 else 2e-6
    np.testing.assert_allclose(loss, rl, rtol=tol, atol=tol)
    np.testing.assert_allclose(grad, rg, rtol=tol, atol=tol)
    assert np.isnan(grad[6]).all()


def test_errors_name_the_position():
    x = np.zeros((3, 4))
    with pytest.raises(ValueError, match=r"target\[1\] = 4 is not a class index in \[0, 4\)"):
        sk.cross_entropy(x, [0, 4, 1])
    with pytest.raises(ValueError, match=r"target\[2\] = -1 .*ignore_index=-100"):
        sk.cross_entropy(x, [0, 1, -1], ignore_index=-100)
    with pytest.raises(ValueError, match=r"target\[0, 1\] = 1.5 is not an integer"):
        sk.cross_entropy(np.zeros((2, 2, 3)), np.array([[0, 1.5], [1, 1]]))
    with pytest.raises(ValueError, match=r"target has shape \(3, 5\); expected \(3,\)"):
        sk.cross_entropy(x, np.zeros((3, 5)))
    with pytest.raises(TypeError, match="integer dtype; got dtype bool"):
        sk.cross_entropy(x, np.array([True, False, True]))
    with pytest.raises(ValueError, match="reduction must be one of"):
        sk.cross_entropy(x, [0, 1, 2], reduction="avg")
    with pytest.raises(ValueError, match=r"label_smoothing must be finite and in \[0.0, 1.0\]"):
        sk.cross_entropy(x, [0, 1, 2], label_smoothing=1.5)
    with pytest.raises(ValueError, match="z_loss"):
        sk.cross_entropy(x, [0, 1, 2], z_loss=-1)
    with pytest.raises(ValueError, match=r"weight must have shape \(4,\)"):
        sk.cross_entropy(x, [0, 1, 2], weight=np.ones(3))
    with pytest.raises(ValueError, match="return_grad"):
        sk.cross_entropy(x, [0, 1, 2], out=np.empty_like(x))
    with pytest.raises(TypeError, match="single int"):
        sk.cross_entropy(x, [0, 1, 2], axis=(0, 1))
    with pytest.raises(ValueError, match="temperature"):
        sk.cross_entropy(x, [0, 1, 2], temperature=0)
    with pytest.raises(ValueError, match=r"out has shape"):
        sk.cross_entropy(x, [0, 1, 2], return_grad=True, out=np.empty((2, 2)))


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 6),
    c=st.integers(1, 9),
    eps=st.floats(0, 1),
    shift=st.floats(-1e3, 1e3),
    seed=st.integers(0, 2**16),
)
def test_properties(n, c, eps, shift, seed):
    rng = _rng(seed)
    x = rng.normal(size=(n, c)) * 3
    t = rng.integers(0, c, n)
    loss, g = sk.cross_entropy(x, t, label_smoothing=eps, return_grad=True)
    assert loss >= -1e-12
    np.testing.assert_allclose(g.sum(axis=1), 0.0, atol=1e-12)  # sum(p - q) = 0
    # shift invariance of loss and gradient
    l2, g2 = sk.cross_entropy(x + shift, t, label_smoothing=eps, return_grad=True)
    np.testing.assert_allclose(l2, loss, rtol=1e-9, atol=1e-9 * (1 + abs(shift)))
    np.testing.assert_allclose(g2, g, atol=1e-9)
    # reductions agree
    per = sk.cross_entropy(x, t, label_smoothing=eps, reduction="none")
    np.testing.assert_allclose(per.mean(), loss, rtol=1e-12)
    per0 = sk.cross_entropy(x, t, reduction="none")
    np.testing.assert_allclose(sk.cross_entropy(x, t, reduction="sum"), per0.sum(), rtol=1e-12)
    # one-hot probabilities == indices
    y = np.eye(c)[t]
    np.testing.assert_allclose(
        sk.cross_entropy(x, y, label_smoothing=eps), loss, rtol=1e-12, atol=1e-12
    )


# ---------------------------------------------------------------------------
# max-margin and hinge losses
# ---------------------------------------------------------------------------


def test_max_margin_seed_example():
    scores = [0.5, 0.2, -0.1, 1.0, -0.5, 0.3]  # B = 2, N = 2 (the seed question)
    loss, g = sk.max_margin_loss(scores, 2, return_grad=True)
    # pairs: 1-0.5+0.2=0.7, 1-0.5-0.1=0.4, 1-1-0.5<0, 1-1+0.3=0.3
    np.testing.assert_allclose(loss, 1.4, rtol=1e-14)
    np.testing.assert_allclose(g, [-2, 1, 1, -1, 0, 1])
    np.testing.assert_allclose(ref.max_margin_loss(scores, 2), 1.4, rtol=1e-14)
    with pytest.raises(ValueError, match="length 6, which is not a multiple of num_negatives"):
        sk.max_margin_loss(scores, 3)
    with pytest.raises(ValueError, match="num_negatives must be >= 0"):
        sk.max_margin_loss(scores, -1)


@pytest.mark.parametrize("reduction", ["sum", "mean", "none"])
def test_max_margin_vs_torch_margin_ranking(reduction):
    rng = _rng(8)
    pos = rng.normal(size=(4,))
    neg = rng.normal(size=(4, 3))
    loss, (gp, gn) = sk.max_margin_loss_split(
        pos, neg, margin=0.6, reduction=reduction, return_grad=True
    )
    tp = torch.tensor(pos, requires_grad=True)
    tn = torch.tensor(neg, requires_grad=True)
    tl = F.margin_ranking_loss(
        tp[:, None].expand(4, 3), tn, torch.ones(4, 3, dtype=torch.float64), margin=0.6,
        reduction=reduction,
    )  # fmt: skip
    tl.sum().backward()
    np.testing.assert_allclose(loss, tl.detach().numpy(), rtol=1e-13)
    np.testing.assert_allclose(gp, tp.grad.numpy(), rtol=1e-13)
    np.testing.assert_allclose(gn, tn.grad.numpy(), rtol=1e-13)
    np.testing.assert_allclose(
        loss, ref.max_margin_loss_split(pos, neg, margin=0.6, reduction=reduction), rtol=1e-13
    )
    # interleaved layout == split layout
    inter = np.concatenate([pos[:, None], neg], axis=1).reshape(-1)
    l2, g2 = sk.max_margin_loss(inter, 3, margin=0.6, reduction=reduction, return_grad=True)
    np.testing.assert_allclose(l2, loss)
    np.testing.assert_allclose(g2.reshape(4, 4)[:, 0], gp)


@pytest.mark.parametrize("p", [1, 2])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weighted", [False, True])
def test_weston_watkins_vs_torch(p, reduction, weighted):
    rng = _rng(12)
    x = rng.normal(size=(9, C))
    t = rng.integers(0, C, 9)
    w = rng.uniform(0.5, 2, C) if weighted else None
    loss, g = sk.multiclass_hinge_loss(
        x, t, p=p, margin=0.8, weight=w, reduction=reduction, return_grad=True
    )
    xt = torch.tensor(x, requires_grad=True)
    tl = F.multi_margin_loss(
        xt, torch.tensor(t), p=p, margin=0.8, reduction=reduction,
        weight=None if w is None else torch.tensor(w),
    )  # fmt: skip
    tl.sum().backward()
    np.testing.assert_allclose(loss, tl.detach().numpy(), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(g, xt.grad.numpy(), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(
        loss,
        ref.multiclass_hinge_loss(x, t, p=p, margin=0.8, weight=w, reduction=reduction),
        rtol=1e-12,
    )


def _hinge_oracle(x, t, w, mg, p, kind):
    # whole-array NumPy formulas in float64 (the pre-kernel implementation)
    R, C = x.shape
    rows = np.arange(R)
    xt = x[rows, t][:, None]
    wt = w[t]
    onehot = np.zeros(x.shape, dtype=bool)
    onehot[rows, t] = True
    with np.errstate(invalid="ignore"):
        if kind == "weston_watkins":
            viol = mg - xt + x
            h = np.where(onehot, 0.0, np.maximum(viol, 0.0))
            per = wt * np.sum(h**p, axis=1) / C
            dh = np.where(onehot | ~(viol > 0), 0.0, p * h ** (p - 1)) * (wt / C)[:, None]
            gx = dh.copy()
            gx[rows, t] -= dh.sum(axis=1)
        else:
            other = np.where(onehot, -np.inf, x)
            js = np.argmax(other, axis=1)
            viol = mg + other[rows, js] - xt[:, 0]
            h = np.maximum(viol, 0.0)
            per = wt * h**p
            dv = np.where(viol > 0, p * h ** (p - 1), 0.0) * wt
            gx = np.zeros(x.shape)
            gx[rows, js] += dv
            gx[rows, t] -= dv
    bad = np.isnan(x).any(axis=1)
    per[bad] = np.nan
    gx[bad] = np.nan
    return per, gx


@pytest.mark.parametrize("kind", ["weston_watkins", "crammer_singer"])
@pytest.mark.parametrize("p", [1, 2])
def test_hinge_kernel_vs_numpy_formulas(kind, p):
    # the Numba kernel against the whole-array NumPy formulas: NaN and inf rows, an
    # inf target logit, classes on axis 0, both dtypes, mean and none reductions;
    # PyTorch for Weston-Watkins; peak memory of the gradient alone (the NumPy
    # version held several float64 copies of the logits)
    rng = _rng(21)
    x = rng.normal(size=(700, 301))
    t = rng.integers(0, 301, 700)
    x[5, 3] = np.nan
    x[400, 7] = np.inf
    x[401, t[401]] = np.inf
    x[402, :] = -np.inf
    t[10] = 0
    x[10, [20, 30]] = 5.0  # a tie: the first maximising class gets Crammer-Singer's gradient
    w = rng.uniform(0.5, 2, 301)
    opts = dict(p=p, kind=kind, weight=w, margin=0.7, return_grad=True)
    for dtype, tol in ((np.float64, 1e-13), (np.float32, 1e-6)):
        xd = x.astype(dtype)
        per, gx = _hinge_oracle(xd.astype(np.float64), t, w, 0.7, p, kind)
        loss, g = sk.multiclass_hinge_loss(xd.T, t, axis=0, reduction="none", **opts)
        assert loss.dtype == dtype and g.dtype == dtype
        np.testing.assert_allclose(loss, per, rtol=tol, atol=tol)
        np.testing.assert_allclose(g.T, gx, rtol=tol, atol=tol)
        loss, g = sk.multiclass_hinge_loss(np.delete(xd, 5, 0), np.delete(t, 5), **opts)
        keep = np.arange(700) != 5
        with np.errstate(invalid="ignore"):
            np.testing.assert_allclose(loss, np.mean(per[keep]), rtol=tol)
        np.testing.assert_allclose(g, gx[keep] / 699, rtol=tol, atol=tol)
    if kind == "weston_watkins":
        xs = np.where(np.isfinite(x), x, 0)
        xt = torch.tensor(xs, requires_grad=True)
        F.multi_margin_loss(xt, torch.tensor(t), p=p, margin=0.7, weight=torch.tensor(w)).backward()
        got = sk.multiclass_hinge_loss(xs, t, **opts)[1]
        np.testing.assert_allclose(got, xt.grad.numpy(), rtol=1e-12, atol=1e-15)
    big = rng.normal(size=(4096, 512))
    tb = rng.integers(0, 512, 4096)
    for want_grad, allowed in ((True, big.nbytes), (False, 0)):

        def call(want_grad=want_grad):
            return sk.multiclass_hinge_loss(big, tb, kind=kind, return_grad=want_grad)

        call()
        _, peak = traced(call)
        assert peak <= allowed + 2**18, (want_grad, peak / big.nbytes)


@pytest.mark.parametrize("p", [1, 2])
def test_crammer_singer_vs_formula_and_fd(p):
    rng = _rng(13)
    x = rng.normal(size=(7, C))
    t = rng.integers(0, C, 7)
    w = rng.uniform(0.5, 2, C)
    loss, g = sk.multiclass_hinge_loss(
        x, t, p=p, weight=w, kind="crammer_singer", reduction="sum", return_grad=True
    )
    # optax's definition: max_j(s_j + 1 - [j == y]) - s_y
    onehot = np.eye(C)[t]
    optax_like = np.max(x + 1.0 - onehot, axis=1) - np.sum(x * onehot, axis=1)
    np.testing.assert_allclose(loss, np.sum(w[t] * optax_like**p), rtol=1e-13)
    np.testing.assert_allclose(
        loss,
        ref.multiclass_hinge_loss(x, t, p=p, weight=w, kind="crammer_singer", reduction="sum"),
        rtol=1e-13,
    )

    def f(xx):
        return float(
            sk.multiclass_hinge_loss(xx, t, p=p, weight=w, kind="crammer_singer", reduction="sum")
        )

    np.testing.assert_allclose(g, _fd_grad(f, x), rtol=1e-6, atol=1e-7)


def test_crammer_singer_vs_sklearn():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = _rng(14)
    x = rng.normal(size=(20, 4))
    t = rng.integers(0, 4, 20)
    expected = metrics.hinge_loss(t, x, labels=np.arange(4))
    np.testing.assert_allclose(sk.multiclass_hinge_loss(x, t, kind="crammer_singer"), expected)


def test_hinge_errors():
    with pytest.raises(ValueError, match="p must be 1 or 2"):
        sk.multiclass_hinge_loss(np.zeros((2, 3)), [0, 1], p=3)
    with pytest.raises(ValueError, match="kind must be one of"):
        sk.multiclass_hinge_loss(np.zeros((2, 3)), [0, 1], kind="svm")
    with pytest.raises(ValueError, match=r"target\[1\] = 3"):
        sk.multiclass_hinge_loss(np.zeros((2, 3)), [0, 3])
    with pytest.raises(ValueError, match="negatives must have shape"):
        sk.max_margin_loss_split(np.zeros(3), np.zeros((2, 2)))


def test_no_mutation_of_inputs():
    rng = _rng(15)
    x = rng.normal(size=(4, C))
    x.setflags(write=False)  # a write would raise
    t = rng.integers(0, C, 4)
    t.setflags(write=False)
    w = np.ones(C)
    w.setflags(write=False)
    sk.cross_entropy(x, t, weight=w, return_grad=True, label_smoothing=0.1, z_loss=0.1)
    sk.cross_entropy(x, np.full_like(x, 0.2), return_grad=True)
    sk.multiclass_hinge_loss(x, t, return_grad=True, weight=w)
    sk.multiclass_hinge_loss(x, t, return_grad=True, kind="crammer_singer")
    sk.max_margin_loss(x.reshape(-1), 4, return_grad=True)
    sk.max_margin_loss_split(x[:, 0], x[:, 1:], return_grad=True)
    W = rng.normal(size=(7, C))
    W.setflags(write=False)
    sk.linear_cross_entropy(x, W, t, return_grad=True, chunk_size=3)


def test_demo_steps_of_the_losses_plugin():
    import io

    from softmaxkit.cli import core as cli
    from softmaxkit.cli import losses as _cli_losses

    assert "softmaxkit.cli.losses" in cli._PLUGINS
    buf = io.StringIO()
    for step in _cli_losses.DEMO_STEPS:
        step(buf)
    text = buf.getvalue()
    assert "[inf inf inf]" in text and "[1803.6253 1603.2224 1402.8196]" in text
    assert "nan" in text.split("naive gradient")[1].split("\n")[0]
    assert "softmaxkit.max_margin_loss(scores, 2)      = 1.4" in text
    assert "all -inf row: naive gradient [nan nan nan], softmax_vjp [0. 0. 0.]" in text


def test_shapes_dtypes_and_empty_inputs():
    loss, g = sk.cross_entropy(np.zeros((0, 5)), np.zeros(0, int), return_grad=True)
    assert loss == 0.0 and g.shape == (0, 5)
    loss, g = sk.cross_entropy(np.zeros((3, 0)), np.zeros((3, 0)), return_grad=True)
    assert loss == 0.0 and g.shape == (3, 0)
    # 1-D logits with a scalar index target; float16 computed in float32
    x = np.array([1.0, 2.0, 3.0])
    loss, g = sk.cross_entropy(x, 2, return_grad=True)
    p = np.exp(x) / np.exp(x).sum()
    np.testing.assert_allclose(loss, -np.log(p[2]), rtol=1e-14)
    np.testing.assert_allclose(g, p - [0, 0, 1], rtol=1e-14)
    l16, g16 = sk.cross_entropy(x.astype(np.float16), 2, return_grad=True)
    assert l16.dtype == np.float16 and g16.dtype == np.float16
    np.testing.assert_allclose(g16, g, rtol=2e-3, atol=1e-3)
    lint, _ = sk.cross_entropy(np.array([[1, 2, 3]]), [2], return_grad=True)
    assert lint.dtype == np.float64
    with pytest.raises(ValueError, match=r"target = 5 is not a class index"):
        sk.cross_entropy(x, 5)
    assert sk.multiclass_hinge_loss(np.zeros((0, 3)), np.zeros(0, int)) == 0.0
    assert sk.max_margin_loss(np.zeros(0), 2) == 0.0


@pytest.mark.parametrize("kind", ["weston_watkins", "crammer_singer"])
def test_hinge_empty_inputs(kind):
    # no rows, and no rows of no classes (reshape(-1, 0) used to raise)
    for shape in ((0, 0), (0, 4), (2, 0, 3)):
        x = np.zeros(shape)
        t = np.zeros(shape[:1] + shape[2:] if len(shape) == 3 else shape[:1], int)
        if len(shape) == 3:
            with pytest.raises(ValueError, match="target"):
                sk.multiclass_hinge_loss(x, t, axis=1, kind=kind)
            continue
        loss, g = sk.multiclass_hinge_loss(x, t, kind=kind, return_grad=True)
        assert loss == 0.0 and g.shape == shape
        per = sk.multiclass_hinge_loss(x, t, kind=kind, reduction="none")
        assert per.shape == (0,)


@pytest.mark.parametrize("kw", [{}, {"label_smoothing": 0.1, "z_loss": 1e-3}, {"prob": True}])
def test_empty_rows_found_after_the_kernel_without_a_full_scan(monkeypatch, kw):
    # Without a mask, rows of all -inf are found from the rows whose loss comes out
    # non-finite: no scan of every row for a plain input, the few non-finite rows
    # scanned (a NaN row is not empty), and a full scan + second kernel run only when
    # one is empty.  A gradient written over the logits scans first.
    from softmaxkit._kernels import losses as klosses

    scans = []
    real = klosses.row_nonempty
    monkeypatch.setattr(
        klosses, "row_nonempty", lambda x2, *a: scans.append(x2.shape[0]) or real(x2, *a)
    )
    kw = dict(kw)
    rng = np.random.default_rng(5)
    x = rng.standard_normal((50, 40)).astype(np.float32)
    t = rng.integers(0, 40, 50)
    if kw.pop("prob", False):
        t = sk.softmax(rng.standard_normal((50, 40)))
    sk.cross_entropy(x, t, return_grad=True, **kw)
    assert scans == []
    x[9, 3] = np.nan
    for empty, want in (([], [1]), ([7, 30], [3, 50])):
        xe = x.copy()
        xe[empty] = -np.inf
        scans.clear()
        loss, g = sk.cross_entropy(xe, t, reduction="none", return_grad=True, **kw)
        assert scans == want
        r_loss, r_g = ref.cross_entropy(xe, t, reduction="none", return_grad=True, **kw)
        np.testing.assert_allclose(loss, r_loss, rtol=2e-6, atol=1e-6)
        np.testing.assert_allclose(g, r_g, rtol=2e-6, atol=1e-6)
        assert np.all(loss[empty] == 0) and np.all(g[empty] == 0)
        scans.clear()
        lm = sk.cross_entropy(np.delete(xe, 9, axis=0), np.delete(t, 9, axis=0), **kw)
        keep = [i for i in range(50) if i not in (9, *empty)]
        np.testing.assert_allclose(lm, ref.cross_entropy(xe[keep], t[keep], **kw), rtol=2e-6)
    scans.clear()
    xo = xe.copy()
    sk.cross_entropy(xo, t, return_grad=True, out=xo, **kw)  # the gradient over the logits
    assert scans == [50]
    np.testing.assert_allclose(xo, g / 48, rtol=2e-6, atol=1e-7)


def _ro(a):
    a = np.array(a)
    a.flags.writeable = False
    return a


def test_read_only_inputs_are_not_copied():
    """A read-only input (a memory map, a JAX buffer, a broadcast view) is read in
    place: the kernels take their inputs read-only, one compiled variant for every
    caller.  These calls used to copy a read-only input whole (tracemalloc: NumPy's
    allocations), and give the same results as on a writeable copy."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((512, 1000)).astype(np.float32)
    t = rng.integers(0, 1000, 512)
    q = sk.softmax(rng.standard_normal((512, 1000)).astype(np.float32))
    y, g = sk.softmax(x), np.ones_like(x)
    grad = np.empty_like(x)
    xr, tr, qr, yr, gr = _ro(x), _ro(t), _ro(q), _ro(y), _ro(g)
    calls = {
        "cross_entropy": lambda a, b: sk.cross_entropy(a, b),
        "cross_entropy grad out=": lambda a, b: sk.cross_entropy(a, b, return_grad=True, out=grad)[
            0
        ],
        "cross_entropy probs": lambda a, b: sk.cross_entropy(a, qr if b is tr else q),
        "multiclass_hinge_loss": lambda a, b: sk.multiclass_hinge_loss(a, b),
        "kl_divergence": lambda a, b: sk.kl_divergence(a, qr if b is tr else q),
        "softmax_vjp out=": lambda a, b: sk.softmax_vjp(
            yr if b is tr else y, gr if b is tr else g, out=grad
        ),
    }
    for name, call in calls.items():
        want = np.asarray(call(x, t)).copy()
        call(xr, tr)
        got, peak = traced(lambda call=call: call(xr, tr))
        got = np.asarray(got).copy()
        np.testing.assert_array_equal(got, want, err_msg=name)
        assert peak < x.nbytes // 4, (name, peak / x.nbytes)
