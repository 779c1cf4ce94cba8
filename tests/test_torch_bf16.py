"""softmaxkit.torch: the eager fast path of softmax / log_softmax (``torch/_fast.py``)
and the bfloat16 cross-entropy row kernel (``_kernels/losses/bf16.py``).

The fast path must give the operator's results bit for bit and must never hide the
operator from what has to see it (autograd, dispatch modes, the profiler); the
cross-entropy kernel must give the float32 path's values bit for bit (as
``tests/test_torch_ce_perf.py`` requires) on every kind of row.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from _bf16util import ulps

torch = pytest.importorskip("torch")
skt = pytest.importorskip("softmaxkit.torch")
F = torch.nn.functional

INF = float("inf")
NAN = float("nan")


def _logits(shape, seed, dtype, scale=4.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=g) * scale).to(dtype)


def _special_rows(x):
    """Rows all -inf, with +inf, with NaN, all zero (rows 0-3 of the flattened rows)."""
    r = x.view(-1, x.shape[-1])
    n = r.shape[1]
    if r.shape[0] >= 4:
        r[0] = -INF
        r[1, n // 2] = INF
        r[2, n - 1] = NAN
        r[3] = 0.0
    return x


def _same(a, b):
    """Equal values, NaN where NaN, same dtype and shape."""
    assert a.dtype == b.dtype and a.shape == b.shape
    return torch.equal(a.isnan(), b.isnan()) and torch.equal(
        a.nan_to_num(0.0, 0.0, 0.0), b.nan_to_num(0.0, 0.0, 0.0)
    )


_SHAPES = [(1, 1), (1, 1000), (4, 1), (32, 128), (37, 129), (3, 5, 7), (6, 2049), (7,)]
_DTYPES = [torch.bfloat16, torch.float32, torch.float64]


# ------------------------------------------------------------ eager fast path
@pytest.mark.parametrize("log", [False, True])
@pytest.mark.parametrize("dtype", _DTYPES, ids=str)
@pytest.mark.parametrize("shape", _SHAPES, ids=str)
def test_fast_path_equals_the_operator_bit_for_bit(shape, dtype, log):
    x = _special_rows(_logits(shape, 1, dtype))
    before = x.clone()
    f = skt.log_softmax if log else skt.softmax
    op = torch.ops.softmaxkit.log_softmax if log else torch.ops.softmaxkit.softmax
    for T in (1.0, 0.7, 3):
        y = f(x, temperature=T)
        ref = op(x, [-1], float(T), None)
        assert _same(y, ref), (shape, dtype, T)
        assert y.is_contiguous() and not y.requires_grad
    assert torch.equal(x.view(torch.uint8), before.view(torch.uint8))  # not mutated


@pytest.mark.parametrize("log", [False, True])
@pytest.mark.parametrize("dtype", _DTYPES, ids=str)
def test_fast_path_is_taken_only_for_plain_calls(dtype, log, monkeypatch):
    # the operator is replaced by a spy: plain calls never reach it (with a gradient
    # they go through the _Dense autograd function); a strided input, another axis,
    # where= and dtype= do
    from softmaxkit.torch import _ops_dense

    name = "_log_softmax_op" if log else "_softmax_op"
    real = getattr(_ops_dense, name)
    calls = []
    monkeypatch.setattr(_ops_dense, name, lambda *a: calls.append(1) or real(*a))
    f = skt.log_softmax if log else skt.softmax
    x = _logits((8, 33), 2, dtype)
    f(x)
    with torch.no_grad():
        f(x.clone().requires_grad_())
    y = f(x.clone().requires_grad_())
    assert y.requires_grad and type(y.grad_fn).__name__ == "_DenseBackward"
    assert calls == []
    f(x.t())  # strided: the operator (one copy)
    f(x, axis=0)
    f(x, where=torch.ones(8, 33, dtype=torch.bool))
    f(x, dtype=torch.float64)
    assert len(calls) == 4


@pytest.mark.parametrize("log", [False, True])
@pytest.mark.parametrize("dtype", _DTYPES, ids=str)
def test_fast_path_gradients_equal_the_operators(dtype, log):
    # first derivative (contiguous and expanded upstream gradients) bit for bit the
    # operator's; second derivative through the backward operator, as the operator's
    x = _special_rows(_logits((6, 37), 15, dtype))
    x[2] = 1.0  # (no NaN row: its gradients are NaN on both sides)
    f = skt.log_softmax if log else skt.softmax
    op = torch.ops.softmaxkit.log_softmax if log else torch.ops.softmaxkit.softmax
    g = _logits((6, 37), 16, dtype)
    for T in (1.0, 0.8):
        for up in (g, None):
            xa = x.clone().requires_grad_()
            xb = x.clone().requires_grad_()
            ya, yb = f(xa, temperature=T), op(xb, [-1], T, None)
            assert _same(ya.detach(), yb.detach())
            (ga,) = torch.autograd.grad(ya.sum() if up is None else ya, xa, up)
            # (the operator given the contiguous ones that the fast path's backward
            # makes of sum()'s expanded upstream gradient)
            (gb,) = torch.autograd.grad(yb, xb, torch.ones_like(yb) if up is None else up)
            assert _same(ga, gb), (T, up is None)
    if dtype == torch.float64:
        xa = x[1:].clone().requires_grad_()
        fn = lambda a: f(a, temperature=0.8)  # noqa: E731
        assert torch.autograd.gradgradcheck(fn, (xa,), (g[1:].clone(),))
        (ga,) = torch.autograd.grad((f(xa) * g[1:]).sum(), xa, create_graph=True)
        xb = x[1:].clone().requires_grad_()
        (gb,) = torch.autograd.grad((op(xb, [-1], 1.0, None) * g[1:]).sum(), xb,
                                    create_graph=True)  # fmt: skip
        (hh_a,) = torch.autograd.grad(ga.square().sum(), xa)
        (hh_b,) = torch.autograd.grad(gb.square().sum(), xb)
        torch.testing.assert_close(hh_a, hh_b)


def test_fast_path_keeps_the_operator_visible_to_modes_and_the_profiler():
    from torch.utils._python_dispatch import TorchDispatchMode

    seen = []

    class Spy(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            seen.append(str(func))
            return func(*args, **(kwargs or {}))

    x = _logits((4, 16), 3, torch.bfloat16)
    with Spy():
        y = skt.softmax(x)
        skt.log_softmax(x)
    assert any("softmaxkit.softmax" in s for s in seen)
    assert any("softmaxkit.log_softmax" in s for s in seen)
    assert _same(y, skt.softmax(x))
    with torch.profiler.profile() as prof:
        skt.softmax(x)
    assert any("softmaxkit::softmax" in e.name for e in prof.events())
    with torch.device("meta"):  # a function mode: the operator, which handles it
        ym = skt.softmax(x.to("meta"))
    assert ym.device.type == "meta" and ym.shape == x.shape


@pytest.mark.parametrize("dtype", _DTYPES, ids=str)
def test_fast_path_under_compile_and_grad_mode_matches_eager(dtype):
    x = _logits((5, 40), 4, dtype)
    y = skt.softmax(x)
    yc = torch.compile(lambda a: skt.softmax(a), fullgraph=True, backend="eager")(x)
    assert _same(y, yc)
    xg = x.clone().requires_grad_()
    (gx,) = torch.autograd.grad(skt.log_softmax(xg)[:, 0].sum(), xg)
    xr = x.double().requires_grad_()
    (gr,) = torch.autograd.grad(torch.log_softmax(xr, -1)[:, 0].sum(), xr)
    torch.testing.assert_close(gx.double(), gr, rtol=2e-2, atol=2e-2)


# ------------------------------------------------- bfloat16 vs float64 reference
def _bf16_round(t64):
    """float64 -> bfloat16 with one rounding (via float32 is double rounding: avoid)."""
    a = t64.numpy()
    f = a.astype(np.float32)
    # round-to-nearest-even on the float64 value: pick the nearer of the two
    # bfloat16 neighbours of the float32 value's truncation
    bits = f.view(np.uint32) & np.uint32(0xFFFF0000)
    lo = bits.view(np.float32).astype(np.float64)
    up = (bits + np.uint32(0x10000)).view(np.float32).astype(np.float64)
    lo_, up_ = np.minimum(lo, up), np.maximum(lo, up)
    return torch.from_numpy(np.where(np.abs(a - lo_) <= np.abs(up_ - a), lo_, up_))


@pytest.mark.parametrize("log", [False, True])
@pytest.mark.parametrize("shape", [(1, 1), (3, 5, 7), (37, 129), (6, 2049), (2, 40000)], ids=str)
def test_bf16_dense_vs_float64_reference_rounded_to_bf16(shape, log):
    # a float32 computation rounded once: within one bfloat16 ulp of the float64
    # result rounded to bfloat16 (softmax); log_softmax within 1 ulp or 2^-16 absolute
    # (near 0 its values are differences of rounded float32 terms)
    x = _logits(shape, 5, torch.bfloat16, scale=6.0)
    for T in (1.0, 0.6):
        y = (skt.log_softmax if log else skt.softmax)(x, temperature=T).double()
        xd = x.double() / T
        ref = torch.log_softmax(xd, -1) if log else torch.softmax(xd, -1)
        rr = _bf16_round(ref)
        ulp = torch.ldexp(torch.ones_like(rr), torch.frexp(rr)[1] - 8)
        tol = ulp + (2.0**-16 if log else 0.0)
        bad = ((y - rr).abs() > tol) & ~((rr == 0) & (y.abs() < 2.0**-126))
        assert not bad.any(), (shape, T, float((y - rr).abs().max()))


@pytest.mark.parametrize("log", [False, True])
def test_bf16_dense_special_rows_and_strided_input(log):
    x = _special_rows(_logits((9, 65), 6, torch.bfloat16))
    f = skt.log_softmax if log else skt.softmax
    y = f(x)
    miss = -INF if log else 0.0
    assert (y[0] == miss).all()  # all -inf: 0 / -inf, not NaN
    hit = 0.0 if log else 1.0
    assert y[1, 32] == hit and (y[1, :32] == miss).all() and (y[1, 33:] == miss).all()
    assert y[2].isnan().all()
    assert torch.allclose(y[3].double(), torch.full((65,), -math.log(65) if log else 1 / 65,
                          dtype=torch.float64), rtol=2**-8)  # fmt: skip
    # strided views (one copy, the operator): the contiguous call's values
    xt = x.t().contiguous().t()
    assert not xt.is_contiguous()
    assert _same(f(xt), y)
    xs = torch.cat([x, x], dim=1)[:, ::2]
    assert _same(f(xs), f(xs.contiguous()))


# ------------------------------------------------- bfloat16 cross-entropy kernel
def _fwd_bwd(x, t, **kw):
    xa = x.clone().requires_grad_()
    loss = skt.cross_entropy(xa, t, **kw)
    (loss.sum() if loss.ndim else loss).backward()
    return loss.detach(), xa.grad


_CE_OPTIONS = [
    {"reduction": "none"},
    {"reduction": "none", "label_smoothing": 0.2, "z_loss": 1e-2, "temperature": 0.6},
    {"reduction": "sum", "ignore_index": -100, "temperature": 3.0},
    {"reduction": "mean", "ignore_index": -100, "weight": "rand", "label_smoothing": 1.0},
]


@pytest.mark.parametrize("kw", _CE_OPTIONS, ids=lambda d: ",".join(f"{k}" for k in d))
@pytest.mark.parametrize("shape", [(1, 1), (7, 3), (40, 129), (5, 2049), (2, 3, 17)], ids=str)
def test_bf16_ce_kernel_equals_float32_path_on_every_kind_of_row(shape, kw):
    # ordinary rows, an all -inf row (ignored), +inf, NaN, huge values (the exact
    # scalar row), an ignored target, a zero row: loss and gradient within one
    # bfloat16 ulp of the float32 path's rounded once (bit for bit off the short-row
    # fast path: label smoothing, rows over 2048); the loss without a gradient too
    x = _logits(shape, 7, torch.bfloat16)
    C = shape[-1]
    r = x.view(-1, C)
    R = r.shape[0]
    if R >= 6:
        r[0] = -INF
        r[1, C // 2] = INF
        r[2, 0] = NAN
        r[3, :2] = 3e38
        r[4] = 0.0
    t = torch.randint(0, C, shape[:-1], generator=torch.Generator().manual_seed(8))
    if R >= 6:
        t.view(-1)[5] = -100
    kw = dict(kw)
    if kw.get("weight") == "rand":
        kw["weight"] = torch.rand(C, generator=torch.Generator().manual_seed(9)) + 0.1
    if "ignore_index" not in kw and R >= 6:
        t.view(-1)[5] = 0
    loss, grad = _fwd_bwd(x, t, **kw)
    loss32, grad32 = _fwd_bwd(x.float(), t, **kw)
    tol = 1 if C <= 2048 and not kw.get("label_smoothing") else 0
    assert ulps(loss, loss32.to(torch.bfloat16)).max() <= tol
    g32 = grad32.to(torch.bfloat16)
    assert ulps(grad, g32).max() <= tol  # NaN where NaN (its bits: ours a quiet 0x7FC0)
    if tol == 0:
        ok = ~grad.isnan()
        assert torch.equal(grad.view(torch.int16)[ok], g32.view(torch.int16)[ok])  # -0.0 too
    nog = skt.cross_entropy(x, t, **kw)  # no gradient
    assert ulps(nog, skt.cross_entropy(x.float(), t, **kw).to(torch.bfloat16)).max() <= tol


def test_bf16_ce_vs_float64_reference_odd_shapes_and_strided_logits():
    for shape in [(1, 2), (33, 129), (3, 4097)]:
        x = _logits(shape, 10, torch.bfloat16, scale=3.0)
        t = torch.randint(0, shape[-1], shape[:-1], generator=torch.Generator().manual_seed(11))
        loss, grad = _fwd_bwd(x, t, label_smoothing=0.1, reduction="sum")
        xd = x.double().requires_grad_()
        ref = F.cross_entropy(xd, t, label_smoothing=0.1, reduction="sum")
        ref.backward()
        r = float(ref.detach())
        assert abs(float(loss) - r) <= 2.0**-8 * abs(r)
        err = ((grad.double() - xd.grad).abs() / xd.grad.abs().amax(-1, keepdim=True)).max()
        assert err <= 2.0**-8, float(err)
    # class axis first (torch's layout for [C, N]): strided, the widening path
    x = _logits((129, 6), 12, torch.bfloat16)
    t = torch.randint(0, 129, (6,), generator=torch.Generator().manual_seed(13))
    la, ga = _fwd_bwd(x, t, axis=0)
    lb, gb = _fwd_bwd(x.t().contiguous(), t)
    assert torch.equal(la, lb) and torch.equal(ga, gb.t())


# ------------------------------------------------- target range check (NumPy side)
@pytest.mark.parametrize("tdtype", [torch.int64, torch.int32, torch.uint8], ids=str)
def test_target_range_check_without_torch_ops(tdtype, monkeypatch):
    # plain CPU targets are checked in NumPy (torch's elementwise ops wait on an
    # OpenMP join: 64 ms for [65536] on the loaded VM); same errors as before: the
    # first offending index named, ignore_index exempt; torch ops are never called
    x = _logits((5, 7), 14, torch.bfloat16)
    called = []
    real_ge = torch.Tensor.__ge__
    monkeypatch.setattr(torch.Tensor, "__ge__", lambda *a: called.append(1) or real_ge(*a))
    t = torch.tensor([0, 6, 3, 2, 1], dtype=tdtype)
    skt.cross_entropy(x, t)
    assert called == []
    with pytest.raises(ValueError, match=r"class index 7 outside \[0, 7\)"):
        skt.cross_entropy(x, torch.tensor([0, 7, 3, 9, 1], dtype=tdtype))
    if tdtype != torch.uint8:
        bad = torch.tensor([0, -1, 3, -5, 1], dtype=tdtype)
        with pytest.raises(ValueError, match=r"class index -1 outside .*ignore_index=-5"):
            skt.cross_entropy(x, bad, ignore_index=-5)
        loss = skt.cross_entropy(x, torch.tensor([0, -1, 3, -1, 1], dtype=tdtype),
                                 ignore_index=-1, reduction="none")  # fmt: skip
        assert loss[1] == 0 and loss[3] == 0 and loss[0] > 0
    assert called == []
