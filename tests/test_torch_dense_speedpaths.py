"""softmaxkit.torch dense ops: the buffers of a training step (``torch/_fast.py``,
``torch/_ops_dense.py``).

softmax / log_softmax with a gradient save their output and write their gradient
into buffers from the released-gradient cache (``_gradbuf``), and logsumexp's first
order backward writes ``softmax * g / T`` into one such buffer.  These tests check
that those paths are taken (cache hits on the next step), that they give the
operator path's values bit for bit and torch's / a float64 reference's on the
contract rows (all -inf, +inf, NaN, zero and masked rows), that buffers still in
use are never handed out again, and that no input is modified.
"""

from __future__ import annotations

import gc

import pytest
from _bf16util import ulps

import softmaxkit as sk

torch = pytest.importorskip("torch")
skt = pytest.importorskip("softmaxkit.torch")

INF = float("inf")
NAN = float("nan")
MiB = 1 << 20
# 2048 columns: 4 MiB and more in every dtype (the cache's threshold), 2 threads
SHAPE = (1024, 2048)
DTYPES = [torch.bfloat16, torch.float32, torch.float64]


@pytest.fixture
def grad_cache():
    gc.collect()
    old = skt.set_grad_cache(0)  # start empty: earlier tests' released buffers
    skt.set_grad_cache(256 * MiB)
    yield
    skt.set_grad_cache(old)


def _logits(dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*SHAPE, generator=g, dtype=torch.float64) * 3
    x[0] = -INF  # empty row: 0 / -inf, gradient 0
    x[1, 7] = INF  # the +inf rule
    x[2, 11] = NAN  # NaN row
    x[3] = 0.0
    x[4, 100:] = -INF  # partly masked by -inf
    return x.to(dtype)


def _span(t):
    return t.data_ptr(), t.data_ptr() + t.numel() * t.element_size()


def _disjoint(spans):
    for i in range(len(spans)):
        for j in range(i):
            (a0, a1), (b0, b1) = spans[i], spans[j]
            assert a1 <= b0 or b1 <= a0, "two live tensors share memory"


def _same(a, b):
    assert a.dtype == b.dtype and a.shape == b.shape
    return torch.equal(a.isnan(), b.isnan()) and torch.equal(
        a.nan_to_num(0.0, 0.0, 0.0), b.nan_to_num(0.0, 0.0, 0.0)
    )


def _tol(dtype):
    return {torch.bfloat16: 2**-7, torch.float32: 2e-6, torch.float64: 1e-12}[dtype]


def _step(f, x, g, **kw):
    xa = x.clone().requires_grad_()
    y = f(xa, **kw)
    y.backward(g)
    return y.detach(), xa.grad


def _check_values(y1, gx1, x, g, log):
    """Against float64 torch on the ordinary rows, and the contract on the others:
    the output from x; the gradient from the (rounded) saved output, as the kernel
    computes it, within tol of the terms' magnitudes (T = 0.7)."""
    xd = x.double()
    tf = torch.log_softmax if log else torch.softmax
    tol = _tol(x.dtype)
    torch.testing.assert_close(y1[5:].double(), tf(xd[5:] / 0.7, -1), rtol=tol, atol=tol)
    yd, gd = y1[5:].double(), g[5:].double()
    p = yd.exp() if log else yd
    s = (gd if log else p * gd).sum(-1, keepdim=True)
    ref = (gd - p * s if log else p * (gd - s)) / 0.7
    scale = (gd.abs() + (p * s).abs() if log else p * (gd.abs() + s.abs())) / 0.7
    assert ((gx1[5:].double() - ref).abs() <= tol * scale + 1e-300).all()
    miss = -INF if log else 0.0
    assert (y1[0] == miss).all() and (gx1[0] == 0).all()
    assert y1[1, 7] == (0.0 if log else 1.0) and (y1[1, :7] == miss).all()
    assert y1[2].isnan().all()
    assert (y1[4, 100:] == miss).all()
    if not log:
        assert (gx1[4, 100:] == 0).all()


@pytest.mark.parametrize("log", [False, True])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_training_step_output_and_gradient_reuse_released_buffers(grad_cache, dtype, log):
    f = skt.log_softmax if log else skt.softmax
    op = torch.ops.softmaxkit.log_softmax if log else torch.ops.softmaxkit.softmax
    x = _logits(dtype)
    g = torch.randn(*SHAPE, generator=torch.Generator().manual_seed(1)).to(dtype)
    x0, g0 = x.clone(), g.clone()
    y1, gx1 = _step(f, x, g, temperature=0.7)
    assert torch.equal(x.view(torch.uint8), x0.view(torch.uint8))  # inputs not modified
    assert torch.equal(g.view(torch.uint8), g0.view(torch.uint8))
    # the operator path (its own buffers): the same values, bit for bit
    xb = x.clone().requires_grad_()
    yb = op(xb, [-1], 0.7, None)
    (gb,) = torch.autograd.grad(yb, xb, g)
    assert _same(y1, yb.detach()) and _same(gx1, gb)
    _check_values(y1, gx1, x, g, log)
    # (the operator path's gradient gb comes from the cache too)
    spans = {_span(y1), _span(gx1), _span(gb)}
    hits = skt.grad_cache_info()["hits"]
    del y1, gx1, xb, yb, gb
    gc.collect()
    assert skt.grad_cache_info()["buffers"] == 3
    y2, gx2 = _step(f, x, g, temperature=0.7)
    # the saved output and the gradient both took a released buffer
    assert skt.grad_cache_info()["hits"] == hits + 2
    assert {_span(y2), _span(gx2)} <= spans
    y3, gx3 = _step(f, x, g, temperature=0.7)  # y2, gx2 alive: fresh ones
    _disjoint([_span(y2), _span(gx2), _span(y3), _span(gx3)])
    assert _same(y2, y3) and _same(gx2, gx3)


@pytest.mark.parametrize("log", [False, True])
def test_live_output_survives_later_steps_and_retained_graphs(grad_cache, log):
    # a saved output the caller keeps (with its graph retained) is never handed
    # out again: later steps neither overwrite it nor share its memory, and the
    # backward kernel never writes into it
    f = skt.log_softmax if log else skt.softmax
    x = _logits(torch.float32, 3)
    g = torch.randn(*SHAPE, generator=torch.Generator().manual_seed(4))
    xa = x.clone().requires_grad_()
    y = f(xa)
    keep = y.detach().clone()
    y.backward(g, retain_graph=True)
    first = xa.grad.clone()
    xa.grad = None
    others = []
    for _k in range(3):
        others.append(_step(f, x * 0.5, g))
        gc.collect()
    y.backward(g)
    assert _same(y.detach(), keep) and _same(xa.grad, first)
    _disjoint([_span(y), _span(xa.grad)] + [_span(t) for pair in others for t in pair])


@pytest.mark.parametrize("where", [False, True])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_logsumexp_backward_into_one_cached_buffer(grad_cache, dtype, where):
    # first-order eager backward: softmax * g / T into a buffer from the cache, the
    # same bits as the differentiable operator path (create_graph=True takes it)
    x = _logits(dtype, 5)
    g = torch.randn(SHAPE[0], generator=torch.Generator().manual_seed(6)).to(dtype)
    mask = None
    if where:
        mask = torch.rand(*SHAPE, generator=torch.Generator().manual_seed(7)) > 0.3
        mask[6] = False  # a fully masked row: -inf, gradient 0
    x0, g0 = x.clone(), g.clone()
    xa = x.clone().requires_grad_()
    skt.logsumexp(xa, temperature=1.5, where=mask).backward(g)
    assert torch.equal(x.view(torch.uint8), x0.view(torch.uint8))
    assert torch.equal(g.view(torch.uint8), g0.view(torch.uint8))
    xb = x.clone().requires_grad_()
    lb = skt.logsumexp(xb, temperature=1.5, where=mask)
    (gb,) = torch.autograd.grad(lb, xb, g, create_graph=True)
    if dtype == torch.bfloat16 and not where:
        # bfloat16 over the last axis: one pass from the saved float32 row values,
        # rounded once (the operator path rounds the softmax, then the product)
        assert ulps(xa.grad, gb.detach()).max() <= 2  # (that path: 1.5 ulp at most)
    else:
        assert _same(xa.grad, gb.detach())
    # float64 torch on the ordinary rows
    xd = x.double().masked_fill(~mask, -INF) if where else x.double().clone()
    xd = xd.requires_grad_()
    (gd,) = torch.autograd.grad(torch.logsumexp(xd[7:] / 1.5, -1), xd, g.double()[7:])
    tol = _tol(dtype)
    torch.testing.assert_close(xa.grad[7:].double(), gd[7:], rtol=tol, atol=tol)
    assert (xa.grad[0] == 0).all()
    if where:
        # masked entries: 0 even in the NaN row (row 2), whose others are NaN
        assert (xa.grad[~mask] == 0).all() and (xa.grad[6] == 0).all()
        assert xa.grad[2][mask[2]].isnan().all() == bool(mask[2, 11])
    else:
        assert xa.grad[2].isnan().all()
        assert xa.grad[1, 7] == g[1] / 1.5 and (xa.grad[1, :7] == 0).all()
    span = _span(xa.grad)
    hits = skt.grad_cache_info()["hits"]
    del xa, xb, lb, gb
    gc.collect()
    xc = x.clone().requires_grad_()
    skt.logsumexp(xc, temperature=1.5, where=mask).backward(g)
    # (bfloat16 with where: its float32 temporary is a second hit)
    assert skt.grad_cache_info()["hits"] >= hits + 1 and _span(xc.grad) == span


# ------------------------------------------------------ bfloat16 logsumexp kernel
def _lse_rows_input(shape, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=g, dtype=torch.float64) * 4
    r = x.view(-1, shape[-1])
    n = r.shape[1]
    specials = [
        lambda row: row.fill_(-INF),  # empty: -inf
        lambda row: row.__setitem__(n // 2, INF),  # +inf
        lambda row: row.__setitem__(n - 1, NAN),  # NaN
        lambda row: row.fill_(0.0),  # log(n)
        lambda row: (row.__setitem__(0, INF), row.__setitem__(n - 1, NAN)),  # NaN wins
        lambda row: (row.fill_(-INF), row.__setitem__(n - 1, NAN)),  # NaN wins
        lambda row: row.fill_(3e38),  # huge: no overflow of the shifted sum
        lambda row: row.__setitem__(slice(1, None), -INF),  # one finite entry
    ]
    for k, f in enumerate(specials):
        if 2 * k + 1 < r.shape[0]:
            f(r[2 * k + 1])  # odd rows: the second row of a pair, and the one-row code
    return x.to(torch.bfloat16)


@pytest.mark.parametrize(
    "shape,axis",
    [((64, 128), -1), ((37, 129), -1), ((17, 2049), -1), ((4, 5, 33), (1, 2)), ((9, 1), -1)],
    ids=str,
)
@pytest.mark.parametrize("T", [1.0, 0.6])
def test_bf16_logsumexp_bits_kernel_matches_float64(shape, axis, T):
    x = _lse_rows_input(shape, 11)
    before = x.clone()
    from softmaxkit.torch import _ops_dense

    dims = [axis] if isinstance(axis, int) else list(axis)
    assert _ops_dense._lse_bf16(x, dims, T) is not None  # the bits kernel takes it
    got = skt.logsumexp(x, axis=axis, temperature=T)
    assert torch.equal(x.view(torch.int16), before.view(torch.int16))  # not modified
    assert got.dtype == torch.bfloat16
    ref = torch.logsumexp(x.double() / T, dim=axis)
    # (torch: +inf for a +inf entry, -inf for an empty row; NaN wherever a NaN is)
    rows = x.double().reshape(ref.numel(), -1)
    ref = ref.reshape(-1).clone()
    ref[rows.isnan().any(-1)] = NAN
    g = got.double().reshape(-1)
    assert torch.equal(g.isnan(), ref.isnan())
    fin = ~ref.isnan()
    # (against the reference rounded to bfloat16: 3e38 / 0.6 overflows it to +inf)
    torch.testing.assert_close(g[fin], ref[fin].to(torch.bfloat16).double(), rtol=2**-8, atol=0)
    # the float32 path (widened copy, rounded once) agrees to one bfloat16 ulp
    wide = skt.logsumexp(x.float(), axis=axis, temperature=T).to(torch.bfloat16).double()
    torch.testing.assert_close(g[fin], wide.reshape(-1)[fin], rtol=2**-8, atol=0)
    kd = skt.logsumexp(x, axis=axis, temperature=T, keepdims=True)
    assert torch.equal(kd.reshape(-1).view(torch.int16), got.reshape(-1).view(torch.int16))


@pytest.mark.parametrize("shape", [(37, 129), (17, 2049), (3, 4, 40), (50,)], ids=str)
@pytest.mark.parametrize("T", [1.0, 0.6])
@pytest.mark.parametrize("keepdims", [False, True])
def test_bf16_logsumexp_backward_in_one_pass(shape, T, keepdims):
    # a plain bfloat16 call over the last axis keeps its float32 row values and
    # writes exp(x / T - lse) g / T rounded once: one bfloat16 ulp of float64 on
    # ordinary rows; the contract rows (softmax row, scaled) as the operator path's
    x = _lse_rows_input(shape, 15)
    r = x.view(-1, shape[-1])
    if r.shape[0] > 20:
        r[20, 3] = 5000.0  # |lse| >= 2^12: the softmax row, scaled
    x0 = x.clone()
    oshape = (*shape[:-1], 1) if keepdims else shape[:-1]
    g = torch.randn(oshape, generator=torch.Generator().manual_seed(16)).to(torch.bfloat16)
    xa = x.clone().requires_grad_()
    y = skt.logsumexp(xa, temperature=T, keepdims=keepdims)
    assert type(y.grad_fn).__name__ == "_LSEBackward"  # the one-pass path
    plain = skt.logsumexp(x, temperature=T, keepdims=keepdims)
    assert torch.equal(y.detach().view(torch.int16), plain.view(torch.int16))
    y.backward(g)
    assert torch.equal(x.view(torch.int16), x0.view(torch.int16))
    xb = x.clone().requires_grad_()
    (gc_,) = torch.autograd.grad(
        skt.logsumexp(xb, temperature=T, keepdims=keepdims), xb, g, create_graph=True
    )
    (gc_.float().sum()).backward()  # differentiable again
    rows = x.double().reshape(-1, shape[-1])
    ordinary = torch.isfinite(rows).all(-1) & (rows.abs().amax(-1) < 4000)
    xd = x.double().requires_grad_()
    (gd,) = torch.autograd.grad(torch.logsumexp(xd / T, -1, keepdim=keepdims), xd, g.double())
    ga = xa.grad.reshape(-1, shape[-1])
    ref = gd.reshape(-1, shape[-1]).to(torch.bfloat16)
    assert ulps(ga[ordinary], ref[ordinary]).max() <= 1
    # the other rows: the operator path's values (it rounds the softmax, then the
    # product: one more ulp), NaN where NaN
    other = gc_.detach().reshape(-1, shape[-1])
    if (~ordinary).any():
        assert ulps(ga[~ordinary], other[~ordinary]).max() <= 1
    assert ga.shape == rows.shape and xa.grad.dtype == torch.bfloat16


def test_bf16_logsumexp_one_pass_only_for_plain_calls():
    x = _lse_rows_input((8, 40), 17).requires_grad_()
    names = {
        type(skt.logsumexp(x, **kw).grad_fn).__name__
        for kw in ({"where": torch.ones(8, 40, dtype=torch.bool)}, {"axis": 0},
                   {"dtype": torch.float32}, {"b": torch.ones(8, 40)})
    }  # fmt: skip
    assert "_LSEBackward" not in names
    y, _ = skt.logsumexp(x, return_sign=True)
    assert type(y.grad_fn).__name__ != "_LSEBackward"
    with torch.no_grad():
        assert skt.logsumexp(x).grad_fn is None


def test_bf16_logsumexp_other_calls_keep_the_float32_path():
    from softmaxkit.torch import _ops_dense

    x = _lse_rows_input((8, 40), 12)
    assert _ops_dense._lse_bf16(x.t(), [-1], 1.0) is None  # strided
    assert _ops_dense._lse_bf16(x, [0], 1.0) is None  # not trailing
    mask = torch.ones(8, 40, dtype=torch.bool)
    mask[2, :5] = False
    a = skt.logsumexp(x, where=mask)  # where: the float32 path
    b = skt.logsumexp(x.float(), where=mask).to(torch.bfloat16)
    assert torch.equal(a.isnan(), b.isnan())
    assert torch.equal(a.nan_to_num(0.0), b.nan_to_num(0.0))


# ------------------------------------------------ bfloat16 ranges on two threads
def test_bf16_many_small_ranges_give_the_one_thread_bits():
    # the parallel bfloat16 calls cut their rows into up to 64 ranges a thread
    # (torch/_fast.chunks_for): every row written once, the same bits as one thread
    import numba

    from softmaxkit.torch import _fast

    assert _fast.chunks_for(1 << 10, 2) == 4 and _fast.chunks_for(1 << 40, 2) == 64
    assert _fast.chunks_for(65536 * 128, 2) == 32
    x = _lse_rows_input((8191, 257), 13)  # 2.1M values: parallel, odd row count
    g = torch.randn(8191, 257, generator=torch.Generator().manual_seed(14)).to(torch.bfloat16)
    old = numba.get_num_threads()
    res = {}
    # no cached buffers: a row left unwritten must not show an earlier run's values
    old_cache = (skt.set_grad_cache(0), sk.set_output_cache(0))
    try:
        for nt in (1, min(2, numba.config.NUMBA_NUM_THREADS)):
            numba.set_num_threads(nt)
            out = []
            for f in (skt.softmax, skt.log_softmax):
                xa = x.clone().requires_grad_()
                y = f(xa, temperature=0.9)
                y.backward(g)
                out += [y.detach(), xa.grad]
            out.append(skt.logsumexp(x, temperature=0.9))
            res[nt] = [t.view(torch.int16) for t in out]
    finally:
        numba.set_num_threads(old)
        skt.set_grad_cache(old_cache[0])
        sk.set_output_cache(old_cache[1])
    for a, b in zip(res[1], res[max(res)], strict=True):
        assert torch.equal(a, b)
