"""Tests of softmaxkit.linear_cross_entropy (chunked, never materialising the logits)."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

import softmaxkit as sk
from softmaxkit import reference as ref


def _data(N=11, d=6, V=23, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    h = rng.normal(size=(N, d)).astype(dtype)
    W = rng.normal(size=(V, d)).astype(dtype)
    b = rng.normal(size=V).astype(dtype)
    t = rng.integers(0, V, N)
    return h, W, b, t


OPTS = [
    dict(),
    dict(reduction="sum", label_smoothing=0.2),
    dict(reduction="none", z_loss=1e-2, temperature=0.7),
    dict(weight="w", ignore_index=-1, label_smoothing=0.1),
    dict(where="vocab", label_smoothing=0.3, z_loss=0.1),
    dict(ignore_index=-1, all_ignored=True),
]


@pytest.mark.parametrize("opts", OPTS)
@pytest.mark.parametrize("chunk", [1, 5, 23, 100])
@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("strategy", ["vocab", "rows"])
def test_matches_materialised(opts, chunk, with_bias, strategy):
    opts = dict(opts)
    h, W, b, t = _data()
    V = W.shape[0]
    if opts.pop("all_ignored", False):
        t[:] = -1
    elif "ignore_index" in opts:
        t[[2, 5]] = -1
    if opts.get("weight") == "w":
        opts["weight"] = np.random.default_rng(1).uniform(0.5, 2, V)
    if opts.get("where") == "vocab":
        mask = np.random.default_rng(2).random(V) > 0.3
        mask[t] = True
        opts["where"] = mask
    bias = b if with_bias else None
    loss, (dh, dW, db) = sk.linear_cross_entropy(
        h, W, t, bias=bias, chunk_size=chunk, strategy=strategy, return_grad=True, **opts
    )
    rl, (rdh, rdW, rdb) = ref.linear_cross_entropy(h, W, t, bias=bias, return_grad=True, **opts)
    np.testing.assert_allclose(loss, rl, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(dh, rdh, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(dW, rdW, rtol=1e-10, atol=1e-13)
    if with_bias:
        np.testing.assert_allclose(db, rdb, rtol=1e-10, atol=1e-13)
    else:
        assert db is None
    # loss-only path gives the same loss
    np.testing.assert_allclose(
        sk.linear_cross_entropy(h, W, t, bias=bias, chunk_size=chunk, **opts), loss, rtol=1e-13
    )


# Class weights together with label smoothing differ from PyTorch on purpose
# (pytorch#104776; docs/losses.md): that combination is compared with the float64
# formula in test_losses.py instead.
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize(
    ("smoothing", "weighted"), [(0.0, False), (0.1, False), (0.0, True)], ids=str
)
def test_vs_torch(reduction, smoothing, weighted):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    h, W, b, t = _data(N=9, d=5, V=31, seed=3)
    t[4] = -100
    w = np.random.default_rng(4).uniform(0.5, 2, 31) if weighted else None
    ht = torch.tensor(h, requires_grad=True)
    Wt = torch.tensor(W, requires_grad=True)
    bt = torch.tensor(b, requires_grad=True)
    kw = dict(reduction=reduction, label_smoothing=smoothing, ignore_index=-100)
    if weighted:
        kw["weight"] = torch.tensor(w)
    if hasattr(F, "linear_cross_entropy"):
        tl = F.linear_cross_entropy(ht, Wt, torch.tensor(t), linear_bias=bt, **kw)
    else:  # pragma: no cover - older torch
        tl = F.cross_entropy(ht @ Wt.T + bt, torch.tensor(t), **kw)
    tl.sum().backward()
    loss, (dh, dW, db) = sk.linear_cross_entropy(
        h, W, t, bias=b, chunk_size=8, weight=w, return_grad=True, **{
            k: v for k, v in kw.items() if k != "weight"
        }
    )  # fmt: skip
    np.testing.assert_allclose(loss, tl.detach().numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(dh, ht.grad.numpy(), rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(dW, Wt.grad.numpy(), rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(db, bt.grad.numpy(), rtol=1e-10, atol=1e-14)


def test_float32_and_batch_shape():
    h, W, _b, t = _data(N=12, d=8, V=300, seed=5, dtype=np.float32)
    h3 = h.reshape(3, 4, 8)
    t3 = t.reshape(3, 4)
    loss, (dh, dW, _) = sk.linear_cross_entropy(h3, W, t3, chunk_size=64, return_grad=True)
    assert dh.shape == h3.shape and dh.dtype == np.float32 and dW.dtype == np.float32
    rl, (rdh, rdW, _) = ref.linear_cross_entropy(h3, W, t3, return_grad=True)
    np.testing.assert_allclose(loss, rl, rtol=2e-6)
    np.testing.assert_allclose(dh, rdh, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(dW, rdW, rtol=1e-4, atol=1e-7)
    per = sk.linear_cross_entropy(h3, W, t3, reduction="none")
    assert per.shape == (3, 4)


def test_never_materialises_the_logits():
    """Peak traced allocation stays far below one [N, V] float64 array."""
    N, d, V = 256, 16, 20000
    h, W, _, t = _data(N=N, d=d, V=V, seed=6)
    sk.linear_cross_entropy(h[:2], W[:50], t[:2] % 50, chunk_size=10, return_grad=True)  # warm
    logits_bytes = N * V * 8
    grads = (N * d + V * d) * 8  # the outputs themselves
    for kw in [
        dict(strategy="vocab", chunk_size=512),
        dict(strategy="rows", chunk_size=16),
        dict(),
    ]:
        # compile this strategy's kernels first: Numba's compiler allocates (traced)
        sk.linear_cross_entropy(h[:2], W[:50], t[:2] % 50, return_grad=True, **kw)
        tracemalloc.start()
        try:
            sk.linear_cross_entropy(h, W, t, return_grad=True, **kw)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak - grads < logits_bytes / 10, (kw, peak, logits_bytes)


def test_errors():
    h, W, b, t = _data()
    with pytest.raises(ValueError, match="does not match"):
        sk.linear_cross_entropy(h, W[:, :3], t)
    with pytest.raises(TypeError, match="class-index targets"):
        sk.linear_cross_entropy(h, W, np.full((11, 23), 1 / 23))
    with pytest.raises(ValueError, match=r"target\[0\] = 23 is not a class index in \[0, 23\)"):
        sk.linear_cross_entropy(h, W, np.full(11, 23))
    with pytest.raises(ValueError, match="strategy must be one of"):
        sk.linear_cross_entropy(h, W, t, strategy="fast")
    with pytest.raises(ValueError, match="chunk_size must be >= 1"):
        sk.linear_cross_entropy(h, W, t, chunk_size=0)
    with pytest.raises(ValueError, match=r"bias must have shape \(23,\)"):
        sk.linear_cross_entropy(h, W, t, bias=b[:3])
