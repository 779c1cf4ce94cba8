"""Peak extra memory of the public ops, one table (tracemalloc sees NumPy's allocations):
what a call allocates beyond its result must stay a small fraction of the input, or
the bound its docstring states.  A hidden input-sized temporary (a NumPy formula
beside the kernel, a copy of a read-only input) fails here whichever op it is in."""

from __future__ import annotations

import numpy as np
import pytest
from _peak import traced

import softmaxkit as sk

_RNG = np.random.default_rng(0)
X = _RNG.standard_normal((256, 4000)).astype(np.float32)
Q = _RNG.standard_normal((256, 4000)).astype(np.float32)
T = _RNG.integers(0, 4000, 256)
Y = np.asarray(sk.softmax(X))
G = np.ones_like(X)
O = np.empty_like(X)
SEG = np.repeat(np.arange(100), 10240)[: X.size]
XR = X.copy()
XR.flags.writeable = False
MASK = X > -1.0

# name: (call, allowed extra bytes beyond the result, as a fraction of X.nbytes)
CALLS = {
    "softmax": (lambda: sk.softmax(X), 0.01),
    "softmax out=": (lambda: sk.softmax(X, out=O), 0.01),
    "softmax read-only": (lambda: sk.softmax(XR, out=O), 0.01),
    "log_softmax out=": (lambda: sk.log_softmax(X, out=O), 0.01),
    "logsumexp": (lambda: sk.logsumexp(X), 0.01),
    "softmax axis=0 out=": (lambda: sk.softmax(X, axis=0, out=O), 0.06),
    "logsumexp axis=0": (lambda: sk.logsumexp(X, axis=0), 0.1),
    "softmax T where out=": (lambda: sk.softmax(X, temperature=0.5, where=MASK, out=O), 0.01),
    "cross_entropy": (lambda: sk.cross_entropy(X, T), 0.01),
    "cross_entropy read-only": (lambda: sk.cross_entropy(XR, T), 0.01),
    "cross_entropy grad out=": (lambda: sk.cross_entropy(X, T, return_grad=True, out=O), 0.01),
    "cross_entropy options": (
        lambda: sk.cross_entropy(X, T, label_smoothing=0.1, z_loss=1e-4, ignore_index=5),
        0.01,
    ),
    "cross_entropy per-token": (
        lambda: sk.cross_entropy(X, T, return_entropy=True, return_lse=True, topk=5),
        0.03,
    ),
    "kl_divergence": (lambda: sk.kl_divergence(X, Q), 0.01),
    "jensen_shannon": (lambda: sk.jensen_shannon(X, Q), 0.01),
    "multiclass_hinge_loss": (lambda: sk.multiclass_hinge_loss(X, T), 0.01),
    "topk_softmax": (lambda: sk.topk_softmax(X, 5), 0.01),
    # up to 28 n bytes of scratch per thread, kept by the thread (its docstring): on
    # a thread that has not run it yet, 2 x 28 x 4000 bytes
    "sample top_p": (lambda: sk.sample(X, seed=0, top_p=0.9), 0.06),
    # two boolean masks of the float64 output's shape (its docstring)
    "sampling_probs": (lambda: sk.sampling_probs(X, top_p=0.9), 0.51),
    "softmax_vjp out=": (lambda: sk.softmax_vjp(Y, G, out=O), 0.01),
    "log_softmax_vjp out=": (lambda: sk.log_softmax_vjp(Y, G, out=O), 0.01),
    "logsumexp_vjp": (lambda: sk.logsumexp_vjp(X, np.ones(256, np.float32)), 0.02),
    "logcumsumexp": (lambda: sk.logcumsumexp(X), 0.02),
    "segment_softmax": (lambda: sk.segment_softmax(X.reshape(-1), SEG), 0.01),
    "segment_logsumexp": (lambda: sk.segment_logsumexp(X.reshape(-1), SEG), 0.01),
}


def _fresh_bytes(res):
    """Bytes of the result's arrays (tuples and NamedTuples walked), except ``O``."""
    if isinstance(res, tuple):
        return sum(_fresh_bytes(r) for r in res)
    if isinstance(res, np.ndarray) and res is not O:
        return res.nbytes
    return 0


@pytest.mark.parametrize("name", list(CALLS))
def test_peak_extra_memory(name):
    call, allowed = CALLS[name]
    call()  # compile, fill the caches
    res, peak = traced(call)
    extra = peak - _fresh_bytes(res)
    assert extra <= allowed * X.nbytes, (name, extra / X.nbytes)
