"""softmaxkit.torch losses inside real training loops, against torch's own losses.

A next-token model on a text shipped with Python (the stdlib's ``textwrap`` source):
two previous characters -> embedding -> tanh layer -> vocabulary head -> cross-entropy,
trained 100 steps in float64 with Adam.  The same model trained with
``softmaxkit.torch.cross_entropy``, ``softmaxkit.torch.linear_cross_entropy`` (the
head folded into the loss) and ``torch.nn.functional.cross_entropy`` must give loss
curves within 1e-5 relative and final weights within 1e-6 (issue 20's bound).
"""

from __future__ import annotations

import inspect
import textwrap

import numpy as np
import pytest

torch = pytest.importorskip("torch")
skt = pytest.importorskip("softmaxkit.torch")
F = torch.nn.functional

_CTX = 2  # characters of context


@pytest.fixture(autouse=True)
def _one_torch_thread():
    # tiny ops: torch's thread pool only adds synchronisation, and on a loaded
    # shared machine a 2-thread parallel region can take 100x longer than 1 thread
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _corpus(n_tokens=1536):
    """Character ids of the first ``n_tokens + _CTX`` characters of textwrap's source."""
    text = inspect.getsource(textwrap)[: n_tokens + _CTX]
    vocab = sorted(set(text))
    ids = torch.tensor([vocab.index(c) for c in text])
    ctx = torch.stack([ids[i : len(ids) - _CTX + i] for i in range(_CTX)], dim=1)
    return ctx, ids[_CTX:], len(vocab)


class _NextChar(torch.nn.Module):
    def __init__(self, vocab, dim=12, hidden=32):
        super().__init__()
        g = torch.Generator().manual_seed(20)
        self.emb = torch.nn.Parameter(torch.randn(vocab, dim, generator=g, dtype=torch.float64))
        self.w1 = torch.nn.Parameter(
            torch.randn(hidden, _CTX * dim, generator=g, dtype=torch.float64) * 0.2
        )
        self.head = torch.nn.Parameter(
            torch.randn(vocab, hidden, generator=g, dtype=torch.float64) * 0.2
        )
        self.bias = torch.nn.Parameter(torch.zeros(vocab, dtype=torch.float64))

    def hidden(self, ctx):
        e = self.emb[ctx].reshape(ctx.shape[0], -1)  # [N, CTX * dim]
        return torch.tanh(e @ self.w1.T)


def _train(loss_of, steps=100):
    ctx, target, vocab = _corpus()
    model = _NextChar(vocab)
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = loss_of(model, ctx, target)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    weights = torch.cat([p.detach().ravel() for p in model.parameters()])
    return np.array(losses), weights


def _torch_loss(model, ctx, target, **kw):
    logits = model.hidden(ctx) @ model.head.T + model.bias
    return F.cross_entropy(logits, target, **kw)


@pytest.mark.parametrize(
    "name, kw",
    [("plain", {}), ("smoothed", {"label_smoothing": 0.1})],
)
def test_next_char_model_trains_like_torch_cross_entropy(name, kw):
    ref, w_ref = _train(lambda m, c, t: _torch_loss(m, c, t, **kw))

    def ours_ce(m, c, t):
        return skt.cross_entropy(m.hidden(c) @ m.head.T + m.bias, t, **kw)

    def ours_lce(m, c, t):
        return skt.linear_cross_entropy(m.hidden(c), m.head, t, bias=m.bias, chunk_size=24, **kw)

    for fn in (ours_ce, ours_lce):
        ours, w_ours = _train(fn)
        assert ours[-1] < 0.6 * ours[0], (name, fn.__name__, ours[0], ours[-1])  # it learns
        np.testing.assert_allclose(ours, ref, rtol=1e-5, err_msg=f"{name} {fn.__name__}")
        torch.testing.assert_close(w_ours, w_ref, rtol=0, atol=1e-6)


def test_next_char_model_with_ignored_positions_and_modules():
    # every 7th target ignored (-100, torch's default), through the nn.Module wrappers
    ctx, target, vocab = _corpus(512)
    target = target.clone()
    target[::7] = -100
    m = _NextChar(vocab)
    h = m.hidden(ctx).detach()
    ref = F.cross_entropy(h @ m.head.T + m.bias, target)
    (g_ref,) = torch.autograd.grad(ref, m.head)
    for loss in (
        skt.CrossEntropyLoss()(h @ m.head.T + m.bias, target),
        skt.LinearCrossEntropyLoss()(h, m.head, target, m.bias),
    ):
        torch.testing.assert_close(loss, ref, rtol=1e-12, atol=0)
        (g,) = torch.autograd.grad(loss, m.head)
        torch.testing.assert_close(g, g_ref, rtol=1e-10, atol=1e-14)
