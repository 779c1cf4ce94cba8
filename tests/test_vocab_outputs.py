"""Per-token outputs of cross_entropy / linear_cross_entropy (issue 21, first part):
lse, target log-prob, entropy, argmax, top-K, softcap, per-token temperature, and the
fused gradients of the entropy / log-prob terms."""

from __future__ import annotations

import numpy as np
import pytest
from _peak import traced
from hypothesis import given, settings
from hypothesis import strategies as st

import softmaxkit as sk
from softmaxkit._vocab import CrossEntropyOutput
from softmaxkit.reference import _vocab as rv

torch = pytest.importorskip("torch")

ALL = dict(return_lse=True, return_logprob=True, return_entropy=True, return_argmax=True)
FIELDS = ("lse", "logprob", "entropy", "argmax", "topk_logprobs", "topk_ids")


def _data(R=9, V=37, seed=0, dtype=np.float64, scale=3.0):
    rng = np.random.default_rng(seed)
    x = (rng.normal(size=(R, V)) * scale).astype(dtype)
    t = rng.integers(0, V, R)
    return x, t


def _check(res, want, rtol, atol):
    for f in FIELDS:
        got = getattr(res, f)
        if f in ("argmax", "topk_ids"):
            np.testing.assert_array_equal(got, want[f], err_msg=f)
        else:
            np.testing.assert_allclose(got, want[f], rtol=rtol, atol=atol, err_msg=f)


CASES = [
    dict(),
    dict(temperature=0.6),
    dict(temperature="per-token"),
    dict(softcap=4.0),
    dict(softcap=2.5, temperature="per-token"),
    dict(where="mask"),
    dict(ignore_index=-1),
    dict(where="mask", softcap=3.0, temperature=1.7),
]


def _opts(case, R, V, t, seed=3):
    o = dict(case)
    rng = np.random.default_rng(seed)
    if o.get("temperature") == "per-token":
        o["temperature"] = rng.uniform(0.3, 2.5, R)
    if o.get("where") == "mask":
        m = rng.random((R, V)) > 0.4
        m[np.arange(R), t] = True
        o["where"] = m
    if "ignore_index" in o:
        t = t.copy()
        t[[1, 4]] = -1
    return o, t


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_outputs_match_reference(case, dtype):
    x, t = _data(dtype=dtype)
    o, t = _opts(case, *x.shape, t)
    res = sk.cross_entropy(x, t, **ALL, topk=5, **o)
    assert isinstance(res, CrossEntropyOutput) and res.grad is None
    want = rv.vocab_outputs(x, t, topk=5, **o)
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)
    _check(res, want, **tol)
    assert res.lse.dtype == dtype and res.argmax.dtype == np.int64
    np.testing.assert_allclose(res.loss, rv.vocab_loss(x, t, **o), **tol)


def test_class_axis_and_batch_shape():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(3, 11, 4))  # classes on axis 1 (PyTorch's layout)
    t = rng.integers(0, 11, (3, 4))
    res = sk.cross_entropy(x, t, axis=1, **ALL, topk=2, reduction="none")
    want = rv.vocab_outputs(np.moveaxis(x, 1, -1), t, topk=2)
    _check(res, want, 1e-12, 1e-12)
    assert res.loss.shape == (3, 4) and res.topk_ids.shape == (3, 4, 2)
    np.testing.assert_allclose(res.loss, sk.cross_entropy(x, t, axis=1, reduction="none"))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_against_torch(dtype):
    x, t = _data(R=16, V=300, dtype=dtype, seed=7)
    res = sk.cross_entropy(x, t, **ALL, topk=5, temperature=0.8)
    xt = torch.from_numpy(x) / 0.8
    lsm = torch.log_softmax(xt, -1)
    tol = dict(rtol=2e-5, atol=2e-5) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(res.lse, torch.logsumexp(xt, -1).numpy(), **tol)
    np.testing.assert_allclose(
        res.logprob, lsm.gather(-1, torch.from_numpy(t)[:, None])[:, 0], **tol
    )
    ent = torch.distributions.Categorical(logits=xt).entropy().numpy()
    np.testing.assert_allclose(res.entropy, ent, **tol)
    np.testing.assert_array_equal(res.argmax, torch.argmax(xt, -1).numpy())
    tv, ti = torch.topk(lsm, 5, dim=-1)
    np.testing.assert_array_equal(res.topk_ids, ti.numpy())
    np.testing.assert_allclose(res.topk_logprobs, tv.numpy(), **tol)
    loss = torch.nn.functional.cross_entropy(xt.double(), torch.from_numpy(t))
    np.testing.assert_allclose(res.loss, loss.item(), **tol)


def test_edge_rows_exact():
    inf = np.inf
    x = np.array(
        [
            [1.0, inf, 2.0, inf, inf],  # mass on 3 +inf entries: entropy log 3
            [-inf, -inf, -inf, -inf, -inf],  # all -inf: lse -inf, entropy 0
            [3.0, -inf, -inf, -inf, -inf],  # a single finite class: entropy 0
            [0.0, 0.0, 0.0, 0.0, 0.0],  # uniform: log 5
            [1.0, 2.0, 3.0, 4.0, 5.0],  # all masked below
            [0.5, -inf, 0.5, 7.0, 1.0],  # the max masked, -inf included
        ]
    )
    where = np.ones_like(x, bool)
    where[4] = False
    where[5, 3] = False
    t = np.array([1, 0, 0, 2, 0, 0])
    res = sk.cross_entropy(x, t, where=where, **ALL, topk=2, reduction="none")
    assert res.entropy[0] == pytest.approx(np.log(3), abs=1e-15)
    assert res.lse[0] == inf and res.logprob[0] == pytest.approx(-np.log(3))
    assert res.argmax[0] == 1 and list(res.topk_ids[0]) == [1, 3]
    assert res.lse[1] == -inf and res.entropy[1] == 0.0 and res.logprob[1] == -inf
    assert res.loss[1] == 0.0  # an empty row is not counted (the dense contract)
    assert res.entropy[2] == 0.0 and res.logprob[2] == 0.0 and res.lse[2] == 3.0
    assert res.entropy[3] == pytest.approx(np.log(5), rel=1e-15)
    assert res.lse[4] == -inf and res.entropy[4] == 0.0 and res.argmax[4] == -1
    w5 = rv.vocab_outputs(x[5:], t[5:], where=where[5:], topk=2)
    assert res.entropy[5] == pytest.approx(w5["entropy"][0], rel=1e-14)
    assert res.argmax[5] == 4
    nanrow = sk.cross_entropy(np.array([[0.0, np.nan, 1.0]]), [0], **ALL, reduction="none")
    assert np.isnan(nanrow.entropy[0]) and np.isnan(nanrow.lse[0]) and nanrow.argmax[0] == 1


_vals = st.sampled_from([-np.inf, np.inf, -1e4, 0.0, 1.0]) | st.floats(-30, 30)


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 6).flatmap(
        lambda V: st.tuples(
            st.lists(st.lists(_vals, min_size=V, max_size=V), min_size=1, max_size=4),
            st.lists(st.lists(st.booleans(), min_size=V, max_size=V), min_size=4, max_size=4),
        )
    ),
    st.sampled_from([None, 2.0]),
    st.sampled_from([1.0, 0.5]),
)
def test_hypothesis_edges(data, softcap, T):
    rows, masks = data
    x = np.array(rows)
    V = x.shape[1]
    where = np.array(masks[: x.shape[0]])
    t = np.zeros(x.shape[0], dtype=np.int64)
    k = min(2, V)
    res = sk.cross_entropy(x, t, where=where, softcap=softcap, temperature=T, **ALL, topk=k,
                           reduction="none")  # fmt: skip
    want = rv.vocab_outputs(x, t, where=where, softcap=softcap, temperature=T, topk=k)
    _check(res, want, 1e-12, 1e-12)
    assert (res.entropy[np.isfinite(res.entropy)] >= 0).all()


# -- gradients ---------------------------------------------------------------


def _torch_loss(x, t, T, cap, where, weight, ii, eps, z, reduction, ew, lw):
    """The materialised formula in torch (autograd oracle)."""
    y = cap * torch.tanh(x / cap) if cap else x
    v = y / torch.as_tensor(T, dtype=x.dtype).reshape(-1, 1) if np.ndim(T) else y / T
    if where is not None:
        v = v.masked_fill(~torch.from_numpy(where), -torch.inf)
    tt = torch.from_numpy(t)
    active = tt != ii if ii is not None else torch.ones_like(tt, dtype=torch.bool)
    ts = torch.where(active, tt, 0)
    lsm = torch.log_softmax(v, -1)
    incl = torch.ones_like(v, dtype=torch.bool) if where is None else torch.from_numpy(where)
    cnt = incl.sum(-1)
    lpt = lsm.gather(-1, ts[:, None])[:, 0]
    smooth = -torch.where(incl, lsm, 0.0).sum(-1) / cnt
    ce = (1 - eps) * -lpt + eps * smooth
    wt = torch.from_numpy(weight)[ts] if weight is not None else torch.ones_like(ce)
    lse = torch.logsumexp(v, -1)
    lsafe = torch.where(incl, lsm, 0.0)  # no 0 * -inf in the backward either
    H = -(lsafe.exp() * torch.where(incl, 1.0, 0.0) * lsafe).sum(-1)
    extra = z * lse**2
    if ew is not None:
        extra = extra + torch.as_tensor(ew, dtype=x.dtype) * H
    if lw is not None:
        extra = extra + torch.as_tensor(lw, dtype=x.dtype) * lpt
    a = active.to(x.dtype)
    if reduction == "sum":
        return (a * wt * ce).sum() + (a * extra).sum()
    return (a * wt * ce).sum() / (a * wt).sum() + (a * extra).sum() / a.sum()


GRAD_CASES = [
    dict(entropy_weight=0.3),
    dict(logprob_weight="adv"),
    dict(entropy_weight="adv", logprob_weight="adv", reduction="sum"),
    dict(softcap=3.0, entropy_weight=-0.1, logprob_weight=0.5),
    dict(temperature="per-token", softcap=2.0, entropy_weight="adv", label_smoothing=0.1),
    dict(where="mask", ignore_index=-1, weight="w", z_loss=0.01, logprob_weight="adv",
         entropy_weight=0.2),
]  # fmt: skip


def _grad_opts(case, R, V, t):
    o, t = _opts(case, R, V, t)
    rng = np.random.default_rng(11)
    for key in ("entropy_weight", "logprob_weight"):
        if o.get(key) == "adv":
            o[key] = rng.normal(size=R)
    if o.get("weight") == "w":
        o["weight"] = rng.uniform(0.5, 2.0, V)
    return o, t


@pytest.mark.parametrize("case", GRAD_CASES)
def test_grad_vs_torch_autograd(case):
    x, t = _data(R=7, V=13, seed=2)
    o, t = _grad_opts(case, *x.shape, t)
    x0 = x.copy()
    res = sk.cross_entropy(x, t, return_grad=True, return_entropy=True, **o)
    np.testing.assert_array_equal(x, x0)  # input not mutated
    xt = torch.from_numpy(x).requires_grad_()
    L = _torch_loss(
        xt, t, o.get("temperature", 1.0), o.get("softcap"), o.get("where"), o.get("weight"),
        o.get("ignore_index"), o.get("label_smoothing", 0.0), o.get("z_loss", 0.0),
        o.get("reduction", "mean"), o.get("entropy_weight"), o.get("logprob_weight"),
    )  # fmt: skip
    L.backward()
    np.testing.assert_allclose(res.loss, L.item(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(res.grad, xt.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(res.loss, rv.vocab_loss(x, t, **o), rtol=1e-12, atol=1e-12)


def test_grad_central_differences():
    x, t = _data(R=4, V=6, seed=4, scale=1.5)
    rng = np.random.default_rng(0)
    o = dict(softcap=2.0, temperature=rng.uniform(0.5, 2, 4), entropy_weight=rng.normal(size=4),
             logprob_weight=rng.normal(size=4), label_smoothing=0.05, reduction="sum")  # fmt: skip
    _, g = sk.cross_entropy(x, t, return_grad=True, **o)
    h = 1e-6
    num = np.empty_like(x)
    for idx in np.ndindex(x.shape):
        xp, xm = x.copy(), x.copy()
        xp[idx] += h
        xm[idx] -= h
        num[idx] = (sk.cross_entropy(xp, t, **o) - sk.cross_entropy(xm, t, **o)) / (2 * h)
    np.testing.assert_allclose(g, num, rtol=1e-6, atol=1e-8)


def test_plain_calls_unchanged_and_out():
    x, t = _data()
    # no new option: the old return types
    assert np.ndim(sk.cross_entropy(x, t)) == 0
    loss, g = sk.cross_entropy(x, t, return_grad=True, softcap=5.0)
    assert isinstance(loss, np.floating) and g.shape == x.shape
    l0, g0 = sk.cross_entropy(x, t, return_grad=True)
    l1, g1 = sk.cross_entropy(x, t, return_grad=True, temperature=np.ones(len(t)))
    np.testing.assert_allclose(l1, l0, rtol=1e-14)
    np.testing.assert_allclose(g1, g0, rtol=1e-12, atol=1e-15)
    out = np.empty_like(x)
    res = sk.cross_entropy(x, t, return_grad=True, return_lse=True, out=out)
    assert res.grad is out and res.entropy is None and res.topk_ids is None
    np.testing.assert_allclose(out, g0, rtol=1e-12, atol=1e-15)


# -- linear_cross_entropy ----------------------------------------------------


def _lin(N=10, d=5, V=29, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    h = rng.normal(size=(N, d)).astype(dtype)
    W = rng.normal(size=(V, d)).astype(dtype)
    b = rng.normal(size=V).astype(dtype)
    return h, W, b, rng.integers(0, V, N)


@pytest.mark.parametrize("chunk", [None, 1, 3, 10])
@pytest.mark.parametrize(
    "case",
    [dict(), dict(softcap=3.0, temperature="per-token"), dict(where="mask", ignore_index=-1)],
)
def test_linear_matches_dense(chunk, case):
    h, W, b, t = _lin()
    o, t = _opts(case, h.shape[0], W.shape[0], t)
    rng = np.random.default_rng(1)
    o.update(entropy_weight=rng.normal(size=len(t)), logprob_weight=rng.normal(size=len(t)))
    res = sk.linear_cross_entropy(h, W, t, bias=b, chunk_size=chunk, **ALL, topk=3,
                                  return_grad=True, **o)  # fmt: skip
    z = h @ W.T + b
    dense = sk.cross_entropy(z, t, **ALL, topk=3, return_grad=True, **o)
    _check(res, {f: getattr(dense, f) for f in FIELDS}, 1e-12, 1e-12)
    np.testing.assert_allclose(res.loss, dense.loss, rtol=1e-12)
    dh, dW, db = res.grad
    G = dense.grad
    np.testing.assert_allclose(dh, G @ W, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(dW, G.T @ h, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(db, G.sum(0), rtol=1e-10, atol=1e-12)
    plain = sk.linear_cross_entropy(h, W, t, bias=b, chunk_size=chunk, return_lse=True, **o)
    assert plain.grad is None
    np.testing.assert_allclose(plain.loss, res.loss, rtol=1e-13)


def test_linear_float32_and_batch_shape():
    h, W, _, t = _lin(N=12, dtype=np.float32)
    h3 = h.reshape(3, 4, -1)
    res = sk.linear_cross_entropy(h3, W, t.reshape(3, 4), **ALL, topk=2, reduction="none")
    assert res.lse.shape == (3, 4) and res.topk_ids.shape == (3, 4, 2)
    assert res.lse.dtype == np.float32
    want = rv.vocab_outputs(h.astype(np.float64) @ W.T.astype(np.float64), t, topk=2)
    np.testing.assert_allclose(res.entropy.reshape(-1), want["entropy"], rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(res.argmax.reshape(-1), want["argmax"])


def test_linear_all_outputs_same_peak_memory():
    rng = np.random.default_rng(0)
    N, d, V = 512, 16, 4096
    h = rng.normal(size=(N, d)).astype(np.float32)
    W = rng.normal(size=(V, d)).astype(np.float32)
    t = rng.integers(0, V, N)
    kw = dict(chunk_size=None)
    full = dict(**ALL, topk=5)
    # compile first: Numba's compiler allocates (traced)
    sk.linear_cross_entropy(h[:4], W, t[:4], **full)
    sk.linear_cross_entropy(h[:4], W, t[:4])
    peaks = []
    for extra in ({}, full):
        peaks.append(traced(lambda extra=extra: sk.linear_cross_entropy(h, W, t, **kw, **extra))[1])
    logits = N * V * 4
    # the loss alone holds one 32 MiB-capped logits buffer (here the whole [N, V]
    # fits it, so compare against the buffer, not a fraction of the logits); the
    # outputs add O(N K) values
    assert peaks[1] <= peaks[0] + 64 * N * 8, peaks
    assert peaks[1] <= logits + 2**20, (peaks, logits)


def test_linear_peak_below_logits():
    # rows are blocked so a block holds at most 32 MiB: at V * 4 bytes * N > 32 MiB
    # the peak stays far below the [N, V] logits (chunk_size caps the block rows)
    rng = np.random.default_rng(0)
    N, d, V = 256, 8, 2048
    h = rng.normal(size=(N, d))
    W = rng.normal(size=(V, d))
    t = rng.integers(0, V, N)
    sk.linear_cross_entropy(h[:2], W, t[:2], chunk_size=16, **ALL, topk=5, return_grad=True)
    _, peak = traced(
        lambda: sk.linear_cross_entropy(h, W, t, chunk_size=16, **ALL, topk=5, return_grad=True)
    )
    grads = (N * d + V * d) * 8
    assert peak - grads < N * V * 8 / 5, peak


# -- bad input ---------------------------------------------------------------


def test_errors():
    x, t = _data()
    with pytest.raises(ValueError, match=r"temperature must be a scalar or have the tokens' shape"):
        sk.cross_entropy(x, t, temperature=np.ones(3))
    with pytest.raises(ValueError, match=r"temperature must be finite and > 0; token 2 has"):
        sk.cross_entropy(x, t, temperature=np.r_[1.0, 1.0, 0.0, np.ones(6)])
    with pytest.raises(ValueError, match="temperature must be finite and > 0"):
        sk.cross_entropy(x, t, temperature=np.full(9, np.inf))
    with pytest.raises(ValueError, match=r"topk must be in \[1, 37\]"):
        sk.cross_entropy(x, t, topk=38)
    with pytest.raises(TypeError, match="topk must be a positive int"):
        sk.cross_entropy(x, t, topk=2.0)
    with pytest.raises(ValueError, match="softcap"):
        sk.cross_entropy(x, t, softcap=-1.0)
    with pytest.raises(ValueError, match="entropy_weight must be finite"):
        sk.cross_entropy(x, t, entropy_weight=np.full(9, np.nan))
    with pytest.raises(TypeError, match="return_lse must be a bool"):
        sk.cross_entropy(x, t, return_lse=1)
    with pytest.raises(TypeError, match="class-index targets"):
        sk.cross_entropy(x, np.full(x.shape, 1 / 37), return_lse=True)
    with pytest.raises(TypeError, match="take NumPy arrays; got a torch array"):
        sk.cross_entropy(torch.from_numpy(x), torch.from_numpy(t), return_lse=True)
    h, W, _, t2 = _lin()
    with pytest.raises(ValueError, match="logprob_weight must be a scalar or have"):
        sk.linear_cross_entropy(h, W, t2, logprob_weight=np.ones((2, 2)))


@pytest.mark.parametrize("softcap", [None, 2.0])
def test_grad_fast_and_exact_paths_agree(softcap):
    # no mask: the vectorised row paths; an all-True mask: the exact per-entry paths
    x, t = _data(R=6, V=1100, seed=9)  # > 2 tiles of 512
    x[0, ::7] = -np.inf
    x[1, 600] = 1e6  # a far max in the second tile
    x[2, 3] = np.nan
    rng = np.random.default_rng(1)
    o = dict(softcap=softcap, temperature=rng.uniform(0.5, 2, 6), entropy_weight=0.3,
             logprob_weight=rng.normal(size=6), label_smoothing=0.1, z_loss=1e-3)  # fmt: skip
    a = sk.cross_entropy(x, t, return_grad=True, **ALL, topk=4, **o)
    b = sk.cross_entropy(x, t, return_grad=True, where=np.ones(x.shape, bool), **ALL, topk=4, **o)
    _check(a, {f: getattr(b, f) for f in FIELDS}, 1e-13, 1e-13)
    np.testing.assert_allclose(a.grad, b.grad, rtol=1e-10, atol=1e-15)
    want = rv.vocab_outputs(x, t, topk=4, softcap=softcap, temperature=o["temperature"])
    _check(a, want, 1e-11, 1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_entropy_rescale_rule_long_rows(dtype):
    # the max grows in every 512-value tile (ascending rows): the (m, s, E) rescale
    # E <- e^{m - m'} (E + s (m - m')) is applied at each tile, masked or not
    rng = np.random.default_rng(3)
    x = (np.linspace(0, 12, 5000) + rng.normal(0, 0.5, (4, 5000))).astype(dtype)
    t = np.array([0, 4999, 2500, 17])
    ent = torch.distributions.Categorical(logits=torch.from_numpy(x).double()).entropy().numpy()
    tol = 1e-5 if dtype == np.float32 else 1e-12
    for where in (None, np.ones(x.shape, bool)):
        res = sk.cross_entropy(x, t, where=where, return_entropy=True, return_lse=True, topk=3)
        np.testing.assert_allclose(res.entropy, ent, rtol=tol)
        np.testing.assert_allclose(res.lse, torch.logsumexp(torch.from_numpy(x).double(), -1),
                                   rtol=tol)  # fmt: skip


@pytest.mark.parametrize(("alpha", "want"), [(1.0, np.nan), (-1.0, np.inf), (0.0, np.inf)])
def test_logprob_term_of_a_target_at_minus_inf_warns_nothing(alpha, want):
    # CE = +inf and alpha * log p_t = alpha * -inf: +inf - inf is NaN (undefined),
    # without a RuntimeWarning (the suite turns warnings into errors)
    x = np.array([[-np.inf, 0.0, 1.0], [0.0, 1.0, 2.0]])
    r = sk.cross_entropy(x, [0, 1], reduction="none", logprob_weight=alpha,
                         return_logprob=True)  # fmt: skip
    assert r.logprob[0] == -np.inf
    np.testing.assert_equal(r.loss[0], want)
    assert np.isfinite(r.loss[1])


def test_per_token_outputs_make_no_input_sized_temporary():
    """The empty-row scan runs in a kernel that stops at each row's first entry above
    -inf: a NumPy ``(x != -inf).any(axis=1)`` made a bool array of the logits' shape
    (a quarter of float32 logits) and read them whole.  Also with a mask, and on a
    read-only input (no copy)."""
    rng = np.random.default_rng(11)
    x = rng.standard_normal((256, 4000)).astype(np.float32)
    x[3] = -np.inf  # an empty row
    t = rng.integers(0, 4000, 256)
    w = rng.random((256, 4000)) > 0.1
    xr = x.copy()
    xr.flags.writeable = False
    for name, call in {
        "plain": lambda: sk.cross_entropy(x, t, return_lse=True),
        "read-only": lambda: sk.cross_entropy(xr, t, return_lse=True),
        "masked": lambda: sk.cross_entropy(x, t, where=w, return_lse=True),
    }.items():
        want = call()
        got, peak = traced(call)
        np.testing.assert_array_equal(got.lse, want.lse)
        assert got.lse[3] == -np.inf
        assert peak < x.nbytes // 16, (name, peak / x.nbytes)
