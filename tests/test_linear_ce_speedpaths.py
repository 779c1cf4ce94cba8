"""linear_cross_entropy's PyTorch-BLAS paths (issue 20, the torch operator's speed).

``softmaxkit::linear_cross_entropy`` runs the matmuls on PyTorch's BLAS
(``_linear_ce.torch_blas``); with gradients and several PyTorch threads the row
blocks go to ``_rows_split`` (one vocabulary slice per thread, one-thread matmuls,
two barriers per block).  Both are checked here against the float64 reference and
torch autograd over every option, on small shapes with the size threshold lowered.
"""

from __future__ import annotations

import threading
import tracemalloc

import numpy as np
import pytest

import softmaxkit as sk
from softmaxkit import _linear_ce
from softmaxkit import reference as ref

torch = pytest.importorskip("torch")


def _data(N=13, d=5, V=29, seed=0):
    rng = np.random.default_rng(seed)
    h = rng.normal(size=(N, d))
    W = rng.normal(size=(V, d))
    b = rng.normal(size=V)
    t = rng.integers(0, V, N)
    return h, W, b, t


OPTS = [
    dict(),
    dict(reduction="sum", label_smoothing=0.2),
    dict(reduction="none", z_loss=1e-2, temperature=0.7),
    dict(weight="w", ignore_index=-1, label_smoothing=0.1),
    dict(where="vocab", label_smoothing=0.3, z_loss=0.1),
    dict(temperature=1e308),  # 1/T not a normal float: the logits divided by T
    dict(ignore_index=-1, all_ignored=True),
]


def _options(opts, t, V):
    opts = dict(opts)
    if opts.pop("all_ignored", False):
        t[:] = -1
    elif "ignore_index" in opts:
        t[[2, 5]] = -1
    if opts.get("weight") == "w":
        opts["weight"] = np.random.default_rng(1).uniform(0.5, 2, V)
    if opts.get("where") == "vocab":
        mask = np.random.default_rng(2).random(V) > 0.3
        mask[t[t >= 0]] = True
        opts["where"] = mask
    return opts


@pytest.fixture
def threads(monkeypatch):
    """Set PyTorch's thread count and let every block take the split path."""
    monkeypatch.setattr(_linear_ce, "_SPLIT_MIN", 0)
    before = torch.get_num_threads()

    def set_(n):
        torch.set_num_threads(n)

    yield set_
    torch.set_num_threads(before)


@pytest.mark.parametrize("opts", OPTS)
@pytest.mark.parametrize("rows", [1, 4, 13])
@pytest.mark.parametrize("P", [1, 2, 3])
@pytest.mark.parametrize("with_bias", [False, True])
def test_torch_blas_rows_match_reference(threads, opts, rows, P, with_bias):
    """P = 1: PyTorch's matmuls in one loop; P = 2, 3: the vocabulary split (uneven
    slices of V = 29, a last row block shorter than the others)."""
    threads(P)
    h, W, b, t = _data()
    opts = _options(opts, t, W.shape[0])
    bias = b if with_bias else None
    with _linear_ce.torch_blas():
        loss, (dh, dW, db) = sk.linear_cross_entropy(
            h, W, t, bias=bias, chunk_size=rows, strategy="rows", return_grad=True, **opts
        )
    assert torch.get_num_threads() == P  # restored after the split
    rl, (rdh, rdW, rdb) = ref.linear_cross_entropy(h, W, t, bias=bias, return_grad=True, **opts)
    np.testing.assert_allclose(loss, rl, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(dh, rdh, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(dW, rdW, rtol=1e-10, atol=1e-13)
    if with_bias:
        np.testing.assert_allclose(db, rdb, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("chunk", [3, 29])
def test_torch_blas_vocab_strategy_matches_reference(chunk):
    """The vocabulary walk (loss alone and gradients) on PyTorch's matmuls."""
    h, W, b, t = _data(seed=3)
    opts = _options(dict(label_smoothing=0.1, z_loss=1e-2), t, W.shape[0])
    with _linear_ce.torch_blas():
        loss, (dh, dW, db) = sk.linear_cross_entropy(
            h, W, t, bias=b, chunk_size=chunk, strategy="vocab", return_grad=True, **opts
        )
        alone = sk.linear_cross_entropy(h, W, t, bias=b, chunk_size=chunk, **opts)
    rl, (rdh, rdW, rdb) = ref.linear_cross_entropy(h, W, t, bias=b, return_grad=True, **opts)
    np.testing.assert_allclose([loss, alone], [rl, rl], rtol=1e-12)
    for x, r in [(dh, rdh), (dW, rdW), (db, rdb)]:
        np.testing.assert_allclose(x, r, rtol=1e-10, atol=1e-13)


def test_torch_blas_is_per_context():
    """The BLAS choice is scoped: outside the block (and on other threads) NumPy's."""
    seen = []
    with _linear_ce.torch_blas():
        seen.append(_linear_ce._BLAS.get())
        th = threading.Thread(target=lambda: seen.append(_linear_ce._BLAS.get()))
        th.start()
        th.join()
    seen.append(_linear_ce._BLAS.get())
    assert seen == ["torch", "numpy", "numpy"]


def _torch_materialised(h, W, t, bias, opts, reduction):
    """The materialised formula in torch (float64 autograd), our conventions."""
    import torch.nn.functional as F

    z = h @ W.T + bias
    T = opts.get("temperature", 1.0)
    z = z / T
    ii = opts.get("ignore_index")
    eps = opts.get("label_smoothing", 0.0)
    w = opts.get("weight")
    per = F.cross_entropy(
        z, t.clamp_min(0), weight=w, reduction="none", label_smoothing=eps
    )  # weighted by w_t already (no test combines weights with smoothing)
    lse = torch.logsumexp(z, -1)
    per = per + opts.get("z_loss", 0.0) * lse**2
    keep = (t != ii) if ii is not None else torch.ones_like(t, dtype=torch.bool)
    per = torch.where(keep, per, torch.zeros_like(per))
    wt = w[t.clamp_min(0)] if w is not None else torch.ones_like(per)
    if reduction == "none":
        return per
    if reduction == "sum":
        return per.sum()
    return per.sum() / (wt * keep).sum()


@pytest.mark.parametrize(
    "opts",
    [
        dict(),
        dict(reduction="sum", label_smoothing=0.2, z_loss=1e-2),
        dict(temperature=0.7, z_loss=1e-3),
        dict(weight="w", ignore_index=-1),
    ],
)
@pytest.mark.parametrize("P", [1, 2])
def test_torch_op_split_matches_autograd(threads, opts, P):
    """The operator (forward + backward, bias included) against torch autograd over
    the materialised logits, float64."""
    import softmaxkit.torch as skt

    threads(P)
    h0, W0, b0, t0 = _data(N=17, d=6, V=31, seed=5)
    opts = dict(opts)
    if opts.get("weight") == "w":
        opts["weight"] = torch.from_numpy(np.random.default_rng(1).uniform(0.5, 2, 31))
    if "ignore_index" in opts:
        t0[[1, 4]] = -1
    red = opts.pop("reduction", "mean")
    t = torch.from_numpy(t0)
    grads = []
    for f in ("ours", "theirs"):
        h, W, b = (torch.from_numpy(x.copy()).requires_grad_() for x in (h0, W0, b0))
        if f == "ours":
            loss = skt.linear_cross_entropy(
                h, W, t, bias=b, reduction=red, chunk_size=5, strategy="rows", **opts
            )
        else:
            loss = _torch_materialised(h, W, t, b, opts, red)
        up = torch.linspace(0.5, 1.5, loss.numel(), dtype=torch.float64).reshape(loss.shape)
        (loss * up).sum().backward()
        grads.append((loss.detach(), h.grad, W.grad, b.grad))
    for x, r in zip(*grads, strict=True):
        torch.testing.assert_close(x, r, rtol=1e-10, atol=1e-12)


def test_split_peak_memory(threads):
    """The split keeps the extra memory (beyond the gradients) under a tenth of the
    logits: one [rows, V] buffer and P [rows, d] partials."""
    threads(2)
    N, d, V = 256, 16, 20000
    h, W, _, t = _data(N=N, d=d, V=V, seed=6)
    with _linear_ce.torch_blas():
        sk.linear_cross_entropy(h[:2], W[:50], t[:2] % 50, chunk_size=1, return_grad=True)
        tracemalloc.start()
        try:
            sk.linear_cross_entropy(h, W, t, return_grad=True)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    logits_bytes = N * V * 8
    grads = (N * d + V * d) * 8
    assert peak - grads < logits_bytes / 10, (peak, logits_bytes)


def test_split_worker_error_raised_not_hung(threads, monkeypatch):
    """An error on a worker thread reaches the caller (the barrier is aborted, so no
    thread waits forever) and PyTorch's thread count is restored."""
    threads(2)
    from softmaxkit._core import ce as _ce

    real = _ce.kernels()

    class Boom:
        def __init__(self, kernel):
            self.kernel = kernel

    def failing(*args):
        if args[-2] > 0:  # a worker's rows
            raise FloatingPointError("worker failed")
        return real.ce_index_rows.kernel(*args)

    class K:
        def __getattr__(self, name):
            return Boom(failing) if name == "ce_index_rows" else getattr(real, name)

    monkeypatch.setattr(_ce, "kernels", lambda: K())
    h, W, _, t = _data()
    with _linear_ce.torch_blas(), pytest.raises(FloatingPointError, match="worker failed"):
        sk.linear_cross_entropy(h, W, t, chunk_size=4, strategy="rows", return_grad=True)
    assert torch.get_num_threads() == 2


def test_torch_op_takes_the_split_path(threads, monkeypatch):
    """The operator runs its matmuls on PyTorch's BLAS and, with two threads and
    gradients, the vocabulary split; the NumPy function alone does neither."""
    import softmaxkit.torch as skt

    threads(2)
    seen = []
    real = _linear_ce._rows_split

    def spy(*args):
        seen.append(_linear_ce._BLAS.get())
        return real(*args)

    monkeypatch.setattr(_linear_ce, "_rows_split", spy)
    h, W, _, t = _data()
    sk.linear_cross_entropy(h, W, t, chunk_size=4, return_grad=True)
    assert seen == []
    ht = torch.from_numpy(h).requires_grad_()
    skt.linear_cross_entropy(ht, torch.from_numpy(W), torch.from_numpy(t)).backward()
    assert seen == ["torch"]
