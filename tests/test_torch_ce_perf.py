"""softmaxkit.torch.cross_entropy fast paths: the bfloat16 bits kernel and the reuse
of saved-gradient buffers (``softmaxkit/torch/_gradbuf.py``)."""

from __future__ import annotations

import gc
import itertools
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from _bf16util import ulps

torch = pytest.importorskip("torch")
skt = pytest.importorskip("softmaxkit.torch")
F = torch.nn.functional

SRC = Path(__file__).resolve().parents[1] / "src"
INF = float("inf")
MiB = 1 << 20


def _bf16_logits(shape, seed, scale=4.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=g) * scale).to(torch.bfloat16)


def _fwd_bwd(x, t, **kw):
    xa = x.clone().requires_grad_()
    loss = skt.cross_entropy(xa, t, **kw)
    (loss.sum() if loss.ndim else loss).backward()
    return loss.detach(), xa.grad


_OPTIONS = [
    {},
    {"reduction": "sum", "label_smoothing": 0.1, "z_loss": 1e-3, "temperature": 0.7},
    {"reduction": "none", "ignore_index": -100, "temperature": 2.5},
    {"reduction": "mean", "ignore_index": -100, "weight": "rand", "label_smoothing": 0.05},
]


# ------------------------------------------------------------------- bfloat16
@pytest.mark.parametrize("kw", _OPTIONS, ids=lambda d: ",".join(d) or "defaults")
@pytest.mark.parametrize("shape", [(33, 1000), (64, 2500), (3, 5, 40)])
def test_bf16_cross_entropy_equals_widened_float32_path(shape, kw):
    # the bits kernel: short rows without label smoothing on the fast path (short
    # exp, float32 sums), within one bfloat16 ulp of the float32 path rounded once;
    # long rows (2500 > PAIR_MAX), label smoothing and the special rows run the
    # float32 row on exactly widened values: bit for bit
    # ((64, 2500): two threads; (3, 5, 40): batch dimensions)
    x = _bf16_logits(shape, 1)
    x[0, ...] = -INF  # an empty row (counts as ignored)
    x.view(-1, shape[-1])[2, 3] = INF  # the +inf rule
    x.view(-1, shape[-1])[4, :2] = 3e38  # huge values: the exact row path
    t = torch.randint(0, shape[-1], shape[:-1], generator=torch.Generator().manual_seed(2))
    t.view(-1)[5] = -100
    kw = dict(kw)
    kw.setdefault("ignore_index", -100)
    if kw.get("weight") == "rand":
        kw["weight"] = torch.rand(shape[-1], generator=torch.Generator().manual_seed(3))
    before = x.clone()
    loss, grad = _fwd_bwd(x, t, **kw)
    loss32, grad32 = _fwd_bwd(x.float(), t, **kw)
    assert torch.equal(x, before)  # not mutated
    assert loss.dtype == grad.dtype == torch.bfloat16 and grad.shape == x.shape
    fast = shape[-1] <= 2048 and not kw.get("label_smoothing")
    tol = 1 if fast else 0
    assert ulps(loss, loss32.to(torch.bfloat16)).max() <= tol
    assert ulps(grad, grad32.to(torch.bfloat16)).max() <= tol
    special = grad.view(-1, shape[-1])[[0, 2, 4, 5]]  # the float32 path's rows: exact
    ref = grad32.to(torch.bfloat16).view(-1, shape[-1])[[0, 2, 4, 5]]
    assert torch.equal(special.view(torch.int16), ref.view(torch.int16))


def test_bf16_cross_entropy_nan_row_and_int32_target():
    x = _bf16_logits((6, 300), 4)
    x[2, 17] = float("nan")
    t = torch.tensor([1, 2, 3, 4, 5, 6], dtype=torch.int32)
    loss, grad = _fwd_bwd(x, t, reduction="none")
    assert torch.isnan(loss[2]) and not torch.isnan(loss[[0, 1, 3, 4, 5]]).any()
    assert torch.isnan(grad[2]).all() and not torch.isnan(grad[[0, 1, 3, 4, 5]]).any()


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_bf16_cross_entropy_vs_float64_reference(reduction):
    # against torch's float64 cross-entropy of the same bfloat16 values: the loss
    # within one bfloat16 rounding of a float32-accurate value, the gradient too
    # (absolute: entries near 0 are differences p - onehot)
    x = _bf16_logits((128, 700), 5, scale=3.0)
    t = torch.randint(0, 700, (128,), generator=torch.Generator().manual_seed(6))
    loss, grad = _fwd_bwd(x, t, reduction=reduction, label_smoothing=0.1)
    xd = x.double().requires_grad_()
    ref = F.cross_entropy(xd, t, reduction=reduction, label_smoothing=0.1)
    (ref.sum() if ref.ndim else ref).backward()
    rel = ((loss.double() - ref.detach()).abs() / ref.detach().abs()).max()
    assert rel <= 2.0**-8, float(rel)
    scale = xd.grad.abs().amax(dim=-1, keepdim=True)
    err = ((grad.double() - xd.grad).abs() / scale).max()
    assert err <= 2.0**-8, float(err)


def test_bf16_cross_entropy_takes_the_bits_kernel_not_a_float32_copy(monkeypatch):
    # the bits path never calls the NumPy cross_entropy (which needs a float32 copy
    # of the logits and writes a float32 gradient); masks and probability targets
    # still do
    from softmaxkit.torch import _ops_losses

    calls = []
    real = _ops_losses._losses.cross_entropy
    monkeypatch.setattr(
        _ops_losses._losses, "cross_entropy", lambda *a, **k: calls.append(1) or real(*a, **k)
    )
    x = _bf16_logits((16, 100), 7)
    t = torch.randint(0, 100, (16,), generator=torch.Generator().manual_seed(8))
    _fwd_bwd(x, t)
    assert calls == []
    _fwd_bwd(x, t, where=torch.ones(16, 100, dtype=torch.bool))
    assert calls == [1]


def _count_runs(monkeypatch):
    from softmaxkit.torch import _ops_ce

    runs = []
    real = _ops_ce._ce_bf16_run
    monkeypatch.setattr(_ops_ce, "_ce_bf16_run", lambda *a: runs.append(1) or real(*a))
    return runs


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_bf16_empty_rows_found_after_the_kernel(monkeypatch, reduction):
    # Without grad_out= the empty rows (all -inf) are found after the kernel from the
    # rows whose loss is NaN, and the kernel runs again without them: one run when no
    # row is empty (a NaN row is not empty), two with an empty one; grad_out= checks
    # up front (its buffer may be the logits): one run.  Every result equals the
    # float32 route's rounded once (the fast rows: within one bfloat16 ulp).
    runs = _count_runs(monkeypatch)
    x = _bf16_logits((40, 300), 21)
    t = torch.randint(0, 300, (40,), generator=torch.Generator().manual_seed(22))
    x[9, :5] = -INF  # a first entry -inf, the row not empty
    t[9] = 100  # (a target at -inf would make that loss +inf)
    cases = {"plain": (x, 1)}
    xn = x.clone()
    xn[3, 8] = float("nan")
    cases["nan row"] = (xn, 1)
    xe = x.clone()
    xe[17] = -INF
    xe[30] = -INF
    cases["empty rows"] = (xe, 2)
    xb = xe.clone()
    xb[3, 8] = float("nan")
    cases["empty and nan rows"] = (xb, 2)
    for name, (xc, want_runs) in cases.items():
        runs.clear()
        loss, grad = _fwd_bwd(xc, t, reduction=reduction)
        assert len(runs) == want_runs, name
        loss32, grad32 = _fwd_bwd(xc.float(), t, reduction=reduction)
        nan = torch.isnan(loss32)
        assert torch.equal(torch.isnan(loss), nan), name
        if not nan.any():
            assert ulps(loss, loss32.to(torch.bfloat16)).max() <= 1, name
        rows = ~torch.isnan(grad32).any(dim=-1)
        assert ulps(grad[rows], grad32.to(torch.bfloat16)[rows]).max() <= 1, name
        if name == "empty rows":
            assert torch.equal(grad[[17, 30]], torch.zeros(2, 300, dtype=torch.bfloat16))
            if reduction == "mean":  # the mean over the 38 other rows
                keep = torch.ones(40, dtype=torch.bool)
                keep[[17, 30]] = False
                ref = F.cross_entropy(xc.double()[keep], t[keep])
                assert abs(float(loss) - float(ref)) <= 2.0**-8 * abs(float(ref))
        # forward only (no gradient): the same check, the same loss
        runs.clear()
        with torch.no_grad():
            lf = skt.cross_entropy(xc, t, reduction=reduction)
        assert len(runs) == want_runs and torch.equal(lf.isnan(), loss.isnan()), name
        assert torch.equal(lf.nan_to_num(7.0), loss.nan_to_num(7.0)), name
    runs.clear()
    z = xe.clone().requires_grad_()
    h = z * 1
    lo = skt.cross_entropy(h, t, reduction=reduction, grad_out=h)
    (lo.sum() if lo.ndim else lo).backward()
    assert len(runs) == 1
    assert torch.equal(lo.nan_to_num(7.0), _fwd_bwd(xe, t, reduction=reduction)[0].nan_to_num(7.0))


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_bf16_unweighted_rows_equal_the_weighted_path_with_unit_weights(reduction):
    # no weights, every row counted, no z-loss: one scale array and one sum; the same
    # bits as the general per-row weights (unit weights) and parts
    x = _bf16_logits((64, 500), 23)
    t = torch.randint(0, 500, (64,), generator=torch.Generator().manual_seed(24))
    a = _fwd_bwd(x, t, reduction=reduction)
    b = _fwd_bwd(x, t, reduction=reduction, weight=torch.ones(500))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_bf16_cross_entropy_checks_options_like_numpy():
    x = _bf16_logits((4, 10), 9)
    t = torch.tensor([0, 1, 2, 3])
    with pytest.raises(ValueError, match="label_smoothing"):
        skt.cross_entropy(x, t, label_smoothing=1.5)
    with pytest.raises(ValueError, match="weight must have shape"):
        skt.cross_entropy(x, t, weight=torch.ones(3))
    with pytest.raises(ValueError, match="sum to 0"):
        skt.cross_entropy(x, t, weight=torch.zeros(10))


# ------------------------------------------------------------- gradient cache
@pytest.fixture
def grad_cache():
    gc.collect()
    old = skt.set_grad_cache(0)  # start empty: earlier tests' released buffers
    skt.set_grad_cache(64 * MiB)
    yield
    skt.set_grad_cache(old)


def _span(t):
    return t.data_ptr(), t.data_ptr() + t.numel() * t.element_size()


def test_grad_cache_never_hands_out_a_live_gradient(grad_cache):
    # 2 MiB float32 gradients (4 MiB and more are cached): two losses whose
    # gradients are both kept must not share memory; a released one is reused
    x = torch.randn(256, 4096)
    t = torch.randint(0, 4096, (256,))
    grads, ptrs = [], []
    for _k in range(3):
        xa = x.clone().requires_grad_()
        skt.cross_entropy(xa, t).backward()
        grads.append(xa.grad)
        ptrs.append(_span(xa.grad))
    for i in range(3):
        for j in range(i):
            (a0, a1), (b0, b1) = ptrs[i], ptrs[j]
            assert a1 <= b0 or b1 <= a0, "two live gradients share memory"
    ref = grads[0].clone()
    assert all(torch.equal(g, ref) for g in grads[1:])
    hits = skt.grad_cache_info()["hits"]
    del grads, xa
    gc.collect()
    info = skt.grad_cache_info()
    assert info["buffers"] == 3 and info["cached_bytes"] == 3 * 4 * MiB
    xa = x.clone().requires_grad_()
    skt.cross_entropy(xa, t).backward()
    assert skt.grad_cache_info()["hits"] == hits + 1
    assert _span(xa.grad) in ptrs  # a released buffer, warm
    assert torch.equal(xa.grad, ref)


def test_grad_cache_scaled_backward_and_retain_graph(grad_cache):
    # an upstream gradient other than 1 makes a new buffer; the saved gradient is
    # not modified, so a second backward through a retained graph is the same
    x = torch.randn(128, 8192)
    t = torch.randint(0, 8192, (128,))
    xa = x.clone().requires_grad_()
    loss = skt.cross_entropy(xa, t)
    (loss * 0.5).backward(retain_graph=True)
    g1 = xa.grad.clone()
    xa.grad = None
    (loss * 0.5).backward()
    assert torch.equal(xa.grad, g1)
    xd = x.double().requires_grad_()
    (F.cross_entropy(xd, t) * 0.5).backward()
    assert torch.allclose(g1.double(), xd.grad, rtol=0, atol=1e-7)


def test_grad_cache_limit(grad_cache):
    x = torch.randn(64, 32768)  # an 8 MiB gradient
    t = torch.randint(0, 32768, (64,))
    skt.set_grad_cache(0)
    skt.set_grad_cache(4 * MiB)  # smaller than the buffer: never kept
    xa = x.clone().requires_grad_()
    skt.cross_entropy(xa, t).backward()
    del xa
    gc.collect()
    assert skt.grad_cache_info()["buffers"] == 0
    skt.set_grad_cache(64 * MiB)
    xa = x.clone().requires_grad_()
    skt.cross_entropy(xa, t).backward()
    del xa
    gc.collect()
    assert skt.grad_cache_info()["cached_bytes"] == 8 * MiB
    assert skt.set_grad_cache(0) == 64 * MiB  # turning it off frees what it holds
    assert skt.grad_cache_info()["buffers"] == 0
    with pytest.raises(TypeError, match="limit"):
        skt.set_grad_cache(True)
    with pytest.raises(ValueError, match=">= 0"):
        skt.set_grad_cache(-1)


def test_grad_cache_environment_variable():
    code = (
        "import torch, softmaxkit.torch as skt\n"
        "print(skt.grad_cache_info()['limit'])\n"
        "try:\n"
        "    skt.set_grad_cache(0); skt._gradbuf.GRADS._limit = None\n"
        "    import os; os.environ['SOFTMAXKIT_GRAD_CACHE'] = 'lots'\n"
        "    skt.grad_cache_info()\n"
        "except ValueError as e:\n"
        "    print('ValueError', 'SOFTMAXKIT_GRAD_CACHE' in str(e))\n"
    )
    env = dict(os.environ, PYTHONPATH=str(SRC), SOFTMAXKIT_GRAD_CACHE="512M")
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == [str(512 * MiB), "ValueError", "True"]


def test_grad_cache_buffers_are_aligned_and_sized():
    from softmaxkit.torch._gradbuf import grad_buffer

    b = grad_buffer((1024, 2049), torch.float32)
    assert b.shape == (1024, 2049) and b.is_contiguous() and b.dtype == torch.float32
    assert b.data_ptr() % (2 * MiB) == 0
    s = grad_buffer((3, 5), torch.bfloat16)  # small: a plain tensor
    assert s.shape == (3, 5) and s.dtype == torch.bfloat16
    np.testing.assert_equal(b.numpy().shape, (1024, 2049))


# ------------------------------------------------------------------- grad_out=
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_grad_out_logits_in_place_equals_default(dtype, reduction):
    # grad_out=logits (non-leaf logits, as an LM head's output): the loss and the
    # gradient reaching the layer below equal the default path's; the logits'
    # storage now holds the gradient (the documented mutation); a 0.5 upstream
    # scale is applied in place
    g = torch.Generator().manual_seed(11)
    x0 = (torch.randn(12, 300, generator=g) * 3).to(dtype)
    t = torch.randint(0, 300, (12,), generator=g)
    t[4] = -1
    kw = {"reduction": reduction, "ignore_index": -1, "label_smoothing": 0.1}
    h = x0.clone().requires_grad_()
    z = h * 1
    loss = skt.cross_entropy(z, t, grad_out=z, **kw)
    (loss.sum() * 0.5).backward()
    h2 = x0.clone().requires_grad_()
    l2 = skt.cross_entropy(h2 * 1, t, **kw)
    (l2.sum() * 0.5).backward()
    # float64: the in-place and the two-array exp loops may sum in another order
    tol = {"rtol": 1e-12, "atol": 1e-16} if dtype == torch.float64 else {"rtol": 0, "atol": 0}
    torch.testing.assert_close(loss, l2, **tol)
    torch.testing.assert_close(h.grad, h2.grad, **tol)
    torch.testing.assert_close(z.detach(), h2.grad, **tol)


def test_grad_out_separate_buffer_and_input_untouched():
    x = torch.randn(6, 40, dtype=torch.float64, requires_grad=True)
    before = x.detach().clone()
    t = torch.randint(0, 40, (6,))
    buf = torch.full((6, 40), 7.0, dtype=torch.float64)
    skt.cross_entropy(x, t, grad_out=buf).backward()
    assert torch.equal(x.detach(), before)
    xd = x.detach().clone().requires_grad_()
    F.cross_entropy(xd, t).backward()
    torch.testing.assert_close(buf, xd.grad, rtol=1e-14, atol=1e-16)
    torch.testing.assert_close(x.grad, xd.grad, rtol=1e-14, atol=1e-16)


def test_grad_out_misuse_raises():
    x = torch.randn(4, 10, requires_grad=True)
    t = torch.tensor([0, 1, 2, 3])
    y = torch.tanh(x)  # tanh saves its output for backward: overwriting it must fail
    loss = skt.cross_entropy(y, t, grad_out=y)
    with pytest.raises(RuntimeError, match="inplace"):
        loss.backward()
    z = x * 2
    loss = skt.cross_entropy(z, t, grad_out=z)
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="second backward"):
        loss.backward()
    with pytest.raises(ValueError, match="shape"):
        skt.cross_entropy(x * 1, t, grad_out=torch.empty(4, 11))
    with pytest.raises(ValueError, match="dtype"):
        skt.cross_entropy(x * 1, t, grad_out=torch.empty(4, 10, dtype=torch.float64))
    with pytest.raises(ValueError, match="require grad"):
        skt.cross_entropy(x.detach(), t, grad_out=torch.empty(4, 10))
    with pytest.raises(ValueError, match="must not require a gradient"):
        skt.cross_entropy(x * 1, t, grad_out=torch.empty(4, 10, requires_grad=True))
    with pytest.raises(TypeError, match="grad_out"):
        skt.cross_entropy(x * 1, t, grad_out=np.empty((4, 10), np.float32))


# torch 2.13 warns about itself: dynamo instantiates every autograd.Function it
# traces (any, not only ours), inductor uses torch.jit.script_method
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_grad_out_opcheck_and_compile():
    from softmaxkit.torch._ops_ce import _ce_out_op

    x = torch.randn(8, 50, dtype=torch.float64)
    t = torch.randint(0, 50, (8,))
    buf = torch.empty_like(x)
    torch.library.opcheck(_ce_out_op, (x, t, None, None, 0.1, "mean", 0.0, 1.0, None, 1, buf))
    W = torch.randn(50, 50, dtype=torch.float64, requires_grad=True)
    h = torch.randn(8, 50, dtype=torch.float64, requires_grad=True)

    def f(h):
        z = h @ W
        return skt.cross_entropy(z, t, grad_out=z)

    loss = torch.compile(f, fullgraph=True)(h)
    loss.backward()
    gW, gh = W.grad.clone(), h.grad.clone()
    W.grad = h.grad = None
    ref = F.cross_entropy(h @ W, t)
    ref.backward()
    torch.testing.assert_close(loss, ref)
    torch.testing.assert_close(gW, W.grad)
    torch.testing.assert_close(gh, h.grad)


# ----------------------------------------------------- bfloat16 dense, short rows
@pytest.mark.parametrize("log", [False, True])
@pytest.mark.parametrize("n", [1, 7, 128, 2048])
def test_bf16_short_rows_paired_passes_match_one_row_passes(n, log):
    # rows of n <= PAIR_MAX go two at a time; a pair with a special row (+-inf max,
    # NaN, empty) falls back to the one-row code; an odd last row too.  Against the
    # one-row passes: the same NaN / special rows, at most 1 ulp (float32 sum order)
    from softmaxkit._kernels import bf16

    x = _bf16_logits((37, n), 12, scale=5.0)
    x[3] = -INF
    x[6, 0] = INF
    x[9, n // 2] = float("nan")
    x[14] = 0.0
    xb = x.view(torch.int16).numpy().view(np.uint16)
    a = np.empty_like(xb)
    b = np.empty_like(xb)
    bf16.softmax_range(xb, 1.0 / 1.5, log, a, 0, 37)
    bf16._rows(xb, np.float32(1.0 / 1.5), log, b, 0, 37, np.empty(n, np.float32))
    fa = torch.from_numpy(a.view(np.int16)).view(torch.bfloat16).float()
    fb = torch.from_numpy(b.view(np.int16)).view(torch.bfloat16).float()
    assert torch.equal(fa.isnan(), fb.isnan())
    ok = ~fa.isnan()
    assert torch.equal(fa[ok].isinf(), fb[ok].isinf())
    fin = ok & ~fa.isinf()
    d = a.view(np.int16)[fin.numpy()].astype(np.int32) - b.view(np.int16)[fin.numpy()]
    assert np.abs(d).max(initial=0) <= 1


# ------------------------------------------ bfloat16 short rows: the fast kernel
def _ref_rows(x, t, **kw):
    """float64 torch per-row losses and gradient of the same bfloat16 values."""
    xd = x.double().requires_grad_()
    loss = F.cross_entropy(xd, t, reduction="none", **kw)
    loss.sum().backward()
    return loss.detach(), xd.grad


def test_bf16_fast_rows_confident_targets_keep_their_digits():
    # target 8..60 above the rest: loss and p_t - 1 down to 1e-26, where log(s) -
    # (v_t - c) and softmax - 1 would cancel to 0 (the float32 path's 0 or 2^-24);
    # the fast kernel takes both from r, the sum of the other exponentials
    R, C = 64, 128
    x = _bf16_logits((R, C), 21, scale=1.0)
    t = torch.randint(0, C, (R,), generator=torch.Generator().manual_seed(22))
    gap = torch.linspace(8.0, 60.0, R)
    x[torch.arange(R), t] = (x.float().amax(-1) + gap).to(torch.bfloat16)
    loss, grad = _fwd_bwd(x, t, reduction="none")
    # float64 without the cancellation: r = sum_{j != t} e^{v_j - v_t}, loss log1p(r),
    # softmax_j = e^{v_j - v_t} / (1 + r), and the target's gradient -r / (1 + r)
    xd = x.double()
    e = torch.exp(xd - xd[torch.arange(R), t][:, None])
    e[torch.arange(R), t] = 0.0
    r = e.sum(-1)
    ref = torch.log1p(r)
    assert ref.min() < 1e-20
    gref = e / (1 + r)[:, None]
    gref[torch.arange(R), t] = -r / (1 + r)
    rel = ((loss.double() - ref).abs() / ref).max()
    assert rel <= 2.0**-8, float(rel)
    assert ulps(grad, gref.to(torch.bfloat16)).max() <= 1


@pytest.mark.parametrize(
    "kw",
    [{}, {"z_loss": 1e-2}, {"temperature": 0.5}, {"temperature": 0.7}],
    ids=["plain", "z_loss", "T=0.5", "T=0.7 (widening row)"],
)
def test_bf16_fast_rows_vs_float64_reference(kw):
    R, C = 301, 128  # odd: a last row alone
    x = _bf16_logits((R, C), 23)
    t = torch.randint(0, C, (R,), generator=torch.Generator().manual_seed(24))
    x[3, 0] = x[3].float().amax() - 75.0  # first value 75 below the max: s >= 2^100
    x[4, 0] = -INF  # first value -inf: the shift is not finite
    x[5, t[5]] = -INF  # target logit -inf: loss +inf
    x[6, 1:] = -INF  # only the first entry: loss 0 or +inf
    loss, grad = _fwd_bwd(x, t, reduction="none", **kw)
    T = kw.get("temperature", 1.0)
    xs = (x.double() / T).to(torch.float64)
    ref, gref = _ref_rows(xs, t)
    gref = gref / T
    z = kw.get("z_loss", 0.0)
    if z:
        lse = torch.logsumexp(xs, -1)
        ref = ref + z * lse**2
        gref = gref + (2 * z * lse / T)[:, None] * torch.softmax(xs, -1)
    assert torch.isinf(loss[5]) and torch.isinf(ref[5])
    ok = torch.isfinite(ref)
    rel = ((loss.double() - ref).abs() / ref.abs().clamp_min(1e-30))[ok].max()
    assert rel <= 2.0**-8, float(rel)
    fin = torch.isfinite(gref).all(-1)
    scale = gref[fin].abs().amax(-1, keepdim=True)
    assert ((grad[fin].double() - gref[fin]).abs() / scale).max() <= 2.0**-8


def test_bf16_fast_kernel_same_bits_whatever_the_row_ranges():
    # rows run two at a time, a row alone with the same rule, unsafe rows on the
    # float32 path: the bits never depend on where the thread ranges start
    from softmaxkit._core import ce as _ce
    from softmaxkit._kernels.losses import bf16 as kb

    R, C = 41, 96
    x = _bf16_logits((R, C), 25)
    x[7, 5] = INF
    x[8, 0] = -INF
    x[9, 0] = x[9].float().amax() - 80.0
    x[12, 3] = float("nan")
    t = torch.randint(0, C, (R,), generator=torch.Generator().manual_seed(26)).numpy()
    xb = x.view(torch.int16).numpy().view(np.uint16)
    act = np.ones(R, dtype=np.bool_)
    act[20] = False
    a, b = np.full(R, 1.0 / R), np.full(R, 0.5 / R)

    def run(bounds):
        g, ce, lse = np.zeros_like(xb), np.zeros(R), np.zeros(R)
        for r0, r1 in itertools.pairwise(bounds):
            kb.ce_rows_bf16(xb, t, 1.0, 0.0, 1e-3, a, b, act, True, g, ce, lse,
                            _ce.lim(np.float32), r0, r1)  # fmt: skip
        return g, ce, lse

    whole = run([0, R])
    for bounds in ([0, 1, R], [0, 7, 8, 13, R], list(range(R + 1))):
        parts = run(bounds)
        for u, v in zip(whole, parts, strict=True):
            np.testing.assert_array_equal(u, v)
