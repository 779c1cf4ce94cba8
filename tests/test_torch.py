"""softmaxkit.torch: the softmaxkit:: operators against torch's own ops and autograd."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
skt = pytest.importorskip("softmaxkit.torch")
F = torch.nn.functional

SRC = Path(__file__).resolve().parents[1] / "src"
INF = float("inf")
NAN = float("nan")


def _t(a, dtype=torch.float64, grad=False):
    return torch.tensor(a, dtype=dtype, requires_grad=grad)


def _edge_rows():
    """float64 [7, 5]: plain, some -inf, all -inf, one +inf, fully masked, partly masked."""
    x = torch.tensor(
        [
            [0.3, -1.2, 2.0, 0.5, -0.7],
            [1.0, -INF, 0.2, -INF, 3.0],
            [-INF] * 5,
            [INF, 1.0, -2.0, 0.0, 0.5],
            [0.1, 0.2, 0.3, 0.4, 0.5],
            [2.0, -1.0, 0.5, 1.5, -0.5],
            [-3.0, 4.0, 0.0, -1.0, 2.0],
        ],
        dtype=torch.float64,
    )
    where = torch.ones(7, 5, dtype=torch.bool)
    where[4] = False
    where[5, 1:3] = False
    return x, where


def test_import_softmaxkit_does_not_import_torch_or_jax():
    code = "import sys, softmaxkit; print([m for m in ('torch', 'jax') if m in sys.modules])"
    res = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"},
        timeout=120,
        check=True,
    )
    assert res.stdout.strip() == "[]", res.stdout


# ---------------------------------------------------------------- dense values
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("axis", [-1, 0, (0, 1), None])
def test_dense_values_match_torch(dtype, axis):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 9, generator=g, dtype=dtype) * 3
    dims = list(range(2)) if axis is None else ([axis] if isinstance(axis, int) else list(axis))
    tol = dict(rtol=1e-6, atol=1e-7) if dtype == torch.float32 else dict(rtol=1e-13, atol=1e-15)
    x2 = x / 1.5
    ref_lse = torch.logsumexp(x2, dim=dims)
    torch.testing.assert_close(
        skt.softmax(x, axis, temperature=1.5), torch.exp(x2 - torch.logsumexp(x2, dims, True)),
        **tol,
    )  # fmt: skip
    torch.testing.assert_close(
        skt.log_softmax(x, axis, temperature=1.5), x2 - torch.logsumexp(x2, dims, True), **tol
    )
    torch.testing.assert_close(skt.logsumexp(x, axis, temperature=1.5), ref_lse, **tol)
    assert skt.softmax(x, axis).dtype == dtype


def test_dense_contract_rows_differ_from_torch_as_documented():
    x, where = _edge_rows()
    y = skt.softmax(x, where=where)
    assert torch.equal(y[2], torch.zeros(5))  # all -inf: 0 (torch: NaN)
    assert torch.equal(y[4], torch.zeros(5))  # fully masked: 0
    assert torch.equal(y[3], torch.tensor([1.0, 0, 0, 0, 0], dtype=torch.float64))
    assert torch.isnan(torch.softmax(x, -1)[2]).all()
    ls = skt.log_softmax(x, where=where)
    assert torch.equal(ls[2], torch.full((5,), -INF, dtype=torch.float64))
    lse = skt.logsumexp(x, where=where)
    assert lse[2] == -INF and lse[4] == -INF and lse[3] == INF
    nan = skt.softmax(_t([[1.0, NAN, 2.0]]))
    assert torch.isnan(nan).all()


@pytest.mark.parametrize("op", ["softmax", "log_softmax", "logsumexp"])
def test_gradcheck_and_gradgradcheck_over_edge_rows(op):
    x, where = _edge_rows()
    f = getattr(skt, op)
    # log_softmax's -inf outputs (masked, -inf entries) make finite differences NaN:
    # its edge rows' zero gradients are checked in the next test instead
    rows = {"log_softmax": [0, 5, 6], "logsumexp": [0, 1, 5, 6]}.get(op, list(range(7)))
    xs = x[rows].clone().requires_grad_()
    ws = where[rows]
    kws = [{}, {"temperature": 0.7}, {"axis": 0}] + ([] if op == "log_softmax" else [{"where": ws}])
    for kw in kws:
        fn = lambda a, kw=kw: f(a, **kw)  # noqa: E731
        assert torch.autograd.gradcheck(fn, (xs,))
        assert torch.autograd.gradgradcheck(fn, (xs,))
    # empty rows and an empty batch
    for shape in [(3, 0), (0, 4)]:
        e = torch.zeros(shape, dtype=torch.float64, requires_grad=True)
        out = f(e)
        out.sum().backward()
        assert e.grad.shape == shape


def test_gradients_of_edge_rows_are_zero_not_nan_and_nan_rows_propagate():
    x, where = _edge_rows()
    for f in (skt.softmax, skt.log_softmax, skt.logsumexp):
        xs = x.clone().requires_grad_()
        f(xs, where=where).sum().backward()
        g = xs.grad
        assert torch.equal(g[2], torch.zeros(5)) and torch.equal(g[4], torch.zeros(5))
        assert not torch.isnan(g).any()
    xn = _t([[1.0, NAN, 2.0], [0.0, 1.0, 2.0]], grad=True)
    skt.softmax(xn).pow(2).sum().backward()
    assert torch.isnan(xn.grad[0]).all() and not torch.isnan(xn.grad[1]).any()


def test_backward_matches_torch_autograd():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(5, 8, generator=g, dtype=torch.float64)
    up = torch.randn(5, 8, generator=g, dtype=torch.float64)
    for ours, theirs in [
        (skt.softmax, lambda a: torch.softmax(a, -1)),
        (skt.log_softmax, lambda a: torch.log_softmax(a, -1)),
    ]:
        a = x.clone().requires_grad_()
        b = x.clone().requires_grad_()
        (ga,) = torch.autograd.grad(ours(a), a, up, create_graph=True)
        (gb,) = torch.autograd.grad(theirs(b), b, up, create_graph=True)
        torch.testing.assert_close(ga, gb)
        (gga,) = torch.autograd.grad((ga**2).sum(), a)
        (ggb,) = torch.autograd.grad((gb**2).sum(), b)
        torch.testing.assert_close(gga, ggb)


def test_logsumexp_options():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(4, 6, generator=g, dtype=torch.float64)
    b = torch.rand(4, 6, generator=g, dtype=torch.float64) - 0.3
    lse, sign = skt.logsumexp(x, b=b, return_sign=True)
    s = (b * torch.exp(x)).sum(-1)
    torch.testing.assert_close(lse, torch.log(s.abs()))
    torch.testing.assert_close(sign, torch.sign(s))
    k = skt.logsumexp(x, axis=0, keepdims=True)
    assert k.shape == (1, 6)
    bp = b.abs()
    xr = x.clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda a: skt.logsumexp(a, b=bp), (xr,))
    with pytest.raises(NotImplementedError, match="double backward"):
        (gx,) = torch.autograd.grad(skt.logsumexp(xr, b=bp).sum(), xr, create_graph=True)
        gx.sum().backward()


# ------------------------------------------------------------ dtypes and memory
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64])
def test_zero_copy_kernel_reads_input_and_writes_output_storage(dtype, monkeypatch):
    seen = {}
    from softmaxkit.torch import _ops_dense

    real = _ops_dense._np_softmax

    def spy(x, **kw):
        seen["in"] = x.ctypes.data
        seen["out"] = kw["out"].ctypes.data
        return real(x, **kw)

    monkeypatch.setattr(_ops_dense, "_np_softmax", spy)
    for shape in [(3, 5), (1024, 2048)]:  # small, and one on softmaxkit's aligned buffers
        x = torch.randn(shape).to(dtype)
        y = skt.softmax(x)
        assert seen["in"] == x.data_ptr()
        assert seen["out"] == y.data_ptr()
        torch.testing.assert_close(y.double(), torch.softmax(x.double(), -1), rtol=2e-3, atol=1e-4)


def test_bfloat16_within_relative_bounds_and_inputs_not_mutated():
    g = torch.Generator().manual_seed(3)
    x = (torch.randn(64, 300, generator=g) * 4).to(torch.bfloat16)
    before = x.clone()
    ref = torch.softmax(x.double(), -1)
    for f, r in [(skt.softmax, ref), (skt.log_softmax, torch.log(ref))]:
        y = f(x)
        assert y.dtype == torch.bfloat16
        # one rounding to bfloat16 (2^-8 relative, half an ulp) of a float32 result
        err = ((y.double() - r).abs() / r.abs().clamp_min(1e-30)).max()
        assert err <= 2.0**-8, float(err)
    assert torch.equal(x, before)
    xg = x.clone().requires_grad_()
    skt.softmax(xg)[:, 0].sum().backward()
    assert xg.grad.dtype == torch.bfloat16


def test_bfloat16_conversions_match_torch_bit_for_bit():
    # every bfloat16 pattern widened; float32 patterns around every rounding case
    # (ties, carries into the exponent, overflow to inf, subnormals, NaNs) rounded
    from softmaxkit._kernels import bf16_math as bf16

    allb = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16)
    wide = np.empty(allb.size, np.float32)
    bf16.widen_array(allb, wide)
    ref = torch.from_numpy(allb.view(np.int16)).view(torch.bfloat16).float().numpy()
    assert np.array_equal(wide.view(np.uint32), ref.view(np.uint32))
    hi = allb.astype(np.uint32) << 16
    low = np.array([0, 1, 0x7FFF, 0x8000, 0x8001, 0xFFFF], dtype=np.uint32)
    rng = np.random.default_rng(14)
    bits = np.concatenate([(hi[:, None] | low).ravel(), rng.integers(0, 2**32, 200_000)])
    f = bits.astype(np.uint32).view(np.float32)
    out = np.empty(f.size, np.uint16)
    bf16.round_array_int(f, out)  # the integer rounding (CPUs without AVX512-BF16)
    nan = np.isnan(f)
    exact = torch.from_numpy(f).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    assert np.array_equal(out[~nan], exact[~nan])
    assert np.all(out[nan] == 0x7FC0)
    bf16.round_array(f, out)  # the kernels' rounding on this CPU
    ref = exact
    if bf16.HW_BF16:  # vcvtneps2bf16: subnormals flushed to a signed zero, NaN quieted
        sub = (np.abs(f) < np.finfo(np.float32).tiny) & ~nan
        assert sub.sum() > 1000
        assert np.array_equal(out[sub], ((f[sub].view(np.uint32) >> 16) & 0x8000).astype(np.uint16))
        assert np.array_equal(out[~nan & ~sub], ref[~nan & ~sub])
        assert np.all(out[nan] & 0x7FC0 == 0x7FC0)  # a quiet NaN
    else:
        assert np.array_equal(out[~nan], ref[~nan])
        assert np.all(out[nan] == 0x7FC0)  # a quiet NaN


def test_bfloat16_bits_kernel_with_temperature_and_backward_vs_float64():
    # the bits kernel at T != 1 (scaled max, overflow of x / T to +inf) and its VJPs,
    # against float64 torch on the same bfloat16 inputs: one bfloat16 rounding
    g = torch.Generator().manual_seed(15)
    x = (torch.randn(40, 257, generator=g) * 6).to(torch.bfloat16)
    x[3, 7] = 3e38  # x / 0.5 overflows: the +inf rule (1 there, 0 elsewhere)
    up = torch.randn(40, 257, generator=g).to(torch.bfloat16)
    u = up.double()
    for T in (0.5, 1.0, 3.0):
        for log in (False, True):
            f = skt.log_softmax if log else skt.softmax
            xa = x.clone().requires_grad_()
            y = f(xa, temperature=T)
            y.backward(up)
            xd = x.double() / T
            yr = torch.log_softmax(xd, -1) if log else torch.softmax(xd, -1)
            if T == 0.5:  # row 3: the +inf entry takes everything
                yr[3] = -INF if log else 0.0
                yr[3, 7] = 0.0 if log else 1.0
            # one bfloat16 rounding; log values near 0 (the dominant entry, log(1 - r))
            # also carry the float32 sum's absolute error (contract: 2^-8 (1 + |v|))
            tol = 2.0**-8 * yr.abs() + (1e-5 if log else 1e-30)
            diff = torch.where(y.double() == yr, 0.0, (y.double() - yr).abs())
            assert torch.all(diff <= tol), (T, log)
            # the VJP from the bfloat16 output y, in float64, rounded once
            yd = y.detach().double()
            if log:
                gr = (u - yd.exp() * u.sum(-1, keepdim=True)) / T
                slack = (u.abs() + yd.exp() * u.abs().sum(-1, keepdim=True)) / T
            else:
                gr = yd * (u - (yd * u).sum(-1, keepdim=True)) / T
                slack = yd * (u.abs() + (yd * u).abs().sum(-1, keepdim=True)) / T
            err = (xa.grad.double() - gr).abs()
            assert torch.all(err <= 2.0**-8 * gr.abs() + 2.0**-20 * slack), (T, log)
    assert torch.equal(x[3], x[3])  # input untouched


def test_non_contiguous_input_and_no_mutation():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(7, 9, generator=g, dtype=torch.float64)
    xt = x.t()
    before = xt.clone()
    torch.testing.assert_close(skt.softmax(xt), torch.softmax(xt, -1))
    assert torch.equal(xt, before)
    assert skt.softmax(xt).is_contiguous()


# --------------------------------------------------------------------- opcheck
def _opcheck_cases():
    g = torch.Generator().manual_seed(5)
    x = torch.randn(4, 6, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.rand(4, 6, generator=g) > 0.2
    t = torch.tensor([0, 5, 2, 3])
    y = torch.softmax(x.detach(), -1)
    ops = torch.ops.softmaxkit
    h = torch.randn(4, 3, generator=g, dtype=torch.float64, requires_grad=True)
    W = torch.randn(6, 3, generator=g, dtype=torch.float64, requires_grad=True)
    return [
        (ops.softmax.default, (x, [-1], 1.0, None)),
        (ops.softmax.default, (x, [0, 1], 2.0, w)),
        (ops.log_softmax.default, (x, None, 1.0, w)),
        (ops.softmax_backward.default, (y, torch.randn(4, 6, dtype=torch.float64), [-1], 1.0, None)),  # noqa: E501
        (ops.log_softmax_backward.default, (torch.log(y), torch.ones(4, 6, dtype=torch.float64), [-1], 1.0, None)),  # noqa: E501
        (ops.logsumexp.default, (x, [-1], False, 1.0, None, None, False)),
        (ops.logsumexp.default, (x, [0], True, 1.0, w, None, True)),
        (ops.cross_entropy.default, (x, t, None, None, 0.1, "mean", 0.01, 1.0, None, -1, True)),
        (ops.cross_entropy.default, (x, t, None, 2, 0.0, "none", 0.0, 2.0, w, -1, True)),
        (ops.cross_entropy.default, (x, y, None, None, 0.0, "sum", 0.0, 1.0, None, -1, True)),
        (ops.linear_cross_entropy.default, (h, W, t, None, None, None, 0.0, "mean", 0.0, 1.0, None, None, "auto", True)),  # noqa: E501
        (ops.topk_softmax.default, (x, 3, 1, 1.0, None)),
        (ops.multiclass_hinge_loss.default, (x, t, 1.0, 1, None, "mean", "weston_watkins", 1, True)),  # noqa: E501
        (ops.max_margin_loss.default, (x, 2, 1.0, "sum", True)),
    ]  # fmt: skip


@pytest.mark.parametrize("case", range(14))
def test_opcheck_every_op(case):
    op, args = _opcheck_cases()[case]
    res = torch.library.opcheck(op, args)
    assert all(v == "SUCCESS" for v in res.values()), res


# ----------------------------------------------------------------------- losses
def test_cross_entropy_matches_torch_with_options_and_grads():
    g = torch.Generator().manual_seed(6)
    x = torch.randn(8, 5, generator=g, dtype=torch.float64)
    t = torch.tensor([0, 4, 2, -100, 1, 3, 3, 0])
    w = torch.rand(5, generator=g, dtype=torch.float64) + 0.5
    for kw in [
        {},
        {"weight": w},
        {"label_smoothing": 0.2},
        {"reduction": "sum"},
        {"reduction": "none"},
        {"weight": w, "reduction": "none"},
    ]:
        a = x.clone().requires_grad_()
        b = x.clone().requires_grad_()
        la = skt.cross_entropy(a, t, ignore_index=-100, **kw)
        lb = F.cross_entropy(b, t, ignore_index=-100, **kw)
        torch.testing.assert_close(la, lb)
        up = torch.rand(lb.shape, dtype=torch.float64, generator=g)
        la.backward(up)
        lb.backward(up)
        torch.testing.assert_close(a.grad, b.grad)
    # probability targets, class axis 1 of a 3-d input (torch's layout)
    x3 = torch.randn(2, 5, 3, generator=g, dtype=torch.float64)
    p3 = torch.softmax(torch.randn(2, 5, 3, generator=g, dtype=torch.float64), 1)
    a = x3.clone().requires_grad_()
    b = x3.clone().requires_grad_()
    skt.cross_entropy(a, p3, axis=1, label_smoothing=0.1).backward()
    F.cross_entropy(b, p3, label_smoothing=0.1).backward()
    torch.testing.assert_close(a.grad, b.grad)


def test_cross_entropy_z_loss_temperature_where_gradcheck():
    x, where = _edge_rows()
    x = x[[0, 1, 5, 6]].clone().requires_grad_()
    where = where[[0, 1, 5, 6]]
    t = torch.tensor([2, 4, 0, 1])
    for kw in [{"z_loss": 0.1}, {"temperature": 0.5}, {"where": where}, {"reduction": "none"}]:
        assert torch.autograd.gradcheck(lambda a, kw=kw: skt.cross_entropy(a, t, **kw), (x,))
    # all -inf row: counted as ignored, loss 0 and gradient 0 (torch: NaN)
    z = torch.full((1, 3), -INF, dtype=torch.float64, requires_grad=True)
    loss = skt.cross_entropy(z, torch.tensor([1]))
    loss.backward()
    assert float(loss.detach()) == 0.0 and torch.equal(
        z.grad, torch.zeros(1, 3, dtype=torch.float64)
    )


def test_cross_entropy_errors_before_any_kernel(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("kernel reached")

    import softmaxkit.losses

    monkeypatch.setattr(softmaxkit.losses, "cross_entropy", boom)
    x = torch.randn(3, 4)
    with pytest.raises(TypeError, match="logits must be a floating"):
        skt.cross_entropy(torch.ones(3, 4, dtype=torch.int64), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="target must not require a gradient"):
        skt.cross_entropy(x, torch.rand(3, 4, requires_grad=True))
    with pytest.raises(TypeError, match="integer tensor"):
        skt.cross_entropy(x, torch.tensor([0.0, 1.0, 2.0]))
    with pytest.raises(ValueError, match="class index 4 outside"):
        skt.cross_entropy(x, torch.tensor([0, 4, 1]))
    with pytest.raises(ValueError, match="target must have"):
        skt.cross_entropy(x, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="reduction"):
        skt.cross_entropy(x, torch.tensor([0, 1, 2]), reduction="avg")
    if hasattr(torch, "device"):
        meta_t = torch.tensor([0, 1, 2], device="meta")
        with pytest.raises(ValueError, match="same device"):
            skt.cross_entropy(x, meta_t)


def test_linear_cross_entropy_matches_materialised():
    g = torch.Generator().manual_seed(7)
    h0 = torch.randn(10, 4, generator=g, dtype=torch.float64)
    W0 = torch.randn(13, 4, generator=g, dtype=torch.float64)
    b0 = torch.randn(13, generator=g, dtype=torch.float64)
    t = torch.randint(0, 13, (10,), generator=g)
    t[3] = -100
    for kw in [{}, {"reduction": "sum", "label_smoothing": 0.1}, {"z_loss": 0.01}]:
        h, W, b = (v.clone().requires_grad_() for v in (h0, W0, b0))
        h2, W2, b2 = (v.clone().requires_grad_() for v in (h0, W0, b0))
        z = kw.pop("z_loss", 0.0)
        la = skt.linear_cross_entropy(
            h, W, t, bias=b, ignore_index=-100, chunk_size=4, z_loss=z, **kw
        )
        logits = h2 @ W2.T + b2
        lb = F.cross_entropy(logits, t, ignore_index=-100, **kw)
        if z:
            lse = torch.logsumexp(logits, -1)
            lb = lb + z * (lse[t != -100] ** 2).mean()
        torch.testing.assert_close(la, lb)
        la.backward()
        lb.backward()
        for p, q in [(h, h2), (W, W2), (b, b2)]:
            torch.testing.assert_close(p.grad, q.grad)
    hh = h0.clone().requires_grad_()
    assert torch.autograd.gradcheck(
        lambda a: skt.linear_cross_entropy(a, W0, t, ignore_index=-100), (hh,)
    )
    with pytest.raises(NotImplementedError, match="forward-only"):
        skt.linear_cross_entropy(hh, W0, t, ignore_index=-100, reduction="none")


def test_topk_softmax_and_hinge_and_max_margin_grads():
    g = torch.Generator().manual_seed(8)
    x = torch.randn(5, 7, generator=g, dtype=torch.float64, requires_grad=True)
    p, i = skt.topk_softmax(x, 3)
    ref_p, ref_i = torch.softmax(x, -1).topk(3, -1)
    torch.testing.assert_close(p, ref_p)
    assert torch.equal(i, ref_i)
    assert torch.autograd.gradcheck(lambda a: skt.topk_softmax(a, 3, temperature=1.3)[0], (x,))
    t = torch.randint(0, 7, (5,), generator=g)
    a = x.detach().clone().requires_grad_()
    b = x.detach().clone().requires_grad_()
    for red in ["mean", "sum", "none"]:
        a.grad = b.grad = None
        la = skt.multiclass_hinge_loss(a, t, reduction=red)
        lb = F.multi_margin_loss(b, t, reduction=red)
        torch.testing.assert_close(la, lb)
        up = torch.rand(lb.shape, dtype=torch.float64, generator=g)
        la.backward(up)
        lb.backward(up)
        torch.testing.assert_close(a.grad, b.grad)
    s = torch.randn(3, 8, generator=g, dtype=torch.float64, requires_grad=True)
    for red in ["sum", "mean", "none"]:
        assert torch.autograd.gradcheck(
            lambda v, red=red: skt.max_margin_loss(v, 3, reduction=red), (s,)
        )


# ---------------------------------------------------------------------- modules
def test_modules_match_torch_modules():
    g = torch.Generator().manual_seed(9)
    x = torch.randn(4, 5, 3, generator=g, dtype=torch.float64)
    t = torch.randint(0, 5, (4, 3), generator=g)
    t[0, 0] = -100
    torch.testing.assert_close(skt.Softmax(dim=1)(x), torch.nn.Softmax(dim=1)(x))
    torch.testing.assert_close(skt.LogSoftmax(dim=1)(x), torch.nn.LogSoftmax(dim=1)(x))
    w = torch.rand(5, dtype=torch.float64) + 0.5
    for kw in [{}, {"weight": w}, {"reduction": "none", "label_smoothing": 0.1}]:
        torch.testing.assert_close(
            skt.CrossEntropyLoss(**kw)(x, t), torch.nn.CrossEntropyLoss(**kw)(x, t)
        )
    h = torch.randn(6, 3, generator=g, dtype=torch.float64)
    W = torch.randn(5, 3, generator=g, dtype=torch.float64)
    tt = torch.randint(0, 5, (6,), generator=g)
    torch.testing.assert_close(skt.LinearCrossEntropyLoss()(h, W, tt), F.cross_entropy(h @ W.T, tt))


class _Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(10)
        self.proj = torch.nn.Parameter(torch.randn(6, 8, generator=g, dtype=torch.float64) * 0.3)
        self.head = torch.nn.Parameter(torch.randn(11, 8, generator=g, dtype=torch.float64) * 0.3)

    def forward(self, x, t):
        h = torch.tanh(x @ self.proj)
        attn = skt.softmax(h @ h.T / 3.0)
        h = attn @ h
        logits = h @ self.head.T
        return skt.cross_entropy(logits, t) + skt.linear_cross_entropy(h, self.head, t)


# inductor itself uses torch.jit.script_method, deprecated in 2.13
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_torch_compile_fullgraph_same_values_and_grads():
    g = torch.Generator().manual_seed(11)
    x = torch.randn(5, 6, generator=g, dtype=torch.float64)
    t = torch.randint(0, 11, (5,), generator=g)
    m = _Tiny()
    eager = m(x, t)
    ge = torch.autograd.grad(eager, list(m.parameters()))
    torch._dynamo.reset()
    compiled = torch.compile(m, fullgraph=True)
    lc = compiled(x, t)
    gc = torch.autograd.grad(lc, list(m.parameters()))
    torch.testing.assert_close(lc, eager)
    for a, b in zip(ge, gc, strict=True):
        torch.testing.assert_close(a, b)


def _train(loss_fn, X, y, steps=100):
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(64, 32), torch.nn.Tanh(), torch.nn.Linear(32, 10)
    ).double()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = loss_fn(model(X), y)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return np.array(losses), torch.cat([p.detach().ravel() for p in model.parameters()])


def test_training_loop_digits_matches_torch_cross_entropy():
    datasets = pytest.importorskip("sklearn.datasets")
    X, y = datasets.load_digits(return_X_y=True)
    X = torch.tensor(X[:512] / 16.0, dtype=torch.float64)
    y = torch.tensor(y[:512])
    ours, w_ours = _train(lambda z, t: skt.cross_entropy(z, t, label_smoothing=0.05), X, y)
    ref, w_ref = _train(lambda z, t: F.cross_entropy(z, t, label_smoothing=0.05), X, y)
    assert ours[-1] < 0.5 * ours[0]
    np.testing.assert_allclose(ours, ref, rtol=1e-5)
    torch.testing.assert_close(w_ours, w_ref, rtol=0, atol=1e-6)


# ------------------------------------------- the public functions route tensors here
def test_public_functions_return_tensors_with_gradients():
    import softmaxkit as sk

    g = torch.Generator().manual_seed(12)
    x = torch.randn(4, 5, generator=g, dtype=torch.float64, requires_grad=True)
    t = torch.tensor([0, 4, 2, 1])
    for f, ref in [
        (sk.softmax, torch.softmax(x, -1)),
        (sk.log_softmax, torch.log_softmax(x, -1)),
        (sk.logsumexp, torch.logsumexp(x, -1)),
        (lambda a: sk.cross_entropy(a, t), F.cross_entropy(x, t)),
    ]:
        y = f(x)
        assert isinstance(y, torch.Tensor) and y.requires_grad
        torch.testing.assert_close(y, ref)
        (ga,) = torch.autograd.grad(y.sum(), x)
        (gb,) = torch.autograd.grad(ref.sum(), x)
        torch.testing.assert_close(ga, gb)
    xd = x.detach()
    loss, grad = sk.cross_entropy(xd, t, return_grad=True)
    assert isinstance(grad, torch.Tensor) and loss.shape == ()
    torch.testing.assert_close(grad, (torch.softmax(xd, -1) - F.one_hot(t, 5)) / 4)
    p, i = sk.topk_softmax(xd, 2)
    assert isinstance(p, torch.Tensor) and i.dtype == torch.int64
    for v in (
        sk.softmax_vjp(torch.softmax(xd, -1), torch.ones(4, 5, dtype=torch.float64)),
        sk.log_softmax_vjp(torch.log_softmax(xd, -1), torch.ones(4, 5, dtype=torch.float64)),
        sk.logsumexp_vjp(xd, torch.ones(4, dtype=torch.float64)),
        sk.multiclass_hinge_loss(xd, t, return_grad=True)[1],
        sk.max_margin_loss(xd, 4, return_grad=True)[1],
        sk.linear_cross_entropy(xd, torch.ones(3, 5, dtype=torch.float64), t % 3, return_grad=True)[
            1
        ][0],
    ):
        assert isinstance(v, torch.Tensor) and v.shape == (4, 5)
    # a call the operators do not cover (out=) keeps the Array API path
    out = torch.empty(4, 5, dtype=torch.float64)
    assert sk.softmax(xd, out=out) is out


def test_bench_family_torch_is_opt_in_and_its_cases_run():
    from softmaxkit.bench import core as bench

    assert all(c.family != "torch" for c in bench.select_cases(quick=True, families=["losses"]))
    cases = bench.select_cases(quick=True, families=["torch"])
    ops = {c.op for c in cases}
    assert {"softmax fwd", "logsumexp fwd+bwd", "cross_entropy fwd+bwd"} <= ops
    assert "linear_cross_entropy fwd+bwd" in ops
    ce = next(c for c in cases if c.op == "cross_entropy fwd+bwd" and "float32" in c.label)
    a = ce.impls["softmaxkit"]()
    b = ce.impls["torch eager"]()
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-9)
    # the compute bound under each case: one exp pass over the same input
    from softmaxkit.bench import torch as bench_torch

    shape = tuple(int(v) for v in ce.label.split("]")[0].strip("[").split(","))
    x = bench_torch._input(shape, "float32")[0]
    torch.testing.assert_close(ce.impls["floor exp"](), torch.logsumexp(x, -1))


def test_double_backward_through_saved_gradients_raises_instead_of_zero():
    x = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    t = torch.tensor([0, 3, 1])
    for loss in (
        skt.cross_entropy(x, t),
        skt.multiclass_hinge_loss(x, t),
        skt.max_margin_loss(x, 1),
        skt.linear_cross_entropy(x, torch.ones(5, 4, dtype=torch.float64), t),
    ):
        with pytest.raises(NotImplementedError, match="double backward"):
            torch.autograd.grad(loss, x, create_graph=True)
    # first order with create_graph=False is unaffected; softmax supports it
    (g,) = torch.autograd.grad(skt.softmax(x)[:, 0].sum(), x, create_graph=True)
    assert g.requires_grad


def test_bfloat16_bits_kernel_matches_float32_path_on_edge_rows():
    # the bits kernel (contiguous bfloat16, trailing axes, no mask) against the float32
    # route (forced by an all-true mask): same contract rows, same rounding
    x, _ = _edge_rows()
    x = torch.cat([x, torch.tensor([[NAN, 1.0, 2.0, 3.0, 4.0], [1e4, -1e4, 0.0, 5.0, INF]])])
    xb = x.to(torch.bfloat16)
    full = torch.ones(xb.shape, dtype=torch.bool)
    up = torch.randn(xb.shape, generator=torch.Generator().manual_seed(13)).to(torch.bfloat16)
    for f in (skt.softmax, skt.log_softmax):
        a = f(xb)
        b = f(xb, where=full)
        assert a.dtype == torch.bfloat16
        assert torch.equal(a.float().nan_to_num(7.0), b.float().nan_to_num(7.0)), (a, b)
        xa = xb.clone().requires_grad_()
        xc = xb.clone().requires_grad_()
        f(xa).backward(up)
        f(xc, where=full).backward(up)
        ga, gc = xa.grad.float(), xc.grad.float()
        assert torch.equal(ga.isnan(), gc.isnan())
        torch.testing.assert_close(ga.nan_to_num(0.0), gc.nan_to_num(0.0), rtol=2**-7, atol=1e-2)


# ---------------------------------------------------------------------- devices
def test_meta_tensors_give_shapes_and_dtypes_without_any_kernel(monkeypatch):
    # 'meta' tensors (no data) take the operators' fake implementations, as torch's
    # own ops do: shapes, dtypes and backward shapes, and no kernel is reached
    import softmaxkit.torch._ops_dense as dense
    import softmaxkit.torch._ops_losses as losses

    def boom(*a, **k):
        raise AssertionError("kernel reached")

    for name in ["_softmax_impl", "_vjp_impl", "_np_logsumexp"]:
        monkeypatch.setattr(dense, name, boom)
    for mod in (dense._grad, dense._online, losses._losses):
        for name in [n for n in dir(mod) if not n.startswith("_")]:
            if callable(getattr(mod, name)):
                monkeypatch.setattr(mod, name, boom)
    meta = dict(device="meta")
    for dt in (torch.float32, torch.bfloat16):
        x = torch.empty(3, 5, dtype=dt, requires_grad=True, **meta)
        t = torch.zeros(3, dtype=torch.int64, **meta)
        where = torch.ones(3, 5, dtype=torch.bool, **meta)
        cases = [
            (skt.softmax(x), (3, 5)),
            (skt.log_softmax(x, where=where, temperature=2.0), (3, 5)),
            (skt.logsumexp(x, axis=0, keepdims=True), (1, 5)),
            (skt.logsumexp(x, b=torch.ones(3, 5, **meta)), (3,)),
            (skt.topk_softmax(x, 2)[0], (3, 2)),
            (skt.cross_entropy(x, t, reduction="none"), (3,)),
            (skt.CrossEntropyLoss(label_smoothing=0.1)(x, t), ()),
            (skt.linear_cross_entropy(x, torch.empty(7, 5, dtype=dt, **meta), t), ()),
            (skt.multiclass_hinge_loss(x, t), ()),
            (skt.max_margin_loss(x, 4), ()),
        ]
        for i, (y, shape) in enumerate(cases):
            assert y.device.type == "meta" and tuple(y.shape) == shape, (i, y)
            assert y.dtype == dt, (i, y.dtype)
        x.grad = None
        (skt.softmax(x).sum() + skt.cross_entropy(x, t)).backward()
        assert x.grad.device.type == "meta" and x.grad.shape == (3, 5)


def test_other_devices_raise_naming_the_device_before_any_kernel():
    # the losses and topk have no fallback off the CPU: NotImplementedError naming the
    # op, the argument and the device (a stand-in object: CI has no GPU)
    from types import SimpleNamespace

    from softmaxkit.torch._common import _check_kernel_device

    gpu = SimpleNamespace(device=torch.device("cuda", 1))
    with pytest.raises(NotImplementedError, match=r"cross_entropy .*logits is on cuda:1"):
        _check_kernel_device("cross_entropy", logits=gpu)
    cpu = SimpleNamespace(device=torch.device("cpu"))
    _check_kernel_device("x", a=cpu, b=None, c=SimpleNamespace(device=torch.device("meta")))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_dense_fallback_matches_torch_and_losses_raise():
    x = torch.randn(4, 6, device="cuda", dtype=torch.float64, requires_grad=True)
    t = torch.tensor([0, 5, 2, 1], device="cuda")
    torch.testing.assert_close(skt.softmax(x), torch.softmax(x, -1))
    torch.testing.assert_close(skt.log_softmax(x), torch.log_softmax(x, -1))
    torch.testing.assert_close(skt.logsumexp(x), torch.logsumexp(x, -1))
    (ga,) = torch.autograd.grad(skt.softmax(x)[:, 0].sum(), x)
    (gb,) = torch.autograd.grad(torch.softmax(x, -1)[:, 0].sum(), x)
    torch.testing.assert_close(ga, gb)
    for f in (
        lambda: skt.cross_entropy(x, t),
        lambda: skt.linear_cross_entropy(x, torch.ones(6, 6, device="cuda"), t),
        lambda: skt.topk_softmax(x, 2),
        lambda: skt.multiclass_hinge_loss(x, t),
        lambda: skt.max_margin_loss(x, 1),
    ):
        with pytest.raises(NotImplementedError, match="cuda"):
            f()


def test_cross_entropy_eager_no_grad_path_matches_the_operator():
    """A plain eager call that records no gradient skips the custom_op dispatcher
    (the operator's body directly): the same loss as the operator, for every option;
    with a gradient recorded the operator still runs (backward works)."""
    from softmaxkit.torch._ops_ce import _ce_op

    g = torch.Generator().manual_seed(5)
    x = torch.randn(6, 7, 11, generator=g)
    t = torch.randint(0, 11, (6, 7), generator=g)
    w = torch.rand(11, generator=g, dtype=torch.float64)
    m = torch.rand(6, 7, 11, generator=g) > 0.2
    for kw in (
        {},
        {"ignore_index": 3, "label_smoothing": 0.1, "reduction": "sum"},
        {"z_loss": 1e-3, "temperature": 0.7, "reduction": "none"},
        {"where": m},
    ):
        got = skt.cross_entropy(x, t, **kw)
        full = {"ignore_index": None, "label_smoothing": 0.0, "reduction": "mean",
                "z_loss": 0.0, "temperature": 1.0, "where": None, **kw}  # fmt: skip
        want, _ = _ce_op(x, t, None, full["ignore_index"], full["label_smoothing"],
                         full["reduction"], full["z_loss"], full["temperature"],
                         full["where"], 2, False)  # fmt: skip
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    got = skt.cross_entropy(x, t, weight=w)
    torch.testing.assert_close(got, _ce_op(x, t, w, None, 0.0, "mean", 0.0, 1.0, None, 2, False)[0])
    xg = x.clone().requires_grad_()
    loss = skt.cross_entropy(xg, t)
    loss.backward()
    assert xg.grad is not None and loss.grad_fn is not None
    with torch.no_grad():
        torch.testing.assert_close(skt.cross_entropy(xg, t), loss.detach())
