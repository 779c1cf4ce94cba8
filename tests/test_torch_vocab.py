"""softmaxkit.torch for the vocabulary, segment and scan families: distillation losses
with fused gradients, sampling, segment softmax, logcumsumexp and logmatmulexp as
``softmaxkit::`` operators, against torch's own ops and autograd, opcheck and compile."""

import numpy as np
import pytest

import softmaxkit as sk

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402

import softmaxkit.torch as skt  # noqa: E402
from softmaxkit.torch import _ops_distill, _ops_scan, _ops_vocab  # noqa: E402

GEN = torch.Generator().manual_seed(20261205)


def _randn(*shape, dtype=torch.float64, scale=3.0):
    return torch.randn(tuple(shape), generator=GEN, dtype=dtype) * scale


def _torch_kl(s, t, T, direction, reduction):
    ls, lt = torch.log_softmax(s / T, -1), torch.log_softmax(t / T, -1)
    a, b = (ls, lt) if direction == "forward" else (lt, ls)
    per = (b.exp() * (b - a)).sum(-1)  # KL(p_b || p_a)
    return {"batchmean": per.mean(), "sum": per.sum(), "none": per,
            "mean": per.sum() / s.numel()}[reduction]  # fmt: skip


def _torch_jsd(s, t, T, beta, reduction):
    ls, lt = torch.log_softmax(s / T, -1), torch.log_softmax(t / T, -1)
    # Liger-Kernel's definition: P teacher, Q student, M = beta P + (1 - beta) Q
    m = torch.logsumexp(torch.stack([lt + np.log(beta), ls + np.log1p(-beta)]), 0)
    per = beta * (lt.exp() * (lt - m)).sum(-1) + (1 - beta) * (ls.exp() * (ls - m)).sum(-1)
    return {"batchmean": per.mean(), "sum": per.sum(), "none": per,
            "mean": per.sum() / s.numel()}[reduction]  # fmt: skip


@pytest.mark.parametrize("reduction", ["batchmean", "sum", "none", "mean"])
@pytest.mark.parametrize("kind", ["forward", "reverse", "jsd"])
@pytest.mark.parametrize("T", [1.0, 2.5])
def test_distill_values_and_grads_match_torch_autograd(kind, reduction, T):
    s = _randn(6, 11).requires_grad_()
    t = _randn(6, 11)
    if kind == "jsd":
        got = skt.jensen_shannon(s, t, beta=0.3, temperature=T, reduction=reduction)
        want = _torch_jsd(s, t, T, 0.3, reduction)
    else:
        got = skt.kl_divergence(s, t, direction=kind, temperature=T, reduction=reduction)
        want = _torch_kl(s, t, T, kind, reduction)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-13)
    g = _randn(*got.shape)
    (gg,) = torch.autograd.grad(got, s, g)
    (gw,) = torch.autograd.grad(want, s, g)
    torch.testing.assert_close(gg, gw, rtol=1e-10, atol=1e-13)


def test_forward_kl_is_torch_kl_div_float32():
    s = _randn(8, 50, dtype=torch.float32).requires_grad_()
    t = _randn(8, 50, dtype=torch.float32)
    got = skt.kl_divergence(s, t)
    want = F.kl_div(torch.log_softmax(s, -1), torch.log_softmax(t, -1), log_target=True,
                    reduction="batchmean")  # fmt: skip
    torch.testing.assert_close(got, want, rtol=2e-5, atol=1e-6)
    got.backward()
    (gw,) = torch.autograd.grad(want, s)
    torch.testing.assert_close(s.grad, gw, rtol=1e-4, atol=1e-6)


def test_distill_gradcheck_and_errors():
    s = _randn(3, 5, scale=1.0).requires_grad_()
    t = _randn(3, 5, scale=1.0)
    mask = torch.tensor([True, True, False, True, True])
    assert torch.autograd.gradcheck(lambda v: skt.kl_divergence(v, t, where=mask), (s,))
    assert torch.autograd.gradcheck(lambda v: skt.jensen_shannon(v, t, beta=0.7), (s,))
    with pytest.raises(ValueError, match=r"teacher_logits\.detach\(\)"):
        skt.kl_divergence(s, t.clone().requires_grad_())
    with pytest.raises(ValueError, match="same shape"):
        skt.kl_divergence(s, t[:2])
    with pytest.raises(ValueError, match="direction must be"):
        skt.kl_divergence(s, t, direction="both")
    with pytest.raises(ValueError, match="reduction must be one of"):
        skt.jensen_shannon(s, t, reduction="avg")
    with pytest.raises(TypeError, match="floating tensor"):
        skt.kl_divergence(s, torch.ones(3, 5, dtype=torch.int64))
    with pytest.raises(NotImplementedError, match="double backward"):
        loss = skt.kl_divergence(s, t)
        (g,) = torch.autograd.grad(loss, s, create_graph=True)
        g.sum().backward()


@pytest.mark.parametrize("filters", [{}, {"top_p": 0.9}, {"top_k": 3}, {"min_p": 0.2}])
def test_sample_tokens_equal_numpy(filters):
    x = _randn(5, 4, 40, dtype=torch.float32)
    ids, lp = skt.sample(x, seed=9, num_samples=3, return_logprobs=True, **filters)
    ids2, lp2 = sk.sample(x.numpy(), seed=9, num_samples=3, return_logprobs=True, **filters)
    assert ids.dtype == torch.int64 and ids.shape == (5, 4, 3)
    np.testing.assert_array_equal(ids.numpy(), ids2)
    np.testing.assert_array_equal(lp.numpy(), lp2)
    np.testing.assert_array_equal(
        skt.sample(x, seed=2**64 - 1, axis=1).numpy(), sk.sample(x.numpy(), seed=2**64 - 1, axis=1)
    )
    p = skt.sampling_probs(x, axis=0, **filters)
    assert p.dtype == torch.float64
    np.testing.assert_array_equal(p.numpy(), sk.sampling_probs(x.numpy(), axis=0, **filters))


def test_sample_errors():
    x = _randn(2, 5)
    with pytest.raises(ValueError, match="top_p must be in"):
        skt.sample(x, top_p=0.0)
    with pytest.raises(ValueError, match=r"seed must be an int in \[0, 2\*\*64\)"):
        skt.sample(x, seed=-1)
    y = x.clone()
    y[1, 2] = float("nan")
    with pytest.raises(ValueError, match="row 1 of logits contains NaN"):
        skt.sample(y, seed=0)
    with pytest.raises(np.exceptions.AxisError):
        skt.sampling_probs(x, axis=2)


SEG_IDS = torch.tensor([0, 0, 1, 1, 1, 2, 2, 2, 2])


@pytest.mark.parametrize("kind", ["softmax", "log_softmax", "logsumexp"])
@pytest.mark.parametrize("layout", ["ids", "offsets"])
def test_segment_ops_gradcheck_and_values(kind, layout):
    x = _randn(9, 3, scale=1.0).requires_grad_()
    kw = {"segment_ids": SEG_IDS} if layout == "ids" else {"offsets": torch.tensor([0, 2, 5, 9])}
    f = getattr(skt, "segment_" + kind)
    got = f(x, temperature=1.7, **kw)
    want = getattr(sk, "segment_" + kind)(x.detach().numpy(), temperature=1.7,
                                          **{k: v.numpy() for k, v in kw.items()})  # fmt: skip
    np.testing.assert_array_equal(got.detach().numpy(), want)
    assert torch.autograd.gradcheck(lambda v: f(v, temperature=1.7, **kw), (x,))
    # against torch autograd over the dense formula, segment by segment
    v = x / 1.7
    parts = [v[0:2], v[2:5], v[5:9]]
    if kind == "logsumexp":
        ref = torch.stack([torch.logsumexp(p, 0) for p in parts])
    else:
        op = torch.softmax if kind == "softmax" else torch.log_softmax
        ref = torch.cat([op(p, 0) for p in parts])
    g = _randn(*ref.shape)
    torch.testing.assert_close(
        torch.autograd.grad(got, x, g)[0], torch.autograd.grad(ref, x, g)[0], rtol=1e-10, atol=1e-12
    )


def test_segment_logsumexp_empty_segment():
    x = _randn(9, dtype=torch.float32, scale=1.0).requires_grad_()
    out = skt.segment_logsumexp(x, SEG_IDS * 2, num_segments=6)  # segments 1, 3, 5 empty
    assert torch.isneginf(out[1::2]).all()
    out[0::2].sum().backward()
    assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize("axis,reverse", [(0, False), (1, False), (1, True), (-1, True)])
def test_logcumsumexp_matches_torch(axis, reverse):
    x = _randn(4, 30).requires_grad_()
    got = skt.logcumsumexp(x, axis, reverse=reverse)
    xr = x.flip(axis) if reverse else x
    want = torch.logcumsumexp(xr, axis)
    want = want.flip(axis) if reverse else want
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    g = _randn(*x.shape)
    torch.testing.assert_close(
        torch.autograd.grad(got, x, g)[0], torch.autograd.grad(want, x, g)[0], rtol=1e-9, atol=1e-11
    )
    small = _randn(3, 4, scale=1.0).requires_grad_()
    assert torch.autograd.gradcheck(lambda v: skt.logcumsumexp(v, axis, reverse=reverse), (small,))


def test_logmatmulexp_matches_naive_and_gradcheck():
    A = _randn(2, 3, 4, scale=1.0).requires_grad_()
    B = _randn(2, 4, 5, scale=1.0).requires_grad_()
    got = skt.logmatmulexp(A, B)
    want = torch.logsumexp(A[..., :, :, None] + B[..., None, :, :], -2)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(skt.logmatmulexp, (A, B))


def test_opcheck_every_new_operator():
    x = _randn(9, 3)
    s, t = _randn(4, 6), _randn(4, 6)
    cases = [
        (_ops_distill._distill_op, (s, t, None, "forward", 0.0, 1.5, "batchmean", 1, True)),
        (_ops_distill._distill_op, (s, t, None, "jsd", 0.4, 1.0, "none", 1, True)),
        (_ops_vocab._sample_op, (s, 1.0, -1, 0.9, -1.0, 2, 5, 1, 0, True)),
        (_ops_vocab._probs_op, (s, 0.7, 3, 1.0, -1.0, 0)),
        (_ops_scan._seg_op, (x, SEG_IDS, None, -1, 0, 1.0, None, "logsumexp")),
        (_ops_scan._seg_op, (x, None, torch.tensor([0, 4, 9]), -1, 0, 2.0, None, "softmax")),
        (_ops_scan._lcse_op, (x, 0, True, None)),
        (_ops_scan._lme_op, (_randn(3, 4), _randn(4, 2))),
    ]
    for op, args in cases:
        torch.library.opcheck(op, args)


# inductor itself uses torch.jit.script_method, deprecated in 2.13
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_compile_fullgraph_distill_segments_scan():
    s = _randn(4, 6)
    t = _randn(4, 6)
    ids = torch.tensor([0, 0, 1, 1])

    def f(v):
        return (
            skt.kl_divergence(v, t)
            + skt.logcumsumexp(v, 1).sum()
            + (skt.segment_softmax(v, ids) * t).sum()
        )

    cf = torch.compile(f, fullgraph=True)
    a = s.clone().requires_grad_()
    b = s.clone().requires_grad_()
    torch.testing.assert_close(cf(a), f(b))
    cf(a).backward()
    f(b).backward()
    torch.testing.assert_close(a.grad, b.grad)


@pytest.mark.parametrize("reduction", ["batchmean", "sum", "mean"])
@pytest.mark.parametrize("kind", ["forward", "reverse", "jsd"])
def test_linear_distill_matches_dense_autograd(kind, reduction):
    hs = _randn(6, 3, scale=1.0).requires_grad_()
    Ws = _randn(9, 3, scale=1.0).requires_grad_()
    ht, Wt = _randn(6, 4, scale=1.0), _randn(9, 4, scale=1.0)
    hs2, Ws2 = hs.detach().requires_grad_(), Ws.detach().requires_grad_()
    kw = {"beta": 0.3} if kind == "jsd" else {"direction": kind}
    lin = skt.linear_jensen_shannon if kind == "jsd" else skt.linear_kl_divergence
    dense = _torch_jsd if kind == "jsd" else _torch_kl
    got = lin(hs, Ws, ht, Wt, reduction=reduction, temperature=1.3, chunk_size=2, **kw)
    want = dense(hs2 @ Ws2.T, ht @ Wt.T, 1.3, kw.get("beta", kind), reduction)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-13)
    ga = torch.autograd.grad(got * 2.5, (hs, Ws))
    gb = torch.autograd.grad(want * 2.5, (hs2, Ws2))
    for a, b in zip(ga, gb, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-13)


def test_linear_distill_none_opcheck_and_errors():
    hs = _randn(4, 3, scale=1.0).requires_grad_()
    Ws = _randn(7, 3, scale=1.0)
    ht, Wt = _randn(4, 2, scale=1.0), _randn(7, 2, scale=1.0)
    per = skt.linear_kl_divergence(hs, Ws, ht, Wt, reduction="none")
    assert per.shape == (4,)
    per.sum().backward()
    (want,) = torch.autograd.grad(skt.linear_kl_divergence(hs, Ws, ht, Wt, reduction="sum"), hs)
    torch.testing.assert_close(hs.grad, want)
    with pytest.raises(NotImplementedError, match="upstream gradient of ones"):
        (skt.linear_kl_divergence(hs, Ws, ht, Wt, reduction="none") * 2).sum().backward()
    with pytest.raises(ValueError, match=r"\.detach\(\)ed"):
        skt.linear_jensen_shannon(hs, Ws, ht.clone().requires_grad_(), Wt)
    with pytest.raises(ValueError, match="chunk_size must be"):
        skt.linear_kl_divergence(hs, Ws, ht, Wt, chunk_size=0)
    torch.library.opcheck(
        _ops_distill._ldistill_op,
        (hs.detach(), Ws, ht, Wt, None, "forward", 0.0, 1.0, "sum", 2, True),
    )


def test_public_functions_route_tensors():
    """sk.<name>(tensor) returns tensors (with gradients where the op has them), the
    same values as the NumPy call: the @routed public functions of the newer families."""
    s = _randn(4, 10, scale=1.0)
    t = _randn(4, 10, scale=1.0)
    sn, tn = s.numpy(), t.numpy()
    ids = np.array([0] * 20 + [1] * 20)
    cases = [
        (sk.kl_divergence, (s, t), {"temperature": 1.5}, (sn, tn)),
        (sk.jensen_shannon, (s, tn), {"beta": 0.2}, (sn, tn)),
        (sk.sample, (s,), {"seed": 4, "top_k": 3}, (sn,)),
        (sk.sampling_probs, (s,), {"top_p": 0.8}, (sn,)),
        (sk.segment_softmax, (s.reshape(-1), ids), {}, (sn.reshape(-1), ids)),
        (sk.segment_log_softmax, (s.reshape(-1), ids), {}, (sn.reshape(-1), ids)),
        (sk.segment_logsumexp, (s.reshape(-1), ids), {}, (sn.reshape(-1), ids)),
        (sk.logcumsumexp, (s,), {"reverse": True}, (sn,)),
        (sk.logmatmulexp, (s, t.T), {}, (sn, tn.T)),
        (sk.segment_softmax_vjp, (s.reshape(-1), t.reshape(-1), ids), {},
         (sn.reshape(-1), tn.reshape(-1), ids)),
        (sk.logcumsumexp_vjp, (s, t), {"axis": 0}, (sn, tn)),
    ]  # fmt: skip
    for f, targs, kw, nargs in cases:
        got = f(*targs, **kw)
        want = f(*nargs, **kw)
        assert isinstance(got, torch.Tensor), f.__name__
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-12, atol=1e-14, err_msg=f.__name__)
    # gradients flow through the routed calls, and return_grad gives tensors
    sr = s.clone().requires_grad_()
    loss = sk.kl_divergence(sr, t) + sk.logcumsumexp(sr, 1).sum()
    loss.backward()
    assert sr.grad is not None and sr.grad.shape == s.shape
    loss2, g = sk.kl_divergence(s, t, return_grad=True)
    _, gn = sk.kl_divergence(sn, tn, return_grad=True)
    assert isinstance(g, torch.Tensor) and loss2.grad_fn is None
    np.testing.assert_allclose(g.numpy(), gn, rtol=1e-12)
    dA, dB = sk.logmatmulexp_vjp(s, t.T, torch.ones(4, 4, dtype=s.dtype))
    assert isinstance(dA, torch.Tensor) and dB.shape == (10, 4)
    with pytest.raises(TypeError, match="out= is not supported"):
        sk.logcumsumexp(s, out=torch.empty_like(s))
