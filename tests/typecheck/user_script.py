"""A user's script, type-checked by ``tests/test_typing.py`` with ``mypy --strict``.

It calls every public name of ``softmaxkit`` (``__all__``), ``softmaxkit.quantized``
and ``softmaxkit.reference`` the ordinary way, and pins the return types of the
calls whose result type depends on a flag (``return_sign``, ``return_grad``,
``return_logprobs``) with ``assert_type``.  mypy must report nothing here; a change
of a public signature or return annotation that breaks ordinary use fails the test.

It is never run for its results: the code sits in functions, so importing the file
(pytest's doctest collection does) executes nothing.
"""

from __future__ import annotations

import os
from typing import Any, assert_type

import numpy as np
from numpy.typing import NDArray

import softmaxkit as sk
import softmaxkit.quantized as q
import softmaxkit.reference as ref

F = NDArray[np.floating[Any]]
I = NDArray[np.integer[Any]]


def dense(x: F, x32: NDArray[np.float32], mask: NDArray[np.bool_], flag: bool) -> None:
    assert_type(sk.softmax(x), F)
    assert_type(sk.softmax([1.0, 2.0], axis=None, temperature=0.5), F)
    assert_type(sk.log_softmax(x, (0, 1), where=mask, dtype=np.float32, out=None), F)
    assert_type(sk.softmax(x32, -1, out=np.empty_like(x32)), F)
    assert_type(sk.logsumexp(x), F)
    assert_type(sk.logsumexp(x, axis=0, keepdims=True, b=x), F)
    assert_type(sk.logsumexp(x, return_sign=False), F)
    assert_type(sk.logsumexp(x, b=-x, return_sign=True), tuple[F, F])
    assert_type(sk.logsumexp(x, return_sign=flag), F | tuple[F, F])
    lse, sign = sk.logsumexp(x, return_sign=True)
    value: float = float(sk.logsumexp([1.0, 2.0]))
    print(lse.shape, sign.dtype, value)


def gradients(x: F, g: F, mask: NDArray[np.bool_]) -> None:
    y = sk.softmax(x)
    assert_type(sk.softmax_vjp(y, g), F)
    assert_type(sk.softmax_vjp(y, g, -1, temperature=2.0, where=mask, out=np.empty_like(y)), F)
    assert_type(sk.log_softmax_vjp(sk.log_softmax(x), g, axis=(0, 1)), F)
    assert_type(sk.logsumexp_vjp(x, 1.0, b=x, keepdims=False), F)
    assert_type(sk.softmax_jvp(x, g), tuple[F, F])
    assert_type(sk.softmax_jacobian(x, axis=None), F)

    layer = sk.Softmax(axis=-1, temperature=1.0)
    assert_type(layer.forward(x), F)
    assert_type(layer(x, mask), F)
    assert_type(layer.backward(g), F)
    log_layer = sk.LogSoftmax()
    assert_type(log_layer.forward(x, where=mask), F)
    assert_type(log_layer.backward(g), F)
    ce_layer = sk.CrossEntropyLoss(axis=-1, label_smoothing=0.1)
    assert_type(ce_layer.forward(x, [0, 1]), F)
    assert_type(ce_layer.backward(), F)
    assert_type(ce_layer.backward(np.ones(2)), F)


def losses(x: F, target: I, h: F, w: F, flag: bool) -> None:
    # losses.py is annotated in a parallel branch: after its merge, pin these with
    # assert_type like the others.
    loss = sk.cross_entropy(x, target)
    loss, grad = sk.cross_entropy(x, target, reduction="sum", return_grad=True)
    out = sk.cross_entropy(x, target, return_entropy=True, topk=2)
    print(loss, grad, out, isinstance(out, sk.CrossEntropyOutput))
    loss = sk.linear_cross_entropy(h, w, target, chunk_size=4)
    loss, grads = sk.linear_cross_entropy(h, w, target, return_grad=True)
    loss = sk.max_margin_loss_split([0.5, 1.0], [[0.2, -0.1], [-0.5, 0.3]], margin=1.0)
    loss = sk.max_margin_loss([0.5, 0.2, -0.1, 1.0, -0.5, 0.3], 2, reduction="mean")
    loss = sk.multiclass_hinge_loss(x, target, p=2, kind="crammer_singer")
    print(loss, grads)


def distill(s: F, t: F, hs: F, ws: F, ht: F, wt: F, flag: bool) -> None:
    assert_type(sk.kl_divergence(s, t), F)
    assert_type(sk.kl_divergence(s, t, direction="reverse", reduction="sum"), F)
    assert_type(sk.kl_divergence(s, t, return_grad=True), tuple[F, F])
    assert_type(sk.kl_divergence(s, t, return_grad=flag), F | tuple[F, F])
    assert_type(sk.jensen_shannon(s, t, beta=0.3, temperature=2.0), F)
    assert_type(sk.jensen_shannon(s, t, return_grad=True, axis=-1), tuple[F, F])
    assert_type(sk.linear_kl_divergence(hs, ws, ht, wt, chunk_size=2), F)
    assert_type(sk.linear_kl_divergence(hs, ws, ht, wt, return_grad=True), tuple[F, tuple[F, F]])
    assert_type(sk.linear_jensen_shannon(hs, ws, ht, wt, reduction="none"), F)
    loss, (d_hidden, d_weight) = sk.linear_jensen_shannon(hs, ws, ht, wt, return_grad=True)
    print(loss, d_hidden.shape, d_weight.shape)


def online(x: F, chunks: list[F], path: str | os.PathLike[str]) -> None:
    # online.py is annotated in a parallel branch (see losses above).
    st = sk.Normalizer.empty((3,))
    st = st.update(x, axis=-1)
    both = st.merge(sk.Normalizer.empty((3,))) | st
    print(both.logsumexp(), both.softmax(x), both.log_softmax(x))
    probs, idx = sk.topk_softmax(x, 2, axis=-1, temperature=1.0)
    norm = sk.stream_normalizer(iter(chunks), axis=1)
    lse = sk.stream_logsumexp(iter(chunks), axis=1, memory="16M")
    res = sk.stream_softmax(path, os.path.join("out", "p.npy"), memory="16M")
    print(probs, idx, norm, lse, res)


def segments_and_scans(x: F, ids: I, offsets: I, a: F, b: F) -> None:
    assert_type(sk.segment_logsumexp(x, ids), F)
    assert_type(sk.segment_logsumexp(x, offsets=offsets, axis=0, temperature=2.0), F)
    assert_type(sk.segment_softmax(x, ids, num_segments=4), F)
    assert_type(sk.segment_log_softmax(x, ids, where=x > 0), F)
    y = sk.segment_softmax(x, ids)
    assert_type(sk.segment_softmax_vjp(y, x, ids), F)
    assert_type(sk.segment_log_softmax_vjp(y, x, offsets=offsets), F)
    assert_type(sk.segment_logsumexp_vjp(x, x[:4], ids, num_segments=4), F)
    assert_type(sk.logcumsumexp(x), F)
    assert_type(sk.logcumsumexp(x, 0, reverse=True, dtype=np.float32), F)
    assert_type(sk.logcumsumexp_vjp(x, x, axis=-1, reverse=False), F)
    assert_type(sk.logmatmulexp(a, b), F)
    assert_type(sk.logmatmulexp(a, b, out=np.empty((a.shape[0], b.shape[1]))), F)
    assert_type(sk.logmatmulexp_vjp(a, b, np.ones((2, 2))), tuple[F, F])
    assert_type(sk.logmatmulexp(a, b, a_sign=a, return_sign=True), tuple[F, F])
    assert_type(sk.logmatmulexp(a, b, b_sign=b), F)
    assert_type(sk.logmatmulexp_vjp(a, b, np.ones((2, 2)), a_sign=a), tuple[F, F])


def sampling(logits: F, flag: bool) -> None:
    assert_type(sk.sample(logits), I)
    assert_type(sk.sample(logits, temperature=0.7, top_k=50, top_p=0.9, min_p=0.05), I)
    assert_type(sk.sample(logits, num_samples=4, seed=1234, axis=-1, row_offset=8), I)
    assert_type(sk.sample(logits, seed=np.uint64(7), return_logprobs=True), tuple[I, F])
    assert_type(sk.sample(logits, return_logprobs=flag), I | tuple[I, F])
    ids, logprobs = sk.sample(logits, seed=0, return_logprobs=True)
    assert_type(sk.sampling_probs(logits, top_k=5, top_p=None, min_p=0.1), F)
    print(ids, logprobs)


def module_level() -> None:
    version: str = sk.__version__
    old: int = sk.set_output_cache(0)
    info: dict[str, int] = sk.output_cache_info()
    sk.set_output_cache(old)
    print(version, info)


def quantized(x8: NDArray[np.int8], y8: NDArray[np.int8]) -> None:
    # softmaxkit.quantized is annotated in a parallel branch (see losses above).
    params = q.softmax_params(1 / 255, beta=1.0)
    lparams = q.log_softmax_params(1 / 16)
    print(params.multiplier, params.shift, params.diff_min, lparams.reverse_multiplier)
    print(isinstance(params, q.SoftmaxParams), isinstance(lparams, q.LogSoftmaxParams))
    print(q.output_quantization("softmax", np.int8), sorted(q.RUNTIMES))
    print(q.softmax(x8, 1 / 255, axis=-1), q.log_softmax(x8, 1 / 16))
    print(q.softmax_s8(x8, 2, 5, 1077952640, 19, -3968))
    print(q.softmax_s8_s16(x8, 2, 5, 1077952640, 19, -3968))
    print(q.softmax_u8(x8.view(np.uint8), 2, 5, 1077952640, 19, -3968))
    matches = q.identify(x8, y8, max_results=3)
    print([isinstance(m, q.Match) for m in matches])


def reference(x: F, g: F, target: I, ids: I, s: F, t: F, flag: bool) -> None:
    assert_type(ref.softmax(x, axis=0), F)
    assert_type(ref.log_softmax(x, temperature=2.0), F)
    assert_type(ref.logsumexp(x, b=x), F)
    assert_type(ref.logsumexp(x, return_sign=True), tuple[F, F])
    assert_type(ref.logsumexp(x, return_sign=flag), F | tuple[F, F])
    assert_type(ref.softmax_vjp(x, g), F)
    assert_type(ref.log_softmax_vjp(x, g, axis=-1), F)
    assert_type(ref.logsumexp_vjp(x, 1.0, keepdims=False), F)
    assert_type(ref.softmax_jacobian(x), F)
    assert_type(ref.cross_entropy(x, target, label_smoothing=0.1), F)
    assert_type(ref.cross_entropy(x, target, return_grad=True), tuple[F, F])
    assert_type(ref.linear_cross_entropy(x, g, target, bias=None), F)
    loss, (d_h, d_w, d_b) = ref.linear_cross_entropy(x, g, target, return_grad=True)
    assert_type(ref.max_margin_loss_split(x[:, 0], x[:, 1:]), F)
    assert_type(ref.max_margin_loss(x.ravel(), 2, margin=0.5, reduction="none"), F)
    assert_type(ref.multiclass_hinge_loss(x, target, kind="weston_watkins"), F)
    assert_type(ref.kl_divergence(s, t, direction="forward"), F)
    assert_type(ref.kl_divergence(s, t, return_grad=True), tuple[F, F])
    assert_type(ref.jensen_shannon(s, t, beta=0.5), F)
    assert_type(ref.linear_kl_divergence(s, t, s, t), F)
    assert_type(ref.linear_jensen_shannon(s, t, s, t, return_grad=True), tuple[F, tuple[F, F]])
    assert_type(ref.segment_softmax(x, ids), F)
    assert_type(ref.segment_log_softmax(x, ids), F)
    assert_type(ref.segment_logsumexp(x, ids, axis=0), F)
    assert_type(ref.logcumsumexp(x, reverse=True), F)
    assert_type(ref.logmatmulexp(x, g), F)
    assert_type(ref.logmatmulexp(x, g, a_sign=x, return_sign=True), tuple[F, F])
    assert_type(ref.sample(x, seed=3), I)
    assert_type(ref.sample(x, seed=3, return_logprobs=True), tuple[I, F])
    assert_type(ref.sampling_probs(x, top_p=0.5), F)
    print(loss, d_h, d_w, d_b)
